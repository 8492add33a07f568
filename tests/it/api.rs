//! The local HTTP API of the real `gradata serve` (docs/api.md), over plain TCP: every route, every
//! documented error, the Host/Origin/token guards, the queue limits, and the two promises behind a
//! 2xx: the rows are committed (a separate SQLite connection sees them at once) and the sync worker
//! is woken.
//!
//! Every write is checked in the database afterwards with `support::rows`; every refused request
//! is checked to have written nothing and to leave the service answering. Waits are for
//! conditions, with `PATIENCE` only as a guard against a hang.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::support::daemon::{
    self, Daemon, PATIENCE, Response, Spec, chunked, get, post_bytes, post_json, request,
    request_bytes,
};
use crate::support::{self, FakeIngest, Reply, Row};

mod body_room;
mod mutated;

/// The `brain_id` every test service stamps on its payloads.
const BRAIN: &str = "brain-api-test";

/// A running service on a fresh data directory.
struct Service {
    daemon: Daemon,
    dir: PathBuf,
    _guard: tempfile::TempDir,
}

impl Service {
    /// Starts `gradata serve` (sync disabled unless `configure` enables it) and waits for
    /// `READY=1`.
    fn start(configure: impl FnOnce(Spec) -> Spec) -> Service {
        let (guard, dir) = support::temp_dir();
        let daemon = configure(Spec::new(&dir).env("GRADATA_BRAIN_ID", BRAIN)).spawn();
        daemon.expect_ready();
        Service {
            daemon,
            dir,
            _guard: guard,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.daemon.addr()
    }

    fn rows(&self) -> Vec<Row> {
        support::rows(&self.dir)
    }

    /// Asserts that SQLite's integrity check passes on the outbox (after the service stopped).
    fn assert_database_intact(&self) {
        let integrity: String =
            rusqlite::Connection::open(self.dir.join(gradata::store::DATABASE_FILE))
                .unwrap()
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap();
        assert_eq!(integrity, "ok");
    }

    /// A new service on the same data directory, once the first has stopped; ready when returned.
    fn start_again(&self) -> Daemon {
        let daemon = Spec::new(&self.dir).env("GRADATA_BRAIN_ID", BRAIN).spawn();
        daemon.expect_ready();
        daemon
    }

    fn post(&self, path: &str, body: &Value) -> Response {
        post_json(self.addr(), path, body)
    }

    fn get(&self, path: &str) -> Response {
        get(self.addr(), path)
    }

    /// `/health` says `degraded` because writes are being refused: `refused` of them so far, the
    /// latest for a reason containing `reason`, with `pending` rows kept.
    fn expect_writes_refused(&self, pending: usize, refused: u64, reason: &str) {
        let health = self.health();
        assert_eq!(health["queue"]["pending"], pending, "{health}");
        assert_eq!(health["status"], "degraded", "{health}");
        assert_eq!(health["writes"]["refused"], true, "{health}");
        assert_eq!(health["writes"]["refused_count"], refused, "{health}");
        assert!(
            health["writes"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(reason)),
            "{health}"
        );
    }

    /// `/health` answers 200; returns its body.
    fn health(&self) -> Value {
        let response = self.get("/health");
        assert_eq!(
            response.status,
            200,
            "{response:?}\nstderr:\n{}",
            self.daemon.stderr()
        );
        response.json()
    }

    /// A refused request: `status`, a JSON body with `code` and a message, no row written (the
    /// table still holds `rows_before` rows), and the service still answers `/health`.
    fn expect_refused(
        &self,
        what: &str,
        response: &Response,
        status: u16,
        code: &str,
        rows_before: usize,
    ) {
        assert_eq!(response.status, status, "{what}: {response:?}");
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "{what}: not JSON: {response:?}"
        );
        let body = response.json();
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: no reason given: {body}"
        );
        assert_eq!(
            self.rows().len(),
            rows_before,
            "{what}: a refused request wrote rows"
        );
        self.health();
    }

    /// Polls `/health` until `pred` holds; returns that body.
    fn wait_for_health(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let health = self.health();
            if pred(&health) {
                return health;
            }
            assert!(
                Instant::now() < deadline,
                "/health never showed {what} within {PATIENCE:?}; last: {health}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the database until `pred` holds for the rows; returns them.
    fn wait_for_rows(&self, what: &str, pred: impl Fn(&[Row]) -> bool) -> Vec<Row> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let rows = self.rows();
            if pred(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "the rows never showed {what} within {PATIENCE:?}: {rows:#?}\nstderr:\n{}",
                self.daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The service is still running and never panicked.
    fn assert_alive(&mut self) {
        assert!(
            self.daemon.wait(Duration::ZERO).is_none(),
            "the service exited; stderr:\n{}",
            self.daemon.stderr()
        );
        let stderr = self.daemon.stderr();
        assert!(!stderr.contains("panicked"), "a panic:\n{stderr}");
    }
}

/// A 2xx, with a JSON body.
fn ok(what: &str, response: &Response) -> Value {
    assert_eq!(response.status, 200, "{what}: {response:?}");
    response.json()
}

/// The row holding `event_id`, read by a separate connection right after the 2xx: committed.
fn committed(rows: &[Row], event_id: &str) -> Row {
    let found: Vec<&Row> = rows
        .iter()
        .filter(|r| r.event_id.as_deref() == Some(event_id))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "event {event_id} is not committed exactly once: {rows:#?}"
    );
    found[0].clone()
}

fn payload(row: &Row) -> Value {
    serde_json::from_str(&row.payload_json).unwrap()
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// An RFC 3339 timestamp within a minute of now.
fn assert_recent_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    let at = humantime::parse_rfc3339(text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
    let now = SystemTime::now();
    let skew = now.duration_since(at).unwrap_or_else(|err| err.duration());
    assert!(skew < Duration::from_secs(60), "{text} is not now");
}

/// `POST /correct`: captured with the category of the file and the severity of the edit, the
/// stored payload has exactly the documented shape, a client `event_id` is kept, and identical
/// strings answer `no change` and store nothing.
#[test]
fn correct_captures_category_severity_and_the_documented_payload() {
    let service = Service::start(|spec| spec);
    let base = "The quick brown fox jumps over the lazy dog near the river bank today.";
    let cases = [
        (
            "src/main.rs",
            "The quick brown fox jumps over the lazy dog near the river bank today!",
            "CODE",
            "trivial",
        ),
        (
            "notes.md",
            "The quick brown cat jumps over the lazy dog near the river bank today.",
            "CONTENT",
            "minor",
        ),
        (
            "config/app.yaml",
            "The quick brown cat leaps over a sleepy dog near the river bank today.",
            "CONFIG",
            "moderate",
        ),
        (
            "site.css",
            "A slow red cat walks under the lazy dog near the old bridge tonight.",
            "FRONTEND",
            "major",
        ),
        (
            "Makefile",
            "Completely different sentence.",
            "GENERAL",
            "rewrite",
        ),
    ];
    for (n, (file, new, category, severity)) in cases.into_iter().enumerate() {
        let session = format!("s{n}");
        let response = service.post(
            "/correct",
            &json!({"old_string": base, "new_string": new, "file_path": file, "session_id": session}),
        );
        let answer = ok(file, &response);
        assert_eq!(answer["captured"], true, "{answer}");
        assert_eq!(answer["queued"], true, "{answer}");
        assert_eq!(answer["category"], category, "{file}: {answer}");
        // The answer gives the brain's severity; the payload (below) keeps the cloud's.
        assert!(
            gradata::brain::severity::Severity::from_name(answer["severity"].as_str().unwrap())
                .is_some(),
            "not the brain's scale: {answer}"
        );
        let event_id = answer["event_id"].as_str().unwrap();
        assert_eq!(event_id.len(), 26, "not a ULID: {event_id}");

        let row = committed(&service.rows(), event_id);
        assert_eq!(row.kind, "correction");
        assert_eq!((row.synced_at, row.dead_at), (None, None), "{row:?}");
        let stored = payload(&row);
        assert_eq!(
            keys(&stored),
            ["brain_id", "correction", "event_id"],
            "{stored}"
        );
        assert_eq!(stored["brain_id"], BRAIN);
        assert_eq!(stored["event_id"], event_id);
        let correction = &stored["correction"];
        assert_eq!(
            keys(correction),
            [
                "category",
                "file_path",
                "new_string",
                "old_string",
                "session_id",
                "severity",
                "timestamp"
            ],
            "{correction}"
        );
        assert_eq!(correction["old_string"], base);
        assert_eq!(correction["new_string"], new);
        assert_eq!(correction["file_path"], file);
        assert_eq!(correction["session_id"], session);
        assert_eq!(correction["category"], category);
        assert_eq!(correction["severity"], severity);
        assert_recent_timestamp(&correction["timestamp"]);
    }

    // A large file (measured off the runtime's workers): one line edited is trivial, every line
    // replaced is a rewrite, and the stored texts are the ones sent.
    let large: String = (0..1_000)
        .map(|i| {
            format!(
                "    let value_{i} = compute(input_{}, {});\n",
                i % 97,
                i % 13
            )
        })
        .collect();
    let one_line = large.replacen("compute(input_5,", "evaluate(input_5,", 1);
    let replaced = "Ünïcödé prose, nothing like the code above.\n".repeat(1_000);
    for (new, severity) in [(&one_line, "trivial"), (&replaced, "rewrite")] {
        let response = service.post(
            "/correct",
            &json!({"old_string": large, "new_string": new, "file_path": "big.rs", "session_id": "s"}),
        );
        let answer = ok("large edit", &response);
        let stored = payload(&committed(
            &service.rows(),
            answer["event_id"].as_str().unwrap(),
        ));
        assert_eq!(stored["correction"]["severity"], severity, "{stored}");
        assert_eq!(stored["correction"]["old_string"], large.as_str());
        assert_eq!(stored["correction"]["new_string"], new.as_str());
    }

    // Only the required fields, and a client id: kept; optional strings stored empty.
    let response = service.post(
        "/correct",
        &json!({"old_string": "teh cat", "new_string": "the cat", "event_id": "client-correction-1"}),
    );
    let answer = ok("minimal", &response);
    assert_eq!(answer["event_id"], "client-correction-1", "{answer}");
    assert_eq!(answer["category"], "GENERAL", "{answer}");
    let stored = payload(&committed(&service.rows(), "client-correction-1"));
    assert_eq!(stored["correction"]["file_path"], "");
    assert_eq!(stored["correction"]["session_id"], "");

    // Identical strings: the original's answer, nothing stored.
    let before = service.rows().len();
    let response = service.post(
        "/correct",
        &json!({"old_string": "same", "new_string": "same", "file_path": "a.py", "event_id": "nochange-1"}),
    );
    let answer = ok("no change", &response);
    assert_eq!(answer, json!({"captured": false, "error": "no change"}));
    assert_eq!(
        service.rows().len(),
        before,
        "a no-change correction was stored"
    );
}

/// `POST /log-event` and `POST /checkpoint` store `event` rows; a checkpoint's `event_type` is
/// `CHECKPOINT` and its reason defaults to `manual`.
#[test]
fn log_event_and_checkpoint_store_events() {
    let service = Service::start(|spec| spec);

    let response = service.post(
        "/log-event",
        &json!({"event_type": "tool_use", "data": {"tool": "grep", "n": [1, 2]}, "session_id": "s1"}),
    );
    let answer = ok("log-event", &response);
    assert_eq!(answer["logged"], true, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap();
    let row = committed(&service.rows(), event_id);
    assert_eq!(row.kind, "event");
    let stored = payload(&row);
    assert_eq!(keys(&stored), ["brain_id", "event", "event_id"], "{stored}");
    assert_eq!(stored["brain_id"], BRAIN);
    let event = &stored["event"];
    assert_eq!(
        keys(event),
        ["data", "event_type", "session_id", "timestamp"],
        "{event}"
    );
    assert_eq!(event["event_type"], "tool_use");
    assert_eq!(event["data"], json!({"tool": "grep", "n": [1, 2]}));
    assert_eq!(event["session_id"], "s1");
    assert_recent_timestamp(&event["timestamp"]);

    // `data` is optional.
    let answer = ok(
        "log-event without data",
        &service.post(
            "/log-event",
            &json!({"event_type": "ping", "event_id": "log-2"}),
        ),
    );
    assert_eq!(answer["event_id"], "log-2");
    assert_eq!(
        payload(&committed(&service.rows(), "log-2"))["event"]["data"],
        json!({})
    );

    let answer = ok(
        "checkpoint",
        &service.post(
            "/checkpoint",
            &json!({"session_id": "s1", "reason": "pre-compact"}),
        ),
    );
    assert_eq!(answer["checkpointed"], true, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap();
    let row = committed(&service.rows(), event_id);
    assert_eq!(row.kind, "event");
    let event = &payload(&row)["event"];
    assert_eq!(event["event_type"], "CHECKPOINT", "{event}");
    assert_eq!(event["session_id"], "s1");
    assert_eq!(event["reason"], "pre-compact");
    assert_recent_timestamp(&event["timestamp"]);

    let answer = ok(
        "checkpoint without reason",
        &service.post(
            "/checkpoint",
            &json!({"session_id": "s2", "event_id": "cp-2"}),
        ),
    );
    assert_eq!(answer["event_id"], "cp-2");
    assert_eq!(
        payload(&committed(&service.rows(), "cp-2"))["event"]["reason"],
        "manual"
    );
    assert_eq!(service.rows().len(), 4);
}

/// `POST /v1/events`: one object or an array; client ids kept; all or nothing (an array whose
/// third element is invalid stores none of it); an id already queued, or repeated in the same
/// array, is counted as a duplicate and stored once.
#[test]
fn v1_events_objects_arrays_all_or_nothing_and_duplicates() {
    let service = Service::start(|spec| spec);

    let answer = ok(
        "one object",
        &service.post(
            "/v1/events",
            &json!({"kind": "lesson", "data": {"text": "prefer rg"}}),
        ),
    );
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["duplicates"], 0, "{answer}");
    let id = answer["event_ids"][0].as_str().unwrap().to_owned();
    let row = committed(&service.rows(), &id);
    assert_eq!(row.kind, "lesson");
    assert_eq!(
        payload(&row),
        json!({"brain_id": BRAIN, "event_id": id, "lesson": {"text": "prefer rg"}})
    );

    let batch = json!([
        {"kind": "correction", "event_id": "e-1", "data": {"a": 1}},
        {"kind": "lesson", "event_id": "e-2", "data": {"b": "✓ ünïcode"}},
        {"kind": "event", "data": {}},
    ]);
    let answer = ok("array", &service.post("/v1/events", &batch));
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["duplicates"], 0, "{answer}");
    let ids: Vec<String> = answer["event_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(&ids[..2], ["e-1", "e-2"]);
    let rows = service.rows();
    for (id, kind) in ids.iter().zip(["correction", "lesson", "event"]) {
        let row = committed(&rows, id);
        assert_eq!(row.kind, kind);
        assert_eq!(payload(&row)["event_id"], id.as_str());
    }
    assert_eq!(
        payload(&committed(&rows, "e-2"))["lesson"]["b"],
        "✓ ünïcode"
    );
    assert_eq!(rows.len(), 4);

    // All or nothing: the third element is invalid, so the two valid ones are not stored either.
    for (what, bad) in [
        ("unknown kind", json!({"kind": "rumour", "data": {}})),
        ("missing data", json!({"kind": "event"})),
        ("data not an object", json!({"kind": "event", "data": [1]})),
        (
            "unknown field",
            json!({"kind": "event", "data": {}, "extra": 1}),
        ),
    ] {
        let body = json!([
            {"kind": "event", "event_id": "aon-1", "data": {}},
            {"kind": "event", "event_id": "aon-2", "data": {}},
            bad,
        ]);
        let response = service.post("/v1/events", &body);
        service.expect_refused(what, &response, 400, "invalid_request", 4);
        assert!(
            response.json()["error"]
                .as_str()
                .unwrap()
                .contains("event 2"),
            "{what}: the error does not name the event at fault: {response:?}"
        );
    }
    let response = service.post(
        "/v1/events",
        &json!([
            {"kind": "event", "event_id": "aon-1", "data": {}},
            {"kind": "event", "event_id": "aon-2", "data": {}},
            {"kind": "event", "event_id": "bad id", "data": {}},
        ]),
    );
    service.expect_refused("bad third event_id", &response, 400, "invalid_event_id", 4);

    // Duplicates: ids already queued are counted, not stored again; one new id is.
    let answer = ok(
        "duplicates",
        &service.post(
            "/v1/events",
            &json!([
                {"kind": "correction", "event_id": "e-1", "data": {"a": "changed"}},
                {"kind": "lesson", "event_id": "e-3", "data": {}},
                {"kind": "lesson", "event_id": "e-3", "data": {}},
            ]),
        ),
    );
    assert_eq!(answer["accepted"], 1, "{answer}");
    assert_eq!(answer["duplicates"], 2, "{answer}");
    assert_eq!(answer["event_ids"], json!(["e-1", "e-3", "e-3"]));
    let rows = service.rows();
    assert_eq!(rows.len(), 5);
    committed(&rows, "e-3");
    // The first copy wins: a duplicate never overwrites what was queued.
    assert_eq!(payload(&committed(&rows, "e-1"))["correction"]["a"], 1);

    let response = service.post("/v1/events", &json!([]));
    service.expect_refused("empty array", &response, 400, "invalid_request", 5);
}

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

/// The value of one series in Prometheus text (`name{labels}`), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map_or(0.0, |value| {
            value
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|err| panic!("{series}: {value:?}: {err}"))
        })
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

/// Bad input of every documented kind is refused with the documented status and code, writes
/// nothing, and the service keeps serving (the next `/health` is 200; no panic, no exit).
#[test]
fn bad_input_writes_nothing_and_the_service_keeps_serving() {
    let mut service = Service::start(|spec| spec);
    // One valid row, so "nothing written" is checked against a non-empty table.
    ok(
        "seed",
        &service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": "seed", "data": {}}),
        ),
    );
    let addr = service.addr();
    let raw = |path: &str, body: &[u8]| post_bytes(addr, path, &[], body);

    // Each case is checked for its status and code, an unchanged row count and a 200 from
    // `/health`; the requests go out first, each on its own connection, so every one of them is
    // also proof that the service kept serving after the one before.
    let cases: Vec<(&str, Response, u16, &str)> = vec![
        // Not JSON at all, or broken JSON.
        (
            "malformed JSON",
            raw("/correct", b"{\"old_string\": \"a\","),
            400,
            "malformed_json",
        ),
        (
            "not JSON",
            raw("/v1/events", b"hello"),
            400,
            "malformed_json",
        ),
        (
            "trailing garbage",
            raw("/log-event", br#"{"event_type":"x"} x"#),
            400,
            "malformed_json",
        ),
        // Valid JSON of the wrong shape.
        (
            "array where an object is expected",
            raw("/correct", b"[]"),
            400,
            "invalid_request",
        ),
        (
            "string where events are expected",
            raw("/v1/events", b"\"event\""),
            400,
            "invalid_request",
        ),
        (
            "missing new_string",
            raw("/correct", br#"{"old_string":"a"}"#),
            400,
            "invalid_request",
        ),
        (
            "empty event_type",
            raw("/log-event", br#"{"event_type":"  "}"#),
            400,
            "invalid_request",
        ),
        (
            "number for a string",
            raw("/correct", br#"{"old_string":5,"new_string":"b"}"#),
            400,
            "invalid_request",
        ),
        (
            "string for data",
            raw("/v1/events", br#"{"kind":"event","data":"x"}"#),
            400,
            "invalid_request",
        ),
        (
            "unknown kind",
            raw("/v1/events", br#"{"kind":"rumour","data":{}}"#),
            400,
            "invalid_request",
        ),
        // Invalid UTF-8 inside a string.
        (
            "invalid UTF-8",
            raw(
                "/correct",
                b"{\"old_string\":\"caf\xe9\",\"new_string\":\"cafe\"}",
            ),
            400,
            "invalid_utf8",
        ),
        (
            "invalid UTF-8 in events",
            raw(
                "/v1/events",
                b"{\"kind\":\"event\",\"data\":{\"x\":\"\xff\xfe\"}}",
            ),
            400,
            "invalid_utf8",
        ),
        (
            "a lone surrogate escape (no UTF-8 for it)",
            raw("/v1/events", br#"{"kind":"event","data":{"x":"\ud800"}}"#),
            400,
            "malformed_json",
        ),
        // Nesting far past serde_json's recursion limit: refused, no stack overflow.
        (
            "10,000 [",
            raw("/v1/events", "[".repeat(10_000).as_bytes()),
            400,
            "malformed_json",
        ),
        (
            "10,000 nested objects in a field",
            raw(
                "/log-event",
                format!(
                    "{{\"event_type\":\"x\",\"data\":{}",
                    "{\"a\":".repeat(10_000)
                )
                .as_bytes(),
            ),
            400,
            "malformed_json",
        ),
        (
            "10,000 ] closed",
            raw(
                "/v1/events",
                format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).as_bytes(),
            ),
            400,
            "malformed_json",
        ),
        // Content-Length shorter than the body: only the declared bytes are the body.
        (
            "Content-Length too short",
            post_bytes(
                addr,
                "/v1/events",
                &[("Content-Length", "12")],
                br#"{"kind":"event","data":{}}"#,
            ),
            400,
            "malformed_json",
        ),
        // Media type.
        (
            "text/plain",
            request(
                addr,
                "POST",
                "/v1/events",
                &[("Content-Type", "text/plain")],
                br#"{"kind":"event","data":{}}"#,
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "form",
            request(
                addr,
                "POST",
                "/correct",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                b"old_string=a&new_string=b",
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "no Content-Type",
            request(addr, "POST", "/log-event", &[], br#"{"event_type":"x"}"#),
            415,
            "unsupported_media_type",
        ),
        // Routes and methods.
        ("unknown route", get(addr, "/nope"), 404, "not_found"),
        (
            "unknown POST route",
            raw("/v1/nope", b"{}"),
            404,
            "not_found",
        ),
        (
            "GET a write route",
            get(addr, "/correct"),
            405,
            "method_not_allowed",
        ),
        (
            "POST /health",
            raw("/health", b"{}"),
            405,
            "method_not_allowed",
        ),
        (
            "DELETE /v1/events",
            request(addr, "DELETE", "/v1/events", &[], b""),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, response, status, code) in &cases {
        service.expect_refused(what, response, *status, code, 1);
    }
    let allow = get(addr, "/correct");
    assert!(
        allow.header("allow").is_some_and(|a| a.contains("POST")),
        "a 405 must say what is allowed: {allow:?}"
    );

    // Invalid client event ids, on both kinds of route.
    for bad in [
        "has space",
        "tab\there",
        "nul\u{0}",
        "ctl\u{1}",
        "é",
        "",
        &"x".repeat(200),
    ] {
        for (path, body) in [
            (
                "/v1/events",
                json!({"kind": "event", "event_id": bad, "data": {}}),
            ),
            (
                "/correct",
                json!({"old_string": "a", "new_string": "b", "event_id": bad}),
            ),
            ("/log-event", json!({"event_type": "x", "event_id": bad})),
            ("/checkpoint", json!({"session_id": "s", "event_id": bad})),
        ] {
            let response = service.post(path, &body);
            service.expect_refused(
                &format!("{path} event_id {bad:?}"),
                &response,
                400,
                "invalid_event_id",
                1,
            );
        }
    }
    // 128 printable characters is the longest accepted id.
    let longest = "y".repeat(128);
    ok(
        "128-character id",
        &service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": longest, "data": {}}),
        ),
    );
    committed(&service.rows(), &longest);
    service.assert_alive();
}

/// Body and batch limits: a body over `api.max_body_bytes` gets 413 whether it declares its
/// length or is chunked, one just under passes; more events than `api.max_events_per_request`
/// get 400.
#[test]
fn body_size_and_event_count_limits() {
    let mut service = Service::start(|spec| {
        spec.env("GRADATA_API_MAX_BODY_BYTES", "2048")
            .env("GRADATA_API_MAX_EVENTS_PER_REQUEST", "3")
    });
    let addr = service.addr();
    let event = |pad: usize| {
        json!({"kind": "event", "data": {"pad": "x".repeat(pad)}})
            .to_string()
            .into_bytes()
    };
    let big = event(4096);
    assert!(big.len() > 4096);

    let response = post_bytes(addr, "/v1/events", &[], &big);
    service.expect_refused(
        "4 KiB with Content-Length",
        &response,
        413,
        "body_too_large",
        0,
    );
    let response = post_bytes(
        addr,
        "/v1/events",
        &[("Transfer-Encoding", "chunked")],
        &chunked(&big, 512),
    );
    service.expect_refused("4 KiB chunked", &response, 413, "body_too_large", 0);
    let response = post_bytes(
        addr,
        "/correct",
        &[("Transfer-Encoding", "chunked")],
        &chunked(
            format!(
                r#"{{"old_string":"{}","new_string":"b"}}"#,
                "a".repeat(4000)
            )
            .as_bytes(),
            100,
        ),
    );
    service.expect_refused(
        "4 KiB chunked correction",
        &response,
        413,
        "body_too_large",
        0,
    );

    // Just under the limit, both ways.
    let fits = event(1900);
    assert!(fits.len() <= 2048);
    let answer = ok(
        "under the limit",
        &post_bytes(addr, "/v1/events", &[], &fits),
    );
    committed(&service.rows(), answer["event_ids"][0].as_str().unwrap());
    let answer = ok(
        "under the limit, chunked",
        &post_bytes(
            addr,
            "/v1/events",
            &[("Transfer-Encoding", "chunked")],
            &chunked(&fits, 300),
        ),
    );
    committed(&service.rows(), answer["event_ids"][0].as_str().unwrap());

    let four = json!([
        {"kind": "event", "data": {}},
        {"kind": "event", "data": {}},
        {"kind": "event", "data": {}},
        {"kind": "event", "data": {}},
    ]);
    let response = service.post("/v1/events", &four);
    service.expect_refused("4 events, limit 3", &response, 400, "too_many_events", 2);
    let answer = ok(
        "3 events",
        &service.post("/v1/events", &json!([four[0], four[1], four[2]])),
    );
    assert_eq!(answer["accepted"], 3);
    let rows = service.rows();
    assert_eq!(rows.len(), 5);
    for id in answer["event_ids"].as_array().unwrap() {
        committed(&rows, id.as_str().unwrap());
    }
    service.assert_alive();
}

/// A client that sends its head with `Content-Length: 100`, then 10 bytes, then stalls, gets a 408
/// (or a closed connection) after `api.body_timeout_secs`, writes nothing, and other clients are
/// served in the meantime. A client that gives up mid-body writes nothing either.
#[test]
fn a_stalled_body_times_out_while_others_are_served() {
    let mut service = Service::start(|spec| spec.env("GRADATA_API_BODY_TIMEOUT_SECS", "1"));
    let addr = service.addr();
    let head = "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    let mut slow = daemon::connect(addr);
    std::io::Write::write_all(&mut slow, head.as_bytes()).unwrap();
    std::io::Write::write_all(&mut slow, br#"{"kind":"e"#).unwrap();
    let client = slow.local_addr().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !daemon::server_has_read_everything(addr, client) {
        assert!(
            Instant::now() < deadline,
            "the service never read the partial body"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let stalled_at = Instant::now();

    // Meanwhile: a read and a write on other connections are answered, before the stalled one.
    service.health();
    let answer = ok(
        "a write while another client stalls",
        &service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": "meanwhile", "data": {}}),
        ),
    );
    assert_eq!(answer["accepted"], 1);
    committed(&service.rows(), "meanwhile");
    slow.set_nonblocking(true).unwrap();
    let mut probe = [0u8; 1];
    let unanswered =
        matches!(slow.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    assert!(
        unanswered,
        "the stalled request was answered before the others were served ({:?} after the stall)",
        stalled_at.elapsed()
    );
    slow.set_nonblocking(false).unwrap();

    match daemon::read_response(&mut slow) {
        Ok(response) => {
            assert_eq!(response.status, 408, "{response:?}");
            assert_eq!(response.json()["code"], "body_timeout", "{response:?}");
        }
        // Also allowed by the contract: the connection is closed (not merely silent).
        Err(err) => assert!(closed(&err), "stalled client: {err}"),
    }
    let waited = stalled_at.elapsed();
    assert!(
        waited < PATIENCE,
        "the stalled body was not timed out ({waited:?})"
    );
    assert_eq!(service.rows().len(), 1, "the stalled request wrote a row");

    // A client that sends half its body and closes its side.
    let mut quitter = daemon::connect(addr);
    std::io::Write::write_all(&mut quitter, head.as_bytes()).unwrap();
    std::io::Write::write_all(&mut quitter, br#"{"kind":"e"#).unwrap();
    quitter.shutdown(std::net::Shutdown::Write).unwrap();
    match daemon::read_response(&mut quitter) {
        Ok(response) => assert!(
            (400..500).contains(&response.status),
            "a truncated body was accepted: {response:?}"
        ),
        Err(err) => assert!(closed(&err), "truncated body: {err}"),
    }
    assert_eq!(service.rows().len(), 1, "a truncated body wrote a row");
    service.health();
    service.assert_alive();
}

/// A request that is not HTTP/1.1 (a garbled request line, a header that is not a header, a
/// `Content-Length` that is not a number, a head over the HTTP layer's limit) never reaches a
/// route: the HTTP layer answers a bare 400 or 431 and closes the connection. HTTP/2 is not
/// spoken at all. Nothing is written, and the service keeps serving.
#[test]
fn requests_that_are_not_http_get_a_bare_4xx_and_the_service_keeps_serving() {
    let service = Service::start(|spec| spec);
    let body = br#"{"kind":"event","event_id":"never","data":{}}"#;
    let long_header = format!("X-Long: {}", "a".repeat(500_000));
    let heads: [(&str, String, u16); 5] = [
        ("garbage", "GARBAGE".to_owned(), 400),
        (
            "an unknown HTTP version",
            "POST /v1/events HTTP/9.9\r\nHost: 127.0.0.1".to_owned(),
            400,
        ),
        (
            "a control character in a header",
            "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\u{1}b".to_owned(),
            400,
        ),
        (
            "a Content-Length that is not a number",
            "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: forty".to_owned(),
            400,
        ),
        (
            "a head of half a megabyte",
            format!("POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n{long_header}"),
            431,
        ),
    ];
    for (what, head, status) in heads {
        let mut raw = format!("{head}\r\nContent-Type: application/json\r\n\r\n").into_bytes();
        raw.extend_from_slice(body);
        let response = daemon::send_raw(service.addr(), &raw)
            .unwrap_or_else(|err| panic!("{what}: no answer: {err}"));
        assert_eq!(response.status, status, "{what}: {response:?}");
        assert_eq!(response.body, "", "{what}: {response:?}");
        assert_eq!(response.header("connection"), Some("close"), "{what}");
        assert_eq!(service.health()["status"], "ok", "after {what}");
    }
    // HTTP/2 with prior knowledge is not served at all: the connection is closed unanswered.
    let mut h2 = std::net::TcpStream::connect(service.addr()).unwrap();
    h2.set_read_timeout(Some(PATIENCE)).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut answer = Vec::new();
    h2.read_to_end(&mut answer).unwrap();
    assert!(answer.is_empty(), "HTTP/2 was answered: {answer:?}");
    assert_eq!(service.health()["status"], "ok", "after HTTP/2");
    assert!(service.rows().is_empty());
}

/// A client may shut down its sending side once its request is sent (HTTP/1.0 clients, shell
/// scripts piping into `nc -N`, some HTTP libraries). It still gets its answer: a write whose
/// connection closed before its 2xx was sent would leave the client retrying an event that was
/// stored. A connection shut down before any request is closed at once, not held until the header
/// deadline.
#[test]
fn a_client_that_shuts_down_its_sending_side_still_gets_its_answer() {
    let service = Service::start(|spec| spec.env("GRADATA_API_HEADER_TIMEOUT_SECS", "3600"));
    let addr = service.addr();
    let half_closed = |raw: &[u8]| -> Response {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(raw).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        daemon::read_response(&mut stream)
            .unwrap_or_else(|err| panic!("no answer to {:?}: {err}", String::from_utf8_lossy(raw)))
    };
    let body = br#"{"kind":"event","event_id":"half-closed","data":{}}"#;
    let write = half_closed(&request_bytes(
        addr,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        body,
    ));
    assert_eq!(ok("write", &write)["event_ids"], json!(["half-closed"]));
    committed(&service.rows(), "half-closed");
    let health = half_closed(&request_bytes(addr, "GET", "/health", &[], b""));
    assert_eq!(ok("health", &health)["status"], "ok");
    let http10 = half_closed(b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(ok("HTTP/1.0", &http10)["status"], "ok");
    // Cut off mid-body: the answer says so, and nothing is written.
    let cut = request_bytes(
        addr,
        "POST",
        "/v1/events",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", "500"),
        ],
        br#"{"kind":"event","event_id":"cut-off","#,
    );
    let cut = half_closed(&cut);
    assert_eq!(cut.status, 400, "{cut:?}");
    assert_eq!(cut.json()["code"], "body_read_failed", "{cut:?}");
    assert_eq!(service.rows().len(), 1);

    // Nothing sent at all: closed at once (the header deadline is an hour).
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(PATIENCE)).unwrap();
    idle.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    idle.read_to_end(&mut rest)
        .expect("the connection was held open after the client shut down its side");
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
}

/// A connection that has not sent a complete request head within `api.header_timeout_secs`,
/// counted from when it opened or from its last response, is closed: neither a client stalled
/// mid-header nor an idle keep-alive connection holds a socket forever. Not before the deadline,
/// though, and other clients are served meanwhile.
#[test]
fn stalled_headers_and_idle_connections_are_closed() {
    use std::io::{Read, Write};
    const DEADLINE: Duration = Duration::from_secs(2);
    let mut service = Service::start(|spec| spec.env("GRADATA_API_HEADER_TIMEOUT_SECS", "2"));
    let addr = service.addr();
    let mut stalled = daemon::connect(addr);
    stalled
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        .unwrap();
    let stalled_since = Instant::now();
    let mut idle = daemon::connect(addr);
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let response = daemon::read_response(&mut idle).unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let idle_since = Instant::now();

    ok(
        "a write meanwhile",
        &service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": "meanwhile", "data": {}}),
        ),
    );
    for (name, stream, since) in [
        ("stalled mid-header", &mut stalled, stalled_since),
        ("idle after a response", &mut idle, idle_since),
    ] {
        // `connect` sets a 60 s read timeout: a connection left open fails here as a timeout.
        let mut byte = [0u8; 1];
        match stream.read(&mut byte) {
            Ok(0) => {}
            Ok(_) => panic!("{name}: the service sent something instead of closing"),
            Err(err) => assert!(closed(&err), "{name}: not closed: {err}"),
        }
        let after = since.elapsed();
        assert!(
            after >= DEADLINE / 2,
            "{name}: closed after {after:?}, long before the {DEADLINE:?} deadline"
        );
    }
    let rows = service.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    service.health();
    service.assert_alive();
}

/// When the service has as many files open as it may (`LimitNOFILE`), new clients wait in the
/// listen queue: the journal says why, once, and when connections close the waiting client is
/// served and the journal says connections are accepted again. Nothing stops or spins.
#[test]
fn clients_past_the_open_files_limit_wait_until_connections_close() {
    use std::io::Write;
    const LIMIT: u64 = 64;
    let mut service = Service::start(|spec| spec.open_files_limit(LIMIT).json_logs());
    service.health();
    let addr = service.addr();
    // Each connection the service accepts takes a file; more than the limit cannot all fit.
    let held: Vec<_> = (0..LIMIT).map(|_| daemon::connect(addr)).collect();
    let line = service
        .daemon
        .wait_for_log("cannot accept connections", PATIENCE);
    assert!(line.contains("too many open files"), "{line}");

    let mut waiting = daemon::connect(addr);
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    drop(held);
    let response = daemon::read_response(&mut waiting).unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    let line = service
        .daemon
        .wait_for_log("connections are accepted again", PATIENCE);
    assert!(line.contains("failures"), "{line}");
    let stderr = service.daemon.stderr();
    assert_eq!(
        stderr.matches("cannot accept connections").count(),
        1,
        "one line for the episode, not one per attempt:\n{stderr}"
    );
    service.assert_alive();
}

/// Whether a failed read means the server closed the connection (rather than a read timeout).
fn closed(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        err.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// DNS-rebinding protection: a `Host` that is not loopback nor configured gets 403 and writes
/// nothing; `localhost:PORT` and loopback addresses pass; `api.allowed_hosts` adds names.
#[test]
fn host_header_must_be_loopback_or_allowed() {
    let service = Service::start(|spec| spec);
    let addr = service.addr();
    let port = addr.port();
    let event = br#"{"kind":"event","data":{}}"#;
    for host in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("gradata.internal:{port}"),
        format!("192.168.1.10:{port}"),
    ] {
        let response = request(addr, "GET", "/health", &[("Host", &host)], b"");
        service.expect_refused(&host, &response, 403, "host_not_allowed", 0);
        let response = post_bytes(addr, "/v1/events", &[("Host", &host)], event);
        service.expect_refused(&host, &response, 403, "host_not_allowed", 0);
        // An absolute-form target names the host that counts (RFC 9112 §3.2.2), whatever the
        // `Host` header (here the loopback address) says.
        let target = format!("http://{host}/v1/events");
        let response = post_bytes(addr, &target, &[], event);
        service.expect_refused(&target, &response, 403, "host_not_allowed", 0);
    }
    // Two Host headers, the first loopback: which one counts is ambiguous, so neither does.
    let response = post_bytes(
        addr,
        "/v1/events",
        &[("Host", "127.0.0.1"), ("Host", "evil.example")],
        event,
    );
    service.expect_refused("two Host headers", &response, 400, "invalid_request", 0);
    let mut written = 0;
    let target = format!("http://127.0.0.1:{port}/v1/events");
    ok(&target, &post_bytes(addr, &target, &[], event));
    written += 1;
    for host in [
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("LocalHost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let response = request(addr, "GET", "/health", &[("Host", &host)], b"");
        assert_eq!(response.status, 200, "{host}: {response:?}");
        let answer = ok(
            &host,
            &post_bytes(addr, "/v1/events", &[("Host", &host)], event),
        );
        written += 1;
        let rows = service.rows();
        assert_eq!(rows.len(), written);
        committed(&rows, answer["event_ids"][0].as_str().unwrap());
    }

    let service = Service::start(|spec| spec.env("GRADATA_API_ALLOWED_HOSTS", "gradata.internal"));
    let addr = service.addr();
    let host = format!("gradata.internal:{}", addr.port());
    let answer = ok(
        &host,
        &post_bytes(addr, "/v1/events", &[("Host", &host)], event),
    );
    committed(&service.rows(), answer["event_ids"][0].as_str().unwrap());
    let response = request(addr, "GET", "/health", &[("Host", "gradata.internal")], b"");
    assert_eq!(response.status, 200, "{response:?}");
    let response = request(addr, "GET", "/health", &[("Host", "other.internal")], b"");
    service.expect_refused("other.internal", &response, 403, "host_not_allowed", 1);
}

/// CORS: an allowed `Origin` is echoed (never `*`), a preflight asking for Private Network Access
/// gets it; any other origin is refused with 403, writes nothing, and its preflight is refused too.
#[test]
fn cors_allows_only_the_configured_origins() {
    let service = Service::start(|spec| spec);
    let addr = service.addr();
    let good = "https://app.gradata.ai";
    let evil = "https://evil.example";
    let event = br#"{"kind":"event","data":{}}"#;

    let response = post_bytes(addr, "/v1/events", &[("Origin", good)], event);
    let answer = ok("allowed origin", &response);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(good),
        "{response:?}"
    );
    assert!(
        response
            .header("vary")
            .is_some_and(|v| v.contains("Origin")),
        "{response:?}"
    );
    committed(&service.rows(), answer["event_ids"][0].as_str().unwrap());
    // An error for an allowed origin is readable by the page too.
    let response = post_bytes(addr, "/v1/events", &[("Origin", good)], b"{");
    assert_eq!(response.status, 400);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(good),
        "{response:?}"
    );
    let response = request(addr, "GET", "/health", &[("Origin", good)], b"");
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(good),
        "{response:?}"
    );
    // Two Origin headers, the first allowed: refused, as the second makes the first meaningless.
    let response = post_bytes(
        addr,
        "/v1/events",
        &[("Origin", good), ("Origin", evil)],
        event,
    );
    service.expect_refused(
        "two Origin headers",
        &response,
        403,
        "origin_not_allowed",
        1,
    );
    // Without an Origin there is no CORS header at all.
    let response = get(addr, "/health");
    assert_eq!(
        response.header("access-control-allow-origin"),
        None,
        "{response:?}"
    );

    let preflight = |origin: &str| {
        request(
            addr,
            "OPTIONS",
            "/sync",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
                ("Access-Control-Request-Private-Network", "true"),
            ],
            b"",
        )
    };
    let response = preflight(good);
    assert!(
        (200..300).contains(&response.status),
        "preflight refused: {response:?}"
    );
    assert_eq!(
        response.header("access-control-allow-origin"),
        Some(good),
        "{response:?}"
    );
    assert_eq!(
        response.header("access-control-allow-private-network"),
        Some("true"),
        "{response:?}"
    );
    assert!(
        response
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST")),
        "{response:?}"
    );
    assert!(
        response
            .header("access-control-allow-headers")
            .is_some_and(|h| h.to_ascii_lowercase().contains("content-type")),
        "{response:?}"
    );
    for (_, value) in &response.headers {
        assert_ne!(value, "*", "a wildcard CORS header: {response:?}");
    }
    assert_eq!(service.rows().len(), 1, "a preflight wrote a row");

    let response = post_bytes(addr, "/v1/events", &[("Origin", evil)], event);
    service.expect_refused("evil origin", &response, 403, "origin_not_allowed", 1);
    assert_eq!(
        response.header("access-control-allow-origin"),
        None,
        "{response:?}"
    );
    let response = post_bytes(
        addr,
        "/correct",
        &[("Origin", "null")],
        br#"{"old_string":"a","new_string":"b"}"#,
    );
    service.expect_refused("null origin", &response, 403, "origin_not_allowed", 1);
    let response = post_bytes(
        addr,
        "/v1/events",
        &[("Origin", "https://app.gradata.ai.evil.example")],
        event,
    );
    service.expect_refused("lookalike origin", &response, 403, "origin_not_allowed", 1);
    let response = preflight(evil);
    service.expect_refused("evil preflight", &response, 403, "origin_not_allowed", 1);
    assert_eq!(
        response.header("access-control-allow-private-network"),
        None,
        "{response:?}"
    );
}

/// With `api.token_file`, writes need `Authorization: Bearer <token>` (401 and nothing written
/// otherwise); reads such as `/health` do not.
#[test]
fn token_is_required_on_writes() {
    let token_dir = tempfile::tempdir().unwrap();
    let token_file = token_dir.path().join("token");
    std::fs::write(&token_file, "s3cret-Token\n").unwrap();
    let service = Service::start(|spec| spec.env("GRADATA_API_TOKEN_FILE", &token_file));
    let addr = service.addr();
    let event = br#"{"kind":"event","data":{}}"#;

    for (what, headers) in [
        ("no token", vec![]),
        (
            "wrong token",
            vec![("Authorization", "Bearer s3cret-token")],
        ),
        ("token prefix", vec![("Authorization", "Bearer s3cret")]),
        (
            "not bearer",
            vec![("Authorization", "Basic czNjcmV0LVRva2Vu")],
        ),
        ("bare token", vec![("Authorization", "s3cret-Token")]),
    ] {
        let response = post_bytes(addr, "/v1/events", &headers, event);
        service.expect_refused(what, &response, 401, "unauthorized", 0);
        let response = post_bytes(
            addr,
            "/correct",
            &headers,
            br#"{"old_string":"a","new_string":"b"}"#,
        );
        service.expect_refused(what, &response, 401, "unauthorized", 0);
        let response = request(addr, "POST", "/sync", &headers, b"");
        service.expect_refused(what, &response, 401, "unauthorized", 0);
    }

    // The scheme is case-insensitive (RFC 9110 §11.1); the token is not.
    let answer = ok(
        "lower-case scheme",
        &post_bytes(
            addr,
            "/v1/events",
            &[("Authorization", "bearer s3cret-Token")],
            event,
        ),
    );
    committed(&service.rows(), answer["event_ids"][0].as_str().unwrap());
    let auth = [("Authorization", "Bearer s3cret-Token")];
    let answer = ok(
        "with the token",
        &post_bytes(addr, "/v1/events", &auth, event),
    );
    committed(&service.rows(), answer["event_ids"][0].as_str().unwrap());
    let answer = ok(
        "correct with the token",
        &post_bytes(
            addr,
            "/correct",
            &auth,
            br#"{"old_string":"a","new_string":"b"}"#,
        ),
    );
    committed(&service.rows(), answer["event_id"].as_str().unwrap());

    // Reads need no token.
    let health = service.health();
    assert_eq!(health["queue"]["pending"], 3, "{health}");
    assert_eq!(service.get("/metrics").status, 200);
    assert_eq!(service.get("/v1/queue").status, 200);
}

/// With `store.max_pending_rows = 5` and sync disabled, writes past five pending rows get 503
/// `queue_full` with `Retry-After`, all or nothing, the five accepted rows stay, and `/health`
/// says `degraded` while writes are refused.
#[test]
fn a_full_queue_answers_503_and_keeps_what_it_has() {
    let service = Service::start(|spec| spec.env("GRADATA_STORE_MAX_PENDING_ROWS", "5"));
    let mut ids = Vec::new();
    for n in 0..4 {
        let id = format!("full-{n}");
        ok(
            &id,
            &service.post(
                "/v1/events",
                &json!({"kind": "event", "event_id": id, "data": {}}),
            ),
        );
        committed(&service.rows(), &id);
        ids.push(id);
    }
    // Two events with room for one: neither is stored.
    let response = service.post(
        "/v1/events",
        &json!([{"kind": "event", "data": {}}, {"kind": "event", "data": {}}]),
    );
    service.expect_refused("two events, room for one", &response, 503, "queue_full", 4);
    let answer = ok(
        "the fifth",
        &service.post(
            "/correct",
            &json!({"old_string": "a", "new_string": "b", "event_id": "full-4"}),
        ),
    );
    assert_eq!(answer["event_id"], "full-4");
    ids.push("full-4".to_owned());

    let response = service.post(
        "/v1/events",
        &json!({"kind": "event", "event_id": "full-5", "data": {}}),
    );
    service.expect_refused("/v1/events", &response, 503, "queue_full", 5);
    let retry_after = response
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {response:?}"));
    assert!(
        retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
        "{response:?}"
    );
    // The brain's own log is written whatever the outbox holds: these answer 200, not queued.
    // A correction still teaches the brain; only its copy for the cloud is refused.
    for (path, body, flag) in [
        (
            "/correct",
            json!({"old_string": "a", "new_string": "c"}),
            "captured",
        ),
        ("/log-event", json!({"event_type": "x"}), "logged"),
        ("/checkpoint", json!({"session_id": "s"}), "checkpointed"),
    ] {
        let answer = ok(path, &service.post(path, &body));
        assert_eq!(
            (&answer[flag], &answer["queued"]),
            (&json!(true), &json!(false)),
            "{answer}"
        );
    }
    let rows = service.rows();
    assert_eq!(rows.len(), 5);
    for id in &ids {
        let row = committed(&rows, id);
        assert_eq!((row.synced_at, row.dead_at), (None, None), "{row:?}");
    }
    // The fifth write ended the first episode; the refusal after it is the current one (the
    // brain's log being written, a correction learned included, is not an accepted outbox
    // write).
    service.expect_writes_refused(5, 1, "outbox is full");
}

/// A full queue that another process empties takes writes again at once: `gradata drain` from the
/// CLI delivers every row, and the next write is checked against a count of the table instead of
/// the service's own gauge, which still says "full". A queue that is really full still refuses.
#[test]
fn a_queue_emptied_by_another_process_takes_writes_again() {
    let service = Service::start(|spec| spec.env("GRADATA_STORE_MAX_PENDING_ROWS", "3"));
    let write = |id: &str| {
        service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": id, "data": {}}),
        )
    };
    for n in 0..3 {
        ok("filling", &write(&format!("before-{n}")));
    }
    service.expect_refused("full", &write("refused"), 503, "queue_full", 3);

    let ingest = FakeIngest::replying(Reply::ok());
    let mut drain = support::gradata(&service.dir);
    drain
        .env("GRADATA_API_KEY", "test-key")
        .arg("--ingest-url")
        .arg(ingest.url("/ingest"))
        .args(["drain", "--json"]);
    let (output, stdout, stderr) = support::run(&mut drain);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(ingest.count(), 3);

    for n in 0..3 {
        ok("after the drain", &write(&format!("after-{n}")));
    }
    service.expect_refused("full again", &write("refused-again"), 503, "queue_full", 6);
}

/// When the disk is full, every write gets 503 `disk_full` with `Retry-After` and writes nothing;
/// what was accepted before stays, reads keep working, `/health` says `degraded` with the reason,
/// and writes succeed again as soon as there is room, without a restart. The data directory is a
/// 1 MiB tmpfs, 700 KiB of it taken by a file that the test removes to make room.
///
/// The writes that must be refused are each larger than all the room the outbox's files have
/// (though within the body limit). One the size of those before may rightly be accepted after the
/// first refusal: once the checkpointer has copied the WAL into the database, SQLite starts the
/// WAL over in the space the file already has.
#[test]
fn a_full_disk_answers_503_keeps_what_it_has_and_recovers() {
    let service = Service::start(|spec| {
        spec.on_small_disk(support::SmallDisk {
            size: 1 << 20,
            filler: 700 << 10,
        })
        .json_logs()
    });
    let blob = "x".repeat(20_000);
    let mut accepted = Vec::new();
    let refused = loop {
        let id = format!("disk-{}", accepted.len());
        let response = service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": id, "data": {"blob": blob}}),
        );
        if response.status != 200 {
            break response;
        }
        accepted.push(id);
        assert!(accepted.len() < 50, "300 KiB never filled up");
    };
    assert!(
        !accepted.is_empty(),
        "the first write was refused: {refused:?}"
    );
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["code"], "disk_full", "{refused:?}");
    let too_big = "y".repeat(600 << 10);
    for (path, body) in [
        (
            "/v1/events",
            json!({"kind": "event", "event_id": "refused", "data": {"blob": too_big}}),
        ),
        (
            "/correct",
            json!({"old_string": "a", "new_string": too_big, "event_id": "refused"}),
        ),
        (
            "/log-event",
            json!({"event_type": "x", "data": {"blob": too_big}, "event_id": "refused"}),
        ),
    ] {
        let response = service.post(path, &body);
        assert_eq!(response.status, 503, "{path}: {response:?}");
        assert_eq!(response.json()["code"], "disk_full", "{path}: {response:?}");
        assert!(
            response
                .header("retry-after")
                .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)),
            "{path}: {response:?}"
        );
    }
    let pending = |service: &Service| -> Vec<String> {
        let queue = ok("queue", &service.get("/v1/queue?state=pending&limit=1000"));
        let mut ids: Vec<String> = queue["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["event_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let mut expected = accepted.clone();
    expected.sort();
    assert_eq!(pending(&service), expected, "after the refusals");
    service.expect_writes_refused(accepted.len(), 4, "full");

    let filler = format!(
        "/proc/{}/root{}/filler",
        service.daemon.pid(),
        service.dir.display()
    );
    std::fs::remove_file(&filler).unwrap();
    ok(
        "a write once there is room",
        &service.post(
            "/v1/events",
            &json!({"kind": "event", "event_id": "after-room", "data": {"blob": blob}}),
        ),
    );
    expected.push("after-room".to_owned());
    expected.sort();
    assert_eq!(pending(&service), expected, "after making room");
    let health = service.health();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["writes"], json!({"refused": false}), "{health}");

    // The journal says it once when it starts and once when it ends, not once per request.
    let stderr = service.daemon.stderr();
    let episode: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| {
            record["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("writes are"))
        })
        .collect();
    assert_eq!(episode.len(), 2, "{stderr}");
    assert_eq!(episode[0]["message"], "writes are refused", "{stderr}");
    assert_eq!(episode[0]["level"], "WARN", "{stderr}");
    assert!(
        episode[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("disk full")),
        "{stderr}"
    );
    assert_eq!(
        episode[1]["message"], "writes are accepted again",
        "{stderr}"
    );
    assert_eq!(episode[1]["refused"], 4, "{stderr}");
}

/// SIGKILL while clients are writing: every event whose `POST` was answered 2xx is in the outbox
/// afterwards, the database passes SQLite's integrity check, and the service starts again on it
/// with those rows pending. A 2xx sent before its commit, or a commit torn by the kill, fails this.
/// (The page cache outlives a killed process, so this does not show the WAL's fsync; that a group
/// is answered only after its fsync, and never after a failed one, is shown by the writer's unit
/// tests.)
#[test]
fn sigkill_under_write_load_keeps_every_acknowledged_event() {
    const CLIENTS: usize = 8;
    const BEFORE_KILL: usize = 400;
    let mut service = Service::start(|spec| spec);
    let addr = service.addr();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                let mut stream = daemon::connect(addr);
                // Until the kill breaks the connection: each answer is read before the next write.
                for n in 0.. {
                    let id = format!("kill-{client}-{n}");
                    let body = json!({"kind": "event", "event_id": id, "data": {"n": n}});
                    let raw = request_bytes(
                        addr,
                        "POST",
                        "/v1/events",
                        &[
                            ("Content-Type", "application/json"),
                            ("Connection", "keep-alive"),
                        ],
                        body.to_string().as_bytes(),
                    );
                    if std::io::Write::write_all(&mut stream, &raw).is_err() {
                        return;
                    }
                    match daemon::read_response(&mut stream) {
                        Ok(response) if response.status == 200 => {
                            acknowledged.lock().unwrap().push(id);
                        }
                        Ok(response) => panic!("{id}: refused under load: {response:?}"),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while acknowledged.lock().unwrap().len() < BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "fewer than {BEFORE_KILL} writes acknowledged within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    service.daemon.signal("KILL");
    assert!(
        service.daemon.wait(PATIENCE).is_some(),
        "still running after SIGKILL"
    );
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= BEFORE_KILL);

    service.assert_database_intact();
    let stored: std::collections::HashSet<String> = service
        .rows()
        .into_iter()
        .filter_map(|row| row.event_id)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are not in the outbox, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    // At most one request per client was in flight at the kill: committed, but never answered.
    assert!(
        stored.len() <= acknowledged.len() + CLIENTS,
        "{} rows for {} acknowledged writes from {CLIENTS} clients",
        stored.len(),
        acknowledged.len()
    );

    let restarted = service.start_again();
    let (status, health) = daemon::get_health(restarted.addr());
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["queue"]["pending"], stored.len(), "{health}");
}

/// A failing disk (every fsync of the WAL fails with `EIO`, through a preloaded library): the write
/// that waited for the failed fsync is answered 503 `flush_failed` with `Retry-After`, and the
/// service stops with a failure that names the cause, so that systemd (`Restart=on-failure`)
/// starts it again: only a fresh open recovers the WAL from what the disk really holds. Started
/// again on the same directory, every event acknowledged before the fault is there, the database
/// is intact, and writes are acknowledged again.
#[test]
fn a_failed_fsync_stops_the_service_and_a_restart_recovers() {
    let (_marker_dir, marker_dir) = support::temp_dir();
    let marker = marker_dir.join("disk-fails");
    let mut service = Service::start(|spec| {
        spec.env("LD_PRELOAD", support::fsync_fault_library())
            .env("FSYNC_FAULT_MARKER", &marker)
            .json_logs()
    });
    let acknowledged: Vec<String> = (0..3).map(|n| format!("before-{n}")).collect();
    for id in &acknowledged {
        ok(
            id,
            &service.post(
                "/v1/events",
                &json!({"kind": "event", "event_id": id, "data": {}}),
            ),
        );
    }

    std::fs::write(&marker, b"").unwrap();
    let refused = service.post(
        "/v1/events",
        &json!({"kind": "event", "event_id": "during", "data": {}}),
    );
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["code"], "flush_failed", "{refused:?}");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    let code = service.daemon.exit_code(PATIENCE);
    assert!(
        code != 0 && code != 78,
        "exit code {code}: systemd restarts on-failure, but not after 0 or 78"
    );
    let notified = service.daemon.notify().texts().join("\n");
    assert!(notified.contains("ERRNO=5"), "{notified}");
    assert!(
        notified.contains("STATUS=failed: the outbox could not be made durable: fsync of the WAL"),
        "{notified}"
    );
    // Said in the journal when writes are first refused, and as the reason for stopping. The
    // failed fsync is the syncer's, or SQLite's own when the commit started the WAL over.
    let stderr = service.daemon.stderr();
    let reasons = stderr
        .lines()
        .filter(|line| line.contains("the outbox could not be made durable: fsync of the WAL"))
        .count();
    assert!(reasons >= 2, "the cause is not logged:\n{stderr}");
    assert!(
        stderr.contains("stopping, so that the service starts again on what the disk holds"),
        "{stderr}"
    );

    std::fs::remove_file(&marker).unwrap();
    service.assert_database_intact();
    let restarted = service.start_again();
    let stored: Vec<String> = service
        .rows()
        .into_iter()
        .filter_map(|row| row.event_id)
        .collect();
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "{id} was acknowledged but is lost: {stored:?}"
        );
    }
    // The refused write may be there (committed, never acknowledged): a retry deduplicates.
    assert!(stored.len() <= acknowledged.len() + 1, "{stored:?}");
    let (status, health) = daemon::get_health(restarted.addr());
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["queue"]["pending"], stored.len(), "{health}");
    let retried = request(
        restarted.addr(),
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        json!({"kind": "event", "event_id": "during", "data": {}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(retried.status, 200, "{retried:?}");
}

/// A write wakes the sync worker: with a healthy ingest server, one `POST /v1/events` is delivered
/// at once. An idle worker with nothing waiting has no timer at all (it only beats its heartbeat),
/// so without the wake-up the row would never be sent; the guard below is only against a hang.
#[test]
fn a_write_wakes_the_worker() {
    let server = FakeIngest::replying(Reply::ok());
    let service = Service::start(|spec| spec.syncing_to(&server.url("/ingest")));
    // The worker's first pass after READY=1 finds nothing (the drain histogram counts it); from
    // then on it is idle, and a row that arrives now is only seen if the write wakes it.
    let deadline = Instant::now() + PATIENCE;
    while metric(
        &service.get("/metrics").body,
        r#"gradata_drain_duration_seconds_count{trigger="worker"}"#,
    ) < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the worker never made its first pass"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    service.wait_for_health("sync idle", |h| h["sync"]["state"] == "idle");
    assert_eq!(server.count(), 0);

    let response = service.post(
        "/v1/events",
        &json!({"kind": "correction", "event_id": "wake-1", "data": {"x": 1}}),
    );
    let acknowledged = Instant::now();
    ok("event", &response);
    committed(&service.rows(), "wake-1");
    assert!(server.wait_for(1, PATIENCE), "the row was never sent");
    let delivered_after = acknowledged.elapsed();
    let rows = service.wait_for_rows("wake-1 synced", |rows| {
        rows.len() == 1 && rows[0].synced_at.is_some()
    });
    eprintln!("acknowledged → received by the ingest server: {delivered_after:?}");

    let received = server.received();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].path, "/ingest");
    assert_eq!(received[0].idempotency_key().as_deref(), Some("wake-1"));
    let body: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body, payload(&rows[0]));
    assert_eq!(body["event_id"], "wake-1");
    // Still exactly one request once the worker has settled.
    service.wait_for_health("sync idle again", |h| h["sync"]["state"] == "idle");
    assert_eq!(server.count(), 1, "the event was posted more than once");
}

/// The request helper's framing is what the tests think it is (a guard for the raw-HTTP tests).
#[test]
fn raw_requests_are_framed_as_intended() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bytes = request_bytes(
        addr,
        "POST",
        "/x",
        &[("Transfer-Encoding", "chunked")],
        b"0\r\n\r\n",
    );
    let text = String::from_utf8(bytes).unwrap();
    assert!(
        !text.to_ascii_lowercase().contains("content-length"),
        "{text}"
    );
    assert!(text.contains("Host: 127.0.0.1:9\r\n"), "{text}");
    assert_eq!(
        chunked(b"abcde", 2),
        b"2\r\nab\r\n2\r\ncd\r\n1\r\ne\r\n0\r\n\r\n"
    );
}
