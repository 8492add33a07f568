//! Read-only queries: counts, listings and status values. They run on the store's read connection
//! and, thanks to WAL, never wait for (or hold up) the writer thread or another process's writes.

use std::time::{Duration, SystemTime};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension};

use super::types::{RowId, RowState};
use super::{Error, from_unix, schema};

/// Queue counts at one instant.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Stats {
    /// Rows waiting to be delivered.
    pub pending: u64,
    /// Rows rejected for good.
    pub dead: u64,
    /// Rows delivered and not yet purged.
    pub synced: u64,
    /// Pending rows currently leased by a drainer.
    pub leased: u64,
    /// Total size of the pending payloads, in bytes.
    pub pending_bytes: u64,
    /// When the oldest pending row was enqueued.
    #[serde(skip)]
    pub oldest_pending_at: Option<SystemTime>,
}

impl Stats {
    /// Age of the oldest pending row at `now`.
    pub fn oldest_pending_age(&self, now: SystemTime) -> Option<Duration> {
        self.oldest_pending_at
            .map(|at| now.duration_since(at).unwrap_or_default())
    }
}

/// One row, as `gradata queue list` and `GET /v1/queue` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QueueEntry {
    /// Row id.
    pub id: RowId,
    /// The event's id, if the row has one.
    pub event_id: Option<String>,
    /// The row's kind.
    pub kind: String,
    /// The row's state.
    pub state: RowState,
    /// Unix seconds.
    pub enqueued_at: f64,
    /// Unix seconds, when synced.
    pub synced_at: Option<f64>,
    /// Unix seconds, when dead.
    pub dead_at: Option<f64>,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Unix seconds, when a pending row is waiting on a backoff timer.
    pub next_attempt_at: Option<f64>,
    /// The last HTTP status received for it.
    pub last_status: Option<u16>,
    /// The last error recorded for it.
    pub last_error: Option<String>,
    /// Size of the payload in bytes.
    pub payload_bytes: i64,
}

/// Counts by state and the oldest pending row, in time that does not grow with the queue: the
/// counts are the ones the triggers on `sync_queue` keep (see `schema::COUNTING_TRIGGERS`), the
/// leased rows are read from their own index (they are few), and the oldest pending row is the
/// first entry of the index of claimable rows. `GET /health`, `GET /metrics`, `gradata status` and
/// the service's status line run it, and a count of rows there cost about 0.4 s per million.
///
/// "Oldest" is the lowest pending id, the first enqueued; a row another program wrote with an
/// earlier `enqueued_at` later is not looked for. A database whose counting triggers are missing
/// (a read-only look at a database an older gradata migrated) is counted the slow way.
pub(super) fn stats(conn: &Connection) -> Result<Stats, Error> {
    let Some(counts) = kept_counts(conn)? else {
        return counted_stats(conn);
    };
    let leased: i64 = conn
        .prepare_cached(LEASED_SQL)?
        .query_row([], |row| row.get(0))?;
    let oldest_pending_at = conn
        .prepare_cached(OLDEST_PENDING_SQL)?
        .query_row([i64::MIN], |row| Ok(lenient_real(row.get_ref(0)?)))
        .optional()?
        .flatten()
        .map(from_unix);
    Ok(Stats {
        pending: counts.pending,
        dead: counts.dead,
        synced: counts.synced,
        leased: count(leased),
        pending_bytes: counts.pending_bytes,
        oldest_pending_at,
    })
}

/// Pending rows under a lease, from the index of leased rows alone. A lease is a token, not a
/// deadline: every one counts, whatever its value next to this clock (the range from the lowest
/// REAL only keeps the read a search of the index).
const LEASED_SQL: &str = "
SELECT COUNT(*) FROM sync_queue INDEXED BY idx_sync_queue_leased
 WHERE lease_until IS NOT NULL AND synced_at IS NULL AND dead_at IS NULL
   AND lease_until >= -1.7976931348623157e308";

/// When the lowest pending id was enqueued: one step into the index of claimable rows (the range
/// `id >= ?1`, bound to the lowest id there can be, makes it a search rather than a walk).
const OLDEST_PENDING_SQL: &str = "
SELECT enqueued_at FROM sync_queue INDEXED BY idx_sync_queue_claimable
 WHERE synced_at IS NULL AND dead_at IS NULL AND id >= ?1
 ORDER BY id LIMIT 1";

/// The queue's counts as the triggers keep them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    pending: u64,
    pending_bytes: u64,
    dead: u64,
    synced: u64,
}

/// The counts kept by the triggers on `sync_queue`; `None` when this database does not have all of
/// them, whose counts (if any) could then be stale.
fn kept_counts(conn: &Connection) -> Result<Option<Counts>, Error> {
    if !schema::has_counting_triggers(conn)? {
        return Ok(None);
    }
    let counts = conn
        .prepare_cached(
            "SELECT pending, pending_bytes, dead, synced FROM gradata_queue_counts WHERE id = 1",
        )?
        .query_row([], |row| {
            Ok(Counts {
                pending: count(row.get(0)?),
                pending_bytes: count(row.get(1)?),
                dead: count(row.get(2)?),
                synced: count(row.get(3)?),
            })
        })
        .optional()?;
    Ok(counts)
}

/// [`stats`] by counting rows, without reading a delivered row: the pending and dead rows are read
/// through the original daemon's partial index of undelivered rows, and the delivered ones are
/// counted from their own partial index alone. A database missing those indexes (every migration
/// creates them) is counted the slow way.
fn counted_stats(conn: &Connection) -> Result<Stats, Error> {
    let mut statement = conn
        .prepare_cached(&stats_sql(true))
        .or_else(|_| conn.prepare_cached(&stats_sql(false)))?;
    let stats = statement.query_row([], |row| {
        Ok(Stats {
            pending: count(row.get(0)?),
            dead: count(row.get(1)?),
            synced: count(row.get(2)?),
            leased: count(row.get(3)?),
            pending_bytes: count(row.get(4)?),
            oldest_pending_at: row.get::<_, Option<f64>>(5)?.map(from_unix),
        })
    })?;
    Ok(stats)
}

/// The query of [`stats`]; `indexed` names the indexes it must use.
fn stats_sql(indexed: bool) -> String {
    let pending = RowState::Pending.sql_condition();
    let dead = RowState::Dead.sql_condition();
    let synced = RowState::Synced.sql_condition();
    let (undelivered_index, delivered_index) = if indexed {
        (
            "INDEXED BY idx_sync_queue_pending",
            "INDEXED BY idx_sync_queue_synced_at",
        )
    } else {
        ("", "")
    };
    // Pending and dead rows are both undelivered (`synced_at IS NULL`, as their conditions say):
    // only those rows are visited for them.
    format!(
        "SELECT
            COALESCE(SUM(CASE WHEN {pending} THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN {dead} THEN 1 ELSE 0 END), 0),
            (SELECT COUNT(*) FROM sync_queue {delivered_index} WHERE {synced}),
            COALESCE(SUM(CASE WHEN {pending} AND lease_until IS NOT NULL THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN {pending} THEN length(CAST(payload_json AS BLOB)) ELSE 0 END), 0),
            MIN(CASE WHEN {pending} THEN enqueued_at END)
         FROM sync_queue {undelivered_index} WHERE synced_at IS NULL"
    )
}

/// [`stats`] of a table gradata has not migrated yet, from the original daemon's columns alone:
/// every row not synced is pending (the original has no dead rows and no leases).
pub(super) fn original_stats(conn: &Connection) -> Result<Stats, Error> {
    let stats = conn.query_row(
        "SELECT
            COALESCE(SUM(CASE WHEN synced_at IS NULL THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN synced_at IS NOT NULL THEN 1 ELSE 0 END), 0),
            COALESCE(SUM(CASE WHEN synced_at IS NULL
                              THEN length(CAST(payload_json AS BLOB)) ELSE 0 END), 0),
            MIN(CASE WHEN synced_at IS NULL THEN enqueued_at END)
         FROM sync_queue",
        [],
        |row| {
            Ok(Stats {
                pending: count(row.get(0)?),
                dead: 0,
                synced: count(row.get(1)?),
                leased: 0,
                pending_bytes: count(row.get(2)?),
                oldest_pending_at: row.get::<_, Option<f64>>(3)?.map(from_unix),
            })
        },
    )?;
    Ok(stats)
}

/// Pending rows and their payload bytes, as the triggers keep them (counted through the partial
/// index of claimable rows in a database without them).
pub(super) fn pending(conn: &Connection) -> Result<(u64, u64), Error> {
    if let Some(counts) = kept_counts(conn)? {
        return Ok((counts.pending, counts.pending_bytes));
    }
    let sql = format!(
        "SELECT COUNT(*), COALESCE(SUM(length(CAST(payload_json AS BLOB))), 0)
           FROM sync_queue WHERE {}",
        RowState::Pending.sql_condition()
    );
    let (rows, bytes) = conn
        .prepare_cached(&sql)?
        .query_row([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))?;
    Ok((count(rows), count(bytes)))
}

pub(super) fn list(
    conn: &Connection,
    state: RowState,
    limit: usize,
) -> Result<Vec<QueueEntry>, Error> {
    let sql = format!(
        "SELECT id, event_id, kind, enqueued_at, synced_at, dead_at, COALESCE(attempts, 0),
                next_attempt_at, last_status, last_error, length(CAST(payload_json AS BLOB))
           FROM sync_queue WHERE {} ORDER BY id LIMIT ?1",
        state.sql_condition()
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // Every column is read leniently: a listing is how an operator finds a row another program
    // wrote badly (text that is not UTF-8, a number stored as text), so such a row must show, not
    // fail the listing.
    let rows = statement.query_map([limit], |row| {
        Ok(QueueEntry {
            id: RowId(row.get(0)?),
            event_id: lenient_text(row.get_ref(1)?),
            kind: lenient_text(row.get_ref(2)?).unwrap_or_default(),
            state,
            enqueued_at: lenient_real(row.get_ref(3)?).unwrap_or(0.0),
            synced_at: lenient_real(row.get_ref(4)?),
            dead_at: lenient_real(row.get_ref(5)?),
            attempts: lenient_integer(row.get_ref(6)?).unwrap_or(0),
            next_attempt_at: lenient_real(row.get_ref(7)?),
            last_status: lenient_integer(row.get_ref(8)?).and_then(|s| u16::try_from(s).ok()),
            last_error: lenient_text(row.get_ref(9)?),
            payload_bytes: lenient_integer(row.get_ref(10)?).unwrap_or(0),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A text column as text, invalid UTF-8 replaced; a number as its decimal form.
fn lenient_text(value: ValueRef<'_>) -> Option<String> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(n) => Some(n.to_string()),
        ValueRef::Real(n) => Some(n.to_string()),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            Some(String::from_utf8_lossy(bytes).into_owned())
        }
    }
}

/// A time column; what is not a number reads as absent.
fn lenient_real(value: ValueRef<'_>) -> Option<f64> {
    match value {
        #[expect(clippy::cast_precision_loss, reason = "a time in seconds")]
        ValueRef::Integer(n) => Some(n as f64),
        ValueRef::Real(n) => Some(n),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok()?.trim().parse().ok(),
        ValueRef::Null | ValueRef::Blob(_) => None,
    }
}

/// A counter or status; what is not a number reads as absent (a real saturates).
pub(in crate::store) fn lenient_integer(value: ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Integer(n) => Some(n),
        #[expect(clippy::cast_possible_truncation, reason = "a counter; saturates")]
        ValueRef::Real(n) => Some(n as i64),
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok()?.trim().parse().ok(),
        ValueRef::Null | ValueRef::Blob(_) => None,
    }
}

pub(super) fn meta(conn: &Connection, key: &str) -> Result<Option<String>, Error> {
    Ok(conn
        .query_row(
            "SELECT value FROM gradata_meta WHERE key = ?1",
            [key],
            |row| row.get(0),
        )
        .optional()?)
}

/// Every lease held on a pending row, as `(id, token)`: read from `idx_sync_queue_leased`
/// alone, which holds only those rows (a drain's batches in flight, and leases left by a drainer
/// that died), so the observer of stale leases costs nothing while no one drains.
pub(super) fn leases(conn: &Connection) -> Result<Vec<(RowId, f64)>, Error> {
    let mut statement = conn.prepare_cached(LEASES_SQL)?;
    let mut rows = statement.query([])?;
    let mut leases = Vec::new();
    while let Some(row) = rows.next()? {
        // Only a number can be matched again by the fenced update that frees it; gradata and
        // the original store nothing else here.
        if let ValueRef::Integer(_) | ValueRef::Real(_) = row.get_ref(1)? {
            if let Some(token) = lenient_real(row.get_ref(1)?) {
                leases.push((RowId(row.get(0)?), token));
            }
        }
    }
    Ok(leases)
}

/// The query of [`leases`]. The range on `lease_until` (from the lowest REAL: every number)
/// keeps it a search of the partial index, which the plan test checks.
const LEASES_SQL: &str = "
SELECT id, lease_until FROM sync_queue INDEXED BY idx_sync_queue_leased
 WHERE lease_until IS NOT NULL AND synced_at IS NULL AND dead_at IS NULL
   AND lease_until >= -1.7976931348623157e308";

/// When the earliest pending row becomes due: now (the epoch) when a row never tried is free,
/// else the earliest retry timer of a free row. A leased row is never due by a wall clock: its
/// holder settles or renews it, and a stale lease is freed by the service's observer on its
/// monotonic clock (a lease's end compared with the wall clock would make a stepped clock spin
/// the worker, or hold the row for as long as the step).
///
/// Two lookups, neither of which visits a row waiting behind the one it returns: the first row
/// never tried and the earliest timer are the heads of two ranges of `idx_sync_queue_due` (only
/// leased rows, which are few, are stepped over). The worker asks after every pass, so this must
/// not grow with the rows waiting in backoff.
pub(super) fn next_due_at(conn: &Connection) -> Result<Option<SystemTime>, Error> {
    let due: Option<f64> = conn
        .prepare_cached(NEXT_DUE_SQL)?
        .query_row([], |row| row.get(0))?;
    Ok(due.map(from_unix))
}

/// The query of [`next_due_at`].
const NEXT_DUE_SQL: &str = "
SELECT MIN(due) FROM (
    SELECT 0.0 AS due FROM (
        SELECT 1 FROM sync_queue INDEXED BY idx_sync_queue_due
         WHERE synced_at IS NULL AND dead_at IS NULL
           AND next_attempt_at IS NULL AND lease_until IS NULL
         LIMIT 1)
    UNION ALL
    SELECT next_attempt_at FROM (
        SELECT next_attempt_at FROM sync_queue INDEXED BY idx_sync_queue_due
         WHERE synced_at IS NULL AND dead_at IS NULL
           AND next_attempt_at IS NOT NULL AND lease_until IS NULL
         ORDER BY next_attempt_at LIMIT 1))";

pub(super) fn data_version(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row("PRAGMA data_version", [], |row| row.get(0))?)
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{migrated, plan};

    #[test]
    fn stats_reads_the_table_only_through_the_partial_indexes() {
        let conn = migrated();
        let plan = plan(&conn, &stats_sql(true));
        let steps: Vec<&String> = plan.iter().filter(|s| s.contains("sync_queue")).collect();
        assert_eq!(steps.len(), 2, "{plan:?}");
        assert!(
            steps.iter().all(|s| s.contains("INDEX")),
            "a step scans the whole table, delivered rows included: {plan:?}"
        );
        assert!(
            steps
                .iter()
                .any(|s| s.contains("COVERING INDEX idx_sync_queue_synced_at")),
            "delivered rows are counted from their index alone: {plan:?}"
        );
    }

    #[test]
    fn stats_counts_every_state() {
        let conn = migrated();
        let insert = |synced_at: Option<f64>, dead_at: Option<f64>, lease_until: Option<f64>| {
            conn.execute(
                "INSERT INTO sync_queue (payload_json, kind, enqueued_at, synced_at, dead_at, lease_until)
                 VALUES ('{\"n\":1}', 'event', 100.0, ?1, ?2, ?3)",
                rusqlite::params![synced_at, dead_at, lease_until],
            )
            .unwrap();
        };
        for _ in 0..5 {
            insert(Some(200.0), None, None);
        }
        insert(None, Some(150.0), None);
        insert(None, None, None);
        insert(None, None, Some(4e9));
        let stats = stats(&conn).unwrap();
        assert_eq!(
            (
                stats.pending,
                stats.dead,
                stats.synced,
                stats.leased,
                stats.pending_bytes
            ),
            (2, 1, 5, 1, 14),
            "{stats:?}"
        );
        assert_eq!(stats.oldest_pending_at, Some(from_unix(100.0)));
    }

    #[test]
    fn stats_without_the_indexes_counts_the_slow_way() {
        let conn = migrated();
        conn.execute_batch(
            "DROP TRIGGER gradata_queue_counts_insert;
             DROP INDEX idx_sync_queue_synced_at;
             INSERT INTO sync_queue (payload_json, kind, enqueued_at, synced_at)
             VALUES ('{}', 'event', 1.0, 2.0);",
        )
        .unwrap();
        assert_eq!(stats(&conn).unwrap().synced, 1);
    }

    /// The plan of `sql`, once checked that no step walks the table or a whole index.
    fn searches(conn: &Connection, sql: &str) -> Vec<String> {
        let steps = plan(conn, sql);
        assert!(
            !steps.iter().any(|step| step.starts_with("SCAN sync_queue")),
            "a step walks the table or a whole index: {steps:#?}"
        );
        steps
    }

    #[test]
    fn next_due_at_searches_its_indexes_and_never_walks_the_queue() {
        let conn = migrated();
        let steps = searches(&conn, NEXT_DUE_SQL);
        for step in [
            "SEARCH sync_queue USING INDEX idx_sync_queue_due (next_attempt_at=?)",
            "SEARCH sync_queue USING INDEX idx_sync_queue_due (next_attempt_at>?)",
        ] {
            assert!(steps.iter().any(|s| s == step), "no {step}: {steps:#?}");
        }
    }

    #[test]
    fn leases_are_read_from_their_index_alone() {
        let conn = migrated();
        let steps = searches(&conn, LEASES_SQL);
        assert!(
            steps
                .iter()
                .any(|s| s.contains("idx_sync_queue_leased (lease_until>?)")),
            "{steps:#?}"
        );
        for (lease, synced) in [(Some(5.5), None), (None, None), (Some(7.0), Some(1.0))] {
            conn.execute(
                "INSERT INTO sync_queue (payload_json, kind, enqueued_at, lease_until, synced_at)
                 VALUES ('{}', 'event', 1.0, ?1, ?2)",
                rusqlite::params![lease, synced],
            )
            .unwrap();
        }
        assert_eq!(leases(&conn).unwrap(), vec![(RowId(1), 5.5)]);
    }

    #[test]
    fn stats_search_their_indexes_and_never_walk_the_queue() {
        let conn = migrated();
        let leased = searches(&conn, LEASED_SQL);
        assert!(
            leased
                .iter()
                .any(|s| s.contains("idx_sync_queue_leased (lease_until>?)")),
            "{leased:#?}"
        );
        let oldest = searches(&conn, OLDEST_PENDING_SQL);
        assert!(
            oldest
                .iter()
                .any(|s| s == "SEARCH sync_queue USING INDEX idx_sync_queue_claimable (id>?)"),
            "{oldest:#?}"
        );
        assert!(
            kept_counts(&conn).unwrap().is_some(),
            "the counts are read, not counted"
        );
    }

    #[test]
    fn next_due_at_is_the_earliest_free_row_and_never_a_lease() {
        let conn = migrated();
        let insert = |next_attempt_at: Option<f64>,
                      lease_until: Option<f64>,
                      dead_at: Option<f64>| {
            conn.execute(
                "INSERT INTO sync_queue (payload_json, kind, enqueued_at, next_attempt_at, lease_until, dead_at)
                 VALUES ('{}', 'event', 1.0, ?1, ?2, ?3)",
                rusqlite::params![next_attempt_at, lease_until, dead_at],
            )
            .unwrap();
        };
        assert_eq!(next_due_at(&conn).unwrap(), None, "empty queue");
        insert(Some(50.0), None, Some(10.0));
        assert_eq!(next_due_at(&conn).unwrap(), None, "dead rows are never due");
        insert(Some(500.0), None, None);
        insert(Some(300.0), None, None);
        assert_eq!(next_due_at(&conn).unwrap(), Some(from_unix(300.0)));
        // A leased row is not due, whatever its lease says next to a wall clock: its holder or
        // the observer of stale leases frees it.
        insert(None, Some(200.0), None);
        insert(Some(250.0), Some(100.0), None);
        assert_eq!(next_due_at(&conn).unwrap(), Some(from_unix(300.0)));
        insert(None, None, None);
        assert_eq!(
            next_due_at(&conn).unwrap(),
            Some(SystemTime::UNIX_EPOCH),
            "never tried"
        );
    }
}
