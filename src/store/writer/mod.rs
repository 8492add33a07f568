//! The writer thread: the one connection that changes the database, and group commit.
//!
//! Callers send a [`Command`] with a oneshot reply. The thread takes the first waiting command and
//! every command queued behind it (up to [`MAX_GROUP`]), runs them all in a single
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers every caller. Under
//! `synchronous=FULL` that is one fsync for the whole group instead of one per request, which is
//! where the write throughput comes from (DESIGN §4).
//!
//! A command that fails must not take the others down with it. Commands almost never fail, so a
//! group first runs without savepoints (a savepoint copies every page it touches to a statement
//! journal, which costs as much as the insert itself); only if a command fails is the transaction
//! rolled back and the group run again with each command in its own savepoint, where a failure
//! rolls back to it and gets its own error while the others still commit.
//!
//! Durability under `synchronous=FULL` ([`durability::WalSync`]): the connection commits without
//! syncing and the writer fsyncs the WAL file before the callers that were promised durability are
//! answered. SQLite's FULL does exactly that fsync, inside every commit; done here, groups of only
//! leases and settlements (which promise nothing) are answered without waiting for any fsync. Only
//! this thread fsyncs the WAL's handle, one fsync at a time (see `durability`).
//!
//! The reply channels are tokio oneshots, which work without a runtime: the thread never blocks on
//! a caller, and a caller that went away simply drops its receiver.
//!
//! This file is the thread and its group commit. Beside it: `command` (what callers send and how
//! each is answered), `execute` (one command in the transaction, and its queue limit), `queries`
//! (the SQL each command runs), `durability` (the WAL's fsync and the alarm a failed one raises)
//! and `pending` (the pending rows and bytes the queue limits use).

mod command;
mod durability;
mod execute;
mod pending;
mod queries;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::{oneshot, watch};

pub(super) use command::{Command, Reply};
pub(super) use pending::PendingGauge;

use super::checkpoint::{Checkpointer, WAL_SIZE_LIMIT_BYTES, WRITER_BACKSTOP_PAGES};
use super::{Error, Synchronous};
use durability::{Durability, DurabilityAlarm, is_failed_fsync};
use execute::{Limits, execute};
use pending::{ExactCount, PendingDelta};
use queries::{data_version, enqueue_run, payload_bytes, within};

/// Most commands folded into one transaction. Bounds the latency a burst can add to its first
/// caller and the size of one WAL commit.
const MAX_GROUP: usize = 512;

/// Owner of the writer thread. Dropping it closes the channel, waits for the thread to finish the
/// commands already sent, and so closes the connection (checkpointing the WAL) before returning.
pub(super) struct Writer {
    /// The sending half; the thread exits when every clone of it is gone. `None` only in `drop`.
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    /// Transactions committed so far (shared with the thread, which increments it).
    commits: Arc<AtomicU64>,
    /// Checkpoints the checkpointer thread has completed.
    checkpoints: Arc<AtomicU64>,
    /// Becomes `Some(reason)` when the [`DurabilityAlarm`] is raised; closed once the writer
    /// thread has finished (with the alarm, which holds the sender).
    durability_lost: watch::Receiver<Option<String>>,
}

/// What the writer thread shares with the store handle.
struct Counters<'a> {
    commits: &'a AtomicU64,
    pending: &'a PendingGauge,
}

impl Writer {
    /// Starts the writer on `conn`, and the [`Checkpointer`] on `checkpoint_conn`, a second
    /// read-write connection to the same database.
    pub(super) fn spawn(
        conn: Connection,
        checkpoint_conn: Connection,
        database_path: &Path,
        synchronous: Synchronous,
        pending: Arc<PendingGauge>,
    ) -> std::io::Result<Writer> {
        Writer::spawn_with(conn, checkpoint_conn, pending, |conn, alarm| {
            Durability::new(conn, database_path, synchronous, alarm)
        })
    }

    /// [`Writer::spawn`], with the durability `durability` sets the connection up for (a test
    /// passes a stand-in WAL).
    fn spawn_with(
        conn: Connection,
        checkpoint_conn: Connection,
        pending: Arc<PendingGauge>,
        durability: impl FnOnce(&Connection, Arc<DurabilityAlarm>) -> std::io::Result<Durability>,
    ) -> std::io::Result<Writer> {
        let (commands, receiver) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let checkpoints = Arc::new(AtomicU64::new(0));
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_BACKSTOP_PAGES)
            .map_err(std::io::Error::other)?;
        // The writer is the connection that starts the WAL over, and so the one that cuts it.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)
            .map_err(std::io::Error::other)?;
        // The original DDL's `CHECK(kind IN ('correction','lesson','event'))` stays in the schema
        // for every other writer; this one only ever stores `Kind::as_str()`, one of those three,
        // so the check cannot fail here. SQLite evaluates that IN list by building a temporary
        // b-tree on every INSERT, which cost a fifth of the writer's time per event.
        conn.pragma_update(None, "ignore_check_constraints", true)
            .map_err(std::io::Error::other)?;
        let checkpointer = Checkpointer::spawn(checkpoint_conn, checkpoints.clone())?;
        let (alarm, durability_lost) = DurabilityAlarm::new();
        let durability = durability(&conn, alarm.clone())?;
        let thread = std::thread::Builder::new()
            .name("gradata-store".to_owned())
            .spawn(move || {
                let counters = Counters {
                    commits: &counter,
                    pending: &pending,
                };
                raise_if_it_panics(&alarm, || {
                    run(conn, durability, &alarm, checkpointer, &receiver, &counters);
                });
            })?;
        Ok(Writer {
            commands: Some(commands),
            thread: Some(thread),
            commits,
            checkpoints,
            durability_lost,
        })
    }

    /// A receiver that becomes `Some(reason)` once an fsync of the WAL has failed or the writer
    /// thread has died ([`DurabilityAlarm`]).
    pub(super) fn durability_lost(&self) -> watch::Receiver<Option<String>> {
        self.durability_lost.clone()
    }

    /// Transactions committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Checkpoints completed by the checkpointer thread so far.
    pub(super) fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
    }

    /// Sends a command built around a fresh reply channel and waits for its answer.
    pub(super) async fn call<T>(
        &self,
        build: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let sender = self.commands.as_ref().ok_or(Error::Closed)?;
        sender
            .send(build(Reply::new(reply)))
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has already been reported by the panic hook; nothing to add.
            let _ = thread.join();
        }
    }
}

/// Runs the writer's loop; should it panic (a bug, already logged by the panic hook), raises the
/// alarm, so that the service stops and starts again rather than answer every later write with
/// "closed" while it looks alive.
fn raise_if_it_panics(alarm: &DurabilityAlarm, writer: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(writer)).is_err() {
        alarm.raise(&"the outbox's writer thread stopped on a bug (its panic is logged above)");
    }
}

fn run(
    mut conn: Connection,
    mut durability: Durability,
    alarm: &DurabilityAlarm,
    checkpointer: Checkpointer,
    receiver: &mpsc::Receiver<Command>,
    counters: &Counters<'_>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    let mut exact = ExactCount::default();
    while let Ok(first) = receiver.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        if alarm.raised() {
            let err = Error::SyncFailed("an earlier fsync of the WAL failed".to_owned());
            group.drain(..).for_each(|command| command.fail(&err));
            continue;
        }
        hand_over_resets(&mut group, &checkpointer);
        if group.is_empty() || unchanged_since_count(&conn, &mut group, &exact) {
            continue;
        }
        if commit_group(&mut conn, &mut group, alarm, counters, &mut exact) {
            checkpointer.committed();
            answer_group(&mut group, &mut durability);
        }
    }
    // The writer's connection closes last, so it is the one that checkpoints the WAL away.
    drop(durability);
    drop(checkpointer);
    drop(conn);
}

/// Takes the [`Command::ResetWal`] requests out of `group` and hands them to the checkpointer,
/// which answers them: a checkpoint cannot run inside the group's transaction, and the writer does
/// not wait for one.
fn hand_over_resets(group: &mut Vec<Command>, checkpointer: &Checkpointer) {
    if !group
        .iter()
        .any(|command| matches!(command, Command::ResetWal { .. }))
    {
        return;
    }
    let (resets, rest): (Vec<Command>, Vec<Command>) = group
        .drain(..)
        .partition(|command| matches!(command, Command::ResetWal { .. }));
    group.extend(rest);
    for command in resets {
        if let Command::ResetWal { how, mut reply } = command {
            checkpointer.reset(
                how,
                Box::new(move |outcome| {
                    reply.set(outcome.map_err(Error::from));
                    reply.answer();
                }),
            );
        }
    }
}

/// Answers a group that is only the daemon's periodic [`Command::Recount`] when no other
/// connection has committed since the last count, without a write transaction: it would take the
/// database's write lock from other programs sharing it for nothing. Returns whether it did.
fn unchanged_since_count(conn: &Connection, group: &mut Vec<Command>, exact: &ExactCount) -> bool {
    let [
        Command::Recount {
            only_if_changed: true,
            reply,
        },
    ] = group.as_mut_slice()
    else {
        return false;
    };
    // Outside a transaction too, the number changes exactly when another connection committed.
    match data_version(conn) {
        Ok(version) if !exact.changed_since(version) => {
            reply.set(Ok(None));
            group.drain(..).for_each(Command::answer);
            true
        }
        // Changed, or unknown: the group runs as usual and counts.
        _ => false,
    }
}

/// Answers the callers of a committed group. When the writer fsyncs the WAL, the commands that
/// promise durability wait for that fsync; leases and settlements may be lost on power failure at
/// no cost but a re-send the cloud dedupes (at-least-once), so they are answered first.
fn answer_group(group: &mut Vec<Command>, durability: &mut Durability) {
    match durability {
        Durability::Wal(wal) if group.iter().any(Command::promises_durability) => {
            let (durable, rest): (Vec<Command>, Vec<Command>) = group
                .drain(..)
                .partition(|command| command.promises_durability() && !command.is_err());
            rest.into_iter().for_each(Command::answer);
            if !durable.is_empty() {
                wal.flush(durable);
            }
        }
        _ => group.drain(..).for_each(Command::answer),
    }
}

/// Runs and commits one group. Returns true if it committed, leaving the commands (with their
/// outcomes) in `group` to be answered; otherwise every caller has been answered with the error.
fn commit_group(
    conn: &mut Connection,
    group: &mut Vec<Command>,
    alarm: &DurabilityAlarm,
    counters: &Counters<'_>,
    exact: &mut ExactCount,
) -> bool {
    let Some(tx) = begin(conn, group) else {
        return false;
    };
    // The pending rows and bytes before the group, for queue limits: each command sees them plus
    // what the commands before it in the group added.
    let (rows, bytes) = counters.pending.get();
    let gauge = PendingDelta {
        rows: i64::try_from(rows).unwrap_or(i64::MAX),
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
    };
    let mut limits = Limits { base: gauge, exact };
    let mut delta = PendingDelta::default();
    let clean = run_optimistically(&tx, group, &mut limits, &mut delta);
    let tx = if clean {
        tx
    } else {
        drop(tx); // rolls back everything the group did
        if let [command] = group.as_slice() {
            if command.is_err() {
                // A lone command's recorded failure is its own answer; nothing else was in the
                // transaction.
                group.drain(..).for_each(Command::answer);
                return false;
            }
            // Without a recorded outcome it is run again below, where it gets one.
        }
        // Again, each command in its own savepoint, so only the failing ones roll back.
        let Some(tx) = begin(conn, group) else {
            return false;
        };
        delta = PendingDelta::default();
        for command in group.iter_mut() {
            execute_in_savepoint(&tx, command, &mut delta, &mut limits);
        }
        tx
    };
    match tx.commit() {
        Ok(()) => {
            // Counted before anyone is answered, so a caller never sees its write uncounted.
            counters.commits.fetch_add(1, Ordering::Relaxed);
            // What the group changed, and what exact counts made during it corrected.
            counters.pending.apply(delta.plus(limits.base.minus(gauge)));
            true
        }
        // Nothing in the group is durable: every caller learns that, none gets a false yes.
        Err(err) => {
            let err = if is_failed_fsync(&err) {
                // SQLite's own fsync inside the commit (the WAL's header, when the WAL starts
                // over): as untrustworthy afterwards as the writer's own.
                let err = Error::SyncFailed(format!("fsync of the WAL inside the commit: {err}"));
                alarm.raise(&err);
                err
            } else {
                Error::from(err)
            };
            for command in group.drain(..) {
                if command.is_err() {
                    command.answer(); // its own, more precise error
                } else {
                    command.fail(&err);
                }
            }
            false
        }
    }
}

/// The optimistic pass over a group: no savepoints, and runs of enqueues inserted together by
/// [`enqueue_run`]. Stops at the first failure and returns false; the caller then runs the group
/// again command by command.
fn run_optimistically(
    conn: &Connection,
    group: &mut [Command],
    limits: &mut Limits<'_>,
    delta: &mut PendingDelta,
) -> bool {
    let mut next = 0;
    while next < group.len() {
        // A run: the enqueues from here on whose queue limits hold even if every event before
        // them in the run is new. Pending rows only grow by new events, so each then also holds
        // once the duplicates are known. An enqueue that might not fit ends the run and is checked
        // alone, against the exact count.
        let start = next;
        let mut assumed = *delta;
        while let Some(Command::Enqueue { events, limit, .. }) = group.get(next) {
            if limit.is_some_and(|limit| within(limit, limits.base.plus(assumed), events).is_err())
            {
                break;
            }
            for event in events {
                assumed.row(1, payload_bytes(event));
            }
            next += 1;
        }
        let ok = if next > start {
            enqueue_run(conn, &mut group[start..next], delta)
        } else {
            let before = limits.base.plus(*delta);
            next += 1;
            execute(conn, &mut group[start], delta, before, limits)
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Opens the group's write transaction; if it cannot be opened, every caller is answered with why.
fn begin<'c>(
    conn: &'c mut Connection,
    group: &mut Vec<Command>,
) -> Option<rusqlite::Transaction<'c>> {
    match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => Some(tx),
        Err(err) => {
            let err = Error::from(err);
            group.drain(..).for_each(|command| command.fail(&err));
            None
        }
    }
}

fn execute_in_savepoint(
    tx: &rusqlite::Transaction<'_>,
    command: &mut Command,
    group_delta: &mut PendingDelta,
    limits: &mut Limits<'_>,
) {
    if let Err(err) = tx.execute_batch("SAVEPOINT command") {
        command.set_err(&Error::from(err));
        return;
    }
    let mut delta = PendingDelta::default();
    let before = limits.base.plus(*group_delta);
    let ok = execute(tx, command, &mut delta, before, limits);
    let end = if ok {
        "RELEASE command"
    } else {
        "ROLLBACK TO command; RELEASE command"
    };
    match tx.execute_batch(end) {
        Ok(()) if ok => group_delta.add(delta),
        Ok(()) => {}
        // The savepoint could not be closed; the whole transaction will fail to commit and every
        // caller will hear about it. This one keeps the precise cause.
        Err(err) => command.set_err(&Error::from(err)),
    }
}

#[cfg(test)]
mod tests;
