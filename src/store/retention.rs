//! Retention of synced rows, in bounded steps: [`Store::purge_synced`] deletes the expired synced
//! rows among a few thousand ids, one writer command (one transaction) per step, so that a purge
//! of millions of rows never stalls writes for longer than a step; [`Store::reset_wal`] keeps the
//! WAL short meanwhile and gives its disk back afterwards.
//!
//! It knows nothing of pacing or schedules: the caller (the daemon's retention task) decides when
//! to take the next step and how long to rest between steps.

use std::time::{Duration, SystemTime};

use super::types::RowId;
use super::writer::Command;
use super::{Error, Store};

/// How [`Store::reset_wal`] leaves the WAL file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalReset {
    /// The next commit writes from the start of the file, which keeps its size: for use while
    /// writes go on (overwriting costs a commit's fsync less than extending the file).
    Restart,
    /// The file is cut to nothing: once a purge is over, to give its disk back.
    Truncate,
}

/// What one step of a purge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeStep {
    /// Synced rows it deleted (at most the step's span).
    pub deleted: usize,
    /// The last id the step covered, where the next step starts; `None` once no row is left
    /// after it.
    pub next: Option<RowId>,
}

impl Store {
    /// One step of a purge: deletes the rows synced more than `older_than` ago among the `span`
    /// ids from the first row after `after` (`None`: from the first row), in one transaction.
    /// Pending and dead rows are never touched. Call again from [`PurgeStep::next`] until it is
    /// `None`; writes submitted meanwhile run between the steps.
    pub async fn purge_synced(
        &self,
        older_than: Duration,
        after: Option<RowId>,
        span: u32,
    ) -> Result<PurgeStep, Error> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        self.writer()?
            .call(|reply| Command::PurgeSynced {
                cutoff,
                after,
                span,
                reply,
            })
            .await
    }

    /// Copies the whole WAL back into the database and starts it over, as `how` says (a
    /// `RESTART` or `TRUNCATE` checkpoint, on the checkpointer's connection, after a passive one).
    /// Writes wait while it finishes, briefly. Returns whether it completed: other connections
    /// reading or writing at the time can keep it from finishing, which leaves the WAL as it was.
    pub async fn reset_wal(&self, how: WalReset) -> Result<bool, Error> {
        self.writer()?
            .call(|reply| Command::ResetWal { how, reply })
            .await
    }
}
