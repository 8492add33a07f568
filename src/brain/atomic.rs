//! Replacing a file's content so that no reader ever sees a torn file and a crash leaves either
//! the old content or the new one: [`replace`] writes a temporary file in the same directory,
//! fsyncs it, renames it over the old file and fsyncs the directory before it returns.
//!
//! The new file keeps the old one's mode and owner, and a symbolic link is written through: the
//! link's final target is replaced and the link stays a link.
//!
//! It knows nothing of lessons or locks: the caller holds whatever lock the file's other writers
//! respect.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of a file [`replace`] creates where none was: the brain's files are private.
pub const NEW_FILE_MODE: u32 = crate::store::PRIVATE_FILE_MODE;

/// How many symbolic links [`replace`] follows before it gives up (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Why a file could not be replaced. The old file is then as it was, and no temporary file is
/// left behind.
#[derive(Debug, thiserror::Error)]
#[error("{}: cannot {action}", path.display())]
pub struct Error {
    /// The file (or directory, or link) concerned.
    pub path: PathBuf,
    /// What was being done, for the message.
    pub action: &'static str,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Test hook: when set to a number of milliseconds, every replace pauses that long between
/// writing its temporary file and renaming it, so that a test can kill the service inside a
/// write for certain. Never set in production.
pub const PAUSE_BEFORE_RENAME_HOOK: &str = "GRADATA_TEST_PAUSE_BEFORE_RENAME_MS";

/// The pause [`PAUSE_BEFORE_RENAME_HOOK`] asks for, read once.
fn pause_before_rename() -> Option<std::time::Duration> {
    static PAUSE: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *PAUSE.get_or_init(|| {
        std::env::var(PAUSE_BEFORE_RENAME_HOOK)
            .ok()
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(std::time::Duration::from_millis)
    })
}

/// Replaces the content of `path` with `content`; see the module doc. A missing file is created
/// with [`NEW_FILE_MODE`]; a dangling link creates its target.
pub fn replace(path: &Path, content: &[u8]) -> Result<(), Error> {
    let target = final_target(path)?;
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let old = match std::fs::metadata(&target) {
        Ok(meta) => Some(meta),
        Err(err) if err.kind() == ErrorKind::NotFound => None,
        Err(source) => return Err(error(&target, "examine the file", source)),
    };
    let temp_path = temp_name(&target);
    let written = write_temp(&temp_path, content, old.as_ref()).and_then(|()| {
        if let Some(pause) = pause_before_rename() {
            std::thread::sleep(pause);
        }
        std::fs::rename(&temp_path, &target)
            .map_err(|source| error(&target, "rename the new file into place", source))
    });
    if let Err(err) = written {
        // Best effort: the error that matters is the one returned.
        let _ = std::fs::remove_file(&temp_path);
        return Err(err);
    }
    // The rename is durable only once the directory entry is.
    File::open(&dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|source| error(&dir, "sync the directory", source))
}

/// The file `path` finally names: `path` itself unless it is a symbolic link, else the link's
/// target, followed link after link (relative targets against the link's directory).
pub fn final_target(path: &Path) -> Result<PathBuf, Error> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&current)
                    .map_err(|source| error(&current, "read the link", source))?;
                current = match current.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            Ok(_) => return Ok(current),
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(current),
            Err(source) => return Err(error(&current, "examine the file", source)),
        }
    }
    Err(error(
        path,
        "follow the links",
        std::io::Error::from_raw_os_error(libc::ELOOP),
    ))
}

/// Writes and fsyncs the temporary file, with the old file's mode and owner.
fn write_temp(
    temp_path: &Path,
    content: &[u8],
    old: Option<&std::fs::Metadata>,
) -> Result<(), Error> {
    let fail = |action| move |source| error(temp_path, action, source);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(NEW_FILE_MODE)
        .open(temp_path)
        .map_err(fail("create a temporary file"))?;
    file.write_all(content)
        .map_err(fail("write the temporary file"))?;
    if let Some(old) = old {
        let mine = file
            .metadata()
            .map_err(fail("examine the temporary file"))?;
        if (mine.uid(), mine.gid()) != (old.uid(), old.gid()) {
            // Keeping the owner needs the right to give files away (root, or the same owner and
            // one of its groups); refusing is better than leaving the file to another user.
            std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))
                .map_err(fail("give the new file the old one's owner"))?;
        }
        // After the chown, which clears set-id bits.
        file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))
            .map_err(fail("give the new file the old one's mode"))?;
    }
    file.sync_all().map_err(fail("sync the temporary file"))
}

/// A name in the target's directory that no other writer of this process uses, hidden, and
/// recognisable as ours if a crash leaves it behind.
fn temp_name(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map_or_else(|| "file".into(), |name| name.to_string_lossy().into_owned());
    let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.{}.{unique}.tmp", std::process::id()))
}

/// The name of the file a temporary file named `name` was written for, when `name` is one that
/// [`replace`] makes (`.<file>.<pid>.<n>.tmp`): what a crash may leave behind.
pub fn temp_file_target(name: &str) -> Option<&str> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (rest, counter) = rest.rsplit_once('.')?;
    let (file, pid) = rest.rsplit_once('.')?;
    let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    (digits(counter) && digits(pid) && !file.is_empty()).then_some(file)
}

fn error(path: &Path, action: &'static str, source: std::io::Error) -> Error {
    Error {
        path: path.to_path_buf(),
        action,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_temporary_name_says_which_file_it_was_for() {
        let made = temp_name(Path::new("/brain/lessons.md"));
        let name = made.file_name().unwrap().to_str().unwrap();
        assert_eq!(temp_file_target(name), Some("lessons.md"));
        assert_eq!(
            temp_file_target("..brain_salt.12.0.tmp"),
            Some(".brain_salt")
        );
        for other in [
            "lessons.md",
            ".lessons.md.tmp",
            ".lessons.md.12.tmp",
            ".lessons.md.x.0.tmp",
            "..12.0.tmp",
            "lessons.md.12.0.tmp",
        ] {
            assert_eq!(temp_file_target(other), None, "{other}");
        }
    }

    #[test]
    fn a_replaced_file_keeps_its_mode_and_owner_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lessons.md");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let before = std::fs::metadata(&path).unwrap();
        replace(&path, b"new").unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_ne!(
            after.ino(),
            before.ino(),
            "a new file was renamed into place"
        );
        assert_eq!(names(dir.path()), ["lessons.md"]);
    }

    #[test]
    fn a_file_of_another_owner_keeps_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lessons.md");
        std::fs::write(&path, "old").unwrap();
        // Only root may give a file away; another user can only check its own files stay its own
        // (the test above).
        let owner = if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
            (65534, 65534)
        } else {
            let meta = std::fs::metadata(&path).unwrap();
            (meta.uid(), meta.gid())
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        replace(&path, b"new").unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!((after.uid(), after.gid()), owner);
        assert_eq!(after.mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_missing_file_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lessons.md");
        replace(&path, b"first").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o7777;
        assert_eq!(mode, NEW_FILE_MODE);
    }

    #[test]
    fn a_symlinked_file_is_written_through_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        let brain = dir.path().join("brain");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(&brain).unwrap();
        let target = elsewhere.join("real.md");
        std::fs::write(&target, "old").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o604)).unwrap();
        // A chain: brain/lessons.md -> brain/hop.md -> ../elsewhere/real.md (relative).
        let hop = brain.join("hop.md");
        std::os::unix::fs::symlink("../elsewhere/real.md", &hop).unwrap();
        let link = brain.join("lessons.md");
        std::os::unix::fs::symlink(&hop, &link).unwrap();

        replace(&link, b"new").unwrap();

        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(
            std::fs::symlink_metadata(&hop)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o604);
        assert_eq!(names(&elsewhere), ["real.md"]);
        assert_eq!(names(&brain), ["hop.md", "lessons.md"]);
    }

    #[test]
    fn a_link_loop_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let err = replace(&a, b"x").unwrap_err();
        assert_eq!(err.source.raw_os_error(), Some(libc::ELOOP));
        assert_eq!(names(dir.path()), ["a", "b"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: the rename fails after the temporary file was written.
        let path = dir.path().join("lessons.md");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "x").unwrap();
        let err = replace(&path, b"new").unwrap_err();
        assert_eq!(err.action, "rename the new file into place");
        assert_eq!(names(dir.path()), ["lessons.md"]);
        assert!(path.is_dir());
    }
}
