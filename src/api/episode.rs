//! A run of failures of one kind (refused writes, failed accepts, bodies refused for want of room), counted so that the journal
//! gets one line when it starts, at most one every [`REPEAT_EVERY`] while it lasts, and one when
//! it ends, however many requests or connections it touches.
//!
//! [`SharedEpisode`] is the form its users hold: safe to share between requests, and one atomic
//! load on the common path where nothing is failing. It only counts and times; what the lines say
//! belongs to its users.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Shortest time between two lines about the same episode.
pub(super) const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// What a failure calls for in the journal (see [`Episode::failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Line {
    /// The first failure: the episode starts.
    Started,
    /// A reminder that it goes on, with the failures since the last line.
    Still(u64),
}

/// One episode, from its first failure on.
#[derive(Debug)]
pub(super) struct Episode {
    started: Instant,
    last_logged: Instant,
    /// Failures since it started.
    count: u64,
    /// Failures since the last line.
    unlogged: u64,
}

impl Episode {
    /// Counts a failure at `now` in `current`, starting an episode if none is going on. Returns the
    /// line due, if any.
    pub(super) fn failure(current: &mut Option<Episode>, now: Instant) -> Option<Line> {
        match current {
            None => {
                *current = Some(Episode::start(now));
                Some(Line::Started)
            }
            Some(episode) => episode.again(now).map(Line::Still),
        }
    }

    /// An episode whose first failure, at `now`, is being logged.
    fn start(now: Instant) -> Episode {
        Episode {
            started: now,
            last_logged: now,
            count: 1,
            unlogged: 0,
        }
    }

    /// Counts one more failure at `now`. Returns the failures to report if a line is due (the
    /// last one was at least [`REPEAT_EVERY`] ago), and then counts from zero again.
    fn again(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        self.unlogged += 1;
        if now.duration_since(self.last_logged) < REPEAT_EVERY {
            return None;
        }
        self.last_logged = now;
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Failures since it started.
    pub(super) fn count(&self) -> u64 {
        self.count
    }

    /// How long ago it started.
    pub(super) fn lasted(&self) -> Duration {
        self.started.elapsed()
    }
}

/// An episode shared by every request that may fail or succeed, with the latest failure's detail
/// (`D`, e.g. why a write was refused).
#[derive(Debug, Default)]
pub(super) struct SharedEpisode<D = ()> {
    /// Set while an episode lasts, so a success costs one load when all is well. It is raised and
    /// lowered under the lock: a failure on another thread is never left without its flag.
    going_on: AtomicBool,
    current: Mutex<Current<D>>,
}

#[derive(Debug, Default)]
struct Current<D> {
    episode: Option<Episode>,
    /// The latest failure's; meaningful while `episode` is some.
    detail: D,
}

/// What is known of an episode that is still going on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ongoing<D> {
    /// Failures since it started.
    pub failures: u64,
    /// How long ago it started.
    pub lasted: Duration,
    /// The latest failure's detail.
    pub detail: D,
}

impl<D: Clone + Default> SharedEpisode<D> {
    /// Counts a failure now, keeping `detail` as the latest; returns the line due, if any.
    pub(super) fn failure(&self, detail: D) -> Option<Line> {
        let mut current = self.lock();
        current.detail = detail;
        let line = Episode::failure(&mut current.episode, Instant::now());
        self.going_on.store(true, Ordering::Relaxed);
        line
    }

    /// A success: ends the episode going on, if any, and returns it for its closing line.
    pub(super) fn success(&self) -> Option<Episode> {
        if !self.going_on.load(Ordering::Relaxed) {
            return None;
        }
        let mut current = self.lock();
        self.going_on.store(false, Ordering::Relaxed);
        current.detail = D::default();
        current.episode.take()
    }

    /// The episode going on, if any.
    pub(super) fn ongoing(&self) -> Option<Ongoing<D>> {
        if !self.going_on.load(Ordering::Relaxed) {
            return None;
        }
        let current = self.lock();
        current.episode.as_ref().map(|episode| Ongoing {
            failures: episode.count(),
            lasted: episode.lasted(),
            detail: current.detail.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Current<D>> {
        // The guarded value is counters, instants and a detail, consistent after any panic.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_at_most_every_minute_with_the_failures_since_the_last() {
        let start = Instant::now();
        let mut current = None;
        let mut at = |after: Duration| Episode::failure(&mut current, start + after);
        assert_eq!(at(Duration::ZERO), Some(Line::Started));
        assert_eq!(at(Duration::from_secs(1)), None);
        assert_eq!(at(Duration::from_secs(59)), None);
        assert_eq!(at(REPEAT_EVERY), Some(Line::Still(3)));
        assert_eq!(at(REPEAT_EVERY), None);
        assert_eq!(at(2 * REPEAT_EVERY), Some(Line::Still(2)));
        assert_eq!(current.map(|episode| episode.count()), Some(6));
    }

    #[test]
    fn a_shared_episode_lasts_from_the_first_failure_to_the_next_success() {
        let shared = SharedEpisode::<String>::default();
        assert!(shared.success().is_none());
        assert_eq!(shared.ongoing(), None);
        assert_eq!(shared.failure("full".to_owned()), Some(Line::Started));
        assert_eq!(shared.failure("busy".to_owned()), None);
        let ongoing = shared.ongoing().unwrap();
        assert_eq!((ongoing.failures, ongoing.detail.as_str()), (2, "busy"));
        assert_eq!(shared.success().map(|episode| episode.count()), Some(2));
        assert_eq!(shared.ongoing(), None);
        assert!(shared.success().is_none());
        assert_eq!(shared.failure("full".to_owned()), Some(Line::Started));
    }
}
