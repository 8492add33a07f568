//! What each response does to its row and to the drain: the DESIGN §5 table, timeouts and
//! refused connections, auth failures, `Retry-After`, and rows waiting on backoff.

use super::*;

/// A status that arrives with a body that stalls is still that status: a 200 is delivered (not
/// re-sent as a timeout), and a 401 pauses sync with the row untouched (no attempt counted).
#[tokio::test]
async fn a_stalled_body_keeps_the_disposition_of_its_status() {
    for (status, reason, synced, state) in [
        (200, StopReason::Done, true, SyncState::Idle),
        (401, StopReason::AuthFailed, false, SyncState::AuthFailed),
    ] {
        let reply = Reply::status(status)
            .body(r#"{"partial":"#)
            .stall_body(Duration::from_secs(3));
        let (_guard, dir, store, server) = fixture(1, reply).await;
        let mut settings = support::settings(&server.url("/ingest"), Some(KEY));
        settings.request_timeout = Duration::from_secs(1);
        let engine = support::engine(&store, settings);
        let report = drain(&engine, Trigger::Manual, budget()).await;
        assert_eq!(report.reason, reason, "status {status}: {report:?}");
        assert_eq!(engine.status().state(), state, "status {status}");
        let row = &support::rows(&dir)[0];
        assert_eq!(row.synced_at.is_some(), synced, "status {status}: {row:?}");
        assert_eq!(row.attempts, Some(0), "status {status}: {row:?}");
        assert_eq!(row.last_status, Some(i64::from(status)), "{row:?}");
        assert!(row.next_attempt_at.is_none(), "status {status}: {row:?}");
    }
}

/// What a single response does to a single row and to the drain.
struct Case {
    reply: Reply,
    reason: StopReason,
    row: RowOutcome,
    state: SyncState,
}

#[derive(Debug, PartialEq)]
enum RowOutcome {
    Synced,
    Dead,
    /// Pending with one more attempt and a backoff timer.
    Retried,
    /// Pending, untouched but for the last error.
    Kept,
}

fn row_outcome(row: &support::Row) -> RowOutcome {
    match (
        row.synced_at,
        row.dead_at,
        row.attempts,
        row.next_attempt_at,
    ) {
        (Some(_), None, _, _) => RowOutcome::Synced,
        (None, Some(_), Some(1), _) => RowOutcome::Dead,
        (None, None, Some(1), Some(_)) => RowOutcome::Retried,
        (None, None, Some(0), None) => RowOutcome::Kept,
        other => panic!("unexpected row state {other:?}: {row:?}"),
    }
}

/// Every row of the DESIGN §5 table, through the engine and a real HTTP exchange.
#[tokio::test]
async fn every_response_class_settles_the_row_as_designed() {
    use RowOutcome::*;
    let case = |reply: Reply, reason, row, state| Case {
        reply,
        reason,
        row,
        state,
    };
    let cases = [
        case(Reply::ok(), StopReason::Done, Synced, SyncState::Idle),
        case(
            Reply::status(202).body(r#"{"status":"ok","deduplicated":true}"#),
            StopReason::Done,
            Synced,
            SyncState::Idle,
        ),
        case(
            Reply::status(408),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(425),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(500),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(502),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(503),
            StopReason::NoProgress,
            Retried,
            SyncState::Backoff,
        ),
        case(
            Reply::status(429),
            StopReason::RateLimited,
            Retried,
            SyncState::RateLimited,
        ),
        case(
            Reply::status(503).header("retry-after", "3"),
            StopReason::RateLimited,
            Retried,
            SyncState::RateLimited,
        ),
        case(
            Reply::status(401),
            StopReason::AuthFailed,
            Kept,
            SyncState::AuthFailed,
        ),
        case(
            Reply::status(403),
            StopReason::AuthFailed,
            Kept,
            SyncState::AuthFailed,
        ),
        case(
            Reply::status(404),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(405),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(410),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(501),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(308).header("location", "/elsewhere"),
            StopReason::ConfigError,
            Kept,
            SyncState::ConfigError,
        ),
        case(
            Reply::status(400).body("bad payload"),
            StopReason::Done,
            Dead,
            SyncState::Idle,
        ),
        case(Reply::status(413), StopReason::Done, Dead, SyncState::Idle),
        case(Reply::status(415), StopReason::Done, Dead, SyncState::Idle),
        case(
            Reply::status(422).body(r#"{"detail":"unprocessable"}"#),
            StopReason::Done,
            Dead,
            SyncState::Idle,
        ),
        case(Reply::status(409), StopReason::Done, Dead, SyncState::Idle),
    ];
    for case in cases {
        let (_guard, dir) = support::temp_dir();
        let store = support::open_store(&dir);
        support::fill(&store, 1).await;
        let status = case.reply.status;
        let server = FakeIngest::replying(case.reply.clone());
        let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
        let report = drain(&engine, Trigger::Manual, budget()).await;
        let rows = support::rows(&dir);
        assert_eq!(report.reason, case.reason, "status {status}");
        assert_eq!(
            row_outcome(&rows[0]),
            case.row,
            "status {status}: {:?}",
            rows[0]
        );
        assert_eq!(engine.status().state(), case.state, "status {status}");
        assert!(
            rows[0].lease_until.is_none(),
            "status {status}: lease must be released"
        );
        if status != 200 && status != 202 {
            assert_eq!(
                rows[0].last_status,
                Some(i64::from(status)),
                "status {status}"
            );
        }
        if case.row == Dead {
            assert_eq!(report.dead, 1);
            assert!(
                rows[0]
                    .last_error
                    .as_deref()
                    .unwrap()
                    .starts_with(&format!("http {status}"))
            );
        }
        // Redirects are never followed: only the one request reached the server.
        assert_eq!(server.count(), 1, "status {status}");
    }
}

/// The rows of the DESIGN §5 table that get no response at all: a request that outlives its
/// timeout, a refused connection and a connection closed without an answer are each retried later
/// (one attempt counted, a backoff timer set, the cause kept), never dead and never synced.
#[tokio::test]
async fn no_response_is_retried_later_with_its_cause() {
    // A server that answers too late for the request timeout.
    let slow = FakeIngest::replying(Reply::ok().delay(Duration::from_secs(2)));
    let mut settings = support::settings(&slow.url("/ingest"), Some(KEY));
    settings.request_timeout = Duration::from_millis(200);
    assert_retried_with(settings, "timeout").await;

    // Nothing listens on the port any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let refused = support::settings(&format!("http://127.0.0.1:{port}/ingest"), Some(KEY));
    assert_retried_with(refused, "connect").await;

    // A server that reads the request and hangs up without a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    let hang_up = std::thread::spawn(move || {
        use std::io::Read;
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = [0_u8; 1024];
        let read = stream.read(&mut head).unwrap();
        assert!(head[..read].starts_with(b"POST /ingest"));
    });
    assert_retried_with(support::settings(&url, Some(KEY)), "network").await;
    hang_up.join().unwrap();
}

/// https:// means TLS, with the certificate checked against the built-in roots: a server whose
/// certificate no root vouches for (self-signed here) never gets the event, and the row is retried
/// later with the reason in `last_error`.
#[tokio::test]
async fn a_server_with_an_untrusted_certificate_never_gets_the_event() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/ingest", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(drop)
    });
    let error = assert_retried_with(support::settings(&url, Some(KEY)), "connect").await;
    assert!(error.contains("certificate"), "{error}");
    assert!(
        server.await.unwrap().is_err(),
        "the TLS handshake with an untrusted certificate succeeded"
    );
}

/// Drains one row with `settings`, checks that it was retried later for a `cause`, and returns its
/// `last_error`.
async fn assert_retried_with(settings: sync::Settings, cause: &str) -> String {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 1).await;
    let engine = support::engine(&store, settings);
    let report = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(
        (report.delivered, report.dead, report.reason),
        (0, 0, StopReason::NoProgress),
        "{cause}"
    );
    let rows = support::rows(&dir);
    assert_eq!(row_outcome(&rows[0]), RowOutcome::Retried, "{cause}");
    assert!(rows[0].lease_until.is_none(), "{cause}: lease released");
    assert_eq!(
        rows[0].last_status, None,
        "{cause}: no status without a response"
    );
    let error = rows[0].last_error.clone().unwrap_or_default();
    assert!(error.starts_with(cause), "{cause}: last_error {error:?}");
    assert_eq!(engine.status().state(), SyncState::Backoff, "{cause}");
    error
}

/// A 422's body preview is kept for the operator; a 401 never marks the row dead or synced, and
/// the drain stops at the first refusal instead of burning through the backlog.
#[tokio::test]
async fn auth_failure_pauses_at_once_and_keeps_every_row() {
    let (_guard, dir, store, server) =
        fixture(200, Reply::status(401).body(r#"{"detail":"invalid key"}"#)).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!(report.reason, StopReason::AuthFailed);
    assert!(
        server.count() <= engine.settings().max_concurrency,
        "sent {} requests after a 401",
        server.count()
    );
    let rows = support::rows(&dir);
    assert!(
        rows.iter()
            .all(|r| r.synced_at.is_none() && r.dead_at.is_none() && r.attempts == Some(0))
    );
    assert!(rows.iter().all(|r| r.lease_until.is_none()));
    assert_eq!(report.remaining, Some(200));
    assert!(
        engine
            .status()
            .snapshot()
            .last_error
            .unwrap()
            .contains("invalid key")
    );
}

/// `Retry-After` in seconds pauses all sending for at least that long, and a second drain during
/// the pause sends nothing.
#[tokio::test]
async fn retry_after_seconds_is_honoured() {
    let (_guard, dir, store, server) =
        fixture(20, Reply::status(429).header("retry-after", "120")).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let before = now_unix();
    let report = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(report.reason, StopReason::RateLimited);
    let sent = server.count();
    let retried: Vec<_> = support::rows(&dir)
        .into_iter()
        .filter(|r| r.attempts == Some(1))
        .collect();
    assert_eq!(retried.len(), sent);
    assert!(
        retried
            .iter()
            .all(|r| r.next_attempt_at.unwrap() >= before + 120.0),
        "{retried:?}"
    );
    assert!(engine.status().paused_until().unwrap() >= Instant::now() + Duration::from_secs(100));

    let again = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(again.reason, StopReason::RateLimited);
    assert_eq!(server.count(), sent, "nothing may be sent while paused");
}

/// `Retry-After` as an HTTP-date on a 503 is honoured too, and a 429 halves the concurrency.
#[tokio::test]
async fn retry_after_http_date_is_honoured_and_429_halves_concurrency() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 1).await;
    let when = SystemTime::now() + Duration::from_secs(600);
    let server = FakeIngest::replying(
        Reply::status(503).header("retry-after", &httpdate::fmt_http_date(when)),
    );
    let mut settings = support::settings(&server.url("/ingest"), Some(KEY));
    settings.concurrency = 8;
    let engine = support::engine(&store, settings);
    let report = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!(report.reason, StopReason::RateLimited);
    let row = &support::rows(&dir)[0];
    // HTTP-dates have one-second resolution.
    assert!(
        row.next_attempt_at.unwrap() >= now_unix() + 590.0,
        "{row:?}"
    );
    assert_eq!(engine.concurrency().current(), 4);
}

/// Explicit drains retry rows that wait on a backoff timer; the worker's passes do not.
#[tokio::test]
async fn explicit_drains_retry_rows_waiting_on_backoff() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 10).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let counter = failures.clone();
    let server = FakeIngest::with_plan(move |_, n| {
        if n < 10 {
            counter.fetch_add(1, Ordering::SeqCst);
            Reply::status(500)
        } else {
            Reply::ok()
        }
    });
    let mut settings = support::settings(&server.url("/ingest"), Some(KEY));
    settings.backoff_base = Duration::from_secs(3600);
    settings.backoff_cap = Duration::from_secs(3600);
    let engine = support::engine(&store, settings);
    let first = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!((first.delivered, first.retried), (0, 10));
    assert_eq!(
        failures.load(Ordering::SeqCst),
        10,
        "each row tried once per drain"
    );

    let worker_pass = drain(&engine, Trigger::Worker, budget()).await;
    assert_eq!(
        (worker_pass.delivered, worker_pass.reason),
        (0, StopReason::Done),
        "the worker waits for the timers (rows are pending, so not \"empty\")"
    );

    let second = drain(&engine, Trigger::Manual, budget()).await;
    assert_eq!((second.delivered, second.remaining), (10, Some(0)));
}

/// A batch in which nothing was delivered stops the drain: a failing server is not hammered
/// with the whole backlog.
#[tokio::test]
async fn a_batch_without_progress_stops_the_drain() {
    let (_guard, dir, store, server) = fixture(1000, Reply::status(500)).await;
    let engine = support::engine(&store, support::settings(&server.url("/ingest"), Some(KEY)));
    let report = drain(&engine, Trigger::Startup, budget()).await;
    assert_eq!(report.reason, StopReason::NoProgress);
    assert!(
        server.count() <= 2 * engine.settings().batch_size,
        "sent {}",
        server.count()
    );
    assert_eq!(report.remaining, Some(1000));
    assert!(
        support::rows(&dir).iter().all(|r| r.lease_until.is_none()),
        "every claimed row released"
    );
}
