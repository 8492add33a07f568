//! The SQL of the sync side's commands: claiming rows under a lease, settling them fenced by
//! that lease, and renewing or freeing leases ([`relet`]). Like its parent it runs inside the
//! writer's open transaction and knows nothing of groups or durability.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};

use super::PendingDelta;
use crate::store::read::lenient_integer;
use crate::store::types::{ClaimFrom, ClaimedRow, RowId, Settlement};
use crate::store::{Error, to_unix};

/// Longest stored `last_error`, as the original (which cut at 500 characters).
const MAX_ERROR_CHARS: usize = 500;

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

pub(in crate::store::writer) fn claim(
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
pub(in crate::store::writer) fn settle(
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
pub(in crate::store::writer) fn relet(
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

fn truncate(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

#[cfg(test)]
mod tests;
