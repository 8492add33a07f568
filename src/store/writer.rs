//! The writer thread: the one connection that changes the database, and group commit.
//!
//! Callers send a [`Command`] with a oneshot reply. The thread takes the first waiting command and
//! every command queued behind it (up to [`MAX_GROUP`]), runs each inside its own savepoint of a
//! single `BEGIN IMMEDIATE` transaction, commits once, and only then answers every caller. Under
//! `synchronous=FULL` that is one fsync for the whole group instead of one per request, which is
//! where the write throughput comes from (DESIGN §4). A command that fails rolls back to its
//! savepoint and gets its own error; the others still commit.
//!
//! The reply channels are tokio oneshots, which work without a runtime: the thread never blocks on
//! a caller, and a caller that went away simply drops its receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::types::{
    ClaimFrom, ClaimedRow, EnqueueOutcome, NewEvent, RetrySelector, RowId, Settlement, lease_until,
};
use super::{Error, Synchronous, to_unix};

/// Most commands folded into one transaction. Bounds the latency a burst can add to its first
/// caller and the size of one WAL commit.
const MAX_GROUP: usize = 512;

/// Longest stored `last_error`, as the original (which cut at 500 characters).
const MAX_ERROR_CHARS: usize = 500;

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// A request to the writer thread.
pub(super) enum Command {
    Enqueue {
        events: Vec<NewEvent>,
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
}

/// Owner of the writer thread. Dropping it closes the channel, waits for the thread to finish the
/// commands already sent, and so closes the connection (checkpointing the WAL) before returning.
pub(super) struct Writer {
    /// The sending half; the thread exits when every clone of it is gone. `None` only in `drop`.
    commands: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
    /// Transactions committed so far (shared with the thread, which increments it).
    commits: Arc<AtomicU64>,
}

/// What the writer thread shares with the store handle.
struct Counters<'a> {
    commits: &'a AtomicU64,
    pending: &'a PendingGauge,
}

impl Writer {
    pub(super) fn spawn(
        conn: Connection,
        synchronous: Synchronous,
        pending: Arc<PendingGauge>,
    ) -> std::io::Result<Writer> {
        let (commands, receiver) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        let thread = std::thread::Builder::new()
            .name("gradata-store".to_owned())
            .spawn(move || {
                let counters = Counters {
                    commits: &counter,
                    pending: &pending,
                };
                run(conn, synchronous, &receiver, &counters);
            })?;
        Ok(Writer {
            commands: Some(commands),
            thread: Some(thread),
            commits,
        })
    }

    /// Transactions committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Sends a command built around a fresh reply channel and waits for its answer.
    pub(super) async fn call<T>(
        &self,
        build: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, Error> {
        let (reply, answer) = oneshot::channel();
        let sender = self.commands.as_ref().ok_or(Error::Closed)?;
        sender.send(build(reply)).map_err(|_| Error::Closed)?;
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

fn run(
    mut conn: Connection,
    configured: Synchronous,
    receiver: &mpsc::Receiver<Command>,
    counters: &Counters<'_>,
) {
    let mut current = configured;
    let mut group = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = receiver.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(command) => group.push(command),
                Err(_) => break,
            }
        }
        // Only an acknowledgement to a producer promises durability. Leases and settlements may be
        // lost on power failure at no cost but a re-send the cloud dedupes (at-least-once), so a
        // group without an enqueue commits without the fsync; WAL order keeps it behind the next
        // fsynced commit. This halves the fsyncs of a drain (claim + settle per batch).
        let wanted = if group.iter().any(Command::promises_durability) {
            configured
        } else {
            Synchronous::Normal
        };
        if wanted != current && set_synchronous(&conn, wanted).is_ok() {
            current = wanted;
        }
        commit_group(&mut conn, &mut group, counters);
    }
}

/// A command's result, held until the group's commit decides whether it stands.
enum Done {
    Enqueue(
        Reply<Vec<EnqueueOutcome>>,
        Result<Vec<EnqueueOutcome>, Error>,
    ),
    Claim(Reply<Vec<ClaimedRow>>, Result<Vec<ClaimedRow>, Error>),
    Unit(Reply<()>, Result<(), Error>),
    Count(Reply<usize>, Result<usize, Error>),
}

impl Done {
    /// The answer for a command that could not run at all.
    fn failed(command: Command, err: &Error) -> Done {
        match command {
            Command::Enqueue { reply, .. } => Done::Enqueue(reply, Err(err.for_each_caller())),
            Command::Claim { reply, .. } => Done::Claim(reply, Err(err.for_each_caller())),
            Command::Settle { reply, .. } | Command::SetMeta { reply, .. } => {
                Done::Unit(reply, Err(err.for_each_caller()))
            }
            Command::Retry { reply, .. } | Command::PurgeSynced { reply, .. } => {
                Done::Count(reply, Err(err.for_each_caller()))
            }
        }
    }

    fn is_err(&self) -> bool {
        match self {
            Done::Enqueue(_, result) => result.is_err(),
            Done::Claim(_, result) => result.is_err(),
            Done::Unit(_, result) => result.is_err(),
            Done::Count(_, result) => result.is_err(),
        }
    }

    /// Answers the caller. A dropped receiver means the caller stopped waiting; what was
    /// committed stays committed.
    fn send(self) {
        match self {
            Done::Enqueue(reply, result) => drop(reply.send(result)),
            Done::Claim(reply, result) => drop(reply.send(result)),
            Done::Unit(reply, result) => drop(reply.send(result)),
            Done::Count(reply, result) => drop(reply.send(result)),
        }
    }

    /// Replaces a result that the failed commit made untrue.
    fn fail(self, err: &Error) {
        match self {
            Done::Enqueue(reply, _) => drop(reply.send(Err(err.for_each_caller()))),
            Done::Claim(reply, _) => drop(reply.send(Err(err.for_each_caller()))),
            Done::Unit(reply, _) => drop(reply.send(Err(err.for_each_caller()))),
            Done::Count(reply, _) => drop(reply.send(Err(err.for_each_caller()))),
        }
    }
}

/// Runs and commits one group, then answers every caller.
fn commit_group(conn: &mut Connection, group: &mut Vec<Command>, counters: &Counters<'_>) {
    let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(err) => {
            let err = Error::from(err);
            group
                .drain(..)
                .for_each(|command| Done::failed(command, &err).send());
            return;
        }
    };
    // A lone command needs no savepoint: the transaction itself is its all-or-nothing. Savepoints
    // copy every page they touch to a statement journal, which a drain's claim/settle pairs (one
    // command per group, mostly) would pay for on every batch.
    if group.len() == 1 {
        if let Some(command) = group.pop() {
            let mut delta = PendingDelta::default();
            let done = execute(&tx, command, &mut delta);
            if done.is_err() {
                drop(tx); // rolls back
                done.send();
                return;
            }
            match tx.commit() {
                Ok(()) => {
                    counters.commits.fetch_add(1, Ordering::Relaxed);
                    counters.pending.apply(delta);
                    done.send();
                }
                Err(err) => done.fail(&Error::from(err)),
            }
        }
        return;
    }
    let mut delta = PendingDelta::default();
    let done: Vec<Done> = group
        .drain(..)
        .map(|command| execute_in_savepoint(&tx, command, &mut delta))
        .collect();
    match tx.commit() {
        Ok(()) => {
            // Counted before anyone is answered, so a caller never sees its write uncounted.
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.pending.apply(delta);
            done.into_iter().for_each(Done::send);
        }
        // Nothing in the group is durable: every caller learns that, none gets a false yes.
        Err(err) => {
            let err = Error::from(err);
            done.into_iter().for_each(|item| item.fail(&err));
        }
    }
}

fn execute_in_savepoint(
    tx: &rusqlite::Transaction<'_>,
    command: Command,
    group_delta: &mut PendingDelta,
) -> Done {
    if let Err(err) = tx.execute_batch("SAVEPOINT command") {
        return Done::failed(command, &Error::from(err));
    }
    let mut delta = PendingDelta::default();
    let done = execute(tx, command, &mut delta);
    let end = if done.is_err() {
        "ROLLBACK TO command; RELEASE command"
    } else {
        "RELEASE command"
    };
    match tx.execute_batch(end) {
        Ok(()) => {
            if !done.is_err() {
                group_delta.add(delta);
            }
            done
        }
        Err(err) => {
            // The savepoint could not be closed; the whole transaction will fail to commit and
            // every caller will hear about it. Answer this one now with the precise cause.
            done.fail(&Error::from(err));
            let (reply, _) = oneshot::channel();
            Done::Unit(reply, Err(Error::Closed))
        }
    }
}

fn execute(conn: &Connection, command: Command, delta: &mut PendingDelta) -> Done {
    match command {
        Command::Enqueue { events, now, reply } => {
            Done::Enqueue(reply, enqueue(conn, &events, now, delta))
        }
        Command::Claim {
            limit,
            from,
            lease,
            now,
            reply,
        } => Done::Claim(reply, claim(conn, limit, from, lease, now)),
        Command::Settle {
            settlements,
            now,
            reply,
        } => Done::Unit(reply, settle(conn, &settlements, now, delta)),
        Command::Retry { selector, reply } => Done::Count(reply, retry(conn, &selector, delta)),
        Command::PurgeSynced {
            older_than,
            now,
            reply,
        } => Done::Count(reply, purge_synced(conn, older_than, now)),
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
                    params![key, value, to_unix(now)],
                )
                .map(drop)
                .map_err(Error::from);
            Done::Unit(reply, result)
        }
    }
}

fn enqueue(
    conn: &Connection,
    events: &[NewEvent],
    now: SystemTime,
    delta: &mut PendingDelta,
) -> Result<Vec<EnqueueOutcome>, Error> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id)
         VALUES (?1, ?2, ?3, 0, ?4)
         ON CONFLICT(event_id) WHERE event_id IS NOT NULL DO NOTHING",
    )?;
    let mut existing = conn.prepare_cached("SELECT id FROM sync_queue WHERE event_id = ?1")?;
    let enqueued_at = to_unix(now);
    let mut outcomes = Vec::with_capacity(events.len());
    for event in events {
        let id = event.event_id().as_str();
        let inserted = insert.execute(params![
            event.payload_json(),
            event.kind().as_str(),
            enqueued_at,
            id
        ])?;
        outcomes.push(if inserted == 1 {
            delta.row(
                1,
                i64::try_from(event.payload_json().len()).unwrap_or(i64::MAX),
            );
            EnqueueOutcome::Inserted(RowId(conn.last_insert_rowid()))
        } else {
            EnqueueOutcome::Duplicate(RowId(existing.query_row([id], |row| row.get(0))?))
        });
    }
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
    for settlement in settlements {
        // Every update is guarded by `synced_at IS NULL`: a row another drainer delivered after our
        // lease expired stays synced, whatever we learned.
        match settlement {
            Settlement::Synced { id, status } => {
                conn.prepare_cached(
                    "UPDATE sync_queue SET synced_at = ?2, lease_until = NULL, last_status = ?3,
                            last_error = NULL, dead_at = NULL
                      WHERE id = ?1 AND synced_at IS NULL
                  RETURNING length(CAST(payload_json AS BLOB))",
                )?
                .query_row(params![id.0, now, status], |row| row.get::<_, i64>(0))
                .optional()?
                .into_iter()
                .for_each(|bytes| delta.row(-1, bytes));
            }
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
