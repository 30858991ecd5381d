//! Wall-clock time as the framework counts it: milliseconds since the Unix epoch.
//!
//! One helper per fact, used by the library, its tests, the benchmark and the example.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 before it, `i64::MAX` far beyond it).
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `ms` since the epoch as RFC 3339 (UTC, milliseconds), for logs. Never panics: a time
/// before the epoch or beyond what the clock can show is written as the raw number.
pub fn format_ms(ms: i64) -> String {
    u64::try_from(ms)
        .ok()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms)))
        // humantime formats years up to 9999 only.
        .filter(|t| t.duration_since(UNIX_EPOCH).is_ok_and(|d| d.as_secs() < 253_402_300_800))
        .map_or_else(|| format!("{ms} ms since the epoch"), |t| humantime::format_rfc3339_millis(t).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_overflows() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        for ms in [-1, i64::MIN, i64::MAX, 253_402_300_800_000] {
            assert!(format_ms(ms).contains("ms since the epoch"), "{ms}");
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
