use super::outage::probe_wait;
use super::*;

fn report(delivered: u64, dead: u64, retried: u64, reason: StopReason) -> DrainReport {
    DrainReport {
        delivered,
        dead,
        retried,
        remaining: None,
        elapsed: Duration::ZERO,
        reason,
        detail: None,
        last_answered: None,
    }
}

#[test]
fn a_timer_beyond_any_retry_is_due_now() {
    let longest = Duration::from_secs(3600);
    assert_eq!(wait_for_timer(Duration::ZERO, longest), Duration::ZERO);
    assert_eq!(
        wait_for_timer(Duration::from_secs(5), longest),
        Duration::from_secs(5)
    );
    assert_eq!(wait_for_timer(longest, longest), longest);
    assert_eq!(wait_for_timer(longest * 2, longest), Duration::ZERO);
    assert_eq!(wait_for_timer(Duration::MAX, longest), Duration::ZERO);
}

#[test]
fn probes_back_off_exponentially_up_to_the_cap() {
    assert_eq!(probe_wait(0), PROBE_FIRST);
    assert_eq!(probe_wait(1), PROBE_FIRST * 2);
    assert_eq!(probe_wait(10), PROBE_CAP);
    assert_eq!(probe_wait(u32::MAX), PROBE_CAP);
}

#[test]
fn only_a_drain_whose_every_attempt_failed_is_an_outage() {
    assert!(fails_everything(&report(0, 0, 50, StopReason::NoProgress)));
    assert!(fails_everything(&report(0, 0, 3, StopReason::Done)));
    assert!(
        !fails_everything(&report(1, 0, 49, StopReason::NoProgress)),
        "some rows fail, the ingest is up"
    );
    assert!(
        !fails_everything(&report(0, 1, 0, StopReason::Done)),
        "a dead row is an answer"
    );
    assert!(
        !fails_everything(&report(0, 0, 0, StopReason::Empty)),
        "nothing sent"
    );
    assert!(
        !fails_everything(&report(0, 0, 1, StopReason::RateLimited)),
        "a throttle pauses on its own terms"
    );
}
