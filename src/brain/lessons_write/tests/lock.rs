//! The lock, the read and the save: retired lessons go to the archive, a refused save writes
//! nothing, and no reader sees a torn file.

use std::time::Duration;

use super::*;
use crate::brain::archive;
use crate::brain::atomic;
use crate::brain::lessons_file::{self, LessonsFile};

#[test]
fn save_moves_retired_lessons_to_the_archive_and_replaces_the_file() {
    let dir = brain_with(HAND_WRITTEN);
    let path = dir.path().join(LESSONS_FILE);
    let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
    let (document, _) = lock.read(&path).unwrap();
    let retired = lock.save(&path, &document, "2026-05-01T10:00:00Z").unwrap();
    drop(lock);

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("Prefer strings"), "{text}");
    assert!(text.starts_with("# Team brain: lessons\r\n"), "{text}");
    let archive = std::fs::read_to_string(dir.path().join(archive::ARCHIVE_FILE)).unwrap();
    assert!(
        archive.contains("## Retired 2026-05-01T10:00:00Z\n"),
        "{archive}"
    );
    assert_eq!(lessons_of(&archive), without_line_numbers(retired.clone()));
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].description, "Prefer strings");
}

#[test]
fn a_refused_save_changes_nothing() {
    let dir = brain_with(HAND_WRITTEN);
    let path = dir.path().join(LESSONS_FILE);
    let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
    let (mut document, _) = lock.read(&path).unwrap();
    document.push(Lesson::with_defaults("someday", State::Rule, "C", "d"));
    let err = lock.save(&path, &document, "now").unwrap_err();
    assert!(matches!(err, SaveError::Invalid(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), HAND_WRITTEN);
    assert!(!dir.path().join(archive::ARCHIVE_FILE).exists());
}

#[test]
fn the_write_lock_keeps_readers_and_other_writers_out() {
    let dir = brain_with("[2026-04-02] [RULE] C: d\n");
    let reader = LessonsFile::new(dir.path(), None, lessons::parse)
        .with_lock_timeout(Duration::from_millis(50));
    let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
    let err = reader.get().unwrap_err();
    assert!(
        matches!(err, lessons_file::Error::LockTimeout { .. }),
        "{err}"
    );
    let err = WriteLock::acquire(dir.path(), Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, SaveError::LockTimeout { .. }), "{err}");
    drop(lock);
    assert_eq!(reader.get().unwrap().lessons.len(), 1);
    WriteLock::acquire(dir.path(), Duration::from_millis(50)).unwrap();
}

/// The text the torn-read test writes: one version of a large file, every line naming it.
fn version(number: usize) -> String {
    format!("  version {number:06}\n").repeat(20_000)
}

fn keep(text: &str) -> String {
    text.to_owned()
}

#[test]
fn a_reader_under_the_shared_lock_never_sees_a_torn_file() {
    let dir = brain_with(&version(0));
    let brain = dir.path().to_path_buf();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = std::sync::Arc::clone(&done);
        let brain = brain.clone();
        std::thread::spawn(move || {
            let file = LessonsFile::new(&brain, None, keep);
            let mut reads = 0;
            let mut last = 0;
            // At least one read after the writer is done, so the last version is seen.
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let text = file.get().unwrap();
                let number: usize = text[10..16].parse().unwrap();
                assert_eq!(*text, version(number), "a torn read");
                assert!(number >= last, "versions go forward");
                last = number;
                reads += 1;
                if finished {
                    return (reads, last);
                }
            }
        })
    };
    // Without the lock too: the rename alone keeps a reader from a torn file, where a
    // rewrite in place (as the SDK does) would not.
    let unlocked_reader = {
        let done = std::sync::Arc::clone(&done);
        let path = brain.join(LESSONS_FILE);
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let text = std::fs::read_to_string(&path).unwrap();
                let number: usize = text.get(10..16).unwrap_or("torn").parse().unwrap_or(0);
                assert_eq!(text, version(number), "a torn read without the lock");
            }
        })
    };
    let path = brain.join(LESSONS_FILE);
    for number in 1..=60 {
        let lock = WriteLock::acquire(&brain, Duration::from_secs(5)).unwrap();
        atomic::replace(&path, version(number).as_bytes()).unwrap();
        drop(lock);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (reads, last) = reader.join().unwrap();
    unlocked_reader.join().unwrap();
    assert_eq!(last, 60);
    assert!(reads >= 1);
}
