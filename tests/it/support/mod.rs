//! Test harness: the fake ingest server, log capture, databases made the way the original daemon
//! made them, helpers to build engines and run the binary, and the binary's failing disks (one that
//! fills up, one whose fsyncs fail: `fsync_fault.c`).

pub mod brain;
pub mod daemon;
pub mod fake_ingest;
pub mod http;
pub mod logs;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use gradata::store::{self, EventId, Kind, NewEvent, Store};
use gradata::sync::{ApiKey, Concurrency, Engine, RetryPolicy, Settings, Status, SyncState};
use rand::SeedableRng;
use rusqlite::Connection;

pub use fake_ingest::{FakeIngest, Received, Reply};

/// The original daemon's DDL, verbatim.
pub const ORIGINAL_DDL: &str = "
CREATE TABLE IF NOT EXISTS sync_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    payload_json TEXT NOT NULL,
    kind TEXT NOT NULL CHECK(kind IN ('correction','lesson','event')),
    enqueued_at REAL NOT NULL,      -- unix epoch seconds (time.time())
    synced_at REAL,                 -- NULL = pending
    attempts INTEGER DEFAULT 0,
    last_error TEXT                 -- truncated to 500 chars
);
CREATE INDEX IF NOT EXISTS idx_sync_queue_pending ON sync_queue(synced_at) WHERE synced_at IS NULL;
";

/// Creates `<dir>/system.db` with the original DDL and these payloads, as the Python daemon's
/// `enqueue` would (`json.dumps(..., ensure_ascii=False)`, `time.time()`).
pub fn original_db(dir: &Path, payloads: &[String]) {
    let conn = Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
    conn.execute_batch(ORIGINAL_DDL).unwrap();
    let mut insert = conn
        .prepare("INSERT INTO sync_queue (payload_json, kind, enqueued_at) VALUES (?1, 'correction', ?2)")
        .unwrap();
    for (n, payload) in payloads.iter().enumerate() {
        insert
            .execute(rusqlite::params![payload, 1_716_000_000.25 + n as f64])
            .unwrap();
    }
}

/// The payload the original's `enqueue_correction` would store.
pub fn original_payload(n: usize) -> String {
    format!(
        r#"{{"brain_id": "brain-7", "correction": {{"session": {n}, "description": "fix ✓ n°{n}"}}, "event_id": "01ORIG{n:08}"}}"#
    )
}

/// A fresh store in `dir` (created if missing), no instance lock.
pub fn open_store(dir: &Path) -> Store {
    Store::open(&store::Options::new(dir)).unwrap()
}

/// Enqueues `n` events with ids `E00000000`… and returns their ids.
pub async fn fill(store: &Store, n: usize) -> Vec<String> {
    let events: Vec<NewEvent> = (0..n)
        .map(|i| {
            NewEvent::new(
                "brain-test",
                EventId::parse(&format!("E{i:08}")).unwrap(),
                Kind::Correction,
                &serde_json::json!({"n": i, "text": "x".repeat(100)}),
            )
        })
        .collect();
    let ids = events.iter().map(|e| e.event_id().to_string()).collect();
    store.enqueue(events).await.unwrap();
    ids
}

/// Settings for tests: loopback URL, short timeouts, small lease.
pub fn settings(url: &str, key: Option<&str>) -> Settings {
    let mut settings = Settings::new(url.parse().unwrap(), key.and_then(ApiKey::new));
    settings.request_timeout = Duration::from_secs(5);
    settings.connect_timeout = Duration::from_secs(2);
    settings.lease = Duration::from_secs(30);
    settings
}

/// An engine with a seeded retry policy.
pub fn engine(store: &Store, settings: Settings) -> Engine {
    let concurrency = Concurrency::new(settings.concurrency, settings.max_concurrency);
    let policy = RetryPolicy::with_rng(
        settings.backoff_base,
        settings.backoff_cap,
        rand::rngs::StdRng::seed_from_u64(42),
    );
    Engine::with_parts(
        store.clone(),
        settings,
        Status::new(SyncState::Idle),
        gradata::metrics::Metrics::new(),
        concurrency,
        policy,
    )
    .unwrap()
}

/// A row as stored, read with a plain connection (independent of the code under test).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub payload_json: String,
    pub kind: String,
    pub enqueued_at: f64,
    pub synced_at: Option<f64>,
    pub attempts: Option<i64>,
    pub last_error: Option<String>,
    pub event_id: Option<String>,
    pub next_attempt_at: Option<f64>,
    pub lease_until: Option<f64>,
    pub dead_at: Option<f64>,
    pub last_status: Option<i64>,
}

/// Every row, in id order.
pub fn rows(dir: &Path) -> Vec<Row> {
    let conn = Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    let mut statement = conn
        .prepare(
            "SELECT id, payload_json, kind, enqueued_at, synced_at, attempts, last_error, event_id,
                    next_attempt_at, lease_until, dead_at, last_status FROM sync_queue ORDER BY id",
        )
        .unwrap();
    statement
        .query_map([], |r| {
            Ok(Row {
                id: r.get(0)?,
                payload_json: r.get(1)?,
                kind: r.get(2)?,
                enqueued_at: r.get(3)?,
                synced_at: r.get(4)?,
                attempts: r.get(5)?,
                last_error: r.get(6)?,
                event_id: r.get(7)?,
                next_attempt_at: r.get(8)?,
                lease_until: r.get(9)?,
                dead_at: r.get(10)?,
                last_status: r.get(11)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The `gradata` binary with a clean environment: no host config, no host key.
pub fn gradata(data_dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gradata"));
    command
        .env_clear()
        .envs(test_env(data_dir))
        .arg("--data-dir")
        .arg(data_dir);
    command
}

/// A data directory that fills up: a tmpfs of `size` bytes, `filler` of which a file named
/// `filler` takes up. Removing that file makes room again.
#[derive(Debug, Clone, Copy)]
pub struct SmallDisk {
    pub size: u64,
    pub filler: u64,
}

/// [`gradata`] on a [`SmallDisk`] mounted over `data_dir`, in a mount namespace of its own (and a
/// user namespace, so that no privilege is needed). The mount is seen by that process alone and
/// goes away with it; the test reaches its files through `/proc/<pid>/root`.
pub fn gradata_on_small_disk(data_dir: &Path, disk: SmallDisk) -> Command {
    const MOUNT_THEN_EXEC: &str = r#"mount -t tmpfs -o size="$1" tmpfs "$2" &&
        head -c "$3" /dev/zero > "$2/filler" && shift 3 && exec "$@""#;
    let (size, filler) = (disk.size.to_string(), disk.filler.to_string());
    let args = [
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        MOUNT_THEN_EXEC,
        "sh",
    ]
    .map(OsStr::new)
    .into_iter()
    .chain([OsStr::new(&size), data_dir.as_os_str(), OsStr::new(&filler)]);
    gradata_under("unshare", args, data_dir)
}

/// [`gradata`] with at most `limit` open files (`RLIMIT_NOFILE`, what systemd's `LimitNOFILE=`
/// sets), through util-linux's `prlimit`, which sets the limit and then execs the daemon.
pub fn gradata_with_open_files_limit(data_dir: &Path, limit: u64) -> Command {
    gradata_under("prlimit", [format!("--nofile={limit}:{limit}")], data_dir)
}

/// `launcher ARGS… gradata --data-dir DATA_DIR` in the tests' environment: a launcher that sets
/// something up and then execs the daemon, so the child's pid is the daemon's.
fn gradata_under(
    launcher: &str,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    data_dir: &Path,
) -> Command {
    let mut command = Command::new(launcher);
    command
        .env_clear()
        .envs(test_env(data_dir))
        .args(args)
        .arg(env!("CARGO_BIN_EXE_gradata"))
        .arg("--data-dir")
        .arg(data_dir);
    command
}

/// The environment every test's `gradata` runs in: nothing inherited but `PATH`, no configuration
/// file, no API key.
fn test_env(data_dir: &Path) -> [(&'static str, OsString); 4] {
    [
        ("PATH", std::env::var_os("PATH").unwrap_or_default()),
        ("HOME", data_dir.as_os_str().to_owned()),
        ("GRADATA_CONFIG", OsString::new()),
        (
            "GRADATA_SYNC_API_KEY_FILE",
            data_dir.join("no-such-key").into_os_string(),
        ),
    ]
}

/// Runs a command and returns its output, with stdout and stderr as text for assertions.
pub fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// A temporary directory that is a path (kept alive by the returned guard).
pub fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

/// The shared library of `fsync_fault.c`, built once per test run with the C compiler that built
/// the bundled SQLite: preloaded into `gradata` with `FSYNC_FAULT_MARKER` naming a file, it fails
/// every fsync of the WAL with `EIO` while that file exists, as a failing disk would.
pub fn fsync_fault_library() -> PathBuf {
    static LIBRARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            let source =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/fsync_fault.c");
            let library = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fsync_fault.so");
            let compiler = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
            let output = Command::new(&compiler)
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&library)
                .arg(&source)
                .arg("-ldl")
                .output()
                .unwrap_or_else(|err| panic!("cannot run {compiler:?}: {err}"));
            assert!(
                output.status.success(),
                "cannot build {}: {}",
                source.display(),
                String::from_utf8_lossy(&output.stderr)
            );
            library
        })
        .clone()
}

/// Runs `sql` on the outbox with a connection of the test's own: another process, as the daemon
/// sees it.
pub fn execute(dir: &Path, sql: &str) {
    let conn = Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// The wall clock as the outbox's REAL columns hold it.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Waits until `done` holds, failing with `what` (and the daemon's log) after `guard`.
pub fn wait_until(
    daemon: &daemon::Daemon,
    guard: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) {
    let until = Instant::now() + guard;
    while !done() {
        assert!(
            Instant::now() < until,
            "{what} within {guard:?}\nstderr:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Checks that `value` (a header, a notification's field) is there and contains `part`; `context`
/// is shown when it does not.
pub fn assert_contains(value: Option<&str>, part: &str, context: &dyn std::fmt::Debug) {
    assert!(
        value.is_some_and(|value| value.contains(part)),
        "{part:?} not in {value:?}: {context:?}"
    );
}
