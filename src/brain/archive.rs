//! `lessons-archive.md`: where lessons go when they leave `lessons.md` (KILLED and ARCHIVED
//! ones), so that no lesson is ever silently dropped (brain spec §13 #4 and #13).
//!
//! Format (append-only; nothing is ever rewritten or removed):
//!
//! ```text
//! # Lessons Archive
//!
//! ## Retired 2026-05-01T10:00:00Z
//! [2026-04-02] [KILLED:0.00] TONE: Never open client emails with small talk
//!   Kill reason: contradicted twice
//!   Metadata: {...}
//! ```
//!
//! The title is written when the file is created, as the Python SDK starts the same file (its
//! `/end-session` appends `## Graduated <date> (auto)` sections of one-line summaries, which
//! have no state word and so are no lessons to the reader). Each retirement appends a blank line,
//! a `## Retired <when>` heading and the lessons' blocks in the `lessons.md` layout, so
//! `lessons::parse` on the archive gives back every retired lesson with all its fields.
//!
//! An append is one `write` on a file opened for appending, then fsynced (and the directory too
//! when the file is new), before [`append`] returns.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::lessons::Lesson;
use super::lessons_write::{self, InvalidLesson};

/// File name of the archive inside the brain directory.
pub const ARCHIVE_FILE: &str = "lessons-archive.md";

/// The first line of a new archive.
const TITLE: &str = "# Lessons Archive\n";

/// Why the archive could not be appended to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A retired lesson cannot be written; nothing was appended.
    #[error(transparent)]
    Invalid(#[from] InvalidLesson),
    /// The archive could not be opened, written or synced.
    #[error("{}: cannot append to the lessons archive", path.display())]
    Io {
        /// The archive (or its directory).
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The text one retirement appends: a blank line, the `## Retired <when>` heading and each
/// lesson's block. Pure.
pub fn entry(retired: &[Lesson], when: &str) -> Result<String, InvalidLesson> {
    let mut text = format!("\n## Retired {when}\n");
    for lesson in retired {
        text.push_str(&lessons_write::block(lesson)?);
    }
    Ok(text)
}

/// Appends `retired` to the archive at `path` under a heading naming `when` (a timestamp the
/// caller formats); does nothing for an empty list.
pub fn append(path: &Path, retired: &[Lesson], when: &str) -> Result<(), Error> {
    if retired.is_empty() {
        return Ok(());
    }
    let entry = entry(retired, when)?;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode_private()
        .open(path)
        .map_err(io)?;
    let is_new = file.metadata().map_err(io)?.len() == 0;
    let text = if is_new {
        format!("{TITLE}{entry}")
    } else {
        entry
    };
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    if is_new {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|source| Error::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// Opening the archive with the brain's private mode when it is created.
trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, crate::store::PRIVATE_FILE_MODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brain::lessons::{self, State};

    fn killed(description: &str) -> Lesson {
        let mut lesson = Lesson::with_defaults("2026-04-02", State::Killed, "TONE", description);
        lesson.kill_reason = "contradicted".into();
        lesson.corrections = vec!["7".into(), "9".into()];
        lesson.confidence = 0.12;
        lesson
    }

    #[test]
    fn appended_lessons_read_back_from_the_archive_with_every_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ARCHIVE_FILE);
        let first = killed("First");
        let mut second = killed("Second");
        second.state = State::Archived;
        append(&path, std::slice::from_ref(&first), "2026-05-01T10:00:00Z").unwrap();
        append(&path, &[], "never written").unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        append(&path, std::slice::from_ref(&second), "2026-05-02T10:00:00Z").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();

        assert!(text.starts_with(&before), "append only:\n{text}");
        assert!(text.starts_with("# Lessons Archive\n\n## Retired 2026-05-01T10:00:00Z\n"));
        assert_eq!(text.matches("# Lessons Archive").count(), 1);
        assert!(!text.contains("never written"));
        let parsed = lessons::parse(&text);
        assert_eq!(parsed.problems, []);
        let read: Vec<Lesson> = parsed
            .lessons
            .into_iter()
            .map(|mut lesson| {
                lesson.line = 0;
                lesson
            })
            .collect();
        assert_eq!(read, [first, second]);
    }

    #[test]
    fn an_invalid_lesson_appends_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ARCHIVE_FILE);
        let mut bad = killed("Bad");
        bad.date = "yesterday".into();
        let err = append(&path, &[killed("Good"), bad], "now").unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err}");
        assert!(!path.exists());
    }
}
