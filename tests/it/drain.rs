//! The drain engine against a fake ingest server. This file: the original's startup-drain tests
//! done properly, concurrent drainers, and the helpers the files beside it share (`responses`,
//! `budgets`, `worker`, `head_of_line`).

mod budgets;
mod head_of_line;
mod responses;
mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use gradata::clock::{Clock, ManualClock};
use gradata::store::{self, Store};
use gradata::sync::{
    self, Budget, DrainReport, Engine, STARTUP_DRAIN_MESSAGE_ID, StopReason, SyncState, Trigger,
};
use tokio_util::sync::CancellationToken;

use crate::support::{self, FakeIngest, Reply, logs, now_unix};

const KEY: &str = "gk_test_key";

fn budget() -> Budget {
    bounded(3200, Duration::from_secs(30))
}

fn bounded(max_rows: usize, max_time: Duration) -> Budget {
    Budget { max_rows, max_time }
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

/// The startup drain of the data directory `dir` as the daemon runs it, opening the store itself.
async fn startup_drain_of(dir: &Path, settings: sync::Settings) -> DrainReport {
    sync::open_and_drain(
        &store::Options::new(dir),
        settings,
        Trigger::Startup,
        budget(),
        &CancellationToken::new(),
        &mut |_| {},
    )
    .await
    .unwrap()
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
    let report = startup_drain_of(&dir, support::settings(&server.url("/ingest"), Some(KEY))).await;
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
    let report = startup_drain_of(
        &dir,
        support::settings("http://127.0.0.1:9/ingest", Some(KEY)),
    )
    .await;
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
/// second process would have), with `settings` and the wall clock `clock`, once `ready` returns.
fn drain_on_a_thread(
    dir: &Path,
    settings: sync::Settings,
    clock: Clock,
    ready: impl FnOnce() + Send + 'static,
) -> std::thread::JoinHandle<DrainReport> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = Store::open_with_clock(&store::Options::new(&dir), clock).unwrap();
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
            drain_on_a_thread(&dir, settings, Clock::system(), move || {
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
/// shorter than the server takes to answer, a second drainer whose clock reads past the first
/// one's lease (as if it started once that lease would have expired) claims nothing the first
/// still holds, and no row is posted twice (DESIGN §4).
#[test]
fn a_held_row_is_never_claimed_by_another_drainer() {
    let (_guard, dir) = support::temp_dir();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ids = runtime.block_on(support::fill(&support::open_store(&dir), 3));
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_millis(1500)));
    let lease = Duration::from_secs(1);
    let drainer = |path: &'static str, clock: Clock| {
        let mut settings = support::settings(&server.url(path), Some(KEY));
        settings.lease = lease;
        settings.request_timeout = Duration::from_secs(5);
        settings.concurrency = 1;
        settings.max_concurrency = 1;
        drain_on_a_thread(&dir, settings, clock, || {})
    };
    let first = drainer("/a", Clock::system());
    assert!(server.wait_for(1, Duration::from_secs(20)));
    // Every row was claimed before the first request went out. The second drainer's clock reads
    // past any lease the first can hold (its time budget and a lease period from that claim, the
    // value its lease token was set to), with no wait for it.
    let later = ManualClock::starting_at(
        gradata::clock::now() + budget().max_time + lease + Duration::from_millis(100),
    );
    let second = drainer("/b", later.clock()).join().unwrap();
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
