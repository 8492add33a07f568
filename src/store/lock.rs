//! Advisory `flock` locks in the data directory.
//!
//! Three locks with three jobs:
//! - `.gradata.lock`, exclusive, held by `gradata serve` for its whole life, so a second service on
//!   the same data directory fails fast instead of racing the first.
//! - `.brain.lock`, the Python Gradata daemon's own instance lock, taken the way it takes it
//!   (exclusive, the holder's PID in the file) and held beside `.gradata.lock`, so that the two
//!   daemons never serve one brain at once, whichever starts first.
//! - `.gradata.leases.lock`, shared, held by every process with the store open. A process that can
//!   take it exclusively knows no other process is alive, so every lease in the queue was left by
//!   a process that died (`SIGKILL`, power loss) and can be released at once.
//!
//! The kernel drops them when the process dies, however it dies; nothing here needs cleaning up.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// File name of the single-instance lock.
pub const INSTANCE_LOCK: &str = ".gradata.lock";
/// File name of the Python Gradata daemon's instance lock, in a brain directory.
pub const BRAIN_LOCK: &str = ".brain.lock";
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

    /// Takes the Python daemon's instance lock (`.brain.lock`) without waiting, and writes this
    /// process's PID into it as that daemon does (its tools read the holder from the file).
    pub(crate) fn brain(data_dir: &Path) -> Result<LockFile, LockError> {
        let path = data_dir.join(BRAIN_LOCK);
        let file = open(&path)?;
        let mut flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => flock,
            Err((_, Errno::EWOULDBLOCK)) => return Err(LockError::Held(path)),
            Err((_, errno)) => return Err(LockError::Io(path, errno.into())),
        };
        write_pid(&mut flock).map_err(|err| LockError::Io(path, err))?;
        Ok(LockFile { _flock: flock })
    }

    /// Takes the shared lease-liveness lock. If this process is the only one with the store open,
    /// `release_stale` runs first, while the lock is still held exclusively, so no other process
    /// can open the store and take leases that it would then release; the lock is shared only
    /// after it succeeded. Returns the lock and whether `release_stale` ran.
    pub(crate) fn leases<E: From<LockError>>(
        data_dir: &Path,
        release_stale: impl FnOnce() -> Result<(), E>,
    ) -> Result<(LockFile, bool), E> {
        let path = data_dir.join(LEASES_LOCK);
        let file = open(&path)?;
        let (flock, alone) = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => (flock, true),
            Err((file, Errno::EWOULDBLOCK)) => match Flock::lock(file, FlockArg::LockShared) {
                Ok(flock) => (flock, false),
                Err((_, errno)) => return Err(LockError::Io(path, errno.into()).into()),
            },
            Err((_, errno)) => return Err(LockError::Io(path, errno.into()).into()),
        };
        if alone {
            release_stale()?;
            // Downgrade so that other processes can open the store too. The conversion is not
            // atomic, but the stale leases are released already and this process has taken none
            // yet, so a process slipping in between loses nothing.
            flock
                .relock(FlockArg::LockShared)
                .map_err(|errno| LockError::Io(path.clone(), errno.into()))?;
        }
        Ok((LockFile { _flock: flock }, alone))
    }
}

/// Replaces the file's content with this process's PID, durably.
fn write_pid(file: &mut File) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    file.sync_all()
}

fn open(path: &Path) -> Result<File, LockError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(super::PRIVATE_FILE_MODE)
        .open(path)
        .map_err(|err| LockError::Io(path.to_path_buf(), err))?;
    give_to_directory_owner(path, &file).map_err(|err| LockError::Io(path.to_path_buf(), err))?;
    Ok(file)
}

/// When root opens the store of a service user (`sudo gradata drain` on /var/lib/gradata), a lock
/// file it creates would be root's, and the service, running as that user, could no longer open
/// it. Like SQLite does for its journal files, root hands the file to the directory's owner.
pub(super) fn give_to_directory_owner(path: &Path, file: &File) -> std::io::Result<()> {
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
    fn the_brain_lock_is_exclusive_and_holds_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BRAIN_LOCK), "a much longer stale pid").unwrap();
        let first = LockFile::brain(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(BRAIN_LOCK)).unwrap(),
            std::process::id().to_string()
        );
        assert!(matches!(
            LockFile::brain(dir.path()),
            Err(LockError::Held(_))
        ));
        drop(first);
        LockFile::brain(dir.path()).unwrap();
    }

    fn nothing_to_release() -> Result<(), LockError> {
        Ok(())
    }

    #[test]
    fn only_the_first_lease_holder_is_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (first, alone) = LockFile::leases(dir.path(), nothing_to_release).unwrap();
        assert!(alone);
        let (_second, alone) = LockFile::leases(dir.path(), || -> Result<(), LockError> {
            panic!("a second holder must not release leases")
        })
        .unwrap();
        assert!(!alone);
        drop(first);
    }

    /// Stale leases are released while the lock is exclusive: another opener cannot even take it
    /// shared meanwhile (so cannot claim rows whose leases would then be wiped), and can once the
    /// release is done.
    #[test]
    fn stale_leases_are_released_before_anyone_else_can_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEASES_LOCK);
        let try_shared = || {
            let file = File::open(&path).unwrap();
            Flock::lock(file, FlockArg::LockSharedNonblock).map_err(|(_, errno)| errno)
        };
        let (_held, alone) = LockFile::leases(dir.path(), || {
            assert_eq!(try_shared().err(), Some(Errno::EWOULDBLOCK));
            Ok::<(), LockError>(())
        })
        .unwrap();
        assert!(alone);
        assert!(try_shared().is_ok());
    }

    #[test]
    fn a_failed_release_takes_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let failed = LockFile::leases(dir.path(), || {
            Err(LockError::Held(PathBuf::from("release failed")))
        });
        assert!(matches!(failed, Err(LockError::Held(_))));
        let (_held, alone) = LockFile::leases(dir.path(), nothing_to_release).unwrap();
        assert!(alone, "the failed opener kept the lock");
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
        let _leases = LockFile::leases(dir.path(), nothing_to_release).unwrap();
        for name in [INSTANCE_LOCK, LEASES_LOCK] {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{name}");
        }
    }
}
