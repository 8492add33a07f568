//! Head-of-line blocking and outages in explicit drains (the project's issue 21, point 1): rows
//! the ingest keeps rejecting are passed over, each row is sent at most once, and an ingest that
//! fails everything stops the drain within a few batches, with a reason that says so. These run
//! the real binary: the startup drain before READY=1, and `gradata drain`.

use super::*;

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
        bounded(1000, Duration::from_secs(60)),
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
