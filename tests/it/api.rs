//! The local HTTP API of the real `gradata serve` (docs/api.md), over plain TCP: the capture
//! routes (`routes`), the operator's routes (`admin`), bad input and full resources (`limits`),
//! the Host/Origin/token guards (`guards`), connection handling (`connections`), the shared body
//! memory (`body_room`) and mutated requests (`mutated`); crash safety is in `durability`. This
//! file holds what they share: [`Service`], a served data directory with its checks.
//!
//! Every write is checked in the database afterwards with `support::rows`; every refused request
//! is checked to have written nothing and to leave the service answering. Waits are for
//! conditions, with `PATIENCE` only as a guard against a hang.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::support::daemon::{Daemon, PATIENCE, Response, Spec, get, post_json};
use crate::support::{self, Row};

mod admin;
mod body_room;
mod connections;
mod guards;
mod limits;
mod mutated;
mod routes;

/// The `brain_id` every test service stamps on its payloads.
pub(crate) const BRAIN: &str = "brain-api-test";

/// A running service on a fresh data directory.
pub(crate) struct Service {
    pub(crate) daemon: Daemon,
    pub(crate) dir: PathBuf,
    _guard: tempfile::TempDir,
}

impl Service {
    /// Starts `gradata serve` (sync disabled unless `configure` enables it) and waits for
    /// `READY=1`.
    pub(crate) fn start(configure: impl FnOnce(Spec) -> Spec) -> Service {
        let (guard, dir) = support::temp_dir();
        let daemon = configure(Spec::new(&dir).env("GRADATA_BRAIN_ID", BRAIN)).spawn();
        daemon.expect_ready();
        Service {
            daemon,
            dir,
            _guard: guard,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.daemon.addr()
    }

    pub(crate) fn rows(&self) -> Vec<Row> {
        support::rows(&self.dir)
    }

    /// Asserts that SQLite's integrity check passes on the outbox (after the service stopped).
    pub(crate) fn assert_database_intact(&self) {
        let integrity: String =
            rusqlite::Connection::open(self.dir.join(gradata::store::DATABASE_FILE))
                .unwrap()
                .query_row("PRAGMA integrity_check", [], |row| row.get(0))
                .unwrap();
        assert_eq!(integrity, "ok");
    }

    /// A new service on the same data directory, once the first has stopped; ready when returned.
    pub(crate) fn start_again(&self) -> Daemon {
        let daemon = Spec::new(&self.dir).env("GRADATA_BRAIN_ID", BRAIN).spawn();
        daemon.expect_ready();
        daemon
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Response {
        post_json(self.addr(), path, body)
    }

    pub(crate) fn get(&self, path: &str) -> Response {
        get(self.addr(), path)
    }

    /// `/health` says `degraded` because writes are being refused: `refused` of them so far, the
    /// latest for a reason containing `reason`, with `pending` rows kept.
    pub(crate) fn expect_writes_refused(&self, pending: usize, refused: u64, reason: &str) {
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
    pub(crate) fn health(&self) -> Value {
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
    pub(crate) fn expect_refused(
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
    pub(crate) fn wait_for_health(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
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
    pub(crate) fn wait_for_rows(&self, what: &str, pred: impl Fn(&[Row]) -> bool) -> Vec<Row> {
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
    pub(crate) fn assert_alive(&mut self) {
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
pub(crate) fn ok(what: &str, response: &Response) -> Value {
    assert_eq!(response.status, 200, "{what}: {response:?}");
    response.json()
}

/// The row holding `event_id`, read by a separate connection right after the 2xx: committed.
pub(crate) fn committed(rows: &[Row], event_id: &str) -> Row {
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

pub(crate) fn payload(row: &Row) -> Value {
    serde_json::from_str(&row.payload_json).unwrap()
}

/// The keys of a JSON object, sorted.
pub(crate) fn keys(value: &Value) -> Vec<&str> {
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
pub(crate) fn assert_recent_timestamp(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    let at = humantime::parse_rfc3339(text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
    let now = SystemTime::now();
    let skew = now.duration_since(at).unwrap_or_else(|err| err.duration());
    assert!(skew < Duration::from_secs(60), "{text} is not now");
}

/// The value of one series in Prometheus text (`name{labels}`), 0 when absent.
pub(crate) fn metric(text: &str, series: &str) -> f64 {
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

/// Whether a failed read means the server closed the connection (rather than a read timeout).
pub(crate) fn closed(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        err.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}
