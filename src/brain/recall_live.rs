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
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Words with stems (porter), punctuation, case, diacritics and scripts unicode61 folds
    /// or splits, and words that tokenize into several tokens or none.
    const VOCABULARY: [&str; 40] = [
        "run",
        "running",
        "runs",
        "ran",
        "runner",
        "connection",
        "connected",
        "connect",
        "café",
        "cafe",
        "CAFÉ",
        "naïve",
        "Über",
        "uber",
        "straße",
        "don't",
        "it's",
        "foo-bar",
        "e-mail",
        "x.y.z",
        "linter",
        "linters",
        "LINT",
        "ünïcödé",
        "日本語",
        "🙂",
        "--",
        "\"quoted\"",
        "'single'",
        "comma,",
        "(paren)",
        "MiXeD",
        "1234",
        "12.5",
        "under_score",
        "ﬁle",
        "İstanbul",
        "generalization",
        "generalize",
        "a",
    ];

    const CREATE: &str = "CREATE TABLE brain_fts_content(id INTEGER PRIMARY KEY AUTOINCREMENT, \
             source, file_type, text, embed_date);
         CREATE VIRTUAL TABLE brain_fts USING fts5(source, file_type, text, embed_date, \
             content='brain_fts_content', content_rowid='id', tokenize='porter unicode61');";

    struct Db {
        _dir: tempfile::TempDir,
        path: PathBuf,
        connection: Connection,
    }

    fn database() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.db");
        let connection = Connection::open(&path).unwrap();
        // The test writes row by row; durability is not what it checks.
        connection
            .execute_batch("PRAGMA synchronous = OFF")
            .unwrap();
        Db {
            _dir: dir,
            path,
            connection,
        }
    }

    fn insert(connection: &Connection, columns: &[Option<String>; 4]) -> i64 {
        connection
            .execute(
                "INSERT INTO brain_fts_content (source, file_type, text, embed_date) \
                 VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![columns[0], columns[1], columns[2], columns[3]],
            )
            .unwrap();
        let rowid = connection.last_insert_rowid();
        connection
            .execute(
                "INSERT INTO brain_fts (rowid, source, file_type, text, embed_date) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![rowid, columns[0], columns[1], columns[2], columns[3]],
            )
            .unwrap();
        rowid
    }

    fn delete(connection: &Connection, rowid: i64) {
        connection
            .execute(
                "INSERT INTO brain_fts (brain_fts, rowid, source, file_type, text, embed_date) \
                 SELECT 'delete', id, source, file_type, text, embed_date \
                 FROM brain_fts_content WHERE id = ?1",
                [rowid],
            )
            .unwrap();
        connection
            .execute("DELETE FROM brain_fts_content WHERE id = ?1", [rowid])
            .unwrap();
    }

    fn memory(live: &LiveIndex) -> Arc<Ranker> {
        match live.snapshot().unwrap() {
            Snapshot::Memory(ranker) => ranker,
            other => panic!("the index was not copied: {other:?}"),
        }
    }

    /// SQLite's answer: `ORDER BY rank LIMIT k` of the OR of the quoted words.
    fn fts5_top(connection: &Connection, words: &[String], k: usize) -> Vec<(i64, u64)> {
        let expression = words
            .iter()
            .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" OR ");
        let mut statement = connection
            .prepare(
                "SELECT rowid, rank FROM brain_fts WHERE brain_fts MATCH ?1 ORDER BY rank LIMIT ?2",
            )
            .unwrap();
        statement
            .query_map(rusqlite::params![expression, k as i64], |row| {
                Ok((row.get(0)?, row.get::<_, f64>(1)?.to_bits()))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn live_top(live: &LiveIndex, words: &[String], k: usize) -> Vec<(i64, u64)> {
        let ranker = memory(live);
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let tokens = live.tokens(&words).unwrap();
        let phrases: Vec<&[Box<str>]> = tokens.iter().map(|t| &t[..]).collect();
        ranker
            .top(&phrases, k)
            .into_iter()
            .map(|(rowid, rank)| (rowid, rank.to_bits()))
            .collect()
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        let separator = prop::sample::select(vec![" ", "  ", ", ", "-", "\t", "; ", "/", "\n"]);
        prop::option::weighted(
            0.9,
            prop::collection::vec(
                (prop::sample::select(VOCABULARY.to_vec()), separator),
                0..14,
            )
            .prop_map(|parts| parts.into_iter().map(|(w, s)| format!("{w}{s}")).collect()),
        )
    }

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            6 => prop::sample::select(VOCABULARY.to_vec()).prop_map(str::to_owned),
            1 => (prop::sample::select(VOCABULARY.to_vec()), prop::sample::select(VOCABULARY.to_vec()))
                .prop_map(|(a, b)| format!("{a}-{b}")),
            1 => "[a-zé\\-\\.]{1,6}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// On random corpora (with deleted rows, in several segments) and random OR queries,
        /// the copy's top k is FTS5's: same rows, same order, same bm25 bits.
        #[test]
        fn the_copy_ranks_exactly_as_fts5(
            documents in prop::collection::vec([text(), text(), text(), text()], 1..40),
            deleted in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            later in prop::collection::vec([text(), text(), text(), text()], 0..8),
            queries in prop::collection::vec((prop::collection::vec(word(), 1..9), 1_usize..15), 1..8),
        ) {
            let db = database();
            db.connection.execute_batch(CREATE).unwrap();
            let mut rowids: Vec<i64> = documents.iter().map(|d| insert(&db.connection, d)).collect();
            for index in deleted {
                if rowids.len() > 1 {
                    let rowid = rowids.remove(index.index(rowids.len()));
                    delete(&db.connection, rowid);
                }
            }
            for document in &later {
                rowids.push(insert(&db.connection, document));
            }
            let live = LiveIndex::new(db.path.clone());
            for (words, k) in &queries {
                prop_assert_eq!(live_top(&live, words, *k), fts5_top(&db.connection, words, *k), "{:?}", words);
            }
        }
    }

    #[test]
    fn the_index_follows_rows_added_and_deleted_elsewhere_and_a_rebuild() {
        let db = database();
        db.connection.execute_batch(CREATE).unwrap();
        db.connection
            .execute_batch("CREATE TABLE events(x)")
            .unwrap();
        let live = LiveIndex::new(db.path.clone());
        let words = ["linter".to_owned()];
        assert!(live_top(&live, &words, 5).is_empty());
        let first = insert(
            &db.connection,
            &[None, None, Some("the linter".into()), None],
        );
        assert_eq!(
            live_top(&live, &words, 5),
            fts5_top(&db.connection, &words, 5)
        );
        assert_eq!(live_top(&live, &words, 5)[0].0, first);
        let copy = memory(&live);
        // A write elsewhere in the database changes data_version but not the index: the copy
        // is kept.
        db.connection
            .execute("INSERT INTO events VALUES (1)", [])
            .unwrap();
        db.connection
            .execute("INSERT INTO events VALUES (2)", [])
            .unwrap();
        assert!(
            Arc::ptr_eq(&copy, &memory(&live)),
            "the copy was made again for an unrelated write"
        );
        let second = insert(
            &db.connection,
            &[None, None, Some("linters linter".into()), None],
        );
        let found = live_top(&live, &words, 5);
        assert_eq!(found, fts5_top(&db.connection, &words, 5));
        assert_eq!(found.len(), 2);
        delete(&db.connection, first);
        let found = live_top(&live, &words, 5);
        assert_eq!(
            found.iter().map(|(rowid, _)| *rowid).collect::<Vec<_>>(),
            [second]
        );
        // Rows only in the content table, indexed by a rebuild.
        db.connection
            .execute(
                "INSERT INTO brain_fts_content (text) VALUES ('linter again')",
                [],
            )
            .unwrap();
        assert_eq!(live_top(&live, &words, 5).len(), 1);
        db.connection
            .execute("INSERT INTO brain_fts (brain_fts) VALUES ('rebuild')", [])
            .unwrap();
        assert_eq!(live_top(&live, &words, 5).len(), 2);
        assert_eq!(
            live_top(&live, &words, 5),
            fts5_top(&db.connection, &words, 5)
        );
        // The table dropped, then created again with another layout.
        db.connection.execute_batch("DROP TABLE brain_fts").unwrap();
        assert!(matches!(live.snapshot().unwrap(), Snapshot::NoIndex));
        db.connection
            .execute_batch(
                "CREATE VIRTUAL TABLE brain_fts USING fts5(source, file_type, text, embed_date, \
                 content='brain_fts_content', content_rowid='id', tokenize='unicode61')",
            )
            .unwrap();
        assert!(matches!(live.snapshot().unwrap(), Snapshot::Sql));
    }

    #[test]
    fn a_configured_rank_leaves_the_search_to_sqlite() {
        let db = database();
        db.connection.execute_batch(CREATE).unwrap();
        insert(&db.connection, &[None, None, Some("linter".into()), None]);
        let live = LiveIndex::new(db.path.clone());
        memory(&live);
        db.connection
            .execute(
                "INSERT INTO brain_fts (brain_fts, rank) VALUES ('rank', 'bm25(10.0)')",
                [],
            )
            .unwrap();
        assert!(matches!(live.snapshot().unwrap(), Snapshot::Sql));
    }

    #[test]
    fn query_words_are_tokenized_as_fts5_does_and_cached() {
        let live = LiveIndex::new(PathBuf::from("unused.db"));
        let tokens = live
            .tokens(&["Running", "foo-bar", "--", "CAFÉ", "Running"])
            .unwrap();
        fn text(t: &Tokens) -> Vec<&str> {
            t.iter().map(|s| &**s).collect()
        }
        assert_eq!(text(&tokens[0]), ["run"]);
        assert_eq!(text(&tokens[1]), ["foo", "bar"]);
        assert!(tokens[2].is_empty());
        assert_eq!(text(&tokens[3]), ["cafe"]);
        assert!(Arc::ptr_eq(&tokens[0], &tokens[4]));
        let again = live.tokens(&["Running"]).unwrap();
        assert!(
            Arc::ptr_eq(&tokens[0], &again[0]),
            "the cached tokens were not reused"
        );
    }
}
