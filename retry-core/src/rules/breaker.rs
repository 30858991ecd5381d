//! Outage or outlier: the circuit breaker's rule.
//!
//! An outage (a database down) fails every record and heals by itself: blocking is right,
//! and republishing every record only floods the retry topics and burns attempts. An
//! outlier (one bad record) never heals: non-blocking retries are right. The breaker tells
//! them apart from the handler's outcomes: over a sliding time window, when at least
//! `min_calls` calls were made, at least `failure_rate` of them failed, and the failures
//! span at least `min_keys` distinct keys (so one poison key never trips it), it opens.
//! While open nothing is handled; after a probe delay exactly one call is let through
//! (half-open): success closes the breaker, failure reopens it with the delay doubled
//! (capped).
//!
//! Pure: every method takes `now` in ms since the epoch.

use std::collections::VecDeque;
use std::time::Duration;

use crate::error::ConfigError;

/// Settings of a listener's circuit breaker (off unless set on the listener).
///
/// | setting | default |
/// |---|---|
/// | sliding window | 10 s |
/// | minimum calls in the window | 20 |
/// | failure rate that opens it | 0.5 |
/// | distinct failing keys that open it | 5 |
/// | first probe after | 1 s |
/// | longest probe delay (doubling) | 60 s |
///
/// Each setter is named as the `#[retryable_topic(circuit_breaker(...))]` argument that
/// sets it: `window`, `min_calls`, `failure_rate`, `min_keys`, `probe_delay`,
/// `max_probe_delay`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct CircuitBreaker {
    window: Duration,
    min_calls: u32,
    failure_rate: f64,
    min_keys: u32,
    probe_delay: Duration,
    max_probe_delay: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            window: Duration::from_secs(10),
            min_calls: 20,
            failure_rate: 0.5,
            min_keys: 5,
            probe_delay: Duration::from_secs(1),
            max_probe_delay: Duration::from_secs(60),
        }
    }
}

impl CircuitBreaker {
    /// The sliding window the outcomes are counted over.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }
    /// Calls the window must hold before the breaker may open (≥ 1).
    pub fn min_calls(mut self, calls: u32) -> Self {
        self.min_calls = calls;
        self
    }
    /// The share of failed calls that opens it (0 < rate ≤ 1).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }
    /// Distinct keys the failures must span (≥ 1; records without a key count as distinct).
    pub fn min_keys(mut self, keys: u32) -> Self {
        self.min_keys = keys;
        self
    }
    /// The first probe's delay, doubled after each failed probe up to
    /// [`max_probe_delay`](Self::max_probe_delay).
    pub fn probe_delay(mut self, first: Duration) -> Self {
        self.probe_delay = first;
        self
    }
    /// The longest delay between probes.
    pub fn max_probe_delay(mut self, max: Duration) -> Self {
        self.max_probe_delay = max;
        self
    }

    /// Every problem with the settings, each naming its setting (`circuit_breaker.…`).
    pub fn check(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.window.is_zero() {
            errors.push(ConfigError::new("circuit_breaker.window", "must be longer than zero"));
        }
        if self.min_calls < 1 {
            errors.push(ConfigError::new("circuit_breaker.min_calls", "must be at least 1"));
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            errors.push(ConfigError::new("circuit_breaker.failure_rate", format!("must be within (0, 1], got {}", self.failure_rate)));
        }
        if self.min_keys < 1 {
            errors.push(ConfigError::new("circuit_breaker.min_keys", "must be at least 1"));
        }
        if self.probe_delay.is_zero() {
            errors.push(ConfigError::new("circuit_breaker.probe_delay", "must be longer than zero"));
        }
        if self.max_probe_delay < self.probe_delay {
            errors.push(ConfigError::new(
                "circuit_breaker.max_probe_delay",
                format!("must not be shorter than the first probe delay ({:?} < {:?})", self.max_probe_delay, self.probe_delay),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Where the breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Nothing is handled before `until_ms`, when one probe is let through.
    Open {
        /// When the next probe may go.
        until_ms: i64,
    },
    /// One probe call is out; everything else waits for its outcome.
    HalfOpen,
}

/// Whether a call may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go, and report the outcome with [`Breaker::record`].
    Go,
    /// The one probe: go, and report with [`Breaker::probe_result`].
    Probe,
    /// Wait: until `Some(ms)` (the next probe), or for the probe out now (`None`).
    Wait(Option<i64>),
}

/// Why the breaker opened, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tripped {
    /// Failed calls in the window.
    pub failed: usize,
    /// Calls in the window.
    pub calls: usize,
    /// Distinct keys among the failures (counted up to `min_keys`, enough to decide).
    pub keys: usize,
    /// The window.
    pub window: Duration,
    /// The first probe's delay.
    pub probe_in: Duration,
}

impl std::fmt::Display for Tripped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "outage suspected: {} of {} calls failed across {}+ keys in {}; pausing, first probe in {}",
            self.failed,
            self.calls,
            self.keys,
            humantime::format_duration(self.window),
            humantime::format_duration(self.probe_in)
        )
    }
}

/// Buckets the window is counted in: memory and work per outcome stay constant however
/// many calls the window holds (the window slides by a tenth of itself).
const BUCKETS: i64 = 10;

/// The outcomes of one slice of the window.
#[derive(Debug, Clone)]
struct Bucket {
    start_ms: i64,
    calls: usize,
    failed: usize,
    /// Distinct failing keys, at most `min_keys` of them (enough to decide).
    keys: Vec<u64>,
}

/// One listener's breaker: outcomes in, admissions out.
#[derive(Debug, Clone)]
pub struct Breaker {
    settings: CircuitBreaker,
    buckets: VecDeque<Bucket>,
    phase: Phase,
    delay: Duration,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: CircuitBreaker) -> Self {
        Breaker { settings, buckets: VecDeque::new(), phase: Phase::Closed, delay: settings.probe_delay }
    }

    /// Where it stands.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether a call may go at `now_ms`; the first ask after the probe delay gets the probe.
    pub fn admit(&mut self, now_ms: i64) -> Admission {
        match self.phase {
            Phase::Closed => Admission::Go,
            Phase::Open { until_ms } if now_ms >= until_ms => {
                self.phase = Phase::HalfOpen;
                Admission::Probe
            }
            Phase::Open { until_ms } => Admission::Wait(Some(until_ms)),
            Phase::HalfOpen => Admission::Wait(None),
        }
    }

    /// The outcome of a call admitted with [`Admission::Go`]: `failed` for a retryable
    /// failure (a fatal one says the record is bad, not the world), `key` identifying the
    /// record's key. `Some` when this outcome opened the breaker.
    pub fn record(&mut self, now_ms: i64, failed: bool, key: u64) -> Option<Tripped> {
        if self.phase != Phase::Closed {
            return None;
        }
        let window = ms(self.settings.window).max(1);
        let width = (window / BUCKETS).max(1);
        let since = now_ms.saturating_sub(window);
        while self.buckets.front().is_some_and(|b| b.start_ms + width <= since) {
            self.buckets.pop_front();
        }
        let min_keys = self.settings.min_keys as usize;
        if self.buckets.back().is_none_or(|b| now_ms >= b.start_ms + width) {
            self.buckets.push_back(Bucket { start_ms: now_ms - now_ms.rem_euclid(width), calls: 0, failed: 0, keys: Vec::new() });
        }
        let bucket = self.buckets.back_mut().expect("just pushed");
        bucket.calls += 1;
        if !failed {
            return None;
        }
        bucket.failed += 1;
        if bucket.keys.len() < min_keys && !bucket.keys.contains(&key) {
            bucket.keys.push(key);
        }
        let calls: usize = self.buckets.iter().map(|b| b.calls).sum();
        let failures: usize = self.buckets.iter().map(|b| b.failed).sum();
        if calls < self.settings.min_calls as usize || (failures as f64) < self.settings.failure_rate * calls as f64 {
            return None;
        }
        let mut keys: Vec<u64> = self.buckets.iter().flat_map(|b| b.keys.iter().copied()).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.len() < min_keys {
            return None;
        }
        self.buckets.clear();
        self.delay = self.settings.probe_delay;
        self.phase = Phase::Open { until_ms: now_ms.saturating_add(ms(self.delay)) };
        Some(Tripped { failed: failures, calls, keys: keys.len(), window: self.settings.window, probe_in: self.delay })
    }

    /// The probe's outcome: success closes the breaker; failure reopens it with the delay
    /// doubled (capped). Returns the new phase.
    pub fn probe_result(&mut self, now_ms: i64, ok: bool) -> Phase {
        if self.phase != Phase::HalfOpen {
            return self.phase;
        }
        if ok {
            self.phase = Phase::Closed;
            self.delay = self.settings.probe_delay;
        } else {
            self.delay = (self.delay * 2).min(self.settings.max_probe_delay);
            self.phase = Phase::Open { until_ms: now_ms.saturating_add(ms(self.delay)) };
        }
        self.phase
    }

    /// The probe never reported (its partition was revoked, its task stopped): another
    /// call may probe at once.
    pub fn probe_abandoned(&mut self, now_ms: i64) {
        if self.phase == Phase::HalfOpen {
            self.phase = Phase::Open { until_ms: now_ms };
        }
    }

    /// Closes it at once (an operator resumed the listener), forgetting the window.
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
        self.delay = self.settings.probe_delay;
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(CircuitBreaker::default())
    }

    #[test]
    fn an_outage_across_keys_opens_it_after_the_minimum_calls() {
        let mut b = breaker();
        for i in 0..19 {
            assert_eq!(b.record(i, true, i as u64), None);
        }
        let t = b.record(19, true, 19).expect("opens at 20 calls");
        // Keys are counted up to what is needed to decide (`min_keys`).
        assert_eq!((t.failed, t.calls, t.keys), (20, 20, 5));
        assert!(t.to_string().starts_with("outage suspected: 20 of 20 calls failed across 5+ keys in 10s; pausing"), "{t}");
        assert_eq!(b.phase(), Phase::Open { until_ms: 1_019 });
        assert_eq!(b.admit(500), Admission::Wait(Some(1_019)));
    }

    #[test]
    fn one_poison_key_never_opens_it() {
        let mut b = breaker();
        for i in 0..1_000 {
            assert_eq!(b.record(i, true, 42), None, "a single key failing is an outlier");
        }
        assert_eq!(b.admit(1_000), Admission::Go);
    }

    #[test]
    fn a_low_failure_rate_never_opens_it() {
        let mut b = breaker();
        for i in 0..1_000 {
            // One call in three fails, each a different key.
            assert_eq!(b.record(i, i % 3 == 0, i as u64), None);
        }
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let mut b = breaker();
        for i in 0..19 {
            b.record(i * 1_000, true, i as u64);
        }
        // The first ten are older than 10 s by now: 10 calls in the window, too few.
        assert_eq!(b.record(19_000, true, 19), None);
    }

    #[test]
    fn one_probe_at_a_time_and_its_outcome_decides() {
        let mut b = breaker();
        for i in 0..20 {
            b.record(0, true, i);
        }
        assert_eq!(b.admit(999), Admission::Wait(Some(1_000)));
        assert_eq!(b.admit(1_000), Admission::Probe);
        assert_eq!(b.admit(1_001), Admission::Wait(None), "only one probe");
        // A failed probe doubles the delay.
        assert_eq!(b.probe_result(1_100, false), Phase::Open { until_ms: 3_100 });
        assert_eq!(b.admit(3_100), Admission::Probe);
        assert_eq!(b.probe_result(3_200, false), Phase::Open { until_ms: 7_200 });
        assert_eq!(b.admit(7_200), Admission::Probe);
        assert_eq!(b.probe_result(7_300, true), Phase::Closed);
        assert_eq!(b.admit(7_301), Admission::Go);
    }

    #[test]
    fn the_probe_delay_is_capped_and_an_abandoned_probe_frees_the_slot() {
        let mut b = Breaker::new(CircuitBreaker::default().probe_delay(Duration::from_secs(1)).max_probe_delay(Duration::from_secs(3)));
        for i in 0..20 {
            b.record(0, true, i);
        }
        let mut now = 1_000;
        for expected in [2_000, 3_000, 3_000] {
            assert_eq!(b.admit(now), Admission::Probe);
            assert_eq!(b.probe_result(now, false), Phase::Open { until_ms: now + expected });
            now += expected;
        }
        assert_eq!(b.admit(now), Admission::Probe);
        b.probe_abandoned(now + 5);
        assert_eq!(b.admit(now + 5), Admission::Probe);
    }

    #[test]
    fn settings_are_checked() {
        let bad = CircuitBreaker::default().failure_rate(0.0).min_calls(0).min_keys(0).probe_delay(Duration::ZERO);
        let settings: Vec<String> = bad.check().unwrap_err().into_iter().map(|e| e.setting).collect();
        assert_eq!(
            settings,
            ["circuit_breaker.min_calls", "circuit_breaker.failure_rate", "circuit_breaker.min_keys", "circuit_breaker.probe_delay"]
        );
        assert!(CircuitBreaker::default().check().is_ok());
    }
}
