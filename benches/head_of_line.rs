//! Head-of-line benchmark (the project's issue 21): rows the ingest keeps rejecting at the head of
//! the queue must not hold back the good rows behind them, and an ingest that fails everything
//! must not hold `READY=1` for the startup drain's whole budget.
//!
//! Starts the release binary (`gradata serve`, playing systemd: a `NOTIFY_SOCKET` it reads
//! `READY=1` from) on a queue of 200 rows that the fake ingest answers 500 ahead of 5,000 it
//! takes, at the default budgets but for the startup row budget, raised to 5,200:
//!
//! - (a) the 200 failed before and wait on their backoff timers, the 5,000 are fresh;
//! - (b) the morning after a day-long outage: every row failed 1 to 8 times before;
//!
//! and reads the startup drain's record (written before `READY=1`). Target: every good row
//! delivered before `READY=1`. Then the same 5,200 rows against an ingest that answers 500 to
//! everything and one that refuses connections. Target: the startup drain stops within three
//! batches (150 rows tried), so `READY=1` comes without waiting out the budget.
//!
//! Run: `cargo bench --bench head_of_line`. It takes seconds, so `GRADATA_BENCH_QUICK=1` changes
//! nothing but that its exit status judges nothing. Results go to stdout as a Markdown table, and
//! to `target/bench/head_of_line.json` in the suite's results format
//! (`benches/support/results.rs`), area `queue`, params `case` and `rows` (5,200): `delivered
//! before ready` (rows; target 5,000 in cases a and b), `tried` (rows tried and failed; target
//! 150 in case c), `pending after` (rows) and `ready` (ms, exec to `READY=1`). The exit status is
//! non-zero when a target is missed, after the file is written.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark harness"
)]
#![allow(
    dead_code,
    reason = "the shared fake server has helpers this benchmark does not use"
)]
#![allow(clippy::cast_precision_loss, reason = "figures")]

#[path = "support/results.rs"]
#[allow(
    dead_code,
    reason = "shared by the benchmarks, each of which uses a part"
)]
mod results;

#[path = "../tests/it/support/fake_ingest.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the tests, which use all of it"
)]
mod fake_ingest;

use std::collections::HashSet;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fake_ingest::{FakeIngest, Reply};
use gradata::store::{self, EventId, Kind, NewEvent, Store};
use results::{Better, Measurement, Series};

const FAILING: usize = 200;
const GOOD: usize = 5000;
/// The startup drain's row budget: the backlog, no more.
const STARTUP_ROWS: usize = FAILING + GOOD;
/// Three batches of the default size: the most rows an outage may cost before the drain stops.
const OUTAGE_BOUND: u64 = 3 * gradata::sync::DEFAULT_BATCH_SIZE as u64;
/// The bearer key both sides use.
const KEY: &str = "bench-key";

/// What the rows went through before the start.
#[derive(Debug, Clone, Copy)]
enum History {
    FailingHeadRetried,
    EveryRowFailedBefore,
}

/// What the startup drain's record said, and how long until `READY=1`.
struct Startup {
    ready: Duration,
    delivered: u64,
    retried: u64,
    remaining: u64,
    reason: String,
}

fn main() -> ExitCode {
    let quick = std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut missed = Vec::new();
    let mut out = Vec::new();
    println!(
        "| case | rows (failing + good) | delivered before READY=1 | rows tried and failed | pending after | reason | exec → READY=1 | target | met |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---|---|");
    for (case, name, history) in [
        (
            "a: failing head retried",
            "(a) 200 failing rows retried before, ahead of 5,000 fresh good rows",
            History::FailingHeadRetried,
        ),
        (
            "b: every row failed before",
            "(b) after a day-long outage: every row failed 1-8 times, 200 still fail",
            History::EveryRowFailedBefore,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let failing = fill(dir.path(), history);
        let server = FakeIngest::counting_failing(
            KEY,
            failing,
            Reply::status(500).body("cannot take this one"),
        );
        let startup = start(dir.path(), &server.url("/ingest"));
        let met = startup.delivered == GOOD as u64;
        report(
            name,
            &startup,
            &format!("{GOOD} delivered before READY=1"),
            met,
        );
        out.extend(measurements(case, &startup, Some(GOOD as f64), None));
        if !met {
            missed.push(name);
        }
    }
    for (case, name, refuse) in [
        (
            "c: ingest answers 500",
            "(c) an ingest answering 500 to everything",
            false,
        ),
        (
            "c: ingest refuses",
            "(c) an ingest refusing connections",
            true,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), History::FailingHeadRetried);
        let server = FakeIngest::replying(Reply::status(500));
        let url = if refuse {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            format!("http://127.0.0.1:{port}/ingest")
        } else {
            server.url("/ingest")
        };
        let startup = start(dir.path(), &url);
        let met = startup.reason == "no_progress" && startup.retried <= OUTAGE_BOUND;
        report(
            name,
            &startup,
            &format!("stops (no_progress) within {OUTAGE_BOUND} rows tried"),
            met,
        );
        out.extend(measurements(
            case,
            &startup,
            None,
            Some(OUTAGE_BOUND as f64),
        ));
        if !met {
            missed.push(name);
        }
    }
    let path = results::write("head_of_line", &out).unwrap();
    eprintln!("results: {}", path.display());
    if quick || missed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("targets missed: {missed:?}");
        ExitCode::FAILURE
    }
}

/// One case in the suite's results format, with its target on the rows delivered or tried.
fn measurements(
    case: &str,
    startup: &Startup,
    delivered_target: Option<f64>,
    tried_target: Option<f64>,
) -> Vec<Measurement> {
    let figure = |name: &str, unit: &str, better: Better| {
        Measurement::new("queue", "head_of_line", name, unit, better)
            .param("case", case)
            .param("rows", STARTUP_ROWS)
    };
    let delivered = figure("delivered before ready", "rows", Better::Higher);
    let tried = figure("tried", "rows", Better::Lower);
    let mut out = Vec::new();
    if let Some(target) = delivered_target {
        out.push(delivered.clone().series(Series::Target).runs([target]));
    }
    if let Some(target) = tried_target {
        out.push(tried.clone().series(Series::Target).runs([target]));
    }
    out.push(delivered.runs([startup.delivered as f64]));
    out.push(tried.runs([startup.retried as f64]));
    out.push(figure("pending after", "rows", Better::Lower).runs([startup.remaining as f64]));
    out.push(figure("ready", "ms", Better::Lower).runs([startup.ready.as_secs_f64() * 1000.0]));
    out
}

fn report(name: &str, startup: &Startup, target: &str, met: bool) {
    println!(
        "| {name} | {FAILING} + {GOOD} | {} | {} | {} | {} | {:.2} s | {target} | {} |",
        startup.delivered,
        startup.retried,
        startup.remaining,
        startup.reason,
        startup.ready.as_secs_f64(),
        if met { "yes" } else { "**no**" }
    );
}

/// Creates the store in `dir` with `FAILING + GOOD` rows shaped by `history`; returns the event
/// ids of the failing ones (the first `FAILING`).
fn fill(dir: &Path, history: History) -> HashSet<Vec<u8>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(&store::Options::new(dir)).unwrap();
    let events: Vec<NewEvent> = (0..STARTUP_ROWS)
        .map(|i| {
            let data = serde_json::json!({"session": i, "description": "x".repeat(200)});
            let id = EventId::parse(&format!("E{i:08}")).unwrap();
            NewEvent::new("brain-bench", id, Kind::Correction, &data)
        })
        .collect();
    runtime.block_on(store.enqueue(events)).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    let later = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        + 3600.0;
    let tried = match history {
        History::FailingHeadRetried => FAILING,
        History::EveryRowFailedBefore => STARTUP_ROWS,
    };
    conn.execute(
        "UPDATE sync_queue SET attempts = 1 + (id % 8), next_attempt_at = ?1 + id,
                last_status = 500, last_error = 'http 500: earlier'
          WHERE id IN (SELECT id FROM sync_queue ORDER BY id LIMIT ?2)",
        rusqlite::params![later, tried],
    )
    .unwrap();
    (0..FAILING)
        .map(|i| format!("E{i:08}").into_bytes())
        .collect()
}

/// Starts the service syncing to `url`, waits for `READY=1`, reads the startup drain's record, and
/// stops it.
fn start(data_dir: &Path, url: &str) -> Startup {
    let notify_path = data_dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let log_path = data_dir.join("stderr.log");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradata"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env_clear()
        .env("GRADATA_CONFIG", "")
        .env("HOME", data_dir)
        .env("GRADATA_API_KEY", KEY)
        .env("GRADATA_CLOUD_INGEST_URL", url)
        .env(
            "GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS",
            STARTUP_ROWS.to_string(),
        )
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let ready = loop {
        let n = notify.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|line| line == "READY=1")
        {
            break started.elapsed();
        }
    };
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let record: serde_json::Value = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|record| {
            record
                .to_string()
                .contains("sync queue drained at startup:")
        })
        .unwrap_or_else(|| panic!("no startup record in:\n{logs}"));
    let field = |name: &str| {
        record
            .get(name)
            .or_else(|| record.get("fields").and_then(|fields| fields.get(name)))
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {record}"))
    };
    let number = |name: &str| {
        let value = field(name);
        value
            .as_u64()
            .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("{name} is not a number in {record}"))
    };
    Startup {
        ready,
        delivered: number("delivered"),
        retried: number("retried"),
        remaining: number("remaining"),
        reason: field("reason").as_str().unwrap_or_default().to_owned(),
    }
}
