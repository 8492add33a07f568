//! The memory request bodies may take at once (`api.max_buffered_body_bytes`), against the real
//! binary: bodies past it are not read until room comes back, and are served in turn; a body that
//! finds no room within the body timeout gets 503 unread; nothing accepted is lost either way.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

use serde_json::{Value, json};

use super::{Service, committed, metric, ok};
use crate::support::daemon::{self, PATIENCE, Response, request_bytes};

/// The largest body in these tests, and room for two of them.
const MAX_BODY: usize = 64 * 1024;
const ROOM: usize = 2 * MAX_BODY;

/// A `POST /v1/events` of one event with id `id`, padded to just under [`MAX_BODY`] (well over the
/// HTTP layer's first read of a request, so most of it stays in the socket until it is read).
fn padded_event(id: &str) -> Vec<u8> {
    let body =
        |pad: usize| json!({"kind": "event", "event_id": id, "data": {"pad": "x".repeat(pad)}});
    let overhead = body(0).to_string().len();
    let bytes = body(MAX_BODY - 100 - overhead).to_string().into_bytes();
    assert!(bytes.len() < MAX_BODY && bytes.len() > MAX_BODY - 200);
    bytes
}

/// The whole request for `body`, kept alive so that the answer comes on the same connection.
fn raw_post(addr: SocketAddr, body: &[u8]) -> Vec<u8> {
    request_bytes(
        addr,
        "POST",
        "/v1/events",
        &[
            ("Content-Type", "application/json"),
            ("Connection", "close"),
        ],
        body,
    )
}

/// Sends `bytes` on a new connection and returns it, unanswered.
fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = daemon::connect(addr);
    stream.write_all(bytes).unwrap();
    stream
}

fn answer(stream: &mut TcpStream, what: &str) -> Response {
    daemon::read_response(stream).unwrap_or_else(|err| panic!("{what}: {err}"))
}

fn start() -> Service {
    Service::start(|spec| {
        spec.env("GRADATA_API_MAX_BODY_BYTES", MAX_BODY.to_string())
            .env("GRADATA_API_MAX_BUFFERED_BODY_BYTES", ROOM.to_string())
    })
}

/// Two bodies in flight fill the room; a third, sent whole, is not read while they hold it, and
/// is read and stored as soon as one of them finishes. Requests without a body go on meanwhile.
#[test]
fn a_body_past_the_room_waits_unread_and_is_served_in_turn() {
    let mut service = start();
    let addr = service.addr();
    // Two requests that send all but the last byte of their bodies: each holds its room.
    let holders: Vec<(TcpStream, Vec<u8>, String)> = ["holder-0", "holder-1"]
        .into_iter()
        .map(|id| {
            let request = raw_post(addr, &padded_event(id));
            let stream = send(addr, &request[..request.len() - 1]);
            daemon::wait_until_read(addr, &stream, "a partial body that had room");
            (stream, request, id.to_owned())
        })
        .collect();

    let mut waiting = send(addr, &raw_post(addr, &padded_event("waiting")));
    // The service answers other requests meanwhile, and still has not read the waiting body.
    service.health();
    let metrics = service.get("/metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert_eq!(
        metric(&metrics.body, "gradata_http_body_bytes_held"),
        ROOM as f64
    );
    assert_eq!(
        metric(&metrics.body, "gradata_http_body_room_bytes"),
        ROOM as f64
    );
    assert!(
        !daemon::server_has_read_everything(addr, waiting.local_addr().unwrap()),
        "the service read a body with no room for it"
    );
    assert!(service.rows().is_empty());

    // One holder finishes: it is stored, and the waiting body gets its room.
    let mut holders = holders.into_iter();
    let (mut first, request, id) = holders.next().unwrap();
    first.write_all(&request[request.len() - 1..]).unwrap();
    ok("the first holder", &answer(&mut first, "first holder"));
    let waited = answer(&mut waiting, "the waiting body");
    let stored: Value = ok("the waiting body", &waited).clone();
    assert_eq!(stored["event_ids"][0], "waiting");
    let (mut second, request, second_id) = holders.next().unwrap();
    second.write_all(&request[request.len() - 1..]).unwrap();
    ok("the second holder", &answer(&mut second, "second holder"));

    let metrics = service.get("/metrics");
    assert_eq!(metric(&metrics.body, "gradata_http_body_bytes_held"), 0.0);
    let rows = service.rows();
    for id in [id.as_str(), "waiting", second_id.as_str()] {
        committed(&rows, id);
    }
    assert_eq!(rows.len(), 3);
    service.assert_alive();
}

/// Bodies already read hold their room while the outbox is slow (here, locked by another process):
/// a body that finds no room within the body timeout gets 503 `body_memory_full` with
/// `Retry-After`, unread and unwritten, and the journal says so once. When the outbox is free the
/// held requests are stored, the room comes back, and the journal says that too.
#[test]
fn a_body_that_finds_no_room_in_time_gets_503_and_nothing_is_lost() {
    let mut service = Service::start(|spec| {
        spec.env("GRADATA_API_MAX_BODY_BYTES", MAX_BODY.to_string())
            .env("GRADATA_API_MAX_BUFFERED_BODY_BYTES", ROOM.to_string())
            .env("GRADATA_API_BODY_TIMEOUT_SECS", "0.5")
            .env("GRADATA_STORE_BUSY_TIMEOUT_SECS", "60")
    });
    let addr = service.addr();
    // Another process holds the outbox's write lock: the writer waits for it.
    let lock = rusqlite::Connection::open(service.dir.join(gradata::store::DATABASE_FILE)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    let mut held: Vec<TcpStream> = ["held-0", "held-1"]
        .into_iter()
        .map(|id| {
            let stream = send(addr, &raw_post(addr, &padded_event(id)));
            daemon::wait_until_read(addr, &stream, "a whole body that had room");
            stream
        })
        .collect();

    let refused = daemon::post_bytes(addr, "/v1/events", &[], &padded_event("refused"));
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["code"], "body_memory_full", "{refused:?}");
    let message = refused.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("api.max_buffered_body_bytes"), "{message}");
    assert!(
        refused
            .header("retry-after")
            .is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)),
        "{refused:?}"
    );
    service
        .daemon
        .wait_for_log("request bodies are refused", PATIENCE);

    lock.execute_batch("ROLLBACK").unwrap();
    for (n, stream) in held.iter_mut().enumerate() {
        ok(&format!("held body {n}"), &answer(stream, "held body"));
    }
    ok(
        "after the room came back",
        &daemon::post_bytes(addr, "/v1/events", &[], &padded_event("after")),
    );
    service
        .daemon
        .wait_for_log("request bodies are read again", PATIENCE);
    let rows = service.rows();
    for id in ["held-0", "held-1", "after"] {
        committed(&rows, id);
    }
    assert_eq!(rows.len(), 3, "the refused body was written");
    service.assert_alive();
}
