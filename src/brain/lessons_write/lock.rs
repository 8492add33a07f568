//! [`WriteLock`], the exclusive hold on `.lessons.lock` under which `lessons.md` is read and
//! saved (the archive first, then the file replaced), and [`DocumentCache`], which spares a
//! writer the parse of a file it wrote itself. What a document holds and how it renders is the
//! parent module's.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{Document, InvalidLesson, Layout, Rendered};
use crate::brain::lessons::{Lesson, Problem};
use crate::brain::lessons_file::LESSONS_LOCK;
use crate::brain::{archive, atomic};

/// Why [`WriteLock::save`] wrote nothing (or, for [`SaveError::Archive`], only the archive).
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// A lesson cannot be written; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidLesson),
    /// The lock file could not be opened or locked.
    #[error("{}: cannot take the lessons lock", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another writer held the lock longer than the caller would wait.
    #[error("{}: another writer held the lessons lock for more than {waited:?}", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long the call waited.
        waited: Duration,
    },
    /// The lessons file could not be read.
    #[error("{}: cannot read the lessons", path.display())]
    Read {
        /// The lessons file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The retired lessons could not be appended to the archive; `lessons.md` was not changed.
    #[error(transparent)]
    Archive(#[from] archive::Error),
    /// `lessons.md` could not be replaced; it is as it was (the archive may already hold the
    /// retired lessons: a lesson is then in both, never in neither).
    #[error(transparent)]
    Replace(#[from] atomic::Error),
}

/// The `lessons.md` this process last read or wrote under the lock, parsed, so that the next
/// writer skips the parse when the file still holds exactly those bytes. Any other content (an
/// edit by the Python SDK or by hand, a file replaced behind our back) is parsed again: the
/// bytes are compared, not a timestamp, which a rewrite within one clock tick would leave the
/// same. Share one per brain; it is only used under the lock.
#[derive(Debug, Default)]
pub struct DocumentCache {
    pub(super) last: std::sync::Mutex<Option<Known>>,
}

#[derive(Debug)]
pub(super) struct Known {
    path: PathBuf,
    pub(super) bytes: Vec<u8>,
    pub(super) document: Document,
}

impl DocumentCache {
    /// The cached document if `path` held exactly `bytes` when it was cached (taken out: the
    /// caller changes it, and a failed save must not leave a changed copy behind).
    fn take(&self, path: &Path, bytes: &[u8]) -> Option<Document> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.take() {
            Some(known) if known.path == path && known.bytes == bytes => Some(known.document),
            _ => None,
        }
    }

    fn put(&self, known: Option<Known>) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = known;
    }
}

/// The exclusive hold on `<brain>/.lessons.lock` that every `lessons.md` writer takes: the
/// Python SDK, this module, and (shared) the reader in `lessons_file`. Hold it across the read,
/// the change and [`WriteLock::save`], so that no other writer's change is lost in between.
/// Reading and saving are methods of the lock, so that neither happens without it. Dropping it
/// releases the lock.
#[derive(Debug)]
pub struct WriteLock {
    /// The brain whose lock this is; its archive receives the retired lessons.
    brain_dir: PathBuf,
    /// The open lock file; the kernel drops the lock when it is closed.
    _flock: Flock<File>,
}

/// The longest pause between two tries of the lock while another writer holds it.
const LONGEST_LOCK_PAUSE: Duration = Duration::from_millis(20);

impl WriteLock {
    /// Takes the lock of the brain in `brain_dir`, creating the lock file if missing, trying
    /// again with growing pauses while another process holds it, for at most `timeout`.
    pub fn acquire(brain_dir: &Path, timeout: Duration) -> Result<WriteLock, SaveError> {
        let path = brain_dir.join(LESSONS_LOCK);
        let lock_error = |source| SaveError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::store::PRIVATE_FILE_MODE)
            .open(&path)
            .map_err(lock_error)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(flock) => {
                    return Ok(WriteLock {
                        brain_dir: brain_dir.to_path_buf(),
                        _flock: flock,
                    });
                }
                Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => file = back,
                Err((_, errno)) => return Err(lock_error(errno.into())),
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(SaveError::LockTimeout {
                    path,
                    waited: elapsed,
                });
            }
            std::thread::sleep(pause.min(timeout - elapsed));
            pause = (pause * 2).min(LONGEST_LOCK_PAUSE);
        }
    }

    /// Reads the lessons file at `path` (`lessons_file::resolve` says which) into a
    /// [`Document`]; a missing file is an empty document. Invalid UTF-8 is read as U+FFFD, as
    /// the reader does (such a file is then not written back byte for byte).
    pub fn read(&self, path: &Path) -> Result<(Document, Vec<Problem>), SaveError> {
        let bytes = read_bytes(path)?;
        Ok(Document::parse(&String::from_utf8_lossy(&bytes)))
    }

    /// Writes `document` to the lessons file at `path`: renders it (an invalid lesson writes
    /// nothing), appends the retired lessons to `<brain>/lessons-archive.md` under a heading
    /// naming `retired_at`, then replaces `path` safely ([`atomic::replace`]: same directory,
    /// fsync, rename, directory fsync; mode and owner kept; a link written through). Returns
    /// the retired lessons.
    ///
    /// Invariant: the archive is written before `lessons.md`, so that after a crash at any
    /// moment every lesson is in one of the two files (in both if the crash fell between the
    /// two writes; a lesson found in both is the archived one).
    pub fn save(
        &self,
        path: &Path,
        document: &Document,
        retired_at: &str,
    ) -> Result<Vec<Lesson>, SaveError> {
        let rendered = document.render()?;
        self.write(path, &rendered, retired_at)?;
        Ok(rendered.retired)
    }

    /// [`WriteLock::read`], served from `cache` when the file holds the bytes cached (one read
    /// and one comparison instead of a parse). The problems of a cached document are not
    /// reported again.
    pub fn read_cached(&self, path: &Path, cache: &DocumentCache) -> Result<Document, SaveError> {
        let bytes = read_bytes(path)?;
        if let Some(document) = cache.take(path, &bytes) {
            return Ok(document);
        }
        let (document, problems) = Document::parse(&String::from_utf8_lossy(&bytes));
        for problem in &problems {
            tracing::debug!(line = problem.line, "lessons.md: {}", problem.message);
        }
        Ok(document)
    }

    /// [`WriteLock::save`], rendering once, and leaving in `cache` the document as the file now
    /// holds it (what [`Document::parse`] gives on the text written), so that the next
    /// [`WriteLock::read_cached`] of an unchanged file skips the parse. When the written
    /// document cannot be brought up to date cheaply (a lesson retired) the cache is emptied and
    /// the next read parses. Any number of changed and added lessons is brought up to date: a
    /// batch of corrections saves once.
    pub fn save_cached(
        &self,
        path: &Path,
        mut document: Document,
        retired_at: &str,
        cache: &DocumentCache,
    ) -> Result<Vec<Lesson>, SaveError> {
        cache.put(None);
        let (rendered, starts) = document.render_as(Layout::KeepUnchanged)?;
        self.write(path, &rendered, retired_at)?;
        if document.rebase(&rendered, &starts) {
            cache.put(Some(Known {
                path: path.to_path_buf(),
                bytes: rendered.text.into_bytes(),
                document,
            }));
        }
        Ok(rendered.retired)
    }

    /// Appends `rendered`'s retired lessons to the archive, then replaces `path` with its text:
    /// in that order, for the invariant of [`WriteLock::save`].
    fn write(&self, path: &Path, rendered: &Rendered, retired_at: &str) -> Result<(), SaveError> {
        archive::append(
            &self.brain_dir.join(archive::ARCHIVE_FILE),
            &rendered.retired,
            retired_at,
        )?;
        atomic::replace(path, rendered.text.as_bytes())?;
        Ok(())
    }
}

/// The bytes of the lessons file at `path`; none when it is missing.
fn read_bytes(path: &Path) -> Result<Vec<u8>, SaveError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(SaveError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}
