//! Backoff: how long a record waits before its next attempt.
//!
//! Pure functions only. Attempt numbers count every handling of a record, the first one
//! included, so the delay *before* attempt `n` (n ≥ 2) is [`Backoff::delay`]`(n - 1)`.

use std::time::Duration;

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

    /// Checks the parameters; the message names the one at fault.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Backoff::Fixed(_) => Ok(()),
            Backoff::Exponential { multiplier, .. } if !(multiplier >= 1.0 && multiplier.is_finite()) => {
                Err(format!("backoff multiplier must be a finite number ≥ 1.0, got {multiplier}"))
            }
            Backoff::Exponential { initial, max, .. } | Backoff::Linear { initial, max, .. } if max < initial => {
                Err(format!("backoff max delay ({max:?}) must not be shorter than the initial delay ({initial:?})"))
            }
            _ => Ok(()),
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
        assert!(Backoff::exponential(S, 0.5, 9 * S).validate().unwrap_err().contains("multiplier"));
        assert!(Backoff::exponential(S, f64::NAN, 9 * S).validate().is_err());
        assert!(Backoff::linear(9 * S, S, S).validate().unwrap_err().contains("max delay"));
        assert!(Backoff::default().validate().is_ok());
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
