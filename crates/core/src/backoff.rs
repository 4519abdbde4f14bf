//! Exponential backoff with multiplicative jitter:
//! `delay = min(max, base · 2^attempt) · jitter`, `jitter ∈ [0.5, 1.5)` (SPEC §3).
//!
//! `attempt` is the zero-based index of the attempt that just failed, so the first retry waits
//! about `base`, the second about `2·base`, and so on until `max`. The jitter is applied after
//! the cap, as the formula says, so a delay may reach `1.5·max`; it spreads the retries of many
//! tasks that failed together (an S3 outage, a Postgres restart) instead of letting them stampede.

use rand::Rng;
use std::time::Duration;

/// The lowest jitter factor.
pub const JITTER_MIN: f64 = 0.5;
/// The (exclusive) highest jitter factor.
pub const JITTER_MAX: f64 = 1.5;

/// A capped exponential backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// Delay before the first retry, before jitter.
    pub base: Duration,
    /// Cap on the un-jittered delay.
    pub max: Duration,
}

impl BackoffPolicy {
    /// Task retries: 30 s → 10 min.
    pub const TASK: Self = Self { base: Duration::from_secs(30), max: Duration::from_secs(600) };

    /// Outbox redelivery: 1 s → 5 min.
    pub const OUTBOX: Self = Self { base: Duration::from_secs(1), max: Duration::from_secs(300) };

    /// The un-jittered delay after the attempt with zero-based index `attempt` failed.
    pub fn capped(&self, attempt: u32) -> Duration {
        let factor = 2u32.checked_pow(attempt).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).map_or(self.max, |delay| delay.min(self.max))
    }

    /// The delay for a given jitter factor; factors outside `[0.5, 1.5]` are clamped, so a
    /// caller's bad random source can never produce a zero or unbounded delay.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let jitter = if jitter.is_nan() { 1.0 } else { jitter.clamp(JITTER_MIN, JITTER_MAX) };
        self.capped(attempt).mul_f64(jitter)
    }

    /// The delay with a jitter factor drawn from `rng`.
    pub fn sample(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        self.delay(attempt, rng.random_range(JITTER_MIN..JITTER_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn task_backoff_table() {
        // (attempt, jitter, expected)
        let cases = [
            (0, 1.0, S(30)),
            (1, 1.0, S(60)),
            (2, 1.0, S(120)),
            (3, 1.0, S(240)),
            (4, 1.0, S(480)),
            (5, 1.0, S(600)),
            (30, 1.0, S(600)),
            (u32::MAX, 1.0, S(600)),
            (0, 0.5, S(15)),
            (0, 1.5, S(45)),
            (5, 0.5, S(300)),
            (5, 1.5, S(900)),
            // out-of-range jitter is clamped, never zero or unbounded
            (0, 0.0, S(15)),
            (0, -3.0, S(15)),
            (0, 99.0, S(45)),
            (0, f64::NAN, S(30)),
        ];
        for (attempt, jitter, expected) in cases {
            assert_eq!(BackoffPolicy::TASK.delay(attempt, jitter), expected, "attempt {attempt}, jitter {jitter}");
        }
    }

    #[test]
    fn outbox_backoff_table() {
        let cases = [(0, S(1)), (1, S(2)), (4, S(16)), (8, S(256)), (9, S(300)), (19, S(300))];
        for (attempt, expected) in cases {
            assert_eq!(BackoffPolicy::OUTBOX.capped(attempt), expected, "attempt {attempt}");
        }
    }

    #[test]
    fn sampled_delays_stay_within_the_jitter_bounds() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..12 {
            let capped = BackoffPolicy::TASK.capped(attempt);
            let (mut low, mut high) = (Duration::MAX, Duration::ZERO);
            for _ in 0..2_000 {
                let delay = BackoffPolicy::TASK.sample(attempt, &mut rng);
                assert!(delay >= capped.mul_f64(JITTER_MIN), "{delay:?} below bound");
                assert!(delay < capped.mul_f64(JITTER_MAX), "{delay:?} above bound");
                low = low.min(delay);
                high = high.max(delay);
            }
            // the jitter really spreads: both ends of the range are reached within 5 %
            assert!(low < capped.mul_f64(0.55), "attempt {attempt}: low {low:?}");
            assert!(high > capped.mul_f64(1.45), "attempt {attempt}: high {high:?}");
        }
    }
}
