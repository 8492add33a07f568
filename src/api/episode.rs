//! A run of failures of one kind (refused writes, failed accepts, bodies refused for want of room), counted so that the journal
//! gets one line when it starts, at most one every [`REPEAT_EVERY`] while it lasts, and one when
//! it ends, however many requests or connections it touches.
//!
//! It only counts and times; what the lines say belongs to its users.

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
}
