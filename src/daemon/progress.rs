//! What systemd is told while a long phase lasts: extensions of its start or stop timeout, sized
//! to the drain budget, and `STATUS=` lines with a drain's progress. It reports a drain; what the
//! drain does is the sync engine's.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::sync::{self, Engine, Trigger};
use crate::systemd::notify::Notifier;

/// Minimum time between two `STATUS=` progress lines during a drain.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// The longest extension asked of systemd at once. `EXTEND_TIMEOUT_USEC=` is a u32 of
/// microseconds (about 71.6 minutes), so a longer phase is covered by asking again, every half of
/// this, before the last extension runs out.
const MAX_EXTENSION: Duration = Duration::from_secs(3600);

/// Asks systemd for `needed` more time before its start (or stop) timeout, in extensions systemd
/// can take (see [`MAX_EXTENSION`]): the first at once, the rest from a task that the returned
/// handle aborts when dropped, i.e. when the phase is over. `None` when one extension covers it.
pub(super) fn keep_timeout_extended(
    notifier: Notifier,
    needed: Duration,
) -> Option<tokio_util::task::AbortOnDropHandle<()>> {
    let mut schedule = extension_schedule(needed, MAX_EXTENSION).into_iter();
    let (_, first) = schedule.next()?;
    notifier.extend_timeout(first);
    let rest: Vec<(Duration, Duration)> = schedule.collect();
    if rest.is_empty() {
        return None;
    }
    let started = tokio::time::Instant::now();
    Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        async move {
            for (at, extension) in rest {
                tokio::time::sleep_until(started + at).await;
                notifier.extend_timeout(extension);
            }
        },
    )))
}

/// When to ask for how much (from the start of the phase) so that `needed` is covered without
/// asking for more than `max` at once: every `max / 2`, each extension reaching past the next
/// request, the last one ending exactly at `needed`.
fn extension_schedule(needed: Duration, max: Duration) -> Vec<(Duration, Duration)> {
    let step = max / 2;
    let mut schedule = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        let remaining = needed.saturating_sub(at);
        schedule.push((at, remaining.min(max)));
        if remaining <= max || step.is_zero() {
            return schedule;
        }
        at += step;
    }
}

/// Runs a drain, sending `STATUS=draining sync queue: done/total rows` at most every 250 ms.
pub(super) async fn drain_with_progress(
    engine: &Engine,
    trigger: Trigger,
    budget: sync::Budget,
    cancel: &CancellationToken,
    notifier: Notifier,
) -> sync::DrainReport {
    notifier.status("draining sync queue");
    let mut last = Instant::now();
    let mut progress = |p: sync::Progress| {
        if last.elapsed() >= PROGRESS_INTERVAL || p.done == p.total {
            last = Instant::now();
            notifier.status(&format!("draining sync queue: {}/{} rows", p.done, p.total));
        }
    };
    engine.drain(trigger, budget, cancel, &mut progress).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{TIMEOUT_SLACK, WORKER_STOP_WAIT};

    /// Each extension fits `EXTEND_TIMEOUT_USEC=` (u32 microseconds), each request comes before
    /// the previous extension runs out, and together they cover exactly what is needed, even for
    /// the longest budgets the configuration accepts.
    #[test]
    fn extensions_fit_the_notification_and_cover_the_budget() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        for needed in [
            Duration::from_secs(45),
            MAX_EXTENSION,
            MAX_EXTENSION + Duration::from_secs(1),
            hours(2) + TIMEOUT_SLACK,
            hours(24) + TIMEOUT_SLACK,
            hours(2) + WORKER_STOP_WAIT + TIMEOUT_SLACK,
        ] {
            let schedule = extension_schedule(needed, MAX_EXTENSION);
            assert_eq!(schedule[0].0, Duration::ZERO, "{needed:?}");
            for &(_, extension) in &schedule {
                assert!(u32::try_from(extension.as_micros()).is_ok(), "{needed:?}");
            }
            for pair in schedule.windows(2) {
                let ((at, extension), (next_at, _)) = (pair[0], pair[1]);
                assert!(next_at < at + extension, "{needed:?}: a gap at {next_at:?}");
            }
            let &(last_at, last) = schedule.last().unwrap();
            assert_eq!(last_at + last, needed, "{needed:?}");
        }
        assert_eq!(
            extension_schedule(Duration::from_secs(45), MAX_EXTENSION).len(),
            1
        );
    }
}
