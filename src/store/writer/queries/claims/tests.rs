use super::*;
use crate::store::test_db::{migrated, plan};

/// Asserts that `sql` reads `sync_queue` only by searching `index` (and the rows it finds by
/// their id), never by walking the table or a whole index.
fn assert_searches_only(conn: &Connection, sql: &str, index: &str) {
    let plan = plan(conn, sql);
    assert!(
        !plan.iter().any(|step| step.starts_with("SCAN sync_queue")),
        "a step walks the table or a whole index: {plan:#?}"
    );
    assert!(
        plan.iter()
            .any(|step| step.starts_with(&format!("SEARCH sync_queue USING INDEX {index} ("))),
        "{index} is not searched: {plan:#?}"
    );
}

#[test]
fn claims_search_their_index_and_never_walk_the_queue() {
    let conn = migrated();
    assert_searches_only(&conn, &CLAIM_DUE, "idx_sync_queue_due");
    assert_searches_only(&conn, &CLAIM_AFTER, "idx_sync_queue_claimable");
    // Each of the three ranges of a due claim is its own search.
    let due_plan = plan(&conn, &CLAIM_DUE);
    for range in [
        "(next_attempt_at=?)",
        "(next_attempt_at<?)",
        "(next_attempt_at>?)",
    ] {
        assert!(
            due_plan
                .iter()
                .any(|step| step
                    == &format!("SEARCH sync_queue USING INDEX idx_sync_queue_due {range}")),
            "no search of the range {range}: {due_plan:#?}"
        );
    }
}

/// Inserts `n` pending rows with the given timer, returning their ids.
fn insert(conn: &Connection, n: usize, next_attempt_at: Option<f64>) -> Vec<i64> {
    (0..n)
        .map(|_| {
            conn.execute(
                "INSERT INTO sync_queue (payload_json, kind, enqueued_at, next_attempt_at)
                     VALUES ('{}', 'event', 1.0, ?1)",
                [next_attempt_at],
            )
            .unwrap();
            conn.last_insert_rowid()
        })
        .collect()
}

fn claim_due(conn: &Connection, limit: usize, now: SystemTime) -> Vec<i64> {
    let lease = (now + Duration::from_secs(60), Duration::from_secs(3600));
    claim(
        conn,
        limit,
        ClaimFrom::Due,
        lease,
        now,
        &mut PendingDelta::default(),
    )
    .unwrap()
    .into_iter()
    .map(|row| row.id.0)
    .collect()
}

#[test]
fn failing_rows_due_again_and_again_do_not_starve_rows_never_tried() {
    let conn = migrated();
    let now = SystemTime::now();
    let now_unix = to_unix(now);
    // The head of the queue: rows that keep failing, always due again (short backoffs).
    let failing = insert(&conn, 100, Some(now_unix - 1.0));
    let fresh = insert(&conn, 100, None);
    let claimed = claim_due(&conn, 50, now);
    let from = |ids: &[i64]| claimed.iter().filter(|id| ids.contains(id)).count();
    assert_eq!((from(&fresh), from(&failing)), (25, 25), "{claimed:?}");
    // Rows never tried are taken in id order, due retries earliest timer first.
    assert_eq!(
        claimed
            .iter()
            .filter(|id| fresh.contains(id))
            .copied()
            .collect::<Vec<_>>(),
        fresh[..25]
    );
}

/// A lease is a token: however far in the past its value lies next to this clock (a holder
/// whose clock runs behind, or this one stepped forward), no claim takes the row; only a
/// renewal or release fenced by the exact token changes it.
#[test]
fn a_leased_row_is_never_claimed_whatever_its_lease_says() {
    let conn = migrated();
    let now = SystemTime::now();
    let ids = insert(&conn, 2, None);
    conn.execute("UPDATE sync_queue SET lease_until = 1.0", [])
        .unwrap();
    assert_eq!(claim_due(&conn, 50, now), Vec::<i64>::new());
    let after = claim(
        &conn,
        50,
        ClaimFrom::After(RowId(0)),
        (now + Duration::from_secs(60), Duration::from_secs(3600)),
        now,
        &mut PendingDelta::default(),
    )
    .unwrap();
    assert!(after.is_empty(), "{after:?}");
    // A stale token changes nothing; the exact one renews, then frees.
    let (first, second) = (RowId(ids[0]), RowId(ids[1]));
    assert_eq!(relet(&conn, &[(first, 2.0)], None).unwrap(), 0);
    assert_eq!(relet(&conn, &[(first, 1.0)], Some(5.0)).unwrap(), 1);
    assert_eq!(
        relet(&conn, &[(first, 1.0), (second, 1.0)], None).unwrap(),
        1
    );
    assert_eq!(claim_due(&conn, 50, now), vec![ids[1]]);
    assert_eq!(relet(&conn, &[(first, 5.0)], None).unwrap(), 1);
    assert_eq!(claim_due(&conn, 50, now), vec![ids[0]]);
}

#[test]
fn a_due_claim_fills_its_batch_from_whichever_ranges_have_rows() {
    let conn = migrated();
    let now = SystemTime::now();
    let now_unix = to_unix(now);
    let waiting = insert(&conn, 30, Some(now_unix + 600.0));
    let retries = insert(&conn, 5, Some(now_unix - 5.0));
    let fresh = insert(&conn, 7, None);
    // Set further off than any retry can be: the clock went back since.
    let clock_went_back = insert(&conn, 2, Some(now_unix + 86_400.0));
    let mut expected: Vec<i64> = [retries, fresh, clock_went_back].concat();
    expected.sort_unstable();
    assert_eq!(claim_due(&conn, 50, now), expected);
    // Leased now, so not claimable again; the rows in backoff never were.
    assert_eq!(claim_due(&conn, 50, now), Vec::<i64>::new());
    assert!(!waiting.is_empty());
}
