//! Advisory `flock` locks in the data directory.
//!
//! Two locks with two jobs:
//! - `.gradata.lock`, exclusive, held by `gradata serve` for its whole life, so a second service on
//!   the same data directory fails fast instead of racing the first.
//! - `.gradata.leases.lock`, shared, held by every process with the store open. A process that can
//!   take it exclusively knows no other process is alive, so every unexpired lease in the queue was
//!   left by a process that died (`SIGKILL`, power loss) and can be released at once.
//!
//! The kernel drops both when the process dies, however it dies; nothing here needs cleaning up.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// File name of the single-instance lock.
pub const INSTANCE_LOCK: &str = ".gradata.lock";
/// File name of the lease-liveness lock.
pub(crate) const LEASES_LOCK: &str = ".gradata.leases.lock";

/// A held lock; dropping it unlocks.
#[derive(Debug)]
pub(crate) struct LockFile {
    _flock: Flock<File>,
}

/// Why a lock could not be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process holds it.
    Held(PathBuf),
    /// The lock file could not be opened or locked.
    Io(PathBuf, std::io::Error),
}

impl LockFile {
    /// Takes the exclusive single-instance lock without waiting.
    pub(crate) fn instance(data_dir: &Path) -> Result<LockFile, LockError> {
        let path = data_dir.join(INSTANCE_LOCK);
        let file = open(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(LockFile { _flock: flock }),
            Err((_, Errno::EWOULDBLOCK)) => Err(LockError::Held(path)),
            Err((_, errno)) => Err(LockError::Io(path, errno.into())),
        }
    }

    /// Takes the shared lease-liveness lock; returns whether this process was the only one with the
    /// store open at that moment (and so may release stale leases).
    pub(crate) fn leases(data_dir: &Path) -> Result<(LockFile, bool), LockError> {
        let path = data_dir.join(LEASES_LOCK);
        let file = open(&path)?;
        let (flock, alone) = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => (flock, true),
            Err((file, Errno::EWOULDBLOCK)) => match Flock::lock(file, FlockArg::LockShared) {
                Ok(flock) => (flock, false),
                Err((_, errno)) => return Err(LockError::Io(path, errno.into())),
            },
            Err((_, errno)) => return Err(LockError::Io(path, errno.into())),
        };
        if alone {
            // Downgrade so that other processes can open the store too. The conversion is not
            // atomic, but nothing is leased yet, so a process slipping in between loses nothing.
            flock
                .relock(FlockArg::LockShared)
                .map_err(|errno| LockError::Io(path.clone(), errno.into()))?;
        }
        Ok((LockFile { _flock: flock }, alone))
    }
}

fn open(path: &Path) -> Result<File, LockError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|err| LockError::Io(path.to_path_buf(), err))?;
    give_to_directory_owner(path, &file).map_err(|err| LockError::Io(path.to_path_buf(), err))?;
    Ok(file)
}

/// When root opens the store of a service user (`sudo gradata drain` on /var/lib/gradata), a lock
/// file it creates would be root's, and the service, running as that user, could no longer open
/// it. Like SQLite does for its journal files, root hands the file to the directory's owner.
fn give_to_directory_owner(path: &Path, file: &File) -> std::io::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let (dir, mine) = (std::fs::metadata(dir)?, file.metadata()?);
    if (mine.uid(), mine.gid()) == (dir.uid(), dir.gid()) {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(dir.uid()), Some(dir.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = LockFile::instance(dir.path()).unwrap();
        assert!(matches!(
            LockFile::instance(dir.path()),
            Err(LockError::Held(_))
        ));
        drop(first);
        LockFile::instance(dir.path()).unwrap();
    }

    #[test]
    fn only_the_first_lease_holder_is_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (first, alone) = LockFile::leases(dir.path()).unwrap();
        assert!(alone);
        let (_second, alone) = LockFile::leases(dir.path()).unwrap();
        assert!(!alone);
        drop(first);
    }

    #[test]
    fn root_hands_lock_files_to_the_data_directory_owner() {
        // Only root can own files for another user; CI runs as root.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // A service user's data directory: nobody:nogroup, as /var/lib/gradata is gradata's.
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let _instance = LockFile::instance(dir.path()).unwrap();
        let _leases = LockFile::leases(dir.path()).unwrap();
        for name in [INSTANCE_LOCK, LEASES_LOCK] {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{name}");
        }
    }
}
