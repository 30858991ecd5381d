//! What follows a failed handler call on a partition: the [`journey`]'s plan carried out
//! (a republish in the window, a dead letter, a drop), the republishes' acknowledgements
//! settled at their places, and a publish that fails tried again or given up by its kind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::{Failed, Outcome, Owner};
use crate::engine::publish::{PublishError, Republish, RetryTarget};
use crate::engine::RunningListener;
use crate::headers::{FailureKind, RetryHeaders};
use crate::journey::{self, DeadLetterFailure, FailedAttempt, Origin, Plan};
use crate::metrics::Metrics;
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

    /// A failed attempt of `record` as the [`journey`] is told of it.
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
/// (at [`TryAgain`]'s pace); after a permanent one, gives the record up
/// ([`journey::publish_refused`]: the DLT with reason `publish-failed`, or a drop).
async fn publish_failed(
    shared: Arc<RunningListener>,
    cancel: CancellationToken,
    record: Record,
    target: RetryTarget,
    error: PublishError,
) -> Outcome {
    let RetryTarget { topic, headers, hop, failed_attempt } = target;
    let mut again = TryAgain::new();
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
            Err(e) => match again.failed(&shared.metrics) {
                Say::First => {
                    tracing::warn!(offset = record.offset(), to = %topic, error = %e, retry_in = ?again.pause, "publish failed; trying again until it works")
                }
                Say::Still { tries, since } => {
                    tracing::warn!(offset = record.offset(), to = %topic, error = %e, tries, failing_for = ?since, "publish still failing; trying again until it works")
                }
                Say::Quietly => tracing::debug!(to = %topic, error = %e, retry_in = ?again.pause, "publish failed again; trying again"),
            },
        }
        if !again.wait(&cancel).await {
            return Outcome::Abandoned;
        }
        result = shared.publisher.publish(&topic, &record, &headers).await;
    }
}

/// Publishes to the DLT; a failure follows the listener's DLT strategy (a transient one under
/// `AlwaysRetryOnError` is tried again at [`TryAgain`]'s pace).
async fn dead_letter(
    shared: Arc<RunningListener>,
    cancel: CancellationToken,
    record: Record,
    topic: String,
    headers: RetryHeaders,
) -> Outcome {
    let strategy = shared.listener.policy().dlt();
    let mut again = TryAgain::new();
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
                DeadLetterFailure::TryAgain => match again.failed(&shared.metrics) {
                    Say::First => {
                        tracing::warn!(offset = record.offset(), dlt = %topic, error = %e, "DLT publish failed; trying again until it works (AlwaysRetryOnError)")
                    }
                    Say::Still { tries, since } => {
                        tracing::warn!(offset = record.offset(), dlt = %topic, error = %e, tries, failing_for = ?since, "DLT publish still failing; trying again until it works (AlwaysRetryOnError)")
                    }
                    Say::Quietly => tracing::debug!(dlt = %topic, error = %e, "DLT publish failed again"),
                },
            },
        }
        if !again.wait(&cancel).await {
            return Outcome::Abandoned;
        }
    }
}

/// How often a publish that keeps failing says so again at warning level.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// The pace of one publish tried again after transient errors: 100 ms doubling to 5 s
/// between tries, each try again counted (`publish_retries`), a warning at the first
/// failure and again every [`REMIND_EVERY`] while it keeps failing, so a publish that can
/// take hours never goes quiet.
struct TryAgain {
    pause: Duration,
    tries: u32,
    since: Instant,
    warned_at: Instant,
}

/// What a failed try is to say.
enum Say {
    /// The first failure: a warning.
    First,
    /// Failing for long: a warning again, with how long and how many tries.
    Still { tries: u32, since: Duration },
    /// In between: a debug line.
    Quietly,
}

impl TryAgain {
    fn new() -> Self {
        let now = Instant::now();
        TryAgain { pause: Duration::from_millis(100), tries: 0, since: now, warned_at: now }
    }

    /// A try failed with a transient error: counted, and what to say of it.
    fn failed(&mut self, metrics: &Metrics) -> Say {
        metrics.inc_publish_retries();
        self.tries += 1;
        let now = Instant::now();
        if self.tries == 1 {
            Say::First
        } else if now.duration_since(self.warned_at) >= REMIND_EVERY {
            self.warned_at = now;
            Say::Still { tries: self.tries, since: now.duration_since(self.since) }
        } else {
            Say::Quietly
        }
    }

    /// Waits before the next try; `false` if cancelled meanwhile.
    async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.pause) => {}
            () = cancel.cancelled() => return false,
        }
        self.pause = (self.pause * 2).min(Duration::from_secs(5));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_that_keeps_failing_warns_at_first_then_once_a_minute_and_counts_every_try() {
        let metrics = Metrics::default();
        let mut again = TryAgain::new();
        assert!(matches!(again.failed(&metrics), Say::First));
        assert!(matches!(again.failed(&metrics), Say::Quietly));
        // A minute later (the clocks set back instead of waiting for it).
        let back = |at: Instant| at.checked_sub(REMIND_EVERY).expect("the machine is up for more than a minute");
        (again.since, again.warned_at) = (back(again.since), back(again.warned_at));
        match again.failed(&metrics) {
            Say::Still { tries, since } => assert!(tries == 3 && since >= REMIND_EVERY, "{tries} tries, {since:?}"),
            _ => panic!("a minute of failures says so again"),
        }
        assert!(matches!(again.failed(&metrics), Say::Quietly), "and then not again for a minute");
        assert_eq!(metrics.snapshot().publish_retries, 4);
    }
}
