//! When to try again, and how many requests to keep in flight.
//!
//! [`RetryPolicy`] is full-jitter exponential backoff (`random(0, min(cap, base·2^attempts))`,
//! AWS's "Exponential Backoff and Jitter"): it spreads a herd of retries over the whole window
//! instead of synchronising them. [`Concurrency`] is the adaptive in-flight limit of DESIGN §5:
//! halve on a throttle, one more after every clean batch, between 1 and the configured maximum.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Default backoff base (DESIGN §5).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Default backoff cap (DESIGN §5).
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Full-jitter exponential backoff. Cheap to clone; clones share one random source.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    base: Duration,
    cap: Duration,
    /// Seeded in tests for repeatable draws. A std mutex: held for one draw, never across `.await`.
    rng: Arc<Mutex<StdRng>>,
}

impl RetryPolicy {
    /// A policy drawing from the operating system's entropy.
    pub fn new(base: Duration, cap: Duration) -> RetryPolicy {
        RetryPolicy::with_rng(base, cap, StdRng::from_entropy())
    }

    /// A policy with a given random source (tests).
    pub fn with_rng(base: Duration, cap: Duration, rng: StdRng) -> RetryPolicy {
        RetryPolicy {
            base,
            cap: cap.max(base),
            rng: Arc::new(Mutex::new(rng)),
        }
    }

    /// The upper bound of the window after `attempts` failed attempts: `min(cap, base·2^attempts)`.
    pub fn ceiling(&self, attempts: u32) -> Duration {
        let factor = 2u32.checked_pow(attempts.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// A random delay in `[0, ceiling(attempts)]`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let ceiling = self.ceiling(attempts);
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ceiling.mul_f64(rng.r#gen::<f64>())
    }
}

/// The adaptive limit on requests in flight. Cheap to clone; clones share the value, so what one
/// drain learns (a 429) the next one starts from.
#[derive(Debug, Clone)]
pub struct Concurrency {
    current: Arc<AtomicUsize>,
    max: usize,
}

impl Concurrency {
    /// Starts at `initial`, never above `max` nor below 1.
    pub fn new(initial: usize, max: usize) -> Concurrency {
        let max = max.max(1);
        Concurrency {
            current: Arc::new(AtomicUsize::new(initial.clamp(1, max))),
            max,
        }
    }

    /// The limit now.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Halves the limit (at least 1): the server said "too many".
    pub fn halve(&self) {
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some((n / 2).max(1))
            });
    }

    /// One more, up to the maximum: a batch went through without a single failure.
    pub fn increase(&self) {
        let max = self.max;
        let _ = self
            .current
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some((n + 1).min(max))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(seed: u64) -> RetryPolicy {
        RetryPolicy::with_rng(
            Duration::from_secs(1),
            Duration::from_secs(300),
            StdRng::seed_from_u64(seed),
        )
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let policy = policy(1);
        let ceilings: Vec<u64> = (0..12).map(|n| policy.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn backoff_grows_and_is_jittered() {
        let policy = policy(7);
        let mut previous_mean = 0.0;
        for attempts in 0..9 {
            let draws: Vec<f64> = (0..400)
                .map(|_| policy.backoff(attempts).as_secs_f64())
                .collect();
            let ceiling = policy.ceiling(attempts).as_secs_f64();
            assert!(
                draws.iter().all(|d| (0.0..=ceiling).contains(d)),
                "attempts {attempts}"
            );
            let mean = draws.iter().sum::<f64>() / draws.len() as f64;
            // Full jitter: the mean sits near half the ceiling, and the draws are spread out.
            assert!(
                (0.4 * ceiling..0.6 * ceiling).contains(&mean),
                "attempts {attempts}: mean {mean}"
            );
            let distinct: std::collections::BTreeSet<u64> =
                draws.iter().map(|d| d.to_bits()).collect();
            assert!(
                distinct.len() > 350,
                "attempts {attempts}: only {} distinct draws",
                distinct.len()
            );
            assert!(mean > previous_mean, "mean must grow with attempts");
            previous_mean = mean;
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let a: Vec<Duration> = (0..5).map(|n| policy(3).backoff(n)).collect();
        let b: Vec<Duration> = (0..5).map(|n| policy(3).backoff(n)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn concurrency_halves_and_climbs_within_bounds() {
        let limit = Concurrency::new(4, 6);
        limit.halve();
        assert_eq!(limit.current(), 2);
        limit.halve();
        limit.halve();
        assert_eq!(limit.current(), 1);
        for _ in 0..10 {
            limit.increase();
        }
        assert_eq!(limit.current(), 6);
        assert_eq!(Concurrency::new(0, 0).current(), 1);
    }
}
