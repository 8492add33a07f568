//! The operator's routes: `POST /sync`, the dead-row listing and retry, `/metrics`, and `/health`
//! when sync is paused or rows are old.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Service, committed, metric, ok, payload};
use crate::support::daemon::{self, PATIENCE, Spec, request, request_bytes};
use crate::support::{FakeIngest, Reply, Row};

/// A service syncing to a fake server whose first answer is a 500 and every later one `then`,
/// with one row (`event_id`) whose first attempt has failed: it waits on a backoff timer of up to
/// two hours (base 3600 s, full jitter), so the worker will not try it again during a test, and
/// only an explicit drain delivers it. Returns the server, the service and the rows.
fn one_row_on_a_long_backoff(
    event_id: &str,
    then: Reply,
    configure: impl FnOnce(Spec) -> Spec,
) -> (FakeIngest, Service, Vec<Row>) {
    let server = FakeIngest::with_plan(move |_, n| {
        if n == 0 {
            Reply::status(500)
        } else {
            then.clone()
        }
    });
    let service = Service::start(|spec| {
        configure(
            spec.syncing_to(&server.url("/ingest"))
                .env("GRADATA_SYNC_BACKOFF_BASE_SECS", "3600")
                .env("GRADATA_SYNC_BACKOFF_CAP_SECS", "86400"),
        )
    });
    let answer = ok(
        "event",
        &service.post(
            "/v1/events",
            &json!({"kind": "lesson", "event_id": event_id, "data": {}}),
        ),
    );
    assert_eq!(answer["accepted"], 1);
    committed(&service.rows(), event_id);
    let rows = service.wait_for_rows("the failed attempt settled", |rows| {
        rows.len() == 1 && rows[0].attempts == Some(1) && rows[0].lease_until.is_none()
    });
    assert!(rows[0].next_attempt_at.is_some(), "{rows:?}");
    assert_eq!(rows[0].synced_at, None);
    (server, service, rows)
}

/// `POST /sync` runs a drain now, including rows waiting on a backoff timer, and reports it.
#[test]
fn sync_now_delivers_rows_waiting_on_a_backoff_timer() {
    let (server, service, _) = one_row_on_a_long_backoff("sync-1", Reply::ok(), |spec| spec);

    let response = request(service.addr(), "POST", "/sync", &[], b"");
    let report = ok("/sync", &response);
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["delivered"], 1, "{report}");
    assert_eq!(report["pushed"], 1, "the original's name for it: {report}");
    assert!(report["last_sync_at"].is_string(), "{report}");
    assert_eq!(report["dead"], 0, "{report}");
    assert_eq!(report["pending"], 0, "{report}");
    assert_eq!(report["state"], "idle", "{report}");
    assert!(report["last_success_at"].is_number(), "{report}");
    assert!(report["reason"].is_string(), "{report}");
    for key in ["retried", "last_error", "detail"] {
        assert!(report.get(key).is_some(), "no {key}: {report}");
    }

    let row = committed(&service.rows(), "sync-1");
    assert!(row.synced_at.is_some(), "{row:?}");
    let received = server.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[1].idempotency_key().as_deref(), Some("sync-1"));
    let body: Value = serde_json::from_slice(&received[1].body).unwrap();
    assert_eq!(body, payload(&row), "the stored payload is posted verbatim");

    // The failed attempt counts as a retry and the second one as delivered.
    let metrics = service.get("/metrics").body;
    for (outcome, count) in [("retried", 1.0), ("delivered", 1.0), ("dead", 0.0)] {
        let series = format!(r#"gradata_deliveries_total{{outcome="{outcome}"}}"#);
        assert_eq!(metric(&metrics, &series), count, "{series}:\n{metrics}");
    }
}

/// `POST /sync` answers in the original daemon's shape too: `pushed` and `last_sync_at` when it
/// did what it could; a 502 with `status: "error"` and why, when rows are left because the ingest
/// does not take them or because no API key is configured (then in the original's words).
#[test]
fn sync_now_answers_502_when_rows_are_left_behind_a_down_ingest_or_without_a_key() {
    let event = json!({"kind": "lesson", "data": {}});
    let server = FakeIngest::replying(Reply::status(503));
    let service = Service::start(|spec| spec.syncing_to(&server.url("/ingest")));
    ok("event", &service.post("/v1/events", &event));
    // The worker's own attempt first, so that the sync's drain finds the row free.
    service.wait_for_rows("the worker's attempt settled", |rows| {
        rows[0].attempts == Some(1) && rows[0].lease_until.is_none()
    });
    let response = request(service.addr(), "POST", "/sync", &[], b"");
    assert_eq!(response.status, 502, "{response:?}");
    let body = response.json();
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(body["pushed"], 0, "{body}");
    assert_eq!(body["pending"], 1, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|error| error.contains("503")),
        "{body}"
    );
    assert_eq!(body.get("last_sync_at"), None, "{body}");

    let service = Service::start(|spec| spec);
    let nothing_pending = ok("sync", &request(service.addr(), "POST", "/sync", &[], b""));
    assert_eq!(nothing_pending["status"], "ok", "{nothing_pending}");
    assert_eq!(nothing_pending["pushed"], 0, "{nothing_pending}");
    assert!(
        nothing_pending["last_sync_at"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z')),
        "{nothing_pending}"
    );
    ok("event", &service.post("/v1/events", &event));
    let response = request(service.addr(), "POST", "/sync", &[], b"");
    assert_eq!(response.status, 502, "{response:?}");
    let body = response.json();
    assert_eq!(body["status"], "error", "{body}");
    assert_eq!(
        body["error"],
        "No Gradata API key found. Set GRADATA_API_KEY, write ~/.gradata/key, or pass --api-key to the daemon.",
        "{body}"
    );
    assert_eq!(service.rows().len(), 1, "the row stays queued");
}

/// The drain `POST /sync` starts is finished even if its client resets the connection while it
/// runs (a closed dashboard tab, a killed `curl`): its rows are delivered and settled, not left
/// leased until the lease runs out.
#[test]
fn sync_now_finishes_its_drain_when_the_client_resets() {
    // The manual drain's attempt is answered 200 after a pause long enough for the client to
    // reset first; the long lease keeps an abandoned claim from expiring during the test.
    let (server, service, _) = one_row_on_a_long_backoff(
        "reset-1",
        Reply::ok().delay(Duration::from_secs(3)),
        |spec| spec.env("GRADATA_SYNC_LEASE_SECS", "3600"),
    );

    let client = std::net::TcpStream::connect(service.addr()).unwrap();
    (&client)
        .write_all(&request_bytes(service.addr(), "POST", "/sync", &[], b""))
        .unwrap();
    assert!(
        server.wait_for(2, PATIENCE),
        "the manual drain never posted"
    );
    // Closing with a zero linger sends a reset instead of a FIN.
    socket2::SockRef::from(&client)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(client);

    let rows = service.wait_for_rows("the manual drain settled the row", |rows| {
        rows[0].synced_at.is_some()
    });
    assert_eq!(rows[0].lease_until, None, "{rows:?}");
    assert_eq!(server.received().len(), 2);
    assert_eq!(service.health()["status"], "ok");
}

/// Rows the cloud refuses (422) are dead: `GET /v1/queue?state=dead` lists them with the reason,
/// and `POST /v1/queue/retry` (by id, then all dead) makes them pending again and wakes the worker.
#[test]
fn dead_rows_are_listed_and_retried() {
    let accept = Arc::new(AtomicBool::new(false));
    let server = {
        let accept = accept.clone();
        FakeIngest::with_plan(move |_, _| {
            if accept.load(Ordering::SeqCst) {
                Reply::ok()
            } else {
                Reply::status(422).body(r#"{"detail":"schema mismatch"}"#)
            }
        })
    };
    let service = Service::start(|spec| spec.syncing_to(&server.url("/ingest")));
    ok(
        "events",
        &service.post(
            "/v1/events",
            &json!([
                {"kind": "correction", "event_id": "dead-1", "data": {}},
                {"kind": "lesson", "event_id": "dead-2", "data": {}},
            ]),
        ),
    );
    service.wait_for_rows("both rows dead", |rows| {
        rows.len() == 2 && rows.iter().all(|r| r.dead_at.is_some())
    });

    let listed = ok("list dead", &service.get("/v1/queue?state=dead"));
    assert_eq!(listed["state"], "dead", "{listed}");
    let entries = listed["rows"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{listed}");
    for (entry, (id, kind)) in entries
        .iter()
        .zip([("dead-1", "correction"), ("dead-2", "lesson")])
    {
        assert_eq!(entry["event_id"], id, "{entry}");
        assert_eq!(entry["kind"], kind, "{entry}");
        assert_eq!(entry["state"], "dead", "{entry}");
        assert_eq!(entry["attempts"], 1, "{entry}");
        assert_eq!(entry["last_status"], 422, "{entry}");
        assert!(
            entry["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("422")),
            "{entry}"
        );
        assert!(entry["id"].is_i64(), "{entry}");
        assert!(
            entry["payload_bytes"].as_i64().is_some_and(|b| b > 0),
            "{entry}"
        );
        assert!(entry["enqueued_at"].is_number(), "{entry}");
    }
    let pending = ok("list pending", &service.get("/v1/queue?state=pending"));
    assert_eq!(pending["rows"], json!([]), "{pending}");
    let limited = ok("limit", &service.get("/v1/queue?state=dead&limit=1"));
    assert_eq!(limited["rows"].as_array().unwrap().len(), 1, "{limited}");

    // Bad queries and retry bodies are refused as JSON and change nothing.
    for path in ["/v1/queue?state=lost", "/v1/queue?limit=many"] {
        let response = service.get(path);
        service.expect_refused(path, &response, 400, "invalid_request", 2);
    }
    for body in [
        json!({}),
        json!({"ids": [1], "all_dead": true}),
        json!({"ids": "1"}),
    ] {
        let response = service.post("/v1/queue/retry", &body);
        service.expect_refused(&body.to_string(), &response, 400, "invalid_request", 2);
    }
    assert_eq!(
        service
            .rows()
            .iter()
            .filter(|r| r.dead_at.is_some())
            .count(),
        2
    );

    accept.store(true, Ordering::SeqCst);
    let first = entries[0]["id"].as_i64().unwrap();
    let answer = ok(
        "retry by id",
        &service.post("/v1/queue/retry", &json!({"ids": [first]})),
    );
    assert_eq!(answer, json!({"retried": 1}));
    service.wait_for_rows("dead-1 synced", |rows| {
        committed(rows, "dead-1").synced_at.is_some()
    });
    assert!(committed(&service.rows(), "dead-2").dead_at.is_some());

    let answer = ok(
        "retry all dead",
        &service.post("/v1/queue/retry", &json!({"all_dead": true})),
    );
    assert_eq!(answer, json!({"retried": 1}));
    service.wait_for_rows("dead-2 synced", |rows| {
        committed(rows, "dead-2").synced_at.is_some()
    });
    let synced = ok("list synced", &service.get("/v1/queue?state=synced"));
    assert_eq!(synced["rows"].as_array().unwrap().len(), 2, "{synced}");
    let dead = ok("list dead", &service.get("/v1/queue?state=dead"));
    assert_eq!(dead["rows"], json!([]), "{dead}");
    // Two refused attempts, then one delivery each; the delivery counters say so.
    assert_eq!(server.count(), 4);
    let metrics = service.get("/metrics").body;
    assert_eq!(
        metric(&metrics, r#"gradata_deliveries_total{outcome="dead"}"#),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, r#"gradata_deliveries_total{outcome="delivered"}"#),
        2.0,
        "{metrics}"
    );
}

/// `GET /metrics` is OpenMetrics text, every series named `gradata_…`, and the counters and queue
/// gauges move after writes.
#[test]
fn metrics_are_prometheus_text_and_move_after_writes() {
    let service = Service::start(|spec| spec);
    let scrape = |service: &Service| {
        let response = service.get("/metrics");
        assert_eq!(response.status, 200, "{response:?}");
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "{response:?}"
        );
        let text = response.body;
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("gradata_"), "unprefixed series {line:?}");
        }
        text
    };
    let before = scrape(&service);
    // Families without a sample yet (deliveries, with sync disabled) are left out of a scrape.
    let names = [
        "gradata_queue_rows",
        "gradata_queue_pending_bytes",
        "gradata_queue_oldest_pending_age_seconds",
        "gradata_events_accepted",
        "gradata_drain_duration_seconds",
        "gradata_http_requests",
        "gradata_sync_state",
        "gradata_http_body_bytes_held",
        "gradata_http_body_room_bytes",
    ];
    assert_eq!(
        metric(&before, r#"gradata_sync_state{state="disabled"}"#),
        1.0,
        "{before}"
    );
    assert_eq!(
        metric(&before, r#"gradata_queue_rows{state="pending"}"#),
        0.0,
        "{before}"
    );

    ok(
        "lessons",
        &service.post(
            "/v1/events",
            &json!([{"kind": "lesson", "data": {}}, {"kind": "lesson", "data": {}}]),
        ),
    );
    ok(
        "correction",
        &service.post("/correct", &json!({"old_string": "a", "new_string": "b"})),
    );
    let refused = service.post("/v1/events", &json!({"kind": "nope", "data": {}}));
    assert_eq!(refused.status, 400);
    assert_eq!(service.rows().len(), 3);

    let after = scrape(&service);
    for name in names {
        assert!(
            after.contains(&format!("# TYPE {name} ")),
            "no {name}:\n{after}"
        );
    }
    let delta = |series: &str| metric(&after, series) - metric(&before, series);
    assert_eq!(
        delta(r#"gradata_events_accepted_total{kind="lesson"}"#),
        2.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"gradata_events_accepted_total{kind="correction"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"gradata_http_requests_total{route="/v1/events",status="200"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"gradata_http_requests_total{route="/v1/events",status="400"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(r#"gradata_http_requests_total{route="/correct",status="200"}"#),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, r#"gradata_queue_rows{state="pending"}"#),
        3.0,
        "{after}"
    );
    assert!(
        metric(&after, "gradata_queue_pending_bytes") > 0.0,
        "{after}"
    );
}

/// `/health` says `degraded` while sync is paused for an operator: a 401 (`auth_failed`) or a
/// 404 (`config_error`, a wrong ingest URL). The row stays pending, and `/metrics` shows the state
/// and the refused delivery.
#[test]
fn health_is_degraded_while_sync_is_paused_for_an_operator() {
    for (status, state) in [(401, "auth_failed"), (404, "config_error")] {
        let server = FakeIngest::replying(Reply::status(status));
        let service = Service::start(|spec| spec.syncing_to(&server.url("/ingest")));
        let before = service.health();
        assert_eq!(before["status"], "ok", "{status}: {before}");
        let event_id = format!("paused-{status}");
        ok(
            "event",
            &service.post(
                "/v1/events",
                &json!({"kind": "event", "event_id": event_id, "data": {}}),
            ),
        );
        let health =
            service.wait_for_health(&format!("sync {state}"), |h| h["sync"]["state"] == state);
        assert_eq!(health["status"], "degraded", "{status}: {health}");
        assert_eq!(health["queue"]["pending"], 1, "{status}: {health}");
        assert!(
            health["sync"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains(&status.to_string())),
            "{status}: {health}"
        );
        let row = committed(&service.rows(), &event_id);
        assert_eq!((row.synced_at, row.dead_at), (None, None), "{row:?}");
        assert!(server.count() >= 1);

        let metrics = service.get("/metrics").body;
        let paused = format!(r#"gradata_sync_state{{state="{state}"}}"#);
        assert_eq!(metric(&metrics, &paused), 1.0, "{metrics}");
        assert_eq!(
            metric(&metrics, r#"gradata_sync_state{state="idle"}"#),
            0.0,
            "{metrics}"
        );
        assert!(
            metric(&metrics, r#"gradata_deliveries_total{outcome="refused"}"#) >= 1.0,
            "{metrics}"
        );
        assert_eq!(
            metric(&metrics, r#"gradata_deliveries_total{outcome="dead"}"#),
            0.0,
            "{metrics}"
        );
    }
}

/// `/health` says `degraded` once the oldest pending row is older than
/// `api.degraded_after_secs` while sync is enabled (an ingest nobody listens on, so the row stays).
/// With sync disabled the age says nothing: see `daemon::local_use_without_a_key_is_healthy`.
#[test]
fn health_is_degraded_when_the_oldest_pending_row_is_too_old() {
    let unreachable = format!("http://127.0.0.1:{}/ingest", daemon::free_port());
    let service = Service::start(|spec| {
        spec.env("GRADATA_API_DEGRADED_AFTER_SECS", "1")
            .syncing_to(&unreachable)
    });
    ok(
        "event",
        &service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": "old-1", "data": {}}),
        ),
    );
    committed(&service.rows(), "old-1");
    let fresh = service.health();
    // Only meaningful while the row is younger than a second (ages are reported floored).
    if fresh["queue"]["oldest_pending_age_seconds"] == 0.0 {
        assert_eq!(fresh["status"], "ok", "{fresh}");
    }
    let health = service.wait_for_health("degraded", |h| h["status"] == "degraded");
    assert!(
        health["queue"]["oldest_pending_age_seconds"]
            .as_f64()
            .is_some_and(|age| age >= 1.0),
        "{health}"
    );
    assert_ne!(health["sync"]["state"], "disabled", "{health}");
    assert_eq!(health["queue"]["pending"], 1, "{health}");
}

/// A row whose times no row can have (written as `1e300` by another program) leaves `/health` and
/// `/metrics` answering.
#[test]
fn impossible_times_in_a_row_leave_health_and_metrics_answering() {
    let service = Service::start(|spec| spec);
    ok(
        "event",
        &service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": "far-1", "data": {}}),
        ),
    );
    rusqlite::Connection::open(service.dir.join(gradata::store::DATABASE_FILE))
        .unwrap()
        .execute_batch("UPDATE sync_queue SET enqueued_at = 1e300, next_attempt_at = 1e300")
        .unwrap();
    let health = service.health();
    assert_eq!(health["queue"]["pending"], 1, "{health}");
    let metrics = service.get("/metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
}
