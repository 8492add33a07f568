//! The outbox: gradata's durable queue of events waiting to be delivered (DESIGN §4).
//!
//! [`Store`] is a cheap-to-clone handle over one SQLite database, `<data_dir>/system.db`. Every
//! change goes through one writer thread (`writer/`), which folds whatever requests are waiting
//! into a single transaction (group commit) and answers each caller once it has committed; a write
//! that promises durability (an enqueue, a brain event, a retry) only after the WAL's fsync. Reads
//! ([`Store::stats`], [`Store::list`]) use a separate connection and never wait for the writer,
//! thanks to WAL. A checkpointer thread (`checkpoint.rs`), on a third connection, copies committed
//! pages from the WAL back into the database file.
//!
//! The three row states are defined here and nowhere else: **pending** (`synced_at IS NULL AND
//! dead_at IS NULL`), **dead** (`dead_at IS NOT NULL`) and **synced** (`synced_at IS NOT NULL`).
//!
//! Status is O(1) at any queue size: the counts by state are kept in the database by triggers on
//! `sync_queue` (`schema.rs`), so they stay right whichever process writes the table, and claims
//! and the next wake-up read only the rows they return, through partial indexes.
//!
//! Layout: `open.rs` (the open sequence, top to bottom), `handle.rs` ([`Store`]: the write commands
//! and the one async read path), `error.rs` ([`Error`]), `schema.rs` (DDL, additive migrations,
//! the counting triggers), `read.rs` (read-only queries), `writer/` (the writer thread, group
//! commit and the SQL of each change), `retention.rs` (purging synced rows in steps),
//! `checkpoint.rs`, `lock.rs`, `identity.rs`, `types.rs`. The times it stores come from the
//! [`crate::clock::Clock`] it was opened with.
//!
//! The store also owns the one write connection to the brain's `events` table, which lives in the
//! same database: it creates the table when missing (as the Python SDK 0.6.0 does) and commits a
//! brain event with the outbox row a route sends beside it in one transaction
//! ([`Store::record_brain_event`]); what goes into the row is the brain's business.
//!
//! Boundary: this module knows nothing of HTTP or of the sync protocol's status codes; it stores
//! what [`crate::sync`] tells it. Of tokio it uses only channels (the writer's oneshot replies and
//! the durability alarm's `watch`, which need no runtime on its threads) and `spawn_blocking` for
//! its reads. Invariants: a pending row is never deleted; every state change
//! is one transaction; migrations are additive.

mod checkpoint;
mod error;
mod handle;
mod identity;
mod lock;
mod open;
mod read;
mod retention;
mod schema;
#[cfg(test)]
mod test_db;
mod types;
mod writer;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub use error::{Error, SqliteError};
pub use handle::Store;
pub use identity::resolve_brain_id;
pub use lock::{BRAIN_LOCK, INSTANCE_LOCK};
pub use read::{QueueEntry, Stats};
pub use retention::{PurgeStep, WalCheckpoint};
pub use types::{
    BrainEventRow, ClaimFrom, ClaimedRow, EnqueueOutcome, EventId, EventRowId, InvalidEventId,
    Kind, MAX_EVENT_ID_LEN, NewEvent, OutboxEntry, OutboxOutcome, QueueLimit, RecordedEvent,
    RetrySelector, RowId, RowState, Settlement,
};

pub(crate) use open::PRIVATE_FILE_MODE;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "system.db";

/// Default `busy_timeout`: how long a statement waits for another process's write lock.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How the store is opened. Built by the caller from [`crate::config::Config`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory holding `system.db` and the lock files.
    pub data_dir: PathBuf,
    /// SQLite `synchronous` mode for the WAL.
    pub synchronous: Synchronous,
    /// How long to wait for another process's write lock.
    pub busy_timeout: Duration,
    /// Whether a missing database or queue table is created.
    pub create: Create,
    /// Whether this opener must be the only service on the data directory.
    pub instance_lock: InstanceLock,
}

impl Options {
    /// Options with the defaults for everything but the directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Options {
        Options {
            data_dir: data_dir.into(),
            synchronous: Synchronous::Full,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            create: Create::IfMissing,
            instance_lock: InstanceLock::None,
        }
    }

    /// Path of the database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

/// SQLite `synchronous` setting. `OFF` is deliberately absent: a 2xx to a client promises the row
/// is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Sync the WAL at every commit: an acknowledged event survives power loss.
    Full,
    /// Sync only at checkpoints: the last commits may be lost on power loss (never corrupted).
    Normal,
}

/// Whether opening may create the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Create the directory, the database and the table when missing (the service).
    IfMissing,
    /// Open only what exists (the CLI): a missing database or table is an error, and nothing is
    /// written to the data directory in that case.
    Never,
}

/// Whether the single-instance lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceLock {
    /// Take `.gradata.lock` exclusively (the service).
    Exclusive,
    /// Do not; coordinate with others only through leases (CLI tools, tests).
    None,
}
/// Seconds since the Unix epoch, the unit of every REAL time column.
pub(crate) fn to_unix(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The latest time a REAL column is read as: the last second of year 9999. A later value (a row
/// another program wrote with `1e300`) is no time a row can have; read as is, it would overflow
/// `SystemTime`, and years past 9999 cannot be printed as RFC 3339.
const LATEST_UNIX_SECONDS: u64 = 253_402_300_799;

/// The inverse of [`to_unix`], for values read from the database, which any program may have
/// written: negative or non-finite values map to the epoch, values past year 9999 to its last
/// second. Never panics.
pub(crate) fn from_unix(seconds: f64) -> SystemTime {
    let latest = Duration::from_secs(LATEST_UNIX_SECONDS);
    if !(seconds.is_finite() && seconds > 0.0) {
        return SystemTime::UNIX_EPOCH;
    }
    let since_epoch = Duration::try_from_secs_f64(seconds).map_or(latest, |d| d.min(latest));
    SystemTime::UNIX_EPOCH
        .checked_add(since_epoch)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_unix_never_panics_and_clamps_impossible_times() {
        let latest = SystemTime::UNIX_EPOCH + Duration::from_secs(LATEST_UNIX_SECONDS);
        for (seconds, expected) in [
            (1e300, latest),
            (f64::MAX, latest),
            (1.9e19, latest),
            (f64::INFINITY, SystemTime::UNIX_EPOCH),
            (f64::NAN, SystemTime::UNIX_EPOCH),
            (-5.0, SystemTime::UNIX_EPOCH),
            (1.5, SystemTime::UNIX_EPOCH + Duration::from_millis(1500)),
        ] {
            assert_eq!(from_unix(seconds), expected, "{seconds}");
        }
        let now = SystemTime::now();
        let back = from_unix(to_unix(now));
        let apart = back
            .duration_since(now)
            .unwrap_or_else(|err| err.duration());
        assert!(apart < Duration::from_micros(1), "{apart:?}");
    }
}
