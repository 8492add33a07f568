//! The SDK's own tables a correction writes beside its events: the `observation_dedup`
//! sighting, the full-text index row and the `pending_approvals` row.
//!
//! The index row is written on a connection of its own, on the blocking pool (with a busy
//! handler, as any second writer of a WAL database: it tries again every millisecond, where
//! SQLite's own pauses grow to 100 ms), not through the store's writer: the index is
//! the brain's, shared with the Python SDK, and its tables are created here, exactly as the SDK
//! creates them, when missing. The connection is kept for the next correction (opening one and
//! creating the tables again cost more than the insert) and dropped after a failure. It never
//! checkpoints the WAL itself: SQLite's default would have it copy the WAL into the database
//! inside a correction whenever the WAL is past 1,000 pages, which the store's checkpointer does
//! off every request's path. The searches stay read-only. The dedup sighting (step 2) goes
//! through the same connection, so that this service's two writers of the brain's own tables
//! never wait on each other's lock.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rusqlite::Connection;

use super::{Error, INDEX_TEXT_CHARS, Prepared};
use crate::brain::dedup;
use crate::brain::handle::Brain;
use crate::brain::recall;

/// How long the index insert waits for another writer of the database.
pub(super) const INDEX_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The index tables, as the Python SDK creates them (brain spec §2).
pub(super) const CREATE_INDEX: &str = "CREATE TABLE IF NOT EXISTS brain_fts_content(\
        id INTEGER PRIMARY KEY AUTOINCREMENT, source, file_type, text, embed_date);
    CREATE VIRTUAL TABLE IF NOT EXISTS brain_fts USING fts5(source, file_type, text, embed_date, \
        content='brain_fts_content', content_rowid='id', tokenize='porter unicode61');";

impl Brain {
    /// Writes the correction's row of the full-text index. The correction and its lesson stand
    /// without it: a failure is logged, not answered as an error the client would retry (and
    /// learn twice from).
    pub(super) async fn index(&self, category: &str, prepared: &Prepared) -> Result<(), Error> {
        let row = index_text(category, prepared);
        let database = self.learning.database.clone();
        let connection = Arc::clone(&self.learning.index);
        let indexed = tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            let indexed = index_correction(&mut connection, &database, &row);
            if indexed.is_err() {
                *connection = None;
            }
            indexed
        });
        match indexed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                tracing::error!(
                    error = %crate::logging::Causes(&err),
                    "a correction was learned but could not be indexed for recall"
                );
                Ok(())
            }
            Err(err) => Err(Error::Interrupted(err)),
        }
    }

    /// Records the sighting of this correction in `observation_dedup` and answers whether it
    /// was seen within the window before (brain spec §6.9 step 7). A failure to read or write
    /// the table is logged and counts as a first sighting, as in 0.6.0: the dedup must not stop
    /// a correction from being learned.
    pub(super) async fn seen_before(
        &self,
        category: &str,
        prepared: &Prepared,
        session: i64,
    ) -> Result<bool, Error> {
        let database = self.learning.database.clone();
        let connection = Arc::clone(&self.learning.index);
        let fingerprint = dedup::fingerprint(category, &prepared.old, &prepared.new);
        let category = category.to_owned();
        let now = crate::brain::events::python_utc_isoformat(std::time::SystemTime::now());
        // On the index's connection: one of this service's side writes at a time, so that they
        // do not wait on each other's locks (see `open_index`).
        let sighting = tokio::task::spawn_blocking(move || {
            let mut kept = connection.lock().unwrap_or_else(PoisonError::into_inner);
            let connection = match &mut *kept {
                Some(open) => open,
                None => kept.insert(open_index(&database)?),
            };
            let sighting = dedup::sight(
                connection,
                &fingerprint,
                &category,
                (session > 0).then_some(session),
                &now,
            );
            if sighting.is_err() {
                *kept = None;
            }
            sighting
        })
        .await
        .map_err(Error::Interrupted)?;
        Ok(match sighting {
            Ok(sighting) => sighting.duplicate,
            Err(err) => {
                tracing::error!(
                    error = %crate::logging::Causes(&err),
                    "the correction's observation could not be checked for a duplicate"
                );
                false
            }
        })
    }
}

/// One row of the recall index.
#[derive(Debug, Clone)]
pub(super) struct IndexRow {
    pub(super) text: String,
    pub(super) embed_date: String,
}

/// The index row of a correction: `"<CATEGORY>: <summary> - <final text>"` (§6.8).
pub(super) fn index_text(category: &str, prepared: &Prepared) -> IndexRow {
    let summary = if prepared.instruction.text.is_empty() {
        prepared.measure.severity.as_str()
    } else {
        prepared.instruction.text.as_str()
    };
    let final_text: String = prepared.new.chars().take(INDEX_TEXT_CHARS).collect();
    IndexRow {
        text: format!("{category}: {summary} - {final_text}"),
        embed_date: recall::local_today().to_string(),
    }
}

/// A new lesson waiting for approval, as the SDK's `pending_approvals` table lists it.
#[derive(Debug, Clone)]
pub(super) struct ReviewRow {
    pub(super) category: String,
    pub(super) description: String,
    pub(super) draft: String,
    pub(super) fin: String,
    pub(super) severity: &'static str,
    pub(super) correction_id: String,
    pub(super) created: String,
}

/// Lists `row` in the `pending_approvals` table of the database at `database` when the SDK has
/// created that table (gradata does not create it); answers whether it was listed.
pub(super) fn queue_for_review(
    database: &std::path::Path,
    row: &ReviewRow,
) -> rusqlite::Result<bool> {
    let connection = Connection::open(database)?;
    connection.busy_timeout(INDEX_BUSY_TIMEOUT)?;
    let exists: i64 = connection.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'pending_approvals'",
        [],
        |found| found.get(0),
    )?;
    if exists == 0 {
        return Ok(false);
    }
    connection.execute(
        "INSERT INTO pending_approvals (lesson_category, lesson_description, draft_text, \
         final_text, severity, correction_event_id, agent_type, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7)",
        (
            &row.category,
            &row.description,
            &row.draft,
            &row.fin,
            row.severity,
            &row.correction_id,
            &row.created,
        ),
    )?;
    Ok(true)
}

/// The pages SQLite lets the index's connection leave in the WAL: none, checkpoints are the
/// store's checkpointer's (see the module doc).
pub(super) const INDEX_AUTOCHECKPOINT_PAGES: u32 = 0;

/// How long the index's connection pauses between two tries of a write lock another connection
/// holds. SQLite's own schedule grows to 100 ms a try, far longer than the store's writer holds
/// the lock: under concurrent corrections its sleeps, not the writes, made the slowest answers.
pub(super) const INDEX_BUSY_PAUSE: Duration = Duration::from_millis(1);

/// The index connection's busy handler: tries again after [`busy_pause`]'s pause, or gives up.
pub(super) fn retry_soon(tries: i32) -> bool {
    match busy_pause(tries) {
        Some(pause) => {
            std::thread::sleep(pause);
            true
        }
        None => false,
    }
}

/// The pause before the next try of a busy lock after `tries` tries: [`INDEX_BUSY_PAUSE`], until
/// about [`INDEX_BUSY_TIMEOUT`] has been spent waiting (`None`: give up).
pub(super) fn busy_pause(tries: i32) -> Option<Duration> {
    let pauses = u32::try_from(tries).unwrap_or(0);
    (INDEX_BUSY_PAUSE.saturating_mul(pauses) < INDEX_BUSY_TIMEOUT).then_some(INDEX_BUSY_PAUSE)
}

/// How the index's connection commits: without an fsync of its own (WAL `NORMAL`). What it
/// writes is derived: the index rows are rebuilt from the CORRECTION events by `/maintain
/// fts_rebuild`, and a lost dedup sighting only lets a repeated edit teach once more. A crash of
/// the service loses none of it; a power cut may lose the last few, which the next commit of
/// the store's writer, fsynced, would otherwise have carried. The events themselves, and
/// `lessons.md`, are fsynced before `/correct` answers.
pub(super) const INDEX_SYNCHRONOUS: &str = "NORMAL";

/// Opens the index's connection to the database at `database`, creating the tables if missing.
/// It also records the dedup sightings: this service's two writers of the brain's own tables
/// share it, one at a time.
pub(super) fn open_index(database: &std::path::Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(database)?;
    connection.busy_handler(Some(retry_soon))?;
    connection.pragma_update(None, "wal_autocheckpoint", INDEX_AUTOCHECKPOINT_PAGES)?;
    connection.pragma_update(None, "synchronous", INDEX_SYNCHRONOUS)?;
    connection.execute_batch(CREATE_INDEX)?;
    Ok(connection)
}

/// Inserts `row` in the index of the database at `database`, on `connection`, opened first if
/// `None`. The tables are created when the connection is opened: a brain whose index was
/// dropped behind our back gets an error here, then a new connection that creates them again.
pub(super) fn index_correction(
    connection: &mut Option<Connection>,
    database: &std::path::Path,
    row: &IndexRow,
) -> rusqlite::Result<()> {
    let connection = match connection {
        Some(open) => open,
        None => connection.insert(open_index(database)?),
    };
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    transaction.execute(
        "INSERT INTO brain_fts_content(source, file_type, text, embed_date) \
         VALUES ('corrections', 'correction', ?1, ?2)",
        (&row.text, &row.embed_date),
    )?;
    let id = transaction.last_insert_rowid();
    transaction.execute(
        "INSERT INTO brain_fts(rowid, source, file_type, text, embed_date) \
         VALUES (?1, 'corrections', 'correction', ?2, ?3)",
        (id, &row.text, &row.embed_date),
    )?;
    transaction.commit()
}
