//! The one source of wall-clock times that are stored (`enqueued_at`, `synced_at`,
//! `next_attempt_at`, lease tokens): [`now`], the system clock shifted by a test-only offset, read
//! through a [`Clock`] the store is opened with, which a test may replace by a [`ManualClock`].
//!
//! Of the stored times only backoff timers steer this process: a due claim compares them with the
//! store's clock, and the worker sleeps until the earliest. Deadlines, lease renewal, the
//! observation of other drainers' leases and the worker's probes use [`std::time::Instant`],
//! which does not jump when the wall clock is stepped. A leaf: it knows nothing of the rest of the
//! crate.

use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// Test hook: seconds (may be negative or fractional) added to every stored wall-clock time of
/// this process, so that a test can run one process as if its clock had been stepped. Never
/// documented for users; ignored unless it parses as a finite number.
pub const OFFSET_HOOK: &str = "GRADATA_TEST_CLOCK_OFFSET_SECS";

/// The offset read from [`OFFSET_HOOK`] once, in seconds (0 when unset or unreadable).
static OFFSET_SECS: LazyLock<f64> = LazyLock::new(|| {
    std::env::var(OFFSET_HOOK)
        .ok()
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|seconds| seconds.is_finite())
        .unwrap_or(0.0)
});

/// Now, as stored in the outbox.
pub fn now() -> SystemTime {
    shifted(SystemTime::now(), *OFFSET_SECS)
}

/// Where a store, and the engine draining it, read the wall-clock times they store: [`now`] in the
/// service, or a [`ManualClock`] that a test moves instead of waiting for backoff timers to run
/// out or lease tokens to age.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// The manual clock's time, shared with its [`ManualClock`]; `None` for the system clock.
    manual: Option<Arc<Mutex<SystemTime>>>,
}

impl Clock {
    /// The system clock, as [`now`] reads it.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// Now, as this clock says.
    pub fn now(&self) -> SystemTime {
        match &self.manual {
            None => now(),
            Some(time) => *time.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

/// A clock that moves only when told to, for tests: hand [`ManualClock::clock`] to what reads the
/// time, then [`ManualClock::advance`] it.
#[derive(Debug, Clone)]
pub struct ManualClock {
    time: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock that reads `start` until advanced.
    pub fn starting_at(start: SystemTime) -> ManualClock {
        ManualClock {
            time: Arc::new(Mutex::new(start)),
        }
    }

    /// A [`Clock`] that reads this one.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.time.clone()),
        }
    }

    /// Moves the clock forward by `by` (not past what `SystemTime` can hold).
    pub fn advance(&self, by: Duration) {
        let mut time = self.time.lock().unwrap_or_else(PoisonError::into_inner);
        *time = time.checked_add(by).unwrap_or(*time);
    }
}

/// `time` moved by `seconds`; a shift past what `SystemTime` can hold leaves it where it is.
fn shifted(time: SystemTime, seconds: f64) -> SystemTime {
    let Ok(by) = Duration::try_from_secs_f64(seconds.abs()) else {
        return time;
    };
    let moved = if seconds >= 0.0 {
        time.checked_add(by)
    } else {
        time.checked_sub(by)
    };
    moved.unwrap_or(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_both_ways_and_never_panics() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(shifted(base, 0.0), base);
        assert_eq!(shifted(base, 7200.0), base + Duration::from_secs(7200));
        assert_eq!(shifted(base, -1.5), base - Duration::from_millis(1500));
        assert_eq!(shifted(base, f64::MAX), base);
        assert_eq!(
            shifted(SystemTime::UNIX_EPOCH, -1e30),
            SystemTime::UNIX_EPOCH
        );
    }

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let manual = ManualClock::starting_at(start);
        let clock = manual.clock();
        assert_eq!(clock.now(), start);
        manual.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), start + Duration::from_secs(90));
        let system = Clock::system().now();
        assert!(system.duration_since(now()).unwrap_or_default() < Duration::from_secs(60));
    }
}
