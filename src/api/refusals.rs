//! Tells the journal when writes are refused for the service's reasons rather than the client's (a
//! full disk or queue, a busy or failing outbox), and when they are accepted again. A client sees
//! each refusal as a 503 or 500; the operator sees one line when an episode starts, one at most
//! every minute while it lasts (with how many writes were refused meanwhile; the counting is
//! [`super::episode`]'s), and one when a write is accepted again. A full disk under load is a few
//! lines, not one per request.
//!
//! `/health` reads the current episode ([`Refusals::current`]) and says `degraded` while it lasts.
//!
//! It knows nothing of HTTP: the capture routes report how each enqueue ended.

use std::time::Duration;

use super::episode::{Line, SharedEpisode};
use crate::logging::Causes;
use crate::store;

/// The current episode of refused writes, if any, with why the latest was refused.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    episode: SharedEpisode<String>,
}

/// What `/health` shows of an episode that is still going on.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Ongoing {
    /// Writes refused since it started.
    pub refused: u64,
    /// How long ago it started.
    pub lasted: Duration,
    /// Why the latest write was refused.
    pub error: String,
}

impl Refusals {
    /// Records a write the store refused. Shutting down is not an episode: the service says so
    /// itself.
    pub(super) fn refused(&self, err: &store::Error) {
        if matches!(err, store::Error::Closed) {
            return;
        }
        // The reason can change within an episode (a full queue, then a full disk).
        match self.episode.failure(err.to_string()) {
            Some(Line::Started) => log_refusal(err, "writes are refused", 1),
            Some(Line::Still(unlogged)) => log_refusal(err, "writes are still refused", unlogged),
            None => {}
        }
    }

    /// Records a write the store accepted, which ends an episode.
    pub(super) fn accepted(&self) {
        if let Some(episode) = self.episode.success() {
            tracing::info!(
                refused = episode.count(),
                lasted_secs = episode.lasted().as_secs_f64(),
                "writes are accepted again"
            );
        }
    }

    /// The episode going on, if writes are being refused: it ends with the next accepted write.
    pub(super) fn current(&self) -> Option<Ongoing> {
        self.episode.ongoing().map(|ongoing| Ongoing {
            refused: ongoing.failures,
            lasted: ongoing.lasted,
            error: ongoing.detail,
        })
    }
}

/// A full disk or queue and a busy outbox pass once the operator (or the sync worker) makes room;
/// anything else is a failure of the outbox itself.
fn log_refusal(err: &store::Error, message: &str, refused: u64) {
    match err {
        store::Error::DiskFull(_) | store::Error::QueueFull { .. } | store::Error::Busy(_) => {
            tracing::warn!(error = %Causes(err), refused, "{message}");
        }
        _ => tracing::error!(error = %Causes(err), refused, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(code: std::ffi::c_int) -> store::Error {
        store::Error::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            None,
        ))
    }

    fn disk_full() -> store::Error {
        sqlite(rusqlite::ffi::SQLITE_FULL)
    }

    #[test]
    fn an_episode_counts_its_refusals_until_a_write_is_accepted() {
        let refusals = Refusals::default();
        refusals.accepted();
        assert_eq!(refusals.current(), None);
        for _ in 0..3 {
            refusals.refused(&disk_full());
        }
        let ongoing = refusals.current().unwrap();
        assert_eq!(ongoing.refused, 3);
        assert_eq!(ongoing.error, disk_full().to_string());
        refusals.accepted();
        assert_eq!(refusals.current(), None);
    }

    #[test]
    fn the_latest_reason_is_shown() {
        let refusals = Refusals::default();
        refusals.refused(&sqlite(rusqlite::ffi::SQLITE_BUSY));
        refusals.refused(&disk_full());
        assert_eq!(refusals.current().unwrap().error, disk_full().to_string());
    }

    #[test]
    fn shutting_down_is_not_an_episode() {
        let refusals = Refusals::default();
        refusals.refused(&store::Error::Closed);
        assert_eq!(refusals.current(), None);
    }
}
