//! Keeps the in-memory copy of the brain's full-text index ([`Ranker`]) in step with
//! `system.db`, and tokenizes query words as FTS5 does.
//!
//! `system.db` changes on every event the brain logs, and the index changes far less often (a
//! correction, the SDK adding or deleting rows, a rebuild, the table created or dropped). Each
//! search asks a dedicated read-only connection for `PRAGMA data_version` (a few microseconds);
//! only when another connection committed does it read a fingerprint of the index (the schema
//! cookie and FTS5's averages and structure records, which FTS5 rewrites on every change of
//! the index or of its configuration), and only when that differs does it copy the index again.
//!
//! Query words are tokenized by SQLite itself, through a private in-memory FTS5 table with the
//! same tokenizer, so stemming and Unicode folding cannot drift from the index's; the tokens of
//! recent words are cached (at most [`CACHED_WORDS`] words).
//!
//! Knows nothing of how a query is built or how hits are printed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::recall_index::{self, LoadError, Ranker};

/// How many query words' tokens are kept; past that the cache starts again empty.
pub const CACHED_WORDS: usize = 8192;

/// How long reading the index waits for a writer's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// The tokens of one query word.
pub type Tokens = Arc<[Box<str>]>;

/// What a search runs on, as of the database's current state.
#[derive(Debug, Clone)]
pub enum Snapshot {
    /// There is no `brain_fts`: nothing can be found.
    NoIndex,
    /// `brain_fts` exists but is not the layout the copy reproduces (or its records could not
    /// be read): SQLite's own search must answer.
    Sql,
    /// The copy of the index.
    Memory(Arc<Ranker>),
}

/// What identifies one state of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    schema_version: i64,
    /// The averages and structure records, when the index's data table exists.
    records: Option<Vec<(i64, Vec<u8>)>>,
}

/// The watched state.
#[derive(Debug, Default)]
struct Watch {
    connection: Option<Connection>,
    data_version: Option<i64>,
    fingerprint: Option<Fingerprint>,
    snapshot: Option<Snapshot>,
}

/// The live copy of one database's brain index, and the query tokenizer.
#[derive(Debug)]
pub struct LiveIndex {
    path: PathBuf,
    watch: Mutex<Watch>,
    tokenizer: Mutex<Option<QueryTokenizer>>,
}

impl LiveIndex {
    /// The index of the database at `path`; nothing is read before the first search.
    pub fn new(path: PathBuf) -> LiveIndex {
        LiveIndex {
            path,
            watch: Mutex::new(Watch::default()),
            tokenizer: Mutex::new(None),
        }
    }

    /// The index as the database holds it now, copied again if it changed since last asked.
    pub fn snapshot(&self) -> rusqlite::Result<Snapshot> {
        let mut watch = lock(&self.watch);
        let result = self.refresh(&mut watch);
        if result.is_err() {
            // A connection that failed mid-read starts again next time.
            *watch = Watch::default();
        }
        result
    }

    fn refresh(&self, watch: &mut Watch) -> rusqlite::Result<Snapshot> {
        let connection = match watch.connection.take() {
            Some(connection) => connection,
            None => {
                let connection = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                connection.busy_timeout(BUSY_TIMEOUT)?;
                connection
            }
        };
        let connection = watch.connection.insert(connection);
        let data_version: i64 =
            connection.query_row("PRAGMA data_version", [], |row| row.get(0))?;
        if let (Some(seen), Some(snapshot)) = (watch.data_version, &watch.snapshot) {
            if seen == data_version {
                return Ok(snapshot.clone());
            }
        }
        let transaction = connection.transaction()?;
        let fingerprint = fingerprint(&transaction)?;
        if let (Some(seen), Some(snapshot)) = (&watch.fingerprint, &watch.snapshot) {
            if *seen == fingerprint {
                watch.data_version = Some(data_version);
                return Ok(snapshot.clone());
            }
        }
        let snapshot = load(&transaction, fingerprint.records.is_some())?;
        transaction.finish()?;
        if let Snapshot::Memory(ranker) = &snapshot {
            tracing::debug!(
                rows = ranker.n_rows(),
                postings = ranker.n_instances(),
                "copied the brain's full-text index"
            );
        }
        watch.data_version = Some(data_version);
        watch.fingerprint = Some(fingerprint);
        watch.snapshot = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The tokens of each of `words`, as the index's tokenizer cuts them.
    pub fn tokens(&self, words: &[&str]) -> rusqlite::Result<Vec<Tokens>> {
        let mut guard = lock(&self.tokenizer);
        let tokenizer = match guard.take() {
            Some(tokenizer) => tokenizer,
            None => QueryTokenizer::new()?,
        };
        let tokenizer = guard.insert(tokenizer);
        let result = tokenizer.tokens(words);
        if result.is_err() {
            *guard = None;
        }
        result
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reads the fingerprint of the index.
fn fingerprint(connection: &Connection) -> rusqlite::Result<Fingerprint> {
    let schema_version: i64 =
        connection.query_row("PRAGMA schema_version", [], |row| row.get(0))?;
    let has_data = connection
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'brain_fts_data'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    let records = if has_data {
        let mut statement = connection.prepare_cached(
            "SELECT id, block FROM brain_fts_data WHERE id IN (?1, ?2) ORDER BY id",
        )?;
        let rows = statement.query_map(
            [recall_index::AVERAGES_ID, recall_index::STRUCTURE_ID],
            |row| {
                let block = match row.get_ref(1)? {
                    rusqlite::types::ValueRef::Blob(bytes)
                    | rusqlite::types::ValueRef::Text(bytes) => bytes.to_vec(),
                    _ => Vec::new(),
                };
                Ok((row.get(0)?, block))
            },
        )?;
        Some(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    } else {
        None
    };
    Ok(Fingerprint {
        schema_version,
        records,
    })
}

/// Decides what searches run on, and copies the index when it can.
fn load(connection: &Connection, has_data: bool) -> rusqlite::Result<Snapshot> {
    let create: Option<Option<String>> = connection
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'brain_fts' COLLATE NOCASE",
            [],
            |row| row.get(0),
        )
        .optional()?;
    let Some(create) = create else {
        return Ok(Snapshot::NoIndex);
    };
    let supported = create
        .as_deref()
        .is_some_and(recall_index::is_supported_layout);
    if !supported || !has_data || has_rank_option(connection) {
        return Ok(Snapshot::Sql);
    }
    match Ranker::load(connection) {
        Ok(ranker) => Ok(Snapshot::Memory(Arc::new(ranker))),
        Err(error @ (LoadError::Malformed(_) | LoadError::Value(_))) => {
            tracing::warn!(%error, "searching the brain index through SQLite");
            Ok(Snapshot::Sql)
        }
        Err(LoadError::Read(error)) => Err(error),
    }
}

/// Whether the index has a configured `rank` (another ranking than plain bm25), or a
/// configuration that cannot be read.
fn has_rank_option(connection: &Connection) -> bool {
    connection
        .query_row(
            "SELECT count(*) FROM brain_fts_config WHERE k = 'rank'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map_or(true, |n| n > 0)
}

/// Tokenizes words with the brain index's tokenizer, through a private in-memory FTS5 table.
#[derive(Debug)]
struct QueryTokenizer {
    connection: Connection,
    cache: HashMap<String, Tokens>,
}

impl QueryTokenizer {
    fn new() -> rusqlite::Result<QueryTokenizer> {
        let connection = Connection::open_in_memory()?;
        connection.execute_batch(
            "CREATE VIRTUAL TABLE words USING fts5(word, tokenize='porter unicode61');
             CREATE VIRTUAL TABLE word_tokens USING fts5vocab(words, instance);",
        )?;
        Ok(QueryTokenizer {
            connection,
            cache: HashMap::new(),
        })
    }

    fn tokens(&mut self, words: &[&str]) -> rusqlite::Result<Vec<Tokens>> {
        let mut missing: Vec<&str> = words
            .iter()
            .copied()
            .filter(|word| !self.cache.contains_key(*word))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            if self.cache.len() + missing.len() > CACHED_WORDS {
                self.cache.clear();
            }
            for (word, tokens) in missing.iter().zip(self.tokenize(&missing)?) {
                self.cache.insert((*word).to_owned(), tokens);
            }
        }
        Ok(words
            .iter()
            .map(|word| {
                self.cache
                    .get(*word)
                    .cloned()
                    .unwrap_or_else(|| Arc::from([]))
            })
            .collect())
    }

    /// Tokenizes `words` in one pass: each is a row, read back in offset order.
    fn tokenize(&self, words: &[&str]) -> rusqlite::Result<Vec<Tokens>> {
        let mut tokens: Vec<Vec<(i64, Box<str>)>> = vec![Vec::new(); words.len()];
        {
            let mut insert = self
                .connection
                .prepare_cached("INSERT INTO words (rowid, word) VALUES (?1, ?2)")?;
            for (row, word) in (1_i64..).zip(words) {
                insert.execute(rusqlite::params![row, word])?;
            }
            let mut select = self
                .connection
                .prepare_cached("SELECT doc, offset, term FROM word_tokens")?;
            let mut rows = select.query([])?;
            while let Some(row) = rows.next()? {
                let doc: i64 = row.get(0)?;
                let slot = usize::try_from(doc - 1)
                    .ok()
                    .and_then(|at| tokens.get_mut(at));
                if let Some(slot) = slot {
                    slot.push((row.get(1)?, row.get_ref(2)?.as_str()?.into()));
                }
            }
        }
        self.connection.execute("DELETE FROM words", [])?;
        Ok(tokens
            .into_iter()
            .map(|mut word| {
                word.sort_by_key(|(offset, _)| *offset);
                word.into_iter().map(|(_, token)| token).collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
