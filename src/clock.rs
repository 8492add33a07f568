//! The one source of wall-clock times that are stored (`enqueued_at`, `synced_at`,
//! `next_attempt_at`, lease tokens): [`now`], the system clock shifted by a test-only offset.
//!
//! Stored times are for people and for other processes; no decision inside a process waits on
//! them. Deadlines, sleeps, lease renewal and the observation of other drainers' leases use
//! [`std::time::Instant`], which does not jump when the wall clock is stepped. A leaf: it knows
//! nothing of the rest of the crate.

use std::sync::LazyLock;
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
}
