//! The brain's event log through the store: the `events` table as the Python SDK 0.6.0 has it,
//! one transaction for an event and its outbox row, and the JSONL copy.

use std::path::Path;
use std::time::SystemTime;

use gradata::brain::events::{BrainEvent, EVENTS_JSONL, EventLog, PlatformEnv};
use gradata::brain::pyjson::{self, Value};
use gradata::store::{
    EventId, Kind, NewEvent, Options, OutboxEntry, OutboxOutcome, QueueLimit, Store,
};
use rusqlite::Connection;

fn open(dir: &Path) -> Store {
    Store::open(&Options::new(dir)).unwrap()
}

fn db(dir: &Path) -> Connection {
    Connection::open(dir.join("system.db")).unwrap()
}

fn columns(conn: &Connection, table: &str) -> Vec<String> {
    let mut statement = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .unwrap();
    statement
        .query_map([table], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn count(conn: &Connection, table: &str) -> i64 {
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
        row.get(0)
    })
    .unwrap()
}

fn brain_event(event_type: &str, data: &str) -> BrainEvent {
    let Value::Object(data) = pyjson::from_str(data).unwrap() else {
        panic!("not an object")
    };
    BrainEvent::new(
        SystemTime::now(),
        0,
        event_type,
        "plugin.hook",
        data,
        vec![],
        &PlatformEnv::from_lookup(|_| None),
    )
}

fn outbox(id: &str, limit: Option<QueueLimit>) -> OutboxEntry {
    OutboxEntry {
        event: NewEvent::new(
            "brain-x",
            EventId::parse(id).unwrap(),
            Kind::Event,
            &serde_json::json!({"k": 1}),
        ),
        limit,
    }
}

const EVENTS_COLUMNS: [&str; 10] = [
    "id",
    "ts",
    "session",
    "type",
    "source",
    "data_json",
    "tags_json",
    "valid_from",
    "valid_until",
    "scope",
];

#[test]
fn a_fresh_store_creates_the_events_table_and_its_indexes() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let conn = db(dir.path());
    assert_eq!(columns(&conn, "events"), EVENTS_COLUMNS);
    let mut statement = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name")
        .unwrap();
    let indexes: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        indexes,
        [
            "idx_events_session",
            "idx_events_session_type",
            "idx_events_type"
        ]
    );
    let autoincrement: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'events' AND sql LIKE '%AUTOINCREMENT%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(autoincrement, 1);
    let scope: String = {
        conn.execute("INSERT INTO events (ts, type) VALUES ('t', 'X')", [])
            .unwrap();
        conn.query_row("SELECT scope FROM events", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!(scope, "local");
}

#[test]
fn an_existing_events_table_is_left_alone_but_for_the_three_later_columns() {
    let dir = tempfile::tempdir().unwrap();
    let original = "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, \
                    session INTEGER, type TEXT NOT NULL, source TEXT, data_json TEXT, \
                    tags_json TEXT, tenant_id TEXT)";
    {
        let conn = db(dir.path());
        conn.execute_batch(original).unwrap();
        conn.execute(
            "INSERT INTO events (ts, session, type, tenant_id) VALUES ('t', 4, 'OLD', 'x')",
            [],
        )
        .unwrap();
    }
    drop(open(dir.path()));
    drop(open(dir.path()));
    let conn = db(dir.path());
    assert_eq!(
        columns(&conn, "events"),
        [
            "id",
            "ts",
            "session",
            "type",
            "source",
            "data_json",
            "tags_json",
            "tenant_id",
            "valid_from",
            "valid_until",
            "scope"
        ]
    );
    let kept: (i64, String, String) = conn
        .query_row("SELECT session, type, tenant_id FROM events", [], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .unwrap();
    assert_eq!(kept, (4, "OLD".to_owned(), "x".to_owned()));

    // A table the SDK already brought up to date is not touched at all.
    let dir = tempfile::tempdir().unwrap();
    let complete = "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, \
                    session INTEGER, type TEXT NOT NULL, source TEXT, data_json TEXT, \
                    tags_json TEXT, valid_from TEXT, valid_until TEXT, scope TEXT DEFAULT 'local', \
                    schema_version INTEGER DEFAULT 1)";
    db(dir.path()).execute_batch(complete).unwrap();
    drop(open(dir.path()));
    let sql: String = db(dir.path())
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'events'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(sql, complete);
}

#[tokio::test]
async fn an_event_and_its_outbox_row_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let event = brain_event("LOG", r#"{"a": 1}"#);
    let recorded = store
        .record_brain_event(event.row(), Some(outbox("E1", None)))
        .await
        .unwrap();
    assert!(matches!(recorded.outbox, OutboxOutcome::Queued(_)));
    let again = store
        .record_brain_event(event.row(), Some(outbox("E1", None)))
        .await
        .unwrap();
    assert!(matches!(again.outbox, OutboxOutcome::Duplicate(_)));
    assert_eq!(again.row.0, recorded.row.0 + 1);
    let alone = store.record_brain_event(event.row(), None).await.unwrap();
    assert!(matches!(alone.outbox, OutboxOutcome::NotAsked));
    let conn = db(dir.path());
    assert_eq!(count(&conn, "events"), 3);
    assert_eq!(count(&conn, "sync_queue"), 1);
    let data_json: String = conn
        .query_row(
            "SELECT data_json FROM events WHERE id = ?1",
            [recorded.row.0],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(data_json, r#"{"a": 1, "platform_source": "raw-python"}"#);
}

#[tokio::test]
async fn a_full_queue_skips_the_outbox_row_and_keeps_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let limit = QueueLimit {
        max_rows: 1,
        max_bytes: 1 << 20,
    };
    let event = brain_event("LOG", "{}");
    let first = store
        .record_brain_event(event.row(), Some(outbox("E1", Some(limit))))
        .await
        .unwrap();
    assert!(matches!(first.outbox, OutboxOutcome::Queued(_)));
    let second = store
        .record_brain_event(event.row(), Some(outbox("E2", Some(limit))))
        .await
        .unwrap();
    assert!(
        matches!(second.outbox, OutboxOutcome::SkippedQueueFull),
        "{:?}",
        second.outbox
    );
    let conn = db(dir.path());
    assert_eq!(count(&conn, "events"), 2);
    assert_eq!(count(&conn, "sync_queue"), 1);
}

/// Makes every insert into `table` fail, as a full or broken table would (`DROP TRIGGER refuse`
/// undoes it).
fn refuse_inserts(dir: &Path, table: &str) {
    db(dir)
        .execute_batch(&format!(
            "CREATE TRIGGER refuse BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'no'); END"
        ))
        .unwrap();
}

#[tokio::test]
async fn a_failing_outbox_insert_does_not_lose_the_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    refuse_inserts(dir.path(), "sync_queue");
    let recorded = store
        .record_brain_event(brain_event("LOG", "{}").row(), Some(outbox("E1", None)))
        .await
        .unwrap();
    assert!(
        matches!(recorded.outbox, OutboxOutcome::Failed(_)),
        "{:?}",
        recorded.outbox
    );
    let conn = db(dir.path());
    assert_eq!(count(&conn, "events"), 1);
    assert_eq!(count(&conn, "sync_queue"), 0);
}

#[tokio::test]
async fn a_failing_event_insert_writes_no_outbox_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    refuse_inserts(dir.path(), "events");
    let result = store
        .record_brain_event(brain_event("LOG", "{}").row(), Some(outbox("E1", None)))
        .await;
    assert!(result.is_err());
    // And a write grouped with it is not taken down: the next one commits.
    db(dir.path()).execute_batch("DROP TRIGGER refuse").unwrap();
    store
        .record_brain_event(brain_event("LOG", "{}").row(), None)
        .await
        .unwrap();
    let conn = db(dir.path());
    assert_eq!(count(&conn, "events"), 1);
    assert_eq!(count(&conn, "sync_queue"), 0);
}

#[tokio::test]
async fn the_log_appends_the_python_line_after_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let log = EventLog::new(store.clone(), dir.path());
    let first = brain_event("CHECKPOINT", r#"{"reason": "ünïcode"}"#);
    let second = brain_event("LOG", "{}");
    let logged = log.record(&first, None).await.unwrap();
    assert!(logged.jsonl_appended);
    log.record(&second, None).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join(EVENTS_JSONL)).unwrap();
    assert_eq!(text, first.jsonl_line() + &second.jsonl_line());
    assert!(text.contains("ünïcode"), "{text}");

    // An append that fails leaves the committed row.
    let broken = tempfile::tempdir().unwrap();
    std::fs::create_dir(broken.path().join(EVENTS_JSONL)).unwrap();
    let log = EventLog::new(store, broken.path());
    let logged = log.record(&second, None).await.unwrap();
    assert!(!logged.jsonl_appended);
    assert_eq!(count(&db(dir.path()), "events"), 3);
}

#[tokio::test]
async fn the_highest_integer_session_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.max_event_session().await.unwrap(), None);
    db(dir.path())
        .execute_batch(
            "INSERT INTO events (ts, session, type) VALUES ('t', 3, 'A'), \
             ('t', 5, 'C'), ('t', NULL, 'D'), ('t', 'x', 'E'), ('t', 9.5, 'F')",
        )
        .unwrap();
    assert_eq!(store.max_event_session().await.unwrap(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_records_append_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::new(open(dir.path()), dir.path());
    let long = "x".repeat(64 * 1024);
    let tasks: Vec<_> = (0..32)
        .map(|n| {
            let log = log.clone();
            let event = brain_event("LOG", &format!(r#"{{"n": {n}, "pad": "{long}"}}"#));
            tokio::spawn(async move { log.record(&event, None).await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().jsonl_appended);
    }
    let text = std::fs::read_to_string(dir.path().join(EVENTS_JSONL)).unwrap();
    let mut seen: Vec<i64> = text
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            value["data"]["n"].as_i64().unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..32).collect::<Vec<_>>());
}
