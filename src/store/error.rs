//! Why a store operation failed: [`Error`], with the database file named where opening met it.
//!
//! It knows which SQLite result codes callers branch on (a full disk, a busy or corrupt database)
//! and nothing of what the callers do about them.

use std::path::PathBuf;

use super::Options;
use super::lock::LockError;
use super::types::QueueLimit;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file does not exist and [`Create::Never`](super::Create::Never) was asked for.
    #[error("{0}: no such database")]
    NotFound(PathBuf),
    /// The database has no `sync_queue` table and [`Create::Never`](super::Create::Never) was asked for.
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
    /// A read of the outbox did not finish: its task panicked (a bug) or was cancelled because the
    /// runtime is shutting down.
    #[error("a read of the outbox did not finish")]
    ReadTask(#[source] std::sync::Arc<tokio::task::JoinError>),
    /// The writer thread is gone (the store is shutting down).
    #[error("the store is closed")]
    Closed,
    /// The WAL could not be flushed to disk. The write is not acknowledged, and since what the
    /// kernel kept is then unknown, no later write is either until the store is opened again.
    #[error("the outbox could not be made durable: {0}")]
    SyncFailed(String),
    /// [`Store::enqueue_within`](super::Store::enqueue_within) would have crossed the queue limit; nothing was written.
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
    /// A change was asked of a store opened with [`Store::open_read_only`](super::Store::open_read_only).
    #[error("the store was opened read-only")]
    ReadOnly,
    /// [`Store::open_read_only`](super::Store::open_read_only) found a database that gradata has not migrated yet.
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
    pub(super) fn in_database(self, options: &Options) -> Error {
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
    pub(super) fn for_each_caller(&self) -> Error {
        match self {
            Error::NotFound(path) => Error::NotFound(path.clone()),
            Error::NoQueueTable(path) => Error::NoQueueTable(path.clone()),
            Error::Locked(path) => Error::Locked(path.clone()),
            Error::DiskFull(message) => Error::DiskFull(message.clone()),
            Error::Busy(message) => Error::Busy(message.clone()),
            Error::Io(path, err) => Error::Sqlite(format!("{}: {err}", path.display())),
            Error::Sqlite(message) => Error::Sqlite(message.clone()),
            Error::Closed => Error::Closed,
            Error::ReadTask(err) => Error::ReadTask(err.clone()),
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
