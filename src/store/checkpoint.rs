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
//! It knows nothing of the queue: it checkpoints whatever the writer committed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

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

/// Owner of the checkpointer thread. Dropping it stops the thread after its current checkpoint.
pub(super) struct Checkpointer {
    /// Capacity one: signals sent while one is waiting fold into it.
    signal: Option<mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on `conn`, a read-write connection to the writer's database; `runs`
    /// counts the checkpoints it completes.
    pub(super) fn spawn(conn: Connection, runs: Arc<AtomicU64>) -> std::io::Result<Checkpointer> {
        let (signal, signals) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("gradata-checkpoint".to_owned())
            .spawn(move || run(&conn, &signals, &runs))?;
        Ok(Checkpointer {
            signal: Some(signal),
            thread: Some(thread),
        })
    }

    /// Tells the thread the WAL has grown. Never blocks.
    pub(super) fn committed(&self) {
        if let Some(signal) = &self.signal {
            // Full: a checkpoint is already due and will include this commit. Disconnected: the
            // thread is gone (it panicked), and the writer's backstop still bounds the WAL.
            let _ = signal.try_send(());
        }
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

fn run(conn: &Connection, signals: &mpsc::Receiver<()>, runs: &AtomicU64) {
    // The pause is a sleep, not a wait on the channel: a commit during it fills the channel's one
    // slot without waking this thread (which would cost a context switch per commit, on the cores
    // the writer and the request handlers need), and that signal starts the next checkpoint as
    // soon as the pause is over. Shutdown waits at most one pause.
    while signals.recv().is_ok() {
        checkpoint(conn, runs);
        std::thread::sleep(MIN_INTERVAL);
    }
}

fn checkpoint(conn: &Connection, runs: &AtomicU64) {
    // PASSIVE copies what it can without waiting for readers or the writer. Busy only means
    // another connection (another process's drain) is checkpointing right now; the next signal
    // tries again.
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(_busy) => {
            runs.fetch_add(1, Ordering::Relaxed);
        }
        Err(err) if err.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
        Err(err) => tracing::warn!(
            error = %err,
            "WAL checkpoint failed; the writer's own checkpoint still bounds the WAL"
        ),
    }
}
