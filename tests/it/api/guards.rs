//! The guards in front of every route: the Host header, CORS origins and the local token.

use super::{Service, committed, ok};
use crate::support;
use crate::support::daemon::{get, post_bytes, request};

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
    support::assert_contains(response.header("vary"), "Origin", &response);
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
    support::assert_contains(
        response.header("access-control-allow-methods"),
        "POST",
        &response,
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
