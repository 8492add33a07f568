//! What callers send the writer thread ([`Command`]) and how each is answered ([`Reply`]): the
//! outcome is recorded beside the command while its group runs, and sent only once the group's
//! commit (and, for a durable write, the WAL's fsync) has decided whether it stands.
//!
//! It knows nothing of SQL or of threads: the writer runs the commands and answers them, or hands
//! the durable ones to the WAL's fsync (`durability`), which answers them.

use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use crate::store::types::{
    BrainEventRow, ClaimFrom, ClaimedRow, EnqueueOutcome, NewEvent, OutboxEntry, QueueLimit,
    RecordedEvent, RetrySelector, RowId, Settlement,
};
use crate::store::{Error, PurgeStep, WalCheckpoint};

/// Where a command's answer goes, and the answer itself once the command has run. The answer is
/// kept beside the command until the group's commit (and, for a durable write, the WAL's fsync)
/// decides whether it stands.
pub(in crate::store) struct Reply<T> {
    sender: oneshot::Sender<Result<T, Error>>,
    result: Option<Result<T, Error>>,
}

impl<T> Reply<T> {
    pub(super) fn new(sender: oneshot::Sender<Result<T, Error>>) -> Reply<T> {
        Reply {
            sender,
            result: None,
        }
    }

    /// Records the outcome of a run (a re-run replaces it); true if it succeeded.
    pub(super) fn set(&mut self, result: Result<T, Error>) -> bool {
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    pub(super) fn is_err(&self) -> bool {
        matches!(self.result, Some(Err(_)))
    }

    /// Sends the recorded outcome. A dropped receiver means the caller stopped waiting; what was
    /// committed stays committed.
    pub(super) fn answer(self) {
        // Every command is run before it is answered; `None` would mean it never ran.
        let result = self.result.unwrap_or(Err(Error::Closed));
        drop(self.sender.send(result));
    }

    /// Answers with `err` instead of the recorded outcome, which a failed commit made untrue.
    pub(super) fn fail(self, err: &Error) {
        drop(self.sender.send(Err(err.for_each_caller())));
    }
}

/// A request to the writer thread.
pub(in crate::store) enum Command {
    Enqueue {
        events: Vec<NewEvent>,
        limit: Option<QueueLimit>,
        now: SystemTime,
        reply: Reply<Vec<EnqueueOutcome>>,
    },
    /// A row of the brain's `events` table and, optionally, an outbox row, in one transaction;
    /// the outbox row in a savepoint of its own, skipped when the queue is full.
    Record {
        /// Boxed: a row is several strings, and every command moves through the channel.
        event: Box<BrainEventRow>,
        outbox: Option<OutboxEntry>,
        now: SystemTime,
        reply: Reply<RecordedEvent>,
    },
    Claim {
        limit: usize,
        from: ClaimFrom,
        /// The lease taken, stored as is: it is also the token that fences the settlements.
        lease_until: SystemTime,
        /// The longest wait a retry can be given; a due claim takes rows timed further off.
        longest_wait: Duration,
        now: SystemTime,
        reply: Reply<Vec<ClaimedRow>>,
    },
    Settle {
        settlements: Vec<Settlement>,
        /// The lease the rows were claimed with; `None` settles whoever holds them.
        lease_until: Option<SystemTime>,
        now: SystemTime,
        reply: Reply<()>,
    },
    Retry {
        selector: RetrySelector,
        reply: Reply<usize>,
    },
    /// Renews (`to`: the new token) or frees (`None`) the leases of rows, each given with the
    /// token it must still hold; answers how many changed.
    Relet {
        rows: Vec<(RowId, f64)>,
        to: Option<f64>,
        reply: Reply<usize>,
    },
    /// One step of a purge: the synced rows synced before `cutoff` among the `span` ids from
    /// the first row after `after`.
    PurgeSynced {
        cutoff: SystemTime,
        after: Option<RowId>,
        span: u32,
        reply: Reply<PurgeStep>,
    },
    /// A checkpoint of the WAL, run by the checkpointer thread; no transaction. Answers whether
    /// it reached the WAL's end.
    ResetWal {
        how: WalCheckpoint,
        reply: Reply<bool>,
    },
    SetMeta {
        key: &'static str,
        value: String,
        now: SystemTime,
        reply: Reply<()>,
    },
    /// Counts the pending rows and resets the gauge from the count; with `only_if_changed`, only
    /// if another connection has committed since the last count (the answer is then `None`).
    Recount {
        only_if_changed: bool,
        reply: Reply<Option<(u64, u64)>>,
    },
}

impl Command {
    /// Whether a caller is told "it is on disk" when this command commits.
    pub(super) fn promises_durability(&self) -> bool {
        matches!(
            self,
            Command::Enqueue { .. } | Command::Record { .. } | Command::Retry { .. }
        )
    }

    pub(super) fn is_err(&self) -> bool {
        match self {
            Command::Enqueue { reply, .. } => reply.is_err(),
            Command::Record { reply, .. } => reply.is_err(),
            Command::Claim { reply, .. } => reply.is_err(),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => reply.is_err(),
            Command::Retry { reply, .. } => reply.is_err(),
            Command::Relet { reply, .. } => reply.is_err(),
            Command::PurgeSynced { reply, .. } => reply.is_err(),
            Command::Recount { reply, .. } => reply.is_err(),
            Command::ResetWal { reply, .. } => reply.is_err(),
        }
    }

    /// Records an error as this command's outcome (it could not run, or its savepoint failed).
    pub(super) fn set_err(&mut self, err: &Error) {
        let _failed = match self {
            Command::Enqueue { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::Record { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::Claim { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => {
                reply.set(Err(err.for_each_caller()))
            }
            Command::Retry { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::Relet { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::PurgeSynced { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::Recount { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::ResetWal { reply, .. } => reply.set(Err(err.for_each_caller())),
        };
    }

    pub(super) fn answer(self) {
        match self {
            Command::Enqueue { reply, .. } => reply.answer(),
            Command::Record { reply, .. } => reply.answer(),
            Command::Claim { reply, .. } => reply.answer(),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => reply.answer(),
            Command::Retry { reply, .. } => reply.answer(),
            Command::Relet { reply, .. } => reply.answer(),
            Command::PurgeSynced { reply, .. } => reply.answer(),
            Command::Recount { reply, .. } => reply.answer(),
            Command::ResetWal { reply, .. } => reply.answer(),
        }
    }

    pub(super) fn fail(self, err: &Error) {
        match self {
            Command::Enqueue { reply, .. } => reply.fail(err),
            Command::Record { reply, .. } => reply.fail(err),
            Command::Claim { reply, .. } => reply.fail(err),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => reply.fail(err),
            Command::Retry { reply, .. } => reply.fail(err),
            Command::Relet { reply, .. } => reply.fail(err),
            Command::PurgeSynced { reply, .. } => reply.fail(err),
            Command::Recount { reply, .. } => reply.fail(err),
            Command::ResetWal { reply, .. } => reply.fail(err),
        }
    }
}
