//! `gradata serve` as systemd runs it: the test passes the listening socket, reads the `sd_notify`
//! messages, sends signals and talks HTTP, and checks the startup order (drain, then serve and
//! `READY=1`), the startup record, shutdown, reload, the watchdog and `/health`.
//!
//! Every wait is for a condition, with a generous timeout that only guards against a hang; the one
//! fixed window (the starved watchdog) is explained where it is.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::daemon::{
    self, Daemon, EarlyRequest, Message, PATIENCE, Spec, log_field, prepare,
};
use crate::support::{self, FakeIngest, Reply};

/// The contract record of the startup drain.
const STARTUP_RECORD: &str = "sync queue drained at startup: ";

/// The one startup-drain record in `stderr`, checked to be the only one.
fn startup_record(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(STARTUP_RECORD))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one startup record; stderr:\n{stderr}"
    );
    lines[0].to_owned()
}

/// Checks the startup record says `rows` delivered, `remaining` left and `reason`.
fn assert_startup_record(stderr: &str, rows: u64, remaining: u64, reason: &str) {
    let line = startup_record(stderr);
    assert!(
        line.contains(&format!("{STARTUP_RECORD}{rows} rows")),
        "{line}"
    );
    assert_eq!(
        log_field(&line, "delivered").as_deref(),
        Some(rows.to_string().as_str()),
        "{line}"
    );
    assert_eq!(
        log_field(&line, "remaining").as_deref(),
        Some(remaining.to_string().as_str()),
        "{line}"
    );
    assert_eq!(
        log_field(&line, "reason").as_deref(),
        Some(reason),
        "{line}"
    );
}

/// Position of the first message satisfying `pred`.
fn position(messages: &[Message], pred: impl Fn(&Message) -> bool) -> Option<usize> {
    messages.iter().position(pred)
}

fn is_progress(message: &Message, total: usize) -> bool {
    message.value("STATUS").is_some_and(|status| {
        status.starts_with("draining sync queue: ") && status.ends_with(&format!("/{total} rows"))
    })
}

/// SIGTERM, then exit code 0 with `STOPPING=1` sent.
fn stop_cleanly(daemon: &mut Daemon) {
    daemon.sigterm();
    let code = daemon.exit_code(PATIENCE);
    assert_eq!(code, 0, "stderr:\n{}", daemon.stderr());
    assert!(
        daemon.notify().all().iter().any(|m| m.has("STOPPING=1")),
        "no STOPPING=1: {:#?}",
        daemon.notify().texts()
    );
}

fn pending(dir: &std::path::Path) -> usize {
    support::rows(dir)
        .iter()
        .filter(|row| row.synced_at.is_none() && row.dead_at.is_none())
        .count()
}

/// Text logs written to a file (not a terminal) are plain text: no colour codes around the
/// message or the fields.
#[test]
fn text_logs_to_a_file_carry_no_colour_codes() {
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    stop_cleanly(&mut daemon);
    let stderr = daemon.stderr();
    assert!(stderr.contains(" INFO ready pending=0"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

/// The backlog is delivered before `READY=1`: a connection made during the drain is answered only
/// once the queue is empty, the server has every row when `READY=1` arrives, progress and the
/// timeout extension come first, and the startup record counts all 3,200 rows.
#[test]
fn startup_drain_delivers_the_backlog_before_ready() {
    const ROWS: usize = 3200;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, ROWS);
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_millis(5)));

    let mut daemon = Spec::new(&dir).syncing_to(&server.url("/ingest")).spawn();
    // Connected while the daemon drains: the kernel backlog holds it until the server accepts.
    let early = EarlyRequest::connect(daemon.addr());
    let client = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let response = early.get_health();
            (response, server.count())
        });

        let before_ready = daemon.expect_ready();
        let count_at_ready = server.count();
        let ready = before_ready.last().unwrap();
        assert_eq!(
            count_at_ready, ROWS,
            "READY=1 came before the server had every row"
        );
        assert_eq!(
            ready.value("STATUS"),
            Some("serving; 0 pending"),
            "{ready:?}"
        );
        let extend = position(&before_ready, |m| m.sets("EXTEND_TIMEOUT_USEC"));
        assert!(
            extend.is_some(),
            "no EXTEND_TIMEOUT_USEC= before READY=1: {before_ready:#?}"
        );
        assert!(
            before_ready.iter().any(|m| is_progress(m, ROWS)),
            "no STATUS=draining sync queue: x/{ROWS} rows before READY=1: {before_ready:#?}"
        );
        assert!(
            extend < position(&before_ready, |m| is_progress(m, ROWS)),
            "the timeout must be extended before the drain: {before_ready:#?}"
        );
        client.join().unwrap()
    });

    // Not asserted: that the answer arrives after READY=1. The daemon starts accepting and then
    // sends READY=1 (DESIGN §2, step 5), so the two race by design; what must hold is that nothing
    // is answered before the drain is over.
    let (response, count_at_answer) = client;
    let response = response.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let health = response.json();
    assert_eq!(health["queue"]["pending"], 0, "{health}");
    assert_eq!(health["queue"]["synced"], ROWS, "{health}");
    // The server counts a request when it arrives; all of them had arrived before the answer.
    assert_eq!(count_at_answer, ROWS, "answered before the drain finished");
    assert_eq!(server.count(), ROWS, "a row was posted twice");

    stop_cleanly(&mut daemon);
    assert_startup_record(&daemon.stderr(), ROWS as u64, 0, "done");
}

/// The startup record is emitted exactly once, with delivered, remaining and reason, also for a
/// backlog smaller than the row budget and when the budget leaves rows behind.
#[test]
fn startup_record_counts_the_rows_once() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 120);
    let server = FakeIngest::replying(Reply::ok());
    let mut daemon = Spec::new(&dir).syncing_to(&server.url("/ingest")).spawn();
    daemon.expect_ready();
    stop_cleanly(&mut daemon);
    assert_startup_record(&daemon.stderr(), 120, 0, "done");

    // A row budget of 50: one batch at startup, the rest left to the worker. JSON logs this time,
    // so the fields are checked as structured values.
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 120);
    let mut daemon = Spec::new(&dir)
        .syncing_to(&server.url("/ingest"))
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", "50")
        .env("GRADATA_SYNC_BATCH_SIZE", "50")
        .json_logs()
        .spawn();
    let ready = daemon.expect_ready();
    assert_eq!(
        ready.last().unwrap().value("STATUS"),
        Some("serving; 70 pending")
    );
    stop_cleanly(&mut daemon);
    let stderr = daemon.stderr();
    let records: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .filter(|record: &serde_json::Value| {
            record["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(STARTUP_RECORD))
        })
        .collect();
    assert_eq!(records.len(), 1, "{stderr}");
    let record = &records[0];
    assert_eq!(
        record["message"],
        format!("{STARTUP_RECORD}50 rows"),
        "{record}"
    );
    assert_eq!(record["delivered"], 50, "{record}");
    assert_eq!(record["remaining"], 70, "{record}");
    assert_eq!(record["reason"], "row_budget", "{record}");
}

/// An ingest API that accepts connections but never answers cannot hold back `READY=1` past the
/// drain's time budget, and the rows stay pending.
#[test]
fn hanging_ingest_does_not_hold_back_ready() {
    const ROWS: usize = 40;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, ROWS);
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_secs(60)));
    let mut daemon = Spec::new(&dir)
        .syncing_to(&server.url("/ingest"))
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS", "1")
        .env("GRADATA_SYNC_REQUEST_TIMEOUT_SECS", "30")
        .env("GRADATA_SYNC_LEASE_SECS", "60")
        .env("GRADATA_SYNC_SHUTDOWN_DRAIN_MAX_SECS", "0.5")
        .spawn();
    let ready = daemon.expect_ready();
    let elapsed = ready.last().unwrap().at - daemon.spawned();
    assert!(
        elapsed < Duration::from_secs(15),
        "READY=1 took {elapsed:?}"
    );
    assert!(server.count() > 0, "the drain never posted");
    let (status, health) = daemon::get_health(daemon.addr());
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["queue"]["pending"], ROWS, "{health}");

    stop_cleanly(&mut daemon);
    assert_startup_record(&daemon.stderr(), 0, ROWS as u64, "time_budget");
    for row in support::rows(&dir) {
        assert_eq!((row.synced_at, row.dead_at), (None, None), "{row:?}");
        assert_eq!(
            row.lease_until, None,
            "a lease outlived the daemon: {row:?}"
        );
    }
    // The fake server would wait out its 60 s replies before stopping; the test is done with it.
    std::mem::forget(server);
}

/// An ingest API nobody listens on: `READY=1` comes promptly and the rows stay pending.
#[test]
fn unreachable_ingest_does_not_hold_back_ready() {
    const ROWS: usize = 60;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, ROWS);
    let url = format!("http://127.0.0.1:{}/ingest", daemon::free_port());
    let mut daemon = Spec::new(&dir)
        .syncing_to(&url)
        .env("GRADATA_SYNC_SHUTDOWN_DRAIN_MAX_SECS", "0.5")
        .spawn();
    let ready = daemon.expect_ready();
    let elapsed = ready.last().unwrap().at - daemon.spawned();
    assert!(
        elapsed < Duration::from_secs(15),
        "READY=1 took {elapsed:?}"
    );
    let (status, health) = daemon::get_health(daemon.addr());
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["queue"]["pending"], ROWS, "{health}");
    assert!(health["sync"]["last_error"].is_string(), "{health}");

    stop_cleanly(&mut daemon);
    let line = startup_record(&daemon.stderr());
    assert_eq!(
        log_field(&line, "delivered").as_deref(),
        Some("0"),
        "{line}"
    );
    assert_eq!(pending(&dir), ROWS);
    for row in support::rows(&dir) {
        assert_eq!(row.lease_until, None, "{row:?}");
    }
}

/// Without an API key the service still starts, keeps every row and says sync is disabled.
#[test]
fn without_a_key_ready_comes_and_rows_are_kept() {
    const ROWS: usize = 25;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, ROWS);
    let server = FakeIngest::replying(Reply::ok());
    let mut daemon = Spec::new(&dir)
        .env("GRADATA_CLOUD_INGEST_URL", server.url("/ingest"))
        .spawn();
    let ready = daemon.expect_ready();
    assert_eq!(
        ready.last().unwrap().value("STATUS"),
        Some(format!("serving; {ROWS} pending").as_str())
    );
    let (status, health) = daemon::get_health(daemon.addr());
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["queue"]["pending"], ROWS, "{health}");
    assert_eq!(health["sync"]["state"], "disabled", "{health}");

    stop_cleanly(&mut daemon);
    assert_startup_record(&daemon.stderr(), 0, ROWS as u64, "disabled");
    assert_eq!(server.count(), 0);
    assert_eq!(pending(&dir), ROWS);
}

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
    let client = stream.local_addr().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !daemon::server_has_read_everything(daemon.addr(), client) {
        assert!(
            Instant::now() < deadline,
            "the daemon never read the request"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

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
    let client = stream.local_addr().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !daemon::server_has_read_everything(daemon.addr(), client) {
        assert!(
            Instant::now() < deadline,
            "the daemon never read the request"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

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

/// With `WATCHDOG_USEC`, a healthy service keeps pinging.
#[test]
fn watchdog_is_fed_while_healthy() {
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir).env("WATCHDOG_USEC", "400000").spawn();
    daemon.expect_ready();
    for n in 1..=3 {
        daemon.notify().expect(
            &format!("WATCHDOG=1 #{n}"),
            |m| m.has("WATCHDOG=1"),
            PATIENCE,
        );
    }
    stop_cleanly(&mut daemon);
    let stderr = daemon.stderr();
    assert!(
        !stderr.contains("not feeding the watchdog"),
        "a healthy service starved the watchdog:\n{stderr}"
    );
}

/// A wedged sync worker stops the pings, so systemd restarts the service.
#[test]
fn watchdog_starves_when_the_worker_wedges() {
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir)
        .env("WATCHDOG_USEC", "400000")
        .env("GRADATA_TEST_STALL_WORKER_AFTER_SECS", "0.5")
        .spawn();
    daemon.expect_ready();
    daemon
        .notify()
        .expect("a first WATCHDOG=1", |m| m.has("WATCHDOG=1"), PATIENCE);
    daemon.wait_for_log("not feeding the watchdog", PATIENCE);
    let starved = Instant::now();
    // From here on no ping may come (pings sent before the stall was noticed may still be unread:
    // only later arrivals count). Absence can only be checked over a fixed window: 2 s is five
    // watchdog intervals, ten ping ticks.
    let quiet = Duration::from_secs(2);
    let late = daemon
        .notify()
        .wait_for(|m| m.has("WATCHDOG=1") && m.at > starved, quiet);
    assert!(late.is_none(), "pinged after the worker wedged: {late:#?}");
    // Still serving: only the worker is wedged.
    let (status, _) = daemon::get_health(daemon.addr());
    assert_eq!(status, 200);
    stop_cleanly(&mut daemon);
}

/// An outbox that is not an SQLite database (or a damaged one): the service does not start, says
/// which file and what to do, never sends `READY=1`, and leaves the file exactly as it was; the CLI
/// says the same.
#[test]
fn a_corrupt_outbox_is_named_and_left_untouched() {
    let (_guard, dir) = support::temp_dir();
    let database = dir.join(gradata::store::DATABASE_FILE);
    let garbage: Vec<u8> = b"not an SQLite database; ".repeat(400);
    std::fs::write(&database, &garbage).unwrap();

    let mut daemon = Spec::new(&dir).spawn();
    let code = daemon.exit_code(PATIENCE);
    assert!(code != 0 && code != 78, "exit code {code}");
    let stderr = daemon.stderr();
    for needle in [
        database.display().to_string().as_str(),
        "not a readable SQLite database; move it aside",
        "file is not a database",
        "move it aside to start again with an empty outbox",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
    assert!(!daemon.notify().all().iter().any(|m| m.has("READY=1")));
    assert_eq!(std::fs::read(&database).unwrap(), garbage);
    assert!(!dir.join("system.db-wal").exists());

    let status = support::gradata(&dir).arg("status").output().unwrap();
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    let said = String::from_utf8_lossy(&status.stderr);
    assert!(said.contains("not a readable SQLite database"), "{said}");
    assert!(said.contains(&database.display().to_string()), "{said}");
    assert_eq!(std::fs::read(&database).unwrap(), garbage);
}

/// A second service on the same data directory fails at once, says why, and tells systemd.
#[test]
fn a_second_service_on_the_same_data_dir_fails_fast() {
    let (_guard, dir) = support::temp_dir();
    let mut first = Spec::new(&dir).spawn();
    first.expect_ready();

    let mut second = Spec::new(&dir).spawn();
    let code = second.exit_code(Duration::from_secs(10));
    assert_ne!(code, 0);
    let stderr = second.stderr();
    assert!(
        stderr.contains("another gradata service holds this data directory"),
        "{stderr}"
    );
    let fatal = second
        .notify()
        .expect("ERRNO=", |m| m.sets("ERRNO"), Duration::from_secs(1));
    let fatal = fatal.last().unwrap();
    assert_eq!(
        fatal.value("ERRNO"),
        Some(libc::EAGAIN.to_string().as_str()),
        "{fatal:?}"
    );
    assert!(
        fatal
            .value("STATUS")
            .is_some_and(|s| s.contains("another gradata service")),
        "{fatal:?}"
    );
    assert!(!second.notify().all().iter().any(|m| m.has("READY=1")));

    let (status, _) = daemon::get_health(first.addr());
    assert_eq!(status, 200, "the first service was disturbed");
    stop_cleanly(&mut first);
}

/// The service holds the Python Gradata daemon's instance lock (`.brain.lock`) as that daemon
/// does, PID inside: while it runs, the lock cannot be taken; a brain whose lock another daemon
/// holds is refused at start, naming the lock, before anything touches the database.
#[test]
fn the_service_and_the_python_daemon_never_serve_one_brain_at_once() {
    use nix::fcntl::{Flock, FlockArg};
    let (_guard, dir) = support::temp_dir();
    let lock_path = dir.join(gradata::store::BRAIN_LOCK);
    let mut service = Spec::new(&dir).spawn();
    service.expect_ready();
    assert_eq!(
        std::fs::read_to_string(&lock_path).unwrap(),
        service.pid().to_string()
    );
    let file = std::fs::File::open(&lock_path).unwrap();
    assert!(
        Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err(),
        "a Python daemon could take the brain gradata serves"
    );
    stop_cleanly(&mut service);

    // Now the Python daemon holds it.
    let file = std::fs::File::open(&lock_path).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
    let database = dir.join(gradata::store::DATABASE_FILE);
    let before = std::fs::read(&database).unwrap();
    let mut refused = Spec::new(&dir).spawn();
    let code = refused.exit_code(Duration::from_secs(10));
    assert_ne!(code, 0);
    let stderr = refused.stderr();
    assert!(
        stderr.contains(".brain.lock")
            && stderr.contains("another Gradata daemon serves this brain"),
        "{stderr}"
    );
    assert!(!refused.notify().all().iter().any(|m| m.has("READY=1")));
    assert_eq!(
        std::fs::read(&database).unwrap(),
        before,
        "the database was touched"
    );
    drop(held);
}

/// Without passed sockets the service binds `--listen` itself.
#[test]
fn listen_flag_binds_without_passed_sockets() {
    let (_guard, dir) = support::temp_dir();
    let address = format!("127.0.0.1:{}", daemon::free_port());
    let mut daemon = Spec::new(&dir)
        .without_socket()
        .serve_arg("--listen")
        .serve_arg(&address)
        .spawn();
    let addr = address.parse().unwrap();
    let deadline = Instant::now() + PATIENCE;
    let response = loop {
        match daemon::try_get_health(addr) {
            Ok(response) => break response,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "/health never answered on {address} ({err}); stderr:\n{}",
                    daemon.stderr()
                );
                assert!(daemon.wait(Duration::ZERO).is_none(), "{}", daemon.stderr());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(response.status, 200, "{response:?}");
    stop_cleanly(&mut daemon);
}

/// `--listen` with an absolute path serves HTTP on a unix socket, like the packaged
/// `gradata-unix.socket`.
#[test]
fn listen_flag_serves_a_unix_socket() {
    use std::io::{Read, Write};
    let (_guard, dir) = support::temp_dir();
    let path = dir.join("api.sock");
    let mut daemon = Spec::new(&dir)
        .without_socket()
        .serve_arg("--listen")
        .serve_arg(&path)
        .spawn();
    daemon.expect_ready();
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(daemon::HEALTH_REQUEST.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let health: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(health["status"], "ok", "{response}");
    stop_cleanly(&mut daemon);
}

/// `--listen` on an address in use fails with a message naming it.
#[test]
fn listen_on_a_taken_address_fails_naming_it() {
    let (_guard, dir) = support::temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut daemon = Spec::new(&dir)
        .without_socket()
        .serve_arg("--listen")
        .serve_arg(&address)
        .spawn();
    let code = daemon.exit_code(Duration::from_secs(10));
    assert_ne!(code, 0);
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(&format!(
            "cannot listen on {address}: it is in use by another process (a Python Gradata daemon"
        )),
        "{stderr}"
    );
    let all = daemon.notify().all();
    assert!(
        all.iter()
            .any(|m| m.value("ERRNO") == Some(libc::EADDRINUSE.to_string().as_str())),
        "{all:#?}"
    );
}

/// SIGHUP reloads: `RELOADING=1` then `READY=1`; a bad file is rejected, naming the key, and the
/// service keeps serving with the old configuration.
#[test]
fn sighup_reloads_and_rejects_a_bad_config() {
    let (_guard, dir) = support::temp_dir();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("gradata.toml");
    std::fs::write(&config, "[sync]\nbatch_size = 10\n").unwrap();
    let mut daemon = Spec::new(&dir)
        .global_arg("--config")
        .global_arg(&config)
        .spawn();
    daemon.expect_ready();

    let expect_reload = |daemon: &Daemon| {
        let seen = daemon.expect_ready();
        let reloading = position(&seen, |m| m.has("RELOADING=1"))
            .unwrap_or_else(|| panic!("no RELOADING=1 before READY=1: {seen:#?}"));
        assert!(
            seen[reloading].sets("MONOTONIC_USEC"),
            "{:?}",
            seen[reloading]
        );
    };

    std::fs::write(&config, "[sync]\nbatch_size = 20\n").unwrap();
    daemon.sighup();
    expect_reload(&daemon);
    daemon.wait_for_log("configuration reloaded", PATIENCE);

    std::fs::write(&config, "[sync]\nbatch_sizee = 20\n").unwrap();
    daemon.sighup();
    expect_reload(&daemon);
    let rejected = daemon.wait_for_log("reload rejected", PATIENCE);
    assert!(rejected.contains("batch_sizee"), "{rejected}");

    let (status, health) = daemon::get_health(daemon.addr());
    assert_eq!(status, 200, "{health}");
    stop_cleanly(&mut daemon);
}

/// A reload applies the local token, the allowed hosts, the limits, `sync.brain_id` and the log
/// filter to the next request (an operator rotating a leaked token is not told it worked while the old one still
/// passes) and the header deadline to the next connection, and names every changed setting that
/// only a restart applies.
#[test]
fn sighup_applies_the_token_hosts_limits_and_brain_id() {
    let (_guard, dir) = support::temp_dir();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("gradata.toml");
    let (token_a, token_b) = (
        config_dir.path().join("token-a"),
        config_dir.path().join("token-b"),
    );
    std::fs::write(&token_a, "token-a\n").unwrap();
    std::fs::write(&token_b, "token-b\n").unwrap();
    let write_config = |token: &std::path::Path, brain: &str, extra: &str| {
        let text = format!(
            "[api]\ntoken_file = {:?}\n{extra}\n[sync]\nbrain_id = {brain:?}\n",
            token.to_str().unwrap()
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config(&token_a, "brain-a", "");
    let mut daemon = Spec::new(&dir)
        .global_arg("--config")
        .global_arg(&config)
        .spawn();
    daemon.expect_ready();
    let addr = daemon.addr();
    let event = |token: &str, name: &str| {
        let body = serde_json::json!({"kind": "event", "data": {"name": name}}).to_string();
        let bearer = format!("Bearer {token}");
        daemon::post_bytes(
            addr,
            "/v1/events",
            &[("Authorization", &bearer)],
            body.as_bytes(),
        )
        .status
    };
    let from_host =
        |host: &str| daemon::request(addr, "GET", "/health", &[("Host", host)], b"").status;
    // `POST /sync` logs an INFO record before it answers: seen now, filtered out after the
    // reload below sets `log.filter = "warn"`.
    let manual_drains = |daemon: &Daemon, token: &str| {
        let bearer = format!("Bearer {token}");
        let answer = daemon::post_bytes(addr, "/sync", &[("Authorization", &bearer)], b"");
        // No API key here: 200 while nothing is pending, 502 once events wait (the original's
        // answer to a sync without a key). Either way the token was accepted and a drain ran.
        assert!(matches!(answer.status, 200 | 502), "{answer:?}");
        daemon.stderr().matches("sync queue drained:").count()
    };
    assert_eq!(manual_drains(&daemon, "token-a"), 1);
    assert_eq!(event("token-a", "before"), 200);
    assert_eq!(event("token-b", "refused"), 401);
    assert_eq!(from_host("gradata.internal"), 403);

    write_config(
        &token_b,
        "brain-b",
        "allowed_hosts = [\"gradata.internal\"]\nmax_events_per_request = 1\n\
         header_timeout_secs = 1.0\n\
         [store]\nsynchronous = \"normal\"\n\
         [log]\nfilter = \"warn\"",
    );
    daemon.sighup();
    let seen = daemon.expect_ready();
    assert!(seen.iter().any(|m| m.has("RELOADING=1")), "{seen:#?}");
    daemon.wait_for_log("configuration reloaded", PATIENCE);

    assert_eq!(
        event("token-a", "old token"),
        401,
        "the old token still passes"
    );
    assert_eq!(
        manual_drains(&daemon, "token-b"),
        1,
        "log.filter not applied"
    );
    assert_eq!(event("token-b", "after"), 200);
    assert_eq!(from_host("gradata.internal"), 200);
    let two = serde_json::json!([
        {"kind": "event", "data": {"name": "one"}},
        {"kind": "event", "data": {"name": "two"}},
    ]);
    let over_limit = daemon::post_bytes(
        addr,
        "/v1/events",
        &[("Authorization", "Bearer token-b")],
        two.to_string().as_bytes(),
    );
    assert_eq!(
        over_limit.status, 400,
        "api.max_events_per_request not applied"
    );
    let brains: Vec<String> = support::rows(&dir)
        .iter()
        .map(|row| {
            let payload: serde_json::Value = serde_json::from_str(&row.payload_json).unwrap();
            payload["brain_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(brains, ["brain-a", "brain-b"]);

    let stderr = daemon.stderr();
    let not_applied: Vec<String> = stderr
        .lines()
        .filter(|line| line.contains("changed setting not applied"))
        .filter_map(|line| log_field(line, "key"))
        .collect();
    assert_eq!(not_applied, ["store.synchronous"], "{stderr}");

    // A connection opened now, left idle, is closed after the new one-second deadline, not the
    // minute it was (the read gives up long before that).
    let mut idle = daemon::connect(addr);
    idle.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut idle, &mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("the service sent something to an idle connection"),
        Err(err) => assert!(
            err.kind() == std::io::ErrorKind::ConnectionReset,
            "the idle connection was not closed: {err}"
        ),
    }
    stop_cleanly(&mut daemon);
}

/// A startup drain budget longer than `EXTEND_TIMEOUT_USEC=` can express (a u32 of microseconds,
/// about 71.6 minutes) is asked for an hour at a time, not as a saturated value that systemd would
/// time out on partway through the drain.
#[test]
fn a_long_drain_budget_is_asked_for_in_extensions_that_fit() {
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir)
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS", "7200")
        .spawn();
    let before_ready = daemon.expect_ready();
    let extensions: Vec<&str> = before_ready
        .iter()
        .filter_map(|m| m.value("EXTEND_TIMEOUT_USEC"))
        .collect();
    assert_eq!(extensions, ["3600000000"], "{before_ready:#?}");
    stop_cleanly(&mut daemon);
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

/// A passed socket the service cannot accept from is refused before `READY=1`, with exit 78 (a
/// socket unit mistake, which a restart cannot fix): a bound TCP socket nobody called `listen(2)`
/// on (what `Accept=yes` or a hand-made launcher passes), and a UDP socket.
#[test]
fn an_unusable_passed_socket_exits_78_before_ready() {
    use socket2::{Domain, Socket, Type};
    let not_listening = || {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        socket
    };
    let udp = || {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, None).unwrap();
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        socket
    };
    for (socket, needle) in [
        (not_listening(), "is not listening"),
        (udp(), "neither a TCP nor a unix stream socket"),
    ] {
        let (_guard, dir) = support::temp_dir();
        let mut daemon = Spec::new(&dir).passing(socket.into()).spawn();
        let code = daemon.exit_code(PATIENCE);
        let stderr = daemon.stderr();
        assert_eq!(code, 78, "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
        let all = daemon.notify().all();
        assert!(!all.iter().any(|m| m.has("READY=1")), "{all:#?}");
    }
}

/// Listening beyond loopback without a local token would let anyone on the network write events
/// (a network client can send any `Host`): refused with exit 78, for a `--listen` address and for
/// a socket systemd passes. With `api.token_file` set it is allowed, with a warning naming it.
#[test]
fn a_non_loopback_listener_needs_the_local_token() {
    let (_guard, dir) = support::temp_dir();
    let wildcard = format!("0.0.0.0:{}", daemon::free_port());
    let mut bound = Spec::new(&dir)
        .without_socket()
        .serve_arg("--listen")
        .serve_arg(&wildcard)
        .spawn();
    assert_eq!(bound.exit_code(PATIENCE), 78, "{}", bound.stderr());
    let stderr = bound.stderr();
    assert!(
        stderr.contains("api.listen") && stderr.contains(&wildcard),
        "{stderr}"
    );

    let passed = || std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let mut refused = Spec::new(&dir).passing(passed().into()).spawn();
    assert_eq!(refused.exit_code(PATIENCE), 78, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("api.token_file"),
        "{}",
        refused.stderr()
    );
    let all = refused.notify().all();
    assert!(!all.iter().any(|m| m.has("READY=1")), "{all:#?}");

    let token = dir.join("token");
    std::fs::write(&token, "local-token\n").unwrap();
    let mut allowed = Spec::new(&dir)
        .env("GRADATA_API_TOKEN_FILE", &token)
        .passing(passed().into())
        .spawn();
    allowed.expect_ready();
    let warning = allowed.wait_for_log("listening beyond loopback", PATIENCE);
    assert!(
        warning.contains("WARN") && warning.contains("0.0.0.0"),
        "{warning}"
    );
    stop_cleanly(&mut allowed);
}

/// `/health` has every documented field, with the right types and values.
#[test]
fn health_reports_the_documented_fields() {
    const ROWS: usize = 5;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, ROWS);
    let server = FakeIngest::replying(Reply::ok());
    let mut daemon = Spec::new(&dir).syncing_to(&server.url("/ingest")).spawn();
    daemon.expect_ready();

    // The worker's first pass after READY=1 shows `sending` for a moment even with nothing to send;
    // wait for it to settle.
    let deadline = Instant::now() + PATIENCE;
    let (status, health) = loop {
        let (status, health) = daemon::get_health(daemon.addr());
        if health["sync"]["state"] != "sending" || Instant::now() >= deadline {
            break (status, health);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"), "{health}");
    assert!(
        health["uptime_seconds"].as_f64().is_some_and(|s| s >= 0.0),
        "{health}"
    );
    assert_eq!(health["data_dir"], dir.display().to_string(), "{health}");
    let queue = &health["queue"];
    assert_eq!(queue["pending"], 0, "{health}");
    assert_eq!(queue["dead"], 0, "{health}");
    assert_eq!(queue["synced"], ROWS, "{health}");
    assert!(
        queue
            .as_object()
            .is_some_and(|q| q.contains_key("oldest_pending_age_seconds")),
        "{health}"
    );
    assert!(queue["oldest_pending_age_seconds"].is_null(), "{health}");
    let sync = &health["sync"];
    assert_eq!(sync["state"], "idle", "{health}");
    assert!(
        sync["last_success_at"].is_string() || sync["last_success_at"].is_number(),
        "{health}"
    );
    assert!(
        sync.as_object()
            .is_some_and(|s| s.contains_key("last_error")),
        "{health}"
    );
    assert!(sync["last_error"].is_null(), "{health}");
    assert_eq!(
        health["writes"],
        serde_json::json!({"refused": false}),
        "{health}"
    );

    stop_cleanly(&mut daemon);

    // With rows waiting (sync disabled) the oldest one's age is a number of seconds.
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, ROWS);
    let mut daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    let (_, health) = daemon::get_health(daemon.addr());
    assert_eq!(health["queue"]["pending"], ROWS, "{health}");
    assert!(
        health["queue"]["oldest_pending_age_seconds"]
            .as_f64()
            .is_some_and(|age| age >= 0.0),
        "{health}"
    );
    assert_eq!(health["sync"]["state"], "disabled", "{health}");
    assert!(health["sync"]["last_success_at"].is_null(), "{health}");
    stop_cleanly(&mut daemon);
}

/// Polls `GET /health` on `addr` until it answers, failing if `child` exits first.
fn health_once_up(
    addr: std::net::SocketAddr,
    child: &mut std::process::Child,
) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match daemon::try_get_health(addr) {
            Ok(response) => {
                assert_eq!(response.status, 200, "{response:?}");
                return response.json();
            }
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "/health never answered on {addr}: {err}"
                );
                assert!(child.try_wait().unwrap().is_none(), "the service exited");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The socket unit passes two listening sockets (the plugin's port and the dashboard's): both
/// are adopted and served.
#[test]
fn every_passed_socket_is_served() {
    use command_fds::{CommandFdExt, FdMapping};
    use std::os::fd::AsFd;
    let (_guard, dir) = support::temp_dir();
    let plugin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dashboard = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addresses = [
        plugin.local_addr().unwrap(),
        dashboard.local_addr().unwrap(),
    ];
    let mut command = support::gradata(&dir);
    command
        .args(["--log-format", "text", "serve"])
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "plugin:dashboard")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .fd_mappings(vec![
            FdMapping {
                parent_fd: plugin.as_fd().try_clone_to_owned().unwrap(),
                child_fd: 3,
            },
            FdMapping {
                parent_fd: dashboard.as_fd().try_clone_to_owned().unwrap(),
                child_fd: 4,
            },
        ])
        .unwrap();
    let mut child = command.spawn().unwrap();
    drop(command);
    // The test's own copies would let the kernel hand connections to nobody once the service
    // exits; the service holds its copies.
    drop((plugin, dashboard));
    for addr in addresses {
        let health = health_once_up(addr, &mut child);
        assert_eq!(health["status"], "ok", "{addr}: {health}");
    }
    support::run(std::process::Command::new("kill").arg(child.id().to_string()));
    assert!(child.wait().unwrap().success());
}

/// Reads the pid file at `path` once it exists (it is written just after `READY=1`).
fn pid_file_once_written(path: &std::path::Path) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{} is not JSON ({err}): {text:?}", path.display()));
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `gradata serve` writes `<data_dir>/daemon.pid` once ready, with the original's fields and the
/// passed socket's port, and removes it at a clean stop.
#[test]
fn serve_writes_the_pid_file_and_removes_it_at_a_clean_stop() {
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    let path = dir.join("daemon.pid");
    let pid_file = pid_file_once_written(&path);
    assert_eq!(pid_file["port"], daemon.addr().port(), "{pid_file}");
    assert_eq!(pid_file["pid"], daemon.pid(), "{pid_file}");
    assert_eq!(
        pid_file["brain_dir"],
        dir.display().to_string(),
        "{pid_file}"
    );
    assert_eq!(
        pid_file["sdk_version"],
        env!("CARGO_PKG_VERSION"),
        "{pid_file}"
    );
    let started_at = pid_file["started_at"].as_str().unwrap();
    assert!(
        started_at.ends_with("+00:00")
            && started_at.len() == "2026-12-07T17:00:09.123456+00:00".len(),
        "{started_at}"
    );
    stop_cleanly(&mut daemon);
    assert!(!path.exists(), "the pid file outlived a clean stop");
}

/// The original daemon's command line: `gradata daemon --brain-dir DIR --port N --pid-file F`
/// serves DIR on 127.0.0.1:N and writes F. A crash (SIGKILL) leaves the pid file behind, stale;
/// the next start replaces it.
#[test]
fn the_original_command_line_serves_the_brain() {
    let (_guard, dir) = support::temp_dir();
    let pid_path = dir.join("run").join("gradata.pid");
    std::fs::create_dir(dir.join("run")).unwrap();
    let brain = dir.join("brain");
    std::fs::create_dir(&brain).unwrap();
    let start = || {
        let port = daemon::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gradata"))
            .env_clear()
            .env("HOME", &dir)
            .env("GRADATA_CONFIG", "")
            .env("GRADATA_SYNC_API_KEY_FILE", dir.join("no-such-key"))
            .args(["daemon", "--brain-dir"])
            .arg(&brain)
            .args(["--port", &port.to_string(), "--pid-file"])
            .arg(&pid_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (port, child)
    };
    let (port, mut first) = start();
    let health = health_once_up(([127, 0, 0, 1], port).into(), &mut first);
    assert_eq!(health["data_dir"], brain.display().to_string(), "{health}");
    assert!(brain.join("system.db").exists());
    let pid_file = pid_file_once_written(&pid_path);
    assert_eq!(pid_file["port"], port, "{pid_file}");
    assert_eq!(pid_file["pid"], first.id(), "{pid_file}");
    assert_eq!(
        pid_file["brain_dir"],
        brain.display().to_string(),
        "{pid_file}"
    );
    assert!(
        !brain.join("daemon.pid").exists(),
        "--pid-file was not used"
    );

    first.kill().unwrap();
    first.wait().unwrap();
    let stale = pid_file_once_written(&pid_path);
    assert_eq!(stale["pid"], first.id(), "a crash removed the pid file");

    let (port, mut second) = start();
    health_once_up(([127, 0, 0, 1], port).into(), &mut second);
    let deadline = Instant::now() + PATIENCE;
    while pid_file_once_written(&pid_path)["pid"] != second.id() {
        assert!(
            Instant::now() < deadline,
            "the stale pid file was never replaced"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pid_file_once_written(&pid_path)["port"], port);
    support::run(std::process::Command::new("kill").arg(second.id().to_string()));
    assert!(second.wait().unwrap().success());
    assert!(!pid_path.exists(), "the pid file outlived a clean stop");
}

/// The environment of a shell set up for the Python daemon and the plugin starts the service
/// without a single unknown-variable warning.
#[test]
fn the_originals_environment_gets_no_warning() {
    let (_guard, dir) = support::temp_dir();
    let mut spec = Spec::new(&dir);
    for name in gradata::config::OTHER_VARIABLES {
        spec = spec.env(name, "1");
    }
    for (name, _) in gradata::config::IGNORED_VARIABLES {
        spec = spec.env(name, "1");
    }
    let mut daemon = spec
        .env("GRADATA_DAEMON_PORT", "7342")
        .env("GRADATA_DAEMON_HOST", "127.0.0.1")
        .env(
            "GRADATA_BRAIN_DIR",
            dir.join("ignored-as-data-dir-is-given"),
        )
        .env("GRADATA_HOME", dir.join("home"))
        .env("GRADATA_API_KEY", "")
        .env("GRADATA_API_KEY_FILE", "")
        .env("GRADATA_CONFIG", "")
        .spawn();
    daemon.expect_ready();
    stop_cleanly(&mut daemon);
    let stderr = daemon.stderr();
    assert!(!stderr.contains("unknown environment variable"), "{stderr}");
    // Sanity: the same start with a misspelt variable does warn.
    let mut warned = Spec::new(&dir).env("GRADATA_DAEMON_PROT", "1").spawn();
    warned.expect_ready();
    stop_cleanly(&mut warned);
    assert!(
        warned.stderr().contains("unknown environment variable"),
        "{}",
        warned.stderr()
    );
}

/// Local use, without an API key: `/health` stays `ok` with sync `disabled` however old the
/// pending rows grow, and the outbox holds at most `sync.max_pending_rows_without_key` of them;
/// with a key the same service takes more.
#[test]
fn local_use_without_a_key_is_healthy_and_bounded() {
    let event = |n: usize| serde_json::json!({"kind": "event", "event_id": format!("local-{n}"), "data": {}});
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir)
        .env("GRADATA_API_DEGRADED_AFTER_SECS", "1")
        .env("GRADATA_SYNC_MAX_PENDING_ROWS_WITHOUT_KEY", "3")
        .spawn();
    daemon.expect_ready();
    for n in 0..3 {
        let response = daemon::post_json(daemon.addr(), "/v1/events", &event(n));
        assert_eq!(response.status, 200, "{response:?}");
    }
    let refused = daemon::post_json(daemon.addr(), "/v1/events", &event(3));
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(pending(&dir), 3);
    // The refusal marks /health degraded until a write is accepted; what matters here is the age.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, health) = daemon::get_health(daemon.addr());
        assert_eq!(status, 200, "{health}");
        assert_eq!(health["sync"]["state"], "disabled", "{health}");
        if health["queue"]["oldest_pending_age_seconds"].as_f64() >= Some(2.0) {
            assert_eq!(health["writes"]["refused"], true, "{health}");
            break;
        }
        assert!(Instant::now() < deadline, "{health}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_cleanly(&mut daemon);

    // Without a refusal in the way, an old row leaves /health ok.
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir)
        .env("GRADATA_API_DEGRADED_AFTER_SECS", "1")
        .spawn();
    daemon.expect_ready();
    assert_eq!(
        daemon::post_json(daemon.addr(), "/v1/events", &event(0)).status,
        200
    );
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, health) = daemon::get_health(daemon.addr());
        assert_eq!(health["status"], "ok", "{health}");
        assert_eq!(health["sync"]["state"], "disabled", "{health}");
        if health["queue"]["oldest_pending_age_seconds"].as_f64() >= Some(2.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{health}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_cleanly(&mut daemon);

    // With a key (to an ingest that answers 500, so rows stay pending) the bound is lifted.
    let server = FakeIngest::replying(Reply::status(500));
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir)
        .syncing_to(&server.url("/ingest"))
        .env("GRADATA_SYNC_MAX_PENDING_ROWS_WITHOUT_KEY", "3")
        .spawn();
    daemon.expect_ready();
    for n in 0..5 {
        let response = daemon::post_json(daemon.addr(), "/v1/events", &event(n));
        assert_eq!(response.status, 200, "{response:?}");
    }
    stop_cleanly(&mut daemon);
}

/// A user's instance (what the user unit runs: `XDG_RUNTIME_DIR` set, no key configured) sends
/// with the key the Python SDK keeps in `~/.gradata/key`, and with the user unit's
/// `GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS=1` it is ready within the plugin's 3 s session-start
/// timeout even when the ingest API hangs.
#[test]
fn a_users_instance_uses_the_sdks_key_and_a_short_startup_drain() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 20);
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".gradata")).unwrap();
    std::fs::write(home.join(".gradata/key"), "gk_live_from_home\n").unwrap();
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_secs(20)));
    let daemon = Spec::new(&dir)
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &dir)
        .env("GRADATA_CLOUD_INGEST_URL", server.url("/ingest"))
        .env("GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS", "1")
        .spawn();
    let ready = daemon.expect_ready();
    let took = ready.last().unwrap().at - daemon.spawned();
    assert!(took < Duration::from_secs(3), "READY=1 after {took:?}");
    let deadline = Instant::now() + PATIENCE;
    while server.count() == 0 {
        assert!(Instant::now() < deadline, "nothing was sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    let authorization = server.received()[0]
        .headers
        .get("authorization")
        .map(|value| value.to_str().unwrap().to_owned());
    assert_eq!(authorization.as_deref(), Some("Bearer gk_live_from_home"));
}
