//! Liveness as systemd and clients see it: the watchdog is fed while healthy and starves when the
//! worker wedges, `/health` reports its documented fields, and local use without a key stays
//! healthy and bounded.

use std::time::{Duration, Instant};

use super::{pending, stop_cleanly};
use crate::support::daemon::{self, PATIENCE, Spec, prepare};
use crate::support::{self, FakeIngest, Reply};

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
