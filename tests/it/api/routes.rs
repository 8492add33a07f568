//! The capture routes (`/correct`, `/log-event`, `/checkpoint`, `/v1/events`): what a 2xx stores,
//! committed before the answer, and the worker woken after it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BRAIN, Service, assert_recent_timestamp, committed, keys, metric, ok, payload};
use crate::support::daemon::PATIENCE;
use crate::support::{FakeIngest, Reply};

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
