//! The counts status reads: `stats()`, the pending gauge, and the triggers' counts whoever writes.

use super::*;

/// `stats()` counts every state and finds the oldest pending row after a mix of operations.
#[tokio::test]
async fn stats_reflect_a_mix_of_states() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let empty = store.stats().await.unwrap();
    assert_eq!(
        (
            empty.pending,
            empty.dead,
            empty.synced,
            empty.leased,
            empty.pending_bytes
        ),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(empty.oldest_pending_at, None);

    let early: Vec<NewEvent> = (0..4)
        .map(|i| event(&format!("EARLY{i}"), serde_json::json!({"i": i})))
        .collect();
    store.enqueue(early).await.unwrap();
    let late: Vec<NewEvent> = (0..4)
        .map(|i| event(&format!("LATE{i}"), serde_json::json!({"i": i})))
        .collect();
    store.enqueue(late).await.unwrap();
    claim_first(&store, 4).await;
    store
        .settle(vec![
            synced(1),
            synced(2),
            Settlement::Dead {
                id: RowId(3),
                status: 400,
                error: "http 400".to_owned(),
            },
        ])
        .await
        .unwrap();

    let rows = support::rows(&dir);
    let at = |seconds: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds);
    assert!(rows[4].enqueued_at > rows[3].enqueued_at, "{rows:?}");
    let pending_bytes = |rows: &[support::Row]| -> u64 {
        rows.iter()
            .filter(|r| r.synced_at.is_none() && r.dead_at.is_none())
            .map(|r| r.payload_json.len() as u64)
            .sum()
    };

    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.dead, stats.synced, stats.leased),
        (5, 1, 2, 1),
        "{stats:?}"
    );
    assert_eq!(stats.pending_bytes, pending_bytes(&rows));
    assert_eq!(stats.oldest_pending_at, Some(at(rows[3].enqueued_at)));

    store.settle(vec![synced(4)]).await.unwrap();
    let rows = support::rows(&dir);
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.dead, stats.synced, stats.leased),
        (4, 1, 3, 0),
        "{stats:?}"
    );
    assert_eq!(stats.pending_bytes, pending_bytes(&rows));
    assert_eq!(stats.oldest_pending_at, Some(at(rows[4].enqueued_at)));

    store.retry(RetrySelector::AllDead).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.synced), (5, 0, 3));
    assert_eq!(stats.oldest_pending_at, Some(at(rows[2].enqueued_at)));
}

/// The pending gauge follows every change this process makes, exactly as a full count would.
#[tokio::test]
async fn pending_gauge_tracks_enqueue_settle_and_retry() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    async fn check(store: &gradata::store::Store) -> u64 {
        let stats = store.stats().await.unwrap();
        assert_eq!(store.pending(), (stats.pending, stats.pending_bytes));
        stats.pending
    }
    assert_eq!(check(&store).await, 0);
    let ids = support::fill(&store, 10).await;
    support::fill(&store, 10).await; // the same ids again: duplicates change nothing
    assert_eq!(check(&store).await, 10);
    assert_eq!(ids.len(), 10);
    let rows = store
        .claim_batch(
            5,
            gradata::store::ClaimFrom::After(gradata::store::RowId(0)),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap();
    let mut settlements: Vec<gradata::store::Settlement> = rows[..4]
        .iter()
        .map(|r| gradata::store::Settlement::Synced {
            id: r.id,
            status: 200,
        })
        .collect();
    settlements.push(gradata::store::Settlement::Dead {
        id: rows[4].id,
        status: 422,
        error: "no".to_owned(),
    });
    store.settle(settlements).await.unwrap();
    assert_eq!(check(&store).await, 5);
    store
        .retry(gradata::store::RetrySelector::AllDead)
        .await
        .unwrap();
    assert_eq!(check(&store).await, 6);
    // A row changed behind the store's back is picked up by a recount.
    rusqlite::Connection::open(dir.join(gradata::store::DATABASE_FILE))
        .unwrap()
        .execute(
            "UPDATE sync_queue SET synced_at = 1 WHERE id = (SELECT MAX(id) FROM sync_queue)",
            [],
        )
        .unwrap();
    assert_eq!(store.pending().0, 6);
    assert_eq!(
        store.refresh_pending().await.unwrap().map(|(rows, _)| rows),
        Some(5)
    );
    assert_eq!(store.pending().0, 5);
    // Nothing changed since: no count, and no transaction either.
    let commits = store.commits();
    assert_eq!(store.refresh_pending().await.unwrap(), None);
    assert_eq!(store.commits(), commits);
    assert_eq!(store.recount_pending().await.unwrap().0, 5);
}

/// (pending, dead, synced, pending bytes), counted from the rows by another connection.
fn counted(dir: &Path) -> (u64, u64, u64, u64) {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.query_row(
        "SELECT COALESCE(SUM(synced_at IS NULL AND dead_at IS NULL), 0),
                COALESCE(SUM(synced_at IS NULL AND dead_at IS NOT NULL), 0),
                COALESCE(SUM(synced_at IS NOT NULL), 0),
                COALESCE(SUM(CASE WHEN synced_at IS NULL AND dead_at IS NULL
                                  THEN length(CAST(payload_json AS BLOB)) END), 0)
           FROM sync_queue",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
    )
    .unwrap()
}

/// The counts status reads without counting stay those of the rows through every change, the
/// store's own and those of another process writing the same table (plain SQL on a second
/// connection, as `gradata drain`, `gradata queue retry` or the Python SDK would, with the
/// original columns only); the pending gauge follows them too.
#[tokio::test]
async fn status_counts_stay_right_whoever_writes_the_queue() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let other = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let check = async |store: &Store, step: &str| {
        let stats = store.stats().await.unwrap();
        assert_eq!(
            (stats.pending, stats.dead, stats.synced, stats.pending_bytes),
            counted(&dir),
            "after {step}"
        );
        stats
    };
    support::fill(&store, 6).await;
    check(&store, "enqueue").await;
    other
        .execute_batch(
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at)
             VALUES ('{\"sdk\":true}', 'correction', 1.0);",
        )
        .unwrap();
    check(&store, "an insert by the original schema's writer").await;
    claim_first(&store, 4).await;
    store
        .settle(vec![
            synced(1),
            Settlement::Dead {
                id: RowId(2),
                status: 400,
                error: "http 400".to_owned(),
            },
            Settlement::Retry {
                id: RowId(3),
                status: Some(503),
                error: "http 503".to_owned(),
                next_attempt_at: SystemTime::now() + Duration::from_secs(60),
            },
        ])
        .await
        .unwrap();
    check(&store, "settlements").await;
    other
        .execute_batch(
            "UPDATE sync_queue SET synced_at = 5.0 WHERE id = 7;
             UPDATE sync_queue SET dead_at = 5.0 WHERE id = 5;",
        )
        .unwrap();
    check(&store, "settlements by another process").await;
    store.retry(RetrySelector::AllDead).await.unwrap();
    check(&store, "retry").await;
    assert_eq!(
        store.refresh_pending().await.unwrap().map(|(rows, _)| rows),
        Some(counted(&dir).0),
        "the pending gauge follows another process's writes"
    );
    other
        .execute_batch("UPDATE sync_queue SET synced_at = 1.0 WHERE id IN (2, 4)")
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let purged =
        gradata::daemon::retention::purge(&store, Duration::from_secs(3600), 1000, &cancel)
            .await
            .unwrap()
            .purged;
    assert_eq!(purged, 3);
    let stats = check(&store, "purge").await;
    assert_eq!((stats.pending, stats.dead, stats.synced), (3, 0, 1));
    // A store opened again reads the same counts, without counting.
    drop(store);
    let store = support::open_store(&dir);
    check(&store, "reopen").await;
    assert_eq!(store.pending().0, 3);
}
