//! Claims, leases and settlements: disjoint claims, due rows and backoff timers, unreadable
//! rows, settlement columns and fencing, retry and purge.

use super::*;

/// Claims lease disjoint rows; a released row is claimable again.
#[tokio::test]
async fn claims_are_disjoint_until_released() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 15).await;

    let first = claim_first(&store, 10).await;
    let second = claim_first(&store, 10).await;
    let third = claim_first(&store, 10).await;
    assert_eq!(ids(&first), (1..=10).collect::<Vec<_>>());
    assert_eq!(ids(&second), (11..=15).collect::<Vec<_>>());
    assert!(third.is_empty(), "{:?}", ids(&third));
    for stored in support::rows(&dir) {
        assert!(stored.lease_until.is_some(), "row {} not leased", stored.id);
    }

    store
        .settle(
            first
                .iter()
                .map(|row| Settlement::Release {
                    id: row.id,
                    status: None,
                    error: None,
                })
                .collect(),
        )
        .await
        .unwrap();
    let again = claim_first(&store, 20).await;
    assert_eq!(ids(&again), ids(&first));
}

/// `ClaimFrom::Due` skips a row waiting on its backoff timer; `ClaimFrom::After` takes it anyway.
#[tokio::test]
async fn due_claims_skip_rows_waiting_on_backoff() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 3).await;
    let claimed = claim_first(&store, 3).await;
    assert_eq!(ids(&claimed), vec![1, 2, 3]);
    store
        .settle(vec![
            Settlement::Retry {
                id: RowId(1),
                status: Some(503),
                error: "http 503".to_owned(),
                next_attempt_at: SystemTime::now() + Duration::from_secs(3600),
            },
            Settlement::Release {
                id: RowId(2),
                status: None,
                error: None,
            },
            Settlement::Release {
                id: RowId(3),
                status: None,
                error: None,
            },
        ])
        .await
        .unwrap();

    let due = store.claim_batch(10, ClaimFrom::Due, LEASE).await.unwrap();
    assert_eq!(ids(&due), vec![2, 3]);
    let after = claim_first(&store, 10).await;
    assert_eq!(ids(&after), vec![1]);
}

/// Rows another program wrote in a shape gradata cannot post do not block the queue: a BLOB payload
/// of JSON text is posted as it is, an `attempts` that is not a number counts as none, and a payload
/// that is not UTF-8 (as TEXT or as a BLOB) makes its row dead alone, kept with why, while the
/// claim still fills its batch with the rows behind it.
#[tokio::test]
async fn unreadable_rows_go_dead_alone_and_block_nothing() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 1).await;
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.execute_batch(
        "INSERT INTO sync_queue (id, payload_json, kind, enqueued_at, attempts) VALUES
            (2, CAST(X'7B2262223A2280FF227D' AS TEXT), 'event', 1.0, 0),
            (3, X'7B2261223A317D', 'event', 1.0, 0),
            (4, '{\"c\":2}', 'event', 1.0, 'many'),
            (5, X'FF00FF', 'event', 1.0, 2),
            (6, '{\"d\":3}', 'event', 1.0, 1);",
    )
    .unwrap();
    store.recount_pending().await.unwrap();

    // Two rows asked for: row 2 goes dead and row 3 takes its place.
    let first = claim_first(&store, 2).await;
    assert_eq!(ids(&first), vec![1, 3]);
    assert_eq!(first[1].payload_json, r#"{"a":1}"#);
    let rest = store.claim_batch(10, ClaimFrom::Due, LEASE).await.unwrap();
    assert_eq!(ids(&rest), vec![4, 6]);
    assert_eq!(
        (rest[0].payload_json.as_str(), rest[0].attempts),
        (r#"{"c":2}"#, 0)
    );
    assert_eq!(rest[1].attempts, 1);

    // The two unreadable rows are dead, kept byte for byte, with why; no attempt was counted.
    let dead: Vec<(i64, i64, Option<f64>, String, i64)> = conn
        .prepare(
            "SELECT id, length(CAST(payload_json AS BLOB)), dead_at, last_error, attempts
               FROM sync_queue WHERE dead_at IS NOT NULL ORDER BY id",
        )
        .unwrap()
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for ((id, bytes, _, error, attempts), (want_id, want_bytes, want_attempts)) in
        dead.iter().zip([(2, 10, 0), (5, 3, 2)])
    {
        assert_eq!(
            (*id, *bytes, *attempts),
            (want_id, want_bytes, want_attempts)
        );
        assert!(
            error.starts_with("unreadable row: payload_json is not UTF-8"),
            "{error}"
        );
    }
    // The operator sees them, and the gauge no longer counts them.
    let listed = store.list(RowState::Dead, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.id.0).collect::<Vec<_>>(),
        vec![2, 5]
    );
    assert_eq!(store.pending().0, 4);
    assert_eq!(store.recount_pending().await.unwrap().0, 4);
}

/// Two stores on one directory claiming at once from two threads never get the same row.
#[test]
fn two_stores_claiming_concurrently_never_share_a_row() {
    let (_guard, dir) = support::temp_dir();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let all: HashSet<i64> = {
        let store = support::open_store(&dir);
        runtime.block_on(support::fill(&store, 700));
        support::rows(&dir).into_iter().map(|row| row.id).collect()
    };
    let stores = [support::open_store(&dir), support::open_store(&dir)];
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = stores
        .into_iter()
        .map(|store| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    let batch = runtime
                        .block_on(store.claim_batch(7, ClaimFrom::After(RowId(0)), LEASE))
                        .unwrap();
                    if batch.is_empty() {
                        return mine;
                    }
                    assert!(batch.len() <= 7);
                    mine.extend(ids(&batch));
                }
            })
        })
        .collect();
    let claimed: Vec<Vec<i64>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let a: HashSet<i64> = claimed[0].iter().copied().collect();
    let b: HashSet<i64> = claimed[1].iter().copied().collect();
    assert_eq!(a.len(), claimed[0].len(), "a store got a row twice");
    assert_eq!(b.len(), claimed[1].len(), "a store got a row twice");
    let shared: Vec<_> = a.intersection(&b).collect();
    assert!(shared.is_empty(), "rows claimed by both: {shared:?}");
    let union: HashSet<i64> = a.union(&b).copied().collect();
    assert_eq!(union, all);
}

/// Each settlement kind writes exactly its columns, and nothing un-syncs a synced row.
#[tokio::test]
async fn settlements_record_their_outcome() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 5).await;
    claim_first(&store, 5).await;
    let retry_at = SystemTime::now() + Duration::from_secs(90);
    let before = unix(SystemTime::now());
    store
        .settle(vec![
            Settlement::Synced {
                id: RowId(1),
                status: 201,
            },
            Settlement::Retry {
                id: RowId(2),
                status: Some(503),
                error: "http 503: busy".to_owned(),
                next_attempt_at: retry_at,
            },
            Settlement::Dead {
                id: RowId(3),
                status: 422,
                error: "http 422: bad payload".to_owned(),
            },
            Settlement::Release {
                id: RowId(4),
                status: Some(401),
                error: Some("http 401: who are you".to_owned()),
            },
        ])
        .await
        .unwrap();
    let after = unix(SystemTime::now());
    let within = |t: Option<f64>| t.is_some_and(|t| t >= before && t <= after);

    let synced = row(&dir, RowId(1));
    assert!(within(synced.synced_at), "{synced:?}");
    assert_eq!(synced.lease_until, None);
    assert_eq!(synced.last_status, Some(201));
    assert_eq!(synced.attempts, Some(0));
    assert_eq!(synced.dead_at, None);

    let retried = row(&dir, RowId(2));
    assert_eq!(retried.synced_at, None);
    assert_eq!(retried.attempts, Some(1));
    assert_eq!(retried.lease_until, None);
    let next = retried.next_attempt_at.unwrap();
    assert!((next - unix(retry_at)).abs() < 0.001, "{retried:?}");
    assert_eq!(retried.last_error.as_deref(), Some("http 503: busy"));
    assert_eq!(retried.last_status, Some(503));
    assert_eq!(retried.dead_at, None);

    let dead = row(&dir, RowId(3));
    assert!(within(dead.dead_at), "{dead:?}");
    assert_eq!(dead.synced_at, None);
    assert_eq!(dead.attempts, Some(1));
    assert_eq!(dead.lease_until, None);
    assert_eq!(dead.last_status, Some(422));
    assert_eq!(dead.last_error.as_deref(), Some("http 422: bad payload"));

    let released = row(&dir, RowId(4));
    assert_eq!(released.attempts, Some(0));
    assert_eq!(released.lease_until, None);
    assert_eq!(released.synced_at, None);
    assert_eq!(released.dead_at, None);
    assert_eq!(released.next_attempt_at, None);
    assert_eq!(released.last_status, Some(401));

    assert!(row(&dir, RowId(5)).lease_until.is_some());

    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.dead, stats.synced, stats.leased),
        (3, 1, 1, 1),
        "{stats:?}"
    );

    // A late failure report about a row that is already delivered changes nothing.
    store
        .settle(vec![
            Settlement::Retry {
                id: RowId(1),
                status: None,
                error: "timeout".to_owned(),
                next_attempt_at: SystemTime::now() + Duration::from_secs(60),
            },
            Settlement::Dead {
                id: RowId(1),
                status: 400,
                error: "http 400".to_owned(),
            },
        ])
        .await
        .unwrap();
    assert_eq!(row(&dir, RowId(1)), synced);
}

/// `retry(AllDead)` revives every dead row; `retry(Ids)` only the listed ones.
#[tokio::test]
async fn retry_makes_dead_rows_pending_again() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 5).await;
    claim_first(&store, 5).await;
    let dead = |id| Settlement::Dead {
        id: RowId(id),
        status: 400,
        error: "http 400".to_owned(),
    };
    store
        .settle(vec![
            dead(1),
            dead(2),
            dead(3),
            synced(4),
            Settlement::Release {
                id: RowId(5),
                status: None,
                error: None,
            },
        ])
        .await
        .unwrap();
    let before = support::rows(&dir);

    assert_eq!(
        store
            .retry(RetrySelector::Ids(vec![RowId(2)]))
            .await
            .unwrap(),
        1
    );
    let after_one = support::rows(&dir);
    assert_eq!(after_one[1].dead_at, None);
    assert_eq!(after_one[1].synced_at, None);
    assert_eq!(after_one[1].attempts, Some(1));
    for i in [0, 2, 3, 4] {
        assert_eq!(after_one[i], before[i], "row {} was not listed", i + 1);
    }

    // A synced row is not retried.
    assert_eq!(
        store
            .retry(RetrySelector::Ids(vec![RowId(4)]))
            .await
            .unwrap(),
        0
    );
    assert_eq!(row(&dir, RowId(4)), before[3]);

    assert_eq!(store.retry(RetrySelector::AllDead).await.unwrap(), 2);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.synced), (4, 0, 1));
    let due = store.claim_batch(10, ClaimFrom::Due, LEASE).await.unwrap();
    assert_eq!(ids(&due), vec![1, 2, 3, 5]);
}

/// `purge_synced` deletes synced rows older than the cutoff and never a pending or dead row.
#[tokio::test]
async fn purge_deletes_only_old_synced_rows() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 6).await;
    claim_first(&store, 6).await;
    store
        .settle(vec![
            synced(1),
            synced(2),
            synced(3),
            Settlement::Dead {
                id: RowId(4),
                status: 422,
                error: "http 422".to_owned(),
            },
            Settlement::Retry {
                id: RowId(5),
                status: Some(500),
                error: "http 500".to_owned(),
                next_attempt_at: SystemTime::now(),
            },
        ])
        .await
        .unwrap();

    let handle = &store;
    let purge = |older_than| async move {
        let cancel = tokio_util::sync::CancellationToken::new();
        gradata::daemon::retention::purge(handle, older_than, 1000, &cancel)
            .await
            .unwrap()
            .purged
    };
    assert_eq!(
        purge(Duration::from_secs(3600)).await,
        0,
        "rows synced just now are younger than an hour"
    );
    assert_eq!(support::rows(&dir).len(), 6);

    assert_eq!(purge(Duration::ZERO).await, 3);
    let left: Vec<i64> = support::rows(&dir).iter().map(|row| row.id).collect();
    assert_eq!(left, vec![4, 5, 6]);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.synced), (2, 1, 0));
}

/// Settlements are fenced by the lease they were claimed with. A drainer whose lease was freed as
/// stale (it stopped renewing it) and whose rows another drainer claimed cannot release the new holder's lease, count an attempt on
/// it, or overwrite what made a row dead; its delivery still counts, but a row that was already
/// dead is not counted out of the pending gauge twice.
#[tokio::test]
async fn settlements_are_fenced_by_the_lease_they_were_claimed_with() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 4).await;
    // The stale drainer: an observer freed its leases, fenced by the token it saw.
    let stale_lease = SystemTime::now() - Duration::from_secs(1);
    let stale = store
        .claim_batch_until(4, ClaimFrom::After(RowId(0)), stale_lease, LEASE)
        .await
        .unwrap();
    assert_eq!(ids(&stale), vec![1, 2, 3, 4]);
    let held = store.leases().await.unwrap();
    assert_eq!(held.len(), 4, "{held:?}");
    assert_eq!(store.release_stale_leases(held).await.unwrap(), 4);
    // The live drainer takes the rows over.
    let live_lease = SystemTime::now() + LEASE;
    let live = store
        .claim_batch_until(4, ClaimFrom::After(RowId(0)), live_lease, LEASE)
        .await
        .unwrap();
    assert_eq!(ids(&live), vec![1, 2, 3, 4]);
    store
        .settle_leased(
            vec![Settlement::Dead {
                id: RowId(3),
                status: 422,
                error: "http 422: bad field".to_owned(),
            }],
            live_lease,
        )
        .await
        .unwrap();
    assert_eq!(store.pending().0, 3);

    store
        .settle_leased(
            vec![
                Settlement::Release {
                    id: RowId(1),
                    status: Some(401),
                    error: Some("http 401".to_owned()),
                },
                Settlement::Retry {
                    id: RowId(2),
                    status: Some(503),
                    error: "http 503".to_owned(),
                    next_attempt_at: SystemTime::now() + LEASE,
                },
                Settlement::Retry {
                    id: RowId(3),
                    status: Some(503),
                    error: "http 503".to_owned(),
                    next_attempt_at: SystemTime::now() + LEASE,
                },
                Settlement::Dead {
                    id: RowId(4),
                    status: 400,
                    error: "http 400".to_owned(),
                },
            ],
            stale_lease,
        )
        .await
        .unwrap();
    let rows = support::rows(&dir);
    for live_row in [&rows[0], &rows[1], &rows[3]] {
        assert_eq!(
            live_row.lease_until,
            Some(unix(live_lease)),
            "the live lease of row {} was touched",
            live_row.id
        );
        assert_eq!(
            (
                live_row.attempts,
                live_row.last_error.as_deref(),
                live_row.dead_at
            ),
            (Some(0), None, None),
            "{live_row:?}"
        );
    }
    assert_eq!(rows[2].attempts, Some(1), "{:?}", rows[2]);
    assert_eq!(rows[2].last_status, Some(422));
    assert_eq!(rows[2].last_error.as_deref(), Some("http 422: bad field"));
    assert!(rows[2].dead_at.is_some());
    assert_eq!(store.pending().0, 3);

    // The stale drainer's delivery of the dead row is a fact, but that row was no longer pending.
    store
        .settle_leased(vec![synced(3)], stale_lease)
        .await
        .unwrap();
    assert!(row(&dir, RowId(3)).synced_at.is_some());
    assert_eq!(store.pending().0, 3, "the dead row was counted out twice");
    assert_eq!(store.count_pending().await.unwrap(), 3);
}

/// A due claim takes a row whose timer lies further off than any retry can be set (the wall clock
/// went back since), and still leaves a row whose timer is merely in the future.
#[tokio::test]
async fn a_due_claim_takes_rows_timed_beyond_the_longest_wait() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 2).await;
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let now = unix(SystemTime::now());
    conn.execute(
        "UPDATE sync_queue SET next_attempt_at = ?1 WHERE id = 1",
        [now + 10.0 * 86_400.0],
    )
    .unwrap();
    conn.execute(
        "UPDATE sync_queue SET next_attempt_at = ?1 WHERE id = 2",
        [now + 1800.0],
    )
    .unwrap();
    let claimed = store
        .claim_batch_until(
            10,
            ClaimFrom::Due,
            SystemTime::now() + LEASE,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(ids(&claimed), vec![1]);
}

/// A due claim and the next wake-up find the few due rows among many that are not: 50,000 dead
/// rows and 50,000 rows waiting in backoff (written straight into the table, as after a long
/// outage), then 10 rows due, 5 never tried and 5 retries whose timer has run out. The claim
/// returns exactly those 10 and nothing else, and `next_due_at` says "now"; once they are leased,
/// it names the earliest backoff timer. (How fast is for the benchmarks; the plans are checked by
/// the store's unit tests.)
#[tokio::test]
async fn a_due_claim_finds_the_few_due_rows_among_many_dead_and_waiting() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let now = unix(SystemTime::now());
    let mut conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, next_attempt_at, dead_at)
                 VALUES ('{}', 'event', ?1, ?2, ?3, ?4)",
            )
            .unwrap();
        let mut add = |attempts: i64, next_attempt_at: Option<f64>, dead_at: Option<f64>| {
            insert
                .execute(rusqlite::params![
                    now - 60.0,
                    attempts,
                    next_attempt_at,
                    dead_at
                ])
                .unwrap();
            tx.last_insert_rowid()
        };
        let mut due = Vec::new();
        for n in 0..50_000 {
            add(1, Some(now - 30.0), Some(now - 10.0));
            add(3, Some(now + 600.0 + f64::from(n)), None);
            if n % 10_000 == 0 {
                due.push(add(2, Some(now - 1.0), None));
                due.push(add(0, None, None));
            }
        }
        assert_eq!(due.len(), 10);
        drop(insert);
        tx.commit().unwrap();
        assert_eq!(
            store.next_due_at().await.unwrap(),
            Some(SystemTime::UNIX_EPOCH),
            "rows never tried are due now"
        );
        let claimed = store.claim_batch(50, ClaimFrom::Due, LEASE).await.unwrap();
        assert_eq!(ids(&claimed), due);
    }
    let earliest_timer = SystemTime::UNIX_EPOCH + Duration::from_secs_f64(now + 600.0);
    let next = store.next_due_at().await.unwrap().unwrap();
    let apart = next
        .duration_since(earliest_timer)
        .unwrap_or_else(|err| err.duration());
    assert!(apart < Duration::from_millis(1), "{next:?}");
}
