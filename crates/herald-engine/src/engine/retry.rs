//! Retry policy: exponential backoff with jitter, capped, for a bounded number of attempts.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before the attempt after `attempts_made` attempts. "Equal jitter": half of
    /// the exponential step is fixed, half random, so retries of a failed batch spread out
    /// instead of hammering the provider together.
    pub fn backoff(&self, attempts_made: i64, random_unit: f64) -> Duration {
        let exp = attempts_made.saturating_sub(1).clamp(0, 30) as u32;
        let step = self
            .base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.max);
        let half = step / 2;
        half + half.mul_f64(random_unit.clamp(0.0, 1.0))
    }

    /// True when another attempt is allowed after `attempts_made`.
    pub fn may_retry(&self, attempts_made: i64) -> bool {
        attempts_made < i64::from(self.max_attempts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(1000),
            max: Duration::from_millis(60_000),
        }
    }

    #[test]
    fn grows_exponentially_and_caps() {
        let p = policy();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(2000));
        assert_eq!(p.backoff(3, 0.0), Duration::from_millis(2000));
        assert_eq!(p.backoff(20, 1.0), Duration::from_millis(60_000));
    }

    #[test]
    fn attempts_are_bounded() {
        let p = policy();
        assert!(p.may_retry(4));
        assert!(!p.may_retry(5));
    }

    proptest! {
        #[test]
        fn backoff_stays_within_half_and_full_step(attempts in 1i64..100, r in 0.0f64..=1.0) {
            let p = policy();
            let d = p.backoff(attempts, r);
            prop_assert!(d <= p.max);
            prop_assert!(d >= p.base / 2);
        }
    }
}
