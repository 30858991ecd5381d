//! The consumer loop of one listener.
//!
//! One consumer reads the source and retry topics of the listener. A dispatcher task reads
//! it and hands each record to the worker of its partition: one task per assigned
//! partition, so a partition is handled in order while partitions run concurrently.
//!
//! A retry record that is not yet due makes its worker pause that partition in the client
//! (fetching stops; records already handed to the worker stay queued in order), sleep until
//! the due time, resume, and only then call the handler. Other partitions and the source
//! topic keep flowing, and the dispatcher keeps polling, so `max.poll.interval.ms` never
//! expires. On revocation the worker is cancelled before its current record is stored;
//! on assignment partitions start unpaused, and the new owner re-reads the uncommitted
//! record and pauses afresh: nothing stuck, nothing early.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::decision::{self, Due, Failure, Next};
use crate::handler::HandlerError;
use crate::headers::{self, FailureKind, RetryHeaders};
use crate::listener::{Listener, Role, SourceTopics};
use crate::metrics::Metrics;
use crate::policy::DltStrategy;
use crate::publish::{Outgoing, Publisher};
use crate::record::Record;

/// Queue length per partition at which fetching of that partition pauses…
const HIGH_WATER: usize = 1_000;
/// …and at which it resumes.
const LOW_WATER: usize = 100;

type Tp = (String, i32);

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `ms` since the epoch as RFC 3339 (UTC, milliseconds), for logs.
pub(crate) fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

fn tpl(topic: &str, partition: i32) -> TopicPartitionList {
    let mut t = TopicPartitionList::new();
    t.add_partition(topic, partition);
    t
}

struct Worker {
    tx: mpsc::UnboundedSender<OwnedMessage>,
    cancel: CancellationToken,
    queued: Arc<AtomicUsize>,
    backpressure: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    join: JoinHandle<()>,
}

/// The workers of one listener, shared with the rebalance callback.
#[derive(Default)]
pub(crate) struct Workers {
    active: Mutex<HashMap<Tp, Worker>>,
    retired: Mutex<Vec<JoinHandle<()>>>,
}

impl Workers {
    fn revoke(&self, topic: &str, partition: i32) {
        let removed = self.active.lock().expect("workers lock").remove(&(topic.to_owned(), partition));
        if let Some(w) = removed {
            tracing::debug!(topic, partition, "partition revoked; its worker stops after the record in hand");
            w.cancel.cancel();
            self.retired.lock().expect("workers lock").push(w.join);
        }
    }

    fn drain(&self) -> Vec<JoinHandle<()>> {
        let mut all: Vec<JoinHandle<()>> = self
            .active
            .lock()
            .expect("workers lock")
            .drain()
            .map(|(_, w)| {
                w.cancel.cancel();
                w.join
            })
            .collect();
        all.append(&mut self.retired.lock().expect("workers lock"));
        all
    }
}

/// Client context: quiet transport errors, worker cancellation on revoke, fresh (unpaused)
/// partitions on assign.
pub(crate) struct ListenerContext {
    pub(crate) workers: Arc<Workers>,
    pub(crate) listener: String,
    /// Partitions currently assigned.
    pub(crate) assigned: Arc<AtomicUsize>,
}

impl ClientContext for ListenerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(listener = %self.listener, %error, reason, "kafka client error (the client reconnects by itself)");
    }
}

impl ConsumerContext for ListenerContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            for e in list.elements() {
                self.workers.revoke(e.topic(), e.partition());
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                self.assigned.fetch_add(list.count(), Ordering::AcqRel);
                tracing::info!(listener = %self.listener, partitions = list.count(), "partitions assigned");
                if let Err(e) = consumer.resume(list) {
                    tracing::warn!(listener = %self.listener, error = %e, "could not clear pause state of assigned partitions");
                }
            }
            Rebalance::Revoke(list) => {
                let n = list.count();
                let _ = self.assigned.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| Some(a.saturating_sub(n)));
                tracing::info!(listener = %self.listener, partitions = n, "partitions revoked");
            }
            Rebalance::Error(e) => tracing::warn!(listener = %self.listener, error = %e, "rebalance error"),
        }
    }
}

pub(crate) type ListenerConsumer = StreamConsumer<ListenerContext>;

/// Everything a worker needs, shared by the workers of one listener.
pub(crate) struct Shared {
    pub(crate) listener: Listener,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) consumer: Arc<ListenerConsumer>,
    pub(crate) workers: Arc<Workers>,
}

/// Reads the consumer until `shutdown`, then drains the workers (finishing records in hand,
/// bounded by `grace`) and commits synchronously.
pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken, grace: Duration) {
    let name = shared.listener.name().to_owned();
    loop {
        let received = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            m = shared.consumer.recv() => m.map(|m| m.detach()),
        };
        match received {
            Ok(msg) => dispatch(&shared, &shutdown, msg),
            Err(e) => {
                // The client reports transport trouble (e.g. a restarting broker) here and
                // recovers by itself: keep polling.
                tracing::warn!(listener = %name, error = %e, "consumer error; polling on");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
    let joins = shared.workers.drain();
    let mut all = futures::future::join_all(joins);
    if tokio::time::timeout(grace, &mut all).await.is_err() {
        tracing::warn!(listener = %name, ?grace, "workers did not finish within the grace period; their records will be redelivered");
    }
    match shared.consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(listener = %name, error = %e, "final commit failed; uncommitted records will be redelivered"),
    }
    tracing::info!(listener = %name, metrics = %shared.metrics.snapshot(), "listener stopped");
}

fn dispatch(shared: &Arc<Shared>, shutdown: &CancellationToken, msg: OwnedMessage) {
    let tp: Tp = (msg.topic().to_owned(), msg.partition());
    let mut active = shared.workers.active.lock().expect("workers lock");
    let worker = active.entry(tp.clone()).or_insert_with(|| spawn_worker(shared, shutdown, &tp));
    if worker.stopped.load(Ordering::Acquire) {
        // FailOnError stopped this partition: nothing more is handled or stored until it is
        // reassigned or the process restarts; the record will be delivered again then.
        return;
    }
    let queued = worker.queued.fetch_add(1, Ordering::AcqRel) + 1;
    if worker.tx.send(msg).is_err() {
        worker.queued.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    if queued >= HIGH_WATER && !worker.backpressure.swap(true, Ordering::AcqRel) {
        tracing::debug!(topic = %tp.0, partition = tp.1, queued, "pausing fetch: worker is behind");
        if let Err(e) = shared.consumer.pause(&tpl(&tp.0, tp.1)) {
            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "pause failed");
        }
    }
}

fn spawn_worker(shared: &Arc<Shared>, shutdown: &CancellationToken, tp: &Tp) -> Worker {
    let (tx, rx) = mpsc::unbounded_channel();
    let w = WorkerCtx {
        shared: Arc::clone(shared),
        topic: tp.0.clone(),
        partition: tp.1,
        cancel: shutdown.child_token(),
        queued: Arc::default(),
        backpressure: Arc::default(),
        stopped: Arc::default(),
    };
    Worker {
        tx,
        cancel: w.cancel.clone(),
        queued: Arc::clone(&w.queued),
        backpressure: Arc::clone(&w.backpressure),
        stopped: Arc::clone(&w.stopped),
        join: tokio::spawn(w.run(rx)),
    }
}

enum Flow {
    Continue,
    Stop,
}

struct WorkerCtx {
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
    cancel: CancellationToken,
    queued: Arc<AtomicUsize>,
    backpressure: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl WorkerCtx {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<OwnedMessage>) {
        loop {
            let msg = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                m = rx.recv() => match m { Some(m) => m, None => break },
            };
            let left = self.queued.fetch_sub(1, Ordering::AcqRel) - 1;
            if left <= LOW_WATER && self.backpressure.swap(false, Ordering::AcqRel) {
                self.resume();
            }
            if let Flow::Stop = self.process(&msg).await {
                break;
            }
        }
    }

    fn pause(&self) {
        if let Err(e) = self.shared.consumer.pause(&tpl(&self.topic, self.partition)) {
            tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, "pause failed");
        }
    }

    fn resume(&self) {
        if let Err(e) = self.shared.consumer.resume(&tpl(&self.topic, self.partition)) {
            tracing::debug!(topic = %self.topic, partition = self.partition, error = %e, "resume failed (revoked?)");
        }
    }

    /// Marks `msg` done: its offset + 1 is committed with the next commit.
    fn store(&self, msg: &OwnedMessage) {
        // `store_offset(t, p, o)` stores o + 1 (librdkafka's legacy offset store).
        if let Err(e) = self.shared.consumer.store_offset(&self.topic, self.partition, msg.offset()) {
            tracing::debug!(topic = %self.topic, partition = self.partition, offset = msg.offset(), error = %e,
                "offset not stored (partition revoked?); the record may be delivered again");
        }
    }

    /// Sleeps until `until_ms` (wall clock, re-checked after every wake-up so a record is
    /// never handled early). `false` when cancelled.
    async fn sleep_until(&self, until_ms: i64) -> bool {
        loop {
            let now = now_ms();
            if now >= until_ms {
                return true;
            }
            let wait = Duration::from_millis(u64::try_from(until_ms - now).unwrap_or(0).max(1));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.cancel.cancelled() => return false,
            }
        }
    }

    async fn process(&self, msg: &OwnedMessage) -> Flow {
        let listener = &self.shared.listener;
        let (mut record, decoded) = Record::from_message_checked(msg);
        let (source, retry) = match listener.topology().role(&self.topic) {
            Some(Role::Source(s)) => (s, None),
            Some(Role::Retry(s, _)) => match decoded {
                Ok(Some(h)) => (s, Some(h)),
                Ok(None) => {
                    tracing::warn!(topic = %self.topic, partition = self.partition, offset = msg.offset(),
                        "record in a retry topic has no retry headers (produced by someone else?); handling it now as attempt 2");
                    (s, None)
                }
                Err(e) => {
                    self.shared.metrics.inc_malformed_headers();
                    tracing::warn!(topic = %self.topic, partition = self.partition, offset = msg.offset(), error = %e,
                        "retry headers cannot be trusted; giving the record up without calling the handler");
                    let error = HandlerError::fatal(e.to_string());
                    return self.give_up(msg, &record, s, None, FailureKind::MalformedHeaders, &error, 0).await;
                }
            },
            None => {
                tracing::error!(topic = %self.topic, "record from a topic this listener does not own; skipping it");
                self.store(msg);
                return Flow::Continue;
            }
        };
        let attempt = match (&retry, listener.topology().role(&self.topic)) {
            (Some(h), _) => h.attempt.max(2),
            (None, Some(Role::Retry(..))) => 2,
            _ => 1,
        };
        if let Some(h) = &retry {
            match decision::due(now_ms(), h.due_at_ms, listener.policy().due_horizon()) {
                Due::Now => {}
                due @ (Due::Wait { until_ms } | Due::Clamped { until_ms, .. }) => {
                    if let Due::Clamped { claimed_ms, .. } = due {
                        tracing::warn!(topic = %self.topic, partition = self.partition, offset = msg.offset(), claimed_ms, until_ms,
                            "retry record claims a due time beyond the policy's horizon; clamped");
                    }
                    tracing::debug!(topic = %self.topic, partition = self.partition, offset = msg.offset(), until_ms, "not due: pausing partition");
                    self.pause();
                    if !self.sleep_until(until_ms).await {
                        return Flow::Stop;
                    }
                    self.resume();
                }
            }
        }
        if attempt == 1 {
            record.set_first_attempt();
        } else {
            record.set_retry(attempt, retry.clone());
        }
        let span = tracing::info_span!("record", listener = %listener.name(), topic = %self.topic, partition = self.partition, offset = msg.offset(), attempt);
        async {
            match self.call_handler(&record, attempt == 1).await {
                Ok(()) => {
                    self.shared.metrics.inc_processed();
                    self.store(msg);
                    Flow::Continue
                }
                Err(error) => {
                    self.shared.metrics.inc_failed();
                    self.after_failure(msg, &record, source, retry.as_ref(), attempt, &error).await
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn call_handler(&self, record: &Record, first: bool) -> Result<(), HandlerError> {
        let (extra, delay) = if first { self.shared.listener.policy().blocking() } else { (0, Duration::ZERO) };
        let mut tries = 0;
        loop {
            let call = std::panic::AssertUnwindSafe(self.shared.listener.handler().handle(record.clone())).catch_unwind();
            let result = call.await.unwrap_or_else(|panic| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-text panic".into());
                Err(HandlerError::retryable(format!("handler panicked: {text}")))
            });
            match result {
                Err(e) if e.is_retryable() && tries < extra && !self.cancel.is_cancelled() => {
                    tries += 1;
                    tracing::debug!(error = %e, tries, "blocking retry in memory");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn retry_headers(
        &self,
        record: &Record,
        retry: Option<&RetryHeaders>,
        attempt: u32,
        due_at_ms: i64,
        kind: FailureKind,
        error: &HandlerError,
    ) -> RetryHeaders {
        let now = now_ms();
        RetryHeaders {
            attempt,
            due_at_ms,
            original_topic: retry.map_or_else(|| record.topic().to_owned(), |h| h.original_topic.clone()),
            original_partition: retry.map_or(record.partition(), |h| h.original_partition),
            original_offset: retry.map_or(record.offset(), |h| h.original_offset),
            original_timestamp_ms: retry.map_or(record.timestamp_ms(), |h| h.original_timestamp_ms),
            first_failure_ms: retry.map_or(now, |h| h.first_failure_ms),
            group: self.shared.listener.group().to_owned(),
            error_kind: kind,
            error: error.to_string(),
        }
    }

    async fn after_failure(
        &self,
        msg: &OwnedMessage,
        record: &Record,
        source: &SourceTopics,
        retry: Option<&RetryHeaders>,
        attempt: u32,
        error: &HandlerError,
    ) -> Flow {
        let policy = self.shared.listener.policy();
        let failure =
            Failure { kind: error.kind(), attempt, first_failure_ms: retry.map_or_else(now_ms, |h| h.first_failure_ms), now_ms: now_ms() };
        match decision::after_failure(policy, &failure, rand::random::<f64>()) {
            Next::Retry { attempt: next, due_at_ms, level } => {
                let target = &source.retry[level];
                let h = self.retry_headers(record, retry, next, due_at_ms, error.kind(), error);
                let headers = headers::replace(record.headers(), &h);
                tracing::info!(to = %target, attempt = next, due_at = %format_ms(due_at_ms), due_in_ms = due_at_ms - failure.now_ms, %error, "retrying");
                let out = Outgoing { topic: target, key: record.key(), payload: record.payload(), headers: &headers };
                match self.shared.publisher.publish_until_acked(out, &self.cancel).await {
                    Some(_) => {
                        self.shared.metrics.inc_retried();
                        self.store(msg);
                        Flow::Continue
                    }
                    None => Flow::Stop,
                }
            }
            Next::GiveUp(kind) => self.give_up(msg, record, source, retry, kind, error, attempt).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn give_up(
        &self,
        msg: &OwnedMessage,
        record: &Record,
        source: &SourceTopics,
        retry: Option<&RetryHeaders>,
        kind: FailureKind,
        error: &HandlerError,
        attempt: u32,
    ) -> Flow {
        let strategy = self.shared.listener.policy().dlt();
        let Some(dlt) = source.dlt.as_deref().filter(|_| strategy != DltStrategy::NoDlt) else {
            self.shared.metrics.inc_dropped();
            tracing::warn!(reason = %kind, %error, attempt, key = ?record.key_str(), "record dropped (no DLT)");
            self.store(msg);
            return Flow::Continue;
        };
        let h = self.retry_headers(record, retry, attempt, now_ms(), kind, error);
        let headers = headers::replace(record.headers(), &h);
        let out = Outgoing { topic: dlt, key: record.key(), payload: record.payload(), headers: &headers };
        let published = match strategy {
            DltStrategy::FailOnError => match self.shared.publisher.publish(out).await {
                Ok(_) => true,
                Err(e) => {
                    self.shared.metrics.inc_stopped_partitions();
                    tracing::error!(dlt, error = %e, topic = %self.topic, partition = self.partition, offset = msg.offset(),
                        "DLT publish failed; stopping this partition (FailOnError). It resumes after a restart or rebalance");
                    self.stopped.store(true, Ordering::Release);
                    self.pause();
                    return Flow::Stop;
                }
            },
            _ => self.shared.publisher.publish_until_acked(out, &self.cancel).await.is_some(),
        };
        if !published {
            return Flow::Stop;
        }
        self.shared.metrics.inc_dead_lettered();
        tracing::warn!(to = %dlt, reason = %kind, %error, attempt, key = ?record.key_str(), "dead-lettered");
        self.store(msg);
        Flow::Continue
    }
}
