//! The outbox: gradata's durable queue of events waiting to be delivered (DESIGN §4).
//!
//! [`Store`] is a cheap-to-clone handle over one SQLite database, `<data_dir>/system.db`. Every
//! change goes through one writer thread (`writer/`), which folds whatever requests are waiting
//! into a single transaction (group commit) and answers each caller only after that transaction is
//! durable. Reads ([`Store::stats`], [`Store::list`]) use a separate connection and never wait
//! for the writer, thanks to WAL. A checkpointer thread (`checkpoint.rs`), on a third connection,
//! copies committed pages from the WAL back into the database file, so the writer does not stop
//! to do it.
//!
//! The three row states are defined here and nowhere else: **pending** (`synced_at IS NULL AND
//! dead_at IS NULL`), **dead** (`dead_at IS NOT NULL`) and **synced** (`synced_at IS NOT NULL`).
//!
//! Boundary: this module knows nothing of HTTP, of tokio, or of the sync protocol's status codes; it
//! stores what [`crate::sync`] tells it. Invariants: a pending row is never deleted; every state
//! change is one transaction; migrations are additive.

mod checkpoint;
mod identity;
mod lock;
mod read;
mod retention;
mod schema;
mod types;
mod writer;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};

pub use identity::resolve_brain_id;
pub use lock::INSTANCE_LOCK;
pub use read::{QueueEntry, Stats};
pub use retention::{PurgeStep, WalCheckpoint};
pub use types::{
    ClaimFrom, ClaimedRow, EnqueueOutcome, EventId, InvalidEventId, Kind, MAX_EVENT_ID_LEN,
    NewEvent, QueueLimit, RetrySelector, RowId, RowState, Settlement,
};

use lock::{LockError, LockFile};
use writer::{Command, PendingGauge, Writer};

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

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file does not exist and [`Create::Never`] was asked for.
    #[error("{0}: no such database")]
    NotFound(PathBuf),
    /// The database has no `sync_queue` table and [`Create::Never`] was asked for.
    #[error("{0}: the database has no sync_queue table")]
    NoQueueTable(PathBuf),
    /// Another `gradata serve` holds the data directory.
    #[error("{0}: another gradata service holds this data directory (stop it first)")]
    Locked(PathBuf),
    /// The disk is full; nothing was written.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// Another process kept the database locked past the busy timeout.
    #[error("database busy: {0}")]
    Busy(String),
    /// A file in the data directory could not be created or opened.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    /// Any other SQLite error.
    #[error("sqlite: {0}")]
    Sqlite(String),
    /// The writer thread is gone (the store is shutting down).
    #[error("the store is closed")]
    Closed,
    /// The WAL could not be flushed to disk. The write is not acknowledged, and since what the
    /// kernel kept is then unknown, no later write is either until the store is opened again.
    #[error("the outbox could not be made durable: {0}")]
    SyncFailed(String),
    /// [`Store::enqueue_within`] would have crossed the queue limit; nothing was written.
    #[error(
        "the outbox is full ({rows} rows, {bytes} bytes pending; limits {} rows, {} bytes)",
        limit.max_rows,
        limit.max_bytes
    )]
    QueueFull {
        /// Pending rows when the write was refused.
        rows: u64,
        /// Pending payload bytes when the write was refused.
        bytes: u64,
        /// The limit the write would have crossed.
        limit: QueueLimit,
    },
    /// A change was asked of a store opened with [`Store::open_read_only`].
    #[error("the store was opened read-only")]
    ReadOnly,
    /// [`Store::open_read_only`] found a database that gradata has not migrated yet.
    #[error("{0}: the database has not been migrated by gradata yet")]
    NotMigrated(PathBuf),
    /// The database file is not an SQLite database, or a damaged one. gradata changes nothing in
    /// it; only an operator can decide what becomes of the rows it may still hold.
    #[error(
        "{}not a readable SQLite database ({detail}); move it aside to start again with an empty outbox (sqlite3's .recover may salvage its rows)",
        in_file(.path)
    )]
    Corrupt {
        /// The database file, when the error was met while opening it.
        path: Option<PathBuf>,
        /// SQLite's words.
        detail: String,
    },
}

/// `"<path>: "`, or nothing when the path is not known.
fn in_file(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|path| format!("{}: ", path.display()))
        .unwrap_or_default()
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Error {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Error::DiskFull(err.to_string()),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Error::Busy(err.to_string())
            }
            Some(rusqlite::ErrorCode::ReadOnly) => Error::Sqlite(format!(
                "{err} (this user cannot write the file, or the directory that holds it, where \
                 SQLite keeps the -wal and -shm files)"
            )),
            Some(rusqlite::ErrorCode::CannotOpen) => Error::Sqlite(format!(
                "{err} (check that this user may read and write the file and the directory \
                 that holds it)"
            )),
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                Error::Corrupt {
                    path: None,
                    detail: err.to_string(),
                }
            }
            _ => Error::Sqlite(err.to_string()),
        }
    }
}

impl Error {
    /// Names the database file in an error met while opening it, and says what to do where that
    /// is not obvious.
    fn in_database(self, options: &Options) -> Error {
        let path = options.database_path();
        match self {
            Error::Corrupt { path: None, detail } => Error::Corrupt {
                path: Some(path),
                detail,
            },
            Error::Busy(detail) => Error::Busy(format!(
                "{}: {detail}; another process kept it locked (a gradata drain, or another \
                 program writing to it): try again once it is done",
                path.display()
            )),
            // SQLite names the file itself when it cannot open it.
            Error::Sqlite(detail) if detail.contains(&*path.to_string_lossy()) => {
                Error::Sqlite(detail)
            }
            Error::Sqlite(detail) => Error::Sqlite(format!("{}: {detail}", path.display())),
            other => other,
        }
    }

    /// A copy for each caller of a failed group commit (the error itself is not `Clone` because
    /// of the I/O variant, which only opening produces).
    fn for_each_caller(&self) -> Error {
        match self {
            Error::NotFound(path) => Error::NotFound(path.clone()),
            Error::NoQueueTable(path) => Error::NoQueueTable(path.clone()),
            Error::Locked(path) => Error::Locked(path.clone()),
            Error::DiskFull(message) => Error::DiskFull(message.clone()),
            Error::Busy(message) => Error::Busy(message.clone()),
            Error::Io(path, err) => Error::Sqlite(format!("{}: {err}", path.display())),
            Error::Sqlite(message) => Error::Sqlite(message.clone()),
            Error::Closed => Error::Closed,
            Error::SyncFailed(message) => Error::SyncFailed(message.clone()),
            Error::QueueFull { rows, bytes, limit } => Error::QueueFull {
                rows: *rows,
                bytes: *bytes,
                limit: *limit,
            },
            Error::ReadOnly => Error::ReadOnly,
            Error::NotMigrated(path) => Error::NotMigrated(path.clone()),
            Error::Corrupt { path, detail } => Error::Corrupt {
                path: path.clone(),
                detail: detail.clone(),
            },
        }
    }
}

impl From<LockError> for Error {
    fn from(err: LockError) -> Error {
        match err {
            LockError::Held(path) => Error::Locked(path),
            LockError::Io(path, err) => Error::Io(path, err),
        }
    }
}

/// Handle to the outbox. Clones share one writer thread and one read connection.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// Read-only queries. A std mutex: held only for one short query, never across `.await`.
    /// Declared (so dropped) before the writer: the last connection to close checkpoints the WAL
    /// and removes it, which only a read-write connection can do.
    reader: Mutex<Connection>,
    /// Sends commands to the writer thread. Dropped (with `Shared`) to tell the thread to finish.
    /// `None` for a read-only store.
    writer: Option<Writer>,
    /// Pending rows and bytes as of the last commit (updated by the writer thread).
    pending: Arc<PendingGauge>,
    database_path: PathBuf,
    /// Held for the life of the store; released after the writer has closed its connection.
    _instance_lock: Option<LockFile>,
    _leases_lock: Option<LockFile>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.shared.database_path)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the outbox, takes its locks and migrates it. Blocking.
    pub fn open(options: &Options) -> Result<Store, Error> {
        Store::open_read_write(options).map_err(|err| err.in_database(options))
    }

    fn open_read_write(options: &Options) -> Result<Store, Error> {
        let database_path = options.database_path();
        check_data_dir(&options.data_dir)?;
        match options.create {
            // Private, whatever the umask: the events are code corrections, file paths and
            // session ids. Only what is created here gets this mode; an existing directory (a
            // brain directory, systemd's StateDirectory) keeps its own.
            Create::IfMissing => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(PRIVATE_DIR_MODE)
                .create(&options.data_dir)
                .map_err(|err| Error::Io(options.data_dir.clone(), err))?,
            Create::Never if !database_exists(&database_path)? => {
                return Err(Error::NotFound(database_path));
            }
            Create::Never => {}
        }
        // Invariant: the instance lock is taken before anything else touches the database, so a
        // second service fails before it has done any work (the original's bug 10.19).
        let instance_lock = match options.instance_lock {
            InstanceLock::Exclusive => Some(LockFile::instance(&options.data_dir)?),
            InstanceLock::None => None,
        };

        if options.create == Create::IfMissing {
            create_private_database(&database_path)?;
        }
        let mut conn = open_connection(&database_path, options, OpenMode::ReadWrite)?;
        let create_table = options.create == Create::IfMissing;
        // Invariant: with `Create::Never`, a database without the queue is not touched at all,
        // not even switched to WAL.
        if !create_table && !schema::has_queue_table(&conn)? {
            return Err(Error::NoQueueTable(database_path));
        }
        // journal_mode=WAL is persistent in the file; asking again is cheap and repairs a database
        // created in rollback mode by another tool.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        schema::migrate(&mut conn, create_table)?;

        // When no other process has the store open, every lease left in the table belongs to a
        // process that died mid-drain. Releasing them makes those rows claimable at once.
        let (leases_lock, _released) = LockFile::leases(&options.data_dir, || {
            conn.execute(
                "UPDATE sync_queue SET lease_until = NULL WHERE lease_until IS NOT NULL",
                [],
            )
            .map(drop)
            .map_err(Error::from)
        })?;
        let reader = open_connection(&database_path, options, OpenMode::ReadOnly)?;
        let pending = Arc::new(PendingGauge::default());
        let (rows, bytes) = read::pending(&reader)?;
        pending.set(rows, bytes);
        let checkpoint_conn = open_connection(&database_path, options, OpenMode::ReadWrite)?;
        let writer = Writer::spawn(
            conn,
            checkpoint_conn,
            &database_path,
            options.synchronous,
            pending.clone(),
        )
        .map_err(|err| Error::Io(database_path.clone(), err))?;
        Ok(Store {
            shared: Arc::new(Shared {
                writer: Some(writer),
                reader: Mutex::new(reader),
                pending,
                database_path,
                _instance_lock: instance_lock,
                _leases_lock: Some(leases_lock),
            }),
        })
    }

    /// Opens an existing, migrated store for reading only: no lock, no writer thread, no write of
    /// any kind, so it never disturbs a running service. Write methods return [`Error::ReadOnly`].
    pub fn open_read_only(options: &Options) -> Result<Store, Error> {
        Store::open_for_reading(options).map_err(|err| err.in_database(options))
    }

    fn open_for_reading(options: &Options) -> Result<Store, Error> {
        let database_path = options.database_path();
        check_data_dir(&options.data_dir)?;
        if !database_exists(&database_path)? {
            return Err(Error::NotFound(database_path));
        }
        let reader = open_connection(&database_path, options, OpenMode::ReadOnly)?;
        if !schema::has_queue_table(&reader)? {
            return Err(Error::NoQueueTable(database_path));
        }
        if !schema::is_migrated(&reader)? {
            return Err(Error::NotMigrated(database_path));
        }
        Ok(Store {
            shared: Arc::new(Shared {
                writer: None,
                pending: Arc::new(PendingGauge::default()),
                reader: Mutex::new(reader),
                database_path,
                _instance_lock: None,
                _leases_lock: None,
            }),
        })
    }

    /// Counts the queue of a database gradata has not migrated yet (the original daemon's, which
    /// [`Store::open_read_only`] refuses with [`Error::NotMigrated`]) from its original columns,
    /// on a read-only connection: nothing is written, the database is not even switched to WAL.
    /// Every row not synced is pending; there are no dead rows or leases before the migration.
    pub fn unmigrated_stats(options: &Options) -> Result<Stats, Error> {
        let database_path = options.database_path();
        let count = || {
            check_data_dir(&options.data_dir)?;
            if !database_exists(&database_path)? {
                return Err(Error::NotFound(database_path.clone()));
            }
            let reader = open_connection(&database_path, options, OpenMode::ReadOnly)?;
            if !schema::has_queue_table(&reader)? {
                return Err(Error::NoQueueTable(database_path.clone()));
            }
            read::original_stats(&reader)
        };
        count().map_err(|err| err.in_database(options))
    }

    /// Path of the database file.
    pub fn database_path(&self) -> &Path {
        &self.shared.database_path
    }

    /// Commits events; idempotent on `event_id`. All events of one call commit together or not at
    /// all, and the future resolves only after the commit is durable.
    pub async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<EnqueueOutcome>, Error> {
        self.writer()?
            .call(|reply| Command::Enqueue {
                events,
                limit: None,
                now: SystemTime::now(),
                reply,
            })
            .await
    }

    /// [`Store::enqueue`], unless the events would take the pending rows or bytes past `limit`:
    /// then nothing is written and the answer is [`Error::QueueFull`]. The check runs in the
    /// writer's transaction, against every write committed or grouped before it.
    pub async fn enqueue_within(
        &self,
        events: Vec<NewEvent>,
        limit: QueueLimit,
    ) -> Result<Vec<EnqueueOutcome>, Error> {
        self.writer()?
            .call(|reply| Command::Enqueue {
                events,
                limit: Some(limit),
                now: SystemTime::now(),
                reply,
            })
            .await
    }

    /// Leases up to `limit` pending rows for `lease` and returns them in id order. Rows leased by
    /// another drainer (thread or process) are skipped, so no row is handed out twice at once.
    pub async fn claim_batch(
        &self,
        limit: usize,
        from: ClaimFrom,
        lease: Duration,
    ) -> Result<Vec<ClaimedRow>, Error> {
        let now = SystemTime::now();
        self.claim_batch_until(limit, from, types::lease_until(now, lease), Duration::MAX)
            .await
    }

    /// Like [`Store::claim_batch`], with the lease's end given: the drain leases each batch until
    /// its own deadline plus the lease, so that no row's lease runs out while the drain holds it.
    /// `lease_until` is stored exactly as given (it should lie in the future), and
    /// [`Store::settle_leased`] takes it back as the token that proves the rows are still this
    /// drainer's.
    ///
    /// `longest_wait` is the longest backoff or `Retry-After` a settlement can give: a due claim
    /// ([`ClaimFrom::Due`]) also takes rows timed further off than that from now, which only a
    /// wall clock stepped back since they were settled can produce, so that such a step does not
    /// hold them back for as long as it was.
    pub async fn claim_batch_until(
        &self,
        limit: usize,
        from: ClaimFrom,
        lease_until: SystemTime,
        longest_wait: Duration,
    ) -> Result<Vec<ClaimedRow>, Error> {
        let now = SystemTime::now();
        self.writer()?
            .call(|reply| Command::Claim {
                limit,
                from,
                lease_until,
                longest_wait,
                now,
                reply,
            })
            .await
    }

    /// Records the outcome of delivery attempts, whoever holds the rows; each settlement also
    /// releases the row's lease. For tools and tests; a drain settles with
    /// [`Store::settle_leased`].
    pub async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), Error> {
        self.settle_fenced(settlements, None).await
    }

    /// Records the outcome of delivery attempts on rows claimed with `lease_until` (the value
    /// given to [`Store::claim_batch_until`]). `Retry`, `Dead` and `Release` change a row only
    /// while it still holds that lease: a drainer whose lease ran out (it stalled, or the clock
    /// jumped) must not clear another drainer's live lease or overwrite what it recorded.
    /// `Synced` is not fenced: a delivery is a fact, whoever learned it.
    pub async fn settle_leased(
        &self,
        settlements: Vec<Settlement>,
        lease_until: SystemTime,
    ) -> Result<(), Error> {
        self.settle_fenced(settlements, Some(lease_until)).await
    }

    async fn settle_fenced(
        &self,
        settlements: Vec<Settlement>,
        lease_until: Option<SystemTime>,
    ) -> Result<(), Error> {
        self.writer()?
            .call(|reply| Command::Settle {
                settlements,
                lease_until,
                now: SystemTime::now(),
                reply,
            })
            .await
    }

    /// Makes dead rows (or the given rows) pending and due now; returns how many changed.
    pub async fn retry(&self, selector: RetrySelector) -> Result<usize, Error> {
        self.writer()?
            .call(|reply| Command::Retry { selector, reply })
            .await
    }

    /// Stores a small status value (e.g. the sync state) for `gradata status` to read.
    pub async fn set_meta(&self, key: &'static str, value: String) -> Result<(), Error> {
        self.writer()?
            .call(|reply| Command::SetMeta {
                key,
                value,
                now: SystemTime::now(),
                reply,
            })
            .await
    }

    /// Write transactions committed by this handle's writer since it opened (0 when read-only).
    /// Group commit shows here as fewer commits than write calls.
    pub fn commits(&self) -> u64 {
        self.shared.writer.as_ref().map_or(0, Writer::commits)
    }

    /// WAL checkpoints completed by this handle's checkpointer thread since it opened (0 when
    /// read-only).
    pub fn checkpoints(&self) -> u64 {
        self.shared.writer.as_ref().map_or(0, Writer::checkpoints)
    }

    /// Resolves, with the reason, once this store can no longer make writes durable: an fsync of
    /// the WAL failed, so what the kernel kept of it is unknown and every later write fails with
    /// [`Error::SyncFailed`], or the writer thread died on a bug. Only opening the store again
    /// recovers, SQLite then reading the WAL as it is on disk; the service stops for that. Never
    /// resolves while fsyncs succeed and the writer runs, nor for a read-only store. Holds no
    /// reference to the store.
    pub fn failed(&self) -> impl Future<Output = String> + Send + 'static {
        let receiver = self.shared.writer.as_ref().map(Writer::durability_lost);
        async move {
            if let Some(mut receiver) = receiver {
                let reason = receiver
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|reason| reason.clone());
                if let Some(reason) = reason {
                    return reason;
                }
            }
            // The writer is gone, or it never fsyncs itself: nothing will ever be announced.
            std::future::pending().await
        }
    }

    /// Pending rows and payload bytes, as this process's writes left them: a cheap gauge, exact
    /// for this process, corrected for other writers by [`Store::refresh_pending`] and before a
    /// write is refused for a queue limit.
    pub fn pending(&self) -> (u64, u64) {
        self.shared.pending.get()
    }

    /// Counts the pending rows and bytes again, in the writer's transaction, and resets the
    /// pending gauge from the count; returns it. A full count of the pending rows.
    pub async fn recount_pending(&self) -> Result<(u64, u64), Error> {
        self.writer()?
            .call(|reply| Command::Recount {
                only_if_changed: false,
                reply,
            })
            .await
            // Always `Some` when not asked to skip.
            .map(Option::unwrap_or_default)
    }

    /// [`Store::recount_pending`] if another process (`gradata drain`, `gradata queue retry`, an
    /// SDK sharing the database) has committed since the last count, which SQLite's
    /// `data_version` tells at no cost; `None` when nothing needed counting. The service calls it
    /// periodically, so the gauge the queue limits use follows other writers.
    pub async fn refresh_pending(&self) -> Result<Option<(u64, u64)>, Error> {
        self.writer()?
            .call(|reply| Command::Recount {
                only_if_changed: true,
                reply,
            })
            .await
    }

    /// Counts the pending rows now, including those written by other processes. Blocking, but
    /// reads only an index: much cheaper than [`Store::stats`] on a table with many synced rows.
    pub fn count_pending(&self) -> Result<u64, Error> {
        read::pending_rows(&self.reader())
    }

    /// Counts by state and the oldest pending row's age. Blocking, but short.
    pub fn stats(&self) -> Result<Stats, Error> {
        read::stats(&self.reader())
    }

    /// Lists rows in one state, oldest first. Blocking, but short.
    pub fn list(&self, state: RowState, limit: usize) -> Result<Vec<QueueEntry>, Error> {
        read::list(&self.reader(), state, limit)
    }

    /// Reads a value stored with [`Store::set_meta`].
    pub fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        read::meta(&self.reader(), key)
    }

    /// When the earliest pending row that waits on a backoff timer becomes due.
    pub fn next_due_at(&self) -> Result<Option<SystemTime>, Error> {
        read::next_due_at(&self.reader())
    }

    fn writer(&self) -> Result<&Writer, Error> {
        self.shared.writer.as_ref().ok_or(Error::ReadOnly)
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A poisoned lock only means another reader panicked mid-query; the connection is fine.
        self.shared
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Mode of a data directory the store creates.
const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of the files the store creates: the database (whose `-wal` and `-shm` files SQLite gives
/// the database's mode), the lock files and `brain_id`.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates an empty database file, readable by its owner only, unless there is one. SQLite would
/// create it 0644 less the umask; an empty file is an empty database to it.
fn create_private_database(path: &Path) -> Result<(), Error> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
    {
        Ok(file) => lock::give_to_directory_owner(path, &file)
            .map_err(|err| Error::Io(path.to_path_buf(), err)),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(Error::Io(path.to_path_buf(), err)),
    }
}

/// Fails, naming it, if the data directory is something other than a directory (or cannot be
/// looked at); a missing one is left to the caller (created, or reported as no database).
/// Otherwise a regular file there would fail later as "File exists" or "Not a directory" on a
/// path the user did not name.
fn check_data_dir(data_dir: &Path) -> Result<(), Error> {
    match std::fs::metadata(data_dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::Io(
            data_dir.to_path_buf(),
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory; the data directory (--data-dir, GRADATA_DATA_DIR) must be one",
            ),
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(Error::Io(data_dir.to_path_buf(), err)),
    }
}

/// Whether the database file exists. Unlike `Path::exists`, which says "no" whatever went wrong,
/// only "not found" means no: a data directory this user may not read (the service's, without
/// `sudo`) is an error that says so, not an empty queue.
fn database_exists(path: &Path) -> Result<bool, Error> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::Io(path.to_path_buf(), err)),
    }
}

#[derive(Clone, Copy)]
enum OpenMode {
    ReadWrite,
    ReadOnly,
}

fn open_connection(path: &Path, options: &Options, mode: OpenMode) -> Result<Connection, Error> {
    let flags = match (mode, options.create) {
        (OpenMode::ReadOnly, _) => OpenFlags::SQLITE_OPEN_READ_ONLY,
        (OpenMode::ReadWrite, Create::IfMissing) => {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        }
        (OpenMode::ReadWrite, Create::Never) => OpenFlags::SQLITE_OPEN_READ_WRITE,
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(options.busy_timeout)?;
    let synchronous = match options.synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    // Statement journals (savepoints of a group commit) stay in memory rather than temp files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
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
