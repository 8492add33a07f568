//! Stopping: SIGTERM during the startup drain, a request in flight finishing within the grace
//! period, the grace period enforced, and a second SIGTERM skipping the final drain; no row is
//! lost either way.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use super::{is_progress, startup_record};
use crate::support::daemon::{self, Message, PATIENCE, Spec, log_field, prepare};
use crate::support::{self, FakeIngest, Reply};

/// SIGTERM in the middle of the startup drain: exit 0 with `STOPPING=1` and no `READY=1`, and every
/// row is either synced (and was received) or pending and unleased; none dead.
#[test]
fn sigterm_during_the_startup_drain_loses_nothing() {
    const ROWS: usize = 500;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, ROWS);
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_millis(200)));
    let mut daemon = Spec::new(&dir).syncing_to(&server.url("/ingest")).spawn();

    daemon
        .notify()
        .expect("draining progress", |m| is_progress(m, ROWS), PATIENCE);
    daemon.sigterm();
    let code = daemon.exit_code(PATIENCE);
    assert_eq!(code, 0, "stderr:\n{}", daemon.stderr());

    let all = daemon.notify().all();
    assert!(all.iter().any(|m| m.has("STOPPING=1")), "{all:#?}");
    assert!(!all.iter().any(|m| m.has("READY=1")), "{all:#?}");
    let line = startup_record(&daemon.stderr());
    assert_eq!(
        log_field(&line, "reason").as_deref(),
        Some("cancelled"),
        "{line}"
    );

    let received: HashSet<String> = server
        .received()
        .iter()
        .filter_map(support::Received::idempotency_key)
        .collect();
    let rows = support::rows(&dir);
    assert_eq!(rows.len(), ROWS);
    let mut synced = 0;
    for row in &rows {
        assert_eq!(row.dead_at, None, "{row:?}");
        assert_eq!(
            row.lease_until, None,
            "a lease outlived the daemon: {row:?}"
        );
        if row.synced_at.is_some() {
            synced += 1;
            let id = row.event_id.as_deref().unwrap();
            assert!(received.contains(id), "synced but never received: {row:?}");
        }
    }
    assert!(synced < ROWS, "the drain finished before SIGTERM arrived");
}

/// A request in flight when SIGTERM arrives is answered before the service exits: the connection
/// is accepted and has sent part of its request head, SIGTERM arrives (`STOPPING=1`), the client
/// dawdles, then finishes the head; the answer comes, says the connection will close, and only
/// then does the final drain start.
#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();

    let mut stream = daemon::connect(daemon.addr());
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    // The daemon has accepted the connection and read the partial head once the kernel shows no
    // unread bytes on its end of the connection.
    daemon::wait_until_read(daemon.addr(), &stream, "the request");

    daemon.sigterm();
    daemon
        .notify()
        .expect("STOPPING=1", |m| m.has("STOPPING=1"), PATIENCE);
    // A slow client: the daemon must wait for it (up to the 10 s grace) rather than close the
    // connection and go on to the final drain and exit. A daemon that did not wait would be gone
    // well within this delay; one that waits passes whatever the delay, so it cannot make the test
    // flaky.
    std::thread::sleep(Duration::from_millis(500));
    let final_drain = |m: &Message| m.value("STATUS") == Some("stopping: final drain");
    assert!(
        !daemon.notify().all().iter().any(final_drain),
        "the final drain started with a request in flight: {:#?}",
        daemon.notify().texts()
    );
    stream.write_all(b"\r\n").unwrap();
    let response = daemon::read_response(&mut stream).unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["status"], "ok", "{response:?}");
    // Keep-alive was requested; graceful shutdown turned it off.
    assert_eq!(response.header("connection"), Some("close"), "{response:?}");

    let code = daemon.exit_code(PATIENCE);
    assert_eq!(code, 0, "stderr:\n{}", daemon.stderr());
}

/// The grace period is enforced: a request that is still open when it runs out (here a body that
/// is never finished, on a keep-alive connection) is closed by the service, which then goes on to
/// its final drain and exits 0 with the drain's record. The connection is closed while the final
/// drain is still to come, not merely when the process exits: the one row is not due for minutes
/// (so the worker leaves it), the final drain posts it anyway, and the ingest takes 3 s to answer.
#[test]
fn the_grace_period_closes_requests_that_outlast_it() {
    use std::io::Read;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 1);
    let conn = rusqlite::Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.execute(
        "UPDATE sync_queue SET next_attempt_at = unixepoch('now') + 240",
        [],
    )
    .unwrap();
    drop(conn);
    let ingest_delay = Duration::from_secs(3);
    let server = FakeIngest::replying(Reply::ok().delay(ingest_delay));
    let mut daemon = Spec::new(&dir)
        .syncing_to(&server.url("/ingest"))
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS", "0")
        .env("GRADATA_API_SHUTDOWN_GRACE_SECS", "1")
        .env("GRADATA_API_BODY_TIMEOUT_SECS", "600")
        .spawn();
    daemon.expect_ready();

    let mut stream = daemon::connect(daemon.addr());
    stream
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Connection: keep-alive\r\nContent-Length: 1000\r\n\r\n{\"kind\": \"event\"",
        )
        .unwrap();
    daemon::wait_until_read(daemon.addr(), &stream, "the request");

    daemon.sigterm();
    let signalled = Instant::now();
    daemon
        .notify()
        .expect("STOPPING=1", |m| m.has("STOPPING=1"), PATIENCE);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let closed = stream.read_to_end(&mut answer);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionReset),
        "the connection was not closed: {closed:?}"
    );
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    let stderr = daemon.stderr();
    assert!(
        !stderr.contains("sync queue drained at shutdown"),
        "the connection stayed open until the final drain was over:\n{stderr}"
    );
    assert!(
        daemon.wait(Duration::ZERO).is_none(),
        "the connection stayed open until the service exited"
    );
    assert!(
        stderr.contains("requests still running after the grace period"),
        "{stderr}"
    );

    let code = daemon.exit_code(PATIENCE);
    assert_eq!(code, 0, "stderr:\n{}", daemon.stderr());
    let record = daemon.wait_for_log("sync queue drained at shutdown: 1 rows", Duration::ZERO);
    assert_eq!(
        log_field(&record, "reason").as_deref(),
        Some("done"),
        "{record}"
    );
    // Only a guard against a hang: the grace, the final drain's one slow post, and slack.
    let bound = Duration::from_secs(1) + ingest_delay + Duration::from_secs(10);
    assert!(
        signalled.elapsed() < bound,
        "took {:?}",
        signalled.elapsed()
    );
}

/// A second SIGTERM during shutdown skips the final drain: the service exits at once, logs why,
/// and the row the drain was posting stays pending, unleased.
#[test]
fn a_second_sigterm_skips_the_final_drain() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 1);
    // Never answers in time: without a second signal, the final drain would wait out its budget.
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_secs(3600)));
    let mut daemon = Spec::new(&dir)
        .syncing_to(&server.url("/ingest"))
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS", "0")
        .env("GRADATA_SYNC_REQUEST_TIMEOUT_SECS", "600")
        .env("GRADATA_SYNC_LEASE_SECS", "1200")
        .env("GRADATA_SYNC_SHUTDOWN_DRAIN_MAX_SECS", "3600")
        .spawn();
    daemon.expect_ready();
    daemon.sigterm();
    daemon.notify().expect(
        "the final drain",
        |m| m.value("STATUS") == Some("stopping: final drain"),
        PATIENCE,
    );
    daemon.sigterm();
    let code = daemon.exit_code(PATIENCE);
    assert_eq!(code, 0, "stderr:\n{}", daemon.stderr());
    daemon.wait_for_log("second stop signal", PATIENCE);
    let rows = support::rows(&dir);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].synced_at, rows[0].dead_at),
        (None, None),
        "{rows:?}"
    );
    assert_eq!(rows[0].lease_until, None, "a lease outlived the daemon");
    // The fake server would wait out its replies before stopping; the test is done with it.
    std::mem::forget(server);
}
