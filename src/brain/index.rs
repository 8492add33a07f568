//! Read-only connections to the brain's database for full-text searches, a few at a time.
//!
//! A search of the index the SDK fills ranks every row that matches any word of the query, which
//! takes milliseconds on a brain with thousands of corrections; on the store's one read
//! connection, searches would wait for each other (and delay `/health`). Searches here run on
//! the blocking pool, each on a connection of its own, opened read-only (a search can never
//! create or change a table) and kept for the next one.
//!
//! Knows nothing of what is searched: callers pass the query.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How long a search waits for a writer's lock before it fails (WAL readers rarely wait).
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a search could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be opened for reading.
    #[error("{}: cannot open the brain's database for searching", path.display())]
    Open {
        /// The database.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The blocking task running the search did not finish (the runtime is shutting down).
    #[error("the search did not finish")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// Read-only connections to one database; at most `keep` idle ones are kept.
#[derive(Debug)]
pub struct IndexReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl IndexReaders {
    /// Connections to the database at `path`, keeping up to `keep` between searches.
    pub fn new(path: PathBuf, keep: usize) -> IndexReaders {
        IndexReaders {
            path,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
        }
    }

    /// Runs `search` on a connection of its own, on the blocking pool.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        search: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Result<T, Error> {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let connection = readers.take()?;
            let found = search(&connection);
            readers.give_back(connection);
            Ok(found)
        })
        .await
        .map_err(Error::Interrupted)?
    }

    fn take(&self) -> Result<Connection, Error> {
        if let Some(connection) = self.lock().pop() {
            return Ok(connection);
        }
        let open = || -> rusqlite::Result<Connection> {
            let connection = Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            connection.busy_timeout(BUSY_TIMEOUT)?;
            Ok(connection)
        };
        open().map_err(|source| Error::Open {
            path: self.path.clone(),
            source,
        })
    }

    fn give_back(&self, connection: Connection) {
        let mut idle = self.lock();
        if idle.len() < self.keep {
            idle.push(connection);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn searches_run_read_only_and_reuse_their_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (7);")
            .unwrap();
        let readers = Arc::new(IndexReaders::new(path, 2));
        let x: i64 = readers
            .run(|c| {
                c.query_row("SELECT x FROM t", [], |row| row.get(0))
                    .unwrap()
            })
            .await
            .unwrap();
        assert_eq!(x, 7);
        let write = readers
            .run(|c| c.execute("CREATE TABLE u (y)", []).is_err())
            .await
            .unwrap();
        assert!(write, "a search connection could create a table");
        assert_eq!(readers.lock().len(), 1, "the connection was not kept");
    }

    #[tokio::test]
    async fn a_missing_database_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Arc::new(IndexReaders::new(dir.path().join("none.db"), 2));
        let err = readers.run(|_| ()).await.unwrap_err();
        assert!(err.to_string().contains("none.db"), "{err}");
    }
}
