//! One command inside the group's transaction: [`execute`] runs it and records its outcome in
//! it, checking queue limits against the pending rows ([`Limits`], a table count when the gauge
//! may be stale). It knows nothing of the group, savepoints around commands, commits or fsyncs.

use std::time::{Instant, SystemTime};

use rusqlite::Connection;

use super::command::Command;
use super::pending::{ExactCount, PendingDelta};
use super::queries::{
    claim, count_pending, data_version, enqueue, insert_brain_event, purge_synced, relet, retry,
    set_meta, settle, within,
};
use crate::store::Error;
use crate::store::types::{
    BrainEventRow, EnqueueOutcome, NewEvent, OutboxEntry, OutboxOutcome, QueueLimit, RecordedEvent,
};

/// What a group's queue limits are checked against.
pub(super) struct Limits<'a> {
    /// The pending rows and bytes before the group: the gauge, corrected by any exact count made
    /// during the group (the correction reaches the gauge with the group's commit).
    pub(super) base: PendingDelta,
    /// When the table was last counted.
    pub(super) exact: &'a mut ExactCount,
}

impl Limits<'_> {
    /// Counts the pending rows in the group's transaction, where nobody else can write, and
    /// corrects `base` by the difference. `before` is what `base` and the group's earlier commands
    /// say is pending, which is what the count sees. Returns the count.
    fn recount(
        &mut self,
        conn: &Connection,
        before: PendingDelta,
        data_version: i64,
    ) -> Result<PendingDelta, Error> {
        let counted = count_pending(conn)?;
        self.base = self.base.plus(counted.minus(before));
        self.exact.counted(data_version, Instant::now());
        Ok(counted)
    }
}

/// Checks `events` against `limit`. A refusal is first checked against a count of the table when
/// the gauge may be stale (another process committed since the last count: a `gradata drain` from
/// the CLI may just have emptied the queue), so a write is never refused for rows already gone.
fn check_limit(
    conn: &Connection,
    limit: QueueLimit,
    pending: PendingDelta,
    events: &[NewEvent],
    limits: &mut Limits<'_>,
) -> Result<(), Error> {
    let Err(refused) = within(limit, pending, events) else {
        return Ok(());
    };
    let version = data_version(conn)?;
    if !limits.exact.worth_recounting(version, Instant::now()) {
        return Err(refused);
    }
    within(limit, limits.recount(conn, pending, version)?, events)
}

/// Runs one command, recording its outcome in it; true if it succeeded. `pending` is what is
/// pending before it, this transaction's earlier commands included.
pub(super) fn execute(
    conn: &Connection,
    command: &mut Command,
    delta: &mut PendingDelta,
    pending: PendingDelta,
    limits: &mut Limits<'_>,
) -> bool {
    match command {
        Command::Enqueue {
            events,
            limit,
            now,
            reply,
        } => {
            let result = match limit {
                Some(limit) => check_limit(conn, *limit, pending, events, limits),
                None => Ok(()),
            }
            .and_then(|()| enqueue(conn, events, *now, delta));
            reply.set(result)
        }
        Command::Record {
            event,
            outbox,
            now,
            reply,
        } => reply.set(record(
            conn,
            event,
            outbox.as_ref(),
            *now,
            delta,
            pending,
            limits,
        )),
        Command::Recount {
            only_if_changed,
            reply,
        } => {
            let result = data_version(conn).and_then(|version| {
                if *only_if_changed && !limits.exact.changed_since(version) {
                    return Ok(None);
                }
                let counted = limits.recount(conn, pending, version)?;
                Ok(Some(counted.counts()))
            });
            reply.set(result)
        }
        Command::Claim {
            limit,
            from,
            lease_until,
            longest_wait,
            now,
            reply,
        } => reply.set(claim(
            conn,
            *limit,
            *from,
            (*lease_until, *longest_wait),
            *now,
            delta,
        )),
        Command::Settle {
            settlements,
            lease_until,
            now,
            reply,
        } => reply.set(settle(conn, settlements, *lease_until, *now, delta)),
        Command::Retry { selector, reply } => reply.set(retry(conn, selector, delta)),
        Command::Relet { rows, to, reply } => reply.set(relet(conn, rows, *to)),
        Command::PurgeSynced {
            cutoff,
            after,
            span,
            reply,
        } => reply.set(purge_synced(conn, *cutoff, *after, *span)),
        // Handed to the checkpointer before the group runs (`hand_over_resets`); should one get
        // here, the WAL is only left as it is.
        Command::ResetWal { reply, .. } => reply.set(Ok(false)),
        Command::SetMeta {
            key,
            value,
            now,
            reply,
        } => reply.set(set_meta(conn, key, value, *now)),
    }
}

/// Inserts a brain event and then, in a savepoint of its own, its outbox row: a full queue skips
/// the outbox row and a failed insert rolls back only that row, so neither ever costs the brain
/// its event. A failed event insert fails the command before the outbox row is tried.
fn record(
    conn: &Connection,
    event: &BrainEventRow,
    outbox: Option<&OutboxEntry>,
    now: SystemTime,
    delta: &mut PendingDelta,
    pending: PendingDelta,
    limits: &mut Limits<'_>,
) -> Result<RecordedEvent, Error> {
    let row = insert_brain_event(conn, event)?;
    let Some(entry) = outbox else {
        return Ok(RecordedEvent {
            row,
            outbox: OutboxOutcome::NotAsked,
        });
    };
    let events = std::slice::from_ref(&entry.event);
    if let Some(limit) = entry.limit {
        match check_limit(conn, limit, pending, events, limits) {
            Ok(()) => {}
            Err(Error::QueueFull { .. }) => {
                return Ok(RecordedEvent {
                    row,
                    outbox: OutboxOutcome::SkippedQueueFull,
                });
            }
            Err(err) => return Err(err),
        }
    }
    conn.execute_batch("SAVEPOINT outbox")?;
    let mut added = PendingDelta::default();
    let outcome = match enqueue(conn, events, now, &mut added) {
        Ok(outcomes) => {
            conn.execute_batch("RELEASE outbox")?;
            delta.add(added);
            match outcomes.first() {
                Some(EnqueueOutcome::Inserted(id)) => OutboxOutcome::Queued(*id),
                Some(EnqueueOutcome::Duplicate(id)) => OutboxOutcome::Duplicate(*id),
                None => OutboxOutcome::NotAsked,
            }
        }
        Err(err) => {
            conn.execute_batch("ROLLBACK TO outbox; RELEASE outbox")?;
            OutboxOutcome::Failed(err)
        }
    };
    Ok(RecordedEvent {
        row,
        outbox: outcome,
    })
}
