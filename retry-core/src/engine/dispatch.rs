//! The dispatcher: the task that polls a listener's consumer itself.
//!
//! Polling the consumer serves its rebalances (which split off each assigned partition's
//! queue) and brings the consumer's errors; the dispatcher starts an owner for each
//! assigned partition, and the owners read their own queues. Consumer errors are logged
//! (rate-limited) and never slow the healthy partitions down.
//!
//! A partition whose queue could not be split off is read here: the dispatcher keeps one
//! long-lived message stream, drains what is ready without waiting, builds each
//! [`Record`] once, and hands the records to the partition's owner in batches. Each
//! record's bytes are reserved in the listener's budget first; a record that does not fit
//! pauses its partition (reason backpressure) and seeks it back to that record, which is
//! read again once the queue has drained. For such partitions it also carries out the
//! owners' requests (seeking back for a not-due record), so their reads and seeks happen
//! on one task, in order. Each message read spends a unit of the task's budget, so reading
//! such a partition lets other tasks run, as its owner does.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::mpsc;
use tokio::task::coop::cooperative;
use tokio_util::sync::CancellationToken;

use super::execute::panic_text;
use super::owner::{self, Batch, OwnerHandle, Request};
use super::partition::{PartitionSlot, PauseReason};
use super::rebalance::{Assigned, Partitions};
use super::{ListenerConsumer, RunningListener};
use crate::record::Record;

/// Messages taken from the stream without waiting before the batches are handed over.
const MAX_DRAIN: usize = 2_048;
/// How often the paused-partitions gauges are sampled and the partitions with no reason to
/// be paused are resumed again (see [`Dispatcher::tick`]).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often a listener whose group join has not completed is reported again.
const JOIN_REMINDER_EVERY: Duration = Duration::from_secs(60);
/// How long shutting down waits to have left the group (see [`leave_group`]).
const LEAVE_WITHIN: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Route {
    slot: Arc<PartitionSlot>,
    inbox: mpsc::UnboundedSender<Batch>,
}

struct Pending {
    route: Route,
    records: Vec<Record>,
    bytes: usize,
}

struct Dispatcher {
    shared: Arc<RunningListener>,
    partitions: Arc<Partitions>,
    cancel: CancellationToken,
    routes: HashMap<Arc<str>, HashMap<i32, Route>>,
    pending: Vec<Pending>,
    /// Partitions held back for the budget, with the bytes of the record each waits to fit.
    backpressured: Vec<(Arc<PartitionSlot>, usize)>,
    /// Records and batches handed over, for the stop log line.
    handed_over: (u64, u64),
    /// When a group join not completed is reported.
    join: JoinWait,
    /// A fatal error of the consumer, once it came: the listener stops.
    fatal: Option<String>,
}

/// When a listener whose group join has not completed says so.
pub(crate) struct JoinWatch {
    /// After how long (the runtime's startup timeout); again once a minute after that.
    pub(crate) within: Duration,
    /// The group protocol the consumer asks for (`classic` or `consumer`), for the warning.
    pub(crate) protocol: String,
}

/// A [`JoinWatch`] at work: since when the listener waits, and the reports given so far.
struct JoinWait {
    watch: JoinWatch,
    since: tokio::time::Instant,
    reports: u32,
}

impl JoinWait {
    fn new(watch: JoinWatch) -> Self {
        JoinWait { watch, since: tokio::time::Instant::now(), reports: 0 }
    }

    /// How long the listener has waited, if a report is due now (at `within`, then every
    /// [`JOIN_REMINDER_EVERY`]); counts it as given.
    fn report_due(&mut self) -> Option<Duration> {
        let waited = self.since.elapsed();
        let due = self.watch.within.saturating_add(JOIN_REMINDER_EVERY.saturating_mul(self.reports));
        (waited >= due).then(|| {
            self.reports += 1;
            waited
        })
    }
}

/// Reads the consumer until `shutdown`, then stops the owners (finishing records in hand,
/// bounded by `grace`), commits synchronously and returns.
pub(crate) async fn run(
    shared: Arc<RunningListener>,
    partitions: Arc<Partitions>,
    mut requests: mpsc::UnboundedReceiver<Request>,
    shutdown: CancellationToken,
    grace: Duration,
    join: JoinWatch,
) {
    let consumer = Arc::clone(&shared.consumer);
    let mut d = Dispatcher {
        shared: Arc::clone(&shared),
        partitions: Arc::clone(&partitions),
        cancel: shutdown.child_token(),
        routes: HashMap::new(),
        pending: Vec::new(),
        backpressured: Vec::new(),
        handed_over: (0, 0),
        join: JoinWait::new(join),
        fatal: None,
    };
    // A panic here is a bug of ours. Unguarded, it ended this task and left the consumer
    // unpolled and in the group: its partitions unread, and held from the other members
    // until `max.poll.interval.ms` ran out. Guarded, the listener stops as it does at
    // shutdown (owners finish what they hold, the group is left), loudly.
    let read = AssertUnwindSafe(d.read(&consumer, &mut requests, &shutdown)).catch_unwind().await;
    if let Err(panic) = read {
        shared.metrics.inc_stopped_listeners();
        tracing::error!(
            listener = %shared.listener.name(),
            panic = %panic_text(&*panic),
            "the listener's dispatcher panicked (a bug: please report it); the listener stops and leaves the group, \
             so that its partitions go to the group's other members or, after a restart, to it again"
        );
    }
    d.shut_down(&consumer, grace).await;
}

impl Dispatcher {
    /// Reads the consumer until `shutdown` (or the stream's end).
    async fn read(&mut self, consumer: &ListenerConsumer, requests: &mut mpsc::UnboundedReceiver<Request>, shutdown: &CancellationToken) {
        let mut stream = consumer.stream();
        let mut sample = tokio::time::interval(SAMPLE_EVERY);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = sample.tick() => {
                    self.tick(consumer);
                    continue;
                }
                Some(request) = requests.recv() => {
                    self.serve(consumer, request);
                    continue;
                }
                () = self.shared.budget.drained(), if !self.backpressured.is_empty() => {
                    self.lift_backpressure(consumer);
                    continue;
                }
                () = self.partitions.assigned_now.notified() => {
                    self.start_owners();
                    continue;
                }
                m = cooperative(stream.next()) => m,
            };
            let Some(first) = first else { break };
            self.take(consumer, first);
            // Each message read spends a unit of the task's budget (rdkafka's stream is no
            // tokio resource): out of it, the batches go to their owners and the task
            // yields, so a partition read here lets other tasks run, as the owners do.
            for _ in 1..MAX_DRAIN {
                match cooperative(stream.next()).now_or_never() {
                    Some(Some(m)) if self.fatal.is_none() => self.take(consumer, m),
                    _ => break,
                }
            }
            if self.fatal.is_some() {
                return self.stop_on_fatal(consumer);
            }
            self.flush();
        }
    }

    /// Once every [`SAMPLE_EVERY`], in one pass over the assigned partitions: sets the
    /// paused-partitions gauges from their own state, and resumes again, in the client, each
    /// one that has no reason to be paused, in case librdkafka lost a resume
    /// ([`PartitionSlot::reassert_resumed`]): a partition stuck that way is read again
    /// within [`SAMPLE_EVERY`].
    fn tick(&mut self, consumer: &ListenerConsumer) {
        self.report_join_not_completed();
        let slots: Vec<Arc<PartitionSlot>> =
            self.partitions.assigned.lock().expect("partitions lock").values().map(|a| Arc::clone(&a.slot)).collect();
        let mut counts = [0; 4];
        for slot in slots {
            let reasons = slot.pause_reasons();
            for (n, reason) in counts.iter_mut().zip(PauseReason::ALL) {
                *n += usize::from(reasons.contains(reason));
            }
            slot.reassert_resumed(consumer);
        }
        self.shared.metrics.set_paused(counts);
    }

    /// Warns once the listener has waited [`JoinWatch::within`] for its group to give it an
    /// assignment, and once a minute after that while it still waits: librdkafka goes on
    /// trying without a word (a broker without the group protocol set retries forever).
    fn report_join_not_completed(&mut self) {
        if self.partitions.joined() {
            return;
        }
        let Some(waited) = self.join.report_due() else { return };
        tracing::warn!(
            listener = %self.shared.listener.name(),
            group = %self.shared.listener.group(),
            group_protocol = %self.join.watch.protocol,
            waited_s = waited.as_secs(),
            "the listener has not joined its consumer group: no assignment yet, so nothing is read. The client keeps \
             trying. A broker that does not serve the group protocol asked for does this (`consumer`, KIP-848's, needs \
             Kafka 4); so does a group coordinator the client cannot reach"
        );
    }

    fn take(&mut self, consumer: &ListenerConsumer, message: Result<BorrowedMessage<'_>, KafkaError>) {
        let m = match message {
            Ok(m) => m,
            Err(e) => return self.consumer_error(&e),
        };
        #[cfg(feature = "fault-injection")]
        self.shared.inject_panic("dispatcher", m.key());
        // Records of one partition arrive in runs: the batch being built is the usual route.
        let cached = self.pending.last().is_some_and(|p| {
            p.route.slot.partition() == m.partition() && &**p.route.slot.topic() == m.topic() && !p.route.slot.is_revoked()
        });
        if !cached {
            let Some(route) = self.route(m.topic(), m.partition()) else {
                tracing::debug!(
                    topic = m.topic(),
                    partition = m.partition(),
                    offset = m.offset(),
                    "record of a partition not assigned any more; skipped"
                );
                return;
            };
            match self.pending.iter().position(|p| Arc::ptr_eq(&p.route.slot, &route.slot)) {
                // Move its batch last, so the next records of this partition find it.
                Some(i) => {
                    let p = self.pending.remove(i);
                    self.pending.push(p);
                }
                None => self.pending.push(Pending { route, records: Vec::with_capacity(256), bytes: 0 }),
            }
        }
        let p = self.pending.last_mut().expect("a batch for this partition");
        let record = Record::copy_alone(&m, Arc::clone(p.route.slot.topic()));
        let bytes = record.queued_bytes();
        if !self.shared.budget.try_reserve(bytes) {
            let slot = Arc::clone(&p.route.slot);
            self.hold_back(consumer, &slot, (m.offset(), bytes));
            return;
        }
        p.records.push(record);
        p.bytes += bytes;
    }

    /// Starts the owners of the assigned partitions that have their own queue.
    fn start_owners(&mut self) {
        let mut assigned = self.partitions.assigned.lock().expect("partitions lock");
        for a in assigned.values_mut().filter(|a| a.owner.is_none() && a.queue.is_some()) {
            a.owner = Some(self.start_owner(a));
        }
    }

    fn start_owner(&self, a: &mut Assigned) -> OwnerHandle {
        owner::spawn(Arc::clone(&self.shared), Arc::clone(&a.slot), a.queue.clone(), a.previous.take(), self.cancel.child_token())
    }

    /// The route of a partition of the current generation, starting its owner if needed.
    fn route(&mut self, topic: &str, partition: i32) -> Option<Route> {
        if let Some(r) = self.routes.get(topic).and_then(|ps| ps.get(&partition)) {
            if !r.slot.is_revoked() {
                return Some(r.clone());
            }
        }
        // A partition revoked since (its records already read are dropped: they are read
        // again from the committed offset by the new owner) or not seen yet.
        let key = (topic.to_owned(), partition);
        if !self.partitions.assigned.lock().expect("partitions lock").contains_key(&key) {
            // The client delivers records of assigned partitions only (older ones are
            // dropped by its version barrier), so it holds this partition although no
            // assignment was reported: take it on rather than skip its records, which
            // would strand them until the next rebalance.
            tracing::warn!(topic, partition, "records of a partition with no reported assignment; taking it on");
            self.partitions.assign(topic, partition);
        }
        let route = {
            let mut assigned = self.partitions.assigned.lock().expect("partitions lock");
            let a = assigned.get_mut(&key)?;
            if a.owner.is_none() {
                a.owner = Some(self.start_owner(a));
            }
            Route { slot: Arc::clone(&a.slot), inbox: a.owner.as_ref().expect("just set").inbox.clone() }
        };
        self.drop_pending_of_revoked();
        self.routes.entry(Arc::clone(route.slot.topic())).or_default().insert(partition, route.clone());
        Some(route)
    }

    fn drop_pending_of_revoked(&mut self) {
        let budget = &self.shared.budget;
        self.pending.retain(|p| {
            let keep = !p.route.slot.is_revoked();
            if !keep {
                budget.release(p.bytes);
            }
            keep
        });
    }

    /// Holds the partition back ([`PartitionSlot::hold_back`]) and remembers it, to resume
    /// it when the budget has drained.
    fn hold_back(&mut self, consumer: &ListenerConsumer, slot: &Arc<PartitionSlot>, record: (i64, usize)) {
        let first = !self.backpressured.iter().any(|(s, _)| Arc::ptr_eq(s, slot));
        if slot.hold_back(consumer, record, &self.shared.budget, first, &self.shared.metrics) && first {
            self.backpressured.push((Arc::clone(slot), record.1));
        }
    }

    fn lift_backpressure(&mut self, consumer: &ListenerConsumer) {
        for (slot, bytes) in self.backpressured.drain(..) {
            if slot.is_revoked() {
                // Its record will not be read here again: no room is kept for it any more.
                self.shared.budget.unwant(bytes);
            } else {
                slot.resume(consumer, PauseReason::Backpressure);
            }
        }
    }

    fn serve(&mut self, consumer: &ListenerConsumer, request: Request) {
        match request {
            Request::Seek { slot, offset } => {
                if !slot.is_revoked() && slot.seek(consumer, offset, &self.shared.metrics) {
                    slot.fetch_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
            }
        }
    }

    /// Hands the pending batches to their owners.
    fn flush(&mut self) {
        self.shared.budget.report();
        for p in self.pending.drain(..).filter(|p| !p.records.is_empty()) {
            let epoch = p.route.slot.fetch_epoch.load(std::sync::atomic::Ordering::Acquire);
            let bytes = p.bytes;
            self.handed_over.0 += p.records.len() as u64;
            self.handed_over.1 += 1;
            if p.route.inbox.send(Batch { epoch, records: p.records, bytes }).is_err() {
                self.shared.budget.release(bytes);
            }
        }
    }

    fn consumer_error(&mut self, e: &KafkaError) {
        if let KafkaError::MessageConsumptionFatal(_) = e {
            self.fatal = Some(e.to_string());
            return;
        }
        self.shared.errors.report(self.shared.listener.name(), &self.shared.metrics, e);
    }

    /// After a fatal error the consumer can neither read nor commit again (librdkafka's
    /// contract), so reading on would leave a member that holds its partitions in its own
    /// eyes but no longer in the group's: the listener stops, loudly, as at shutdown.
    fn stop_on_fatal(&mut self, consumer: &ListenerConsumer) {
        let error = self.fatal.take().unwrap_or_default();
        let reason = consumer.client().fatal_error().map(|(_, reason)| reason).unwrap_or_default();
        self.shared.metrics.inc_stopped_listeners();
        tracing::error!(
            listener = %self.shared.listener.name(),
            group = %self.shared.listener.group(),
            %error,
            reason,
            "the listener's consumer hit a fatal error and can neither read nor commit any more: the listener stops \
             (records in hand finish; their offsets cannot be committed, so the member that takes the partitions \
             handles them again). A static member fenced by another with the same group.instance.id does this; \
             restart the process to rejoin"
        );
    }

    async fn shut_down(mut self, consumer: &ListenerConsumer, grace: Duration) {
        self.flush();
        let name = self.shared.listener.name().to_owned();
        self.cancel.cancel();
        let owners = self.partitions.drain();
        let all = futures::future::join_all(owners.iter().map(|(f, _)| f.wait()));
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(listener = %name, ?grace, "records in hand did not finish within the shutdown grace; they will be redelivered");
        }
        for (_, join) in owners {
            join.abort();
            let _ = join.await;
        }
        // Answered to this call only, not to the commit callback: reported here. The
        // revocation as the group is left commits once more. A consumer past a fatal error
        // cannot commit (said when it stopped).
        if consumer.client().fatal_error().is_none() {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                self.shared.errors.report_commit(&name, &self.shared.metrics, &e);
            }
        }
        leave_group(consumer, &name).await;
        let (records, batches) = self.handed_over;
        tracing::info!(listener = %name, metrics = %self.shared.metrics.snapshot(), records, batches, "listener stopped");
    }
}

/// Leaves the group before the consumer is dropped: unsubscribes, then serves the
/// revocation that follows until nothing is assigned (bounded by [`LEAVE_WITHIN`]).
///
/// Dropping a consumer that still holds partitions has librdkafka revoke them while it
/// closes, and the `assign` call that answers that revocation can wait forever
/// (confluentinc/librdkafka#4884): seen here as a shutdown that never returned while
/// another member was joining the group. Records still read meanwhile are dropped unhandled;
/// their offsets were never stored, so they are read again by the partitions' next owners.
async fn leave_group(consumer: &ListenerConsumer, name: &str) {
    consumer.unsubscribe();
    let deadline = tokio::time::Instant::now() + LEAVE_WITHIN;
    let mut stream = consumer.stream();
    loop {
        match consumer.assignment() {
            Ok(list) if list.count() == 0 => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(listener = %name, error = %e, "could not read the assignment while leaving the group");
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(listener = %name, within = ?LEAVE_WITHIN, "partitions still assigned while leaving the group; closing anyway");
            return;
        }
        // Polling serves the revocation (the rebalance callback runs inside the poll).
        let _ = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
    }
}
