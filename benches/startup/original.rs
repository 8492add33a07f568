//! The original daemon's start: PyPI `gradata==0.6.0` (`<venv>/bin/python -m gradata.daemon
//! --brain-dir DIR --port N`) on an empty brain directory, timed from exec to its first answered
//! request (`GET /health`, polled; it sends no `READY=1`), and its resident memory one second
//! after that answer. It knows nothing of gradata or of the results format.
//!
//! The virtualenv is `benches/prepare.sh`'s: `$GRADATA_BENCH_PYTHON`, else
//! `target/bench-venv/bin/python`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often the first answer is asked for: small beside a start of most of a second.
const POLL: Duration = Duration::from_millis(5);
/// How long a start may take before the benchmark gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One start of the original daemon.
pub(crate) struct Start {
    /// From exec to the first 200 answer to `GET /health`.
    pub(crate) first_answer: Duration,
    /// `VmRSS` one second after that answer.
    pub(crate) idle_rss_kib: u64,
}

/// The virtualenv's Python: `$GRADATA_BENCH_PYTHON`, else the one `benches/prepare.sh` creates.
pub(crate) fn python() -> PathBuf {
    std::env::var_os("GRADATA_BENCH_PYTHON")
        .filter(|path| !path.is_empty())
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-venv/bin/python"),
            PathBuf::from,
        )
}

/// Why the original cannot be measured (no such Python, or not gradata 0.6.0 in it), if so.
pub(crate) fn missing(python: &Path) -> Option<String> {
    let output = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('gradata'))",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    match output {
        Err(err) => Some(format!("{}: {err}", python.display())),
        Ok(output) if String::from_utf8_lossy(&output.stdout).trim() != "0.6.0" => Some(format!(
            "{} has no gradata 0.6.0 (found {:?})",
            python.display(),
            String::from_utf8_lossy(&output.stdout).trim()
        )),
        Ok(_) => None,
    }
}

/// Starts the daemon on a new empty brain directory, waits for its first answer and its idle
/// second, reads its memory and kills it (it ignores SIGTERM).
pub(crate) fn start(python: &Path) -> Start {
    let dir = tempfile::tempdir().unwrap();
    let brain = dir.path().join("brain");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&brain).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let log = dir.path().join("daemon.log");
    // The daemon binds its port itself: a port free now, as the brain benchmark does.
    let addr = free_loopback_port();
    let started = Instant::now();
    let mut child = Command::new(python)
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
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let first_answer = loop {
        if answers_health(addr) {
            break started.elapsed();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the original daemon exited ({status}) before answering; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < START_TIMEOUT,
            "the original daemon did not answer within {START_TIMEOUT:?}; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(POLL);
    };
    std::thread::sleep(Duration::from_secs(1));
    let idle_rss_kib = super::vm_rss_kib(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    Start {
        first_answer,
        idle_rss_kib,
    }
}

/// Whether `GET /health` on `addr` gets a 200 now.
fn answers_health(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let probe = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut answer = Vec::new();
    stream.write_all(probe.as_bytes()).is_ok()
        && stream.read_to_end(&mut answer).is_ok()
        && answer.starts_with(b"HTTP/1.")
        && answer.get(9..12) == Some(b"200".as_slice())
}

/// A loopback address no one listens on now.
fn free_loopback_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}
