//! The background worker through the engine: timers beyond any backoff, wakes and backoff,
//! rows made pending elsewhere, and a store that fails under it.

use super::*;

/// The background worker running on `engine`, as the daemon runs it.
struct RunningWorker {
    /// The daemon's end of the engine channel: dropping it would stop the worker.
    _engines: tokio::sync::watch::Sender<Engine>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    fn spawn(engine: Engine, wake: sync::worker::Wake, heartbeat: sync::worker::Heartbeat) -> Self {
        let (engines, receiver) = tokio::sync::watch::channel(engine);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(sync::worker::run(
            receiver,
            wake,
            heartbeat,
            cancel.clone(),
            None,
        ));
        RunningWorker {
            _engines: engines,
            cancel,
            task,
        }
    }

    /// Cancels the worker and waits for it to return.
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// After the wall clock stepped back, a row's backoff timer can lie further off than any backoff
/// or `Retry-After` the engine sets; the worker then treats it as due instead of holding the row
/// for as long as the clock jumped.
#[tokio::test]
async fn the_worker_sends_rows_timed_beyond_any_backoff() {
    let (_guard, dir, store, server) = fixture(1, Reply::ok()).await;
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    conn.execute(
        "UPDATE sync_queue SET next_attempt_at = ?1",
        [now_unix() + 10.0 * 86_400.0],
    )
    .unwrap();
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(&engine, Trigger::Worker, budget()).await;
    assert_eq!((report.delivered, report.remaining), (1, Some(0)));
}

/// The worker delivers an enqueued event as soon as it is woken, retries a failed row when its
/// backoff expires, and stops when cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_delivers_on_wake_and_retries_after_backoff() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let server = FakeIngest::with_plan(|_, n| {
        if n == 0 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let mut settings = support::settings(&server.url("/ingest"), Some(KEY));
    settings.backoff_base = Duration::from_millis(50);
    settings.backoff_cap = Duration::from_millis(200);
    let wake = sync::worker::Wake::new();
    let heartbeat = sync::worker::Heartbeat::default();
    let worker = RunningWorker::spawn(
        support::engine(&store, settings),
        wake.clone(),
        heartbeat.clone(),
    );

    support::fill(&store, 1).await;
    wake.wake();
    let until = Instant::now() + Duration::from_secs(20);
    while support::rows(&dir)[0].synced_at.is_none() {
        assert!(
            Instant::now() < until,
            "the worker never delivered the row: {:?}",
            support::rows(&dir)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        server.count(),
        2,
        "one failure, then one retry after the backoff"
    );
    assert!(heartbeat.age() < Duration::from_secs(5));
    worker.stop().await;
}

/// Rows another process makes pending (here: another store handle, as `gradata queue retry` or an
/// SDK writing the same database would) wake nothing in this one; an idle worker still finds and
/// sends them, within its idle poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_notices_rows_made_pending_elsewhere() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let server = FakeIngest::replying(Reply::ok());
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let worker = RunningWorker::spawn(
        engine,
        sync::worker::Wake::new(),
        sync::worker::Heartbeat::default(),
    );
    // The worker's first pass (on an empty queue) is over once it saved its status.
    let until = Instant::now() + Duration::from_secs(20);
    while store.meta(sync::STATUS_META_KEY).await.unwrap().is_none() {
        assert!(
            Instant::now() < until,
            "the worker never made its first pass"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let elsewhere = support::open_store(&dir);
    let ids = support::fill(&elsewhere, 2).await;
    // Generous: without the poll the rows are never sent, so only a very slow machine nears this.
    let until = Instant::now() + sync::worker::IDLE_POLL_INTERVAL * 12;
    while support::rows(&dir)
        .iter()
        .any(|row| row.synced_at.is_none())
    {
        assert!(
            Instant::now() < until,
            "the idle worker never sent rows written by another process: {:?}",
            support::rows(&dir)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(posted_keys(&server), ids);
    worker.stop().await;
}

/// A worker pass that fails on the store shows it: the sync state is `store_error` with the cause
/// in `last_error`, and the journal gets one warning per episode, not one per retry, and a record
/// when the outbox works again.
#[tokio::test]
async fn a_store_error_in_the_worker_is_shown_and_warned_once_per_episode() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let server = FakeIngest::replying(Reply::ok());
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let status = engine.status().clone();
    let (captured, _log) = logs::capture();
    let wake = sync::worker::Wake::new();
    let worker = RunningWorker::spawn(engine, wake.clone(), sync::worker::Heartbeat::default());
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let saved_at = || -> f64 {
        conn.query_row(
            "SELECT COALESCE(MAX(updated_at), 0) FROM gradata_meta WHERE key = ?1",
            [sync::STATUS_META_KEY],
            |row| row.get(0),
        )
        .unwrap()
    };
    // Runs one more worker pass: wakes the worker and waits until the pass saved its status.
    let another_pass = |before: f64| {
        wake.wake();
        async move {
            let until = Instant::now() + Duration::from_secs(20);
            while saved_at() <= before {
                assert!(Instant::now() < until, "the worker made no pass");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let warnings = || {
        captured
            .with_message("sync worker cannot use the outbox")
            .into_iter()
            .filter(|r| r.level == tracing::Level::WARN)
            .count()
    };
    another_pass(0.0).await;
    assert_eq!(status.state(), SyncState::Idle);

    conn.execute_batch("ALTER TABLE sync_queue RENAME TO sync_queue_away")
        .unwrap();
    for _ in 0..2 {
        another_pass(saved_at()).await;
        assert_eq!(status.state(), SyncState::StoreError);
        let last_error = status.snapshot().last_error.unwrap_or_default();
        assert!(last_error.contains("sync_queue"), "{last_error}");
    }
    assert_eq!(warnings(), 1, "{:?}", captured.records());

    conn.execute_batch("ALTER TABLE sync_queue_away RENAME TO sync_queue")
        .unwrap();
    another_pass(saved_at()).await;
    assert_eq!(status.state(), SyncState::Idle);
    assert_eq!(
        captured
            .with_message("sync worker can use the outbox again")
            .len(),
        1
    );
    conn.execute_batch("ALTER TABLE sync_queue RENAME TO sync_queue_away")
        .unwrap();
    another_pass(saved_at()).await;
    assert_eq!(warnings(), 2, "a new episode warns again");

    worker.stop().await;
}
