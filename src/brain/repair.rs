//! What the service repairs in the brain directory when it starts, before it answers anyone:
//! the traces a crash (a kill, a power cut) can leave between the writes of `/correct` and
//! `/end-session`. The order of those writes is chosen so that a crash leaves only these three,
//! each of which this module puts right:
//!
//! 1. **Temporary files** of an interrupted atomic replace (`atomic`): `.<file>.<pid>.<n>.tmp`
//!    beside `lessons.md` (or its link's target) and the salt file. The old file is intact; the
//!    temporary one is removed.
//! 2. **A lesson in both `lessons.md` and the archive**: the archive is appended before
//!    `lessons.md` is replaced, so a crash between the two leaves the retired lesson in both. The
//!    copy in `lessons.md` is the one from before the sweep that retired it: the move is
//!    completed by taking it out of `lessons.md`. "The same lesson" is the same category,
//!    description, date and correction ids ([`interrupted_moves`]): a lesson learned again after
//!    its namesake was retired has other correction ids and stays.
//! 3. **Lines missing from `events.jsonl`**: an event's `events` row commits before its line is
//!    appended (`events`), so a crash between the two leaves a row without its line. The rows
//!    stamped from the first line of the file's last [`TAIL_BYTES`] on are compared with those
//!    lines (by time stamp, type and source, counted: [`missing_lines`]); each row without its
//!    line gets its line back, built from the row as `events` builds it. A crash loses only the
//!    lines being appended at that moment, all of them newer than that window's start. A missing
//!    or empty `events.jsonl` is rebuilt from the whole table.
//!
//! What a crash may leave and is not repaired, by design: a CORRECTION event whose lesson was not
//! written (the correction stands, and is recalled; it taught nothing), a lesson change without
//! its LESSON_CHANGE event, and a swept session without its SESSION_END (swept again by its next
//! call). None of them breaks the invariants: every LESSON_CHANGE event is reflected in
//! `lessons.md` or the archive, and every lesson's correction ids exist as events.
//!
//! The lessons repairs run under `.lessons.lock`, which every writer of `lessons.md`, the archive
//! and the salt holds for the whole of its write, so no temporary file in flight is taken for a
//! leftover. It knows nothing of HTTP.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, OptionalExtension};

use super::archive::{self, ARCHIVE_FILE};
use super::atomic;
use super::end_session::SALT_FILE;
use super::events::{BrainEvent, EVENTS_JSONL};
use super::handle::{Brain, Error as BrainError};
use super::lessons::{self, Lesson, State};
use super::lessons_file::DEFAULT_LOCK_TIMEOUT;
use super::lessons_write::{SaveError, WriteLock};
use super::pyjson::{self, Value};

/// How much of the end of `events.jsonl` is compared with the `events` table: far more than the
/// lines a crash can interrupt (one per request in flight), and little to read at every start.
pub const TAIL_BYTES: u64 = 1 << 20;

/// Why a repair could not be done. What was repaired before it stays repaired.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lessons lock, `lessons.md` or the archive could not be read.
    #[error(transparent)]
    Lessons(#[from] SaveError),
    /// `lessons.md` could not be replaced.
    #[error(transparent)]
    Replace(#[from] atomic::Error),
    /// The archive could not be appended to.
    #[error(transparent)]
    Archive(#[from] archive::Error),
    /// A file or directory could not be read, removed or appended to.
    #[error("{}: cannot {action}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The `events` table could not be read.
    #[error("cannot read the events table")]
    Events(#[source] rusqlite::Error),
    /// The database's readers failed.
    #[error(transparent)]
    Brain(#[from] BrainError),
    /// The blocking work did not finish (the runtime is shutting down).
    #[error("the start-up repair did not finish")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// What one start-up repair did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The leftover temporary files removed.
    pub temp_files: Vec<PathBuf>,
    /// The lessons taken out of `lessons.md` because the archive holds them (`CATEGORY:
    /// description`).
    pub moves_completed: Vec<String>,
    /// The lines appended to `events.jsonl`.
    pub lines_restored: usize,
    /// Rows without their line that could not be turned into one (a row another writer stored
    /// in a shape gradata does not write).
    pub rows_unrestorable: usize,
}

impl Repaired {
    /// Whether anything was found to repair.
    pub fn is_empty(&self) -> bool {
        *self == Repaired::default()
    }
}

impl Brain {
    /// Repairs what a crash may have left in the brain (see the module doc). Called once at
    /// start, before the service answers.
    pub async fn repair(&self) -> Result<Repaired, Error> {
        let dir = self.dir.clone();
        let lessons_path = self.lessons.path();
        let mut repaired = tokio::task::spawn_blocking(move || repair_lessons(&dir, &lessons_path))
            .await
            .map_err(Error::Interrupted)??;

        let jsonl = self.dir.join(EVENTS_JSONL);
        let tail = {
            let jsonl = jsonl.clone();
            tokio::task::spawn_blocking(move || read_tail(&jsonl))
                .await
                .map_err(Error::Interrupted)??
        };
        let since = tail.window_start.clone();
        let rows = self
            .index
            .run(move |conn| rows_since(conn, since.as_deref()))
            .await
            .map_err(BrainError::from)?
            .map_err(Error::Events)?;
        let (lines, unrestorable) = missing_lines(&tail.seen, &rows);
        repaired.rows_unrestorable = unrestorable;
        if !lines.is_empty() {
            repaired.lines_restored = lines.len();
            let ends_open = tail.ends_without_newline;
            tokio::task::spawn_blocking(move || append_lines(&jsonl, &lines, ends_open))
                .await
                .map_err(Error::Interrupted)??;
        }
        Ok(repaired)
    }
}

/// Under the lessons lock: removes the leftover temporary files, then completes the interrupted
/// moves to the archive.
fn repair_lessons(brain_dir: &Path, lessons_path: &Path) -> Result<Repaired, Error> {
    let lock = WriteLock::acquire(brain_dir, DEFAULT_LOCK_TIMEOUT)?;
    let target = atomic::final_target(lessons_path)?;
    let mut repaired = Repaired::default();
    let lessons_name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut places = vec![(brain_dir.to_path_buf(), SALT_FILE.to_owned())];
    if let Some(dir) = target.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        places.push((dir.to_path_buf(), lessons_name));
    }
    for (dir, file) in places {
        repaired.temp_files.extend(remove_leftovers(&dir, &file)?);
    }

    let archive_path = brain_dir.join(ARCHIVE_FILE);
    let archived = match std::fs::read(&archive_path) {
        Ok(bytes) => lessons::parse(&String::from_utf8_lossy(&bytes)).lessons,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(Error::Io {
                path: archive_path,
                action: "read the lessons archive",
                source,
            });
        }
    };
    if archived.is_empty() {
        return Ok(repaired);
    }
    let (mut document, _problems) = lock.read(lessons_path)?;
    let current: Vec<Lesson> = document.lessons().cloned().collect();
    let moved = interrupted_moves(&current, &archived);
    if moved.is_empty() {
        return Ok(repaired);
    }
    // Marked as retired, the lessons leave the rendered text; they are not appended to the
    // archive again, which already holds them. A lesson the file itself marks KILLED leaves it
    // too, and goes to the archive as any save sends it.
    for (index, lesson) in document.lessons_mut().enumerate() {
        if moved.contains(&index) {
            lesson.state = State::Archived;
        }
    }
    let rendered = document.render().map_err(SaveError::from)?;
    let newly_retired: Vec<Lesson> = rendered
        .retired
        .into_iter()
        .filter(|lesson| !archived.iter().any(|old| same_lesson(lesson, old)))
        .collect();
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
    archive::append(&archive_path, &newly_retired, &now.to_string())?;
    atomic::replace(lessons_path, rendered.text.as_bytes())?;
    repaired.moves_completed = moved
        .iter()
        .map(|&index| {
            let lesson = &current[index];
            format!("{}: {}", lesson.category, lesson.description)
        })
        .collect();
    drop(lock);
    Ok(repaired)
}

/// Removes from `dir` the temporary files `atomic::replace` makes for `file`.
fn remove_leftovers(dir: &Path, file: &str) -> Result<Vec<PathBuf>, Error> {
    let io = |action, source| Error::Io {
        path: dir.to_path_buf(),
        action,
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io("list the directory", source)),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| io("list the directory", source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if atomic::temp_file_target(name) != Some(file) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    path,
                    action: "remove a leftover temporary file",
                    source,
                });
            }
        }
    }
    Ok(removed)
}

/// Whether two lessons are the same lesson in two states (before and after a sweep moved it):
/// the sweep changes neither category, description, date nor correction ids.
fn same_lesson(a: &Lesson, b: &Lesson) -> bool {
    a.category == b.category
        && a.description == b.description
        && a.date == b.date
        && a.corrections == b.corrections
}

/// The indexes of the lessons of `current` (`lessons.md`, in file order) that `archived` already
/// holds (see the module doc): moves a crash interrupted. Pure.
pub fn interrupted_moves(current: &[Lesson], archived: &[Lesson]) -> Vec<usize> {
    current
        .iter()
        .enumerate()
        .filter(|(_, lesson)| archived.iter().any(|old| same_lesson(lesson, old)))
        .map(|(index, _)| index)
        .collect()
}

/// What identifies an event in both the table and the JSONL file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    /// `ts`.
    pub ts: String,
    /// `type`.
    pub event_type: String,
    /// `source`.
    pub source: String,
}

/// One `events` row, as stored.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// Its identity.
    pub key: EventKey,
    /// `session`, when it is an integer.
    pub session: Option<i64>,
    /// `data_json`.
    pub data_json: String,
    /// `tags_json`.
    pub tags_json: String,
    /// `valid_from`.
    pub valid_from: String,
    /// `valid_until`.
    pub valid_until: Option<String>,
}

/// The end of `events.jsonl`, as the repair compares it.
#[derive(Debug, Default)]
pub struct Tail {
    /// How many lines of each event the tail holds.
    pub seen: HashMap<EventKey, usize>,
    /// The first line's time stamp: the rows from it on are compared. `None` when the file
    /// holds no line (every row is).
    pub window_start: Option<String>,
    /// The file's last line has no line break (a torn write): a new line must not join it.
    pub ends_without_newline: bool,
}

impl Tail {
    /// The tail of a file whose last bytes are `text`; `cut` says the text starts inside the
    /// file, so its first (partial) line is skipped. Lines that are no event are ignored. Pure.
    pub fn of(text: &str, cut: bool) -> Tail {
        let mut tail = Tail {
            ends_without_newline: !text.is_empty() && !text.ends_with('\n'),
            ..Tail::default()
        };
        let mut lines = text.lines();
        if cut {
            lines.next();
        }
        for line in lines {
            let Ok(Value::Object(event)) = pyjson::from_str(line) else {
                continue;
            };
            let field = |name: &str| event.get(name).and_then(Value::as_str).map(str::to_owned);
            let (Some(ts), Some(event_type), Some(source)) =
                (field("ts"), field("type"), field("source"))
            else {
                continue;
            };
            if tail.window_start.is_none() {
                tail.window_start = Some(ts.clone());
            }
            *tail
                .seen
                .entry(EventKey {
                    ts,
                    event_type,
                    source,
                })
                .or_default() += 1;
        }
        tail
    }
}

/// The lines to append for the `rows` (in id order) that `seen` lacks, counting: a row whose key
/// the tail holds fewer times than the rows do is missing. Answers the lines, and how many
/// missing rows could not be turned into a line. Pure.
pub fn missing_lines(seen: &HashMap<EventKey, usize>, rows: &[StoredRow]) -> (Vec<String>, usize) {
    let mut left = seen.clone();
    let mut lines = Vec::new();
    let mut unrestorable = 0;
    for row in rows {
        if let Some(count) = left.get_mut(&row.key).filter(|count| **count > 0) {
            *count -= 1;
            continue;
        }
        match line_of(row) {
            Some(line) => lines.push(line),
            None => unrestorable += 1,
        }
    }
    (lines, unrestorable)
}

/// The `events.jsonl` line of a row, as `events` writes it when it records the event; `None`
/// for a row gradata would not have written (a session that is no integer, data that is no
/// object, tags that are no strings).
fn line_of(row: &StoredRow) -> Option<String> {
    let Ok(Value::Object(data)) = pyjson::from_str(&row.data_json) else {
        return None;
    };
    let tags: Vec<String> = serde_json::from_str(&row.tags_json).ok()?;
    let event = BrainEvent {
        ts: row.key.ts.clone(),
        session: row.session?,
        event_type: row.key.event_type.clone(),
        source: row.key.source.clone(),
        data,
        tags,
        valid_from: row.valid_from.clone(),
        valid_until: row.valid_until.clone(),
    };
    Some(event.jsonl_line())
}

/// Reads the last [`TAIL_BYTES`] of `events.jsonl` (a missing file is empty).
fn read_tail(path: &Path) -> Result<Tail, Error> {
    let io = |action, source| Error::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Tail::default()),
        Err(source) => return Err(io("open the event log", source)),
    };
    let len = file
        .metadata()
        .map_err(|source| io("examine the event log", source))?
        .len();
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start))
        .map_err(|source| io("read the event log", source))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| io("read the event log", source))?;
    Ok(Tail::of(&String::from_utf8_lossy(&bytes), start > 0))
}

/// The `events` rows stamped at `since` or later (all of them for `None`), in id order; none
/// when the table does not exist.
fn rows_since(conn: &Connection, since: Option<&str>) -> rusqlite::Result<Vec<StoredRow>> {
    let exists = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Ok(Vec::new());
    }
    let mut statement = conn.prepare(
        "SELECT ts, type, source, session, data_json, tags_json, valid_from, valid_until \
         FROM events WHERE ?1 IS NULL OR ts >= ?1 ORDER BY id",
    )?;
    let rows = statement.query_map([since], |row| {
        let text = |index: usize| -> rusqlite::Result<String> {
            Ok(row.get::<_, Option<String>>(index)?.unwrap_or_default())
        };
        let session = match row.get_ref(3)? {
            rusqlite::types::ValueRef::Integer(number) => Some(number),
            _ => None,
        };
        Ok(StoredRow {
            key: EventKey {
                ts: text(0)?,
                event_type: text(1)?,
                source: text(2)?,
            },
            session,
            data_json: text(4)?,
            tags_json: text(5)?,
            valid_from: text(6)?,
            valid_until: row.get(7)?,
        })
    })?;
    rows.collect()
}

/// Appends `lines` to `events.jsonl` under its `flock`, in one write, after a line break when
/// the file's last line has none.
fn append_lines(path: &Path, lines: &[String], ends_open: bool) -> Result<(), Error> {
    let io = |action, source| Error::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .open(path)
        .map_err(|source| io("open the event log", source))?;
    let mut file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| io("lock the event log", errno.into()))?;
    let mut text = String::new();
    if ends_open {
        text.push('\n');
    }
    for line in lines {
        text.push_str(line);
    }
    file.write_all(text.as_bytes())
        .map_err(|source| io("append to the event log", source))?;
    file.sync_all()
        .map_err(|source| io("sync the event log", source))
}

#[cfg(test)]
mod tests;
