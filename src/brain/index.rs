//! Read-only connections to the brain's database for full-text searches, a few at a time.
//!
//! A search of the index the SDK fills ranks every row that matches any word of the query, which
//! takes milliseconds on a brain with thousands of corrections; on the store's one read
//! connection, searches would wait for each other (and delay `/health`). Searches here run on
//! the blocking pool, each on a connection of its own, opened read-only (a search can never
//! create or change a table) and kept for the next one. At most as many searches run at once as
//! connections are kept: on a few cores more would only take turns, and each extra one would
//! open (and prepare statements on) a connection of its own.
//!
//! Knows nothing of what is searched: callers pass the query.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

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
    /// The searches were closed (the runtime is shutting down).
    #[error("searches are closed")]
    Closed(#[source] tokio::sync::AcquireError),
}

/// Read-only connections to one database; at most `keep` searches run at once, and as many idle
/// connections are kept.
#[derive(Debug)]
pub struct IndexReaders {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
    running: Arc<Semaphore>,
}

impl IndexReaders {
    /// Connections to the database at `path`, keeping up to `keep` between searches.
    pub fn new(path: PathBuf, keep: usize) -> IndexReaders {
        IndexReaders {
            path,
            idle: Mutex::new(Vec::new()),
            keep: keep.max(1),
            running: Arc::new(Semaphore::new(keep.max(1))),
        }
    }

    /// Runs `search` on a connection of its own, on the blocking pool, once fewer than `keep`
    /// searches are running.
    pub async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        search: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Result<T, Error> {
        // The turn goes with the task: a caller that stops waiting does not free it early.
        let turn = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(Error::Closed)?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_keep_searches_run_at_once() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
        const SEARCHES: usize = 8;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.db");
        Connection::open(&path).unwrap();
        let readers = Arc::new(IndexReaders::new(path, 2));
        // Idle blocking threads, so that a search handed to the pool starts at once.
        let barrier = Arc::new(std::sync::Barrier::new(SEARCHES));
        let warm: Vec<_> = (0..SEARCHES)
            .map(|_| {
                let barrier = barrier.clone();
                tokio::task::spawn_blocking(move || {
                    barrier.wait();
                })
            })
            .collect();
        for thread in warm {
            thread.await.unwrap();
        }
        let submitted = Arc::new(AtomicUsize::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(AtomicBool::new(false));
        let mut searches = Vec::new();
        for _ in 0..SEARCHES {
            let (readers, gate) = (readers.clone(), gate.clone());
            let [submitted, inside] = [&submitted, &inside].map(Arc::clone);
            searches.push(tokio::spawn(async move {
                submitted.fetch_add(1, SeqCst);
                readers
                    .run(move |_| {
                        inside.fetch_add(1, SeqCst);
                        while !gate.load(SeqCst) {
                            std::thread::yield_now();
                        }
                    })
                    .await
                    .unwrap();
            }));
        }
        // Every search submitted, two inside and held there: a third let in would be inside
        // too by now (the pool's threads are idle).
        while inside.load(SeqCst) < 2 || submitted.load(SeqCst) < SEARCHES {
            tokio::task::yield_now().await;
        }
        for _ in 0..10_000 {
            if inside.load(SeqCst) > 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let at_once = inside.load(SeqCst);
        // Released before asserting: held searches would keep the runtime from shutting down.
        gate.store(true, SeqCst);
        for search in searches {
            search.await.unwrap();
        }
        assert_eq!(
            at_once, 2,
            "more searches ran at once than connections are kept"
        );
        assert_eq!(inside.load(SeqCst), SEARCHES);
        assert_eq!(readers.lock().len(), 2);
    }

    #[tokio::test]
    async fn a_missing_database_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let readers = Arc::new(IndexReaders::new(dir.path().join("none.db"), 2));
        let err = readers.run(|_| ()).await.unwrap_err();
        assert!(err.to_string().contains("none.db"), "{err}");
    }
}
