//! `/maintain` for [`Brain`]: runs the named upkeep tasks in order, under the lessons lock, and
//! says which completed and which failed. It knows nothing of HTTP: the API validates the
//! request and maps [`Maintained`] onto the response.
//!
//! The tasks (brain spec §6.11, and §13 #17 for what 0.6.0 got wrong):
//! - `manifest`: writes `brain.manifest.json` ([`super::manifest`]), atomically;
//! - `fts_rebuild`: rebuilds the full-text index `/brain-recall` searches from the brain's
//!   CORRECTION events ([`rebuild_index`]); 0.6.0 only ran an empty search;
//! - `patterns`: nothing to do. 0.6.0 renders a skill text of the PATTERN and RULE lessons and
//!   throws it away; no client reads such a file, and `/apply-rules` already serves those
//!   lessons, so nothing is written and the task reports completed.
//!
//! Any other name fails, as does a task whose work fails (logged with its cause); the others
//! still run. The lock is the one `/correct` and `/end-session` take around `lessons.md`, so the
//! manifest describes a file no writer is halfway through.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::handle::Brain;
use super::lessons_file::DEFAULT_LOCK_TIMEOUT;
use super::lessons_write::{SaveError, WriteLock};
use super::manifest::{self, ManifestError};

/// The most tasks one request may name.
pub const MAX_TASKS: usize = 16;

/// The tasks a request runs when it names none (0.6.0's default).
pub const DEFAULT_TASKS: [&str; 1] = ["manifest"];

/// How long the index rebuild waits for another writer of the database.
const REBUILD_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The most characters of a correction's final text an index row keeps (as `/correct` writes
/// it).
const INDEX_TEXT_CHARS: usize = super::correct::INDEX_TEXT_CHARS;

/// One upkeep task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Write `brain.manifest.json`.
    Manifest,
    /// Rebuild the recall index from the CORRECTION events.
    FtsRebuild,
    /// Nothing to do (see the module doc).
    Patterns,
}

impl Task {
    /// The task a request names, if it is one.
    pub fn from_name(name: &str) -> Option<Task> {
        match name {
            "manifest" => Some(Task::Manifest),
            "fts_rebuild" => Some(Task::FtsRebuild),
            "patterns" => Some(Task::Patterns),
            _ => None,
        }
    }
}

/// What one `/maintain` run did, task names as the request gave them.
#[derive(Debug, Clone, PartialEq)]
pub struct Maintained {
    /// The tasks that did their work, in order.
    pub completed: Vec<String>,
    /// The unknown tasks and those whose work failed, in order.
    pub failed: Vec<String>,
    /// Wall time of the whole run, the wait for the lock included.
    pub duration: Duration,
}

/// Why no task ran.
#[derive(Debug, thiserror::Error)]
pub enum MaintainError {
    /// The lessons lock could not be taken.
    #[error(transparent)]
    Lock(SaveError),
    /// A blocking task did not finish (the runtime is shutting down).
    #[error("the upkeep did not finish")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// Why one task failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The manifest could not be built or written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The index could not be rebuilt.
    #[error("rebuilding the full-text index failed")]
    Rebuild(#[source] rusqlite::Error),
    /// A blocking task did not finish.
    #[error("the task did not finish")]
    Interrupted(#[source] tokio::task::JoinError),
}

impl Brain {
    /// `/maintain`: runs `tasks` in order under the lessons lock (see the module doc).
    pub async fn maintain(&self, tasks: &[String]) -> Result<Maintained, MaintainError> {
        let started = Instant::now();
        let dir = self.dir.clone();
        // Shared with the blocking tasks that read under it; released when the last holder
        // (this call, at its end) lets go.
        let lock = tokio::task::spawn_blocking(move || {
            WriteLock::acquire(&dir, DEFAULT_LOCK_TIMEOUT).map(Arc::new)
        })
        .await
        .map_err(MaintainError::Interrupted)?
        .map_err(MaintainError::Lock)?;
        let mut done = Maintained {
            completed: Vec::new(),
            failed: Vec::new(),
            duration: Duration::ZERO,
        };
        for name in tasks {
            let outcome = match Task::from_name(name) {
                None => {
                    tracing::warn!(task = %name, "/maintain: no such task");
                    false
                }
                Some(task) => match self.run_task(task, &lock).await {
                    Ok(()) => true,
                    Err(err) => {
                        tracing::error!(
                            task = %name,
                            error = %crate::logging::Causes(&err),
                            "/maintain: a task failed"
                        );
                        false
                    }
                },
            };
            if outcome {
                done.completed.push(name.clone());
            } else {
                done.failed.push(name.clone());
            }
        }
        drop(lock);
        done.duration = started.elapsed();
        Ok(done)
    }

    /// Runs one task; `lock` is held by the caller for the whole run.
    async fn run_task(&self, task: Task, lock: &Arc<WriteLock>) -> Result<(), TaskError> {
        match task {
            Task::Manifest => self.write_manifest(Arc::clone(lock)).await,
            Task::FtsRebuild => {
                let database = self.learning.database().to_path_buf();
                let rebuilt = tokio::task::spawn_blocking(move || rebuild_index(&database))
                    .await
                    .map_err(TaskError::Interrupted)?
                    .map_err(TaskError::Rebuild)?;
                tracing::info!(
                    kept = rebuilt.kept,
                    added = rebuilt.added,
                    removed = rebuilt.removed,
                    "/maintain: full-text index rebuilt from the CORRECTION events"
                );
                Ok(())
            }
            Task::Patterns => Ok(()),
        }
    }

    /// Builds the manifest from `lessons.md` (read under `lock`) and the database, and writes it
    /// atomically into the brain directory.
    async fn write_manifest(&self, lock: Arc<WriteLock>) -> Result<(), TaskError> {
        let path = self.lessons.path();
        let lessons_path = path.clone();
        let lessons: Vec<_> = tokio::task::spawn_blocking(move || {
            lock.read(&lessons_path)
                .map(|(document, _problems)| document.lessons().cloned().collect())
        })
        .await
        .map_err(TaskError::Interrupted)?
        .map_err(ManifestError::Lessons)?;
        let brain_dir = self.dir.clone();
        let lessons_path = path;
        let facts = self
            .index
            .run(manifest::DatabaseFacts::read)
            .await
            .map_err(ManifestError::Open)?
            .map_err(ManifestError::Query)?;
        tokio::task::spawn_blocking(move || {
            let built = manifest::Manifest::build(&manifest::Sources {
                brain_dir: &brain_dir,
                lessons_path: &lessons_path,
                lessons: &lessons,
                database: &facts,
                generated_at: jiff::Timestamp::now(),
            });
            manifest::write(&brain_dir, &built)
        })
        .await
        .map_err(TaskError::Interrupted)??;
        Ok(())
    }
}

/// What [`rebuild_index`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rebuilt {
    /// Correction rows already right, kept with their ids.
    pub kept: usize,
    /// Rows added for CORRECTION events the index lacked.
    pub added: usize,
    /// Correction rows no CORRECTION event accounts for, removed.
    pub removed: usize,
}

/// The index tables, as the Python SDK and `/correct` create them (brain spec §2).
const CREATE_INDEX: &str = "CREATE TABLE IF NOT EXISTS brain_fts_content(\
        id INTEGER PRIMARY KEY AUTOINCREMENT, source, file_type, text, embed_date);
    CREATE VIRTUAL TABLE IF NOT EXISTS brain_fts USING fts5(source, file_type, text, embed_date, \
        content='brain_fts_content', content_rowid='id', tokenize='porter unicode61');";

/// Rebuilds the recall index of the database at `database` from its CORRECTION events, in one
/// transaction, creating the tables if missing:
///
/// 1. the correction rows `/correct`'s events call for are computed (`"<CATEGORY>: <summary or
///    severity> - <final text, 500 chars>"`, dated by the event's day, as `/correct` writes
///    them);
/// 2. the content table's correction rows are matched against them: a row that is right keeps
///    its id, a missing one is added, one no event accounts for is removed (rows of other
///    sources are left alone);
/// 3. the FTS5 index is rebuilt from the content table, which mends any index entry that had
///    drifted from its row.
///
/// Running it twice leaves the same rows with the same ids.
pub fn rebuild_index(database: &Path) -> rusqlite::Result<Rebuilt> {
    let mut connection = Connection::open(database)?;
    connection.busy_timeout(REBUILD_BUSY_TIMEOUT)?;
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    transaction.execute_batch(CREATE_INDEX)?;
    let wanted = correction_rows(&transaction)?;

    let mut existing: HashMap<(String, String), Vec<i64>> = HashMap::new();
    {
        let mut rows = transaction.prepare(
            "SELECT id, coalesce(CAST(text AS TEXT), ''), coalesce(CAST(embed_date AS TEXT), '') \
             FROM brain_fts_content WHERE source = 'corrections' AND file_type = 'correction' \
             ORDER BY id DESC",
        )?;
        let found = rows.query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?))
        })?;
        for row in found {
            let (id, text, date) = row?;
            // Descending ids pushed, popped from the end: the oldest row is kept first.
            existing.entry((text, date)).or_default().push(id);
        }
    }

    let mut rebuilt = Rebuilt::default();
    for row in wanted {
        let key = (row.text, row.embed_date);
        if existing.get_mut(&key).and_then(Vec::pop).is_some() {
            rebuilt.kept += 1;
        } else {
            transaction.execute(
                "INSERT INTO brain_fts_content(source, file_type, text, embed_date) \
                 VALUES ('corrections', 'correction', ?1, ?2)",
                (&key.0, &key.1),
            )?;
            rebuilt.added += 1;
        }
    }
    for id in existing.into_values().flatten() {
        transaction.execute("DELETE FROM brain_fts_content WHERE id = ?1", [id])?;
        rebuilt.removed += 1;
    }
    transaction.execute("INSERT INTO brain_fts(brain_fts) VALUES ('rebuild')", [])?;
    transaction.commit()?;
    Ok(rebuilt)
}

/// One index row a CORRECTION event calls for.
#[derive(Debug, Clone, PartialEq)]
struct IndexRow {
    text: String,
    embed_date: String,
}

/// The index rows of every CORRECTION event `/correct` recorded (source `brain.correct`, in 0.6.0
/// as here), in event order. A CORRECTION logged by other means (`/log-event`) was never indexed
/// and is not; events whose data is not a JSON object are skipped; no `events` table means no
/// rows.
fn correction_rows(conn: &Connection) -> rusqlite::Result<Vec<IndexRow>> {
    let has_events: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events')",
        [],
        |row| row.get(0),
    )?;
    if !has_events {
        return Ok(Vec::new());
    }
    let mut rows = conn.prepare(
        "SELECT coalesce(CAST(ts AS TEXT), ''), \
           coalesce(json_extract(data_json, '$.category'), ''), \
           coalesce(json_extract(data_json, '$.summary'), ''), \
           coalesce(json_extract(data_json, '$.severity'), ''), \
           coalesce(json_extract(data_json, '$.final_text'), '') \
         FROM events WHERE type = 'CORRECTION' AND source = ?1 AND json_valid(data_json) \
           AND json_type(data_json) = 'object' \
         ORDER BY id",
    )?;
    let found = rows.query_map([super::correct::SOURCE], |row| {
        let text = |i| -> rusqlite::Result<String> {
            Ok(match row.get_ref(i)? {
                rusqlite::types::ValueRef::Text(bytes) => String::from_utf8_lossy(bytes).into(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Real(x) => x.to_string(),
                _ => String::new(),
            })
        };
        let ts = text(0)?;
        let category = text(1)?;
        let summary = text(2)?;
        let severity = text(3)?;
        let final_text: String = text(4)?.chars().take(INDEX_TEXT_CHARS).collect();
        let summary = if summary.is_empty() {
            severity
        } else {
            summary
        };
        Ok(IndexRow {
            text: format!("{category}: {summary} - {final_text}"),
            embed_date: ts.chars().take(10).collect(),
        })
    })?;
    found.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database with an `events` table holding `corrections` as (category, summary,
    /// severity, final text) CORRECTION events of `/correct`, one event of another type, and a
    /// CORRECTION logged through `/log-event` (never indexed).
    fn database_with(
        corrections: &[(&str, &str, &str, &str)],
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, \
             session INTEGER, type TEXT NOT NULL, source TEXT, data_json TEXT, tags_json TEXT);
             INSERT INTO events(ts, session, type, data_json) \
               VALUES ('2026-12-01T10:00:00+00:00', 1, 'OUTPUT', '{\"category\": \"CODE\"}');
             INSERT INTO events(ts, session, type, source, data_json) \
               VALUES ('2026-12-01T10:00:00+00:00', 0, 'CORRECTION', 'plugin.hook', \
               '{\"category\": \"tone\", \"summary\": \"logged\", \"final_text\": \"x\"}');",
        )
        .unwrap();
        for (category, summary, severity, final_text) in corrections {
            let data = serde_json::json!({
                "category": category, "summary": summary, "severity": severity,
                "final_text": final_text,
            });
            conn.execute(
                "INSERT INTO events(ts, session, type, source, data_json) \
                 VALUES ('2026-12-02T09:30:00.123456+00:00', 1, 'CORRECTION', 'brain.correct', ?1)",
                [data.to_string()],
            )
            .unwrap();
        }
        (dir, path)
    }

    fn rows(path: &Path) -> Vec<(i64, String, String)> {
        let conn = Connection::open(path).unwrap();
        let mut statement = conn
            .prepare("SELECT id, text, embed_date FROM brain_fts_content ORDER BY id")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// The texts of the rows matching `query`, or the error of a broken index.
    fn try_matches(path: &Path, query: &str) -> rusqlite::Result<Vec<String>> {
        let conn = Connection::open(path).unwrap();
        let mut statement =
            conn.prepare("SELECT text FROM brain_fts WHERE brain_fts MATCH ?1 ORDER BY rowid")?;
        let found = statement.query_map([query], |row| row.get(0))?;
        found.collect()
    }

    fn matches(path: &Path, query: &str) -> Vec<String> {
        try_matches(path, query).unwrap()
    }

    #[test]
    fn task_names_are_exact() {
        assert_eq!(Task::from_name("manifest"), Some(Task::Manifest));
        assert_eq!(Task::from_name("fts_rebuild"), Some(Task::FtsRebuild));
        assert_eq!(Task::from_name("patterns"), Some(Task::Patterns));
        assert_eq!(Task::from_name("Manifest"), None);
        assert_eq!(Task::from_name(""), None);
    }

    #[test]
    fn the_index_is_built_from_the_corrections_and_a_second_run_changes_nothing() {
        let long = "x".repeat(INDEX_TEXT_CHARS + 50);
        let (_dir, path) = database_with(&[
            ("CODE", "Use pathlib", "minor", "from pathlib import Path"),
            ("TONE", "", "major", "Status: done."),
            ("CODE", "Keep it short", "minor", &long),
        ]);
        let first = rebuild_index(&path).unwrap();
        assert_eq!(
            first,
            Rebuilt {
                kept: 0,
                added: 3,
                removed: 0
            }
        );
        let built = rows(&path);
        let texts: Vec<&str> = built.iter().map(|(_, text, _)| text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "CODE: Use pathlib - from pathlib import Path",
                "TONE: major - Status: done.",
                &format!("CODE: Keep it short - {}", "x".repeat(INDEX_TEXT_CHARS)),
            ]
        );
        assert!(built.iter().all(|(_, _, date)| date == "2026-12-02"));
        assert_eq!(matches(&path, "pathlib"), [texts[0]]);

        let second = rebuild_index(&path).unwrap();
        assert_eq!(
            second,
            Rebuilt {
                kept: 3,
                added: 0,
                removed: 0
            }
        );
        assert_eq!(rows(&path), built, "same rows, same ids");
    }

    #[test]
    fn lost_stray_and_drifted_rows_are_mended_and_other_sources_kept() {
        let (_dir, path) = database_with(&[
            ("CODE", "Use pathlib", "minor", "from pathlib import Path"),
            ("TONE", "Be direct", "major", "Status: done."),
        ]);
        rebuild_index(&path).unwrap();
        {
            let conn = Connection::open(&path).unwrap();
            // A lost row, a stray one, a row of another source, and an index entry removed
            // behind its row's back (the index no longer agrees with the content table).
            conn.execute_batch(
                "DELETE FROM brain_fts_content WHERE text LIKE 'TONE:%';
                 INSERT INTO brain_fts_content(source, file_type, text, embed_date) \
                   VALUES ('corrections', 'correction', 'CODE: stray - gone', '2026-01-01');
                 INSERT INTO brain_fts_content(source, file_type, text, embed_date) \
                   VALUES ('notes.md', 'markdown', 'a note about pathlib', '2026-01-01');
                 INSERT INTO brain_fts(brain_fts, rowid, source, file_type, text, embed_date) \
                   SELECT 'delete', id, source, file_type, text, embed_date \
                   FROM brain_fts_content WHERE text LIKE 'CODE: Use%';",
            )
            .unwrap();
        }
        // The index still points at the lost row (the search fails), no longer holds the other
        // one, and never saw the rows added behind its back.
        assert!(try_matches(&path, "direct").is_err());
        assert!(matches(&path, "pathlib").is_empty());

        let mended = rebuild_index(&path).unwrap();
        assert_eq!(
            mended,
            Rebuilt {
                kept: 1,
                added: 1,
                removed: 1
            }
        );
        assert_eq!(
            matches(&path, "direct"),
            ["TONE: Be direct - Status: done."]
        );
        assert_eq!(
            matches(&path, "pathlib"),
            [
                "CODE: Use pathlib - from pathlib import Path",
                "a note about pathlib"
            ]
        );
        assert!(matches(&path, "stray").is_empty());
    }

    #[test]
    fn a_database_without_events_gets_empty_tables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.db");
        assert_eq!(rebuild_index(&path).unwrap(), Rebuilt::default());
        assert!(rows(&path).is_empty());
    }
}
