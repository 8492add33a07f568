//! The checkpointer thread: copies committed pages from the WAL back into the database file, on a
//! connection of its own, so that the writer never stops to do it.
//!
//! By default SQLite checkpoints inside the commit that takes the WAL past 1,000 pages: the writer
//! copies every page and fsyncs the database file while the callers of that group, and every
//! command queued behind it, wait. Here the writer only signals after each commit, and this thread
//! runs a `PASSIVE` checkpoint, which never blocks the writer, at most once per
//! [`MIN_INTERVAL`]. The writer keeps SQLite's own checkpoint as a backstop at
//! [`WRITER_BACKSTOP_PAGES`], so the WAL stays bounded even if this thread falls behind (under a
//! steady stream of commits a passive checkpoint rarely catches the WAL's very end, and only a
//! checkpoint that does lets the next transaction start the WAL over).
//!
//! On request it also runs a checkpoint and says whether it reached the WAL's end, for a purge of
//! synced rows (which writes many pages): under the purge's stream of commits the periodic
//! checkpoints rarely catch the WAL's end, and the writer's backstop would then copy 8,000 pages
//! inside a commit, holding every write for a quarter of a second. So the purge pauses every few
//! steps until a passive checkpoint has caught up, after which the next commit starts the WAL
//! over, without anyone waiting on a lock. After the purge a `TRUNCATE` checkpoint cuts the file
//! to nothing, so that the disk the purge took is given back at once rather than kept at the
//! file's largest size; it waits at most [`RESET_BUSY_WAIT`] for readers and writers, and new
//! writers wait meanwhile, so a busy database keeps its WAL until the next request.
//!
//! It knows nothing of the queue: it checkpoints whatever the writer committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::WalCheckpoint;

/// Shortest time between two checkpoints. Each one fsyncs the database file, and that fsync
/// competes with the WAL's: small, frequent checkpoints keep each one short. Measured under the
/// API benchmark's load, 25 ms gave a p99 of 7 ms for single events where 100 ms gave 10 ms and
/// 1 s gave 30 ms, at the same throughput.
const MIN_INTERVAL: Duration = Duration::from_millis(25);

/// The writer's own automatic checkpoint, in WAL pages (SQLite's default is 1,000): reached only
/// when this thread cannot keep the WAL short by itself.
pub(super) const WRITER_BACKSTOP_PAGES: u32 = 8_000;

/// The size, in bytes, the writer cuts the WAL file back to when it starts the WAL over
/// (`journal_size_limit`). SQLite otherwise keeps the file at the largest size it ever reached: a
/// WAL that grew behind a long read (a listing, a `gradata status` of a large queue) would take
/// that much disk for good. Twice the backstop's 32 MiB, so that a WAL of the usual size is never
/// cut (a cut file is extended again by the next commits, and appending costs the WAL's fsync more
/// than overwriting).
pub(super) const WAL_SIZE_LIMIT_BYTES: i64 = 64 * 1024 * 1024;

/// How long a `TRUNCATE` checkpoint waits for other connections: new writes wait
/// behind it meanwhile, so it is kept short.
const RESET_BUSY_WAIT: Duration = Duration::from_millis(100);

/// Told the outcome of a requested checkpoint: whether it reached the WAL's end.
pub(super) type ResetDone = Box<dyn FnOnce(rusqlite::Result<bool>) + Send>;

/// What the writer asks of the thread.
enum Signal {
    /// The WAL has grown.
    Committed,
    /// Checkpoint as asked, then say whether the WAL's end was reached.
    Reset(WalCheckpoint, ResetDone),
}

/// Owner of the checkpointer thread. Dropping it stops the thread after its current checkpoint,
/// answering any truncation still asked for.
pub(super) struct Checkpointer {
    /// Unbounded, so the writer never waits on it; `Committed` is sent only when none is waiting
    /// (`committed_waiting`), so a burst of commits folds into one signal.
    signal: Option<mpsc::Sender<Signal>>,
    /// Set by the writer when it sends `Committed`, cleared by the thread when it takes it.
    committed_waiting: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on `conn`, a read-write connection to the writer's database; `runs`
    /// counts the checkpoints it completes.
    pub(super) fn spawn(conn: Connection, runs: Arc<AtomicU64>) -> std::io::Result<Checkpointer> {
        // Only a reset waits on other connections (a PASSIVE checkpoint never does).
        conn.busy_timeout(RESET_BUSY_WAIT)
            .map_err(std::io::Error::other)?;
        let (signal, signals) = mpsc::channel();
        let committed_waiting = Arc::new(AtomicBool::new(false));
        let waiting = committed_waiting.clone();
        let thread = std::thread::Builder::new()
            .name("gradata-checkpoint".to_owned())
            .spawn(move || run(&conn, &signals, &waiting, &runs))?;
        Ok(Checkpointer {
            signal: Some(signal),
            committed_waiting,
            thread: Some(thread),
        })
    }

    /// Tells the thread the WAL has grown. Never blocks.
    pub(super) fn committed(&self) {
        if self.committed_waiting.swap(true, Ordering::AcqRel) {
            return; // a checkpoint is already due and will include this commit
        }
        if let Some(signal) = &self.signal {
            // Disconnected: the thread is gone (it panicked), and the writer's backstop still
            // bounds the WAL.
            let _ = signal.send(Signal::Committed);
        }
    }

    /// Asks the thread for a checkpoint; `done` is told whether it reached the WAL's end. Never
    /// blocks.
    pub(super) fn reset(&self, how: WalCheckpoint, done: ResetDone) {
        let unsent = match &self.signal {
            Some(signal) => match signal.send(Signal::Reset(how, done)) {
                Ok(()) => return,
                Err(mpsc::SendError(Signal::Reset(_, done))) => done,
                Err(mpsc::SendError(Signal::Committed)) => return,
            },
            None => done,
        };
        // The thread is gone: the WAL stays as it is, which the writer's backstop bounds.
        unsent(Ok(false));
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.signal.take());
        if let Some(thread) = self.thread.take() {
            // A panic in the thread has already been reported by the panic hook.
            let _ = thread.join();
        }
    }
}

fn run(
    conn: &Connection,
    signals: &mpsc::Receiver<Signal>,
    committed_waiting: &AtomicBool,
    runs: &AtomicU64,
) {
    // The pause is a sleep, not a wait on the channel: a commit during it sends at most one
    // signal without waking this thread (which would cost a context switch per commit, on the
    // cores the writer and the request handlers need), and that signal starts the next
    // checkpoint as soon as the pause is over. Shutdown waits at most one pause.
    while let Ok(signal) = signals.recv() {
        match signal {
            Signal::Committed => {
                committed_waiting.store(false, Ordering::Release);
                checkpoint(conn, runs);
                std::thread::sleep(MIN_INTERVAL);
            }
            Signal::Reset(how, done) => done(reset(conn, how, runs)),
        }
    }
}

/// The checkpoint `how` asks for; whether it reached the WAL's end. Busy (another connection
/// kept it from finishing, within [`RESET_BUSY_WAIT`] for a `TRUNCATE`) is not an error: the WAL
/// is only left as it was.
fn reset(conn: &Connection, how: WalCheckpoint, runs: &AtomicU64) -> rusqlite::Result<bool> {
    // A passive checkpoint first copies what it can without holding anyone up, so that a
    // truncating one, during which writers wait, has little left to copy.
    let caught_up = passive(conn, runs)?;
    if how == WalCheckpoint::CatchUp {
        return Ok(caught_up);
    }
    let outcome = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    });
    match outcome {
        Ok(busy) => {
            runs.fetch_add(1, Ordering::Relaxed);
            Ok(busy == 0)
        }
        Err(err) if err.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(false),
        Err(err) => Err(err),
    }
}

fn checkpoint(conn: &Connection, runs: &AtomicU64) {
    if let Err(err) = passive(conn, runs) {
        tracing::warn!(
            error = %err,
            "WAL checkpoint failed; the writer's own checkpoint still bounds the WAL"
        );
    }
}

/// A `PASSIVE` checkpoint: copies what it can without waiting for readers or the writer. Returns
/// whether it copied every frame (the next commit then starts the WAL over). Busy only means
/// another connection (another process's drain) is checkpointing right now; the next signal tries
/// again.
fn passive(conn: &Connection, runs: &AtomicU64) -> rusqlite::Result<bool> {
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    }) {
        Ok((busy, frames, copied)) => {
            runs.fetch_add(1, Ordering::Relaxed);
            Ok(busy == 0 && frames == copied)
        }
        Err(err) if err.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(false),
        Err(err) => Err(err),
    }
}
