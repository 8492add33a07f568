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
//! Durability under `synchronous=FULL` ([`Syncer`]): the connection commits without syncing and the
//! WAL file is fsynced before the callers that were promised durability are answered. SQLite's
//! FULL does exactly that fsync, inside every commit; done here, groups of only leases and
//! settlements (which promise nothing) are answered without waiting for any fsync, and a group
//! that took long to write is fsynced on a second thread while the writer runs and commits the
//! next one (at most one group ahead of the flush, so groups stay large).
//!
//! The reply channels are tokio oneshots, which work without a runtime: the thread never blocks on
//! a caller, and a caller that went away simply drops its receiver.

use std::fmt::Write as _;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, LazyLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::{oneshot, watch};

use super::checkpoint::{Checkpointer, WRITER_BACKSTOP_PAGES};
use super::types::{
    ClaimFrom, ClaimedRow, EnqueueOutcome, NewEvent, QueueLimit, RetrySelector, RowId, Settlement,
    lease_until,
};
use super::{Error, Synchronous, to_unix};

/// Most commands folded into one transaction. Bounds the latency a burst can add to its first
/// caller and the size of one WAL commit.
const MAX_GROUP: usize = 512;

/// Longest stored `last_error`, as the original (which cut at 500 characters).
const MAX_ERROR_CHARS: usize = 500;

/// Where a command's answer goes, and the answer itself once the command has run. The answer is
/// kept beside the command until the group's commit (and, for a durable write, the WAL's fsync)
/// decides whether it stands.
pub(super) struct Reply<T> {
    sender: oneshot::Sender<Result<T, Error>>,
    result: Option<Result<T, Error>>,
}

impl<T> Reply<T> {
    fn new(sender: oneshot::Sender<Result<T, Error>>) -> Reply<T> {
        Reply {
            sender,
            result: None,
        }
    }

    /// Records the outcome of a run (a re-run replaces it); true if it succeeded.
    fn set(&mut self, result: Result<T, Error>) -> bool {
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn is_err(&self) -> bool {
        matches!(self.result, Some(Err(_)))
    }

    /// Sends the recorded outcome. A dropped receiver means the caller stopped waiting; what was
    /// committed stays committed.
    fn answer(self) {
        // Every command is run before it is answered; `None` would mean it never ran.
        let result = self.result.unwrap_or(Err(Error::Closed));
        drop(self.sender.send(result));
    }

    /// Answers with `err` instead of the recorded outcome, which a failed commit made untrue.
    fn fail(self, err: &Error) {
        drop(self.sender.send(Err(err.for_each_caller())));
    }
}

/// A request to the writer thread.
pub(super) enum Command {
    Enqueue {
        events: Vec<NewEvent>,
        limit: Option<QueueLimit>,
        now: SystemTime,
        reply: Reply<Vec<EnqueueOutcome>>,
    },
    Claim {
        limit: usize,
        from: ClaimFrom,
        lease: Duration,
        now: SystemTime,
        reply: Reply<Vec<ClaimedRow>>,
    },
    Settle {
        settlements: Vec<Settlement>,
        now: SystemTime,
        reply: Reply<()>,
    },
    Retry {
        selector: RetrySelector,
        reply: Reply<usize>,
    },
    PurgeSynced {
        older_than: Duration,
        now: SystemTime,
        reply: Reply<usize>,
    },
    SetMeta {
        key: &'static str,
        value: String,
        now: SystemTime,
        reply: Reply<()>,
    },
}

impl Command {
    /// Whether a caller is told "it is on disk" when this command commits.
    fn promises_durability(&self) -> bool {
        matches!(self, Command::Enqueue { .. } | Command::Retry { .. })
    }

    fn is_err(&self) -> bool {
        match self {
            Command::Enqueue { reply, .. } => reply.is_err(),
            Command::Claim { reply, .. } => reply.is_err(),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => reply.is_err(),
            Command::Retry { reply, .. } | Command::PurgeSynced { reply, .. } => reply.is_err(),
        }
    }

    /// Records an error as this command's outcome (it could not run, or its savepoint failed).
    fn set_err(&mut self, err: &Error) {
        let _failed = match self {
            Command::Enqueue { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::Claim { reply, .. } => reply.set(Err(err.for_each_caller())),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => {
                reply.set(Err(err.for_each_caller()))
            }
            Command::Retry { reply, .. } | Command::PurgeSynced { reply, .. } => {
                reply.set(Err(err.for_each_caller()))
            }
        };
    }

    fn answer(self) {
        match self {
            Command::Enqueue { reply, .. } => reply.answer(),
            Command::Claim { reply, .. } => reply.answer(),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => reply.answer(),
            Command::Retry { reply, .. } | Command::PurgeSynced { reply, .. } => reply.answer(),
        }
    }

    fn fail(self, err: &Error) {
        match self {
            Command::Enqueue { reply, .. } => reply.fail(err),
            Command::Claim { reply, .. } => reply.fail(err),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => reply.fail(err),
            Command::Retry { reply, .. } | Command::PurgeSynced { reply, .. } => reply.fail(err),
        }
    }
}

fn set_synchronous(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    let value = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", value)
}

/// The pending rows and bytes, kept up to date by the writer after every commit so that the API
/// can refuse writes past the queue limits without counting the table on every request. Writes by
/// other processes (the CLI, an SDK sharing the database) are not seen here; the daemon corrects
/// the gauge from a full count now and then ([`super::Store::recount_pending`]).
#[derive(Debug, Default)]
pub(super) struct PendingGauge {
    rows: std::sync::atomic::AtomicI64,
    bytes: std::sync::atomic::AtomicI64,
}

impl PendingGauge {
    pub(super) fn set(&self, rows: u64, bytes: u64) {
        self.rows
            .store(i64::try_from(rows).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.bytes
            .store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> (u64, u64) {
        let clamp = |v: i64| u64::try_from(v).unwrap_or(0);
        (
            clamp(self.rows.load(Ordering::Relaxed)),
            clamp(self.bytes.load(Ordering::Relaxed)),
        )
    }

    fn apply(&self, delta: PendingDelta) {
        self.rows.fetch_add(delta.rows, Ordering::Relaxed);
        self.bytes.fetch_add(delta.bytes, Ordering::Relaxed);
    }
}

/// How a command changes the pending rows and bytes; applied only if its transaction commits.
#[derive(Debug, Clone, Copy, Default)]
struct PendingDelta {
    rows: i64,
    bytes: i64,
}

impl PendingDelta {
    fn add(&mut self, other: PendingDelta) {
        self.rows += other.rows;
        self.bytes += other.bytes;
    }

    fn row(&mut self, sign: i64, bytes: i64) {
        self.rows += sign;
        self.bytes += sign * bytes;
    }

    fn plus(self, other: PendingDelta) -> PendingDelta {
        PendingDelta {
            rows: self.rows + other.rows,
            bytes: self.bytes + other.bytes,
        }
    }
}

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
        let (commands, receiver) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let checkpoints = Arc::new(AtomicU64::new(0));
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_BACKSTOP_PAGES)
            .map_err(std::io::Error::other)?;
        // The original DDL's `CHECK(kind IN ('correction','lesson','event'))` stays in the schema
        // for every other writer; this one only ever stores `Kind::as_str()`, one of those three,
        // so the check cannot fail here. SQLite evaluates that IN list by building a temporary
        // b-tree on every INSERT, which cost a fifth of the writer's time per event.
        conn.pragma_update(None, "ignore_check_constraints", true)
            .map_err(std::io::Error::other)?;
        let checkpointer = Checkpointer::spawn(checkpoint_conn, checkpoints.clone())?;
        let (alarm, durability_lost) = DurabilityAlarm::new();
        let durability = Durability::new(&conn, database_path, synchronous, alarm.clone())?;
        let thread = std::thread::Builder::new()
            .name("gradata-store".to_owned())
            .spawn(move || {
                let counters = Counters {
                    commits: &counter,
                    pending: &pending,
                };
                run(conn, durability, &alarm, checkpointer, &receiver, &counters);
            })?;
        Ok(Writer {
            commands: Some(commands),
            thread: Some(thread),
            commits,
            checkpoints,
            durability_lost,
        })
    }

    /// A receiver that becomes `Some(reason)` once an fsync of the WAL has failed
    /// ([`DurabilityAlarm`]).
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

/// How durable commits are made durable.
enum Durability {
    /// SQLite syncs (or not) inside the commit, as `synchronous` says; nothing else to do.
    Sqlite,
    /// `synchronous=FULL` done by the [`Syncer`]: the connection commits with NORMAL (which in WAL
    /// mode differs from FULL only by the fsync of the WAL at commit) and the syncer performs that
    /// fsync before the durable commands of the group are answered.
    Syncer(Syncer),
}

impl Durability {
    /// Sets the connection up for `synchronous`. With FULL the WAL file is opened for the syncer;
    /// if it cannot be (it always exists once the store is open in WAL mode), SQLite's own FULL is
    /// kept: slower, equally safe.
    fn new(
        conn: &Connection,
        database_path: &Path,
        synchronous: Synchronous,
        alarm: Arc<DurabilityAlarm>,
    ) -> std::io::Result<Durability> {
        let sqlite = |synchronous| {
            set_synchronous(conn, synchronous)
                .map(|()| Durability::Sqlite)
                .map_err(std::io::Error::other)
        };
        if synchronous == Synchronous::Normal {
            return sqlite(Synchronous::Normal);
        }
        let mut wal_path = database_path.as_os_str().to_owned();
        wal_path.push("-wal");
        let Ok(wal) = File::open(&wal_path) else {
            return sqlite(Synchronous::Full);
        };
        set_synchronous(conn, Synchronous::Normal).map_err(std::io::Error::other)?;
        Ok(Durability::Syncer(Syncer::spawn(wal, alarm)?))
    }
}

/// Fsyncs the WAL for durable groups, then answers their callers: on its own thread, so that the
/// writer can commit the next group meanwhile, or on the writer's thread when that is quicker.
///
/// Handing a group over costs two thread wake-ups, each of which can wait for a CPU (measured on
/// two busy cores: about 270 µs after each fsync). That pays when the writer has a long group to
/// write meanwhile (batches: 15–20% more events per second than fsyncing on the writer), and does
/// not when the group took less to write than an fsync takes (single events: 15% fewer). So a group
/// that was written in less time than the last fsync took is flushed by the writer itself, and a
/// longer one is handed over ([`Syncer::flush`]).
///
/// The hand-over channel is a rendezvous: the writer hands over a committed group only when the
/// previous fsync has finished, so at most one group is being flushed while the writer builds the
/// next one. If an fsync fails, what the kernel kept of the WAL is unknown (a later fsync may
/// succeed without the lost pages), so every later write fails too, until the service is
/// restarted and SQLite recovers the WAL from what is really on disk. The first failure is
/// announced ([`DurabilityAlarm`]) so that the service stops for that restart instead of refusing
/// every write until an operator notices.
struct Syncer {
    groups: Option<mpsc::SyncSender<Vec<Command>>>,
    thread: Option<JoinHandle<()>>,
    wal: Arc<WalFile>,
}

/// Whether writes can still be made durable. Raised by the first failed fsync of the WAL, the
/// [`Syncer`]'s own or SQLite's inside a commit, and never lowered: what the kernel kept of the WAL
/// is unknown from then on, so the writer refuses every command, and [`Writer::durability_lost`]
/// tells the service, which stops so that a fresh open recovers the WAL from the disk.
struct DurabilityAlarm {
    /// Read before every group: a plain load, where the watch below would take its lock.
    raised: AtomicBool,
    /// The reason, for the [`Writer`]'s receiver; dropped with the last holder of the alarm.
    reason: watch::Sender<Option<String>>,
}

impl DurabilityAlarm {
    fn new() -> (Arc<DurabilityAlarm>, watch::Receiver<Option<String>>) {
        let (reason, receiver) = watch::channel(None);
        let alarm = DurabilityAlarm {
            raised: AtomicBool::new(false),
            reason,
        };
        (Arc::new(alarm), receiver)
    }

    /// Raises the alarm; only the first reason is kept.
    fn raise(&self, err: &Error) {
        if !self.raised.swap(true, Ordering::SeqCst) {
            self.reason.send_replace(Some(err.to_string()));
        }
    }

    fn raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }
}

/// Whether SQLite failed a commit because an fsync failed.
fn is_failed_fsync(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_IOERR_FSYNC
                || failure.extended_code == rusqlite::ffi::SQLITE_IOERR_DIR_FSYNC
    )
}

/// The WAL file, and what its fsyncs have shown so far.
struct WalFile {
    file: File,
    /// Raised by a failed fsync; once raised, nothing written since can be promised durable.
    alarm: Arc<DurabilityAlarm>,
    /// How long the last fsync took, in microseconds.
    last_fsync_micros: AtomicU64,
}

impl WalFile {
    /// Fsyncs the WAL, then answers `group`: its outcomes if the fsync succeeded, the error if not.
    fn flush(&self, group: Vec<Command>) {
        let started = Instant::now();
        let outcome = if self.alarm.raised() {
            Err(Error::SyncFailed(
                "an earlier fsync of the WAL failed".to_owned(),
            ))
        } else {
            self.file
                .sync_data()
                .map_err(|err| Error::SyncFailed(format!("fsync of the WAL: {err}")))
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_fsync_micros.store(micros, Ordering::Relaxed);
        match outcome {
            Ok(()) => group.into_iter().for_each(Command::answer),
            Err(err) => {
                self.alarm.raise(&err);
                group.into_iter().for_each(|command| command.fail(&err));
            }
        }
    }
}

impl Syncer {
    fn spawn(wal: File, alarm: Arc<DurabilityAlarm>) -> std::io::Result<Syncer> {
        let (groups, receiver) = mpsc::sync_channel::<Vec<Command>>(0);
        let wal = Arc::new(WalFile {
            file: wal,
            alarm,
            last_fsync_micros: AtomicU64::new(0),
        });
        let thread_wal = wal.clone();
        let thread = std::thread::Builder::new()
            .name("gradata-fsync".to_owned())
            .spawn(move || {
                while let Ok(group) = receiver.recv() {
                    thread_wal.flush(group);
                }
            })?;
        Ok(Syncer {
            groups: Some(groups),
            thread: Some(thread),
            wal,
        })
    }

    /// Makes a committed group durable and answers it, on this thread or the syncer's (see
    /// [`Syncer`]); `written_in` is how long the writer took to run and commit it.
    fn flush(&self, group: Vec<Command>, written_in: Duration) {
        let last_fsync = Duration::from_micros(self.wal.last_fsync_micros.load(Ordering::Relaxed));
        if written_in < last_fsync {
            self.wal.flush(group);
        } else {
            self.send(group);
        }
    }

    /// Hands durable commands over; they are answered after the next fsync.
    fn send(&self, group: Vec<Command>) {
        let unsent = match &self.groups {
            Some(groups) => match groups.send(group) {
                Ok(()) => return,
                Err(mpsc::SendError(group)) => group,
            },
            None => group,
        };
        // The syncer thread is gone (it panicked): nothing can be promised durable.
        let err = Error::SyncFailed("the fsync thread is gone".to_owned());
        self.wal.alarm.raise(&err);
        unsent.into_iter().for_each(|command| command.fail(&err));
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Let the thread flush and answer what it holds before the connection closes.
        drop(self.groups.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut conn: Connection,
    durability: Durability,
    alarm: &DurabilityAlarm,
    checkpointer: Checkpointer,
    receiver: &mpsc::Receiver<Command>,
    counters: &Counters<'_>,
) {
    let mut group = Vec::with_capacity(MAX_GROUP);
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
        let started = Instant::now();
        if commit_group(&mut conn, &mut group, alarm, counters) {
            checkpointer.committed();
            answer_group(&mut group, &durability, started.elapsed());
        }
    }
    // The syncer answers what it holds before the connection (then the WAL) is closed, and the
    // writer's connection closes last, so it is the one that checkpoints the WAL away.
    drop(durability);
    drop(checkpointer);
    drop(conn);
}

/// Answers the callers of a committed group. Under the syncer, the commands that promise
/// durability wait for the WAL's fsync; leases and settlements may be lost on power failure at no
/// cost but a re-send the cloud dedupes (at-least-once), so they are answered at once.
fn answer_group(group: &mut Vec<Command>, durability: &Durability, written_in: Duration) {
    match durability {
        Durability::Syncer(syncer) if group.iter().any(Command::promises_durability) => {
            let (durable, rest): (Vec<Command>, Vec<Command>) = group
                .drain(..)
                .partition(|command| command.promises_durability() && !command.is_err());
            rest.into_iter().for_each(Command::answer);
            if !durable.is_empty() {
                syncer.flush(durable, written_in);
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
) -> bool {
    let Some(tx) = begin(conn, group) else {
        return false;
    };
    // The pending rows and bytes before the group, for queue limits: each command sees them plus
    // what the commands before it in the group added.
    let (rows, bytes) = counters.pending.get();
    let base = PendingDelta {
        rows: i64::try_from(rows).unwrap_or(i64::MAX),
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
    };
    let mut delta = PendingDelta::default();
    let clean = run_optimistically(&tx, group, base, &mut delta);
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
            execute_in_savepoint(&tx, command, &mut delta, base);
        }
        tx
    };
    match tx.commit() {
        Ok(()) => {
            // Counted before anyone is answered, so a caller never sees its write uncounted.
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.pending.apply(delta);
            true
        }
        // Nothing in the group is durable: every caller learns that, none gets a false yes.
        Err(err) => {
            let err = if is_failed_fsync(&err) {
                // SQLite's own fsync inside the commit (the WAL's header, when the WAL starts
                // over): as untrustworthy afterwards as the syncer's.
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
    base: PendingDelta,
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
            if limit.is_some_and(|limit| within(limit, base.plus(assumed), events).is_err()) {
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
            let before = base.plus(*delta);
            next += 1;
            execute(conn, &mut group[start], delta, before)
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Inserts the events of consecutive enqueue commands with multi-row statements and records each
/// command's outcomes, as if each event had been inserted on its own: the first of several events
/// with one `event_id` is the row, the others are its duplicates. For batches that saves about a
/// fifth of the writer's time per event (measured: 5.0–5.5 µs instead of 6.1–7.1).
fn enqueue_run(conn: &Connection, commands: &mut [Command], delta: &mut PendingDelta) -> bool {
    let mut rows: Vec<(&NewEvent, f64)> = Vec::new();
    for command in commands.iter() {
        if let Command::Enqueue { events, now, .. } = command {
            let enqueued_at = to_unix(*now);
            rows.extend(events.iter().map(|event| (event, enqueued_at)));
        }
    }
    let outcomes = match insert_rows(conn, &rows) {
        Ok(outcomes) => outcomes,
        Err(err) => {
            // A run of one command failed with its own error. In a longer run, whose it is is
            // found by the command-by-command pass.
            if let [Command::Enqueue { reply, .. }] = commands {
                reply.set(Err(err));
            }
            return false;
        }
    };
    add_inserted(delta, &rows, &outcomes);
    drop(rows);
    let mut outcomes = outcomes.into_iter();
    for command in commands.iter_mut() {
        if let Command::Enqueue { events, reply, .. } = command {
            reply.set(Ok(outcomes.by_ref().take(events.len()).collect()));
        }
    }
    true
}

/// Rows per multi-row `INSERT`, largest first: a run is cut into these sizes, so that only these
/// statements are ever prepared and they all stay in the statement cache. Single rows take the
/// one-row statement, which needs no `RETURNING`.
const INSERT_CHUNKS: [usize; 2] = [32, 8];

/// The one-row `INSERT`; a conflict on `event_id` inserts nothing.
const INSERT_ONE: &str =
    "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id)
     VALUES (?1, ?2, ?3, 0, ?4)
     ON CONFLICT(event_id) WHERE event_id IS NOT NULL DO NOTHING";

/// The `INSERT`s of [`INSERT_CHUNKS`] rows, built once.
static INSERT_MANY: LazyLock<[String; 2]> = LazyLock::new(|| INSERT_CHUNKS.map(insert_sql));

/// The `INSERT` of `rows` rows, returning the rows it inserted.
fn insert_sql(rows: usize) -> String {
    let values = vec!["(?, ?, ?, 0, ?)"; rows].join(",");
    format!(
        "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id) VALUES {values}
         ON CONFLICT(event_id) WHERE event_id IS NOT NULL DO NOTHING RETURNING id, event_id"
    )
}

/// Inserts `rows` (event, `enqueued_at`), returning each one's outcome in order.
fn insert_rows(conn: &Connection, rows: &[(&NewEvent, f64)]) -> Result<Vec<EnqueueOutcome>, Error> {
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut rest = rows;
    while let Some(&(event, enqueued_at)) = rest.first() {
        let Some((size, sql)) = INSERT_CHUNKS
            .into_iter()
            .zip(INSERT_MANY.iter())
            .find(|(size, _)| *size <= rest.len())
        else {
            outcomes.push(insert_one(conn, event, enqueued_at)?);
            rest = &rest[1..];
            continue;
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut statement = conn.prepare_cached(sql)?;
        for (n, (event, enqueued_at)) in chunk.iter().enumerate() {
            let first = n * 4 + 1;
            statement.raw_bind_parameter(first, event.payload_json())?;
            statement.raw_bind_parameter(first + 1, event.kind().as_str())?;
            statement.raw_bind_parameter(first + 2, *enqueued_at)?;
            statement.raw_bind_parameter(first + 3, event.event_id().as_str())?;
        }
        // (id, event_id) of the rows inserted; at most one per id, since the others conflicted.
        let mut inserted: Vec<(i64, Option<String>)> = Vec::with_capacity(size);
        let mut returned = statement.raw_query();
        while let Some(row) = returned.next()? {
            inserted.push((row.get(0)?, Some(row.get(1)?)));
        }
        for (event, _) in chunk {
            let id = event.event_id().as_str();
            // The first event with an id is its row: taking the id from the list makes any later
            // event with it a duplicate of that row.
            let row = inserted
                .iter_mut()
                .find_map(|(row_id, event_id)| event_id.take_if(|e| e == id).map(|_| *row_id));
            outcomes.push(match row {
                Some(row_id) => EnqueueOutcome::Inserted(RowId(row_id)),
                None => EnqueueOutcome::Duplicate(existing_row(conn, id)?),
            });
        }
    }
    Ok(outcomes)
}

/// Inserts one event, or finds the row already queued under its id.
fn insert_one(
    conn: &Connection,
    event: &NewEvent,
    enqueued_at: f64,
) -> Result<EnqueueOutcome, Error> {
    let id = event.event_id().as_str();
    let inserted = conn.prepare_cached(INSERT_ONE)?.execute(params![
        event.payload_json(),
        event.kind().as_str(),
        enqueued_at,
        id
    ])?;
    Ok(if inserted == 1 {
        EnqueueOutcome::Inserted(RowId(conn.last_insert_rowid()))
    } else {
        EnqueueOutcome::Duplicate(existing_row(conn, id)?)
    })
}

/// The row already queued under `event_id`.
fn existing_row(conn: &Connection, event_id: &str) -> Result<RowId, Error> {
    let mut existing = conn.prepare_cached("SELECT id FROM sync_queue WHERE event_id = ?1")?;
    Ok(RowId(existing.query_row([event_id], |row| row.get(0))?))
}

/// Adds the rows that `outcomes` say were inserted to the pending `delta`.
fn add_inserted(delta: &mut PendingDelta, rows: &[(&NewEvent, f64)], outcomes: &[EnqueueOutcome]) {
    for ((event, _), outcome) in rows.iter().zip(outcomes) {
        if matches!(outcome, EnqueueOutcome::Inserted(_)) {
            delta.row(1, payload_bytes(event));
        }
    }
}

/// An event's size as the queue limits count it.
fn payload_bytes(event: &NewEvent) -> i64 {
    i64::try_from(event.payload_json().len()).unwrap_or(i64::MAX)
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
    base: PendingDelta,
) {
    if let Err(err) = tx.execute_batch("SAVEPOINT command") {
        command.set_err(&Error::from(err));
        return;
    }
    let mut delta = PendingDelta::default();
    let ok = execute(tx, command, &mut delta, base.plus(*group_delta));
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

/// Runs one command, recording its outcome in it; true if it succeeded. `pending` is what is
/// pending before it, this transaction's earlier commands included.
fn execute(
    conn: &Connection,
    command: &mut Command,
    delta: &mut PendingDelta,
    pending: PendingDelta,
) -> bool {
    match command {
        Command::Enqueue {
            events,
            limit,
            now,
            reply,
        } => {
            let result = match limit {
                Some(limit) => within(*limit, pending, events),
                None => Ok(()),
            }
            .and_then(|()| enqueue(conn, events, *now, delta));
            reply.set(result)
        }
        Command::Claim {
            limit,
            from,
            lease,
            now,
            reply,
        } => reply.set(claim(conn, *limit, *from, *lease, *now)),
        Command::Settle {
            settlements,
            now,
            reply,
        } => reply.set(settle(conn, settlements, *now, delta)),
        Command::Retry { selector, reply } => reply.set(retry(conn, selector, delta)),
        Command::PurgeSynced {
            older_than,
            now,
            reply,
        } => reply.set(purge_synced(conn, *older_than, *now)),
        Command::SetMeta {
            key,
            value,
            now,
            reply,
        } => {
            let result = conn
                .execute(
                    "INSERT INTO gradata_meta (key, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    params![*key, value.as_str(), to_unix(*now)],
                )
                .map(drop)
                .map_err(Error::from);
            reply.set(result)
        }
    }
}

/// Whether `events` fit under `limit` on top of `pending`. Every event counts, duplicates of rows
/// already queued too: which are duplicates is known only once inserted, and refusing a retried
/// write when the queue is at its limit anyway costs nothing.
fn within(limit: QueueLimit, pending: PendingDelta, events: &[NewEvent]) -> Result<(), Error> {
    let rows = u64::try_from(pending.rows).unwrap_or(0);
    let bytes = u64::try_from(pending.bytes).unwrap_or(0);
    let incoming_bytes: u64 = events.iter().map(|e| e.payload_json().len() as u64).sum();
    if rows + events.len() as u64 > limit.max_rows || bytes + incoming_bytes > limit.max_bytes {
        return Err(Error::QueueFull { rows, bytes, limit });
    }
    Ok(())
}

fn enqueue(
    conn: &Connection,
    events: &[NewEvent],
    now: SystemTime,
    delta: &mut PendingDelta,
) -> Result<Vec<EnqueueOutcome>, Error> {
    let enqueued_at = to_unix(now);
    let rows: Vec<(&NewEvent, f64)> = events.iter().map(|event| (event, enqueued_at)).collect();
    let outcomes = insert_rows(conn, &rows)?;
    add_inserted(delta, &rows, &outcomes);
    Ok(outcomes)
}

fn claim(
    conn: &Connection,
    limit: usize,
    from: ClaimFrom,
    lease: Duration,
    now: SystemTime,
) -> Result<Vec<ClaimedRow>, Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (due_clause, after) = match from {
        ClaimFrom::Due => ("(next_attempt_at IS NULL OR next_attempt_at <= :now)", 0),
        ClaimFrom::After(RowId(after)) => ("id > :after", after),
    };
    // Invariant: the lease is taken in the same statement that selects the rows, inside a write
    // transaction, so two drainers (threads or processes) can never claim the same row at once.
    let sql = format!(
        "UPDATE sync_queue SET lease_until = :lease_until
          WHERE id IN (
              SELECT id FROM sync_queue
               WHERE synced_at IS NULL AND dead_at IS NULL
                 AND (lease_until IS NULL OR lease_until <= :now)
                 AND {due_clause}
               ORDER BY id
               LIMIT :limit)
         RETURNING id, event_id, payload_json, COALESCE(attempts, 0)"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let now_unix = to_unix(now);
    let lease_until = to_unix(lease_until(now, lease));
    let mut rows = Vec::new();
    let mut query = match from {
        ClaimFrom::Due => statement.query(rusqlite::named_params! {
            ":lease_until": lease_until, ":now": now_unix, ":limit": limit,
        })?,
        ClaimFrom::After(_) => statement.query(rusqlite::named_params! {
            ":lease_until": lease_until, ":now": now_unix, ":limit": limit, ":after": after,
        })?,
    };
    while let Some(row) = query.next()? {
        let attempts: i64 = row.get(3)?;
        rows.push(ClaimedRow {
            id: RowId(row.get(0)?),
            event_id: row.get(1)?,
            payload_json: row.get(2)?,
            attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        });
    }
    rows.sort_by_key(|row| row.id);
    Ok(rows)
}

fn settle(
    conn: &Connection,
    settlements: &[Settlement],
    now: SystemTime,
    delta: &mut PendingDelta,
) -> Result<(), Error> {
    let now = to_unix(now);
    // Deliveries come in runs (a whole batch answered 200): each run of `Synced` with the same
    // status is one statement over a JSON array of ids rather than one statement per row. Runs
    // keep the settlements' order, so the outcome is the same as settling them one by one.
    let mut run: Vec<i64> = Vec::new();
    let mut run_status: Option<u16> = None;
    for settlement in settlements {
        if let Settlement::Synced { id, status } = settlement {
            if run_status.is_some_and(|s| s != *status) {
                settle_synced(conn, &run, run_status, now, delta)?;
                run.clear();
            }
            run_status = Some(*status);
            run.push(id.0);
            continue;
        }
        settle_synced(conn, &run, run_status, now, delta)?;
        run.clear();
        // Every update is guarded by `synced_at IS NULL`: a row another drainer delivered after our
        // lease expired stays synced, whatever we learned.
        match settlement {
            Settlement::Synced { .. } => {}
            Settlement::Retry {
                id,
                status,
                error,
                next_attempt_at,
            } => {
                conn.prepare_cached(
                    "UPDATE sync_queue SET attempts = COALESCE(attempts, 0) + 1, lease_until = NULL,
                            next_attempt_at = ?2, last_status = ?3, last_error = ?4
                      WHERE id = ?1 AND synced_at IS NULL",
                )?
                .execute(params![id.0, to_unix(*next_attempt_at), status, truncate(error)])?;
            }
            Settlement::Dead { id, status, error } => {
                conn.prepare_cached(
                    "UPDATE sync_queue SET attempts = COALESCE(attempts, 0) + 1, lease_until = NULL,
                            dead_at = ?2, last_status = ?3, last_error = ?4
                      WHERE id = ?1 AND synced_at IS NULL AND dead_at IS NULL
                  RETURNING length(CAST(payload_json AS BLOB))",
                )?
                .query_row(params![id.0, now, status, truncate(error)], |row| row.get::<_, i64>(0))
                .optional()?
                .into_iter()
                .for_each(|bytes| delta.row(-1, bytes));
            }
            Settlement::Release { id, status, error } => {
                conn.prepare_cached(
                    "UPDATE sync_queue SET lease_until = NULL,
                            last_status = COALESCE(?2, last_status),
                            last_error = COALESCE(?3, last_error)
                      WHERE id = ?1 AND synced_at IS NULL",
                )?
                .execute(params![id.0, status, error.as_deref().map(truncate)])?;
            }
        }
    }
    settle_synced(conn, &run, run_status, now, delta)
}

/// Marks delivered rows synced, in one statement. Guarded by `synced_at IS NULL` like every
/// settlement: a row another drainer already settled is left alone and not counted twice.
fn settle_synced(
    conn: &Connection,
    ids: &[i64],
    status: Option<u16>,
    now: f64,
    delta: &mut PendingDelta,
) -> Result<(), Error> {
    let (false, Some(status)) = (ids.is_empty(), status) else {
        return Ok(());
    };
    let mut list = String::with_capacity(ids.len() * 8 + 2);
    list.push('[');
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            list.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(list, "{id}");
    }
    list.push(']');
    let mut statement = conn.prepare_cached(
        "UPDATE sync_queue SET synced_at = ?2, lease_until = NULL, last_status = ?3,
                last_error = NULL, dead_at = NULL
          WHERE id IN (SELECT value FROM json_each(?1)) AND synced_at IS NULL
      RETURNING length(CAST(payload_json AS BLOB))",
    )?;
    let settled = statement.query_map(params![list, now, status], |row| row.get::<_, i64>(0))?;
    for bytes in settled {
        delta.row(-1, bytes?);
    }
    Ok(())
}

fn retry(
    conn: &Connection,
    selector: &RetrySelector,
    delta: &mut PendingDelta,
) -> Result<usize, Error> {
    match selector {
        RetrySelector::AllDead => {
            let mut statement = conn.prepare_cached(
                "UPDATE sync_queue SET dead_at = NULL, next_attempt_at = NULL
                  WHERE dead_at IS NOT NULL AND synced_at IS NULL
                  RETURNING length(CAST(payload_json AS BLOB))",
            )?;
            let revived = statement.query_map([], |row| row.get::<_, i64>(0))?;
            let mut changed = 0;
            for bytes in revived {
                delta.row(1, bytes?);
                changed += 1;
            }
            Ok(changed)
        }
        RetrySelector::Ids(ids) => {
            let mut state = conn.prepare_cached(
                "SELECT dead_at IS NOT NULL, length(CAST(payload_json AS BLOB))
                   FROM sync_queue WHERE id = ?1 AND synced_at IS NULL",
            )?;
            let mut statement = conn.prepare_cached(
                "UPDATE sync_queue SET dead_at = NULL, next_attempt_at = NULL
                  WHERE id = ?1 AND synced_at IS NULL",
            )?;
            let mut changed = 0;
            for id in ids {
                let Some((was_dead, bytes)) = state
                    .query_row([id.0], |row| {
                        Ok((row.get::<_, bool>(0)?, row.get::<_, i64>(1)?))
                    })
                    .optional()?
                else {
                    continue;
                };
                changed += statement.execute([id.0])?;
                if was_dead {
                    delta.row(1, bytes);
                }
            }
            Ok(changed)
        }
    }
}

fn purge_synced(conn: &Connection, older_than: Duration, now: SystemTime) -> Result<usize, Error> {
    let cutoff = to_unix(
        now.checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH),
    );
    // Invariant: only synced rows are ever deleted.
    Ok(conn.execute(
        "DELETE FROM sync_queue WHERE synced_at IS NOT NULL AND synced_at < ?1",
        [cutoff],
    )?)
}

fn truncate(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A durable command that has run and awaits its fsync, and the receiver of its answer.
    fn ran_retry() -> (Command, oneshot::Receiver<Result<usize, Error>>) {
        let (sender, receiver) = oneshot::channel();
        let mut reply = Reply::new(sender);
        reply.set(Ok(1));
        let command = Command::Retry {
            selector: RetrySelector::AllDead,
            reply,
        };
        (command, receiver)
    }

    fn syncer(dir: &Path, last_fsync: Duration) -> Syncer {
        let wal = File::create(dir.join("wal")).unwrap();
        let syncer = Syncer::spawn(wal, DurabilityAlarm::new().0).unwrap();
        let micros = u64::try_from(last_fsync.as_micros()).unwrap();
        syncer
            .wal
            .last_fsync_micros
            .store(micros, Ordering::Relaxed);
        syncer
    }

    /// A group written in less time than the last fsync took is fsynced and answered before
    /// `flush` returns, on the caller's (the writer's) thread.
    #[test]
    fn a_quickly_written_group_is_flushed_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = syncer(dir.path(), Duration::from_secs(3600));
        let (command, mut answer) = ran_retry();
        syncer.flush(vec![command], Duration::from_millis(1));
        assert_eq!(answer.try_recv().unwrap().unwrap(), 1);
        // It was timed: the next decision compares against this fsync, not the hour set above.
        assert!(syncer.wal.last_fsync_micros.load(Ordering::Relaxed) < 3_600_000_000);
    }

    /// A group that took longer to write than the last fsync goes to the fsync thread, which
    /// answers it after its own fsync.
    #[test]
    fn a_long_group_is_flushed_by_the_fsync_thread() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = syncer(dir.path(), Duration::ZERO);
        let (command, answer) = ran_retry();
        syncer.flush(vec![command], Duration::from_millis(1));
        assert_eq!(answer.blocking_recv().unwrap().unwrap(), 1);
    }

    /// A failed fsync fails its group and raises the alarm with its reason; later groups fail
    /// without another fsync, and the first reason stays the one reported.
    #[test]
    fn a_failed_fsync_raises_the_alarm_once() {
        let (alarm, mut lost) = DurabilityAlarm::new();
        // Linux refuses to fsync /dev/null (EINVAL), as a failing disk refuses with EIO.
        let wal = File::open("/dev/null").unwrap();
        let syncer = Syncer::spawn(wal, alarm.clone()).unwrap();
        assert!(lost.borrow().is_none());
        let (command, answer) = ran_retry();
        syncer.flush(vec![command], Duration::from_millis(1));
        let Err(Error::SyncFailed(first)) = answer.blocking_recv().unwrap() else {
            panic!("acknowledged after a failed fsync");
        };
        assert!(first.starts_with("fsync of the WAL: "), "{first}");
        assert!(alarm.raised());
        let reason = lost.borrow_and_update().clone().unwrap();
        assert!(reason.ends_with(&first), "{reason}");

        let (command, answer) = ran_retry();
        syncer.flush(vec![command], Duration::from_millis(1));
        let Err(Error::SyncFailed(later)) = answer.blocking_recv().unwrap() else {
            panic!("acknowledged after a failed fsync");
        };
        assert_eq!(later, "an earlier fsync of the WAL failed");
        assert!(!lost.has_changed().unwrap(), "the reason was replaced");
    }

    /// After a failed fsync nothing is promised durable, on either path.
    #[test]
    fn after_a_failed_fsync_every_flush_fails() {
        let dir = tempfile::tempdir().unwrap();
        for last_fsync in [Duration::from_secs(3600), Duration::ZERO] {
            let syncer = syncer(dir.path(), last_fsync);
            syncer
                .wal
                .alarm
                .raise(&Error::SyncFailed("test".to_owned()));
            let (command, answer) = ran_retry();
            syncer.flush(vec![command], Duration::from_millis(1));
            assert!(
                matches!(answer.blocking_recv().unwrap(), Err(Error::SyncFailed(_))),
                "last fsync {last_fsync:?}"
            );
        }
    }
}
