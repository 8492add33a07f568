//! The outbox through its public API. This file: group commit, idempotent enqueue, the WAL, and
//! the helpers the files beside it share (`claims`, `open`, `counts`).

mod claims;
mod counts;
mod open;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use gradata::logging::Causes;
use gradata::store::{
    ClaimFrom, ClaimedRow, Create, EnqueueOutcome, Error, EventId, InstanceLock, Kind, NewEvent,
    Options, QueueLimit, RetrySelector, RowId, RowState, Settlement, Store,
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

/// Leases up to `n` rows from the start of the queue under the long [`LEASE`].
async fn claim_first(store: &Store, n: usize) -> Vec<ClaimedRow> {
    store
        .claim_batch(n, ClaimFrom::After(RowId(0)), LEASE)
        .await
        .unwrap()
}

/// The settlement of row `id` delivered with a 200.
fn synced(id: i64) -> Settlement {
    Settlement::Synced {
        id: RowId(id),
        status: 200,
    }
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
