//! The journey of one record, decided once in pure functions: what to do when it arrives
//! (which attempt it is, whether it is due) and after it failed (republish, dead-letter or
//! drop; which topic; which fresh headers), given `now`.
//!
//! The engine only carries these plans out (pause, resume, store, publish), so every rule
//! of the journey is unit-tested here without a broker.

use std::time::Duration;

use crate::decision::{self, Due, Failure, Next};
use crate::headers::{FailureKind, HeaderError, Hop, RetryHeaders};
use crate::ladder;
use crate::policy::{DltStrategy, RetryPolicy, TopicStrategy};
use crate::topology::{Role, SourceTopics};

/// Where a record was read from, as the plans need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The topic it was read from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

/// What to do with a record that just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// Call the handler: this is attempt `attempt`.
    Handle {
        /// 1 on a source topic, 2 or more on a retry topic.
        attempt: u32,
        /// A record in a retry topic without any retry header (produced by someone else):
        /// handled now as attempt 2, worth a warning.
        headerless_retry: bool,
    },
    /// Not due yet: hold the partition until `until_ms`, then look again.
    NotDue {
        /// When to look again, ms since the epoch.
        until_ms: i64,
        /// The due time the record claimed, when it lay beyond the policy's horizon and was
        /// clamped (worth a warning).
        clamped_from: Option<i64>,
    },
    /// It has waited its time on a ladder tier but is not due yet: republish it to the
    /// next tier, `topic`, with these headers (only the hop changes).
    Hop {
        /// The next tier's topic.
        topic: String,
        /// The headers, with the new hop.
        headers: RetryHeaders,
    },
    /// Its retry headers cannot be trusted: give it up without calling the handler.
    Untrusted(HeaderError),
    /// A topic the listener does not own (never subscribed): skip it.
    Foreign,
}

/// Decides what an arriving record is, from the role of its topic and its decoded headers.
/// `now_ms` is asked only for a retry topic's records (reading the clock costs, and a
/// source record is always due).
/// `held_until`: the partition already held this very record until then because its due
/// time lay beyond the policy's horizon and was clamped (re-reading its headers would clamp
/// it anew forever): once that time has passed, it is due.
///
/// On a [ladder](crate::ladder) tier a record waits until it leaves the tier; then it is
/// handled if due, or hops to the tier that fits what is left of its delay.
pub fn on_arrival(
    role: Option<Role<'_>>,
    headers: &Result<Option<RetryHeaders>, HeaderError>,
    now_ms: impl FnOnce() -> i64,
    policy: &RetryPolicy,
    held_until: Option<i64>,
) -> Arrival {
    match (role, headers) {
        (None, _) => Arrival::Foreign,
        // On a source topic every record is a first attempt, whatever headers it carries
        // (e.g. a record replayed from a DLT).
        (Some(Role::Source(_)), _) => Arrival::Handle { attempt: 1, headerless_retry: false },
        (Some(Role::Retry(..)), Err(e)) => Arrival::Untrusted(e.clone()),
        (Some(Role::Retry(..)), Ok(None)) => Arrival::Handle { attempt: 2, headerless_retry: true },
        (Some(Role::Retry(source, _)), Ok(Some(h))) => {
            let now_ms = now_ms();
            let handle = Arrival::Handle { attempt: h.attempt.max(2), headerless_retry: false };
            match decision::due(now_ms, h.due_at_ms, policy.due_horizon()) {
                Due::Now => handle,
                Due::Clamped { .. } if held_until.is_some_and(|until| now_ms >= until) => handle,
                Due::Clamped { until_ms, claimed_ms } => Arrival::NotDue { until_ms, clamped_from: Some(claimed_ms) },
                Due::Wait { until_ms } => match &h.hop {
                    Some(hop) if policy.topic_strategy() == TopicStrategy::Ladder => {
                        if now_ms < hop.leave_at_ms.min(until_ms) {
                            Arrival::NotDue { until_ms: hop.leave_at_ms.min(until_ms), clamped_from: None }
                        } else {
                            hop_on(policy, source, h, now_ms)
                        }
                    }
                    _ => Arrival::NotDue { until_ms, clamped_from: None },
                },
            }
        }
    }
}

/// A not-due wait at least this long pauses the partition (a shorter one just waits).
const PAUSE_AFTER_MS: i64 = 100;
/// A partition paused for a not-due record is resumed this long before the record is due
/// (the record itself still waits for its time): a resumed partition is fetched again only
/// after the fetch under way comes back (up to `fetch.wait.max.ms`, 50 ms by default) and a
/// round trip, and the records behind the held one, due right after it, must be at hand by
/// then or they are late by that much.
const RESUME_BEFORE_DUE_MS: i64 = 75;
/// A not-due wait at least this long also drops what is queued behind the record (it is
/// fetched again after the resume), so a long wait holds one record of memory; a shorter
/// one keeps the queue.
const DROP_QUEUE_AFTER_MS: i64 = 5_000;

/// How a partition waits for its head record, not due before `until_ms`: the record is
/// held, unhandled, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    /// Pause the partition meanwhile and resume it at this time, ms since the epoch (after
    /// now, before the record is due); `None`: a short wait, the partition is read on.
    pub resume_at_ms: Option<i64>,
    /// Also drop what is queued behind the held record: it is read again after the resume.
    pub drop_queue: bool,
}

/// How a partition waits, at `now_ms`, for its head record not due before `until_ms`.
pub fn hold(now_ms: i64, until_ms: i64) -> Hold {
    let wait = until_ms.saturating_sub(now_ms);
    Hold { resume_at_ms: (wait >= PAUSE_AFTER_MS).then(|| until_ms - RESUME_BEFORE_DUE_MS), drop_queue: wait >= DROP_QUEUE_AFTER_MS }
}

/// The next hop of a record that left its tier before its due time.
fn hop_on(policy: &RetryPolicy, source: &SourceTopics, h: &RetryHeaders, now_ms: i64) -> Arrival {
    let path = h.hop.as_ref().map_or(&[][..], |hop| &hop.path);
    match onto_ladder(policy, source, now_ms, h.due_at_ms, path) {
        Some((topic, hop)) => Arrival::Hop { topic, headers: RetryHeaders { hop: Some(hop), ..h.clone() } },
        // A policy and topology built together always agree; if not, handle it (late, never early).
        None => Arrival::NotDue { until_ms: h.due_at_ms, clamped_from: None },
    }
}

/// The tier topic a record due at `due_at_ms` goes to at `now_ms`, and its hop (`path` so
/// far, extended); `None` if the topology lacks that tier.
fn onto_ladder(policy: &RetryPolicy, source: &SourceTopics, now_ms: i64, due_at_ms: i64, path: &[u8]) -> Option<(String, Hop)> {
    let (level, leave_at_ms) = ladder::enter(policy.ladder_tiers(), now_ms, due_at_ms);
    let topic = source.retry.get(level)?.clone();
    Some((topic, Hop { leave_at_ms, path: ladder::extend_path(path, level) }))
}

/// A failed attempt, with what the plans need to know of it.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    /// Where the record was read from.
    pub origin: Origin<'a>,
    /// The retry headers it arrived with (on a retry topic).
    pub previous: Option<&'a RetryHeaders>,
    /// The attempt that failed (1 = on the source topic).
    pub attempt: u32,
    /// How it failed.
    pub kind: FailureKind,
    /// The error text (cut to [`MAX_ERROR_BYTES`](crate::headers::MAX_ERROR_BYTES) when encoded).
    pub error: &'a str,
    /// The listener's consumer group.
    pub group: &'a str,
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// The delay the handler asked for, instead of the backoff.
    pub requested_delay: Option<Duration>,
}

/// What happens to a record that will not be handled again on this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Republish to `topic` (a retry topic) with these headers, replacing the old ones.
    Republish {
        /// The retry topic.
        topic: String,
        /// The fresh framework headers.
        headers: RetryHeaders,
        /// The attempt that failed (what [`publish_refused`] gives the record up as, should
        /// the retry topic refuse it).
        failed_attempt: u32,
    },
    /// Publish to the DLT `topic` with these headers.
    DeadLetter {
        /// The DLT.
        topic: String,
        /// The fresh framework headers; `error_kind` says why.
        headers: RetryHeaders,
    },
    /// Give it up without a DLT ([`DltStrategy::NoDlt`]): count it, log it, move on.
    Drop {
        /// Why it was given up.
        kind: FailureKind,
    },
}

/// Decides what follows a failed attempt. `unit_sample` ∈ [0, 1) is the draw for jitter.
pub fn after_failure(policy: &RetryPolicy, source: &SourceTopics, failed: &FailedAttempt<'_>, unit_sample: f64) -> Plan {
    let failure = Failure {
        kind: failed.kind,
        attempt: failed.attempt,
        first_failure_ms: failed.previous.map_or(failed.now_ms, |h| h.first_failure_ms),
        now_ms: failed.now_ms,
        requested_delay: failed.requested_delay,
    };
    match decision::after_failure(policy, &failure, unit_sample) {
        Next::Retry { attempt, due_at_ms, .. } if policy.topic_strategy() == TopicStrategy::Ladder => {
            match onto_ladder(policy, source, failed.now_ms, due_at_ms, &[]) {
                Some((topic, hop)) => Plan::Republish {
                    topic,
                    headers: RetryHeaders { hop: Some(hop), ..fresh_headers(failed, attempt, due_at_ms, failed.kind) },
                    failed_attempt: failed.attempt,
                },
                None => give_up(policy, source, failed, FailureKind::Exhausted),
            }
        }
        Next::Retry { attempt, due_at_ms, level } => match source.retry.get(level) {
            Some(topic) => Plan::Republish {
                topic: topic.clone(),
                headers: fresh_headers(failed, attempt, due_at_ms, failed.kind),
                failed_attempt: failed.attempt,
            },
            // A policy and topology built together always agree; never lose the record if not.
            None => give_up(policy, source, failed, FailureKind::Exhausted),
        },
        Next::GiveUp(kind) => give_up(policy, source, failed, kind),
    }
}

/// The record is given up for `kind`: to the DLT, or dropped under [`DltStrategy::NoDlt`].
/// Also used when a retry-topic publish can never succeed (`kind` =
/// [`FailureKind::PublishFailed`]) and for untrusted headers.
pub fn give_up(policy: &RetryPolicy, source: &SourceTopics, failed: &FailedAttempt<'_>, kind: FailureKind) -> Plan {
    match source.dlt.as_deref().filter(|_| policy.dlt() != DltStrategy::NoDlt) {
        Some(dlt) => Plan::DeadLetter { topic: dlt.to_owned(), headers: fresh_headers(failed, failed.attempt, failed.now_ms, kind) },
        None => Plan::Drop { kind },
    }
}

/// A republish that can never succeed (the retry topic or ladder tier refuses the record
/// for good): the record is given up for [`FailureKind::PublishFailed`], exactly as
/// [`give_up`] would have at the failure, from the headers it was being republished with
/// (they carry its origin, first failure and error). `failed_attempt`: the attempt that
/// failed (for a ladder hop, the attempt the record is due for). Decided only when the
/// refusal comes, so a republish carries no second plan while in flight.
pub fn publish_refused(policy: &RetryPolicy, source: &SourceTopics, retry: &RetryHeaders, failed_attempt: u32, now_ms: i64) -> Plan {
    let failed = FailedAttempt {
        origin: Origin {
            topic: &retry.original_topic,
            partition: retry.original_partition,
            offset: retry.original_offset,
            timestamp_ms: retry.original_timestamp_ms,
        },
        previous: Some(retry),
        attempt: failed_attempt,
        kind: FailureKind::PublishFailed,
        error: &retry.error,
        group: &retry.group,
        now_ms,
        requested_delay: None,
    };
    give_up(policy, source, &failed, FailureKind::PublishFailed)
}

/// What to do when publishing to the DLT failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterFailure {
    /// Publish again after a pause (the error may heal: the broker or topic comes back).
    TryAgain,
    /// Stop the partition: nothing after the record is handled or committed until the
    /// partition is reassigned or the process restarts; the record stays uncommitted.
    StopPartition,
}

/// The strategy's answer to a failed DLT publish. `permanent`: the publish can never
/// succeed (too large, invalid topic, not authorized), so retrying it would loop forever.
pub fn on_dead_letter_failure(strategy: DltStrategy, permanent: bool) -> DeadLetterFailure {
    match strategy {
        DltStrategy::AlwaysRetryOnError if !permanent => DeadLetterFailure::TryAgain,
        // NoDlt never publishes to a DLT; treat a stray call like FailOnError.
        DltStrategy::AlwaysRetryOnError | DltStrategy::FailOnError | DltStrategy::NoDlt => DeadLetterFailure::StopPartition,
    }
}

/// The framework headers of the next hop: the origin is kept from the first failure, the
/// rest is fresh (replaced, never appended).
fn fresh_headers(failed: &FailedAttempt<'_>, attempt: u32, due_at_ms: i64, kind: FailureKind) -> RetryHeaders {
    let (origin, previous) = (failed.origin, failed.previous);
    RetryHeaders {
        attempt,
        due_at_ms,
        original_topic: previous.map_or_else(|| origin.topic.to_owned(), |h| h.original_topic.clone()),
        original_partition: previous.map_or(origin.partition, |h| h.original_partition),
        original_offset: previous.map_or(origin.offset, |h| h.original_offset),
        original_timestamp_ms: previous.map_or(origin.timestamp_ms, |h| h.original_timestamp_ms),
        first_failure_ms: previous.map_or(failed.now_ms, |h| h.first_failure_ms),
        group: failed.group.to_owned(),
        error_kind: kind,
        error: crate::headers::truncate_utf8(failed.error, crate::headers::MAX_ERROR_BYTES).to_owned(),
        hop: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;
    use crate::topology::Topology;

    const NOW: i64 = 1_700_000_000_000;

    fn setup(attempts: u32, dlt: DltStrategy) -> (RetryPolicy, Topology) {
        let policy = RetryPolicy::builder().attempts(attempts).backoff(Backoff::fixed(Duration::from_secs(5))).dlt(dlt).build().unwrap();
        let topology = Topology::new(&["orders".to_owned()], "g", &policy).unwrap();
        (policy, topology)
    }

    fn failed<'a>(topic: &'a str, previous: Option<&'a RetryHeaders>, attempt: u32, kind: FailureKind) -> FailedAttempt<'a> {
        FailedAttempt {
            origin: Origin { topic, partition: 3, offset: 42, timestamp_ms: Some(NOW - 10) },
            previous,
            attempt,
            kind,
            error: "store down",
            group: "g",
            now_ms: NOW,
            requested_delay: None,
        }
    }

    fn headers(attempt: u32, due_at_ms: i64) -> RetryHeaders {
        RetryHeaders {
            attempt,
            due_at_ms,
            original_topic: "orders".into(),
            original_partition: 1,
            original_offset: 7,
            original_timestamp_ms: Some(5),
            first_failure_ms: NOW - 60_000,
            group: "g".into(),
            error_kind: FailureKind::Retryable,
            error: "old".into(),
            hop: None,
        }
    }

    #[test]
    fn a_short_wait_reads_on_a_longer_one_pauses_until_shortly_before_due() {
        assert_eq!(hold(NOW, NOW + 99), Hold { resume_at_ms: None, drop_queue: false });
        assert_eq!(hold(NOW, NOW + 1_000), Hold { resume_at_ms: Some(NOW + 925), drop_queue: false });
        assert_eq!(hold(NOW, NOW + 5_000), Hold { resume_at_ms: Some(NOW + 4_925), drop_queue: true });
        // Resumed after now, before the record is due, for every wait that pauses.
        for wait in [100, 101, 250, 4_999, 5_000, 3_600_000] {
            let at = hold(NOW, NOW + wait).resume_at_ms.expect("paused");
            assert!(NOW < at && at < NOW + wait, "wait {wait}: resumed at {}", at - NOW);
        }
        // Far-off (or past) times do not overflow.
        assert_eq!(hold(i64::MIN, i64::MAX).resume_at_ms, Some(i64::MAX - RESUME_BEFORE_DUE_MS));
        assert_eq!(hold(NOW, NOW - 5), Hold { resume_at_ms: None, drop_queue: false });
    }

    #[test]
    fn arrivals() {
        let (policy, t) = setup(3, DltStrategy::AlwaysRetryOnError);
        let h = &policy;
        let src = t.role("orders");
        let retry = t.role("orders-retries-g");
        assert_eq!(
            on_arrival(src, &Ok(Some(headers(5, NOW + 1))), || NOW, h, None),
            Arrival::Handle { attempt: 1, headerless_retry: false }
        );
        assert_eq!(on_arrival(retry, &Ok(None), || NOW, h, None), Arrival::Handle { attempt: 2, headerless_retry: true });
        assert_eq!(on_arrival(retry, &Ok(Some(headers(3, NOW))), || NOW, h, None), Arrival::Handle { attempt: 3, headerless_retry: false });
        assert_eq!(on_arrival(retry, &Ok(Some(headers(0, NOW))), || NOW, h, None), Arrival::Handle { attempt: 2, headerless_retry: false });
        assert_eq!(
            on_arrival(retry, &Ok(Some(headers(2, NOW + 5))), || NOW, h, None),
            Arrival::NotDue { until_ms: NOW + 5, clamped_from: None }
        );
        let far = on_arrival(retry, &Ok(Some(headers(2, i64::MAX))), || NOW, h, None);
        let Arrival::NotDue { clamped_from: Some(i64::MAX), until_ms } = far else { panic!("{far:?}") };
        // Held until the clamped time, the record is due; it is not clamped again.
        let later = until_ms + 1;
        assert_eq!(
            on_arrival(retry, &Ok(Some(headers(2, i64::MAX))), || later, h, Some(until_ms)),
            Arrival::Handle { attempt: 2, headerless_retry: false }
        );
        assert!(matches!(on_arrival(retry, &Ok(Some(headers(2, i64::MAX))), || until_ms - 1, h, Some(until_ms)), Arrival::NotDue { .. }));
        let bad = HeaderError { header: "rt-attempt", problem: "x".into() };
        assert_eq!(on_arrival(retry, &Err(bad.clone()), || NOW, h, None), Arrival::Untrusted(bad));
        assert_eq!(on_arrival(None, &Ok(None), || NOW, h, None), Arrival::Foreign);
    }

    #[test]
    fn on_the_ladder_a_record_waits_its_tier_hops_down_and_is_handled_when_due() {
        let policy = RetryPolicy::builder()
            .attempts(3)
            .backoff(Backoff::fixed(Duration::from_secs(94)))
            .topic_strategy(TopicStrategy::Ladder)
            .build()
            .unwrap();
        let t = Topology::new(&["orders".to_owned()], "g", &policy).unwrap();
        assert_eq!(
            t.sources()[0].retry,
            [
                "orders-retries-g-1s",
                "orders-retries-g-5s",
                "orders-retries-g-17s",
                "orders-retries-g-59s",
                "orders-retries-g-4m",
                "orders-retries-g-17m",
                "orders-retries-g-1h"
            ]
        );
        let plan = after_failure(&policy, &t.sources()[0], &failed("orders", None, 1, FailureKind::Retryable), 0.5);
        let Plan::Republish { mut topic, mut headers, .. } = plan else { panic!("{plan:?}") };
        assert_eq!((topic.as_str(), headers.due_at_ms), ("orders-retries-g-59s", NOW + 94_000));
        // Follow the record: arrivals at each moment it may be looked at.
        let mut now = NOW;
        let mut visited = vec![topic.clone()];
        loop {
            let arrival = on_arrival(t.role(&topic), &Ok(Some(headers.clone())), || now, &policy, None);
            match arrival {
                Arrival::NotDue { until_ms, clamped_from: None } => {
                    assert!(until_ms > now);
                    now = until_ms;
                }
                Arrival::Hop { topic: next, headers: h } => {
                    assert_eq!((h.attempt, h.due_at_ms), (headers.attempt, headers.due_at_ms), "a hop keeps the attempt and due time");
                    (topic, headers) = (next, h);
                    visited.push(topic.clone());
                }
                Arrival::Handle { attempt: 2, .. } => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(now, NOW + 94_000, "handled exactly when due, never before");
        assert_eq!(visited, ["orders-retries-g-59s", "orders-retries-g-17s", "orders-retries-g-17s", "orders-retries-g-1s"]);
        assert_eq!(ladder::describe_path(policy.ladder_tiers(), &headers.hop.unwrap().path), "59s > 17s > 17s > 1s");
    }

    #[test]
    fn a_first_failure_republishes_with_the_origin_recorded() {
        let (policy, t) = setup(3, DltStrategy::AlwaysRetryOnError);
        let plan = after_failure(&policy, &t.sources()[0], &failed("orders", None, 1, FailureKind::Retryable), 0.5);
        let Plan::Republish { topic, headers, .. } = plan else { panic!("{plan:?}") };
        assert_eq!(topic, "orders-retries-g");
        assert_eq!((headers.attempt, headers.due_at_ms, headers.first_failure_ms), (2, NOW + 5_000, NOW));
        assert_eq!((headers.original_topic.as_str(), headers.original_partition, headers.original_offset), ("orders", 3, 42));
        assert_eq!(headers.original_timestamp_ms, Some(NOW - 10));
    }

    #[test]
    fn later_hops_keep_the_origin_and_replace_the_rest() {
        let (policy, t) = setup(4, DltStrategy::AlwaysRetryOnError);
        let prev = headers(2, NOW - 1);
        let plan = after_failure(&policy, &t.sources()[0], &failed("orders-retries-g", Some(&prev), 2, FailureKind::Retryable), 0.5);
        let Plan::Republish { headers, .. } = plan else { panic!("{plan:?}") };
        assert_eq!((headers.attempt, headers.original_partition, headers.original_offset), (3, 1, 7));
        assert_eq!((headers.first_failure_ms, headers.error.as_str()), (NOW - 60_000, "store down"));
    }

    #[test]
    fn exhausted_fatal_and_publish_failures_reach_the_dlt_or_are_dropped() {
        let (policy, t) = setup(2, DltStrategy::FailOnError);
        let prev = headers(2, NOW);
        let last = failed("orders-retries-g", Some(&prev), 2, FailureKind::Retryable);
        let Plan::DeadLetter { topic, headers } = after_failure(&policy, &t.sources()[0], &last, 0.5) else { panic!() };
        assert_eq!((topic.as_str(), headers.error_kind, headers.attempt), ("orders-dlt-g", FailureKind::Exhausted, 2));
        let fatal = failed("orders", None, 1, FailureKind::Fatal);
        assert!(
            matches!(after_failure(&policy, &t.sources()[0], &fatal, 0.5), Plan::DeadLetter { headers, .. } if headers.error_kind == FailureKind::Fatal)
        );
        let unpublishable = give_up(&policy, &t.sources()[0], &fatal, FailureKind::PublishFailed);
        assert!(matches!(unpublishable, Plan::DeadLetter { headers, .. } if headers.error_kind == FailureKind::PublishFailed));

        let (policy, t) = setup(2, DltStrategy::NoDlt);
        assert_eq!(after_failure(&policy, &t.sources()[0], &last, 0.5), Plan::Drop { kind: FailureKind::Exhausted });
    }

    #[test]
    fn a_refused_republish_is_given_up_as_at_the_failure() {
        let (policy, t) = setup(3, DltStrategy::FailOnError);
        let prev = headers(2, NOW - 1);
        for (topic, previous, attempt) in [("orders", None, 1), ("orders-retries-g", Some(&prev), 2)] {
            let failed = failed(topic, previous, attempt, FailureKind::Retryable);
            let Plan::Republish { headers, .. } = after_failure(&policy, &t.sources()[0], &failed, 0.5) else { panic!() };
            let refused = publish_refused(&policy, &t.sources()[0], &headers, attempt, NOW);
            assert_eq!(refused, give_up(&policy, &t.sources()[0], &failed, FailureKind::PublishFailed), "attempt {attempt}");
        }
        let (policy, t) = setup(3, DltStrategy::NoDlt);
        let refused = publish_refused(&policy, &t.sources()[0], &headers(2, NOW), 1, NOW);
        assert_eq!(refused, Plan::Drop { kind: FailureKind::PublishFailed });
    }

    #[test]
    fn long_errors_are_cut_in_the_headers() {
        let (policy, t) = setup(3, DltStrategy::AlwaysRetryOnError);
        let text = "é".repeat(2_000);
        let mut f = failed("orders", None, 1, FailureKind::Retryable);
        f.error = &text;
        let Plan::Republish { headers, .. } = after_failure(&policy, &t.sources()[0], &f, 0.5) else { panic!() };
        assert!(headers.error.len() <= crate::headers::MAX_ERROR_BYTES);
    }

    #[test]
    fn dead_letter_failures_follow_the_strategy() {
        use DeadLetterFailure::*;
        assert_eq!(on_dead_letter_failure(DltStrategy::AlwaysRetryOnError, false), TryAgain);
        assert_eq!(on_dead_letter_failure(DltStrategy::AlwaysRetryOnError, true), StopPartition);
        assert_eq!(on_dead_letter_failure(DltStrategy::FailOnError, false), StopPartition);
        assert_eq!(on_dead_letter_failure(DltStrategy::FailOnError, true), StopPartition);
    }
}
