//! Opening the outbox: the one place where the sequence of [`Store::open`] reads top to bottom
//! (check the directory, take the instance lock, create or find the database, switch to WAL,
//! migrate, release stale leases, start the reader, the writer and the checkpointer), and the
//! read-only variants the CLI uses, which never write.
//!
//! Invariant: with [`Create::Never`] nothing is created or written in the data directory unless
//! the database and its queue table already exist.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use super::handle::{InstanceLocks, Shared};
use super::lock::{self, LockError, LockFile};
use super::writer::{PendingGauge, Writer};
use super::{Create, Error, InstanceLock, Options, Stats, Store, Synchronous, read, schema};
use crate::clock::Clock;

impl Store {
    /// Opens (or creates) the outbox, takes its locks and migrates it. Blocking.
    pub fn open(options: &Options) -> Result<Store, Error> {
        Store::open_with_clock(options, Clock::system())
    }

    /// [`Store::open`], reading the times it stores from `clock` (a test's [`ManualClock`]).
    ///
    /// [`ManualClock`]: crate::clock::ManualClock
    pub fn open_with_clock(options: &Options, clock: Clock) -> Result<Store, Error> {
        Store::open_read_write(options, clock).map_err(|err| err.in_database(options))
    }

    fn open_read_write(options: &Options, clock: Clock) -> Result<Store, Error> {
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
            InstanceLock::Exclusive => Some(InstanceLocks {
                _own: LockFile::instance(&options.data_dir)?,
                _brain: LockFile::brain(&options.data_dir).map_err(|err| match err {
                    LockError::Held(path) => Error::BrainLocked(path),
                    other => other.into(),
                })?,
            }),
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
        // process that died mid-drain. Releasing them makes those rows claimable at once. Only
        // pending rows are claimable, so only theirs are released: they are read from
        // `idx_sync_queue_leased` alone, and opening does not walk the table.
        let (leases_lock, _released) = LockFile::leases(&options.data_dir, || {
            conn.execute(
                "UPDATE sync_queue INDEXED BY idx_sync_queue_leased SET lease_until = NULL
                  WHERE lease_until IS NOT NULL AND synced_at IS NULL AND dead_at IS NULL",
                [],
            )
            .map(drop)
            .map_err(Error::from)
        })?;
        let reader = open_connection(&database_path, options, OpenMode::ReadOnly)?;
        // The gauge starts from the counts the triggers keep: opening never counts the rows.
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
        Ok(Store::new(Shared {
            writer: Some(writer),
            reader: Mutex::new(reader),
            pending,
            database_path,
            clock,
            _instance_lock: instance_lock,
            _leases_lock: Some(leases_lock),
        }))
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
        Ok(Store::new(Shared {
            writer: None,
            pending: Arc::new(PendingGauge::default()),
            reader: Mutex::new(reader),
            database_path,
            clock: Clock::system(),
            _instance_lock: None,
            _leases_lock: None,
        }))
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
