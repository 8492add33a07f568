//! The original: the Python daemon of PyPI `gradata==0.6.0` (`<venv>/bin/python -m
//! gradata.daemon --brain-dir DIR --port N`, the virtualenv `benches/prepare.sh` creates) on a
//! fresh, empty brain per load ([`Original`]), and one capture load of it on a route both daemons
//! have ([`load_original`]), which checks the brain's event log holds what was acknowledged. It
//! knows nothing of gradata, nor of the results format.
//!
//! 0.6.0 serves HTTP/1.0 from a thread per connection and closes every connection after its
//! answer, so `wrk` opens a new connection for each request: the rate counts the handshakes, the
//! latency (from the request's first byte) does not. It ignores SIGTERM, so it is stopped with
//! SIGKILL.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::load::{Load, peak_rss_during};

/// How long the daemon may take to answer `GET /health` after it is started (it imports a large
/// package: about a second on a quiet machine).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `GET /health` is tried while it starts.
const HEALTH_POLL: Duration = Duration::from_millis(20);

/// A route both daemons have, and how 0.6.0's event log shows that a request did its work.
#[derive(Clone, Copy)]
pub(crate) enum Route {
    /// `POST /log-event`: one event of source `plugin.hook` per request.
    LogEvent,
    /// `POST /correct`: one `CORRECTION` event of source `brain.correct` per request, beside the
    /// lessons it learns.
    Correct,
}

impl Route {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Route::LogEvent => "/log-event",
            Route::Correct => "/correct",
        }
    }

    /// Whether 0.6.0's answer says the request did its work (`/log-event` answers
    /// `logged: true` even when it failed: the event log's count is the real check).
    fn done(self, answer: &Value) -> bool {
        match self {
            Route::LogEvent => answer["logged"] == json!(true),
            Route::Correct => answer["captured"] == json!(true),
        }
    }

    /// The rows of 0.6.0's `events` table one request of this route writes.
    fn events_where(self) -> &'static str {
        match self {
            Route::LogEvent => "source = 'plugin.hook'",
            Route::Correct => "type = 'CORRECTION' AND source = 'brain.correct'",
        }
    }
}

/// One load of 0.6.0: `wrk`'s counts (its rate counts only 2xx answers) and the daemon's peak
/// resident memory while it ran.
pub(crate) struct OriginalRun {
    pub(crate) load: Load,
    pub(crate) rss_peak_mib: f64,
}

/// The virtualenv's Python: `$GRADATA_BENCH_PYTHON`, else the one `benches/prepare.sh` creates.
pub(crate) fn python() -> PathBuf {
    std::env::var_os("GRADATA_BENCH_PYTHON").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv/bin/python"),
        PathBuf::from,
    )
}

/// Stops early, with the fix, unless `python` has exactly gradata 0.6.0 installed.
pub(crate) fn check_python_package(python: &Path) {
    let output = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('gradata'))",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "{}: {err}; run benches/api.sh or benches/run.sh, which create it",
                python.display()
            )
        });
    let version = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && version.trim() == "0.6.0",
        "{} has gradata {:?}, not 0.6.0 ({}); run benches/api.sh or benches/run.sh",
        python.display(),
        version.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// A fresh 0.6.0 loaded on `route` with `body` over `clients` connections for `seconds`, after
/// one request whose answer must show the work done (it also takes the first call's lazy imports
/// out of the load); checks that its event log holds every request it acknowledged, and at most
/// those in flight or cut off beyond them.
pub(crate) fn load_original(
    wrk: &Path,
    route: Route,
    body: &[u8],
    clients: usize,
    seconds: u32,
) -> OriginalRun {
    let mut original = Original::start();
    let (status, answer) = original.post(route.path(), body);
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    assert!(
        status == 200 && route.done(&answer),
        "0.6.0 {}: answered {status} {answer}; its log:\n{}",
        route.path(),
        original.log()
    );
    let (load, rss_peak_mib) = peak_rss_during(original.child.id(), || {
        Load::run(wrk, &original.url(route.path()), body, clients, seconds)
    });
    // Killed before counting, so no request still being handled adds to the count.
    original.kill();
    // Less the request that checked the answer.
    let stored = original.events(route) - 1;
    eprintln!(
        "  0.6.0 {}, {clients} clients: {} acknowledged, {} failed, {stored} in its event log",
        route.path(),
        load.ok,
        load.errors()
    );
    assert!(
        stored >= load.ok,
        "0.6.0 {}: {} requests acknowledged but only {stored} events logged",
        route.path(),
        load.ok
    );
    assert!(
        stored <= load.ok + clients as u64 + load.socket_errors,
        "0.6.0 {}: {stored} events logged, more than the {} acknowledged and those cut off",
        route.path(),
        load.ok
    );
    OriginalRun { load, rss_peak_mib }
}

/// 0.6.0 on an empty brain in a directory of its own, with a home of its own (it must not see
/// this machine's); killed when dropped.
struct Original {
    /// The Python process (`python -m` runs the daemon in it): killed and waited for by `kill`.
    child: Child,
    addr: SocketAddr,
    /// Holds `brain/`, `home/` and `daemon.log`; removed when dropped.
    dir: tempfile::TempDir,
}

impl Original {
    /// Starts it and waits until it answers `GET /health`.
    fn start() -> Original {
        let dir = tempfile::tempdir().unwrap();
        let (brain, home) = (dir.path().join("brain"), dir.path().join("home"));
        std::fs::create_dir_all(&brain).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let stderr = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        // 0.6.0 binds its port itself: a port free now, as `benches/brain.rs` picks it.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let child = Command::new(python())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("GRADATA_TELEMETRY", "0")
            .args(["-m", "gradata.daemon", "--brain-dir"])
            .arg(&brain)
            .arg("--port")
            .arg(addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut original = Original { child, addr, dir };
        original.wait_for_health();
        original
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// One POST on its own connection; returns the status and the body.
    fn post(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("0.6.0 {path}: not an HTTP answer: {answer:?}"));
        let status = std::str::from_utf8(&answer[..end])
            .ok()
            .and_then(|head| head.split_whitespace().nth(1))
            .and_then(|status| status.parse().ok())
            .unwrap_or_else(|| panic!("0.6.0 {path}: not an HTTP answer: {answer:?}"));
        (status, answer[end + 4..].to_vec())
    }

    fn wait_for_health(&mut self) {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("0.6.0 exited ({status}); its log:\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect(self.addr) {
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                let probe = format!(
                    "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                );
                let mut answer = Vec::new();
                if stream.write_all(probe.as_bytes()).is_ok()
                    && stream.read_to_end(&mut answer).is_ok()
                    && answer.starts_with(b"HTTP/1.0 200")
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "0.6.0 did not answer /health within {STARTUP_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(HEALTH_POLL);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// SIGKILL (it ignores SIGTERM), and waits for it to be gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The events `route`'s requests logged in the brain's `system.db` (its committed rows: the
    /// WAL is read back by this connection).
    fn events(&self, route: Route) -> u64 {
        let path = self.dir.path().join("brain").join("system.db");
        let conn = rusqlite::Connection::open(path).unwrap();
        let sql = format!("SELECT COUNT(*) FROM events WHERE {}", route.events_where());
        conn.query_row(&sql, [], |r| r.get(0)).unwrap()
    }
}

impl Drop for Original {
    fn drop(&mut self) {
        self.kill();
    }
}
