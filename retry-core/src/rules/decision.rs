//! Retry decisions as pure functions: what to do after a failure, and whether a retry
//! record is due.

use std::time::Duration;

use crate::backoff::apply_jitter;
use crate::headers::FailureKind;
use crate::policy::RetryPolicy;

/// A failed attempt, as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// How the handler failed ([`FailureKind::Retryable`], [`Fatal`](FailureKind::Fatal) or
    /// [`Decode`](FailureKind::Decode)).
    pub kind: FailureKind,
    /// The attempt that just failed (1 = the first handling on the source topic).
    pub attempt: u32,
    /// When the record first failed, ms since the epoch.
    pub first_failure_ms: i64,
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// The delay the handler asked for (`HandlerError::retry_after`), used instead of the
    /// backoff (without jitter), at most the backoff's longest delay (so it stays within the
    /// due horizon, where a claimed due time is trusted).
    pub requested_delay: Option<Duration>,
}

/// What happens next to a failed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Republish to the retry topic of `level`, due at `due_at_ms`, as attempt `attempt`.
    Retry {
        /// The attempt it will be.
        attempt: u32,
        /// When it is due, ms since the epoch.
        due_at_ms: i64,
        /// Retry-topic level.
        level: usize,
    },
    /// Give up; the reason goes into the `rt-error-kind` header of the DLT record.
    GiveUp(FailureKind),
}

/// Decides what follows a failure. `unit_sample` ∈ [0, 1) is the random draw for jitter.
pub fn after_failure(policy: &RetryPolicy, failure: &Failure, unit_sample: f64) -> Next {
    match failure.kind {
        FailureKind::Retryable => {}
        FailureKind::Exhausted | FailureKind::TimedOut => return Next::GiveUp(failure.kind),
        other => return Next::GiveUp(other),
    }
    if failure.attempt >= policy.attempts() {
        return Next::GiveUp(FailureKind::Exhausted);
    }
    let delay = match failure.requested_delay {
        Some(delay) => delay.min(policy.backoff().max_delay()),
        None => apply_jitter(policy.backoff().delay(failure.attempt), policy.jitter(), unit_sample),
    };
    let due_at_ms = failure.now_ms.saturating_add(millis(delay));
    if let Some(timeout) = policy.timeout() {
        if due_at_ms > failure.first_failure_ms.saturating_add(millis(timeout)) {
            return Next::GiveUp(FailureKind::TimedOut);
        }
    }
    let attempt = failure.attempt + 1;
    Next::Retry { attempt, due_at_ms, level: policy.level_for_attempt(attempt) }
}

/// Whether a retry record may be handled now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Due (or overdue): handle it.
    Now,
    /// Not yet: wait until `until_ms`.
    Wait {
        /// Due time, ms since the epoch.
        until_ms: i64,
    },
    /// The claimed due time lies beyond the policy's horizon (clock skew, a foreign or
    /// tampered record): wait only until `until_ms` = now + horizon, and log it.
    Clamped {
        /// The clamped due time.
        until_ms: i64,
        /// What the record claimed.
        claimed_ms: i64,
    },
}

/// Decides whether a record due at `due_at_ms` may be handled at `now_ms`. A negative or
/// past due time is due now; one beyond `now + horizon` is clamped to it.
pub fn due(now_ms: i64, due_at_ms: i64, horizon: Duration) -> Due {
    if due_at_ms <= now_ms {
        return Due::Now;
    }
    let limit = now_ms.saturating_add(millis(horizon));
    if due_at_ms > limit {
        Due::Clamped { until_ms: limit, claimed_ms: due_at_ms }
    } else {
        Due::Wait { until_ms: due_at_ms }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Backoff;
    use crate::policy::TopicStrategy;

    const NOW: i64 = 1_700_000_000_000;

    fn failure(kind: FailureKind, attempt: u32) -> Failure {
        Failure { kind, attempt, first_failure_ms: NOW, now_ms: NOW, requested_delay: None }
    }

    #[test]
    fn retries_until_attempts_run_out() {
        let p = RetryPolicy::builder().attempts(3).backoff(Backoff::fixed(Duration::from_secs(5))).build().unwrap();
        assert_eq!(
            after_failure(&p, &failure(FailureKind::Retryable, 1), 0.5),
            Next::Retry { attempt: 2, due_at_ms: NOW + 5_000, level: 0 }
        );
        assert_eq!(
            after_failure(&p, &failure(FailureKind::Retryable, 2), 0.5),
            Next::Retry { attempt: 3, due_at_ms: NOW + 5_000, level: 0 }
        );
        assert_eq!(after_failure(&p, &failure(FailureKind::Retryable, 3), 0.5), Next::GiveUp(FailureKind::Exhausted));
        // A tampered attempt far past the limit gives up too.
        assert_eq!(after_failure(&p, &failure(FailureKind::Retryable, u32::MAX), 0.5), Next::GiveUp(FailureKind::Exhausted));
    }

    #[test]
    fn fatal_and_decode_skip_retries() {
        let p = RetryPolicy::builder().attempts(10).build().unwrap();
        assert_eq!(after_failure(&p, &failure(FailureKind::Fatal, 1), 0.5), Next::GiveUp(FailureKind::Fatal));
        assert_eq!(after_failure(&p, &failure(FailureKind::Decode, 1), 0.5), Next::GiveUp(FailureKind::Decode));
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let p = RetryPolicy::builder().attempts(1).build().unwrap();
        assert_eq!(after_failure(&p, &failure(FailureKind::Retryable, 1), 0.5), Next::GiveUp(FailureKind::Exhausted));
    }

    #[test]
    fn exponential_delays_and_levels() {
        let p = RetryPolicy::builder()
            .attempts(6)
            .backoff(Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(4)))
            .topic_strategy(TopicStrategy::MultipleTopics)
            .max_retry_topics(3)
            .build()
            .unwrap();
        let got: Vec<_> = (1..=5)
            .map(|a| match after_failure(&p, &failure(FailureKind::Retryable, a), 0.5) {
                Next::Retry { attempt, due_at_ms, level } => (attempt, due_at_ms - NOW, level),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, [(2, 1_000, 0), (3, 2_000, 1), (4, 4_000, 2), (5, 4_000, 2), (6, 4_000, 2)]);
    }

    #[test]
    fn timeout_gives_up_when_the_next_attempt_would_be_late() {
        let p = RetryPolicy::builder()
            .attempts(100)
            .backoff(Backoff::fixed(Duration::from_secs(10)))
            .timeout(Duration::from_secs(25))
            .build()
            .unwrap();
        let at = |elapsed_s: i64| Failure {
            kind: FailureKind::Retryable,
            attempt: 2,
            first_failure_ms: NOW,
            now_ms: NOW + elapsed_s * 1000,
            requested_delay: None,
        };
        assert!(matches!(after_failure(&p, &at(10), 0.5), Next::Retry { .. }));
        assert_eq!(after_failure(&p, &at(20), 0.5), Next::GiveUp(FailureKind::TimedOut));
    }

    #[test]
    fn a_requested_delay_replaces_the_backoff_up_to_its_longest_delay() {
        let p = RetryPolicy::builder()
            .attempts(3)
            .backoff(Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(60)))
            .jitter(0.5)
            .build()
            .unwrap();
        let asking = |d: u64| Failure { requested_delay: Some(Duration::from_secs(d)), ..failure(FailureKind::Retryable, 1) };
        assert_eq!(after_failure(&p, &asking(7), 0.0), Next::Retry { attempt: 2, due_at_ms: NOW + 7_000, level: 0 });
        assert_eq!(after_failure(&p, &asking(7_200), 0.9), Next::Retry { attempt: 2, due_at_ms: NOW + 60_000, level: 0 });
        let last = Failure { requested_delay: Some(Duration::from_secs(1)), ..failure(FailureKind::Retryable, 3) };
        assert_eq!(after_failure(&p, &last, 0.5), Next::GiveUp(FailureKind::Exhausted), "attempts still count");
    }

    #[test]
    fn jitter_moves_the_due_time_within_bounds() {
        let p = RetryPolicy::builder().backoff(Backoff::fixed(Duration::from_secs(10))).jitter(0.5).build().unwrap();
        let due_of = |s: f64| match after_failure(&p, &failure(FailureKind::Retryable, 1), s) {
            Next::Retry { due_at_ms, .. } => due_at_ms - NOW,
            other => panic!("{other:?}"),
        };
        assert_eq!(due_of(0.0), 5_000);
        assert_eq!(due_of(0.5), 10_000);
        assert!(due_of(0.999) <= 15_000);
    }

    #[test]
    fn due_decisions() {
        let h = Duration::from_secs(60);
        assert_eq!(due(NOW, NOW, h), Due::Now);
        assert_eq!(due(NOW, NOW - 1, h), Due::Now);
        assert_eq!(due(NOW, -5, h), Due::Now);
        assert_eq!(due(NOW, i64::MIN, h), Due::Now);
        assert_eq!(due(NOW, NOW + 1, h), Due::Wait { until_ms: NOW + 1 });
        assert_eq!(due(NOW, NOW + 60_000, h), Due::Wait { until_ms: NOW + 60_000 });
        assert_eq!(due(NOW, NOW + 60_001, h), Due::Clamped { until_ms: NOW + 60_000, claimed_ms: NOW + 60_001 });
        assert_eq!(due(NOW, i64::MAX, h), Due::Clamped { until_ms: NOW + 60_000, claimed_ms: i64::MAX });
    }
}
