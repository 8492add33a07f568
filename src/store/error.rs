//! Why a store operation failed: [`Error`], with the database file named where opening met it.
//!
//! It knows which SQLite result codes callers branch on (a full disk, a busy or corrupt database)
//! and nothing of what the callers do about them.
//!
//! Every error that has a cause keeps it as its [`source`](std::error::Error::source), typed (the
//! SQLite error, the I/O error, the task's join error), and its own message does not repeat it:
//! whoever reports an error prints the chain of causes, each once (`gradata: <path>: disk full:
//! database or disk is full`). The causes are shared (`Arc`) so that every caller of a
//! failed group commit gets the same error. An SQLite error that is only that ([`Error::Sqlite`])
//! is SQLite's own, transparently: its message is SQLite's words, which callers that show only the
//! message (a drain's `last_error`) then still show.

use std::path::PathBuf;
use std::sync::Arc;

use super::Options;
use super::lock::LockError;
use super::types::QueueLimit;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file does not exist and [`Create::Never`](super::Create::Never) was asked
    /// for.
    #[error("{0}: no such database")]
    NotFound(PathBuf),
    /// The database has no `sync_queue` table and [`Create::Never`](super::Create::Never) was
    /// asked for.
    #[error("{0}: the database has no sync_queue table")]
    NoQueueTable(PathBuf),
    /// Another `gradata serve` holds the data directory.
    #[error("{0}: another gradata service holds this data directory (stop it first)")]
    Locked(PathBuf),
    /// Another daemon (the Python Gradata daemon) holds the brain's instance lock.
    #[error(
        "{0}: another Gradata daemon serves this brain (the Python SDK's `gradata daemon`?); stop it first"
    )]
    BrainLocked(PathBuf),
    /// The disk is full; nothing was written.
    #[error("disk full")]
    DiskFull(#[source] Arc<SqliteError>),
    /// Another process kept the database locked past the busy timeout.
    #[error(
        "the database is locked: another process kept it locked (a gradata drain, or another program writing to it); try again once it is done"
    )]
    Busy(#[source] Arc<SqliteError>),
    /// A file in the data directory could not be created or opened.
    #[error("{0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// SQLite could not open or write the file: usually its permissions or its directory's, which
    /// `hint` says what to check of.
    #[error("{hint}")]
    Access {
        /// What to check.
        hint: &'static str,
        /// SQLite's error.
        #[source]
        source: Arc<SqliteError>,
    },
    /// Any other SQLite error: it is SQLite's own (its message, and its cause if any).
    #[error(transparent)]
    Sqlite(Arc<SqliteError>),
    /// A read of the outbox did not finish: its task panicked (a bug) or was cancelled because the
    /// runtime is shutting down.
    #[error("a read of the outbox did not finish")]
    ReadTask(#[source] Arc<tokio::task::JoinError>),
    /// The writer thread is gone (the store is shutting down).
    #[error("the store is closed")]
    Closed,
    /// The WAL could not be flushed to disk. The write is not acknowledged, and since what the
    /// kernel kept is then unknown, no later write is either until the store is opened again.
    #[error("the outbox could not be made durable: {0}")]
    SyncFailed(String),
    /// [`Store::enqueue_within`](super::Store::enqueue_within) would have crossed the queue
    /// limit; nothing was written.
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
    /// A change was asked of a store opened with
    /// [`Store::open_read_only`](super::Store::open_read_only).
    #[error("the store was opened read-only")]
    ReadOnly,
    /// [`Store::open_read_only`](super::Store::open_read_only) found a database that gradata has
    /// not migrated yet.
    #[error("{0}: the database has not been migrated by gradata yet")]
    NotMigrated(PathBuf),
    /// The database file is not an SQLite database, or a damaged one. gradata changes nothing in
    /// it; only an operator can decide what becomes of the rows it may still hold.
    #[error(
        "not a readable SQLite database; move it aside to start again with an empty outbox (sqlite3's .recover may salvage its rows)"
    )]
    Corrupt(#[source] Arc<SqliteError>),
    /// An error met while opening the database file, which it names.
    #[error("{}", path.display())]
    InDatabase {
        /// The database file.
        path: PathBuf,
        /// What went wrong with it.
        #[source]
        source: Box<Error>,
    },
}

/// SQLite's error, as the cause of a store [`Error`]: its message is SQLite's words for what went
/// wrong. rusqlite's own cause (the bare result code, "Error code 8: Attempt to write a readonly
/// database") only says the same again, so it is not chained.
#[derive(Debug)]
pub struct SqliteError(rusqlite::Error);

impl SqliteError {
    /// The error as rusqlite reported it.
    pub fn inner(&self) -> &rusqlite::Error {
        &self.0
    }
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SqliteError {}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Error {
        let code = err.sqlite_error_code();
        let source = Arc::new(SqliteError(err));
        match code {
            Some(rusqlite::ErrorCode::DiskFull) => Error::DiskFull(source),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Error::Busy(source)
            }
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                Error::Corrupt(source)
            }
            Some(rusqlite::ErrorCode::ReadOnly) => Error::Access {
                hint: "this user cannot write the file, or the directory that holds it, where \
                       SQLite keeps the -wal and -shm files",
                source,
            },
            Some(rusqlite::ErrorCode::CannotOpen) => Error::Access {
                hint: "check that this user may read and write the file and the directory that \
                       holds it",
                source,
            },
            _ => Error::Sqlite(source),
        }
    }
}

impl Error {
    /// Names the database file in an error met while opening it. Errors that already name a path
    /// are left as they are, and so is an SQLite error whose own words name the file.
    pub(super) fn in_database(self, options: &Options) -> Error {
        let path = options.database_path();
        match self {
            Error::Sqlite(ref source) | Error::Access { ref source, .. }
                if source.to_string().contains(&*path.to_string_lossy()) =>
            {
                self
            }
            Error::DiskFull(_)
            | Error::Busy(_)
            | Error::Access { .. }
            | Error::Sqlite(_)
            | Error::Corrupt(_)
            | Error::ReadTask(_) => Error::InDatabase {
                path,
                source: Box::new(self),
            },
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
            Error::BrainLocked(path) => Error::BrainLocked(path.clone()),
            Error::DiskFull(source) => Error::DiskFull(source.clone()),
            Error::Busy(source) => Error::Busy(source.clone()),
            Error::Io(path, err) => Error::Io(
                path.clone(),
                std::io::Error::new(err.kind(), err.to_string()),
            ),
            Error::Access { hint, source } => Error::Access {
                hint,
                source: source.clone(),
            },
            Error::Sqlite(source) => Error::Sqlite(source.clone()),
            Error::ReadTask(err) => Error::ReadTask(err.clone()),
            Error::Closed => Error::Closed,
            Error::SyncFailed(message) => Error::SyncFailed(message.clone()),
            Error::QueueFull { rows, bytes, limit } => Error::QueueFull {
                rows: *rows,
                bytes: *bytes,
                limit: *limit,
            },
            Error::ReadOnly => Error::ReadOnly,
            Error::NotMigrated(path) => Error::NotMigrated(path.clone()),
            Error::Corrupt(source) => Error::Corrupt(source.clone()),
            Error::InDatabase { path, source } => Error::InDatabase {
                path: path.clone(),
                source: Box::new(source.for_each_caller()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::Causes;

    fn sqlite(code: std::ffi::c_int, message: &str) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(message.to_owned()))
    }

    /// Each cause is kept as the source, typed, and said once in the chain.
    #[test]
    fn errors_keep_their_cause_and_say_it_once() {
        let options = Options::new("/data");
        for (err, expected) in [
            (
                Error::from(sqlite(
                    rusqlite::ffi::SQLITE_READONLY,
                    "attempt to write a readonly database",
                ))
                .in_database(&options),
                "/data/system.db: this user cannot write the file, or the directory that holds \
                 it, where SQLite keeps the -wal and -shm files: attempt to write a readonly \
                 database",
            ),
            (
                Error::from(sqlite(
                    rusqlite::ffi::SQLITE_FULL,
                    "database or disk is full",
                )),
                "disk full: database or disk is full",
            ),
            (
                Error::from(sqlite(
                    rusqlite::ffi::SQLITE_ERROR,
                    "no such table: sync_queue",
                )),
                "no such table: sync_queue",
            ),
            (
                Error::Io(
                    PathBuf::from("/data"),
                    std::io::Error::from(std::io::ErrorKind::PermissionDenied),
                ),
                "/data: permission denied",
            ),
        ] {
            let copy = err.for_each_caller();
            for err in [err, copy] {
                assert_eq!(Causes(&err).to_string(), expected);
            }
        }
        // The cause is kept typed, as the source, wherever the message is the store's own.
        for (code, message) in [
            (rusqlite::ffi::SQLITE_NOTADB, "file is not a database"),
            (rusqlite::ffi::SQLITE_BUSY, "database is locked"),
            (
                rusqlite::ffi::SQLITE_READONLY,
                "attempt to write a readonly database",
            ),
        ] {
            let err = Error::from(sqlite(code, message));
            let source = std::error::Error::source(&err).unwrap();
            assert!(source.is::<Arc<SqliteError>>(), "{source:?}");
            assert_eq!(source.to_string(), message);
        }
    }
}
