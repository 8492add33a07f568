//! Connections: bytes that are not HTTP, half-closed clients, stalled headers and idle
//! connections, more clients than open files, and the test client's own framing.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Service, closed, committed, ok};
use crate::support::daemon::{self, PATIENCE, Response, chunked, request_bytes};

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
