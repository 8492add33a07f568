//! The bounds of one drain: its row budget, its time budget against a slow or hanging server,
//! cancellation, and a large original database drained byte for byte.

use super::*;

/// The row budget is respected exactly.
#[tokio::test]
async fn the_drain_stops_at_its_row_budget() {
    let (_guard, _dir, store, server) = fixture(230, Reply::ok()).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(
        &engine,
        Trigger::Startup,
        bounded(120, Duration::from_secs(30)),
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
        bounded(3200, Duration::from_millis(300)),
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
    let budget = bounded(3200, Duration::from_secs(1));
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
