use super::*;
use crate::brain::recall_live::Snapshot;

fn day(text: &str) -> Date {
    text.parse().expect("a test date")
}

#[test]
fn the_query_is_the_stem_and_the_first_200_code_points_of_the_preview() {
    let long = "é".repeat(300);
    let cut = "é".repeat(200);
    let cases = [
        ("src/Main.rs", "fix it", Some("Main fix it".to_owned())),
        ("a.tar.gz", "", Some("a.tar ".to_owned())),
        (".env", "x", Some(".env x".to_owned())),
        ("x.", "x", Some("x. x".to_owned())), // Python keeps a trailing dot in the stem
        ("x.py/..", "x", Some(".. x".to_owned())),
        ("..env", "", Some(". ".to_owned())),
        ("dir/", "", Some("dir ".to_owned())),
        ("", &long, Some(cut.clone())),
        ("f.md", &long, Some(format!("f {cut}"))),
        ("", "", None),
        ("", " \n\u{1f}", None), // blank by Python's strip
        ("/", "", None),
    ];
    for (path, preview, expected) in cases {
        assert_eq!(query(path, preview), expected, "{path:?} {preview:?}");
    }
}

#[test]
fn the_retrieval_mode_follows_0_6_0s_rules() {
    use RetrievalMode::*;
    // Expected modes are what 0.6.0's classifier answers for the same text.
    let cases = [
        ("\"", Keyword),
        ("\"a b c\"", Keyword),
        ("'x y z'", Keyword),
        ("Main fix the thing", Hybrid),
        ("main Fix", Hybrid),
        ("API is down now", Hybrid),
        ("AB yy", Keyword), // all upper case is no proper noun
        ("Aǅ yy", Hybrid),  // a title-case letter makes a word not all upper case
        ("É tu", Keyword),  // one code point is too short
        ("Éa tu", Hybrid),
        ("X", Keyword),
        ("two words", Keyword),
        ("What does it do", Hybrid), // capitalised: a proper noun first
        ("WHAT does it do", Semantic),
        ("how do linters treat tests", Semantic),
        ("three plain words", Hybrid),
    ];
    for (query, mode) in cases {
        assert_eq!(RetrievalMode::of(query), mode, "{query:?}");
    }
}

#[test]
fn the_match_expression_quotes_every_word() {
    let cases = [
        ("linter", "\"linter\""),
        ("a b", "\"a\" OR \"b\""),
        ("\"'quoted words'\"", "\"quoted\" OR \"words\""),
        (
            "say \"hi\" NEAR(x)",
            "\"say\" OR \"\"\"hi\"\"\" OR \"NEAR(x)\"",
        ),
        ("\"\"", "\"\""),
        ("   ", "\"\""),
    ];
    for (query, expression) in cases {
        assert_eq!(match_expression(query), expression, "{query:?}");
    }
}

#[test]
fn recency_falls_with_age_against_the_given_day() {
    let today = day("2026-12-07");
    let cases = [
        ("2026-12-07", 1.0),
        ("2026-12-08", 1.0), // the future
        ("2026-12-06", 0.992),
        ("2026-11-07", 1.0 - 30.0 * 0.008),
        ("2026-10-08", 0.52), // 60 days
        ("2026-10-07", 0.5),  // 61 days
        ("2020-01-01", 0.5),
        ("2026-12-7", 1.0),  // Python's %m and %d take one digit...
        ("2026-12- 7", 1.0), // ...and a space-padded day
        ("", 1.0),           // no date: no recency
        ("unknown", 1.0),
        ("garbage", 0.5),
        ("2026-02-30", 0.5),
        ("2026-00-05", 0.5),
        ("0000-01-01", 0.5),
        ("2026-12-07 ", 0.5),
        ("26-12-07", 0.5),
        ("2026-12-007", 0.5),
    ];
    for (date, weight) in cases {
        assert_eq!(recency_weight(date, today), weight, "{date:?}");
    }
}

#[test]
fn memory_types_follow_source_words_then_file_type() {
    let cases = [
        ("correction", "corrections", "semantic"),
        ("session", "corrections", "episodic"),
        ("template", "x", "procedural"),
        ("session", "Notes\\Gap-Analysis.md", "strategic"),
        ("general", "team/protocol.md", "procedural"),
        ("general", "loop-state.json", "episodic"),
        ("unheard-of", "", "semantic"),
    ];
    for (file_type, source, expected) in cases {
        assert_eq!(
            memory_type(file_type, source),
            expected,
            "{file_type} {source}"
        );
    }
}

#[test]
fn a_hit_without_rank_prints_an_integer_zero_and_scores_zero() {
    let row = FtsRow {
        rowid: 7,
        source: None,
        file_type: None,
        text: Some("x".repeat(600)),
        embed_date: None,
        rank: None,
    };
    let recall = rank(vec![row], RetrievalMode::Hybrid, day("2026-12-07"));
    let hit = &recall.hits[0];
    assert_eq!(hit.fts_rank, None);
    assert_eq!(hit.score, 0.0);
    assert_eq!(hit.confidence, Confidence::BelowThreshold);
    assert_eq!(hit.text.len(), 500);
    assert_eq!(
        recall.context(),
        format!(
            "{{'rowid': 7, 'source': '', 'file_type': 'general', 'text': '{}', \
                 'embed_date': '', 'fts_rank': 0, 'retrieval_mode': 'hybrid', 'raw_score': 0, \
                 'score': 0.0, 'confidence': 'below_threshold', 'recency_weight': 1.0, \
                 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': '', \
                 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}}",
            "x".repeat(500)
        )
    );
}

#[test]
fn confidence_labels_use_the_capped_score() {
    let cases = [
        (2.0, Confidence::High),
        (0.65, Confidence::High),
        (0.6499, Confidence::Medium),
        (0.5, Confidence::Medium),
        (0.35, Confidence::Low),
        (0.3499, Confidence::BelowThreshold),
        (0.0, Confidence::BelowThreshold),
    ];
    for (score, confidence) in cases {
        assert_eq!(
            Confidence::of(score, RetrievalMode::Semantic),
            confidence,
            "{score}"
        );
        assert_eq!(
            Confidence::of(score, RetrievalMode::Keyword),
            Confidence::KeywordMatch
        );
    }
}

/// A brain index laid out as the Python SDK creates it, with rows as its corrections (and
/// its other indexers) add them.
/// A database file with its live index.
struct TestDb {
    _dir: tempfile::TempDir,
    connection: Connection,
    live: LiveIndex,
}

impl std::ops::Deref for TestDb {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.connection
    }
}

impl TestDb {
    fn empty() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("system.db");
        let connection = Connection::open(&path).expect("database file");
        TestDb {
            _dir: dir,
            connection,
            live: LiveIndex::new(path),
        }
    }
}

/// [`recall`] on the live index, checked against the same recall through SQLite's search.
fn recall_on(
    db: &TestDb,
    file_path: &str,
    content_preview: &str,
    today: Date,
) -> Result<Recall, SearchError> {
    let recalled = recall(&db.live, db, file_path, content_preview, today)?;
    let through_sql = match query(file_path, content_preview) {
        Some(query) => {
            let rows = search(db, &match_expression(&query))?;
            rank(rows, RetrievalMode::of(&query), today)
        }
        None => Recall::default(),
    };
    assert_eq!(recalled, through_sql, "the live index and SQLite differ");
    Ok(recalled)
}

fn brain_index() -> TestDb {
    let connection = TestDb::empty();
    connection
            .execute_batch(
                "CREATE TABLE brain_fts_content(id INTEGER PRIMARY KEY AUTOINCREMENT, \
                     source, file_type, text, embed_date);
                 CREATE VIRTUAL TABLE brain_fts USING fts5(source, file_type, text, embed_date, \
                     content='brain_fts_content', content_rowid='id', tokenize='porter unicode61');",
            )
            .expect("FTS5 is compiled in");
    let rows: [(&str, Option<&str>, &str, &str); 6] = [
        (
            "corrections",
            Some("correction"),
            "CODE: Content change (cut: unwrap; added: expect) - use expect with a message, not unwrap",
            "2020-01-01",
        ),
        (
            "corrections",
            Some("correction"),
            "CONTENT: minor - the linter's warnings are errors in CI",
            "2999-01-01",
        ),
        (
            "corrections",
            None,
            "CONFIG: major - linters run before tests; \"quoted\" and it's",
            "garbage",
        ),
        (
            "notes/gap-analysis.md",
            Some("session"),
            "linter linter linter notes",
            "unknown",
        ),
        (
            "corrections",
            Some("correction"),
            "GENERAL: moderate - linting config\ttab é",
            "2020-01-01",
        ),
        (
            "corrections",
            Some("correction"),
            "CODE: unrelated text about dashes",
            "2020-01-01",
        ),
    ];
    for (source, file_type, text, embed_date) in rows {
        connection
            .execute(
                "INSERT INTO brain_fts_content (source, file_type, text, embed_date) \
                     VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![source, file_type, text, embed_date],
            )
            .expect("content row");
        connection
            .execute(
                "INSERT INTO brain_fts (rowid, source, file_type, text, embed_date) \
                     VALUES (last_insert_rowid(), ?1, ?2, ?3, ?4)",
                rusqlite::params![source, file_type, text, embed_date],
            )
            .expect("index row");
    }
    connection
}

/// The `context` 0.6.0 printed for the same rows and requests (CPython 3.11, SQLite 3.40).
const LINTER_CONTEXT: &str = "\
{'rowid': 4, 'source': 'notes/gap-analysis.md', 'file_type': 'session', 'text': 'linter linter linter notes', 'embed_date': 'unknown', 'fts_rank': 1.649464459591042e-06, 'retrieval_mode': 'keyword', 'raw_score': 1.649464459591042e-06, 'score': 0.0, 'confidence': 'keyword_match', 'recency_weight': 1.0, 'memory_weight': 1.0, 'memory_type': 'strategic', 'modified': 'unknown', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}
{'rowid': 3, 'source': 'corrections', 'file_type': 'general', 'text': 'CONFIG: major - linters run before tests; \"quoted\" and it\\'s', 'embed_date': 'garbage', 'fts_rank': 1.027289266221953e-06, 'retrieval_mode': 'keyword', 'raw_score': 1.027289266221953e-06, 'score': 0.0, 'confidence': 'keyword_match', 'recency_weight': 0.5, 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': 'garbage', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}
{'rowid': 2, 'source': 'corrections', 'file_type': 'correction', 'text': \"CONTENT: minor - the linter's warnings are errors in CI\", 'embed_date': '2999-01-01', 'fts_rank': 9.353948094975152e-07, 'retrieval_mode': 'keyword', 'raw_score': 9.353948094975152e-07, 'score': 0.0, 'confidence': 'keyword_match', 'recency_weight': 1.0, 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': '2999-01-01', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}";

/// Hybrid mode: re-sorted by score, so row 2 (recent) comes before row 3 (better rank,
/// unreadable date).
const HYBRID_CONTEXT: &str = "\
{'rowid': 2, 'source': 'corrections', 'file_type': 'correction', 'text': \"CONTENT: minor - the linter's warnings are errors in CI\", 'embed_date': '2999-01-01', 'fts_rank': 1.2153434948186979, 'retrieval_mode': 'hybrid', 'raw_score': 1.2153434948186979, 'score': 1.2153, 'confidence': 'high', 'recency_weight': 1.0, 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': '2999-01-01', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}
{'rowid': 3, 'source': 'corrections', 'file_type': 'general', 'text': 'CONFIG: major - linters run before tests; \"quoted\" and it\\'s', 'embed_date': 'garbage', 'fts_rank': 1.3347404906711116, 'retrieval_mode': 'hybrid', 'raw_score': 1.3347404906711116, 'score': 0.6674, 'confidence': 'high', 'recency_weight': 0.5, 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': 'garbage', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}
{'rowid': 4, 'source': 'notes/gap-analysis.md', 'file_type': 'session', 'text': 'linter linter linter notes', 'embed_date': 'unknown', 'fts_rank': 1.649464459591042e-06, 'retrieval_mode': 'hybrid', 'raw_score': 1.649464459591042e-06, 'score': 0.0, 'confidence': 'below_threshold', 'recency_weight': 1.0, 'memory_weight': 1.0, 'memory_type': 'strategic', 'modified': 'unknown', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}";

#[test]
fn recall_prints_what_0_6_0_prints_for_the_same_index() {
    let connection = brain_index();
    let today = day("2026-12-07");
    let keyword = recall_on(&connection, "", "linter", today).expect("readable index");
    assert!(
        matches!(connection.live.snapshot(), Ok(Snapshot::Memory(_))),
        "the search did not run on the in-memory copy"
    );
    assert_eq!(keyword.context(), LINTER_CONTEXT);
    let hybrid = recall_on(&connection, "", "Linter errors tests", today).expect("readable index");
    assert_eq!(hybrid.context(), HYBRID_CONTEXT);
    // With a path, the stem leads the query: "linter" alone matches the same three rows,
    // and two words with no capital are still keyword mode.
    let with_path = recall_on(&connection, "docs/linter.md", "", today).expect("readable index");
    assert_eq!(with_path.context(), LINTER_CONTEXT);
}

#[test]
fn recall_gives_structured_hits_beside_the_text() {
    let connection = brain_index();
    let recalled = recall_on(
        &connection,
        "",
        "unwrap expect message CI",
        day("2026-12-07"),
    )
    .expect("readable index");
    let ids: Vec<i64> = recalled.hits.iter().map(|hit| hit.rowid).collect();
    assert_eq!(ids, [1, 2]);
    let first = serde_json::to_value(&recalled.hits[0]).expect("plain data");
    assert_eq!(first["score"], 2.1167);
    assert_eq!(first["recency_weight"], 0.5);
    assert_eq!(first["confidence"], "high");
    assert_eq!(first["retrieval_mode"], "hybrid");
    assert_eq!(first["fts_rank"], 4.233471219630308);
    assert_eq!(first["memory_type"], "semantic");
}

#[test]
fn at_most_five_rows_are_recalled() {
    let connection = brain_index();
    for n in 0..10 {
        connection
            .execute(
                "INSERT INTO brain_fts_content (source, file_type, text, embed_date) \
                     VALUES ('corrections', 'correction', ?1, '2020-01-01')",
                [format!("many {n}")],
            )
            .expect("content row");
        connection
            .execute(
                "INSERT INTO brain_fts (rowid, source, file_type, text, embed_date) \
                     SELECT id, source, file_type, text, embed_date FROM brain_fts_content \
                     WHERE id = last_insert_rowid()",
                [],
            )
            .expect("index row");
    }
    let recalled = recall_on(&connection, "", "many", day("2026-12-07")).expect("readable index");
    assert_eq!(recalled.hits.len(), TOP_K);
    assert_eq!(recalled.context().lines().count(), TOP_K);
}

#[test]
fn a_brain_without_an_index_recalls_nothing_and_creates_nothing() {
    let connection = TestDb::empty();
    let recalled = recall_on(&connection, "a.rs", "linter", day("2026-12-07")).expect("no index");
    assert_eq!(recalled, Recall::default());
    assert_eq!(recalled.context(), "");
    let n_tables: i64 = connection
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
        .expect("schema readable");
    assert_eq!(n_tables, 0);
    // A table of that name that is not FTS5 cannot be matched: nothing found either.
    connection
        .execute_batch("CREATE TABLE brain_fts(x)")
        .expect("plain table");
    assert_eq!(search(&connection, "\"linter\"").expect("no match"), []);
}

#[test]
fn the_bundled_sqlite_has_fts5() {
    let connection = Connection::open_in_memory().expect("in-memory database");
    assert!(fts5_compiled_in(&connection).expect("compile options readable"));
}

#[test]
fn a_blank_query_searches_nothing_and_an_empty_expression_matches_nothing() {
    let connection = brain_index();
    assert_eq!(
        recall_on(&connection, "", "   ", day("2026-12-07")).expect("no query"),
        Recall::default()
    );
    assert_eq!(search(&connection, "\"\"").expect("readable index"), []);
}

#[test]
fn a_database_that_cannot_be_read_is_an_error() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("system.db");
    std::fs::write(&path, vec![b'x'; 4096]).expect("a file that is no database");
    let connection = Connection::open(&path).expect("opening is lazy");
    assert!(search(&connection, "\"linter\"").is_err());
}
