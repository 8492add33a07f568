//! The outbox through its public API: group commit, idempotent enqueue, leases, settle, retention.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use gradata::logging::Causes;
use gradata::store::{
    ClaimFrom, Create, EnqueueOutcome, Error, EventId, InstanceLock, Kind, NewEvent, Options,
    QueueLimit, RetrySelector, RowId, RowState, Settlement, Store,
};
use rusqlite::Connection;

use crate::support;

/// A long lease: nothing in these tests expires by itself.
const LEASE: Duration = Duration::from_secs(3600);

fn event(id: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(
        "brain-store",
        EventId::parse(id).unwrap(),
        Kind::Event,
        &data,
    )
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn ids(rows: &[gradata::store::ClaimedRow]) -> Vec<i64> {
    rows.iter().map(|row| row.id.0).collect()
}

fn row(dir: &Path, id: RowId) -> support::Row {
    support::rows(dir)
        .into_iter()
        .find(|row| row.id == id.0)
        .unwrap()
}

fn inserted(outcome: EnqueueOutcome) -> RowId {
    match outcome {
        EnqueueOutcome::Inserted(id) => id,
        EnqueueOutcome::Duplicate(id) => panic!("expected a new row, got a duplicate of {id}"),
    }
}

fn dir_listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A store whose writer waits for the database's write lock (up to a minute) instead of failing.
fn patient_store(dir: &Path) -> Store {
    Store::open(&Options {
        busy_timeout: Duration::from_secs(60),
        ..Options::new(dir)
    })
    .unwrap()
}

/// Takes the database's write lock from another connection, until it commits: the writer's next
/// group waits for it, and every call sent meanwhile queues up behind, so grouping is certain.
fn hold_write_lock(dir: &Path) -> Connection {
    let blocker = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    blocker
}

/// Polls `future` once, reports that through `polled`, then runs it to the end. After the report,
/// the store's command is in the writer's channel (the send happens on the first poll).
async fn report_first_poll<F: Future>(
    future: F,
    polled: tokio::sync::mpsc::UnboundedSender<()>,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut polled = Some(polled);
    std::future::poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if let Some(polled) = polled.take() {
            polled.send(()).unwrap();
        }
        poll
    })
    .await
}

/// 200 concurrent single-event enqueues all succeed and share transactions (group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_share_commits() {
    let (_guard, dir) = support::temp_dir();
    let store = patient_store(&dir);
    let commits_before = store.commits();
    // Hold the write lock from outside so that the writer's first group waits, and every call
    // sent meanwhile has to queue up behind it: the grouping is then certain, not a timing accident.
    let blocker = hold_write_lock(&dir);

    let (polled, mut first_polls) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            let polled = polled.clone();
            tokio::spawn(async move {
                let id = format!("G{i:04}");
                let outcomes = report_first_poll(
                    store.enqueue(vec![event(&id, serde_json::json!({"i": i}))]),
                    polled,
                )
                .await;
                (id, outcomes)
            })
        })
        .collect();
    for _ in 0..200 {
        first_polls.recv().await.unwrap();
    }
    blocker.execute_batch("COMMIT").unwrap();

    let mut expected = HashSet::new();
    for task in tasks {
        let (id, outcomes) = task.await.unwrap();
        let outcomes = outcomes.unwrap();
        assert_eq!(outcomes.len(), 1, "{id}");
        assert!(
            matches!(outcomes[0], EnqueueOutcome::Inserted(_)),
            "{id}: {outcomes:?}"
        );
        expected.insert(id);
    }
    let stored: HashSet<String> = support::rows(&dir)
        .into_iter()
        .map(|row| row.event_id.unwrap())
        .collect();
    assert_eq!(stored, expected);
    let commits = store.commits() - commits_before;
    assert!(
        commits <= 2,
        "200 calls queued behind one blocked group took {commits} commits"
    );
}

/// The queue limit holds against concurrent writers: 40 calls of 3 events each, all grouped into
/// one transaction behind a held write lock, against room for 50 rows. Each call is checked
/// against what the calls before it in the group added, so exactly 16 get in (48 rows) and the
/// other 24 are refused with nothing written; checked before the group, all 40 would fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_limit_holds_for_writes_grouped_together() {
    let (_guard, dir) = support::temp_dir();
    let store = patient_store(&dir);
    let limit = QueueLimit {
        max_rows: 50,
        max_bytes: u64::MAX,
    };
    let blocker = hold_write_lock(&dir);
    let (polled, mut first_polls) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..40)
        .map(|call| {
            let store = store.clone();
            let polled = polled.clone();
            tokio::spawn(async move {
                let events = (0..3)
                    .map(|n| event(&format!("L{call:02}-{n}"), serde_json::json!({})))
                    .collect();
                report_first_poll(store.enqueue_within(events, limit), polled).await
            })
        })
        .collect();
    for _ in 0..40 {
        first_polls.recv().await.unwrap();
    }
    blocker.execute_batch("COMMIT").unwrap();

    let (mut accepted, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcomes) => {
                assert_eq!(outcomes.len(), 3);
                accepted += 1;
            }
            Err(Error::QueueFull { rows, limit: l, .. }) => {
                assert_eq!(l, limit);
                assert!(rows + 3 > 50, "refused with room left: {rows} rows pending");
                refused += 1;
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!((accepted, refused), (16, 24));
    assert_eq!(support::rows(&dir).len(), 48);
    assert_eq!(store.pending().0, 48);

    // The byte limit the same way: one more event whose payload would cross it is refused.
    let tight = QueueLimit {
        max_rows: u64::MAX,
        max_bytes: store.pending().1 + 10,
    };
    let refused = store
        .enqueue_within(vec![event("L-bytes", serde_json::json!({}))], tight)
        .await;
    assert!(
        matches!(refused, Err(Error::QueueFull { .. })),
        "{refused:?}"
    );
    assert_eq!(support::rows(&dir).len(), 48);
}

/// Makes any insert of the event id "boom" fail with "boom refused", as a full disk or a
/// constraint would; returns the connection that set it up.
fn refuse_boom(dir: &Path) -> Connection {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.execute_batch(
        "CREATE TRIGGER boom BEFORE INSERT ON sync_queue WHEN NEW.event_id = 'boom'
         BEGIN SELECT RAISE(ABORT, 'boom refused'); END;",
    )
    .unwrap();
    conn
}

/// A call that is alone in its group and fails gets its own error, not a closed store, whether it
/// holds one event or several, and nothing of it is stored.
#[tokio::test]
async fn a_lone_failing_call_gets_its_own_error() {
    let (_guard, dir) = support::temp_dir();
    let store = patient_store(&dir);
    refuse_boom(&dir);
    for ids in [vec!["boom"], vec!["lone-1", "boom", "lone-2"]] {
        let events = ids
            .iter()
            .map(|id| event(id, serde_json::json!({})))
            .collect();
        let err = store.enqueue(events).await.unwrap_err();
        assert!(
            Causes(&err).to_string().contains("boom refused"),
            "{ids:?}: {err}"
        );
    }
    assert!(support::rows(&dir).is_empty());
    assert_eq!(store.pending(), (0, 0));
    // The store still takes writes.
    let stored = store
        .enqueue(vec![event("after", serde_json::json!({}))])
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
}

/// A call that fails inside a group commit fails alone, all of its events with it: the calls
/// grouped with it still commit, and the pending gauge counts exactly what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_call_in_a_group_fails_alone() {
    let (_guard, dir) = support::temp_dir();
    let store = patient_store(&dir);
    let blocker = refuse_boom(&dir);
    // As above: hold the write lock so that every call queues into one group.
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (polled, mut first_polls) = tokio::sync::mpsc::unbounded_channel();
    let calls: Vec<Vec<&str>> = vec![
        vec!["ok-1"],
        vec!["bad-1", "bad-2", "boom", "bad-3"],
        vec!["ok-2", "ok-3"],
        vec!["boom"],
        vec!["ok-4"],
    ];
    let tasks: Vec<_> = calls
        .iter()
        .map(|ids| {
            let store = store.clone();
            let polled = polled.clone();
            let events: Vec<NewEvent> = ids
                .iter()
                .map(|id| event(id, serde_json::json!({})))
                .collect();
            tokio::spawn(async move { report_first_poll(store.enqueue(events), polled).await })
        })
        .collect();
    for _ in 0..calls.len() {
        first_polls.recv().await.unwrap();
    }
    blocker.execute_batch("COMMIT").unwrap();
    for (ids, task) in calls.iter().zip(tasks) {
        let outcome = task.await.unwrap();
        if ids.contains(&"boom") {
            let err = outcome.unwrap_err();
            assert!(
                Causes(&err).to_string().contains("boom refused"),
                "{ids:?}: {err}"
            );
        } else {
            assert_eq!(outcome.unwrap().len(), ids.len(), "{ids:?}");
        }
    }
    let stored: BTreeSet<String> = support::rows(&dir)
        .into_iter()
        .map(|row| row.event_id.unwrap())
        .collect();
    let expected: BTreeSet<String> = ["ok-1", "ok-2", "ok-3", "ok-4"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(stored, expected);
    let stats = store.stats().await.unwrap();
    assert_eq!(store.pending(), (stats.pending, stats.pending_bytes));
    assert_eq!(stats.pending, 4);
}

/// As soon as an `enqueue` future resolves, an independent connection sees the row.
#[tokio::test]
async fn acknowledged_enqueue_is_visible_to_another_connection() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    for i in 0..20 {
        let id = format!("ACK{i:03}");
        store
            .enqueue(vec![event(&id, serde_json::json!({"i": i}))])
            .await
            .unwrap();
        let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
        let count: i64 = conn
            .query_row(
                "SELECT count(*) FROM sync_queue WHERE event_id = ?1",
                [&id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count, 1, "{id} acknowledged but not visible");
    }
}

/// A reader holding one snapshot keeps every checkpoint from finishing, so the WAL grows far past
/// its usual size; once the reader is gone and the checkpoints catch up, the writer starts the WAL
/// over and cuts the file back to 64 MiB, instead of keeping its largest size for good.
#[tokio::test]
async fn a_wal_grown_behind_a_long_read_is_cut_back_once_checkpoints_catch_up() {
    const LIMIT: u64 = 64 * 1024 * 1024;
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let database = dir.join(gradata::store::DATABASE_FILE);
    let wal = dir.join(format!("{}-wal", gradata::store::DATABASE_FILE));
    let wal_size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    store
        .enqueue(vec![event("WAL-first", serde_json::json!({}))])
        .await
        .unwrap();
    let reader = Connection::open(&database).unwrap();
    // A read transaction: its snapshot holds until COMMIT.
    reader.execute_batch("BEGIN").unwrap();
    let rows: i64 = reader
        .query_row("SELECT COUNT(*) FROM sync_queue", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
    let text = "x".repeat(4000);
    let mut n = 0u64;
    while wal_size() <= LIMIT + 8 * 1024 * 1024 {
        let batch: Vec<NewEvent> = (0..250)
            .map(|_| {
                n += 1;
                event(&format!("WAL{n:07}"), serde_json::json!({"text": text}))
            })
            .collect();
        store.enqueue(batch).await.unwrap();
    }
    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    // Writes go on: the checkpointer copies the WAL back, and a later commit starts it over.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut k = 0u64;
    while wal_size() > LIMIT {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL is still {} bytes ({} checkpoints)",
            wal_size(),
            store.checkpoints()
        );
        k += 1;
        store
            .enqueue(vec![event(&format!("WAL-after{k}"), serde_json::json!({}))])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.count_pending().await.unwrap(), 1 + n + k);
}

/// Committed pages reach the database file while the store is open, copied by the checkpointer
/// thread: the writer's own checkpoint waits for thousands of pages, far more than these writes.
#[tokio::test]
async fn the_wal_is_checkpointed_in_the_background() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let database = dir.join(gradata::store::DATABASE_FILE);
    let before = std::fs::metadata(&database).unwrap().len();
    // About 1.2 MB of rows: some 300 pages.
    let events: Vec<NewEvent> = (0..4000)
        .map(|i| {
            event(
                &format!("CKPT{i:05}"),
                serde_json::json!({"text": "x".repeat(200)}),
            )
        })
        .collect();
    for chunk in events.chunks(500) {
        store.enqueue(chunk.to_vec()).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let size = std::fs::metadata(&database).unwrap().len();
        if size >= before + 1_000_000 && store.checkpoints() > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file is still {size} bytes ({} checkpoints): the WAL was not copied back",
            store.checkpoints()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Copied, not moved: every row is still there, and the writer goes on writing.
    store
        .enqueue(vec![event("CKPT-after", serde_json::json!({}))])
        .await
        .unwrap();
    assert_eq!(store.count_pending().await.unwrap(), 4001);
}

/// The writer skips the original DDL's `kind` check (its events are typed), but the check stays in
/// the schema: another writer still cannot store an unknown kind.
#[tokio::test]
async fn the_kind_check_still_binds_other_writers() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 1).await;
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let err = conn
        .execute(
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at) VALUES ('{}', 'bogus', 0)",
            [],
        )
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    let kinds: Vec<String> = conn
        .prepare("SELECT DISTINCT kind FROM sync_queue")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kinds, ["correction"]);
}

/// The same `event_id`, in separate calls or twice in one call, is stored once, first payload kept.
#[tokio::test]
async fn enqueue_is_idempotent_on_event_id() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);

    let first = event("DUP-A", serde_json::json!({"version": 1}));
    let first_payload = first.payload_json().to_owned();
    let outcome = store.enqueue(vec![first]).await.unwrap();
    let id_a = inserted(outcome[0]);
    let again = store
        .enqueue(vec![event("DUP-A", serde_json::json!({"version": 2}))])
        .await
        .unwrap();
    assert_eq!(again, vec![EnqueueOutcome::Duplicate(id_a)]);

    let b1 = event("DUP-B", serde_json::json!({"version": 1}));
    let b1_payload = b1.payload_json().to_owned();
    let both = store
        .enqueue(vec![b1, event("DUP-B", serde_json::json!({"version": 2}))])
        .await
        .unwrap();
    let id_b = inserted(both[0]);
    assert_eq!(both[1], EnqueueOutcome::Duplicate(id_b));

    let rows = support::rows(&dir);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(row(&dir, id_a).payload_json, first_payload);
    assert_eq!(row(&dir, id_a).event_id.as_deref(), Some("DUP-A"));
    assert_eq!(row(&dir, id_b).payload_json, b1_payload);
    assert_eq!(row(&dir, id_b).event_id.as_deref(), Some("DUP-B"));
}

/// Calls committed in one group get the outcomes they would get one by one: the first event with
/// an id is its row, every later one (in the same call or a later call of the group) is a
/// duplicate of it, and rows are numbered in call order. The group crosses the writer's
/// multi-row insert sizes (32, 8, 1) with duplicates on both sides of a boundary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_within_one_group_resolve_as_if_one_by_one() {
    let (_guard, dir) = support::temp_dir();
    let store = patient_store(&dir);
    let already = inserted(
        store
            .enqueue(vec![event("OLD", serde_json::json!({}))])
            .await
            .unwrap()[0],
    );
    let commits_before = store.commits();
    let blocker = hold_write_lock(&dir);

    // 48 events across calls: ids repeat inside a call (within one insert and across the 32-row
    // boundary), across calls, and one repeats a row committed before the group.
    let mut long: Vec<String> = (0..40).map(|i| format!("L{i:02}")).collect();
    long[20] = "L03".to_owned();
    long[33] = "L05".to_owned();
    long[39] = "B".to_owned();
    let calls: Vec<Vec<String>> = vec![
        vec!["A".into(), "B".into(), "A".into()],
        vec!["B".into(), "C".into()],
        long,
        vec!["OLD".into(), "C".into(), "D".into()],
    ];
    let (polled, mut first_polls) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for ids in &calls {
        let (store, polled) = (store.clone(), polled.clone());
        let events: Vec<NewEvent> = ids
            .iter()
            .map(|id| event(id, serde_json::json!({})))
            .collect();
        tasks.push(tokio::spawn(async move {
            report_first_poll(store.enqueue(events), polled).await
        }));
        // In the writer's channel before the next call is sent: the group keeps this order.
        first_polls.recv().await.unwrap();
    }
    blocker.execute_batch("COMMIT").unwrap();

    let mut rows_by_id: HashMap<String, RowId> = HashMap::new();
    rows_by_id.insert("OLD".to_owned(), already);
    let mut last_row = already;
    for (ids, task) in calls.iter().zip(tasks) {
        let outcomes = task.await.unwrap().unwrap();
        assert_eq!(outcomes.len(), ids.len(), "{ids:?}");
        for (id, outcome) in ids.iter().zip(outcomes) {
            match rows_by_id.get(id) {
                Some(&row) => assert_eq!(outcome, EnqueueOutcome::Duplicate(row), "{id}"),
                None => {
                    let row = inserted(outcome);
                    assert!(row > last_row, "{id}: row {row} after {last_row}");
                    last_row = row;
                    rows_by_id.insert(id.clone(), row);
                }
            }
        }
    }
    let stored = support::rows(&dir);
    assert_eq!(stored.len(), rows_by_id.len(), "{stored:#?}");
    for (id, row_id) in &rows_by_id {
        assert_eq!(row(&dir, *row_id).event_id.as_deref(), Some(id.as_str()));
    }
    assert!(
        store.commits() - commits_before <= 2,
        "the calls were not grouped"
    );
}

/// One call with 500 events is one transaction: 500 rows, 500 `Inserted` in order, ascending ids.
#[tokio::test]
async fn one_call_commits_all_its_events_in_one_transaction() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let events: Vec<NewEvent> = (0..500)
        .map(|i| event(&format!("BULK{i:04}"), serde_json::json!({"i": i})))
        .collect();
    let outcomes = store.enqueue(events).await.unwrap();
    assert_eq!(outcomes.len(), 500);
    let row_ids: Vec<RowId> = outcomes.into_iter().map(inserted).collect();
    assert!(
        row_ids.windows(2).all(|pair| pair[0] < pair[1]),
        "ids not ascending: {row_ids:?}"
    );
    let rows = support::rows(&dir);
    assert_eq!(rows.len(), 500);
    for (i, (id, stored)) in row_ids.iter().zip(&rows).enumerate() {
        assert_eq!(stored.id, id.0);
        assert_eq!(
            stored.event_id.as_deref(),
            Some(format!("BULK{i:04}").as_str())
        );
    }
}

/// `commits()` already counts a write's transaction when the write's future resolves.
#[tokio::test]
async fn commit_counter_includes_every_acknowledged_write() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let before = store.commits();
    for n in 1..=200u64 {
        store
            .enqueue(vec![event(&format!("C{n:03}"), serde_json::json!({}))])
            .await
            .unwrap();
        assert_eq!(
            store.commits() - before,
            n,
            "write {n} was acknowledged before its commit was counted"
        );
    }
}

/// Claims lease disjoint rows; a released row is claimable again.
#[tokio::test]
async fn claims_are_disjoint_until_released() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 15).await;

    let first = store
        .claim_batch(10, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    let second = store
        .claim_batch(10, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    let third = store
        .claim_batch(10, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
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
    let again = store
        .claim_batch(20, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    assert_eq!(ids(&again), ids(&first));
}

/// `ClaimFrom::Due` skips a row waiting on its backoff timer; `ClaimFrom::After` takes it anyway.
#[tokio::test]
async fn due_claims_skip_rows_waiting_on_backoff() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 3).await;
    let claimed = store
        .claim_batch(3, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
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
    let after = store
        .claim_batch(10, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
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
    let first = store
        .claim_batch(2, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
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

/// What the store creates is its owner's alone, whatever the umask (a developer's usual 022 here):
/// the data directory 0700, the database, its WAL files, the lock files and `brain_id` 0600. A
/// directory that already exists keeps its mode.
#[test]
fn a_new_store_is_private_to_its_owner() {
    use nix::sys::stat::{Mode, umask};
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let (_guard, dir) = support::temp_dir();
    let data_dir = dir.join("state").join("gradata");
    let existing = dir.join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The umask is the process's; 022 is what most tests run under anyway.
    let previous = umask(Mode::from_bits_truncate(0o022));
    let opened = [&data_dir, &existing].map(|dir| {
        let store = Store::open(&Options::new(dir)).unwrap();
        gradata::store::resolve_brain_id(dir).unwrap();
        store
    });
    umask(previous);

    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(
        mode(&existing),
        0o755,
        "an existing directory's mode changed"
    );
    for dir in [&data_dir, &existing] {
        for name in [
            "system.db",
            "system.db-wal",
            "system.db-shm",
            ".gradata.leases.lock",
            "brain_id",
        ] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{}", dir.join(name).display());
        }
    }
    drop(opened);
    let _service = Store::open(&Options {
        instance_lock: InstanceLock::Exclusive,
        ..Options::new(&data_dir)
    })
    .unwrap();
    assert_eq!(mode(&data_dir.join(gradata::store::INSTANCE_LOCK)), 0o600);
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
    store
        .claim_batch(5, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
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
    store
        .claim_batch(5, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
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
            Settlement::Synced {
                id: RowId(4),
                status: 200,
            },
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
    store
        .claim_batch(6, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    store
        .settle(vec![
            Settlement::Synced {
                id: RowId(1),
                status: 200,
            },
            Settlement::Synced {
                id: RowId(2),
                status: 200,
            },
            Settlement::Synced {
                id: RowId(3),
                status: 200,
            },
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

/// A second exclusive open of a data directory fails with `Locked` until the first store is gone.
#[test]
fn instance_lock_admits_one_store_at_a_time() {
    let (_guard, dir) = support::temp_dir();
    let options = Options {
        instance_lock: InstanceLock::Exclusive,
        ..Options::new(&dir)
    };
    let first = Store::open(&options).unwrap();
    let second = Store::open(&options);
    assert!(
        matches!(second, Err(Error::Locked(_))),
        "second exclusive open: {second:?}"
    );
    drop(first);
    Store::open(&options).unwrap();
}

/// Leases left by a store that is gone are released by the next open when it is alone.
#[tokio::test]
async fn stale_leases_are_recovered_by_a_lone_open() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 10).await;
    let claimed = store
        .claim_batch(10, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 10);
    drop(store);
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.lease_until.is_some()),
        "the dead store's leases should still be in the table"
    );

    let store = support::open_store(&dir);
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.lease_until.is_none()),
        "a lone open should release stale leases"
    );
    let again = store
        .claim_batch(10, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    assert_eq!(ids(&again), ids(&claimed));
}

/// An open while another store is still open leaves that store's leases alone.
#[tokio::test]
async fn an_open_beside_a_live_store_keeps_its_leases() {
    let (_guard, dir) = support::temp_dir();
    let live = support::open_store(&dir);
    support::fill(&live, 10).await;
    live.claim_batch(10, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    let leases_before: Vec<Option<f64>> = support::rows(&dir)
        .iter()
        .map(|row| row.lease_until)
        .collect();

    let second = support::open_store(&dir);
    let leases_after: Vec<Option<f64>> = support::rows(&dir)
        .iter()
        .map(|row| row.lease_until)
        .collect();
    assert_eq!(leases_after, leases_before);
    assert!(leases_after.iter().all(Option::is_some));
    let stolen = second
        .claim_batch(10, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    assert!(
        stolen.is_empty(),
        "claimed a live store's rows: {:?}",
        ids(&stolen)
    );
    drop(live);
}

/// `Create::Never` on an empty directory fails with `NotFound` and creates nothing there.
#[test]
fn create_never_on_an_empty_dir_creates_nothing() {
    let (_guard, dir) = support::temp_dir();
    let options = Options {
        create: Create::Never,
        ..Options::new(&dir)
    };
    assert!(dir_listing(&dir).is_empty());
    let opened = Store::open(&options);
    assert!(matches!(opened, Err(Error::NotFound(_))), "{opened:?}");
    assert_eq!(dir_listing(&dir), BTreeSet::new());
}

/// `Create::Never` on a database without the queue table fails with `NoQueueTable`, adds nothing.
#[test]
fn create_never_without_queue_table_adds_no_table() {
    let (_guard, dir) = support::temp_dir();
    let path = dir.join(gradata::store::DATABASE_FILE);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE other (x INTEGER);")
            .unwrap();
    }
    let options = Options {
        create: Create::Never,
        ..Options::new(&dir)
    };
    let opened = Store::open(&options);
    assert!(matches!(opened, Err(Error::NoQueueTable(_))), "{opened:?}");
    let conn = Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, vec!["other".to_owned()]);
}

/// `Create::Never` on a database without the queue table leaves the file byte for byte unchanged.
#[test]
fn create_never_without_queue_table_writes_nothing() {
    let (_guard, dir) = support::temp_dir();
    let path = dir.join(gradata::store::DATABASE_FILE);
    {
        // Another tool's database, in SQLite's default rollback-journal mode.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE other (x INTEGER);")
            .unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let listing = dir_listing(&dir);
    let opened = Store::open(&Options {
        create: Create::Never,
        ..Options::new(&dir)
    });
    assert!(matches!(opened, Err(Error::NoQueueTable(_))), "{opened:?}");
    assert_eq!(dir_listing(&dir), listing);
    let after = std::fs::read(&path).unwrap();
    let changed: Vec<usize> = (0..bytes.len().max(after.len()))
        .filter(|&i| bytes.get(i) != after.get(i))
        .collect();
    assert!(
        changed.is_empty(),
        "the database file was modified at byte offsets {changed:?}"
    );
}

/// The original daemon's columns, read before gradata has added its own.
type OriginalRow = (
    i64,
    String,
    String,
    f64,
    Option<f64>,
    Option<i64>,
    Option<String>,
);

fn original_rows(dir: &Path) -> Vec<OriginalRow> {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.prepare(
        "SELECT id, payload_json, kind, enqueued_at, synced_at, attempts, last_error
           FROM sync_queue ORDER BY id",
    )
    .unwrap()
    .query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Opening an original database keeps every original value, backfills `event_id`, and is idempotent.
#[test]
fn migrating_an_original_database_keeps_its_rows() {
    let (_guard, dir) = support::temp_dir();
    let payloads: Vec<String> = (0..50).map(support::original_payload).collect();
    support::original_db(&dir, &payloads);
    {
        // Some history, as the original would have left it.
        let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
        conn.execute_batch(
            "UPDATE sync_queue SET synced_at = enqueued_at + 5 WHERE id <= 10;
             UPDATE sync_queue SET attempts = 3, last_error = 'timeout' WHERE id BETWEEN 11 AND 15;
             UPDATE sync_queue SET attempts = NULL WHERE id = 16;",
        )
        .unwrap();
    }
    let before = original_rows(&dir);
    assert_eq!(before.len(), 50);

    drop(support::open_store(&dir));
    let migrated = support::rows(&dir);
    let kept: Vec<OriginalRow> = migrated
        .iter()
        .map(|row| {
            (
                row.id,
                row.payload_json.clone(),
                row.kind.clone(),
                row.enqueued_at,
                row.synced_at,
                row.attempts,
                row.last_error.clone(),
            )
        })
        .collect();
    assert_eq!(kept, before);
    for (n, row) in migrated.iter().enumerate() {
        assert_eq!(
            row.event_id,
            Some(format!("01ORIG{n:08}")),
            "row {}",
            row.id
        );
        assert_eq!(
            (
                row.next_attempt_at,
                row.lease_until,
                row.dead_at,
                row.last_status
            ),
            (None, None, None, None)
        );
    }

    drop(support::open_store(&dir));
    assert_eq!(support::rows(&dir), migrated, "a second open changed rows");
}

/// `open_read_only` refuses an unmigrated original database, and reads it once migrated.
#[tokio::test]
async fn read_only_open_needs_a_migrated_database() {
    let (_guard, dir) = support::temp_dir();
    let payloads: Vec<String> = (0..50).map(support::original_payload).collect();
    support::original_db(&dir, &payloads);
    let options = Options::new(&dir);
    let refused = Store::open_read_only(&options);
    assert!(matches!(refused, Err(Error::NotMigrated(_))), "{refused:?}");

    drop(Store::open(&options).unwrap());
    let store = Store::open_read_only(&options).unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.synced), (50, 0, 0));
    assert_eq!(
        stats.pending_bytes,
        payloads.iter().map(|p| p.len() as u64).sum::<u64>()
    );
    assert!(matches!(
        store.list(RowState::Pending, 1).await.map(|l| l.len()),
        Ok(1)
    ));
}

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
    store
        .claim_batch(4, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    store
        .settle(vec![
            Settlement::Synced {
                id: RowId(1),
                status: 200,
            },
            Settlement::Synced {
                id: RowId(2),
                status: 200,
            },
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

    store
        .settle(vec![Settlement::Synced {
            id: RowId(4),
            status: 200,
        }])
        .await
        .unwrap();
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
        .settle_leased(
            vec![Settlement::Synced {
                id: RowId(3),
                status: 200,
            }],
            stale_lease,
        )
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
    store
        .claim_batch(4, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap();
    store
        .settle(vec![
            Settlement::Synced {
                id: RowId(1),
                status: 200,
            },
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
