//! The `sync_queue` schema and its additive migrations (DESIGN §4).
//!
//! The base DDL is the original Python daemon's, byte for byte, so a brain's existing `system.db`
//! opens unchanged. Everything gradata needs beyond it is added with `ALTER TABLE … ADD COLUMN` and
//! `CREATE INDEX IF NOT EXISTS`, each guarded so that running the migration twice changes nothing.
//!
//! Invariant: no migration deletes, rewrites or reorders a row; the only data change is the backfill
//! of the new `event_id` column from `payload_json`.

use rusqlite::{Connection, OptionalExtension};

/// The original daemon's table, exactly (`Gradata/src/gradata/_migrations/__init__.py`).
pub(crate) const BASE_DDL: &str = "
CREATE TABLE IF NOT EXISTS sync_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payload_json TEXT NOT NULL,
    kind TEXT NOT NULL CHECK(kind IN ('correction','lesson','event')),
    enqueued_at REAL NOT NULL,
    synced_at REAL,
    attempts INTEGER DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS idx_sync_queue_pending ON sync_queue(synced_at) WHERE synced_at IS NULL;
";

/// Columns gradata adds, in the order they are added. Types only: SQLite's `ADD COLUMN` cannot add
/// constraints that would need a table rebuild, so uniqueness of `event_id` is a partial index.
const ADDED_COLUMNS: [(&str, &str); 5] = [
    ("event_id", "TEXT"),
    ("next_attempt_at", "REAL"),
    ("lease_until", "REAL"),
    ("dead_at", "REAL"),
    ("last_status", "INTEGER"),
];

/// Indexes gradata adds, each serving exactly one family of queries, so that no query of the
/// service's steady state visits a row it does not return (DESIGN §5: every cost of the queue is
/// O(batch), never O(queue)):
///
/// - `idx_sync_queue_event_id`: idempotent enqueue (the uniqueness of `event_id`).
/// - `idx_sync_queue_claimable`: pending rows by id, for explicit drains (`id > cursor`) and the
///   oldest pending row.
/// - `idx_sync_queue_synced_at`: retention, which deletes delivered rows by age.
/// - `idx_sync_queue_due`: the background worker's claim and its next wake-up. Pending rows by
///   timer: rows never tried (`next_attempt_at IS NULL`, which SQLite sorts first) form one range
///   in id order, due retries another (`next_attempt_at <= now`), so neither rows waiting in
///   backoff nor dead rows are ever visited.
/// - `idx_sync_queue_leased`: the few pending rows a drainer holds, whose wake-up is their lease's
///   end, and which opening releases.
const ADDED_INDEXES: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS idx_sync_queue_event_id
    ON sync_queue(event_id) WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_claimable
    ON sync_queue(id) WHERE synced_at IS NULL AND dead_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_synced_at
    ON sync_queue(synced_at) WHERE synced_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_due
    ON sync_queue(next_attempt_at, id) WHERE synced_at IS NULL AND dead_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_leased
    ON sync_queue(lease_until)
    WHERE lease_until IS NOT NULL AND synced_at IS NULL AND dead_at IS NULL;
CREATE TABLE IF NOT EXISTS gradata_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
";

/// Whether the queue table exists in this database.
pub(crate) fn has_queue_table(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sync_queue'",
        [],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// Whether every column gradata adds is present.
pub(crate) fn is_migrated(conn: &Connection) -> rusqlite::Result<bool> {
    let existing = column_names(conn)?;
    Ok(ADDED_COLUMNS
        .iter()
        .all(|(name, _)| existing.iter().any(|column| column == name)))
}

/// Creates the base table when asked to, then brings an existing table up to gradata's schema.
///
/// Runs in one transaction: a crash half-way leaves the database as it was.
pub(crate) fn migrate(conn: &mut Connection, create_table: bool) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    if create_table {
        tx.execute_batch(BASE_DDL)?;
    }
    let existing = column_names(&tx)?;
    for (name, sql_type) in ADDED_COLUMNS {
        if !existing.iter().any(|column| column == name) {
            tx.execute_batch(&format!(
                "ALTER TABLE sync_queue ADD COLUMN {name} {sql_type}"
            ))?;
        }
    }
    tx.execute_batch(ADDED_INDEXES)?;
    // Backfill from the payload. OR IGNORE leaves a second row with an already-used event_id at
    // NULL instead of failing the migration: both rows are still delivered, the cloud dedupes.
    tx.execute(
        "UPDATE OR IGNORE sync_queue
            SET event_id = json_extract(payload_json, '$.event_id')
          WHERE event_id IS NULL
            AND json_valid(payload_json)
            AND json_type(payload_json, '$.event_id') = 'text'",
        [],
    )?;
    tx.commit()
}

fn column_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info('sync_queue')")?;
    let names = statement.query_map([], |row| row.get::<_, String>(0))?;
    names.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn original_db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(BASE_DDL).unwrap();
        conn
    }

    #[test]
    fn migration_adds_columns_and_is_idempotent() {
        let mut conn = original_db();
        migrate(&mut conn, false).unwrap();
        let first = column_names(&conn).unwrap();
        migrate(&mut conn, false).unwrap();
        assert_eq!(first, column_names(&conn).unwrap());
        for (name, _) in ADDED_COLUMNS {
            assert!(first.iter().any(|c| c == name), "missing column {name}");
        }
    }

    #[test]
    fn backfill_keeps_duplicates_as_null_instead_of_failing() {
        let mut conn = original_db();
        for payload in [
            r#"{"event_id":"A","correction":{}}"#,
            r#"{"event_id":"A","correction":{}}"#,
            r#"{"event_id":7}"#,
            "not json",
        ] {
            conn.execute(
                "INSERT INTO sync_queue (payload_json, kind, enqueued_at) VALUES (?1, 'correction', 1.0)",
                [payload],
            )
            .unwrap();
        }
        migrate(&mut conn, false).unwrap();
        let ids: Vec<Option<String>> = conn
            .prepare("SELECT event_id FROM sync_queue ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(ids, vec![Some("A".to_owned()), None, None, None]);
    }
}
