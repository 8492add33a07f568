use super::settlement::retry_at;
use super::*;
use crate::sync::retry::RetryPolicy;

use rand::SeedableRng;

#[test]
fn retry_times_saturate_at_any_attempt_count() {
    let cap = Duration::from_secs(300);
    let policy = RetryPolicy::with_rng(
        Duration::from_secs(1),
        cap,
        rand::rngs::StdRng::seed_from_u64(5),
    );
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for attempts in [0, 1, 31, 32, 64, u32::MAX - 1, u32::MAX] {
        let next = attempts.saturating_add(1);
        for retry_after in [None, Some(Duration::from_secs(7)), Some(Duration::MAX)] {
            let at = retry_at(&policy, next, retry_after, now);
            assert!(at >= now, "{attempts} {retry_after:?}");
            if retry_after.is_none() {
                assert!(at <= now + cap, "{attempts}: {at:?}");
            }
        }
    }
    assert_eq!(u32::MAX.saturating_add(1), u32::MAX);
    // A time past what the clock can hold stays where it is rather than panicking.
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 62);
    let _ = retry_at(&policy, u32::MAX, Some(Duration::MAX), end);
}
