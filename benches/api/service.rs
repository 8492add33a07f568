//! The service under test: `gradata serve` from the release build on a passed loopback socket
//! ([`Service`]), and one capture load on a fresh one ([`load_service`]), which checks the outbox
//! holds what was acknowledged. It knows nothing of the other daemons, nor of the results format.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use gradata::store;

use super::load::{Load, peak_rss_during};

/// How the loaded service commits: as shipped (`synchronous=full`), or without the WAL's fsync,
/// which shows in the same run how much of the rate the service's own CPU allows.
#[derive(Clone, Copy)]
pub(crate) enum Synchronous {
    Full,
    NoFsync,
}

/// One load of the service: events/s, p99 latency, and the service's peak resident memory while
/// it ran.
pub(crate) struct Capture {
    pub(crate) rate: f64,
    pub(crate) p99_ms: f64,
    pub(crate) rss_peak_mib: f64,
}

/// The service binary: this build's, or `$GRADATA_BIN` (to compare two builds in one setting).
pub(crate) fn binary() -> PathBuf {
    std::env::var_os("GRADATA_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gradata")),
        PathBuf::from,
    )
}

/// A fresh service (sync disabled, committing as `synchronous` says), loaded on `path`; checks
/// every acknowledged event is in the outbox and returns events/s and p99 latency in ms.
pub(crate) fn load_service(
    wrk: &Path,
    path: &str,
    body: &[u8],
    events_per_request: usize,
    synchronous: Synchronous,
    connections: usize,
    seconds: u32,
) -> Capture {
    // The queue limits are the service's defence, not what is measured: in a fast phase, batches
    // of 100 fill the default million pending rows within a run.
    let unlimited = [
        (
            "GRADATA_STORE_MAX_PENDING_ROWS",
            OsString::from("1000000000"),
        ),
        (
            "GRADATA_STORE_MAX_PENDING_BYTES",
            OsString::from("1000000000000"),
        ),
        // Sync is disabled (no API key), where the service holds far fewer rows by default.
        (
            "GRADATA_SYNC_MAX_PENDING_ROWS_WITHOUT_KEY",
            OsString::from("1000000000"),
        ),
    ];
    let service = match synchronous {
        Synchronous::Full => Service::start(&unlimited),
        Synchronous::NoFsync => Service::start(
            &[
                &unlimited[..],
                &[("GRADATA_STORE_SYNCHRONOUS", OsString::from("normal"))],
            ]
            .concat(),
        ),
    };
    let (load, rss_peak_mib) = peak_rss_during(service.child.id(), || {
        Load::run(wrk, &service.url(path), body, connections, seconds)
    });
    let per_request = events_per_request as u64;
    let acknowledged = load.ok * per_request;
    let stored = service.rows();
    eprintln!(
        "  {path}, {events_per_request} per request: {acknowledged} events acknowledged, {stored} in the outbox"
    );
    assert_eq!(
        load.ok, load.requests,
        "{path}: the service refused requests"
    );
    assert!(
        stored >= acknowledged,
        "{path}: {acknowledged} events acknowledged but only {stored} in the outbox"
    );
    // wrk stops with up to one request per connection unanswered; those may have committed.
    assert!(
        stored <= acknowledged + connections as u64 * per_request,
        "{path}: {stored} events in the outbox, more than the {acknowledged} acknowledged and those in flight"
    );
    Capture {
        rate: load.rate * events_per_request as f64,
        p99_ms: load.p99_ms,
        rss_peak_mib,
    }
}

/// `gradata serve` from the release build on a passed loopback socket; stopped when dropped.
pub(crate) struct Service {
    /// The service process: sent SIGTERM and waited for when the `Service` is dropped.
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The service's home and data directory, removed when dropped.
    dir: tempfile::TempDir,
    /// The `NOTIFY_SOCKET` the service sent `READY=1` to, kept open while it runs.
    _notify: UnixDatagram,
}

impl Service {
    /// Starts the service with extra environment, waits for `READY=1`.
    pub(crate) fn start(env: &[(&str, OsString)]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let data_dir = dir.path().join("data");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("GRADATA_CONFIG", "")
            .env("GRADATA_SYNC_API_KEY_FILE", dir.path().join("no-key"))
            .env("NOTIFY_SOCKET", &notify_path)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "http")
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .fd_mappings(vec![FdMapping {
                parent_fd: listener.as_fd().try_clone_to_owned().unwrap(),
                child_fd: 3,
            }])
            .unwrap();
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().unwrap();
        drop(command);
        drop(listener);
        let mut buf = [0u8; 4096];
        loop {
            let n = notify.recv(&mut buf).unwrap_or_else(|err| {
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                panic!("no READY=1 ({err}); stderr:\n{log}")
            });
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|line| line == "READY=1")
            {
                break;
            }
        }
        Service {
            child,
            addr,
            dir,
            _notify: notify,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Rows in the outbox, counted by a separate connection.
    fn rows(&self) -> u64 {
        let path = self.dir.path().join("data").join(store::DATABASE_FILE);
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row("SELECT COUNT(*) FROM sync_queue", [], |r| r.get(0))
            .unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
