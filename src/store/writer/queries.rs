//! The SQL of each command the writer runs: inserting events (several rows per statement),
//! claiming and settling rows for the sync worker, retrying dead rows, purging synced ones.
//!
//! It knows nothing of groups, transactions or durability: each function runs inside whatever
//! transaction the writer has open, and reports what it changed in the pending rows and bytes.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use super::command::Command;
use super::pending::PendingDelta;
use crate::store::read::lenient_integer;
use crate::store::types::{
    BrainEventRow, ClaimFrom, ClaimedRow, EnqueueOutcome, EventRowId, NewEvent, QueueLimit,
    RetrySelector, RowId, Settlement,
};
use crate::store::{Error, to_unix};

/// Longest stored `last_error`, as the original (which cut at 500 characters).
const MAX_ERROR_CHARS: usize = 500;

/// Inserts the events of consecutive enqueue commands with multi-row statements and records each
/// command's outcomes, as if each event had been inserted on its own: the first of several events
/// with one `event_id` is the row, the others are its duplicates. For batches that saves about a
/// fifth of the writer's time per event (measured: 5.0–5.5 µs instead of 6.1–7.1).
pub(super) fn enqueue_run(
    conn: &Connection,
    commands: &mut [Command],
    delta: &mut PendingDelta,
) -> bool {
    let mut rows: Vec<(&NewEvent, f64)> = Vec::new();
    for command in commands.iter() {
        if let Command::Enqueue { events, now, .. } = command {
            let enqueued_at = to_unix(*now);
            rows.extend(events.iter().map(|event| (event, enqueued_at)));
        }
    }
    let outcomes = match insert_rows(conn, &rows) {
        Ok(outcomes) => outcomes,
        Err(err) => {
            // A run of one command failed with its own error. In a longer run, whose it is is
            // found by the command-by-command pass.
            if let [Command::Enqueue { reply, .. }] = commands {
                reply.set(Err(err));
            }
            return false;
        }
    };
    add_inserted(delta, &rows, &outcomes);
    drop(rows);
    let mut outcomes = outcomes.into_iter();
    for command in commands.iter_mut() {
        if let Command::Enqueue { events, reply, .. } = command {
            reply.set(Ok(outcomes.by_ref().take(events.len()).collect()));
        }
    }
    true
}

/// Rows per multi-row `INSERT`, largest first: a run is cut into these sizes, so that only these
/// statements are ever prepared and they all stay in the statement cache. Single rows take the
/// one-row statement, which needs no `RETURNING`.
const INSERT_CHUNKS: [usize; 2] = [32, 8];

/// The one-row `INSERT`; a conflict on `event_id` inserts nothing.
const INSERT_ONE: &str =
    "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id)
     VALUES (?1, ?2, ?3, 0, ?4)
     ON CONFLICT(event_id) WHERE event_id IS NOT NULL DO NOTHING";

/// The `INSERT`s of [`INSERT_CHUNKS`] rows, built once.
static INSERT_MANY: LazyLock<[String; 2]> = LazyLock::new(|| INSERT_CHUNKS.map(insert_sql));

/// The `INSERT` of `rows` rows, returning the rows it inserted.
fn insert_sql(rows: usize) -> String {
    let values = vec!["(?, ?, ?, 0, ?)"; rows].join(",");
    format!(
        "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id) VALUES {values}
         ON CONFLICT(event_id) WHERE event_id IS NOT NULL DO NOTHING RETURNING id, event_id"
    )
}

/// Inserts `rows` (event, `enqueued_at`), returning each one's outcome in order.
fn insert_rows(conn: &Connection, rows: &[(&NewEvent, f64)]) -> Result<Vec<EnqueueOutcome>, Error> {
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut rest = rows;
    while let Some(&(event, enqueued_at)) = rest.first() {
        let Some((size, sql)) = INSERT_CHUNKS
            .into_iter()
            .zip(INSERT_MANY.iter())
            .find(|(size, _)| *size <= rest.len())
        else {
            outcomes.push(insert_one(conn, event, enqueued_at)?);
            rest = &rest[1..];
            continue;
        };
        let (chunk, tail) = rest.split_at(size);
        rest = tail;
        let mut statement = conn.prepare_cached(sql)?;
        for (n, (event, enqueued_at)) in chunk.iter().enumerate() {
            let first = n * 4 + 1;
            statement.raw_bind_parameter(first, event.payload_json())?;
            statement.raw_bind_parameter(first + 1, event.kind().as_str())?;
            statement.raw_bind_parameter(first + 2, *enqueued_at)?;
            statement.raw_bind_parameter(first + 3, event.event_id().as_str())?;
        }
        // (id, event_id) of the rows inserted; at most one per id, since the others conflicted.
        let mut inserted: Vec<(i64, Option<String>)> = Vec::with_capacity(size);
        let mut returned = statement.raw_query();
        while let Some(row) = returned.next()? {
            inserted.push((row.get(0)?, Some(row.get(1)?)));
        }
        for (event, _) in chunk {
            let id = event.event_id().as_str();
            // The first event with an id is its row: taking the id from the list makes any later
            // event with it a duplicate of that row.
            let row = inserted
                .iter_mut()
                .find_map(|(row_id, event_id)| event_id.take_if(|e| e == id).map(|_| *row_id));
            outcomes.push(match row {
                Some(row_id) => EnqueueOutcome::Inserted(RowId(row_id)),
                None => EnqueueOutcome::Duplicate(existing_row(conn, id)?),
            });
        }
    }
    Ok(outcomes)
}

/// Inserts one event, or finds the row already queued under its id.
fn insert_one(
    conn: &Connection,
    event: &NewEvent,
    enqueued_at: f64,
) -> Result<EnqueueOutcome, Error> {
    let id = event.event_id().as_str();
    let inserted = conn.prepare_cached(INSERT_ONE)?.execute(params![
        event.payload_json(),
        event.kind().as_str(),
        enqueued_at,
        id
    ])?;
    Ok(if inserted == 1 {
        EnqueueOutcome::Inserted(RowId(conn.last_insert_rowid()))
    } else {
        EnqueueOutcome::Duplicate(existing_row(conn, id)?)
    })
}

/// Inserts a row into the brain's `events` table, naming its columns: a table the SDK created may
/// have more, which keep their defaults.
pub(super) fn insert_brain_event(
    conn: &Connection,
    event: &BrainEventRow,
) -> Result<EventRowId, Error> {
    conn.prepare_cached(
        "INSERT INTO events (ts, session, type, source, data_json, tags_json, valid_from, \
         valid_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        event.ts,
        event.session,
        event.event_type,
        event.source,
        event.data_json,
        event.tags_json,
        event.valid_from,
        event.valid_until,
    ])?;
    Ok(EventRowId(conn.last_insert_rowid()))
}

/// The row already queued under `event_id`.
fn existing_row(conn: &Connection, event_id: &str) -> Result<RowId, Error> {
    let mut existing = conn.prepare_cached("SELECT id FROM sync_queue WHERE event_id = ?1")?;
    Ok(RowId(existing.query_row([event_id], |row| row.get(0))?))
}

/// Adds the rows that `outcomes` say were inserted to the pending `delta`.
fn add_inserted(delta: &mut PendingDelta, rows: &[(&NewEvent, f64)], outcomes: &[EnqueueOutcome]) {
    for ((event, _), outcome) in rows.iter().zip(outcomes) {
        if matches!(outcome, EnqueueOutcome::Inserted(_)) {
            delta.row(1, payload_bytes(event));
        }
    }
}

/// An event's size as the queue limits count it.
pub(super) fn payload_bytes(event: &NewEvent) -> i64 {
    i64::try_from(event.payload_json().len()).unwrap_or(i64::MAX)
}

/// Whether `events` fit under `limit` on top of `pending`. Every event counts, duplicates of rows
/// already queued too: which are duplicates is known only once inserted, and refusing a retried
/// write when the queue is at its limit anyway costs nothing.
pub(super) fn within(
    limit: QueueLimit,
    pending: PendingDelta,
    events: &[NewEvent],
) -> Result<(), Error> {
    let rows = u64::try_from(pending.rows).unwrap_or(0);
    let bytes = u64::try_from(pending.bytes).unwrap_or(0);
    let incoming_bytes: u64 = events.iter().map(|e| e.payload_json().len() as u64).sum();
    if rows + events.len() as u64 > limit.max_rows || bytes + incoming_bytes > limit.max_bytes {
        return Err(Error::QueueFull { rows, bytes, limit });
    }
    Ok(())
}

/// The pending rows and bytes as the table holds them, in the writer's transaction: exact, since
/// nobody else can write meanwhile.
pub(super) fn count_pending(conn: &Connection) -> Result<PendingDelta, Error> {
    let (rows, bytes) = crate::store::read::pending(conn)?;
    Ok(PendingDelta {
        rows: i64::try_from(rows).unwrap_or(i64::MAX),
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
    })
}

/// SQLite's `data_version` of this connection: it changes when, and only when, another connection
/// has committed since this one last looked.
pub(super) fn data_version(conn: &Connection) -> Result<i64, Error> {
    Ok(conn.query_row("PRAGMA data_version", [], |row| row.get(0))?)
}

pub(super) fn enqueue(
    conn: &Connection,
    events: &[NewEvent],
    now: SystemTime,
    delta: &mut PendingDelta,
) -> Result<Vec<EnqueueOutcome>, Error> {
    let enqueued_at = to_unix(now);
    let rows: Vec<(&NewEvent, f64)> = events.iter().map(|event| (event, enqueued_at)).collect();
    let outcomes = insert_rows(conn, &rows)?;
    add_inserted(delta, &rows, &outcomes);
    Ok(outcomes)
}

/// The lease filter of every claim: a row another drainer holds is skipped, whatever its lease
/// says. A stored lease is a token, never a deadline compared with this process's wall clock: a
/// clock stepped forward would expire every lease (and post rows another drainer has in flight),
/// one stepped back would hold a dead drainer's rows for as long as the step. A lease is freed by
/// its holder, by the service's observer once it has seen the same token for the lease period on
/// its monotonic clock ([`relet`]), or at open by a process alone with the store. Leased rows are
/// few (a drain's batches in flight), so checking it row by row costs little.
const NOT_LEASED: &str = "lease_until IS NULL";

/// Leases the pending rows of an explicit drain: every pending row above the cursor, whatever its
/// timer says, in id order, read as one range of `idx_sync_queue_claimable`.
static CLAIM_AFTER: LazyLock<String> = LazyLock::new(|| {
    leasing(&format!(
        "SELECT id FROM sync_queue INDEXED BY idx_sync_queue_claimable
          WHERE synced_at IS NULL AND dead_at IS NULL AND id > :after AND {NOT_LEASED}
          ORDER BY id LIMIT :limit"
    ))
});

/// Leases the due rows for the background worker, from three ranges of `idx_sync_queue_due`,
/// each read only as far as the batch needs: rows never tried (`next_attempt_at IS NULL`, in id
/// order), retries whose timer has run out (earliest first), and timers further off than any retry
/// can be set, which are due too: the wall clock went back since they were set (a VM restored, NTP
/// fixing a clock that ran ahead), and the row would otherwise wait for as long as the clock
/// jumped. Rows waiting in backoff and dead rows are never visited.
///
/// Fairness: the batch takes the three ranges in turn (the first of each, then the second of
/// each, …), so when some rows keep failing with short backoffs, rows never tried still get at
/// least half of every batch, and a flood of new rows cannot hold retries back either.
static CLAIM_DUE: LazyLock<String> = LazyLock::new(|| {
    let range = |condition: &str, order: &str| {
        format!(
            "SELECT id, next_attempt_at FROM sync_queue INDEXED BY idx_sync_queue_due
              WHERE synced_at IS NULL AND dead_at IS NULL AND {condition} AND {NOT_LEASED}
              ORDER BY {order} LIMIT :limit"
        )
    };
    let never_tried = range("next_attempt_at IS NULL", "id");
    let retries = range("next_attempt_at <= :now", "next_attempt_at, id");
    let clock_went_back = range("next_attempt_at > :horizon", "next_attempt_at, id");
    leasing(&format!(
        "SELECT id FROM (
             SELECT id, row_number() OVER (ORDER BY id) AS turn, 0 AS range
               FROM ({never_tried})
             UNION ALL
             SELECT id, row_number() OVER (ORDER BY next_attempt_at, id), 1 FROM ({retries})
             UNION ALL
             SELECT id, row_number() OVER (ORDER BY next_attempt_at, id), 2
               FROM ({clock_went_back}))
          ORDER BY turn, range LIMIT :limit"
    ))
});

/// The statement that leases the rows `select` picks and returns them.
///
/// Invariant: the lease is taken in the same statement that selects the rows, inside a write
/// transaction, so two drainers (threads or processes) can never claim the same row at once.
fn leasing(select: &str) -> String {
    format!(
        "UPDATE sync_queue SET lease_until = :lease_until
          WHERE id IN ({select})
         RETURNING id, event_id, payload_json, COALESCE(attempts, 0)"
    )
}

pub(super) fn claim(
    conn: &Connection,
    limit: usize,
    from: ClaimFrom,
    (lease_until, longest_wait): (SystemTime, Duration),
    now: SystemTime,
    delta: &mut PendingDelta,
) -> Result<Vec<ClaimedRow>, Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let (sql, after) = match from {
        ClaimFrom::Due => (CLAIM_DUE.as_str(), 0),
        ClaimFrom::After(RowId(after)) => (CLAIM_AFTER.as_str(), after),
    };
    let mut statement = conn.prepare_cached(sql)?;
    let now_unix = to_unix(now);
    let lease_until = to_unix(lease_until);
    let horizon = now_unix + longest_wait.as_secs_f64();
    let mut rows = Vec::new();
    // A row that cannot be posted is made dead on its own, and the statement runs again for as
    // many rows as it took the place of: one bad row neither fails the claim (which would stop
    // every row behind it, the claim always taking the lowest ids) nor shortens the batch. The
    // rows already leased here are not claimable again, nor the dead ones, so each run takes new
    // rows.
    loop {
        let wanted = limit.saturating_sub(i64::try_from(rows.len()).unwrap_or(i64::MAX));
        let mut query = match from {
            ClaimFrom::Due => statement.query(rusqlite::named_params! {
                ":lease_until": lease_until, ":now": now_unix, ":limit": wanted, ":horizon": horizon,
            })?,
            ClaimFrom::After(_) => statement.query(rusqlite::named_params! {
                ":lease_until": lease_until, ":limit": wanted, ":after": after,
            })?,
        };
        let mut unreadable = Vec::new();
        while let Some(row) = query.next()? {
            let id = RowId(row.get(0)?);
            match claimed_row(id, row) {
                Ok(claimed) => rows.push(claimed),
                Err(why) => unreadable.push((id, why)),
            }
        }
        drop(query);
        if unreadable.is_empty() {
            break;
        }
        for (id, why) in unreadable {
            bury_unreadable(conn, id, &why, now_unix, delta)?;
        }
    }
    rows.sort_by_key(|row| row.id);
    Ok(rows)
}

/// Reads a claimed row (`id, event_id, payload_json, attempts`), or says why it cannot be posted.
///
/// The payload is read as bytes, whatever type the row stores it as (an SDK may have stored a
/// BLOB), and posted verbatim when those bytes are UTF-8 text, which JSON must be. `attempts` is
/// only a counter: a value that is not a number counts as none.
fn claimed_row(id: RowId, row: &rusqlite::Row<'_>) -> Result<ClaimedRow, String> {
    use rusqlite::types::ValueRef;
    let event_id = match row.get_ref(1).map_err(|err| err.to_string())? {
        ValueRef::Null => None,
        ValueRef::Text(text) => Some(
            std::str::from_utf8(text)
                .map_err(|err| format!("event_id is not UTF-8 text ({err})"))?
                .to_owned(),
        ),
        other => return Err(format!("event_id is {}, not text", other.data_type())),
    };
    let payload_json = match row.get_ref(2).map_err(|err| err.to_string())? {
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => std::str::from_utf8(bytes)
            .map_err(|err| format!("payload_json is not UTF-8 text ({err})"))?
            .to_owned(),
        other => {
            return Err(format!(
                "payload_json is {}, not JSON text",
                other.data_type()
            ));
        }
    };
    let attempts = lenient_integer(row.get_ref(3).map_err(|err| err.to_string())?).unwrap_or(0);
    Ok(ClaimedRow {
        id,
        event_id,
        payload_json,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
    })
}

/// Makes a row that cannot be posted dead, with why in `last_error`, so that an operator sees it
/// (`gradata queue list --dead`) and can repair and retry it; it is never deleted. No attempt is
/// counted: nothing was sent.
fn bury_unreadable(
    conn: &Connection,
    id: RowId,
    why: &str,
    now: f64,
    delta: &mut PendingDelta,
) -> Result<(), Error> {
    let error = format!("unreadable row: {why}");
    tracing::warn!(
        row = id.0,
        error,
        "a queued row cannot be sent; it is now dead"
    );
    conn.prepare_cached(
        "UPDATE sync_queue SET dead_at = ?2, lease_until = NULL, last_error = ?3
          WHERE id = ?1 AND synced_at IS NULL AND dead_at IS NULL
      RETURNING length(CAST(payload_json AS BLOB))",
    )?
    .query_row(params![id.0, now, truncate(&error)], |row| {
        row.get::<_, i64>(0)
    })
    .optional()?
    .into_iter()
    .for_each(|bytes| delta.row(-1, bytes));
    Ok(())
}

/// Records `settlements`. With `lease_until` (the lease the rows were claimed with), `Retry`,
/// `Dead` and `Release` change only rows that still hold exactly that lease: a drainer whose lease
/// ran out and whose rows another drainer claimed must not clear that drainer's live lease (a third
/// could then post the row) nor overwrite what it recorded. None of them touches a dead row, whose
/// status and error say why it died.
pub(super) fn settle(
    conn: &Connection,
    settlements: &[Settlement],
    lease_until: Option<SystemTime>,
    now: SystemTime,
    delta: &mut PendingDelta,
) -> Result<(), Error> {
    let now = to_unix(now);
    let lease = lease_until.map(to_unix);
    // Deliveries come in runs (a whole batch answered 200): each run of `Synced` with the same
    // status is one statement over a JSON array of ids rather than one statement per row. Runs
    // keep the settlements' order, so the outcome is the same as settling them one by one.
    let mut run: Vec<i64> = Vec::new();
    let mut run_status: Option<u16> = None;
    for settlement in settlements {
        if let Settlement::Synced { id, status } = settlement {
            if run_status.is_some_and(|s| s != *status) {
                settle_synced(conn, &run, run_status, now, delta)?;
                run.clear();
            }
            run_status = Some(*status);
            run.push(id.0);
            continue;
        }
        settle_synced(conn, &run, run_status, now, delta)?;
        run.clear();
        // Every update is guarded by `synced_at IS NULL`: a row another drainer delivered after our
        // lease expired stays synced, whatever we learned. The others are also fenced by the lease
        // (see above).
        match settlement {
            Settlement::Synced { .. } => {}
            Settlement::Retry {
                id,
                status,
                error,
                next_attempt_at,
            } => {
                conn.prepare_cached(
                    "UPDATE sync_queue SET attempts = COALESCE(attempts, 0) + 1, lease_until = NULL,
                            next_attempt_at = ?2, last_status = ?3, last_error = ?4
                      WHERE id = ?1 AND synced_at IS NULL AND dead_at IS NULL
                        AND (?5 IS NULL OR lease_until = ?5)",
                )?
                .execute(params![
                    id.0,
                    to_unix(*next_attempt_at),
                    status,
                    truncate(error),
                    lease
                ])?;
            }
            Settlement::Dead { id, status, error } => {
                conn.prepare_cached(
                    "UPDATE sync_queue SET attempts = COALESCE(attempts, 0) + 1, lease_until = NULL,
                            dead_at = ?2, last_status = ?3, last_error = ?4
                      WHERE id = ?1 AND synced_at IS NULL AND dead_at IS NULL
                        AND (?5 IS NULL OR lease_until = ?5)
                  RETURNING length(CAST(payload_json AS BLOB))",
                )?
                .query_row(params![id.0, now, status, truncate(error), lease], |row| {
                    row.get::<_, i64>(0)
                })
                .optional()?
                .into_iter()
                .for_each(|bytes| delta.row(-1, bytes));
            }
            Settlement::Release { id, status, error } => {
                conn.prepare_cached(
                    "UPDATE sync_queue SET lease_until = NULL,
                            last_status = COALESCE(?2, last_status),
                            last_error = COALESCE(?3, last_error)
                      WHERE id = ?1 AND synced_at IS NULL AND dead_at IS NULL
                        AND (?4 IS NULL OR lease_until = ?4)",
                )?
                .execute(params![
                    id.0,
                    status,
                    error.as_deref().map(truncate),
                    lease
                ])?;
            }
        }
    }
    settle_synced(conn, &run, run_status, now, delta)
}

/// Marks delivered rows synced. Guarded by `synced_at IS NULL` like every settlement: a row
/// another drainer already delivered is left alone and not counted twice. A row another drainer
/// made dead meanwhile is delivered all the same (the server took it), but it had already left
/// the pending gauge, so only the rows that were pending are counted out of it.
fn settle_synced(
    conn: &Connection,
    ids: &[i64],
    status: Option<u16>,
    now: f64,
    delta: &mut PendingDelta,
) -> Result<(), Error> {
    let (false, Some(status)) = (ids.is_empty(), status) else {
        return Ok(());
    };
    let mut list = String::with_capacity(ids.len() * 8 + 2);
    list.push('[');
    for (n, id) in ids.iter().enumerate() {
        if n > 0 {
            list.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(list, "{id}");
    }
    list.push(']');
    let mut pending = conn.prepare_cached(
        "UPDATE sync_queue SET synced_at = ?2, lease_until = NULL, last_status = ?3,
                last_error = NULL
          WHERE id IN (SELECT value FROM json_each(?1)) AND synced_at IS NULL AND dead_at IS NULL
      RETURNING length(CAST(payload_json AS BLOB))",
    )?;
    let settled = pending.query_map(params![list, now, status], |row| row.get::<_, i64>(0))?;
    for bytes in settled {
        delta.row(-1, bytes?);
    }
    conn.prepare_cached(
        "UPDATE sync_queue SET synced_at = ?2, lease_until = NULL, last_status = ?3,
                last_error = NULL, dead_at = NULL
          WHERE id IN (SELECT value FROM json_each(?1)) AND synced_at IS NULL
            AND dead_at IS NOT NULL",
    )?
    .execute(params![list, now, status])?;
    Ok(())
}

/// Changes the leases of `rows`, each `(id, token)`, to `to` (a renewal) or frees them (`None`):
/// only a row that still holds exactly the token given is changed, so a renewal never takes back
/// a row its holder lost, and an observer that found a lease stale never frees one its holder
/// renewed meanwhile. Returns how many rows changed.
pub(super) fn relet(
    conn: &Connection,
    rows: &[(RowId, f64)],
    to: Option<f64>,
) -> Result<usize, Error> {
    let mut statement = conn.prepare_cached(
        "UPDATE sync_queue SET lease_until = ?3 WHERE id = ?1 AND lease_until = ?2",
    )?;
    let mut changed = 0;
    for (id, token) in rows {
        changed += statement.execute(params![id.0, token, to])?;
    }
    Ok(changed)
}

pub(super) fn retry(
    conn: &Connection,
    selector: &RetrySelector,
    delta: &mut PendingDelta,
) -> Result<usize, Error> {
    match selector {
        RetrySelector::AllDead => {
            let mut statement = conn.prepare_cached(
                "UPDATE sync_queue SET dead_at = NULL, next_attempt_at = NULL
                  WHERE dead_at IS NOT NULL AND synced_at IS NULL
                  RETURNING length(CAST(payload_json AS BLOB))",
            )?;
            let revived = statement.query_map([], |row| row.get::<_, i64>(0))?;
            let mut changed = 0;
            for bytes in revived {
                delta.row(1, bytes?);
                changed += 1;
            }
            Ok(changed)
        }
        RetrySelector::Ids(ids) => {
            let mut state = conn.prepare_cached(
                "SELECT dead_at IS NOT NULL, length(CAST(payload_json AS BLOB))
                   FROM sync_queue WHERE id = ?1 AND synced_at IS NULL",
            )?;
            let mut statement = conn.prepare_cached(
                "UPDATE sync_queue SET dead_at = NULL, next_attempt_at = NULL
                  WHERE id = ?1 AND synced_at IS NULL",
            )?;
            let mut changed = 0;
            for id in ids {
                let Some((was_dead, bytes)) = state
                    .query_row([id.0], |row| {
                        Ok((row.get::<_, bool>(0)?, row.get::<_, i64>(1)?))
                    })
                    .optional()?
                else {
                    continue;
                };
                changed += statement.execute([id.0])?;
                if was_dead {
                    delta.row(1, bytes);
                }
            }
            Ok(changed)
        }
    }
}

/// Sets one of the service's own keys in `gradata_meta`.
pub(super) fn set_meta(
    conn: &Connection,
    key: &str,
    value: &str,
    now: SystemTime,
) -> Result<(), Error> {
    conn.execute(
        "INSERT INTO gradata_meta (key, value, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        params![key, value, to_unix(now)],
    )?;
    Ok(())
}

pub(super) fn purge_synced(
    conn: &Connection,
    cutoff: SystemTime,
    after: Option<RowId>,
    span: u32,
) -> Result<crate::store::PurgeStep, Error> {
    use crate::store::PurgeStep;
    // The step covers the `span` ids from the first row after the cursor, found through the
    // rowid b-tree: it reads and deletes at most `span` rows, whatever the table holds, and a
    // stretch of ids already purged costs one seek.
    let first: Option<i64> = conn.query_row(
        "SELECT MIN(id) FROM sync_queue WHERE id > ?1",
        [after.map_or(i64::MIN, |id| id.0)],
        |row| row.get(0),
    )?;
    let Some(first) = first else {
        return Ok(PurgeStep {
            deleted: 0,
            next: None,
        });
    };
    let last = first.saturating_add(i64::from(span.max(1)) - 1);
    // Invariant: only synced rows are ever deleted.
    let deleted = conn.execute(
        "DELETE FROM sync_queue WHERE id BETWEEN ?1 AND ?2
           AND synced_at IS NOT NULL AND synced_at < ?3",
        params![first, last, to_unix(cutoff)],
    )?;
    Ok(PurgeStep {
        deleted,
        next: (last < i64::MAX).then_some(RowId(last)),
    })
}

fn truncate(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests;
