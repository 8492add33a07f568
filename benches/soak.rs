//! Soak benchmark: bounded resources over time, and no acknowledged event lost, while the cloud
//! flaps.
//!
//! Starts the release binary (`CARGO_BIN_EXE_gradata`, or `$GRADATA_BIN`) as `gradata serve` on a
//! passed loopback socket, with a fresh data directory, the default `synchronous=full`, and sync
//! enabled to an in-process fake ingest server (the lean counting one of
//! `tests/it/support/fake_ingest.rs`, which keeps only the idempotency keys it answered with a
//! 2xx). For `GRADATA_SOAK_SECS` seconds (default 150; 10 with `GRADATA_BENCH_QUICK=1`) it
//! drives a mixed, paced load (about 1,400 events/s, far below what the service can take, so that
//! what is measured is time, not saturation) from several client threads:
//!
//! - two threads posting single events to `POST /v1/events` over keep-alive connections;
//! - one posting batches of 25 events;
//! - one alternating `POST /correct` and `POST /log-event` (every 100th correction is over 16 KiB,
//!   which the service measures on its blocking pool; the others cycle through 1,000 distinct
//!   small ones, so that the brain learns from the first round and sees duplicates after it:
//!   `DISTINCT_CORRECTIONS` says why);
//! - one churning connections: a single event on a new connection with `Connection: close`, a
//!   connection opened and closed without a byte, half a request head then a close, a whole
//!   request then a close without reading the answer, `GET /health` on a new connection;
//! - one reading `GET /metrics`, `GET /health` and `GET /v1/queue` (pending and synced) a few
//!   times a second.
//!
//! Every event carries its own `event_id`; the ids the service answered with a 2xx are kept.
//! Meanwhile the fake ingest server goes through phases of `GRADATA_SOAK_SECS / 24` seconds
//! (between 2 and 20): healthy, 503 with `Retry-After: 1`, healthy, 500, healthy, slow (200
//! after 300 ms), healthy, refused (the server is stopped, so connections are refused, and started
//! again on the same port afterwards), and round again.
//!
//! Every two seconds (every second in runs under two minutes) it samples the service process:
//! `VmRSS` and `Threads` from `/proc/PID/status`, the entries of `/proc/PID/fd`, the sizes of
//! `system.db` and `system.db-wal`, and the pending and dead rows from `GET /metrics`. When the
//! load stops it heals the ingest server, waits until `/metrics` shows no pending row (a
//! condition, polled; a generous timeout only guards against a hang), and checks that every event
//! id the service acknowledged was answered 2xx by the ingest server at least once and that no row
//! is dead. Then it stops the service with SIGTERM and expects exit status 0.
//!
//! It reports, as a Markdown table on stdout, the medians of the first and of the last minute of
//! the load (a quarter of the run each when it is shorter than four minutes), and their ratio
//! late / early. It writes `target/bench/soak.json` in the suite's results format
//! (`benches/support/results.rs`), area and scenario `soak`: every sample's `VmRSS` as figure
//! `rss` (MiB) with param `t_s` (seconds since the service's exec), the plot of RSS over time;
//! then `acknowledged`, `delivered`, `load` (events/s), `load time`, `rss early`, `rss late`,
//! `rss peak`, `db late` and `queue empty after heal`, and, each with its limit below as a
//! target, `lost` (0), `dead` (0), `server errors` (0), `rss growth`, `descriptor growth`,
//! `thread growth` and `wal late`. After writing it, it exits non-zero when:
//!
//! - an acknowledged event never reached the ingest server, or a row is dead, or the service
//!   answered a request with a 5xx, or did not stop cleanly;
//! - the late median of **VmRSS** exceeds the early one by more than 25% plus 4 MiB. The early
//!   minute is taken while the outbox, SQLite's page caches (2 MiB per connection by default, three
//!   connections) and the allocator's free lists are still filling, and the late minute may hold
//!   a larger backlog in flight (a failing phase leaves up to about 40,000 rows pending, whose
//!   batches are read into memory as they are claimed): those are the slack, about 12 MiB. A
//!   leak of 32 bytes per event (27 MiB over the 840,000 events of a ten-minute run) fails a
//!   ten-minute run; the default run of 150 s (about 210,000 events) catches leaks four times
//!   larger. The brain's own data stops growing within the early window (its corrections repeat
//!   after the first 1,000), so what grows after it is not data the service must keep;
//! - the late median of **open file descriptors** exceeds the early one by more than 48: the
//!   service's pool of connections to the ingest server holds up to `sync.max_concurrency` (32)
//!   of them after a slow phase and far fewer after a healthy one, and the clients hold a few
//!   more; a descriptor leaked per request or per connection adds thousands;
//! - the late median of **threads** exceeds the early one by more than 8: the tokio blocking
//!   pool starts threads for the store's reads and large corrections and lets them go after ten
//!   idle seconds, so their number moves by a few with the phase; a thread leaked per request,
//!   connection or drain adds hundreds;
//! - the late median of the **WAL's size** exceeds 64 MiB and twice the early one: SQLite reuses
//!   the WAL from its start once a checkpoint has copied it all, and the writer's automatic
//!   checkpoint at 8,000 pages (32 MiB) is the backstop, so a WAL past twice that is one that is
//!   never reset.
//!
//! `system.db` itself is reported, not judged: delivered rows are kept for
//! `store.synced_retention_days` (here 0, so the purge an hour's housekeeping runs first after 60
//! seconds deletes every delivered row once) and its size follows the number of events in that
//! window.
//!
//! The service runs with `sync.backoff_cap_secs = 10` (default 300), so that rows whose backoff
//! grew during the failing phases are due again within seconds of the heal and the final wait is
//! short; every other setting is the default.
//!
//! The growth limits are not judged in the quick mode (its windows of a few seconds fall in the
//! service's warm-up and are too short to judge growth by); the lost, dead and 5xx checks are.
//!
//! Run: `cargo bench --bench soak` (release profile, LTO), or `benches/run.sh --only soak`;
//! `GRADATA_SOAK_SECS=600` for a ten-minute soak.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark harness"
)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "figures"
)]

#[path = "soak/client.rs"]
mod client;
#[path = "../tests/it/support/fake_ingest.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the tests, which use all of it"
)]
mod fake_ingest;
#[path = "soak/figures.rs"]
mod figures;
#[path = "soak/ingest.rs"]
mod ingest;
#[path = "support/results.rs"]
#[allow(
    dead_code,
    reason = "shared by the benchmarks, each of which uses a part"
)]
mod results;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use client::{Client, request_bytes};
use command_fds::{CommandFdExt, FdMapping};
use figures::Figures;
use gradata::store;
use ingest::Ingest;
use serde_json::{Value, json};

/// The bearer key the service sends and the fake ingest server expects.
const KEY: &str = "soak-key";
/// Length of the load, in seconds, unless `GRADATA_SOAK_SECS` says otherwise: long enough for
/// the growth windows to mean something while the whole run stays near three minutes, and a
/// few seconds in the quick mode, which only proves the benchmark works.
const DEFAULT_SECS: u64 = 150;
const QUICK_SECS: u64 = 10;
/// Events per batch request.
const BATCH: usize = 25;
/// How many distinct small corrections the correction thread cycles through. Every one of them
/// reinforces the same lesson, whose `Corrections:` line (0.6.0's proof chain, kept whole) gains
/// the id of each new one, and `lessons.md` is rewritten and parsed again for each: a chain
/// without end would make the brain's data, and the memory of writing it, grow for the whole
/// run. Once the cycle has gone round (10 s into the load, 100 corrections a second) every
/// correction is a duplicate within the session (`observation_dedup`): recorded, queued and
/// indexed as before, but it teaches nothing, as a user's repeated edit does.
const DISTINCT_CORRECTIONS: u64 = 1000;

/// Growth limits, justified in the module documentation.
const RSS_RATIO: f64 = 1.25;
const RSS_SLACK_KIB: f64 = 4.0 * 1024.0;
const FD_SLACK: f64 = 48.0;
const THREAD_SLACK: f64 = 8.0;
const WAL_FLOOR_KIB: f64 = 64.0 * 1024.0;
const WAL_RATIO: f64 = 2.0;

fn main() -> ExitCode {
    let quick = std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let secs = std::env::var("GRADATA_SOAK_SECS").ok().map_or(
        if quick { QUICK_SECS } else { DEFAULT_SECS },
        |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("GRADATA_SOAK_SECS={v:?} is not a number of seconds"))
        },
    );
    let duration = Duration::from_secs(secs.max(8));
    let phase = (duration / 24).clamp(Duration::from_secs(2), Duration::from_secs(20));
    let sample_every = if duration < Duration::from_secs(120) {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    };
    let window = (duration / 4).min(Duration::from_secs(60));
    eprintln!(
        "soak: {} s of load, ingest phases of {} s, a sample every {} s, windows of {} s; service: {}",
        duration.as_secs(),
        phase.as_secs(),
        sample_every.as_secs(),
        window.as_secs(),
        binary().display()
    );

    let ingest = Ingest::start(phase);
    let spawned = Instant::now();
    let service = Service::start(&ingest.url());
    let started = Instant::now();
    // The RSS plot counts from the service's exec, the windows from the start of the load.
    let since_spawn = started - spawned;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let workers: Vec<JoinHandle<Vec<u64>>> = Worker::ALL
        .iter()
        .enumerate()
        .map(|(n, &worker)| {
            let (stop, tally, addr) = (stop.clone(), tally.clone(), service.addr);
            std::thread::Builder::new()
                .name(format!("soak-{n}"))
                .spawn(move || worker.run(n as u64, addr, &stop, &tally))
                .unwrap()
        })
        .collect();

    let mut samples = Vec::new();
    let mut next = started;
    while started.elapsed() < duration {
        let sample = service.sample(started.elapsed(), ingest.phase());
        eprintln!("{}", sample.line());
        samples.push(sample);
        next += sample_every;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged: Vec<u64> = Vec::new();
    for worker in workers {
        acknowledged.extend(worker.join().unwrap());
    }
    let load_secs = started.elapsed().as_secs_f64();

    // Heal the cloud and wait for the queue to empty.
    let ingest = ingest.heal();
    let healed = Instant::now();
    let guard = Duration::from_secs(300);
    let (pending, dead) = loop {
        let (pending, dead) = service.queue();
        if pending == 0 {
            break (pending, dead);
        }
        assert!(
            healed.elapsed() < guard,
            "{pending} rows still pending {guard:?} after the ingest server healed; stderr:\n{}",
            service.stderr_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let drained_in = healed.elapsed();
    let delivered = ingest.delivered();
    let (ingest_requests, _) = ingest.server.counted();
    let missing: Vec<String> = acknowledged
        .iter()
        .filter(|&&id| !delivered.contains(&id))
        .map(|&id| event_id(id >> 40, id & ((1 << 40) - 1)))
        .collect();
    let final_sample = service.sample(started.elapsed(), "healed");
    let exit = service.stop();

    println!(
        "| measure | first {} s, median | last {} s, median | late / early | fails when late is over |",
        window.as_secs(),
        window.as_secs()
    );
    println!("|---|---:|---:|---:|---|");
    let early: Vec<&Sample> = samples.iter().filter(|s| s.at < window).collect();
    let late: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at + window >= duration)
        .collect();
    let windows = |get: fn(&Sample) -> f64| -> (f64, f64) {
        (
            median(early.iter().map(|s| get(s)).collect()),
            median(late.iter().map(|s| get(s)).collect()),
        )
    };
    let mut missed = Vec::new();
    let mut judge = |name: &str, unit: &str, (e, l): (f64, f64), limit: Option<Limit>| {
        let verdict = match &limit {
            Some(limit) if l > (limit.bound)(e) => {
                missed.push(format!(
                    "{name}: late median {l:.0} {unit} over {:.0} {unit} ({})",
                    (limit.bound)(e),
                    limit.rule
                ));
                format!("{} **FAIL**", limit.rule)
            }
            Some(limit) => format!("{} ok", limit.rule),
            None => "(reported only)".to_owned(),
        };
        println!(
            "| {name} | {e:.0} {unit} | {l:.0} {unit} | {:.2} | {verdict} |",
            if e > 0.0 { l / e } else { f64::NAN }
        );
    };
    let rss = windows(|s| s.rss_kib as f64);
    let fds = windows(|s| s.fds as f64);
    let threads = windows(|s| s.threads as f64);
    let wal = windows(|s| s.wal_bytes as f64 / 1024.0);
    let db = windows(|s| s.db_bytes as f64 / 1024.0);
    judge("VmRSS", "KiB", rss, Some(RSS_LIMIT));
    judge("open file descriptors", "", fds, Some(FD_LIMIT));
    judge("threads", "", threads, Some(THREAD_LIMIT));
    judge("system.db-wal", "KiB", wal, Some(WAL_LIMIT));
    judge("system.db", "KiB", db, None);
    judge("pending rows", "", windows(|s| s.pending as f64), None);
    println!();
    let max = |get: fn(&Sample) -> u64| samples.iter().map(get).max().unwrap_or(0);
    println!(
        "- load: {load_secs:.0} s, {} events acknowledged ({:.0}/s), {} samples; peaks: VmRSS {} KiB, {} fds, {} threads, WAL {} KiB, {} pending rows",
        acknowledged.len(),
        acknowledged.len() as f64 / load_secs,
        samples.len(),
        max(|s| s.rss_kib),
        max(|s| s.fds),
        max(|s| s.threads),
        max(|s| s.wal_bytes) / 1024,
        max(|s| s.pending),
    );
    println!("- requests by route and status: {}", tally.summary());
    println!(
        "- ingest server: {ingest_requests} requests to the last instance, {} distinct events answered 2xx over all instances; queue empty {:.1} s after the heal ({pending} pending, {dead} dead)",
        delivered.len(),
        drained_in.as_secs_f64()
    );
    println!(
        "- after the heal: VmRSS {} KiB, {} fds, {} threads, WAL {} KiB, system.db {} KiB; stopped with {exit}",
        final_sample.rss_kib,
        final_sample.fds,
        final_sample.threads,
        final_sample.wal_bytes / 1024,
        final_sample.db_bytes / 1024
    );

    let figures = Figures {
        since_spawn,
        samples: samples.iter().chain([&final_sample]).copied().collect(),
        load_secs,
        acknowledged: acknowledged.len(),
        lost: missing.len(),
        dead,
        server_errors: tally.server_errors(),
        drained_in,
        rss,
        fds,
        threads,
        wal,
        db,
    };
    let path = results::write("soak", &figures.measurements()).unwrap();
    eprintln!("results: {}", path.display());

    // Growth is judged only in a full run: the quick mode's windows of a few seconds fall in the
    // service's warm-up, so their medians say nothing of growth.
    let mut failures = if quick { Vec::new() } else { missed };
    if !missing.is_empty() {
        failures.push(format!(
            "{} acknowledged events never reached the ingest server, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    if dead > 0 {
        failures.push(format!("{dead} rows are dead"));
    }
    if tally.server_errors() > 0 {
        failures.push(format!(
            "the service answered {} requests with a 5xx",
            tally.server_errors()
        ));
    }
    if !exit.success() {
        failures.push(format!("the service did not stop cleanly: {exit}"));
    }
    if failures.is_empty() {
        println!("- verdict: every acknowledged event delivered; no growth beyond the limits");
        ExitCode::SUCCESS
    } else {
        eprintln!("soak failed:\n{}", failures.join("\n"));
        ExitCode::FAILURE
    }
}

/// A late median over `bound(early median)` fails the run; `rule` says so in the report.
struct Limit {
    rule: &'static str,
    bound: fn(f64) -> f64,
}

const RSS_LIMIT: Limit = Limit {
    rule: "early × 1.25 + 4 MiB",
    bound: |e| e * RSS_RATIO + RSS_SLACK_KIB,
};
const FD_LIMIT: Limit = Limit {
    rule: "early + 48",
    bound: |e| e + FD_SLACK,
};
const THREAD_LIMIT: Limit = Limit {
    rule: "early + 8",
    bound: |e| e + THREAD_SLACK,
};
const WAL_LIMIT: Limit = Limit {
    rule: "early × 2 and 64 MiB",
    bound: |e| (e * WAL_RATIO).max(WAL_FLOOR_KIB),
};

fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "a window without samples");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The event id of a worker's `n`-th event; [`Worker::run`] returns them packed as
/// `worker << 40 | n`.
fn event_id(worker: u64, n: u64) -> String {
    format!("soak-{worker}-{n}")
}

fn parse_event_id(key: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(key).ok()?.strip_prefix("soak-")?;
    let (worker, n) = text.split_once('-')?;
    Some(worker.parse::<u64>().ok()? << 40 | n.parse::<u64>().ok()?)
}

/// The service binary: this build's, or `$GRADATA_BIN`.
fn binary() -> PathBuf {
    std::env::var_os("GRADATA_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gradata")),
        PathBuf::from,
    )
}

// ---------------------------------------------------------------------------------------------
// The service.

/// One reading of the service process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    phase: &'static str,
    rss_kib: u64,
    threads: u64,
    fds: u64,
    db_bytes: u64,
    wal_bytes: u64,
    pending: u64,
    dead: u64,
}

impl Sample {
    fn line(&self) -> String {
        format!(
            "t={:>5.0}s phase={:<8} rss={} KiB fds={} threads={} db={} KiB wal={} KiB pending={} dead={}",
            self.at.as_secs_f64(),
            self.phase,
            self.rss_kib,
            self.fds,
            self.threads,
            self.db_bytes / 1024,
            self.wal_bytes / 1024,
            self.pending,
            self.dead
        )
    }
}

/// `gradata serve` on a passed loopback socket, syncing to the fake ingest server.
struct Service {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    /// Reads the service's notifications until it exits: its `sd_notify` send blocks once the
    /// socket's queue (10 datagrams by default) is full, as systemd would never let it be.
    _notify: JoinHandle<()>,
}

impl Service {
    fn start(ingest_url: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut command = Command::new(binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("GRADATA_CONFIG", "")
            .env("GRADATA_API_KEY", KEY)
            .env("GRADATA_CLOUD_INGEST_URL", ingest_url)
            .env("GRADATA_SYNC_BACKOFF_CAP_SECS", "10")
            .env("GRADATA_STORE_SYNCED_RETENTION_DAYS", "0")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("LISTEN_FDS", "1")
            .env("LISTEN_FDNAMES", "http")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--log-format", "text", "serve"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .fd_mappings(vec![FdMapping {
                parent_fd: listener.as_fd().try_clone_to_owned().unwrap(),
                child_fd: 3,
            }])
            .unwrap();
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
        // The thread is never joined: it waits in `recv` until the bench process exits.
        notify.set_read_timeout(None).unwrap();
        let reader = std::thread::Builder::new()
            .name("soak-notify".to_owned())
            .spawn(move || while notify.recv(&mut buf).is_ok() {})
            .unwrap();
        Service {
            child,
            addr,
            dir,
            _notify: reader,
        }
    }

    fn data(&self, file: &str) -> PathBuf {
        self.dir.path().join("data").join(file)
    }

    fn sample(&self, at: Duration, phase: &'static str) -> Sample {
        let proc = PathBuf::from(format!("/proc/{}", self.child.id()));
        let status = std::fs::read_to_string(proc.join("status")).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap()
        };
        let fds = std::fs::read_dir(proc.join("fd")).unwrap().count() as u64;
        let size = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        let (pending, dead) = self.queue();
        Sample {
            at,
            phase,
            rss_kib: field("VmRSS:"),
            threads: field("Threads:"),
            fds,
            db_bytes: size(&self.data(store::DATABASE_FILE)),
            wal_bytes: size(&self.data(&format!("{}-wal", store::DATABASE_FILE))),
            pending,
            dead,
        }
    }

    /// Pending and dead rows, from `GET /metrics`.
    fn queue(&self) -> (u64, u64) {
        let mut client = Client::new(self.addr);
        let (status, body) = client
            .request("GET", "/metrics", None, true)
            .unwrap_or_else(|err| panic!("GET /metrics: {err}"));
        assert_eq!(status, 200, "GET /metrics");
        let text = String::from_utf8_lossy(&body);
        let rows = |state: &str| -> u64 {
            let prefix = format!("gradata_queue_rows{{state=\"{state}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
        };
        (rows("pending"), rows("dead"))
    }

    fn stderr_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGTERM, and the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        if !status.success() {
            eprintln!("service stderr:\n{}", self.stderr_tail());
        }
        status
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load.

/// Requests by route and status, and connection failures, over every worker.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<(String, u16), u64>>,
    io_errors: Mutex<u64>,
}

impl Tally {
    fn count(&self, route: &str, status: u16) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry((route.to_owned(), status))
            .or_default() += 1;
    }

    fn io_error(&self) {
        *self.io_errors.lock().unwrap() += 1;
    }

    fn server_errors(&self) -> u64 {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, status), _)| *status >= 500)
            .map(|(_, n)| n)
            .sum()
    }

    fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .counts
            .lock()
            .unwrap()
            .iter()
            .map(|((route, status), n)| format!("{route} {status}: {n}"))
            .collect();
        parts.push(format!(
            "connection errors: {}",
            self.io_errors.lock().unwrap()
        ));
        parts.join(", ")
    }
}

/// What one client thread does.
#[derive(Debug, Clone, Copy)]
enum Worker {
    Single,
    Batch,
    CorrectAndLog,
    Churn,
    Admin,
}

impl Worker {
    const ALL: [Worker; 6] = [
        Worker::Single,
        Worker::Single,
        Worker::Batch,
        Worker::CorrectAndLog,
        Worker::Churn,
        Worker::Admin,
    ];

    /// The pause between two requests.
    fn interval(self) -> Duration {
        match self {
            Worker::Single => Duration::from_micros(2500),
            Worker::Batch => Duration::from_millis(50),
            Worker::CorrectAndLog => Duration::from_millis(5),
            Worker::Churn => Duration::from_millis(10),
            Worker::Admin => Duration::from_millis(250),
        }
    }

    /// Runs until `stop`; returns the events acknowledged, packed as `worker << 40 | n`.
    fn run(self, worker: u64, addr: SocketAddr, stop: &AtomicBool, tally: &Tally) -> Vec<u64> {
        let mut acknowledged = Vec::new();
        let mut client = Client::new(addr);
        let mut next_id = 0u64;
        let mut id = || {
            let n = next_id;
            next_id += 1;
            (event_id(worker, n), worker << 40 | n)
        };
        let mut next = Instant::now();
        for round in 0u64.. {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match self {
                Worker::Single => {
                    let (event_id, packed) = id();
                    let body = json!({"kind": "event", "event_id": event_id,
                        "data": {"tool": "grep", "round": round}});
                    if post(&mut client, tally, "/v1/events", &body, false) {
                        acknowledged.push(packed);
                    }
                }
                Worker::Batch => {
                    let (events, ids): (Vec<Value>, Vec<u64>) = (0..BATCH)
                        .map(|k| {
                            let (event_id, packed) = id();
                            let kind = ["correction", "lesson", "event"][k % 3];
                            (
                                json!({"kind": kind, "event_id": event_id,
                                    "data": {"text": "prefer rg over grep", "k": k}}),
                                packed,
                            )
                        })
                        .unzip();
                    if post(
                        &mut client,
                        tally,
                        "/v1/events",
                        &Value::Array(events),
                        false,
                    ) {
                        acknowledged.extend(ids);
                    }
                }
                Worker::CorrectAndLog => {
                    let (event_id, packed) = id();
                    let ok = if round % 2 == 0 {
                        let body = if round % 200 == 0 {
                            let text = "a line of a large file\n".repeat(800);
                            json!({"old_string": text, "new_string": format!("{text}one more line\n"),
                                "file_path": "src/big.rs", "session_id": "soak", "event_id": event_id})
                        } else {
                            let n = round / 2 % DISTINCT_CORRECTIONS;
                            json!({"old_string": format!("teh cat {n}"),
                                "new_string": format!("the cat {n}"),
                                "file_path": "notes.md", "session_id": "soak", "event_id": event_id})
                        };
                        post(&mut client, tally, "/correct", &body, false)
                    } else {
                        let body = json!({"event_type": "tool_use", "data": {"tool": "rg"},
                            "session_id": "soak", "event_id": event_id});
                        post(&mut client, tally, "/log-event", &body, false)
                    };
                    if ok {
                        acknowledged.push(packed);
                    }
                }
                Worker::Churn => match round % 5 {
                    0 => {
                        let (event_id, packed) = id();
                        let body = json!({"kind": "lesson", "event_id": event_id,
                            "data": {"text": "close after one"}});
                        let mut once = Client::new(addr);
                        if post(&mut once, tally, "/v1/events", &body, true) {
                            acknowledged.push(packed);
                        }
                    }
                    1 => drop(TcpStream::connect(addr)),
                    2 => {
                        if let Ok(mut stream) = TcpStream::connect(addr) {
                            let _ = stream.write_all(b"POST /v1/events HTTP/1.1\r\nHost: 127");
                        }
                    }
                    3 => {
                        // A whole request, then gone before the answer: its outcome is unknown,
                        // so its event is not counted as acknowledged.
                        let (event_id, _) = id();
                        let body =
                            json!({"kind": "event", "event_id": event_id, "data": {}}).to_string();
                        if let Ok(mut stream) = TcpStream::connect(addr) {
                            let _ = stream.write_all(
                                request_bytes(addr, "POST", "/v1/events", Some(&body), true)
                                    .as_slice(),
                            );
                        }
                    }
                    _ => {
                        let mut once = Client::new(addr);
                        get(&mut once, tally, "/health", true);
                    }
                },
                Worker::Admin => {
                    let path = match round % 4 {
                        0 => "/metrics",
                        1 => "/health",
                        2 => "/v1/queue?state=pending&limit=100",
                        _ => "/v1/queue?state=synced&limit=10",
                    };
                    get(&mut client, tally, path, false);
                }
            }
            next += self.interval();
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            } else {
                // Behind: carry on from now rather than burst to catch up.
                next = now;
            }
        }
        acknowledged
    }
}

/// POSTs `body`; whether the service answered 2xx.
fn post(client: &mut Client, tally: &Tally, route: &str, body: &Value, close: bool) -> bool {
    match client.request("POST", route, Some(&body.to_string()), close) {
        Ok((status, _)) => {
            tally.count(route, status);
            (200..300).contains(&status)
        }
        Err(_) => {
            tally.io_error();
            false
        }
    }
}

fn get(client: &mut Client, tally: &Tally, path: &str, close: bool) {
    let route = path.split('?').next().unwrap_or(path);
    match client.request("GET", path, None, close) {
        Ok((status, _)) => tally.count(route, status),
        Err(_) => tally.io_error(),
    }
}
