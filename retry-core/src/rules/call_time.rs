//! How long a handler call may take: the `handler_timeout` setting's one rule (shared by
//! the listener builder and the macro), and when a call still running counts as stalled.
//!
//! A partition's records go through the handler in offset order, so a call that never
//! returns (a remote call without a timeout of its own, a lock never released) holds its
//! partition (or, with `key_concurrency`, its key) for good. With a timeout, such a call
//! is given up (its future dropped) and fails as a retryable attempt of its record. With
//! or without one, a call running longer than `stalled_after` is reported, at that time
//! and once a minute while it lasts, so a held partition is never silent.

use std::time::Duration;

use crate::duration::format_duration;
use crate::error::ConfigError;

/// The longest `handler_timeout`, a day (for no limit, set none).
pub const MAX_HANDLER_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// When a handler call still running is first reported as stalled, by default.
pub const DEFAULT_STALLED_AFTER: Duration = Duration::from_secs(60);

/// How often a stalled call is reported again while it lasts.
pub const STALLED_REMINDER_EVERY: Duration = Duration::from_secs(60);

/// Checks a `handler_timeout` setting: from 1 ms to [`MAX_HANDLER_TIMEOUT`].
pub fn check_handler_timeout(timeout: Duration) -> Result<Duration, ConfigError> {
    if timeout < Duration::from_millis(1) || timeout > MAX_HANDLER_TIMEOUT {
        let why = format!("must be from 1ms to {}, not {}", format_duration(MAX_HANDLER_TIMEOUT), format_duration(timeout));
        return Err(ConfigError::new("handler_timeout", why));
    }
    Ok(timeout)
}

/// Checks a `stalled_after` setting: at least 1 ms.
pub fn check_stalled_after(after: Duration) -> Result<Duration, ConfigError> {
    if after < Duration::from_millis(1) {
        return Err(ConfigError::new("stalled_after", format!("must be at least 1ms, not {}", format_duration(after))));
    }
    Ok(after)
}

/// The error text of a call given up at its timeout.
pub fn timed_out_text(timeout: Duration) -> String {
    format!("the handler did not return within its timeout of {}; the call was given up", format_duration(timeout))
}

/// How long after its start a call is reported as stalled next, after `reports` reports
/// so far: at `stalled_after`, then every [`STALLED_REMINDER_EVERY`]. `None` once the
/// call's `timeout` comes first (it ends the call, so it is never stalled beyond it).
pub fn next_stall_report(stalled_after: Duration, timeout: Option<Duration>, reports: u32) -> Option<Duration> {
    let at = stalled_after.saturating_add(STALLED_REMINDER_EVERY.saturating_mul(reports));
    match timeout {
        Some(t) if t <= at => None,
        _ => Some(at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_is_from_a_millisecond_to_a_day() {
        assert_eq!(check_handler_timeout(Duration::from_millis(1)).unwrap(), Duration::from_millis(1));
        assert_eq!(check_handler_timeout(MAX_HANDLER_TIMEOUT).unwrap(), MAX_HANDLER_TIMEOUT);
        for bad in [Duration::ZERO, Duration::from_micros(999), MAX_HANDLER_TIMEOUT + Duration::from_secs(1)] {
            let e = check_handler_timeout(bad).unwrap_err().to_string();
            assert!(e.contains("`handler_timeout`") && e.contains("1day"), "{e}");
        }
        assert!(check_stalled_after(Duration::ZERO).unwrap_err().to_string().contains("`stalled_after`"));
        assert_eq!(check_stalled_after(Duration::from_millis(1)).unwrap(), Duration::from_millis(1));
    }

    #[test]
    fn a_stalled_call_is_reported_at_its_time_and_every_minute_until_its_timeout() {
        let s = Duration::from_secs;
        assert_eq!(next_stall_report(s(60), None, 0), Some(s(60)));
        assert_eq!(next_stall_report(s(60), None, 1), Some(s(120)));
        assert_eq!(next_stall_report(s(60), None, 2), Some(s(180)));
        // A timeout before the report ends the call first.
        assert_eq!(next_stall_report(s(60), Some(s(30)), 0), None);
        assert_eq!(next_stall_report(s(60), Some(s(60)), 0), None);
        assert_eq!(next_stall_report(s(60), Some(s(150)), 1), Some(s(120)));
        assert_eq!(next_stall_report(s(60), Some(s(150)), 2), None);
        // Never overflows.
        assert_eq!(next_stall_report(Duration::MAX, None, u32::MAX), Some(Duration::MAX));
    }

    #[test]
    fn the_timeout_text_names_the_timeout() {
        assert_eq!(
            timed_out_text(Duration::from_millis(1500)),
            "the handler did not return within its timeout of 1s 500ms; the call was given up"
        );
    }
}
