//! Backoff: how long a record waits before its next attempt.
//!
//! Pure functions only. Attempt numbers count every handling of a record, the first one
//! included, so the delay *before* attempt `n` (n ≥ 2) is [`Backoff::delay`]`(n - 1)`.

use std::time::Duration;

use crate::error::ConfigError;

/// The delay schedule between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed(Duration),
    /// `initial × multiplier^(retry-1)`, capped at `max`.
    Exponential {
        /// Delay before the first retry.
        initial: Duration,
        /// Growth factor per retry (≥ 1.0).
        multiplier: f64,
        /// Upper bound of any single delay.
        max: Duration,
    },
    /// `initial + step × (retry-1)`, capped at `max`.
    Linear {
        /// Delay before the first retry.
        initial: Duration,
        /// Added per retry.
        step: Duration,
        /// Upper bound of any single delay.
        max: Duration,
    },
}

impl Default for Backoff {
    /// One second, fixed (Spring's default).
    fn default() -> Self {
        Backoff::Fixed(Duration::from_secs(1))
    }
}

impl Backoff {
    /// A fixed delay.
    pub fn fixed(delay: Duration) -> Self {
        Backoff::Fixed(delay)
    }

    /// An exponential delay.
    pub fn exponential(initial: Duration, multiplier: f64, max: Duration) -> Self {
        Backoff::Exponential { initial, multiplier, max }
    }

    /// A linearly growing delay.
    pub fn linear(initial: Duration, step: Duration, max: Duration) -> Self {
        Backoff::Linear { initial, step, max }
    }

    /// The delay before retry number `retry` (1 = the delay before the second attempt).
    /// `retry = 0` is treated as 1.
    pub fn delay(&self, retry: u32) -> Duration {
        let n = retry.max(1) - 1;
        match *self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { initial, multiplier, max } => {
                let factor = multiplier.max(1.0).powi(i32::try_from(n).unwrap_or(i32::MAX));
                let secs = initial.as_secs_f64() * factor;
                if !secs.is_finite() || secs >= max.as_secs_f64() {
                    max
                } else {
                    Duration::from_secs_f64(secs).min(max)
                }
            }
            Backoff::Linear { initial, step, max } => step.checked_mul(n).and_then(|s| s.checked_add(initial)).map_or(max, |d| d.min(max)),
        }
    }

    /// The longest delay this schedule can produce.
    pub fn max_delay(&self) -> Duration {
        match *self {
            Backoff::Fixed(d) => d,
            Backoff::Exponential { initial, max, .. } | Backoff::Linear { initial, max, .. } => initial.max(max),
        }
    }

    /// Checks the parameters: every problem, each naming its parameter
    /// (`backoff.multiplier`, `backoff.max_delay`).
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if let Backoff::Exponential { multiplier, .. } = *self {
            if !(multiplier >= 1.0 && multiplier.is_finite()) {
                errors.push(ConfigError::new("backoff.multiplier", format!("must be a finite number ≥ 1.0, got {multiplier}")));
            }
        }
        if let Backoff::Exponential { initial, max, .. } | Backoff::Linear { initial, max, .. } = *self {
            if max < initial {
                errors.push(ConfigError::new(
                    "backoff.max_delay",
                    format!("must not be shorter than the first delay ({max:?} < {initial:?})"),
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The delay of a backoff given none: one second (Spring's default).
pub const DEFAULT_DELAY: Duration = Duration::from_secs(1);

/// The cap of a growing backoff given none: 30 s, or the first delay if that is longer.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

/// A backoff by its parts, each optional, as the `#[retryable_topic]` arguments (or a
/// command line) give them: a multiplier makes it exponential, a linear step linear,
/// neither fixed. [`build`](Self::build) applies the defaults and checks every rule.
///
/// ```
/// use std::time::Duration;
/// use retry_core::backoff::{Backoff, BackoffParts};
/// let s = Duration::from_secs;
/// let b = BackoffParts { delay: Some(s(2)), multiplier: Some(2.0), ..Default::default() }.build().unwrap();
/// assert_eq!(b, Backoff::exponential(s(2), 2.0, s(30)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BackoffParts {
    /// Delay before the first retry ([`DEFAULT_DELAY`] if unset).
    pub delay: Option<Duration>,
    /// Growth factor per retry: exponential backoff.
    pub multiplier: Option<f64>,
    /// Added per retry: linear backoff.
    pub linear_step: Option<Duration>,
    /// Cap of a growing backoff ([`DEFAULT_MAX_DELAY`], or `delay` if longer, if unset).
    pub max_delay: Option<Duration>,
}

impl BackoffParts {
    /// The backoff these parts describe, or every problem, each naming its part
    /// (`backoff.delay`, `backoff.multiplier`, `backoff.linear_step`, `backoff.max_delay`).
    pub fn build(self) -> Result<Backoff, Vec<ConfigError>> {
        let delay = self.delay.unwrap_or(DEFAULT_DELAY);
        let max = self.max_delay.unwrap_or(DEFAULT_MAX_DELAY.max(delay));
        let mut errors = Vec::new();
        if self.multiplier.is_some() && self.linear_step.is_some() {
            errors.push(ConfigError::new("backoff.linear_step", "excludes a multiplier: pick linear or exponential backoff"));
        }
        if self.multiplier.is_none() && self.linear_step.is_none() && self.max_delay.is_some() {
            errors.push(ConfigError::new(
                "backoff.max_delay",
                "caps a growing backoff: add a multiplier (exponential) or a linear step (linear)",
            ));
        }
        let backoff = match (self.multiplier, self.linear_step) {
            (Some(multiplier), _) => Backoff::exponential(delay, multiplier, max),
            (None, Some(step)) => Backoff::linear(delay, step, max),
            (None, None) => Backoff::fixed(delay),
        };
        if let Err(more) = backoff.validate() {
            errors.extend(more);
        }
        if errors.is_empty() {
            Ok(backoff)
        } else {
            Err(errors)
        }
    }
}

/// Spreads a delay by ± `fraction` using `unit_sample` ∈ [0, 1) as the random draw
/// (kept as a parameter so this stays a pure function).
///
/// `fraction` is clamped to [0, 1]; the result is never negative.
pub fn apply_jitter(delay: Duration, fraction: f64, unit_sample: f64) -> Duration {
    let fraction = if fraction.is_finite() { fraction.clamp(0.0, 1.0) } else { 0.0 };
    let sample = if unit_sample.is_finite() { unit_sample.clamp(0.0, 1.0) } else { 0.5 };
    let factor = 1.0 + fraction * (2.0 * sample - 1.0);
    Duration::try_from_secs_f64(delay.as_secs_f64() * factor).unwrap_or(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn fixed_is_flat() {
        let b = Backoff::fixed(5 * S);
        assert!((0..1000).all(|n| b.delay(n) == 5 * S));
    }

    #[test]
    fn exponential_grows_and_caps() {
        let b = Backoff::exponential(S, 2.0, 60 * S);
        let got: Vec<_> = (1..=8).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(u32::MAX), 60 * S);
        assert_eq!(b.max_delay(), 60 * S);
    }

    #[test]
    fn linear_grows_and_caps() {
        let b = Backoff::linear(S, 2 * S, 6 * S);
        let got: Vec<_> = (1..=5).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(got, [1, 3, 5, 6, 6]);
        assert_eq!(b.delay(u32::MAX), 6 * S);
    }

    #[test]
    fn delays_never_decrease() {
        for b in [Backoff::exponential(S / 10, 1.5, 30 * S), Backoff::linear(S, S, 9 * S)] {
            let ds: Vec<_> = (1..200).map(|n| b.delay(n)).collect();
            assert!(ds.windows(2).all(|w| w[0] <= w[1]), "{b:?}");
        }
    }

    #[test]
    fn validation_names_the_parameter() {
        let settings = |b: Backoff| b.validate().unwrap_err().into_iter().map(|e| e.setting).collect::<Vec<_>>();
        assert_eq!(settings(Backoff::exponential(S, 0.5, 9 * S)), ["backoff.multiplier"]);
        assert_eq!(settings(Backoff::exponential(S, f64::NAN, 9 * S)), ["backoff.multiplier"]);
        assert_eq!(settings(Backoff::linear(9 * S, S, S)), ["backoff.max_delay"]);
        assert_eq!(settings(Backoff::exponential(9 * S, 0.5, S)), ["backoff.multiplier", "backoff.max_delay"]);
        assert!(Backoff::default().validate().is_ok());
    }

    #[test]
    fn parts_apply_the_defaults_and_report_every_problem() {
        let parts = |delay, multiplier, linear_step, max_delay| BackoffParts { delay, multiplier, linear_step, max_delay }.build();
        assert_eq!(parts(None, None, None, None).unwrap(), Backoff::fixed(DEFAULT_DELAY));
        assert_eq!(parts(Some(5 * S), None, None, None).unwrap(), Backoff::fixed(5 * S));
        assert_eq!(parts(Some(S), Some(2.0), None, None).unwrap(), Backoff::exponential(S, 2.0, DEFAULT_MAX_DELAY));
        // A first delay longer than the default cap is its own cap.
        assert_eq!(parts(Some(60 * S), None, Some(S), None).unwrap(), Backoff::linear(60 * S, S, 60 * S));
        let settings = |r: Result<Backoff, Vec<ConfigError>>| r.unwrap_err().into_iter().map(|e| e.setting).collect::<Vec<_>>();
        assert_eq!(settings(parts(None, Some(2.0), Some(S), None)), ["backoff.linear_step"]);
        assert_eq!(settings(parts(None, None, None, Some(S))), ["backoff.max_delay"]);
        assert_eq!(settings(parts(Some(9 * S), Some(0.5), None, Some(S))), ["backoff.multiplier", "backoff.max_delay"]);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let d = 10 * S;
        for i in 0..=100 {
            let j = apply_jitter(d, 0.2, f64::from(i) / 100.0);
            assert!(j >= 8 * S && j <= 12 * S, "{j:?}");
        }
        assert_eq!(apply_jitter(d, 0.0, 0.99), d);
        assert_eq!(apply_jitter(d, 5.0, 0.0), Duration::ZERO);
        assert_eq!(apply_jitter(d, f64::NAN, 0.3), d);
    }
}
