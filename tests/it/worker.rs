//! The background worker of `gradata serve` through an outage: against a fake ingest that fails
//! everything it sends a few probes, not a request per row; when the ingest returns it releases
//! the whole backlog, whatever the rows' own timers say; rows that keep failing do not hold back
//! rows never tried, before or during a whole-worker backoff; and rows made pending by another
//! process are sent without a local enqueue.
//!
//! The startup drain is given no rows (`GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS=0`), so that every
//! request the fake ingest sees is the worker's. Waits are for conditions, with guards against a
//! hang; the one fixed window (counting requests into a failing ingest) says why where it is.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gradata::store;

use crate::support::daemon::{Daemon, PATIENCE, Spec, prepare};
use crate::support::{self, FakeIngest, Reply, execute, now_unix, wait_until};

/// A daemon syncing to `server` whose startup drain sends nothing.
fn worker_only(dir: &Path, server: &FakeIngest) -> Daemon {
    let daemon = Spec::new(dir)
        .syncing_to(&server.url("/ingest"))
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", "0")
        .spawn();
    daemon.expect_ready();
    daemon
}

/// An ingest that answers 503 until the flag it returns is set, and 200 from then on.
fn ingest_down_until_up() -> (FakeIngest, Arc<AtomicBool>) {
    let up = Arc::new(AtomicBool::new(false));
    let flag = up.clone();
    let server = FakeIngest::with_plan(move |_, _| {
        if flag.load(Ordering::SeqCst) {
            Reply::ok()
        } else {
            Reply::status(503)
        }
    });
    (server, up)
}

/// Rows not delivered yet.
fn pending_rows(dir: &Path) -> Vec<support::Row> {
    support::rows(dir)
        .into_iter()
        .filter(|row| row.synced_at.is_none() && row.dead_at.is_none())
        .collect()
}

/// An ingest answering 500 to everything gets a handful of probes over a window, not a request
/// per row whose backoff timer runs out (hundreds a second before the worker backed off as a
/// whole).
#[test]
fn a_failing_ingest_gets_a_few_probes_not_a_request_per_row() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 2000);
    let server = FakeIngest::replying(Reply::status(500));
    let daemon = worker_only(&dir, &server);
    assert!(
        server.wait_for(1, PATIENCE),
        "the worker never tried to send"
    );
    // A fixed window is what is measured: the requests a failing ingest gets over some seconds.
    // The first pass (a batch, about 50 requests) is over well before the window starts.
    std::thread::sleep(Duration::from_secs(3));
    let before = server.count();
    std::thread::sleep(Duration::from_secs(10));
    let during = server.count() - before;
    // Probes at 1, 2, 4, 8 s… after the failing pass: three or four land in the window, each one
    // request (a row never tried is due), two if nothing was due.
    assert!(
        during <= 8,
        "{during} requests in 10 s into an ingest that fails everything\nstderr:\n{}",
        daemon.stderr()
    );
    assert!(during >= 1, "no probe in 10 s: the outage would never end");
    assert_eq!(pending_rows(&dir).len(), 2000, "no row may be lost");
}

/// When the ingest returns after an outage, every row is delivered promptly, also those whose
/// timers say an hour from now: the first answered probe releases the backlog.
#[test]
fn when_the_ingest_returns_rows_with_long_timers_are_delivered_promptly() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 300);
    // The morning after: most rows failed eight times and wait an hour; the newest were never
    // tried.
    execute(
        &dir,
        &format!(
            "UPDATE sync_queue SET attempts = 8, next_attempt_at = {}, last_error = 'http 503'
              WHERE id <= 280",
            now_unix() + 3600.0
        ),
    );
    let (server, up) = ingest_down_until_up();
    let daemon = worker_only(&dir, &server);
    // The rows never tried fail: the ingest is down. Once the worker says it backs off (or after
    // a while, if it never does), the ingest comes back.
    assert!(server.wait_for(20, PATIENCE), "the worker never tried");
    let until = Instant::now() + Duration::from_secs(10);
    while !daemon.stderr().contains("sending only probes") && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    up.store(true, Ordering::SeqCst);
    let back = Instant::now();
    // Well within a minute: a probe comes within 15 s, and 300 rows take well under a second.
    wait_until(
        &daemon,
        Duration::from_secs(30),
        "every row delivered after the ingest came back",
        || pending_rows(&dir).is_empty(),
    );
    eprintln!(
        "all 300 rows delivered {:?} after the ingest came back",
        back.elapsed()
    );
    let delivered: HashSet<String> = server
        .received()
        .iter()
        .filter_map(support::Received::idempotency_key)
        .collect();
    assert_eq!(delivered.len(), 300);
}

/// Rows that keep failing (a 500 for each, and due now) ahead of rows never tried: the rows never
/// tried are delivered, and the failing ones stay pending, tried again.
#[test]
fn rows_never_tried_flow_while_failing_rows_keep_failing() {
    let (_guard, dir) = support::temp_dir();
    let ids = prepare(&dir, 500);
    let failing: HashSet<String> = ids[..150].iter().cloned().collect();
    execute(
        &dir,
        &format!(
            "UPDATE sync_queue SET attempts = 3, next_attempt_at = {}, last_error = 'http 500'
              WHERE id <= 150",
            now_unix() - 1.0
        ),
    );
    let server = FakeIngest::with_plan(support::fake_ingest::failing_rows(
        failing.clone(),
        Reply::status(500),
    ));
    let daemon = worker_only(&dir, &server);
    wait_until(
        &daemon,
        Duration::from_secs(30),
        "every row never tried delivered",
        || {
            pending_rows(&dir)
                .iter()
                .all(|row| failing.contains(row.event_id.as_deref().unwrap_or("")))
        },
    );
    let pending = pending_rows(&dir);
    assert_eq!(pending.len(), 150, "the failing rows stay pending");
    assert!(
        pending.iter().any(|row| row.attempts > Some(3)),
        "the failing rows were tried again: {pending:?}"
    );
}

/// A row made pending by another process (`gradata queue retry` on a dead row) is delivered with
/// no enqueue in this one: the idle worker notices that another connection committed.
#[test]
fn a_row_made_pending_by_another_process_is_delivered_without_an_enqueue() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 3);
    execute(
        &dir,
        &format!(
            "UPDATE sync_queue SET dead_at = {}, last_status = 422, last_error = 'http 422'",
            now_unix()
        ),
    );
    let server = FakeIngest::replying(Reply::ok());
    let daemon = worker_only(&dir, &server);
    // The worker's first pass found nothing to send (dead rows are never sent); it has saved
    // its status once that pass is over.
    wait_until(&daemon, PATIENCE, "the worker's first pass", || {
        let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
        conn.query_row(
            "SELECT COUNT(*) FROM gradata_meta WHERE key = 'sync_status'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .unwrap()
            > 0
    });
    assert_eq!(server.count(), 0);

    let (output, stdout, stderr) =
        support::run(support::gradata(&dir).args(["queue", "retry", "--all-dead"]));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    wait_until(
        &daemon,
        Duration::from_secs(30),
        "the rows made pending elsewhere delivered",
        || {
            support::rows(&dir)
                .iter()
                .all(|row| row.synced_at.is_some())
        },
    );
    assert_eq!(server.count(), 3);
}

/// Deep in an outage (probes 15 s apart) that is really a set of rows that keep failing, an event
/// enqueued now is delivered within about a second: the enqueue brings the next probe forward,
/// and the probe takes the row never tried first.
#[test]
fn during_an_outage_a_new_event_is_probed_within_a_second() {
    let (_guard, dir) = support::temp_dir();
    let ids = prepare(&dir, 300);
    execute(
        &dir,
        &format!(
            "UPDATE sync_queue SET attempts = 3, next_attempt_at = {}, last_error = 'http 500'",
            now_unix() - 1.0
        ),
    );
    let failing: HashSet<String> = ids.into_iter().collect();
    let server = FakeIngest::with_plan(support::fake_ingest::failing_rows(
        failing.clone(),
        Reply::status(500),
    ));
    let daemon = worker_only(&dir, &server);
    wait_until(
        &daemon,
        PATIENCE,
        "the worker backing off as a whole",
        || daemon.stderr().contains("sending only probes"),
    );
    // Four failed probes (1, 2, 4 and 8 s apart): the next one is 15 s away.
    let before = server.count();
    assert!(
        server.wait_for(before + 4, Duration::from_secs(40)),
        "fewer than four probes in 40 s\nstderr:\n{}",
        daemon.stderr()
    );
    let response = crate::support::daemon::post_json(
        daemon.addr(),
        "/v1/events",
        &serde_json::json!({"kind": "correction", "event_id": "fresh-1", "data": {"n": 1}}),
    );
    assert_eq!(response.status, 200, "{:?}", response.json());
    let posted = Instant::now();
    // The probe comes a second after the last one; the guard leaves room for a slow machine but
    // not for the 15 s the probe interval had grown to.
    wait_until(
        &daemon,
        Duration::from_secs(6),
        "the new event delivered during the outage",
        || {
            server
                .received()
                .iter()
                .any(|r| r.idempotency_key().as_deref() == Some("fresh-1"))
        },
    );
    eprintln!(
        "new event delivered {:?} after it was posted",
        posted.elapsed()
    );
}

/// A restart during an outage: the startup drain finds the ingest down, and every row waits on a
/// long timer (those it tried, and those an earlier run left). The worker carries the outage on
/// and probes, so when the ingest returns the rows flow at once instead of waiting their timers
/// out. With backoffs of up to an hour, a worker that went by the timers alone would deliver
/// almost nothing within the guard.
#[test]
fn an_outage_found_by_the_startup_drain_is_probed_by_the_worker() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 100);
    execute(
        &dir,
        &format!(
            "UPDATE sync_queue SET attempts = 3, next_attempt_at = {}, last_error = 'http 503'",
            now_unix() + 3600.0
        ),
    );
    let (server, up) = ingest_down_until_up();
    let daemon = Spec::new(&dir)
        .syncing_to(&server.url("/ingest"))
        .env("GRADATA_SYNC_CONCURRENCY", "1")
        .env("GRADATA_SYNC_BACKOFF_BASE_SECS", "3600")
        .env("GRADATA_SYNC_BACKOFF_CAP_SECS", "3600")
        .spawn();
    daemon.expect_ready();
    assert!(
        daemon.stderr().contains("no_progress"),
        "the startup drain should have found the ingest down\nstderr:\n{}",
        daemon.stderr()
    );
    wait_until(
        &daemon,
        Duration::from_secs(10),
        "the worker carries the startup drain's outage on (it probes)",
        || daemon.stderr().contains("sending only probes"),
    );
    up.store(true, Ordering::SeqCst);
    // A probe comes within 15 s of the last one, then the catch-up takes every row.
    wait_until(
        &daemon,
        Duration::from_secs(40),
        "every row delivered after the ingest came back",
        || pending_rows(&dir).is_empty(),
    );
}
