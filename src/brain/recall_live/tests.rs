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
