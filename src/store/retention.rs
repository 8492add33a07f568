//! Retention of synced rows, in bounded steps: [`Store::purge_synced`] deletes the expired synced
//! rows among a few thousand ids, one writer command (one transaction) per step, so that a purge
//! of millions of rows never stalls writes for longer than a step; [`Store::checkpoint_wal`] keeps the
//! WAL short meanwhile and gives its disk back afterwards.
//!
//! It knows nothing of pacing or schedules: the caller (the daemon's retention task) decides when
//! to take the next step and how long to rest between steps.

use std::time::{Duration, SystemTime};

use super::types::RowId;
use super::writer::Command;
use super::{Error, Store};

/// The checkpoint [`Store::checkpoint_wal`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalCheckpoint {
    /// A passive one, which holds nobody up: once it reaches the WAL's end, the next commit
    /// writes from the start of the file (which keeps its size: overwriting costs a commit's
    /// fsync less than extending the file).
    CatchUp,
    /// A passive one, then a `TRUNCATE` one that cuts the file to nothing, writes waiting
    /// meanwhile: once a purge is over, to give its disk back.
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
        let cutoff = self
            .clock()
            .now()
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

    /// Runs the checkpoint `how` names, on the checkpointer's connection. Returns whether it
    /// reached the WAL's end: commits, reads or another process at the time can keep it from
    /// doing so, which leaves the WAL as it was.
    pub async fn checkpoint_wal(&self, how: WalCheckpoint) -> Result<bool, Error> {
        self.writer()?
            .call(|reply| Command::ResetWal { how, reply })
            .await
    }
}
