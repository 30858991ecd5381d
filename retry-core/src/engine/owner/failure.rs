//! What follows a failed handler call on a partition: the [`journey`]'s plan carried out
//! (a republish in the window, a dead letter, a drop), the republishes' acknowledgements
//! settled at their places, and a publish that fails tried again or given up by its kind.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::{Failed, Outcome, Owner};
use crate::engine::publish::{PublishError, Republish, RetryTarget};
use crate::engine::RunningListener;
use crate::headers::{FailureKind, RetryHeaders};
use crate::journey::{self, DeadLetterFailure, FailedAttempt, Origin, Plan};
use crate::record::Record;
use crate::time::{format_ms, now_ms};
use crate::topology::Role;

impl Owner {
    /// Republishes to a retry topic (or, for a `hop`, the next ladder tier) in the window.
    /// Once the producer holds its own copy, the publish keeps only where the record was
    /// read (a refused one comes back from the producer), so a publish waiting long keeps
    /// no read's bytes alive. Nothing here waits: with the producer's queue full, the
    /// publish waits for room in the window ([`publish_when_room`]), counted in flight.
    pub(super) fn publish_retry(&mut self, seq: Option<u64>, record: Record, bytes: usize, target: RetryTarget) {
        let seq = seq.unwrap_or_else(|| self.window.reserve(record.offset(), bytes));
        let republish = Republish { seq, at: record.read_at(), target };
        match self.shared.publisher.republish(&record, &self.acks, republish) {
            Ok(()) => self.window.awaiting_ack(seq),
            Err(refused) => match refused.into_parts() {
                (e, target) if e.is_queue_full() => {
                    let publish = publish_when_room(Arc::clone(&self.shared), self.cancel.clone(), record.unshared(), target);
                    self.window.publishing_at(seq, publish.boxed());
                }
                (e, target) => self.publish_failed_at(seq, record.unshared(), target, e),
            },
        }
    }

    /// The republish at place `seq` failed with `error`: [`publish_failed`] takes it over.
    fn publish_failed_at(&mut self, seq: u64, record: Record, target: RetryTarget, error: PublishError) {
        let publish = publish_failed(Arc::clone(&self.shared), self.cancel.clone(), record, target, error);
        self.window.publishing_at(seq, publish.boxed());
    }

    /// Settles the republishes acknowledged since the last call; a refused one is tried
    /// again or given up ([`publish_failed`]) at its place.
    pub(super) fn take_acks(&mut self) {
        let mut acked = std::mem::take(&mut self.acked);
        self.acks.take(&mut acked);
        for (Republish { seq, at, target }, delivered) in acked.drain(..) {
            self.window.acked();
            match delivered {
                Ok(()) => self.window.settle(seq, republished(&self.shared, target.hop)),
                Err((e, message)) => self.publish_failed_at(seq, Record::given_back(at, &message), target, e),
            }
        }
        self.acked = acked;
    }

    pub(super) fn failed_attempt<'a>(
        &'a self,
        record: &'a Record,
        previous: Option<&'a RetryHeaders>,
        attempt: u32,
        kind: FailureKind,
        error: &'a str,
        now_ms: i64,
    ) -> FailedAttempt<'a> {
        FailedAttempt {
            origin: Origin {
                topic: record.topic(),
                partition: record.partition(),
                offset: record.offset(),
                timestamp_ms: record.timestamp_ms(),
            },
            previous,
            attempt,
            kind,
            error,
            group: self.shared.listener.group(),
            now_ms,
            requested_delay: None,
        }
    }

    /// Carries a plan out: a publish goes into the window; a drop finishes at once.
    /// `bytes`: what the record was counted for in the budget when it was queued; `seq`:
    /// its place in the window, if it has one already.
    pub(super) fn carry_out(&mut self, Failed { seq, record, bytes, plan }: Failed) {
        let offset = record.offset();
        match plan {
            Plan::Drop { kind } => {
                self.shared.metrics.inc_dropped();
                tracing::warn!(offset, reason = %kind, key = ?record.key_str(), "record dropped (no DLT)");
                self.finish_at(seq, offset, bytes);
            }
            Plan::Republish { topic, headers, failed_attempt } => {
                tracing::info!(offset, to = %topic, attempt = headers.attempt, due_at = %format_ms(headers.due_at_ms), error = %headers.error, "retrying");
                self.publish_retry(seq, record, bytes, RetryTarget { topic, headers, hop: false, failed_attempt });
            }
            Plan::DeadLetter { topic, headers } => {
                // A DLT publish may be tried again for long: it keeps its record copied
                // out of the read, so the rest of the read is not kept alive meanwhile.
                let publish = dead_letter(Arc::clone(&self.shared), self.cancel.clone(), record.unshared(), topic, headers);
                self.push_publish(seq, offset, bytes, publish.boxed());
            }
        }
    }
}

fn republished(shared: &RunningListener, hop: bool) -> Outcome {
    match hop {
        true => shared.metrics.inc_hops(),
        false => shared.metrics.inc_retried(),
    }
    Outcome::Done
}

/// A retry-topic publish the producer had no room for: published alone once there is room
/// (the producer's queue empties as acknowledgements arrive), then as [`publish_failed`]
/// if it fails.
async fn publish_when_room(shared: Arc<RunningListener>, cancel: CancellationToken, record: Record, target: RetryTarget) -> Outcome {
    match shared.publisher.publish(&target.topic, &record, &target.headers).await {
        Ok(()) => republished(&shared, target.hop),
        Err(e) => publish_failed(shared, cancel, record, target, e).await,
    }
}

/// After a retry-topic publish failed with `error`: publishes again after transient errors
/// (100 ms doubling to 5 s); after a permanent one, gives the record up
/// ([`journey::publish_refused`]: the DLT with reason `publish-failed`, or a drop).
async fn publish_failed(
    shared: Arc<RunningListener>,
    cancel: CancellationToken,
    record: Record,
    target: RetryTarget,
    error: PublishError,
) -> Outcome {
    let RetryTarget { topic, headers, hop, failed_attempt } = target;
    let mut pause = Duration::from_millis(100);
    let mut logged = false;
    let mut result = Err(error);
    loop {
        match result {
            Ok(()) => return republished(&shared, hop),
            Err(e) if e.permanent => {
                shared.metrics.inc_publish_failed();
                tracing::error!(offset = record.offset(), to = %topic, error = %e, "the retry topic refuses this record and always will; giving it up");
                let source = shared.listener.topology().role(record.topic()).map(Role::source);
                let plan = source.map(|s| journey::publish_refused(shared.listener.policy(), s, &headers, failed_attempt, now_ms()));
                return match plan {
                    Some(Plan::DeadLetter { topic, headers }) => dead_letter(shared, cancel, record, topic, headers).await,
                    _ => {
                        shared.metrics.inc_dropped();
                        tracing::warn!(offset = record.offset(), reason = %FailureKind::PublishFailed, "record dropped (no DLT)");
                        Outcome::Done
                    }
                };
            }
            Err(e) => {
                if logged {
                    tracing::debug!(to = %topic, error = %e, retry_in = ?pause, "publish failed again; trying again");
                } else {
                    tracing::warn!(offset = record.offset(), to = %topic, error = %e, retry_in = ?pause, "publish failed; trying again until it works");
                    logged = true;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return Outcome::Abandoned,
        }
        pause = (pause * 2).min(Duration::from_secs(5));
        result = shared.publisher.publish(&topic, &record, &headers).await;
    }
}

/// Publishes to the DLT; a failure follows the listener's DLT strategy.
async fn dead_letter(
    shared: Arc<RunningListener>,
    cancel: CancellationToken,
    record: Record,
    topic: String,
    headers: RetryHeaders,
) -> Outcome {
    let strategy = shared.listener.policy().dlt();
    let mut pause = Duration::from_millis(100);
    let mut logged = false;
    loop {
        match shared.publisher.publish(&topic, &record, &headers).await {
            Ok(()) => {
                shared.metrics.inc_dead_lettered();
                tracing::warn!(offset = record.offset(), to = %topic, reason = %headers.error_kind, error = %headers.error, attempt = headers.attempt, key = ?record.key_str(), "dead-lettered");
                return Outcome::Done;
            }
            Err(e) => match journey::on_dead_letter_failure(strategy, e.permanent) {
                DeadLetterFailure::StopPartition => {
                    tracing::error!(offset = record.offset(), dlt = %topic, error = %e, ?strategy,
                        "DLT publish failed; stopping this partition. It resumes after a restart or rebalance");
                    return Outcome::Stop;
                }
                DeadLetterFailure::TryAgain => {
                    if logged {
                        tracing::debug!(dlt = %topic, error = %e, "DLT publish failed again");
                    } else {
                        tracing::warn!(offset = record.offset(), dlt = %topic, error = %e, "DLT publish failed; trying again until it works (AlwaysRetryOnError)");
                        logged = true;
                    }
                }
            },
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = cancel.cancelled() => return Outcome::Abandoned,
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}
