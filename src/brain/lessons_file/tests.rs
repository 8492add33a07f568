use super::*;
use std::io::{Seek, Write};

/// A parse that keeps the text, so that a test sees exactly what was read.
fn keep(text: &str) -> String {
    text.to_owned()
}

fn lessons(dir: &Path) -> LessonsFile<String> {
    LessonsFile::new(dir, None, keep)
}

#[test]
fn resolve_prefers_an_existing_absolute_override() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("elsewhere.md");
    let brain = dir.path().join("brain");
    let default = brain.join(LESSONS_FILE);
    assert_eq!(resolve(&brain, None), default);
    assert_eq!(resolve(&brain, Some(&other)), default, "missing override");
    std::fs::write(&other, "x").unwrap();
    assert_eq!(resolve(&brain, Some(&other)), other);
    assert_eq!(
        resolve(&brain, Some(Path::new("elsewhere.md"))),
        default,
        "relative override"
    );
    assert_eq!(resolve(&brain, Some(dir.path())), default, "a directory");
    assert_eq!(override_from(Some(OsString::new())), None);
    assert_eq!(
        override_from(Some(OsString::from("/a"))),
        Some(PathBuf::from("/a"))
    );
}

#[test]
fn a_missing_file_is_an_empty_brain_and_its_creation_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    let file = lessons(dir.path());
    assert_eq!(*file.get().unwrap(), "");
    assert_eq!(*file.get().unwrap(), "", "still missing");
    std::fs::write(dir.path().join(LESSONS_FILE), "one").unwrap();
    assert_eq!(*file.get().unwrap(), "one");
    std::fs::remove_file(dir.path().join(LESSONS_FILE)).unwrap();
    assert_eq!(*file.get().unwrap(), "");
}

#[test]
fn an_unchanged_old_file_is_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LESSONS_FILE);
    std::fs::write(&path, "old").unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(3600);
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let file = lessons(dir.path());
    let first = file.get().unwrap();
    let reads = file.reads();
    let snapshot = file.current().unwrap();
    // The change time, which cannot be set back, is now: the read is racy. Mark it clean,
    // as a read made after the racy window would be, rather than wait the window out.
    assert!(snapshot.racy);
    *file.snapshot.lock().unwrap() = Some(Arc::new(Snapshot {
        seen: snapshot.seen,
        racy: false,
        content_hash: snapshot.content_hash,
        value: Arc::clone(&snapshot.value),
    }));
    for _ in 0..3 {
        assert!(Arc::ptr_eq(&file.get().unwrap(), &first));
        assert!(file.cached().unwrap().is_some());
    }
    assert_eq!(file.reads(), reads, "no read while unchanged");
}

#[test]
fn a_changed_file_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LESSONS_FILE);
    std::fs::write(&path, "first version").unwrap();
    let file = lessons(dir.path());
    assert_eq!(*file.get().unwrap(), "first version");
    std::fs::write(&path, "second, longer version").unwrap();
    assert_eq!(*file.get().unwrap(), "second, longer version");
}

/// The Python writer truncates and rewrites in place: same inode, and here the same size. In
/// the same clock tick as the first write the stat is then identical (file systems with
/// coarse timestamps); the test makes it so whatever this one's granularity, by giving the
/// cached read the stat the file has after the rewrite. Only the racy rule catches it.
#[test]
fn a_same_size_rewrite_with_the_same_stat_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LESSONS_FILE);
    let mut handle = File::create(&path).unwrap();
    handle.write_all(b"AAAA").unwrap();
    let file = lessons(dir.path());
    assert_eq!(*file.get().unwrap(), "AAAA");
    handle.set_len(0).unwrap();
    handle.rewind().unwrap();
    handle.write_all(b"BBBB").unwrap();
    let cached = file.current().unwrap();
    assert!(cached.racy, "a read right after a write is racy");
    *file.snapshot.lock().unwrap() = Some(Arc::new(Snapshot {
        seen: file.look().unwrap(),
        racy: cached.racy,
        content_hash: cached.content_hash,
        value: Arc::clone(&cached.value),
    }));
    assert_eq!(*file.get().unwrap(), "BBBB");
}

#[test]
fn only_a_clean_unchanged_stat_is_fresh() {
    let stamp = Stamp {
        dev: 1,
        ino: 2,
        size: 3,
        mtime: (1_000, 5),
        ctime: (1_000, 5),
    };
    let seen = |stamp: Option<Stamp>| Seen {
        source: Source::Brain,
        stamp,
    };
    let snapshot = |racy| Snapshot {
        seen: seen(Some(stamp)),
        racy,
        content_hash: 0,
        value: Arc::new(()),
    };
    let later = Stamp {
        ctime: (1_000, 6),
        ..stamp
    };
    for (racy, now, fresh) in [
        (false, seen(Some(stamp)), true),
        (true, seen(Some(stamp)), false),
        (false, seen(Some(later)), false),
        (false, seen(Some(Stamp { size: 4, ..stamp })), false),
        (false, seen(Some(Stamp { ino: 9, ..stamp })), false),
        (
            false,
            seen(Some(Stamp {
                mtime: (1_000, 4),
                ..stamp
            })),
            false,
        ),
        (false, seen(None), false),
        (
            false,
            Seen {
                source: Source::Override,
                stamp: Some(stamp),
            },
            false,
        ),
    ] {
        assert_eq!(
            snapshot(racy).fresh(&now).is_some(),
            fresh,
            "{racy} {now:?}"
        );
    }
    let changed = stamp.latest_change();
    for (read_at, racy) in [
        (changed, true),
        (changed + RACY_WINDOW - Duration::from_nanos(1), true),
        (changed + RACY_WINDOW, false),
        (changed - Duration::from_secs(60), true),
    ] {
        assert_eq!(is_racy(Some(&stamp), read_at), racy, "{read_at:?}");
    }
    assert!(!is_racy(None, changed), "a missing file has no rewrite");
}

#[test]
fn a_read_waits_for_the_writer_and_sees_the_whole_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LESSONS_FILE);
    std::fs::write(&path, "old content").unwrap();
    let file = Arc::new(lessons(dir.path()));
    assert_eq!(*file.get().unwrap(), "old content");

    // The writer, as the Python SDK does it: exclusive lock, truncate, write in parts.
    let lock = File::create(dir.path().join(LESSONS_LOCK)).unwrap();
    let lock = Flock::lock(lock, FlockArg::LockExclusive).unwrap();
    let mut handle = File::options().write(true).open(&path).unwrap();
    handle.set_len(0).unwrap();
    handle.write_all(b"new content, first half; ").unwrap();

    let reader = std::thread::spawn({
        let file = Arc::clone(&file);
        move || file.get().map(|text| (*text).clone())
    });
    while file.contended_reads() == 0 {
        assert!(!reader.is_finished(), "the read did not wait for the lock");
        std::thread::yield_now();
    }
    handle.write_all(b"second half").unwrap();
    drop(lock);
    assert_eq!(
        reader.join().unwrap().unwrap(),
        "new content, first half; second half"
    );
}

#[test]
fn a_stuck_writer_gives_a_timeout_error() {
    let dir = tempfile::tempdir().unwrap();
    let lock = File::create(dir.path().join(LESSONS_LOCK)).unwrap();
    let _held = Flock::lock(lock, FlockArg::LockExclusive).unwrap();
    let file = lessons(dir.path()).with_lock_timeout(Duration::from_millis(30));
    match file.get() {
        Err(Error::LockTimeout { path, waited }) => {
            assert_eq!(path, dir.path().join(LESSONS_LOCK));
            assert!(waited >= Duration::from_millis(30));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[test]
fn the_override_is_followed_while_it_exists() {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("team.md");
    std::fs::write(dir.path().join(LESSONS_FILE), "brain").unwrap();
    let file = LessonsFile::new(dir.path(), Some(other.clone()), keep);
    assert_eq!(*file.get().unwrap(), "brain");
    std::fs::write(&other, "team").unwrap();
    assert_eq!(*file.get().unwrap(), "team");
    std::fs::remove_file(&other).unwrap();
    assert_eq!(*file.get().unwrap(), "brain");
}

#[tokio::test]
async fn load_reads_off_the_runtime_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LESSONS_FILE), "text").unwrap();
    let file = Arc::new(lessons(dir.path()));
    assert_eq!(*file.load().await.unwrap(), "text");
    std::fs::write(dir.path().join(LESSONS_FILE), "other").unwrap();
    assert_eq!(*file.load().await.unwrap(), "other");
}
