//! Bad input and full resources: every refusal is a clear JSON error that writes nothing, and the
//! service keeps serving; a full queue or disk keeps what it has and recovers.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Service, closed, committed, ok};
use crate::support::daemon::{self, PATIENCE, Response, chunked, get, post_bytes, request};
use crate::support::{self, FakeIngest, Reply};

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

    let correction = format!(
        r#"{{"old_string":"{}","new_string":"b"}}"#,
        "a".repeat(4000)
    );
    let chunked_header = vec![("Transfer-Encoding", "chunked")];
    let too_large = [
        (
            "4 KiB with Content-Length",
            "/v1/events",
            vec![],
            big.clone(),
        ),
        (
            "4 KiB chunked",
            "/v1/events",
            chunked_header.clone(),
            chunked(&big, 512),
        ),
        (
            "4 KiB chunked correction",
            "/correct",
            chunked_header,
            chunked(correction.as_bytes(), 100),
        ),
    ];
    for (what, path, headers, body) in too_large {
        let response = post_bytes(addr, path, &headers, &body);
        service.expect_refused(what, &response, 413, "body_too_large", 0);
    }

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
    daemon::wait_until_read(addr, &slow, "the partial body");
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
