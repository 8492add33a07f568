//! Leases on a clock that does not jump: a stored lease is a token, freed by its holder, renewed
//! while held, and taken from a holder that is gone only by the service's observer, once it has
//! seen the same token for a whole lease period on its monotonic clock. Another process's wall
//! clock is stepped with the test-only `GRADATA_TEST_CLOCK_OFFSET_SECS`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::daemon::{PATIENCE, Spec, prepare};
use crate::support::{self, FakeIngest, Received, Reply, execute, now_unix, wait_until};

const KEY: &str = "gk_test_0123456789";

/// Two hours: far more than any lease or backoff in these tests.
const STEP_SECS: f64 = 7200.0;

/// `gradata drain --json` on `dir`, posting to `url`.
fn drain(dir: &Path, url: &str) -> Command {
    let mut command = support::gradata(dir);
    command
        .env("GRADATA_API_KEY", KEY)
        .arg("--ingest-url")
        .arg(url)
        .args(["drain", "--json"]);
    command
}

/// Runs a drain to its end and returns its JSON report.
fn report_of(command: &mut Command) -> serde_json::Value {
    let (output, stdout, stderr) = support::run(command);
    assert!(output.status.code().is_some(), "{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {stdout:?}\n{stderr}"))
}

/// How many times each idempotency key was posted to `path`.
fn posts_to(received: &[Received], path: &str) -> HashMap<String, usize> {
    let mut posts = HashMap::new();
    for request in received.iter().filter(|r| r.path == path) {
        *posts
            .entry(request.idempotency_key().unwrap_or_default())
            .or_insert(0) += 1;
    }
    posts
}

fn all_synced(dir: &Path) -> bool {
    support::rows(dir)
        .iter()
        .all(|row| row.synced_at.is_some() && row.lease_until.is_none())
}

/// A clock stepped forward expires nothing: while the service's worker holds rows in requests
/// the ingest keeps open, a `gradata drain` whose wall clock runs two hours ahead posts none of
/// them and says `leased`; in the end every row was posted exactly once. (Before, the drain saw
/// every lease as run out and posted the rows again.)
#[test]
fn a_clock_stepped_forward_takes_no_row_another_drainer_holds() {
    let (_guard, dir) = support::temp_dir();
    let ids = prepare(&dir, 8);
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_secs(3)));
    let daemon = Spec::new(&dir)
        .syncing_to(&server.url("/worker"))
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", "0")
        .env("GRADATA_SYNC_CONCURRENCY", "2")
        .env("GRADATA_SYNC_REQUEST_TIMEOUT_SECS", "10")
        .spawn();
    daemon.expect_ready();
    // The worker's first request is open: its batch, every row, is leased.
    assert!(server.wait_for(1, PATIENCE), "the worker never sent");

    let report = report_of(
        drain(&dir, &server.url("/ahead"))
            .env("GRADATA_TEST_CLOCK_OFFSET_SECS", STEP_SECS.to_string()),
    );
    assert_eq!(report["delivered"], 0, "{report}");
    assert_eq!(report["reason"], "leased", "{report}");
    assert!(
        posts_to(&server.received(), "/ahead").is_empty(),
        "the drain ahead posted rows the worker holds"
    );

    wait_until(&daemon, PATIENCE, "every row delivered", || {
        all_synced(&dir)
    });
    let posts = posts_to(&server.received(), "/worker");
    assert_eq!(posts.len(), ids.len(), "{posts:?}");
    assert!(posts.values().all(|n| *n == 1), "posted twice: {posts:?}");
}

/// A clock stepped back stalls nothing: rows whose lease says two hours from now, left by a
/// drainer that is gone (a process whose clock ran ahead), are freed by the service's worker
/// after a few lease periods on its monotonic clock and delivered, not two hours later.
#[test]
fn leases_left_by_a_holder_that_is_gone_are_freed_within_a_few_lease_periods() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 0);
    let server = FakeIngest::replying(Reply::ok());
    let daemon = Spec::new(&dir)
        .syncing_to(&server.url("/ingest"))
        .env("GRADATA_SYNC_LEASE_SECS", "2")
        .env("GRADATA_SYNC_REQUEST_TIMEOUT_SECS", "1")
        .spawn();
    daemon.expect_ready();
    let lease_until = now_unix() + STEP_SECS;
    let mut sql = String::from("BEGIN;");
    for n in 0..10 {
        sql.push_str(&format!(
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id, lease_until)
             VALUES ('{{\"event_id\":\"gone-{n}\"}}', 'event', {now}, 0, 'gone-{n}', {lease_until});",
            now = now_unix()
        ));
    }
    sql.push_str("COMMIT;");
    let written = Instant::now();
    execute(&dir, &sql);

    // Discovered within a lease period, freed a period later, then sent: well under ten periods.
    wait_until(
        &daemon,
        Duration::from_secs(20),
        "the rows of a holder that is gone delivered",
        || all_synced(&dir),
    );
    let took = written.elapsed();
    let posts = posts_to(&server.received(), "/ingest");
    assert_eq!(posts.len(), 10, "{posts:?}");
    assert!(posts.values().all(|n| *n == 1), "posted twice: {posts:?}");
    assert!(
        took >= Duration::from_secs(2),
        "freed before a whole lease period ({took:?}): a live holder could have lost its rows"
    );
    assert!(
        daemon
            .stderr()
            .contains("freed rows whose lease was not renewed"),
        "{}",
        daemon.stderr()
    );
}

/// A live drain keeps its rows however long it runs: one whose requests, one at a time, take
/// several lease periods renews its batch's lease, so the service's observer never frees those
/// rows and a second drain started meanwhile finds them `leased`; each row is posted once.
///
/// The lease is 3 s, renewed every second: a renewal is a commit, and on a loaded test machine
/// one fsync has been seen to take over a second, so a 2 s lease left too little margin for the
/// test to be deterministic (the service's default is far longer).
#[test]
fn a_drain_longer_than_its_lease_keeps_its_rows_by_renewing_them() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 0);
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_millis(450)));
    let lease = [
        ("GRADATA_SYNC_LEASE_SECS", "3"),
        ("GRADATA_SYNC_REQUEST_TIMEOUT_SECS", "1"),
    ];
    let mut spec = Spec::new(&dir).syncing_to(&server.url("/worker"));
    for (name, value) in lease {
        spec = spec.env(name, value);
    }
    let daemon = spec.spawn();
    daemon.expect_ready();
    // Rows the worker leaves alone: their timers are well inside the backoff cap, so not due; an
    // explicit drain takes them whatever their timer.
    let rows = 20;
    let mut sql = String::from("BEGIN;");
    for n in 0..rows {
        sql.push_str(&format!(
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id, next_attempt_at)
             VALUES ('{{\"event_id\":\"long-{n}\"}}', 'event', {now}, 1, 'long-{n}', {due});",
            now = now_unix(),
            due = now_unix() + 200.0
        ));
    }
    sql.push_str("COMMIT;");
    execute(&dir, &sql);

    let mut first = drain(&dir, &server.url("/first"));
    first
        .envs(lease)
        .env("GRADATA_SYNC_CONCURRENCY", "1")
        .env("GRADATA_SYNC_MAX_CONCURRENCY", "1");
    let first = std::thread::spawn(move || report_of(&mut first));
    // Fourteen answers of 0.45 s each, one at a time: the batch has been held for over two lease
    // periods, long enough for an observer to free a lease that was not renewed.
    wait_until(
        &daemon,
        PATIENCE,
        "the first drain's fourteenth request",
        || {
            posts_to(&server.received(), "/first")
                .values()
                .sum::<usize>()
                >= 14
        },
    );
    let second = report_of(drain(&dir, &server.url("/second")).envs(lease));
    assert_eq!(second["delivered"], 0, "{second}\n{}", daemon.stderr());
    assert_eq!(second["reason"], "leased", "{second}\n{}", daemon.stderr());

    let first = first.join().unwrap();
    assert_eq!(first["delivered"], rows, "{first}");
    let received = server.received();
    assert!(
        posts_to(&received, "/second").is_empty(),
        "second drain posted held rows"
    );
    assert!(
        posts_to(&received, "/worker").is_empty(),
        "the worker posted held rows"
    );
    let posts = posts_to(&received, "/first");
    assert_eq!(posts.len(), rows, "{posts:?}");
    assert!(posts.values().all(|n| *n == 1), "posted twice: {posts:?}");
    assert!(all_synced(&dir));
}

/// A backoff timer set before the wall clock went back lies further off than any retry can be
/// given: the idle worker sends the row at once (it notices another process's commit within its
/// idle poll) rather than sleeping on the timer for the longest retry wait, an hour.
#[test]
fn the_worker_does_not_sleep_on_a_timer_beyond_any_retry() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 0);
    let server = FakeIngest::replying(Reply::ok());
    let daemon = Spec::new(&dir).syncing_to(&server.url("/ingest")).spawn();
    daemon.expect_ready();
    // One event through the API, delivered: the worker has had a pass and is now idle, with
    // nothing due.
    let response = crate::support::daemon::post_json(
        daemon.addr(),
        "/v1/events",
        &serde_json::json!({"kind": "correction", "event_id": "first-1", "data": {"n": 1}}),
    );
    assert_eq!(response.status, 200, "{:?}", response.json());
    wait_until(&daemon, PATIENCE, "the first event delivered", || {
        all_synced(&dir) && !support::rows(&dir).is_empty()
    });
    execute(
        &dir,
        &format!(
            "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id, next_attempt_at)
             VALUES ('{{\"event_id\":\"back-1\"}}', 'event', {now}, 3, 'back-1', {due})",
            now = now_unix(),
            due = now_unix() + STEP_SECS
        ),
    );
    wait_until(
        &daemon,
        Duration::from_secs(20),
        "the row timed beyond any retry sent",
        || all_synced(&dir),
    );
    assert_eq!(posts_to(&server.received(), "/ingest").len(), 2);
}

/// The same with a real drainer: a `gradata drain` whose wall clock runs two hours ahead is
/// killed with SIGKILL while it holds rows, beside a running service. Its leases say two hours
/// from now; the service frees them after a few lease periods and delivers every row.
#[test]
fn a_killed_drain_whose_clock_ran_ahead_does_not_hold_its_rows_for_hours() {
    let (_guard, dir) = support::temp_dir();
    let ids = prepare(&dir, 12);
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_millis(800)));
    let lease = [
        ("GRADATA_SYNC_LEASE_SECS", "2"),
        ("GRADATA_SYNC_REQUEST_TIMEOUT_SECS", "1"),
    ];
    let mut ahead = drain(&dir, &server.url("/ahead"))
        .envs(lease)
        .env("GRADATA_SYNC_CONCURRENCY", "1")
        .env("GRADATA_SYNC_MAX_CONCURRENCY", "1")
        .env("GRADATA_TEST_CLOCK_OFFSET_SECS", STEP_SECS.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(server.wait_for(1, PATIENCE), "the drain never sent");
    // Started while the drain holds its rows: not alone with the store, so it keeps the leases.
    let mut spec = Spec::new(&dir)
        .syncing_to(&server.url("/worker"))
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", "0");
    for (name, value) in lease {
        spec = spec.env(name, value);
    }
    let daemon = spec.spawn();
    daemon.expect_ready();
    ahead.kill().unwrap();
    ahead.wait().unwrap();
    let leases_ahead = support::rows(&dir)
        .iter()
        .filter(|row| {
            row.lease_until
                .is_some_and(|t| t > now_unix() + STEP_SECS / 2.0)
        })
        .count();
    assert!(
        leases_ahead > 0,
        "the killed drain left no lease two hours ahead"
    );

    wait_until(
        &daemon,
        Duration::from_secs(30),
        "the killed drain's rows delivered",
        || all_synced(&dir),
    );
    // The killed drain's batch was never settled: the worker sends every row, each once.
    let posts = posts_to(&server.received(), "/worker");
    assert_eq!(posts.len(), ids.len(), "{posts:?}");
    assert!(posts.values().all(|n| *n == 1), "posted twice: {posts:?}");
}
