//! The `sync_queue` schema and its additive migrations (DESIGN §4), and the brain's `events`
//! table, which the service creates beside it when missing.
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
/// - `idx_sync_queue_without_event_id`: rows written without an `event_id` (by the original
///   daemon or the SDK), which each open backfills from their payload: without it, that backfill
///   read every row of the queue at every start. gradata's own rows all have an id, so they
///   never enter it.
const ADDED_INDEXES: &str = "
CREATE UNIQUE INDEX IF NOT EXISTS idx_sync_queue_event_id
    ON sync_queue(event_id) WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_claimable
    ON sync_queue(id) WHERE synced_at IS NULL AND dead_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_synced_at
    ON sync_queue(synced_at) WHERE synced_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_due
    ON sync_queue(next_attempt_at, id) WHERE synced_at IS NULL AND dead_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_without_event_id
    ON sync_queue(id) WHERE event_id IS NULL;
CREATE INDEX IF NOT EXISTS idx_sync_queue_leased
    ON sync_queue(lease_until)
    WHERE lease_until IS NOT NULL AND synced_at IS NULL AND dead_at IS NULL;
CREATE TABLE IF NOT EXISTS gradata_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
";

/// The queue's counts by state, one row kept by [`COUNTING_TRIGGERS`], so that status (`/health`,
/// `/metrics`, `gradata status`, the pending gauge) reads four numbers instead of counting rows.
/// The states are those of `RowState::sql_condition`; `pending_bytes` sums the pending payloads'
/// sizes in bytes, as the queue limits count them.
const COUNTS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS gradata_queue_counts (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pending INTEGER NOT NULL,
    pending_bytes INTEGER NOT NULL,
    dead INTEGER NOT NULL,
    synced INTEGER NOT NULL
);
";

/// Names of the triggers that keep `gradata_queue_counts`.
const COUNTING_TRIGGER_NAMES: [&str; 3] = [
    "gradata_queue_counts_insert",
    "gradata_queue_counts_update",
    "gradata_queue_counts_delete",
];

/// The triggers that keep `gradata_queue_counts` right, whoever writes the queue: SQLite runs them
/// inside every writer's own statement (this service, `gradata drain` or `gradata queue retry` in
/// another process, the Python SDK with the original columns), so the counts commit or roll back
/// with the rows they count.
///
/// They cost every write a little, enqueue most of all, so they are as small as they can be: one
/// `UPDATE` of the single counts row each, and the update trigger fires only when a column that
/// decides a row's state or size is set (`synced_at`, `dead_at`, `payload_json`); leases, timers
/// and attempts, which claims and retries change, do not fire it.
const COUNTING_TRIGGERS: &str = "
CREATE TRIGGER gradata_queue_counts_insert AFTER INSERT ON sync_queue BEGIN
    UPDATE gradata_queue_counts SET
        pending = pending + (NEW.synced_at IS NULL AND NEW.dead_at IS NULL),
        pending_bytes = pending_bytes + CASE WHEN NEW.synced_at IS NULL AND NEW.dead_at IS NULL
            THEN COALESCE(length(CAST(NEW.payload_json AS BLOB)), 0) ELSE 0 END,
        dead = dead + (NEW.synced_at IS NULL AND NEW.dead_at IS NOT NULL),
        synced = synced + (NEW.synced_at IS NOT NULL)
      WHERE id = 1;
END;
CREATE TRIGGER gradata_queue_counts_update
AFTER UPDATE OF synced_at, dead_at, payload_json ON sync_queue BEGIN
    UPDATE gradata_queue_counts SET
        pending = pending - (OLD.synced_at IS NULL AND OLD.dead_at IS NULL)
                          + (NEW.synced_at IS NULL AND NEW.dead_at IS NULL),
        pending_bytes = pending_bytes
            - CASE WHEN OLD.synced_at IS NULL AND OLD.dead_at IS NULL
                THEN COALESCE(length(CAST(OLD.payload_json AS BLOB)), 0) ELSE 0 END
            + CASE WHEN NEW.synced_at IS NULL AND NEW.dead_at IS NULL
                THEN COALESCE(length(CAST(NEW.payload_json AS BLOB)), 0) ELSE 0 END,
        dead = dead - (OLD.synced_at IS NULL AND OLD.dead_at IS NOT NULL)
                    + (NEW.synced_at IS NULL AND NEW.dead_at IS NOT NULL),
        synced = synced - (OLD.synced_at IS NOT NULL) + (NEW.synced_at IS NOT NULL)
      WHERE id = 1;
END;
CREATE TRIGGER gradata_queue_counts_delete AFTER DELETE ON sync_queue BEGIN
    UPDATE gradata_queue_counts SET
        pending = pending - (OLD.synced_at IS NULL AND OLD.dead_at IS NULL),
        pending_bytes = pending_bytes - CASE WHEN OLD.synced_at IS NULL AND OLD.dead_at IS NULL
            THEN COALESCE(length(CAST(OLD.payload_json AS BLOB)), 0) ELSE 0 END,
        dead = dead - (OLD.synced_at IS NULL AND OLD.dead_at IS NOT NULL),
        synced = synced - (OLD.synced_at IS NOT NULL)
      WHERE id = 1;
END;
";

/// Counts every row once, into `gradata_queue_counts`: the only full count of the queue, run when
/// the counting triggers are created.
const RECOUNT: &str = "
INSERT OR REPLACE INTO gradata_queue_counts (id, pending, pending_bytes, dead, synced)
SELECT 1,
    COALESCE(SUM(synced_at IS NULL AND dead_at IS NULL), 0),
    COALESCE(SUM(CASE WHEN synced_at IS NULL AND dead_at IS NULL
        THEN COALESCE(length(CAST(payload_json AS BLOB)), 0) ELSE 0 END), 0),
    COALESCE(SUM(synced_at IS NULL AND dead_at IS NOT NULL), 0),
    COALESCE(SUM(synced_at IS NOT NULL), 0)
  FROM sync_queue;
";

/// Fills `event_id` from the payload of the rows written without one, read through
/// `idx_sync_queue_without_event_id` alone (rows whose payload has no id stay there, and are read
/// again at the next open; they are few).
const BACKFILL_EVENT_IDS: &str = "
UPDATE OR IGNORE sync_queue INDEXED BY idx_sync_queue_without_event_id
   SET event_id = json_extract(payload_json, '$.event_id')
 WHERE event_id IS NULL
   AND json_valid(payload_json)
   AND json_type(payload_json, '$.event_id') = 'text'";

/// The brain's event log as the Python SDK 0.6.0 creates it: the
/// table and its three indexes. Created when missing, in the same migration as the queue; an
/// existing table (a brain the SDK wrote, possibly with more columns than these) is left as it
/// is, but for [`EVENTS_ADDED_COLUMNS`].
const EVENTS_DDL: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts TEXT NOT NULL,
    session INTEGER,
    type TEXT NOT NULL,
    source TEXT,
    data_json TEXT,
    tags_json TEXT,
    valid_from TEXT,
    valid_until TEXT,
    scope TEXT DEFAULT 'local'
);
CREATE INDEX IF NOT EXISTS idx_events_session ON events(session);
CREATE INDEX IF NOT EXISTS idx_events_type ON events(type);
CREATE INDEX IF NOT EXISTS idx_events_session_type ON events(session, type);
";

/// The columns the SDK adds to an older `events` table when they are missing, with its types.
const EVENTS_ADDED_COLUMNS: [(&str, &str); 3] = [
    ("valid_from", "TEXT"),
    ("valid_until", "TEXT"),
    ("scope", "TEXT DEFAULT 'local'"),
];

/// Creates the brain's `events` table and indexes when missing, and adds the SDK's three later
/// columns to an older table that lacks them. Nothing else of an existing table is changed.
fn ensure_events_table(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(EVENTS_DDL)?;
    let existing = table_columns(conn, "events")?;
    for (name, sql_type) in EVENTS_ADDED_COLUMNS {
        if !existing.iter().any(|column| column == name) {
            conn.execute_batch(&format!("ALTER TABLE events ADD COLUMN {name} {sql_type}"))?;
        }
    }
    Ok(())
}

/// The highest session number in the brain's event log, over the rows whose `session` is stored
/// as an integer (the SDK also writes other types there); `None` when there is none, or no table.
pub(crate) fn max_event_session(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    if table_columns(conn, "events")?.is_empty() {
        return Ok(None);
    }
    conn.query_row(
        "SELECT MAX(session) FROM events WHERE typeof(session) = 'integer'",
        [],
        |row| row.get(0),
    )
}

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
    add_counting_triggers(&tx)?;
    if create_table {
        ensure_events_table(&tx)?;
    }
    // Backfill from the payload. OR IGNORE leaves a second row with an already-used event_id at
    // NULL instead of failing the migration: both rows are still delivered, the cloud dedupes.
    tx.execute(BACKFILL_EVENT_IDS, [])?;
    tx.commit()
}

/// Creates `gradata_queue_counts` and its triggers, and counts the queue once, unless the
/// triggers are all there already: then the counts have been kept by them since, and opening
/// counts nothing (a count costs about 0.4 s per million rows, before the service is ready).
///
/// Runs inside the migration's write transaction, so no other writer can change the queue between
/// the count and the triggers taking over. Should another program ever drop a trigger (or rebuild
/// the table, which drops them all), the next open recreates them and counts again.
fn add_counting_triggers(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(COUNTS_TABLE)?;
    if has_counting_triggers(conn)? {
        return Ok(());
    }
    for name in COUNTING_TRIGGER_NAMES {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS {name}"))?;
    }
    conn.execute_batch(COUNTING_TRIGGERS)?;
    conn.execute_batch(RECOUNT)
}

/// Whether every trigger that keeps `gradata_queue_counts` exists (and so the counts can be read
/// as they are).
pub(crate) fn has_counting_triggers(conn: &Connection) -> rusqlite::Result<bool> {
    let mut statement = conn.prepare_cached(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'sync_queue'
            AND name IN (?1, ?2, ?3)",
    )?;
    let found: i64 = statement.query_row(COUNTING_TRIGGER_NAMES, |row| row.get(0))?;
    Ok(usize::try_from(found).is_ok_and(|found| found == COUNTING_TRIGGER_NAMES.len()))
}

fn column_names(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    table_columns(conn, "sync_queue")
}

/// The columns of `table`, in order; empty if there is no such table.
fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = statement.query_map([table], |row| row.get::<_, String>(0))?;
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

    /// (pending, pending_bytes, dead, synced) as the triggers keep them.
    fn kept(conn: &Connection) -> (i64, i64, i64, i64) {
        conn.query_row(
            "SELECT pending, pending_bytes, dead, synced FROM gradata_queue_counts",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .unwrap()
    }

    /// The same, counted from the rows.
    fn counted(conn: &Connection) -> (i64, i64, i64, i64) {
        conn.query_row(
            &RECOUNT
                .replace("INSERT OR REPLACE INTO gradata_queue_counts (id, pending, pending_bytes, dead, synced)", "")
                .replace("SELECT 1,", "SELECT"),
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .unwrap()
    }

    #[test]
    fn migration_counts_an_original_queue_once() {
        let mut conn = original_db();
        conn.execute_batch(
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at) VALUES ('{}', 'event', 1.0);
             INSERT INTO sync_queue (payload_json, kind, enqueued_at) VALUES ('{\"a\":1}', 'lesson', 1.0);
             INSERT INTO sync_queue (payload_json, kind, enqueued_at, synced_at)
             VALUES ('{}', 'event', 1.0, 2.0);",
        )
        .unwrap();
        migrate(&mut conn, false).unwrap();
        assert_eq!(kept(&conn), (2, 9, 0, 1));
        // Once counted, the triggers keep the counts: opening again counts nothing (a count made
        // now would repair the tampered value).
        conn.execute("UPDATE gradata_queue_counts SET synced = 1000", [])
            .unwrap();
        migrate(&mut conn, false).unwrap();
        assert_eq!(kept(&conn).3, 1000);
        // A trigger dropped by another program: the counts may be stale, so they are counted again.
        conn.execute_batch("DROP TRIGGER gradata_queue_counts_delete")
            .unwrap();
        migrate(&mut conn, false).unwrap();
        assert_eq!(kept(&conn), (2, 9, 0, 1));
        assert!(has_counting_triggers(&conn).unwrap());
    }

    /// Every change a writer can make, by any program (plain SQL here, with the original columns
    /// where the original daemon would write them), keeps the counts equal to a count of the rows.
    #[test]
    fn triggers_keep_the_counts_through_every_change() {
        let mut conn = original_db();
        migrate(&mut conn, false).unwrap();
        let steps = [
            // The original daemon's insert, and gradata's.
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at) VALUES ('{\"n\":1}', 'event', 1.0)",
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at, event_id)
             VALUES ('{\"n\":22}', 'event', 1.0, 'E2'), ('{\"n\":333}', 'event', 1.0, 'E3'),
                    ('{\"n\":4444}', 'event', 1.0, 'E4')",
            // A duplicate event id inserts nothing, and counts nothing.
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at, event_id)
             VALUES ('{}', 'event', 1.0, 'E2')
             ON CONFLICT(event_id) WHERE event_id IS NOT NULL DO NOTHING",
            // A claim and a retry settlement change no state.
            "UPDATE sync_queue SET lease_until = 9e9 WHERE id <= 3",
            "UPDATE sync_queue SET attempts = attempts + 1, lease_until = NULL, next_attempt_at = 5.0
              WHERE id = 1",
            // Delivered, dead, delivered after being made dead.
            "UPDATE sync_queue SET synced_at = 3.0, lease_until = NULL WHERE id = 2",
            "UPDATE sync_queue SET dead_at = 3.0 WHERE id IN (3, 4)",
            "UPDATE sync_queue SET synced_at = 4.0, dead_at = NULL WHERE id = 4",
            // Retried from dead; then an edited payload.
            "UPDATE sync_queue SET dead_at = NULL, next_attempt_at = NULL WHERE id = 3",
            "UPDATE sync_queue SET payload_json = '{\"edited\":true}' WHERE id = 3",
            // Purged, and a pending row deleted by another program.
            "DELETE FROM sync_queue WHERE synced_at IS NOT NULL AND synced_at < 3.5",
            "DELETE FROM sync_queue WHERE id = 1",
        ];
        for step in steps {
            conn.execute_batch(step).unwrap();
            assert_eq!(kept(&conn), counted(&conn), "after {step}");
        }
        assert_eq!(kept(&conn), (1, 15, 0, 1));
        // A rolled-back change leaves the counts as they were.
        let tx = conn.transaction().unwrap();
        tx.execute_batch("DELETE FROM sync_queue").unwrap();
        tx.rollback().unwrap();
        assert_eq!(kept(&conn), (1, 15, 0, 1));
    }

    /// Opening reads only the rows it has work for: the backfill searches its own index, and the
    /// count is made only when the triggers are created.
    #[test]
    fn opening_reads_no_row_it_has_no_work_for() {
        let mut conn = original_db();
        migrate(&mut conn, false).unwrap();
        let mut statement = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {BACKFILL_EVENT_IDS}"))
            .unwrap();
        let plan: Vec<String> = statement
            .query_map([], |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|step| step
                .starts_with("SCAN sync_queue USING INDEX idx_sync_queue_without_event_id")
                || step
                    .starts_with("SEARCH sync_queue USING INDEX idx_sync_queue_without_event_id")),
            "{plan:#?}"
        );
    }
}
