//! Where the brain's `lessons.md` is, and a cached, parsed copy of it that is re-read only when
//! the file changed.
//!
//! One resolver for every route ([`resolve`]): `$BRAIN_LESSONS_PATH` when it names an existing
//! file, else `<brain>/lessons.md`. The Python daemon also looked in `<brain>/../.claude/` and in
//! its working directory, and `/apply-rules` used a different rule from the other routes; a
//! service's working directory means nothing, so neither is done here.
//!
//! [`LessonsFile`] holds the parsed file as an `Arc<T>`, built by a parse function its owner
//! gives (this module does not know the lessons grammar). Each call costs one `stat`; the file is
//! read only when its identity, size, modification or change time differ from the cached read, or
//! when that read was *racy*: the file had changed so shortly before it that a later rewrite could
//! leave the same stat behind (timestamps advance in clock ticks of a few milliseconds, and the
//! Python writer rewrites the file in place, keeping its inode). A racy cache is re-read (but not
//! re-parsed unless the content differs) until the file is older than [`RACY_WINDOW`].
//!
//! Reads happen under a shared `flock` on `<brain>/.lessons.lock`: the Python writer takes that
//! file exclusively, then truncates and rewrites `lessons.md`, so an unlocked read could see a torn
//! file. The wait for the lock is bounded ([`DEFAULT_LOCK_TIMEOUT`]).
//!
//! It knows nothing of lessons, routes or HTTP, and never writes `lessons.md`.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// File name of the lessons inside the brain directory.
pub const LESSONS_FILE: &str = "lessons.md";
/// File name of the lock the Python writer takes (exclusively) around each rewrite of the lessons.
pub const LESSONS_LOCK: &str = ".lessons.lock";
/// Environment variable naming a lessons file outside the brain directory.
pub const LESSONS_PATH_ENV: &str = "BRAIN_LESSONS_PATH";
/// How long a read waits for a writer to release `.lessons.lock`. The Python writer gives up on
/// the lock after 10 s; a rewrite itself takes milliseconds, so a lock held this long is stuck.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// A read of a file changed less than this long before it is racy (see the module doc): far more
/// than any file system's timestamp granularity (ext4, xfs, btrfs and tmpfs tick in milliseconds;
/// FAT in 2 s).
pub const RACY_WINDOW: Duration = Duration::from_secs(3);

/// The longest pause between two tries of the lock while a writer holds it.
const LONGEST_LOCK_PAUSE: Duration = Duration::from_millis(20);

/// The lessons file that serves a brain: the file `override_path` names (the value of
/// `$BRAIN_LESSONS_PATH`) if it is an absolute path to an existing regular file, else
/// `<brain_dir>/lessons.md`, whether it exists or not. A relative override is ignored: it would
/// be relative to the working directory, which for a service means nothing.
pub fn resolve(brain_dir: &Path, override_path: Option<&Path>) -> PathBuf {
    match override_path {
        Some(path) if path.is_absolute() && path.is_file() => path.to_path_buf(),
        _ => brain_dir.join(LESSONS_FILE),
    }
}

/// The value of `$BRAIN_LESSONS_PATH` in this process, empty counting as unset.
pub fn override_from_env() -> Option<PathBuf> {
    override_from(std::env::var_os(LESSONS_PATH_ENV))
}

/// A `$BRAIN_LESSONS_PATH` value as an override, empty counting as unset.
pub fn override_from(value: Option<OsString>) -> Option<PathBuf> {
    value.filter(|value| !value.is_empty()).map(PathBuf::from)
}

/// Why the lessons could not be read. Each names the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lessons file exists but could not be examined or read.
    #[error("{}: cannot read the lessons", path.display())]
    Read {
        /// The lessons file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The lock file could not be opened or locked.
    #[error("{}: cannot take the lessons lock", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A writer held the lock for longer than the read may wait.
    #[error("{}: a writer held the lessons lock for more than {waited:?}", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long the read waited.
        waited: Duration,
    },
    /// The blocking task reading the file did not finish (the runtime is shutting down).
    #[error("the read of the lessons did not finish")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// What a `stat` says about the file, enough to tell a rewrite from the file read before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The latest of the two times: the change time moves on every write and cannot be set back
    /// by a writer that restores the modification time.
    fn latest_change(&self) -> SystemTime {
        let at = |(secs, nanos): (i64, i64)| {
            let since = Duration::new(
                u64::try_from(secs).unwrap_or(0),
                u32::try_from(nanos).unwrap_or(0),
            );
            SystemTime::UNIX_EPOCH
                .checked_add(since)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        at(self.mtime).max(at(self.ctime))
    }
}

/// Which of the two places the lessons come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `<brain>/lessons.md`.
    Brain,
    /// The file `$BRAIN_LESSONS_PATH` names.
    Override,
}

/// Where the lessons were read from and what the file looked like then (`None`: missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    source: Source,
    stamp: Option<Stamp>,
}

/// Whether a read of a file with this stamp, started at `read_at`, could miss a later rewrite
/// that leaves the same stamp: the file changed within [`RACY_WINDOW`] before it (or after it,
/// by a clock that disagrees with ours).
fn is_racy(stamp: Option<&Stamp>, read_at: SystemTime) -> bool {
    stamp.is_some_and(|stamp| stamp.latest_change() + RACY_WINDOW > read_at)
}

/// One read of the file and what it parsed to.
struct Snapshot<T> {
    seen: Seen,
    /// The read could miss a rewrite with the same stamp; the next call reads again.
    racy: bool,
    content_hash: u64,
    value: Arc<T>,
}

impl<T> Snapshot<T> {
    /// The cached value, if `now` (what a `stat` says now) shows the file as it was read.
    fn fresh(&self, now: &Seen) -> Option<Arc<T>> {
        (!self.racy && self.seen == *now).then(|| Arc::clone(&self.value))
    }
}

/// The brain's lessons, parsed and cached; see the module doc. Share it behind an `Arc`.
pub struct LessonsFile<T> {
    /// `<brain>/lessons.md`.
    brain_path: PathBuf,
    /// `$BRAIN_LESSONS_PATH`, if absolute (a relative one is dropped when this is made).
    override_path: Option<PathBuf>,
    lock_path: PathBuf,
    parse: fn(&str) -> T,
    lock_timeout: Duration,
    /// The last read. Held only to look or to swap, never during I/O.
    snapshot: Mutex<Option<Arc<Snapshot<T>>>>,
    /// Held by the one thread re-reading the file, so that callers that find the cache stale at
    /// the same moment read it once, not each.
    reloading: Mutex<()>,
    /// Reads that found a writer holding the lock and waited.
    contended_reads: AtomicU64,
    /// Times the file was read (whether or not it was parsed again).
    reads: AtomicU64,
}

impl<T> std::fmt::Debug for LessonsFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LessonsFile")
            .field("brain_path", &self.brain_path)
            .field("override_path", &self.override_path)
            .finish_non_exhaustive()
    }
}

impl<T> LessonsFile<T> {
    /// The lessons of the brain in `brain_dir`, parsed by `parse`. `override_path` is the value
    /// of `$BRAIN_LESSONS_PATH` ([`override_from_env`]), passed in so that tests and callers
    /// decide; it is honoured on every call in which it names an existing file ([`resolve`]).
    /// Nothing is read until the first call.
    pub fn new(
        brain_dir: impl Into<PathBuf>,
        override_path: Option<PathBuf>,
        parse: fn(&str) -> T,
    ) -> LessonsFile<T> {
        let brain_dir = brain_dir.into();
        if let Some(path) = override_path.as_deref().filter(|path| !path.is_absolute()) {
            tracing::warn!(
                path = %path.display(),
                "{LESSONS_PATH_ENV} is not an absolute path; it is ignored"
            );
        }
        LessonsFile {
            lock_path: brain_dir.join(LESSONS_LOCK),
            brain_path: brain_dir.join(LESSONS_FILE),
            override_path: override_path.filter(|path| path.is_absolute()),
            parse,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            snapshot: Mutex::new(None),
            reloading: Mutex::new(()),
            contended_reads: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    /// The same, waiting at most `timeout` for a writer's lock.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> LessonsFile<T> {
        self.lock_timeout = timeout;
        self
    }

    /// The file the lessons are read from now ([`resolve`]).
    pub fn path(&self) -> PathBuf {
        self.path_of(self.source()).to_path_buf()
    }

    fn path_of(&self, source: Source) -> &Path {
        match (source, self.override_path.as_deref()) {
            (Source::Override, Some(path)) => path,
            _ => &self.brain_path,
        }
    }

    /// Where the lessons are read from now ([`resolve`]).
    fn source(&self) -> Source {
        match self.override_path.as_deref() {
            Some(path) if path.is_file() => Source::Override,
            _ => Source::Brain,
        }
    }

    /// Reads that had to wait for a writer's lock, since this was made.
    pub fn contended_reads(&self) -> u64 {
        self.contended_reads.load(Ordering::Relaxed)
    }

    /// Times the file was read, since this was made.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The cached lessons if the file has not changed since they were read, at the cost of one
    /// `stat` (two when an override is set); `None` when [`LessonsFile::get`] has to read. Never
    /// waits for a lock or reads the file, so it may be called on an async runtime's thread.
    pub fn cached(&self) -> Result<Option<Arc<T>>, Error> {
        let now = self.look()?;
        Ok(self.current().and_then(|snapshot| snapshot.fresh(&now)))
    }

    /// The lessons, read again if the file changed. **Blocks**: it may wait up to the lock
    /// timeout for a writer and then reads and parses the file; from async code use
    /// [`LessonsFile::load`]. A missing file is an empty brain (`parse("")`).
    pub fn get(&self) -> Result<Arc<T>, Error> {
        if let Some(value) = self.cached()? {
            return Ok(value);
        }
        let _one_reader = self
            .reloading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have read it while this one waited.
        if let Some(value) = self.cached()? {
            return Ok(value);
        }
        let snapshot = Arc::new(self.read()?);
        let value = Arc::clone(&snapshot.value);
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
        Ok(value)
    }

    fn current(&self) -> Option<Arc<Snapshot<T>>> {
        self.snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where the lessons are and what a `stat` says of them now.
    fn look(&self) -> Result<Seen, Error> {
        if let Some(path) = self.override_path.as_deref() {
            if let Ok(meta) = std::fs::metadata(path) {
                if meta.is_file() {
                    return Ok(Seen {
                        source: Source::Override,
                        stamp: Some(Stamp::of(&meta)),
                    });
                }
            }
        }
        let stamp = match std::fs::metadata(&self.brain_path) {
            Ok(meta) => Some(Stamp::of(&meta)),
            Err(err) if err.kind() == ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::Read {
                    path: self.brain_path.clone(),
                    source,
                });
            }
        };
        Ok(Seen {
            source: Source::Brain,
            stamp,
        })
    }

    /// Reads the file under the shared lock, and parses it unless its content is the one cached.
    fn read(&self) -> Result<Snapshot<T>, Error> {
        let read_at = SystemTime::now();
        let _shared = self.lock_shared()?;
        let source = self.source();
        let path = self.path_of(source);
        let (stamp, text) = match File::open(path) {
            Ok(mut file) => {
                let io = |err| Error::Read {
                    path: path.to_path_buf(),
                    source: err,
                };
                let stamp = Stamp::of(&file.metadata().map_err(io)?);
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(io)?;
                (Some(stamp), bytes)
            }
            Err(err) if err.kind() == ErrorKind::NotFound => (None, Vec::new()),
            Err(err) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source: err,
                });
            }
        };
        self.reads.fetch_add(1, Ordering::Relaxed);
        let mut hasher = std::hash::DefaultHasher::new();
        text.hash(&mut hasher);
        let content_hash = hasher.finish();
        let seen = Seen { source, stamp };
        let racy = is_racy(seen.stamp.as_ref(), read_at);
        let value = match self.current() {
            Some(old) if old.content_hash == content_hash && old.seen.source == seen.source => {
                Arc::clone(&old.value)
            }
            _ => {
                let text = String::from_utf8(text).unwrap_or_else(|err| {
                    tracing::warn!(
                        path = %path.display(),
                        "the lessons are not UTF-8; invalid bytes are read as U+FFFD"
                    );
                    String::from_utf8_lossy(err.as_bytes()).into_owned()
                });
                Arc::new((self.parse)(&text))
            }
        };
        Ok(Snapshot {
            seen,
            racy,
            content_hash,
            value,
        })
    }

    /// Takes `.lessons.lock` shared, trying again with growing pauses while a writer holds it,
    /// until the lock timeout. The file is created if missing (empty, as the Python writer
    /// creates it), so that a writer starting during the read finds it locked.
    fn lock_shared(&self) -> Result<Flock<File>, Error> {
        let lock_error = |source| Error::Lock {
            path: self.lock_path.clone(),
            source,
        };
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::store::PRIVATE_FILE_MODE)
            .open(&self.lock_path)
        {
            Ok(file) => file,
            // A brain this process may read but not write: a shared lock needs only reading.
            Err(err) if err.kind() == ErrorKind::PermissionDenied => {
                File::open(&self.lock_path).map_err(lock_error)?
            }
            Err(err) => return Err(lock_error(err)),
        };
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let mut file = file;
        let mut waited = false;
        loop {
            match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Ok(flock) => return Ok(flock),
                Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => file = back,
                Err((_, errno)) => return Err(lock_error(errno.into())),
            }
            if !waited {
                waited = true;
                self.contended_reads.fetch_add(1, Ordering::Relaxed);
            }
            let elapsed = started.elapsed();
            if elapsed >= self.lock_timeout {
                return Err(Error::LockTimeout {
                    path: self.lock_path.clone(),
                    waited: elapsed,
                });
            }
            std::thread::sleep(pause.min(self.lock_timeout - elapsed));
            pause = (pause * 2).min(LONGEST_LOCK_PAUSE);
        }
    }
}

impl<T: Send + Sync + 'static> LessonsFile<T> {
    /// [`LessonsFile::get`] for async callers: answers from the cache on the calling thread when
    /// the file has not changed (one `stat`), and otherwise reads on the blocking pool, so a
    /// writer holding the lock never stalls the runtime.
    pub async fn load(self: &Arc<Self>) -> Result<Arc<T>, Error> {
        if let Some(value) = self.cached()? {
            return Ok(value);
        }
        let file = Arc::clone(self);
        tokio::task::spawn_blocking(move || file.get())
            .await
            .map_err(Error::Interrupted)?
    }
}

#[cfg(test)]
mod tests;
