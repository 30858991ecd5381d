//! Parsing of human-written durations: `"500ms"`, `"5m"`, `"1h 30m"` and ISO-8601 `"PT5M"`.
//!
//! One function serves the runtime builders and the proc-macro alike, so a duration that
//! compiles in `#[retryable_topic(backoff = "...")]` is exactly one the builders accept.

use std::time::Duration;

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{input}`: {reason} (write e.g. \"500ms\", \"5s\", \"5m\", \"1h 30m\" or ISO-8601 \"PT5M\")")]
pub struct DurationError {
    input: String,
    reason: String,
}

impl DurationError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        Self { input: input.to_owned(), reason: reason.into() }
    }
}

/// Parses a duration written for humans (via `humantime`) or in ISO-8601 form
/// (`P…`, via `iso8601-duration`; years and months are rejected as they have no fixed length).
///
/// ```
/// use std::time::Duration;
/// use retry_core::duration::parse_duration;
/// assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
/// assert_eq!(parse_duration("PT5M").unwrap(), Duration::from_secs(300));
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert!(parse_duration("5").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::new(input, "it is empty"));
    }
    if text.starts_with('P') {
        let iso = iso8601_duration::Duration::parse(text).map_err(|_| DurationError::new(input, "not a valid ISO-8601 duration"))?;
        if iso.year != 0.0 || iso.month != 0.0 {
            return Err(DurationError::new(input, "years and months have no fixed length"));
        }
        let secs = f64::from(iso.day) * 86_400.0 + f64::from(iso.hour) * 3_600.0 + f64::from(iso.minute) * 60.0 + f64::from(iso.second);
        // The parser reads single-precision floats: `PT1.4S` comes out as 1.39999998 s, so
        // round to the microsecond.
        let micros = (secs * 1e6).round();
        return Duration::try_from_secs_f64(micros / 1e6).map_err(|_| DurationError::new(input, "out of range"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DurationError::new(input, "a unit is missing"));
    }
    humantime::parse_duration(text).map_err(|e| DurationError::new(input, e.to_string()))
}

/// Formats a duration the way [`parse_duration`] reads it back (`"5m"`, `"1s 500ms"`).
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_and_iso_forms() {
        let cases = [
            ("500ms", 500),
            ("5s", 5_000),
            ("5m", 300_000),
            ("1h 30m", 5_400_000),
            ("PT5M", 300_000),
            ("PT0.5S", 500),
            ("PT1.400S", 1_400),
            ("PT2S", 2_000),
            ("PT1H", 3_600_000),
            ("P1DT1S", 86_401_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration(text).unwrap(), Duration::from_millis(ms), "{text}");
        }
    }

    #[test]
    fn rejects_garbage_with_the_input_named() {
        for bad in ["", "5", "five minutes", "P1Y", "P1M", "PT", "-5s", "5 parsecs"] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn format_round_trips() {
        for ms in [1, 500, 1_000, 1_500, 60_000, 300_000, 3_723_004] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
