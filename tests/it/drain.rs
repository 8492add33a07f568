//! The drain engine against a fake ingest server: the original's startup-drain tests done
//! properly, the response table row by row, budgets, concurrency, and the background worker.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gradata::store::{self, Store};
use gradata::sync::{
    self, Budget, DrainReport, Engine, STARTUP_DRAIN_MESSAGE_ID, StopReason, SyncState, Trigger,
};
use tokio_util::sync::CancellationToken;

use crate::support::{self, FakeIngest, Reply, logs, now_unix};

const KEY: &str = "gk_test_key";

fn budget() -> Budget {
    Budget {
        max_rows: 3200,
        max_time: Duration::from_secs(30),
    }
}

/// A store in a fresh directory with `rows` pending events, and a fake ingest server answering
/// every request with `reply`. The guard keeps the directory alive.
async fn fixture(
    rows: usize,
    reply: Reply,
) -> (tempfile::TempDir, std::path::PathBuf, Store, FakeIngest) {
    let (guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, rows).await;
    (guard, dir, store, FakeIngest::replying(reply))
}

async fn drain(engine: &Engine, trigger: Trigger, budget: Budget) -> DrainReport {
    engine
        .drain(trigger, budget, &CancellationToken::new(), &mut |_| {})
        .await
}

/// The one startup record in `captured`, which must exist exactly once.
fn startup_record(captured: &logs::Captured) -> logs::Record {
    let records = captured.with_message("sync queue drained at startup:");
    assert_eq!(
        records.len(),
        1,
        "exactly one startup record, got {records:?}"
    );
    let record = records.into_iter().next().unwrap();
    assert_eq!(record.level, tracing::Level::INFO);
    assert_eq!(record.fields["message_id"], STARTUP_DRAIN_MESSAGE_ID);
    record
}

/// Original test 1: five pending rows, five POSTs, all synced, and the record says 5.
#[tokio::test]
async fn startup_drain_delivers_every_pending_row() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let ids = support::fill(&store, 5).await;
    let server = FakeIngest::replying(Reply::ok());
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));

    let (captured, _log) = logs::capture();
    let report = drain(&engine, Trigger::Startup, budget()).await;

    assert_eq!(
        (
            report.delivered,
            report.dead,
            report.remaining,
            report.reason
        ),
        (5, 0, Some(0), StopReason::Done)
    );
    assert_eq!(server.count(), 5);
    assert_eq!(posted_keys(&server), ids);
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.synced_at.is_some() && row.lease_until.is_none())
    );
    let record = startup_record(&captured);
    assert_eq!(record.message, "sync queue drained at startup: 5 rows");
    assert_eq!(record.fields["delivered"], "5");
    assert_eq!(record.fields["remaining"], "0");
    assert_eq!(record.fields["reason"], "done");
}

/// Original test 2: a second drain on a clean queue sends nothing and still emits the record.
#[tokio::test]
async fn second_drain_on_clean_queue_delivers_zero_and_still_reports() {
    let (_guard, _dir, store, server) = fixture(3, Reply::ok()).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    drain(&engine, Trigger::Startup, budget()).await;

    let (captured, _log) = logs::capture();
    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!((report.delivered, report.reason), (0, StopReason::Empty));
    assert_eq!(server.count(), 3, "nothing posted twice");
    let record = startup_record(&captured);
    assert_eq!(record.message, "sync queue drained at startup: 0 rows");
    assert_eq!(record.fields["reason"], "empty");
}

/// A drain leases batches ahead of its senders and ramps its concurrency up; still, every row is
/// posted exactly once, with its own idempotency key and the bearer key, and settled.
#[tokio::test]
async fn a_drain_posts_every_row_once_with_its_own_key() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 1000).await;
    let server = FakeIngest::counting(KEY);
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));

    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!((report.delivered, report.reason), (1000, StopReason::Done));
    assert_eq!(server.counted(), (1000, 1000), "(requests, distinct keys)");
    assert_eq!(store.count_pending().await.unwrap(), 0);
}

/// Rows the cloud failed, then could not be reached for (nothing listening), are delivered once it
/// is back on the same address: every row reaches the ingest API at least once, over both servers.
#[tokio::test]
async fn rows_survive_failures_and_refused_connections_until_the_server_is_back() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let ids = support::fill(&store, 200).await;
    // Every other request fails: each batch makes progress, and half of its rows are retried.
    let flaky = FakeIngest::counting_with(KEY, None, |n| {
        if n % 2 == 1 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let addr = flaky.addr();
    let engine = support::engine(&store, support::settings(&flaky.url("/ingest"), Some(KEY)));

    let first = drain(&engine, Trigger::Manual, budget()).await;
    assert!(
        first.delivered > 0 && first.delivered < 200,
        "some rows delivered, some failed: {first:?}"
    );
    let mut delivered = flaky.stop();
    assert_eq!(delivered.len() as u64, first.delivered);

    let refused = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(refused.delivered, 0, "{refused:?}");
    assert_eq!(store.count_pending().await.unwrap(), 200 - first.delivered);

    let back = FakeIngest::counting_with(KEY, Some(addr), |_| Reply::ok());
    let last = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(last.delivered, 200 - first.delivered, "{last:?}");
    assert_eq!(store.count_pending().await.unwrap(), 0);
    delivered.extend(back.delivered_keys());
    let expected: std::collections::HashSet<Vec<u8>> =
        ids.into_iter().map(String::into_bytes).collect();
    assert_eq!(
        delivered, expected,
        "every row delivered, over both servers"
    );
}

/// Original test 3: without a key nothing is sent, rows stay pending, and the record says why.
#[tokio::test]
async fn without_api_key_nothing_is_sent_and_the_record_says_why() {
    let (_guard, dir, store, server) = fixture(4, Reply::ok()).await;
    let mut settings = support::settings(&server.url("/ingest"), None);
    settings.api_key_source = "looked at: GRADATA_API_KEY is unset".to_owned();
    let engine = support::engine(&store, settings);
    assert_eq!(engine.status().state(), SyncState::Disabled);

    let (captured, _log) = logs::capture();
    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!(
        (report.delivered, report.remaining, report.reason),
        (0, Some(4), StopReason::Disabled)
    );
    assert_eq!(server.count(), 0);
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.synced_at.is_none() && row.dead_at.is_none())
    );
    let record = startup_record(&captured);
    assert_eq!(record.fields["reason"], "disabled");
    assert!(
        record.fields["detail"].contains("GRADATA_API_KEY is unset"),
        "{record:?}"
    );
}

/// Original test 4: a missing database is reported, and nothing is created.
#[tokio::test]
async fn missing_database_creates_nothing_and_the_record_says_why() {
    let (_guard, dir) = support::temp_dir();
    let server = FakeIngest::replying(Reply::ok());
    let (captured, _log) = logs::capture();
    let report = sync::open_and_drain(
        &store::Options::new(&dir),
        support::settings(&server.url("/ingest"), Some(KEY)),
        Trigger::Startup,
        budget(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.reason, StopReason::NoDatabase);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the data directory must stay empty"
    );
    assert_eq!(server.count(), 0);
    let record = startup_record(&captured);
    assert_eq!(record.fields["reason"], "no_database");
    // Nothing to count: the field is left out, not given a made-up number.
    assert_eq!(record.fields.get("remaining"), None, "{:?}", record.fields);
    assert_eq!(record.fields["delivered"], "0", "{:?}", record.fields);
}

/// Original test 5: a database without the queue table is reported and left as it was.
#[tokio::test]
async fn database_without_queue_table_is_reported_and_left_alone() {
    let (_guard, dir) = support::temp_dir();
    let db = dir.join(store::DATABASE_FILE);
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE events (id INTEGER PRIMARY KEY)")
        .unwrap();
    let (captured, _log) = logs::capture();
    let report = sync::open_and_drain(
        &store::Options::new(&dir),
        support::settings("http://127.0.0.1:9/ingest", Some(KEY)),
        Trigger::Startup,
        budget(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap();
    assert_eq!(report.reason, StopReason::NoQueueTable);
    assert_eq!(startup_record(&captured).fields["reason"], "no_queue_table");
    let tables: Vec<String> = rusqlite::Connection::open(&db)
        .unwrap()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, ["events"]);
}

/// Original test 6 (engine half): the entry point the daemon calls before serving drains a store
/// opened the way the daemon opens it, and emits one record per call.
#[tokio::test]
async fn startup_entry_point_on_a_daemon_style_store() {
    let (_guard, dir) = support::temp_dir();
    let options = store::Options {
        instance_lock: store::InstanceLock::Exclusive,
        ..store::Options::new(&dir)
    };
    let store = Store::open(&options).unwrap();
    support::fill(&store, 7).await;
    let server = FakeIngest::replying(Reply::ok());
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let (captured, _log) = logs::capture();
    let mut seen = Vec::new();
    let report = engine
        .drain(
            Trigger::Startup,
            budget(),
            &CancellationToken::new(),
            &mut |p| seen.push(p),
        )
        .await;
    assert_eq!(report.delivered, 7);
    assert_eq!(startup_record(&captured).fields["delivered"], "7");
    assert_eq!(
        seen.last().map(|p| (p.done, p.total)),
        Some((7, 7)),
        "progress reaches the total"
    );
    assert!(
        seen.windows(2).all(|w| w[0].done < w[1].done),
        "progress only moves forward"
    );
}

/// A manual drain of the store in `dir` on a thread of its own (its own runtime and store, as a
/// second process would have), with `settings`, once `ready` returns.
fn drain_on_a_thread(
    dir: &Path,
    settings: sync::Settings,
    ready: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<DrainReport> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = support::open_store(&dir);
            let engine = support::engine(&store, settings);
            ready();
            drain(&engine, Trigger::Manual, budget()).await
        })
    })
}

/// The idempotency key of every request the server received, sorted (repeats kept).
fn posted_keys(server: &FakeIngest) -> Vec<String> {
    let mut keys: Vec<String> = server
        .received()
        .iter()
        .map(|r| r.idempotency_key().unwrap())
        .collect();
    keys.sort();
    keys
}

/// How many times the server received each idempotency key.
fn posts_per_key(server: &FakeIngest) -> BTreeMap<String, usize> {
    let mut posts: BTreeMap<String, usize> = BTreeMap::new();
    for request in server.received() {
        *posts.entry(request.idempotency_key().unwrap()).or_default() += 1;
    }
    posts
}

/// Original test 7 (threads), with real invariants: both drainers ran at the same time (the
/// server holds requests until both have posted), no event_id was posted twice, every row was
/// delivered, and the two delivered counts add up to the number of rows.
#[test]
fn two_concurrent_drainers_never_post_the_same_row() {
    let (_guard, dir) = support::temp_dir();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ids = runtime.block_on(support::fill(&support::open_store(&dir), 400));
    let server = FakeIngest::gated(&["/a", "/b"], |_, _| {
        Reply::ok().delay(Duration::from_millis(1))
    });
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let drainers: Vec<_> = ["/a", "/b"]
        .into_iter()
        .map(|path| {
            let barrier = barrier.clone();
            let settings = support::settings(&server.url(path), Some(KEY));
            drain_on_a_thread(&dir, settings, move || {
                barrier.wait();
            })
        })
        .collect();
    let reports: Vec<DrainReport> = drainers.into_iter().map(|t| t.join().unwrap()).collect();

    assert!(!server.gate_timed_out(), "the drainers did not overlap");
    let posts = posts_per_key(&server);
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "posted more than once: {twice:?}");
    assert_eq!(posts.keys().cloned().collect::<Vec<_>>(), ids);
    assert_eq!(reports.iter().map(|r| r.delivered).sum::<u64>(), 400);
    assert!(reports.iter().all(|r| r.delivered > 0), "{reports:?}");
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.synced_at.is_some())
    );
}

/// A row's lease never runs out while its drainer holds it, however long the drain: with a lease
/// shorter than the server takes to answer, a second drainer that starts once the first one's
/// lease would have expired (counted from its claim) claims nothing the first still holds, and no
/// row is posted twice (DESIGN §4).
#[test]
fn a_held_row_is_never_claimed_by_another_drainer() {
    let (_guard, dir) = support::temp_dir();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ids = runtime.block_on(support::fill(&support::open_store(&dir), 3));
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_millis(1500)));
    let lease = Duration::from_secs(1);
    let drainer = |path: &'static str| {
        let mut settings = support::settings(&server.url(path), Some(KEY));
        settings.lease = lease;
        settings.request_timeout = Duration::from_secs(5);
        settings.concurrency = 1;
        settings.max_concurrency = 1;
        drain_on_a_thread(&dir, settings, || {})
    };
    let first = drainer("/a");
    assert!(server.wait_for(1, Duration::from_secs(20)));
    // Every row was claimed before the first request went out; wait until a lease counted from
    // the claim would be over.
    let claimed_by = now_unix();
    while now_unix() < claimed_by + lease.as_secs_f64() + 0.1 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = drainer("/b").join().unwrap();
    let first = first.join().unwrap();

    let posts = posts_per_key(&server);
    assert!(posts.values().all(|n| *n == 1), "posted twice: {posts:?}");
    assert_eq!(posts.keys().cloned().collect::<Vec<_>>(), ids);
    assert_eq!(
        (first.delivered, second.delivered),
        (3, 0),
        "{first:?} {second:?}"
    );
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.synced_at.is_some() && row.lease_until.is_none())
    );
}

/// A status that arrives with a body that stalls is still that status: a 200 is delivered (not
/// re-sent as a timeout), and a 401 pauses sync with the row untouched (no attempt counted).
#[tokio::test]
async fn a_stalled_body_keeps_the_disposition_of_its_status() {
    for (status, reason, synced, state) in [
        (200, StopReason::Done, true, SyncState::Idle),
        (401, StopReason::AuthFailed, false, SyncState::AuthFailed),
    ] {
        let reply = Reply::status(status)
            .body(r#"{"partial":"#)
            .stall_body(Duration::from_secs(3));
        let (_guard, dir, store, server) = fixture(1, reply).await;
        let mut settings = support::settings(&server.url("/ingest"), Some(KEY));
        settings.request_timeout = Duration::from_secs(1);
        let engine = support::engine(&store, settings);
        let report = drain(&engine, Trigger::Manual, budget()).await;
        assert_eq!(report.reason, reason, "status {status}: {report:?}");
        assert_eq!(engine.status().state(), state, "status {status}");
        let row = &support::rows(&dir)[0];
        assert_eq!(row.synced_at.is_some(), synced, "status {status}: {row:?}");
        assert_eq!(row.attempts, Some(0), "status {status}: {row:?}");
        assert_eq!(row.last_status, Some(i64::from(status)), "{row:?}");
        assert!(row.next_attempt_at.is_none(), "status {status}: {row:?}");
    }
}

/// `empty` means nothing is pending. A drain that claims nothing because another drainer holds
/// every pending row says `leased`, and one with a row budget of 0 says `row_budget`; both
/// report the rows still pending.
#[tokio::test]
async fn a_drain_that_claims_nothing_says_why() {
    let (_guard, dir, store, server) = fixture(3, Reply::ok()).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let no_rows = Budget {
        max_rows: 0,
        ..budget()
    };
    let report = drain(&engine, Trigger::Startup, no_rows).await;
    assert_eq!(
        (report.reason, report.remaining),
        (StopReason::RowBudget, Some(3))
    );

    let other = support::open_store(&dir);
    let held = other
        .claim_batch(
            10,
            store::ClaimFrom::After(store::RowId(0)),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    let (captured, _log) = logs::capture();
    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!(
        (report.delivered, report.reason, report.remaining),
        (0, StopReason::Leased, Some(3))
    );
    assert_eq!(startup_record(&captured).fields["reason"], "leased");
    assert_eq!(server.count(), 0);

    other
        .settle(
            held.iter()
                .map(|row| store::Settlement::Synced {
                    id: row.id,
                    status: 200,
                })
                .collect(),
        )
        .await
        .unwrap();
    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!(
        (report.reason, report.remaining),
        (StopReason::Empty, Some(0))
    );
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

/// What a single response does to a single row and to the drain.
struct Case {
    reply: Reply,
    reason: StopReason,
    row: RowOutcome,
    state: SyncState,
}

#[derive(Debug, PartialEq)]
enum RowOutcome {
    Synced,
    Dead,
    /// Pending with one more attempt and a backoff timer.
    Retried,
    /// Pending, untouched but for the last error.
    Kept,
}

fn row_outcome(row: &support::Row) -> RowOutcome {
    match (
        row.synced_at,
        row.dead_at,
        row.attempts,
        row.next_attempt_at,
    ) {
        (Some(_), None, _, _) => RowOutcome::Synced,
        (None, Some(_), Some(1), _) => RowOutcome::Dead,
        (None, None, Some(1), Some(_)) => RowOutcome::Retried,
        (None, None, Some(0), None) => RowOutcome::Kept,
        other => panic!("unexpected row state {other:?}: {row:?}"),
    }
}

/// Every row of the DESIGN §5 table, through the engine and a real HTTP exchange.
#[tokio::test]
async fn every_response_class_settles_the_row_as_designed() {
    use RowOutcome::*;
    let case = |reply: Reply, reason, row, state| Case {
        reply,
        reason,
        row,
        state,
    };
    let cases = [
        case(Reply::ok(), StopReason::Done, Synced, SyncState::Idle),
        case(
            Reply::status(202).body(r#"{"status":"ok","deduplicated":true}"#),
            StopReason::Done,
            Synced,
            SyncState::Idle,
        ),
        case(
            Reply::status(408),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(425),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(500),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(502),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(503),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(429),
            StopReason::RateLimited,
            Retried,
            SyncState::RateLimited,
        ),
        case(
            Reply::status(503).header("retry-after", "3"),
            StopReason::RateLimited,
            Retried,
            SyncState::RateLimited,
        ),
        case(
            Reply::status(401),
            StopReason::AuthFailed,
            Kept,
            SyncState::AuthFailed,
        ),
        case(
            Reply::status(403),
            StopReason::AuthFailed,
            Kept,
            SyncState::AuthFailed,
        ),
        case(
            Reply::status(404),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(405),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(410),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(501),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(308).header("location", "/elsewhere"),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(400).body("bad payload"),
            StopReason::Done,
            Dead,
            SyncState::Idle,
        ),
        case(Reply::status(413), StopReason::Done, Dead, SyncState::Idle),
        case(Reply::status(415), StopReason::Done, Dead, SyncState::Idle),
        case(
            Reply::status(422).body(r#"{"detail":"unprocessable"}"#),
            StopReason::Done,
            Dead,
            SyncState::Idle,
        ),
        case(Reply::status(409), StopReason::Done, Dead, SyncState::Idle),
    ];
    for case in cases {
        let (_guard, dir) = support::temp_dir();
        let store = support::open_store(&dir);
        support::fill(&store, 1).await;
        let status = case.reply.status;
        let server = FakeIngest::replying(case.reply.clone());
        let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
        let report = drain(&engine, Trigger::Manual, budget()).await;
        let rows = support::rows(&dir);
        assert_eq!(report.reason, case.reason, "status {status}");
        assert_eq!(
            row_outcome(&rows[0]),
            case.row,
            "status {status}: {:?}",
            rows[0]
        );
        assert_eq!(engine.status().state(), case.state, "status {status}");
        assert!(
            rows[0].lease_until.is_none(),
            "status {status}: lease must be released"
        );
        if status != 200 && status != 202 {
            assert_eq!(
                rows[0].last_status,
                Some(i64::from(status)),
                "status {status}"
            );
        }
        if case.row == Dead {
            assert_eq!(report.dead, 1);
            assert!(
                rows[0]
                    .last_error
                    .as_deref()
                    .unwrap()
                    .starts_with(&format!("http {status}"))
            );
        }
        // Redirects are never followed: only the one request reached the server.
        assert_eq!(server.count(), 1, "status {status}");
    }
}

/// The rows of the DESIGN §5 table that get no response at all: a request that outlives its
/// timeout, a refused connection and a connection closed without an answer are each retried later
/// (one attempt counted, a backoff timer set, the cause kept), never dead and never synced.
#[tokio::test]
async fn no_response_is_retried_later_with_its_cause() {
    // A server that answers too late for the request timeout.
    let slow = FakeIngest::replying(Reply::ok().delay(Duration::from_secs(2)));
    let mut settings = support::settings(&slow.url("/ingest"), Some(KEY));
    settings.request_timeout = Duration::from_millis(200);
    assert_retried_with(settings, "timeout").await;

    // Nothing listens on the port any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = support::settings(&format!("http://127.0.0.1:{port}/ingest"), Some(KEY));
    assert_retried_with(refused, "connect").await;

    // A server that reads the request and hangs up without a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    let hang_up = std::thread::spawn(move || {
        use std::io::Read;
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = [0_u8; 1024];
        let read = stream.read(&mut head).unwrap();
        assert!(head[..read].starts_with(b"POST /ingest"));
    });
    assert_retried_with(support::settings(&url, Some(KEY)), "network").await;
    hang_up.join().unwrap();
}

/// https:// means TLS, with the certificate checked against the built-in roots: a server whose
/// certificate no root vouches for (self-signed here) never gets the event, and the row is retried
/// later with the reason in `last_error`.
#[tokio::test]
async fn a_server_with_an_untrusted_certificate_never_gets_the_event() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/ingest", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(drop)
    });
    let error = assert_retried_with(support::settings(&url, Some(KEY)), "connect").await;
    assert!(error.contains("certificate"), "{error}");
    assert!(
        server.await.unwrap().is_err(),
        "the TLS handshake with an untrusted certificate succeeded"
    );
}

/// Drains one row with `settings`, checks that it was retried later for a `cause`, and returns its
/// `last_error`.
async fn assert_retried_with(settings: sync::Settings, cause: &str) -> String {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 1).await;
    let engine = support::engine(&store, settings);
    let report = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(
        (report.delivered, report.dead, report.reason),
        (0, 0, StopReason::NoProgress),
        "{cause}"
    );
    let rows = support::rows(&dir);
    assert_eq!(row_outcome(&rows[0]), RowOutcome::Retried, "{cause}");
    assert!(rows[0].lease_until.is_none(), "{cause}: lease released");
    assert_eq!(
        rows[0].last_status, None,
        "{cause}: no status without a response"
    );
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.starts_with(cause), "{cause}: last_error {error:?}");
    assert_eq!(engine.status().state(), SyncState::Backoff, "{cause}");
    error
}

/// A 422's body preview is kept for the operator; a 401 never marks the row dead or synced, and
/// the drain stops at the first refusal instead of burning through the backlog.
#[tokio::test]
async fn auth_failure_pauses_at_once_and_keeps_every_row() {
    let (_guard, dir, store, server) =
        fixture(200, Reply::status(401).body(r#"{"detail":"invalid key"}"#)).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!(report.reason, StopReason::AuthFailed);
    assert!(
        server.count() <= engine.settings().max_concurrency,
        "sent {} requests after a 401",
        server.count()
    );
    let rows = support::rows(&dir);
    assert!(
        rows.iter()
            .all(|r| r.synced_at.is_none() && r.dead_at.is_none() && r.attempts == Some(0))
    );
    assert!(rows.iter().all(|r| r.lease_until.is_none()));
    assert_eq!(report.remaining, Some(200));
    assert!(
        engine
            .status()
            .snapshot()
            .last_error
            .unwrap()
            .contains("invalid key")
    );
}

/// `Retry-After` in seconds pauses all sending for at least that long, and a second drain during
/// the pause sends nothing.
#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let (_guard, dir, store, server) =
        fixture(20, Reply::status(429).header("retry-after", "120")).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let before = now_unix();
    let report = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(report.reason, StopReason::RateLimited);
    let sent = server.count();
    let retried: Vec<_> = support::rows(&dir)
        .into_iter()
        .filter(|r| r.attempts == Some(1))
        .collect();
    assert_eq!(retried.len(), sent);
    assert!(
        retried
            .iter()
            .all(|r| r.next_attempt_at.unwrap() >= before + 120.0),
        "{retried:?}"
    );
    assert!(engine.status().paused_until().unwrap() >= Instant::now() + Duration::from_secs(100));

    let again = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(again.reason, StopReason::RateLimited);
    assert_eq!(server.count(), sent, "nothing may be sent while paused");
}

/// `Retry-After` as an HTTP-date on a 503 is honoured too, and a 429 halves the concurrency.
#[tokio::test]
async fn retry_after_http_date_is_honoured_and_429_halves_concurrency() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 1).await;
    let when = SystemTime::now() + Duration::from_secs(600);
    let server = FakeIngest::replying(
        Reply::status(503).header("retry-after", &httpdate::fmt_http_date(when)),
    );
    let mut settings = support::settings(&server.url("/ingest"), Some(KEY));
    settings.concurrency = 8;
    let engine = support::engine(&store, settings);
    let report = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(report.reason, StopReason::RateLimited);
    let row = &support::rows(&dir)[0];
    // HTTP-dates have one-second resolution.
    assert!(
        row.next_attempt_at.unwrap() >= now_unix() + 590.0,
        "{row:?}"
    );
    assert_eq!(engine.concurrency().current(), 4);
}

/// Explicit drains retry rows that wait on a backoff timer; the worker's passes do not.
#[tokio::test]
async fn explicit_drains_retry_rows_waiting_on_backoff() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 10).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let counter = failures.clone();
    let server = FakeIngest::with_plan(move |_, n| {
        if n < 10 {
            counter.fetch_add(1, Ordering::SeqCst);
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let mut settings = support::settings(&server.url("/ingest"), Some(KEY));
    settings.backoff_base = Duration::from_secs(3600);
    settings.backoff_cap = Duration::from_secs(3600);
    let engine = support::engine(&store, settings);
    let first = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!((first.delivered, first.retried), (0, 10));
    assert_eq!(
        failures.load(Ordering::SeqCst),
        10,
        "each row tried once per drain"
    );

    let worker_pass = drain(&engine, Trigger::Worker, budget()).await;
    assert_eq!(
        (worker_pass.delivered, worker_pass.reason),
        (0, StopReason::Done),
        "the worker waits for the timers (rows are pending, so not \"empty\")"
    );

    let second = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!((second.delivered, second.remaining), (10, Some(0)));
}

/// A batch in which nothing was delivered stops the drain: a failing server is not hammered
/// with the whole backlog.
#[tokio::test]
async fn a_batch_without_progress_stops_the_drain() {
    let (_guard, dir, store, server) = fixture(1000, Reply::status(500)).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!(report.reason, StopReason::NoProgress);
    assert!(
        server.count() <= 2 * engine.settings().batch_size,
        "sent {}",
        server.count()
    );
    assert_eq!(report.remaining, Some(1000));
    assert!(
        support::rows(&dir).iter().all(|r| r.lease_until.is_none()),
        "every claimed row released"
    );
}

/// The row budget is respected exactly.
#[tokio::test]
async fn the_drain_stops_at_its_row_budget() {
    let (_guard, _dir, store, server) = fixture(230, Reply::ok()).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(
        &engine,
        Trigger::Startup,
        Budget {
            max_rows: 120,
            max_time: Duration::from_secs(30),
        },
    )
    .await;
    assert_eq!(
        (report.delivered, report.remaining, report.reason),
        (120, Some(110), StopReason::RowBudget)
    );
    assert_eq!(server.count(), 120);
}

/// An explicit drain's time budget holds even against a server that never answers, whatever the
/// request timeout: at the deadline the requests in flight are cut short and each counts as a
/// timed-out attempt with a backoff and the cause (a hanging server is backed off from, not posted
/// the same rows again at once), and the rows never sent are released untouched.
#[tokio::test]
async fn the_drain_stops_at_its_time_budget_against_a_hanging_server() {
    let (_guard, dir, store, server) = fixture(50, Reply::ok().delay(Duration::from_secs(4))).await;
    let mut settings = support::settings(&server.url("/ingest"), Some(KEY));
    settings.request_timeout = Duration::from_secs(60);
    settings.lease = Duration::from_secs(120);
    let engine = support::engine(&store, settings);
    let started = Instant::now();
    let report = drain(
        &engine,
        Trigger::Startup,
        Budget {
            max_rows: 3200,
            max_time: Duration::from_millis(300),
        },
    )
    .await;
    assert_eq!(report.reason, StopReason::TimeBudget);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!((report.delivered, report.remaining), (0, Some(50)));
    let rows = support::rows(&dir);
    assert!(
        rows.iter()
            .all(|r| r.lease_until.is_none() && r.synced_at.is_none())
    );
    let (sent, unsent): (Vec<_>, Vec<_>) = rows.iter().partition(|r| r.attempts == Some(1));
    assert_eq!(
        sent.len(),
        server.count(),
        "every request sent counted an attempt"
    );
    assert_eq!(report.retried, sent.len() as u64);
    assert!(
        sent.iter().all(|r| r.next_attempt_at.is_some()
            && r.last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("timeout"))),
        "{sent:?}"
    );
    assert!(
        unsent.iter().all(|r| r.attempts == Some(0)
            && r.last_error.is_none()
            && r.next_attempt_at.is_none())
    );
}

/// A server slower than a worker pass's time budget but within the request timeout gets its
/// answers heard: the pass's deadline stops new requests, not the ones in flight, so each row
/// posted is settled by its answer, once, instead of being released and posted again by the next
/// pass.
#[tokio::test]
async fn requests_in_flight_at_the_deadline_finish_and_are_settled() {
    let (_guard, dir, store, server) = fixture(20, Reply::ok().delay(Duration::from_secs(2))).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let budget = Budget {
        max_rows: 3200,
        max_time: Duration::from_secs(1),
    };
    let report = drain(&engine, Trigger::Worker, budget).await;
    assert_eq!(report.reason, StopReason::TimeBudget);
    assert!(report.delivered > 0, "{report:?}");
    assert_eq!(
        report.delivered,
        server.count() as u64,
        "every request answered counts"
    );
    let rows = support::rows(&dir);
    assert!(rows.iter().all(|r| r.lease_until.is_none()));
    assert_eq!(
        rows.iter().filter(|r| r.synced_at.is_some()).count(),
        server.count()
    );
    assert!(
        rows.iter()
            .filter(|r| r.synced_at.is_none())
            .all(|r| r.attempts == Some(0) && r.last_error.is_none())
    );

    // The next pass posts only the rows never sent: nothing is in flight twice or re-sent.
    let posted_first = server.count();
    let report = drain(&engine, Trigger::Worker, budget).await;
    let mut keys = posted_keys(&server);
    keys.dedup();
    assert_eq!(keys.len(), server.count(), "a row was posted twice");
    assert_eq!(
        server.count() as u64,
        posted_first as u64 + report.delivered
    );
}

/// Cancellation (SIGTERM during a drain) returns promptly and loses nothing.
#[tokio::test]
async fn cancellation_stops_the_drain_and_releases_its_rows() {
    let (_guard, dir, store, server) =
        fixture(100, Reply::ok().delay(Duration::from_millis(200))).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let mut cancelled = false;
    let report = engine
        .drain(Trigger::Startup, budget(), &cancel, &mut |p| {
            if p.done >= 4 && !cancelled {
                cancelled = true;
                trigger.cancel();
            }
        })
        .await;
    assert_eq!(report.reason, StopReason::Cancelled);
    let rows = support::rows(&dir);
    let synced = rows.iter().filter(|r| r.synced_at.is_some()).count() as u64;
    assert_eq!(synced, report.delivered);
    assert!(report.delivered >= 4 && report.delivered < 100);
    assert!(
        rows.iter()
            .all(|r| r.lease_until.is_none() && r.dead_at.is_none())
    );
    assert_eq!(report.remaining, Some(100 - report.delivered));
}

/// A database made by the original daemon, with 1,000 rows, opens, migrates and drains completely;
/// every payload reaches the server byte for byte as stored.
#[tokio::test]
async fn original_database_with_1000_rows_drains_byte_for_byte() {
    let (_guard, dir) = support::temp_dir();
    let payloads: Vec<String> = (0..1000).map(support::original_payload).collect();
    support::original_db(&dir, &payloads);
    let store = support::open_store(&dir);
    let server = FakeIngest::replying(Reply::ok());
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let mut delivered = 0;
    while delivered < 1000 {
        let report = drain(&engine, Trigger::Startup, budget()).await;
        assert!(report.delivered > 0, "{report:?}");
        delivered += report.delivered;
    }
    let mut bodies: Vec<String> = server
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    bodies.sort();
    let mut expected = payloads.clone();
    expected.sort();
    assert_eq!(bodies, expected);
    for request in server.received() {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            request.idempotency_key().as_deref(),
            body["event_id"].as_str()
        );
    }
    assert!(support::rows(&dir).iter().all(|r| r.synced_at.is_some()));
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
    let engine = support::engine(&store, settings);
    let (engines, receiver) = tokio::sync::watch::channel(engine);
    let wake = sync::worker::Wake::new();
    let heartbeat = sync::worker::Heartbeat::default();
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(sync::worker::run(
        receiver,
        wake.clone(),
        heartbeat.clone(),
        cancel.clone(),
        None,
    ));

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
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap();
    drop(engines);
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
    let (engines, receiver) = tokio::sync::watch::channel(engine);
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(sync::worker::run(
        receiver,
        sync::worker::Wake::new(),
        sync::worker::Heartbeat::default(),
        cancel.clone(),
        None,
    ));
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
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap();
    drop(engines);
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
    let (engines, receiver) = tokio::sync::watch::channel(engine);
    let wake = sync::worker::Wake::new();
    let cancel = CancellationToken::new();
    let worker = tokio::spawn(sync::worker::run(
        receiver,
        wake.clone(),
        sync::worker::Heartbeat::default(),
        cancel.clone(),
        None,
    ));
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

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), worker)
        .await
        .unwrap()
        .unwrap();
    drop(engines);
}

// Head-of-line blocking and outages in explicit drains (the project's issue 21, point 1): rows the
// ingest keeps rejecting are passed over, each row is sent at most once, and an ingest that fails
// everything stops the drain within a few batches, with a reason that says so. These run the real
// binary: the startup drain before READY=1, and `gradata drain`.

/// The default batch size: the bound on an outage is counted in batches of it.
const BATCH: usize = sync::DEFAULT_BATCH_SIZE;
/// Rows the ingest rejects at the head of the queue.
const FAILING: usize = 200;
/// Good rows behind them.
const GOOD: usize = 5000;
/// A row budget above every backlog here, so that only the rule under test can stop a drain short.
const ROW_BUDGET: &str = "6000";

/// What the rows went through before the drain.
#[derive(Debug, Clone, Copy)]
enum History {
    /// Case (a): the failing rows failed before and wait on their backoff; the good ones are fresh.
    FailingHeadRetried,
    /// Case (b), the morning after a day-long outage: every row failed 1 to 8 times and waits on a
    /// backoff timer.
    EveryRowFailedBefore,
}

/// A store in `dir` with `FAILING + GOOD` pending rows, the first `FAILING` of which the ingest
/// will reject, shaped by `history`; returns the event ids of the failing rows.
fn head_of_line_queue(dir: &Path, history: History) -> std::collections::HashSet<String> {
    let ids = support::daemon::prepare(dir, FAILING + GOOD);
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    let later = now_unix() + 3600.0;
    let tried = match history {
        History::FailingHeadRetried => FAILING,
        History::EveryRowFailedBefore => FAILING + GOOD,
    };
    conn.execute(
        "UPDATE sync_queue SET attempts = 1 + (id % 8), next_attempt_at = ?1 + id,
                last_status = 500, last_error = 'http 500: earlier'
          WHERE id IN (SELECT id FROM sync_queue ORDER BY id LIMIT ?2)",
        rusqlite::params![later, tried],
    )
    .unwrap();
    ids.into_iter().take(FAILING).collect()
}

/// The startup record's field `name`, from the daemon's text logs.
fn startup_field(daemon: &support::daemon::Daemon, name: &str) -> String {
    let line = daemon.wait_for_log("sync queue drained at startup:", support::daemon::PATIENCE);
    support::daemon::log_field(&line, name)
        .unwrap_or_else(|| panic!("no {name} in the startup record {line:?}"))
}

/// `gradata serve` syncing to `url`, with a row budget above the backlog, a time budget the test's
/// guard outlasts, and backoff timers long enough that the worker retries nothing meanwhile.
fn serving(dir: &Path, url: &str) -> support::daemon::Daemon {
    support::daemon::Spec::new(dir)
        .syncing_to(url)
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", ROW_BUDGET)
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS", "120")
        .env("GRADATA_SYNC_BACKOFF_BASE_SECS", "3600")
        .env("GRADATA_SYNC_BACKOFF_CAP_SECS", "3600")
        .spawn()
}

/// `gradata drain --json` into `url` with a row budget above the backlog; returns its exit
/// success and its report.
fn drain_command(dir: &Path, url: &str) -> (bool, serde_json::Value) {
    let (output, stdout, stderr) = support::run(
        support::gradata(dir)
            .env("GRADATA_API_KEY", KEY)
            .env("GRADATA_CLOUD_INGEST_URL", url)
            .args([
                "drain",
                "--json",
                "--max-seconds",
                "120",
                "--max-rows",
                ROW_BUDGET,
            ]),
    );
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("no JSON report ({err}): {stdout:?}\nstderr:\n{stderr}"));
    (output.status.success(), report)
}

fn head_of_line_before_ready(history: History) {
    let (_guard, dir) = support::temp_dir();
    let failing = head_of_line_queue(&dir, history);
    // The lean server: the rows tell what was delivered. `syncing_to` authenticates with "k".
    let server = FakeIngest::counting_failing(
        "k",
        failing.iter().map(|id| id.clone().into_bytes()).collect(),
        Reply::status(500).body("cannot take this one"),
    );
    let daemon = serving(&dir, &server.url("/ingest"));
    daemon.expect_ready();
    // The startup record is written before READY=1: what it says the startup drain did.
    assert_eq!(
        (
            startup_field(&daemon, "delivered"),
            startup_field(&daemon, "dead"),
            startup_field(&daemon, "remaining"),
            startup_field(&daemon, "reason"),
        ),
        (
            GOOD.to_string(),
            "0".to_owned(),
            FAILING.to_string(),
            "done".to_owned()
        ),
        "{history:?}: every good row delivered before READY=1, the failing ones passed over"
    );
    assert_eq!(startup_field(&daemon, "retried"), FAILING.to_string());
    let delivered: Vec<String> = support::rows(&dir)
        .into_iter()
        .filter(|row| row.synced_at.is_some())
        .filter_map(|row| row.event_id)
        .collect();
    assert_eq!(delivered.len(), GOOD);
    assert!(delivered.iter().all(|id| !failing.contains(id)));
}

fn head_of_line_by_command(history: History) {
    let (_guard, dir) = support::temp_dir();
    let failing = head_of_line_queue(&dir, history);
    let server = FakeIngest::with_plan(support::fake_ingest::failing_rows(
        failing.clone(),
        Reply::status(500),
    ));
    let (_, report) = drain_command(&dir, &server.url("/ingest"));
    assert_eq!(
        (
            &report["delivered"],
            &report["retried"],
            &report["dead"],
            &report["remaining"],
            &report["reason"]
        ),
        (
            &serde_json::json!(GOOD),
            &serde_json::json!(FAILING),
            &serde_json::json!(0),
            &serde_json::json!(FAILING),
            &serde_json::json!("done")
        ),
        "{history:?}: {report}"
    );
    let posts = posts_per_key(&server);
    assert_eq!(posts.len(), FAILING + GOOD, "every row sent");
    assert!(
        posts.values().all(|&n| n == 1),
        "each row sent at most once per drain"
    );
    let rows = support::rows(&dir);
    let failed_again: Vec<&support::Row> = rows.iter().filter(|r| r.synced_at.is_none()).collect();
    assert_eq!(failed_again.len(), FAILING);
    assert!(
        failed_again.iter().all(|r| r.lease_until.is_none()
            && r.attempts == Some(2 + r.id % 8)
            && r.next_attempt_at.is_some_and(|at| at < now_unix() + 1000.0)
            && r.last_status == Some(500)),
        "each failing row settled once, with a new backoff: {failed_again:?}"
    );
}

/// Case (a): 200 rows that failed before and still fail, ahead of 5,000 fresh good rows.
#[test]
fn issue21_a_failing_head_does_not_block_the_startup_drain() {
    head_of_line_before_ready(History::FailingHeadRetried);
}

/// Case (a), by `gradata drain`.
#[test]
fn issue21_a_failing_head_does_not_block_gradata_drain() {
    head_of_line_by_command(History::FailingHeadRetried);
}

/// Case (b): the morning after a day-long outage.
#[test]
fn issue21_b_after_an_outage_the_startup_drain_delivers_every_good_row() {
    head_of_line_before_ready(History::EveryRowFailedBefore);
}

/// Case (b), by `gradata drain`.
#[test]
fn issue21_b_after_an_outage_gradata_drain_delivers_every_good_row() {
    head_of_line_by_command(History::EveryRowFailedBefore);
}

/// The most rows an explicit drain may try against an ingest that fails everything.
const OUTAGE_BOUND: usize = 3 * BATCH;

/// Case (c), an ingest answering 500 to everything: the startup drain stops within three batches
/// with a reason that says the ingest fails everything, instead of spending its whole budget
/// before READY=1; `gradata drain` too.
#[test]
fn issue21_c_an_ingest_failing_everything_stops_the_drains_within_three_batches() {
    let (_guard, dir) = support::temp_dir();
    support::daemon::prepare(&dir, GOOD);
    let server = FakeIngest::replying(Reply::status(500).body("down for maintenance"));
    let (ok, report) = drain_command(&dir, &server.url("/ingest"));
    assert!(!ok, "a drain stopped by an outage fails: {report}");
    assert_eq!(report["reason"], "no_progress", "{report}");
    let detail = report["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("fails every row"), "{report}");
    assert!(
        server.count() <= OUTAGE_BOUND,
        "{} requests into a failing ingest",
        server.count()
    );
    assert_eq!(report["retried"], server.count(), "{report}");

    let daemon = serving(&dir, &server.url("/ingest"));
    daemon.expect_ready();
    assert_eq!(startup_field(&daemon, "reason"), "no_progress");
    assert!(startup_field(&daemon, "detail").contains("fails every row"));
    let retried: usize = startup_field(&daemon, "retried").parse().unwrap();
    assert!(
        (1..=OUTAGE_BOUND).contains(&retried),
        "{retried} rows tried by the startup drain"
    );
}

/// Case (c), an ingest that refuses connections: an answer that concerns every row stops the drains
/// at once.
#[test]
fn issue21_c_refused_connections_stop_the_drains_at_once() {
    let (_guard, dir) = support::temp_dir();
    support::daemon::prepare(&dir, GOOD);
    let url = format!("http://127.0.0.1:{}/ingest", support::daemon::free_port());
    let (ok, report) = drain_command(&dir, &url);
    assert!(!ok, "{report}");
    assert_eq!(report["reason"], "no_progress", "{report}");
    assert!(
        report["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unreachable")),
        "{report}"
    );
    let tried = support::rows(&dir)
        .iter()
        .filter(|r| r.attempts.unwrap_or(0) > 0)
        .count();
    assert!(tried <= OUTAGE_BOUND, "{tried} rows tried");
    assert_eq!(report["retried"], tried, "{report}");

    let daemon = serving(&dir, &url);
    daemon.expect_ready();
    assert_eq!(startup_field(&daemon, "reason"), "no_progress");
    assert!(startup_field(&daemon, "detail").contains("unreachable"));
    let retried: usize = startup_field(&daemon, "retried").parse().unwrap();
    assert!(
        (1..=OUTAGE_BOUND).contains(&retried),
        "{retried} rows tried by the startup drain"
    );
}

/// Point 8: an attempt count stored at any extreme (or not as an integer at all) neither panics a
/// drain nor keeps its row from being settled: the count saturates in memory.
#[tokio::test]
async fn issue21_extreme_attempt_counts_neither_panic_nor_wrap() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 6).await;
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    let extremes: [rusqlite::types::Value; 6] = [
        i64::MAX.into(),
        i64::MIN.into(),
        i64::from(u32::MAX).into(),
        (i64::from(u32::MAX) + 1).into(),
        1e300_f64.into(),
        rusqlite::types::Value::Text("lots".into()),
    ];
    for (id, attempts) in (1..).zip(extremes) {
        conn.execute(
            "UPDATE sync_queue SET attempts = ?2 WHERE id = ?1",
            rusqlite::params![id, attempts],
        )
        .unwrap();
    }
    let server = FakeIngest::replying(Reply::status(500));
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!((report.delivered, report.retried), (0, 6), "{report:?}");
    // Due again, for the worker's pass.
    conn.execute("UPDATE sync_queue SET next_attempt_at = NULL", [])
        .unwrap();
    let report = drain(&engine, Trigger::Worker, budget()).await;
    assert_eq!((report.delivered, report.retried), (0, 6), "{report:?}");
    // Read plainly: `support::rows` wants integer attempts, and these are not all integers.
    let settled: i64 = conn
        .query_row(
            "SELECT count(*) FROM sync_queue
              WHERE synced_at IS NULL AND dead_at IS NULL AND lease_until IS NULL
                AND next_attempt_at IS NOT NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(settled, 6, "each row settled for a retry");
}

/// Probes that land on failing rows, and failing rows spread along the queue: every row is still
/// sent exactly once (a probed row that failed is passed over when the walk reaches it), every
/// good row is delivered, and the drain does not take the failures for an outage while some rows
/// elsewhere go through.
#[tokio::test]
async fn issue21_probes_never_send_a_row_twice() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let ids = support::fill(&store, 300).await;
    // The first batch fails, then everything from row 150 but the last ten: the first probe,
    // halfway along what is left, lands among failing rows; the tail goes through.
    let failing: std::collections::HashSet<String> = ids
        .iter()
        .enumerate()
        .filter(|(n, _)| *n < 50 || (150..290).contains(n))
        .map(|(_, id)| id.clone())
        .collect();
    let server = FakeIngest::with_plan(support::fake_ingest::failing_rows(
        failing.clone(),
        Reply::status(500),
    ));
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(
        &engine,
        Trigger::Manual,
        Budget {
            max_rows: 1000,
            max_time: Duration::from_secs(60),
        },
    )
    .await;
    assert_eq!(
        (report.delivered, report.retried, report.reason),
        (
            (300 - failing.len()) as u64,
            failing.len() as u64,
            StopReason::Done
        ),
        "{report:?}"
    );
    let posts = posts_per_key(&server);
    assert_eq!(posts.len(), 300);
    assert!(
        posts.values().all(|&n| n == 1),
        "posted twice: {:?}",
        posts.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(
        support::rows(&dir).iter().all(|r| r.lease_until.is_none()),
        "every claimed row settled or released"
    );
}
