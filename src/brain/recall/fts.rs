//! Reading the brain's FTS5 index: SQLite's own search, and the in-memory copy of
//! `recall_live` where it can answer exactly, both giving the same [`FtsRow`]s. Only this part
//! of recall touches the database; it knows nothing of scores, modes or printing.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension};

use super::{TOP_K, phrases_expression};
use crate::brain::recall_live::{LiveIndex, Snapshot};

/// The search error a caller cannot treat as "nothing found": the database could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot search the brain index")]
pub struct SearchError(#[source] rusqlite::Error);

/// One row of the FTS index as the search returns it. Text columns that hold NULL or an empty
/// string read as `None`, as 0.6.0's `or` defaults treat them; a non-text value reads as its
/// text form.
#[derive(Debug, Clone, PartialEq)]
pub struct FtsRow {
    /// The content row's id.
    pub rowid: i64,
    /// Where the text came from (`corrections` for rows added by corrections).
    pub source: Option<String>,
    /// The kind of text (`correction`).
    pub file_type: Option<String>,
    /// The indexed text.
    pub text: Option<String>,
    /// The local date the row was indexed, `YYYY-MM-DD`.
    pub embed_date: Option<String>,
    /// FTS5's bm25 rank (negative; lower is better); `None` when SQLite gives NULL.
    pub rank: Option<f64>,
}

/// The best [`TOP_K`] rows of the brain index for `match_expression`, best rank first.
///
/// Read-only. A brain without a `brain_fts` table, and an expression FTS5 rejects, find
/// nothing (0.6.0 answers no rows for any query error); only a failure to read the database
/// (busy, I/O, corruption) is an error.
pub fn search(connection: &Connection, match_expression: &str) -> Result<Vec<FtsRow>, SearchError> {
    match query_index(connection, match_expression) {
        Ok(rows) => Ok(rows),
        // SQLITE_ERROR is SQLite's code for a statement that cannot run as written: a missing
        // table, a MATCH on a table that is not FTS5, an FTS5 syntax error.
        Err(error) if is_statement_error(&error) => Ok(Vec::new()),
        Err(error) => Err(SearchError(error)),
    }
}

/// The same rows as [`search`] of the `OR` of `words`, ranked on the in-memory copy of the
/// index kept by `index`; `connection` reads the best rows' content. Falls back to SQLite's own
/// search where the copy cannot answer exactly: an index of another layout, a word with a NUL
/// (FTS5 reads its query only up to one), a content row missing.
pub fn search_words(
    index: &LiveIndex,
    connection: &Connection,
    words: &[&str],
) -> Result<Vec<FtsRow>, SearchError> {
    if words.is_empty() {
        // `""`, an empty phrase, matches nothing.
        return Ok(Vec::new());
    }
    let sql = || search(connection, &phrases_expression(words));
    if words.iter().any(|word| word.contains('\0')) {
        return sql();
    }
    let ranker = match index.snapshot().map_err(SearchError)? {
        Snapshot::NoIndex => return Ok(Vec::new()),
        Snapshot::Sql => return sql(),
        Snapshot::Memory(ranker) => ranker,
    };
    let tokens = index.tokens(words).map_err(SearchError)?;
    let phrases: Vec<&[Box<str>]> = tokens.iter().map(|tokens| &tokens[..]).collect();
    let mut rows = Vec::with_capacity(TOP_K);
    for (rowid, rank) in ranker.top(&phrases, TOP_K) {
        match content_row(connection, rowid, rank) {
            Ok(Some(row)) => rows.push(row),
            // The content table lost the row after the copy was made, or never had it: what
            // FTS5 does then is SQLite's to say.
            Ok(None) => return sql(),
            Err(error) if is_statement_error(&error) => return sql(),
            Err(error) => return Err(SearchError(error)),
        }
    }
    Ok(rows)
}

/// The content of row `rowid` as FTS5 reads it for an external-content table.
fn content_row(connection: &Connection, rowid: i64, rank: f64) -> rusqlite::Result<Option<FtsRow>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, source, file_type, text, embed_date FROM brain_fts_content WHERE id = ?1",
    )?;
    statement
        .query_row([rowid], |row| fts_row(row, Some(rank)))
        .optional()
}

/// Whether the SQLite library behind `connection` has FTS5 compiled in (`PRAGMA
/// compile_options` lists `ENABLE_FTS5`): without it every recall finds nothing, so the daemon
/// checks once at startup and says so.
pub fn fts5_compiled_in(connection: &Connection) -> rusqlite::Result<bool> {
    let mut statement = connection.prepare("PRAGMA compile_options")?;
    let options = statement.query_map([], |row| row.get::<_, String>(0))?;
    for option in options {
        if option? == "ENABLE_FTS5" {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `error` is SQLite's SQLITE_ERROR, whether it came while preparing the statement
/// (`SqlInputError`, which carries the offending offset) or while stepping it.
fn is_statement_error(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(error, _) | rusqlite::Error::SqlInputError { error, .. } => {
            error.code == ErrorCode::Unknown
        }
        _ => false,
    }
}

/// The row whose first five columns are `rowid, source, file_type, text, embed_date`, found at
/// `rank`.
fn fts_row(row: &rusqlite::Row<'_>, rank: Option<f64>) -> rusqlite::Result<FtsRow> {
    Ok(FtsRow {
        rowid: row.get(0)?,
        source: text_column(row, 1)?,
        file_type: text_column(row, 2)?,
        text: text_column(row, 3)?,
        embed_date: text_column(row, 4)?,
        rank,
    })
}

/// Reads the text column `index` of an FTS row; NULL and `""` are `None`.
fn text_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<String>> {
    let text = match row.get_ref(index)? {
        ValueRef::Null => return Ok(None),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    Ok((!text.is_empty()).then_some(text))
}

/// Runs the FTS query.
fn query_index(connection: &Connection, match_expression: &str) -> rusqlite::Result<Vec<FtsRow>> {
    let mut statement = connection.prepare_cached(
        "SELECT rowid, source, file_type, text, embed_date, rank FROM brain_fts \
         WHERE brain_fts MATCH ?1 ORDER BY rank LIMIT ?2",
    )?;
    let limit = i64::try_from(TOP_K).expect("TOP_K is a small constant");
    let rows = statement.query_map(rusqlite::params![match_expression, limit], |row| {
        fts_row(row, row.get(5)?)
    })?;
    rows.collect()
}
