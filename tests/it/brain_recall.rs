//! `/brain-recall` follows the brain's full-text index while the daemon runs: rows another
//! process adds or deletes, a rebuild, the table dropped and created again. Every answer is
//! checked against SQLite's own search of the same index at that moment.

use std::path::Path;

use rusqlite::Connection;
use serde_json::json;

use crate::support;
use crate::support::daemon::{Daemon, Spec, post_json};

const CREATE: &str = "CREATE TABLE brain_fts_content (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT, file_type TEXT, text TEXT, embed_date TEXT
    );
    CREATE VIRTUAL TABLE brain_fts USING fts5(
        source, file_type, text, embed_date,
        content='brain_fts_content', content_rowid='id',
        tokenize='porter unicode61'
    );";

/// The query the recalls below send, and its FTS5 expression.
const PREVIEW: &str = "linters fail: run the linter";
const EXPRESSION: &str = "\"linters\" OR \"fail:\" OR \"run\" OR \"the\" OR \"linter\"";

fn add(conn: &Connection, text: &str) -> i64 {
    conn.execute(
        "INSERT INTO brain_fts_content (source, file_type, text, embed_date)
         VALUES ('corrections', 'correction', ?1, '2026-01-01')",
        [text],
    )
    .unwrap();
    let rowid = conn.last_insert_rowid();
    conn.execute(
        "INSERT INTO brain_fts (rowid, source, file_type, text, embed_date)
         VALUES (?1, 'corrections', 'correction', ?2, '2026-01-01')",
        (rowid, text),
    )
    .unwrap();
    rowid
}

fn delete(conn: &Connection, rowid: i64) {
    conn.execute(
        "INSERT INTO brain_fts (brain_fts, rowid, source, file_type, text, embed_date)
         SELECT 'delete', id, source, file_type, text, embed_date
         FROM brain_fts_content WHERE id = ?1",
        [rowid],
    )
    .unwrap();
    conn.execute("DELETE FROM brain_fts_content WHERE id = ?1", [rowid])
        .unwrap();
}

/// What SQLite's own search finds now: (rowid, |rank|), best first, at most 5.
fn sqlite_finds(conn: &Connection) -> Vec<(i64, f64)> {
    let mut statement = conn
        .prepare("SELECT rowid, rank FROM brain_fts WHERE brain_fts MATCH ?1 ORDER BY rank LIMIT 5")
        .unwrap();
    statement
        .query_map([EXPRESSION], |row| {
            Ok((row.get(0)?, row.get::<_, f64>(1)?.abs()))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// What the daemon recalls now: (rowid, fts_rank), in its order (keyword mode: FTS order).
fn recalled(daemon: &Daemon) -> Vec<(i64, f64)> {
    let response = post_json(
        daemon.addr(),
        "/brain-recall",
        &json!({"content_preview": format!("\"{PREVIEW}\"")}),
    );
    assert_eq!(response.status, 200);
    let answer = response.json();
    answer["relevant_corrections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| {
            (
                hit["rowid"].as_i64().unwrap(),
                hit["fts_rank"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn open(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

#[test]
fn brain_recall_follows_rows_added_and_deleted_by_another_process() {
    let (guard, dir) = support::temp_dir();
    let conn = open(&dir);
    conn.execute_batch(CREATE).unwrap();
    let first = add(&conn, "the linter fails on config_loader");
    add(&conn, "nothing to see here");
    let daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();

    let found = recalled(&daemon);
    assert_eq!(found, sqlite_finds(&conn));
    assert_eq!(found.iter().map(|hit| hit.0).collect::<Vec<_>>(), [first]);

    // A row added while the daemon runs is recalled by the next request, ranked as SQLite
    // ranks it (a better match comes first).
    let second = add(&conn, "linters: run the linter before the linter runs");
    let found = recalled(&daemon);
    assert_eq!(found, sqlite_finds(&conn));
    assert_eq!(
        found.iter().map(|hit| hit.0).collect::<Vec<_>>(),
        [second, first]
    );

    // A deleted row is no longer recalled.
    delete(&conn, first);
    let found = recalled(&daemon);
    assert_eq!(found, sqlite_finds(&conn));
    assert_eq!(found.iter().map(|hit| hit.0).collect::<Vec<_>>(), [second]);

    // Rows written to the content table only are found after a rebuild of the index.
    conn.execute(
        "INSERT INTO brain_fts_content (source, file_type, text, embed_date)
         VALUES ('notes', 'session', 'run it', '2026-01-01')",
        [],
    )
    .unwrap();
    let third = conn.last_insert_rowid();
    assert_eq!(recalled(&daemon).len(), 1);
    conn.execute("INSERT INTO brain_fts (brain_fts) VALUES ('rebuild')", [])
        .unwrap();
    let found = recalled(&daemon);
    assert_eq!(found, sqlite_finds(&conn));
    assert!(found.iter().any(|hit| hit.0 == third), "{found:?}");

    // The index dropped: nothing is recalled; created and filled again: recalled again.
    conn.execute_batch("DROP TABLE brain_fts; DROP TABLE brain_fts_content;")
        .unwrap();
    assert_eq!(recalled(&daemon), []);
    conn.execute_batch(CREATE).unwrap();
    let again = add(&conn, "the linter again");
    let found = recalled(&daemon);
    assert_eq!(found, sqlite_finds(&conn));
    assert_eq!(found.iter().map(|hit| hit.0).collect::<Vec<_>>(), [again]);
    drop(daemon);
    drop(guard);
}
