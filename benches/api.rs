//! Local API throughput benchmark (issue: local HTTP API).
//!
//! Runs the release binary (`CARGO_BIN_EXE_gradata`) as `gradata serve` on a passed loopback
//! socket, with the default `synchronous=full` and sync disabled, so only the API and the outbox
//! are measured, and loads it with `wrk` (Debian's `wrk` package: one load thread, 64 concurrent
//! keep-alive connections, a fixed duration per run; a C load generator, so it takes less of the
//! two cores from the service than one built on a general HTTP client library):
//!
//! 1. single-event `POST /v1/events`: events/s and p99 latency;
//! 2. the same through `POST /correct`;
//! 3. batches of 100 events per `POST /v1/events`: events/s.
//!
//! After every load run the outbox is counted with a separate SQLite connection: every event
//! `wrk` saw acknowledged (2xx) must be there, and at most the requests still in flight when `wrk`
//! stopped (one per connection) may be there beyond those. Then, with sync enabled to an idle, healthy fake
//! ingest server (`tests/it/support/fake_ingest.rs`):
//!
//! 4. enqueue-to-delivered latency over 200 sequential events: from the 2xx of `POST /v1/events`
//!    until the fake server has received the event.
//!
//! And the limits, measured in the same run on the same machine:
//!
//! 5. a trivial HTTP handler (an axum route answering 200 with a small JSON body, in this process
//!    on its own runtime) under the same `wrk` load; and raw SQLite group commit: the library's
//!    `Store::enqueue` from 64 concurrent tasks, one event each (and 100 each, the limit of 3),
//!    `synchronous=full`; and the service itself with `synchronous=normal` under the load of 1, which
//!    has no fsync to wait for: how much of the rate the service's own CPU allows.
//!
//! Run: `benches/api.sh` (installs `wrk` if missing), or `cargo bench --bench api` with `wrk` on
//! `PATH` (or in `$WRK`). Nothing is installed by the benchmark itself. `GRADATA_BIN=<path>` runs
//! another build of the service instead, to compare two builds in the same setting. Results go to
//! stdout as a Markdown table; each figure is the median of three runs. `GRADATA_BENCH_QUICK=1`:
//! one run of 2 s loads, and a fifth of the events for the raw store.
//! `GRADATA_BENCH_CAPTURE_CLIENTS=1,16,256`: scenarios 1 and 3 and the trivial handler are also
//! loaded over each of these numbers of connections (64 is always measured), for capture against
//! concurrency.
//!
//! The figures also go to `target/bench/api.json` in the suite's results format
//! (`benches/support/results.rs`), every run, with params `route`, `batch` (events per request),
//! `clients` and `synchronous`: series `gradata` (the service, also with `synchronous=normal`),
//! `limit` (the trivial handler for one event per request, on either route; raw group commit of
//! 100-event batches for the batches) and `target` (the project's issue: one event per request at
//! 60% of the trivial handler, p99 under 20 ms, batches at 100,000 events/s); raw group commit
//! of single events as figure `store group commit`; the enqueue-to-delivered latencies as figures
//! `delivery p50`, `delivery p99` and `delivery from send p50` (target: p50 under 10 ms).

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

#[path = "../tests/it/support/fake_ingest.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the tests, which use all of it"
)]
mod fake_ingest;
#[path = "support/results.rs"]
#[allow(
    dead_code,
    reason = "shared by the benchmarks, each of which uses a part"
)]
mod results;

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use fake_ingest::{FakeIngest, Reply};
use gradata::store::{self, EventId, Kind, NewEvent, Store};
use results::{Better, Measurement, Series};
use serde_json::{Value, json};

/// The service binary's allocator, so the in-process limits run as the service would.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent keep-alive connections of every load run (`GRADATA_BENCH_CAPTURE_CLIENTS` adds
/// others).
const CONNECTIONS: usize = 64;
/// Runs per scenario; the median is reported.
const RUNS: usize = 3;
/// Length of every load run (`load_seconds`).
const LOAD_SECONDS: u32 = 5;
/// Events per request of the batch scenario.
const BATCH_SIZE: usize = 100;
/// Sequential events of the latency scenario.
const LATENCY_EVENTS: usize = 200;
/// Events of the raw store scenario, single events and batches.
const STORE_EVENTS: usize = 60_000;
const STORE_BATCH_EVENTS: usize = 200_000;
/// The quick mode: one run of shorter loads, a fifth of the events for the raw store (both
/// counts stay whole numbers of 100-event calls, which the store scenario checks exactly).
const QUICK_RUNS: usize = 1;
const QUICK_LOAD_SECONDS: u32 = 2;
const QUICK_STORE_DIVISOR: usize = 5;
/// The targets: one event per request at this share of the trivial handler's rate (the project's
/// issue 25) with a p99 under `SINGLE_P99_TARGET_MS`; batches of 100 at `BATCH_TARGET` events/s;
/// enqueue to delivered under `DELIVERY_P50_TARGET_MS` at the median.
const TARGET_SHARE_OF_TRIVIAL: f64 = 0.60;
const SINGLE_P99_TARGET_MS: f64 = 20.0;
const BATCH_TARGET: f64 = 100_000.0;
const DELIVERY_P50_TARGET_MS: f64 = 10.0;

/// The numbers of connections of `GRADATA_BENCH_CAPTURE_CLIENTS` other than `CONNECTIONS`, in
/// its order.
fn other_clients() -> Vec<usize> {
    let Ok(list) = std::env::var("GRADATA_BENCH_CAPTURE_CLIENTS") else {
        return Vec::new();
    };
    let mut clients = Vec::new();
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let n: usize = item.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            panic!("GRADATA_BENCH_CAPTURE_CLIENTS: {item:?} is not a number of connections")
        });
        if n != CONNECTIONS && !clients.contains(&n) {
            clients.push(n);
        }
    }
    clients
}

/// The scenarios loaded at another number of connections (`GRADATA_BENCH_CAPTURE_CLIENTS`): each
/// run's figures, in the order of the runs.
struct Sweep {
    clients: usize,
    single_rate: Vec<f64>,
    single_p99: Vec<f64>,
    batch_rate: Vec<f64>,
    batch_p99: Vec<f64>,
    trivial_rate: Vec<f64>,
    trivial_p99: Vec<f64>,
}

/// `GRADATA_BENCH_QUICK=1`: the suite's quick check that the benchmark works, not its figures.
fn quick() -> bool {
    std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Length of every load run.
fn load_seconds() -> u32 {
    if quick() {
        QUICK_LOAD_SECONDS
    } else {
        LOAD_SECONDS
    }
}

/// How the loaded service commits: as shipped (`synchronous=full`), or without the WAL's fsync,
/// which shows in the same run how much of the rate the service's own CPU allows.
#[derive(Clone, Copy)]
enum Synchronous {
    Full,
    NoFsync,
}

fn main() {
    let wrk = wrk();
    // `wrk -v` prints its version and exits with status 1.
    let version = Command::new(&wrk).arg("-v").output().unwrap();
    eprintln!(
        "load generator: {} ({}); service: {}",
        String::from_utf8_lossy(&version.stdout).trim(),
        wrk.display(),
        binary().display()
    );

    let event = json!({"kind": "correction", "data": correction()});
    let single = event.to_string().into_bytes();
    let correct = correction().to_string().into_bytes();
    let batch = Value::Array(vec![event; BATCH_SIZE])
        .to_string()
        .into_bytes();

    let mut table = Vec::new();
    let mut measure = |name: &str, unit: &str, samples: Vec<f64>| {
        let median = median(&samples);
        // Rates as whole numbers, latencies to the hundredth of a millisecond.
        let decimals = if unit == "ms" { 2 } else { 0 };
        let runs: Vec<String> = samples.iter().map(|s| format!("{s:.decimals$}")).collect();
        table.push(format!(
            "| {name} | {median:.decimals$} {unit} | {} |",
            runs.join(", ")
        ));
        median
    };

    // 1–3: the API and the outbox, sync disabled.
    let mut single_rate = Vec::new();
    let mut single_p99 = Vec::new();
    let mut correct_rate = Vec::new();
    let mut correct_p99 = Vec::new();
    let mut batch_rate = Vec::new();
    let mut batch_p99 = Vec::new();
    let mut no_fsync_rate = Vec::new();
    let mut trivial_rate = Vec::new();
    let mut trivial_p99 = Vec::new();
    let mut store_rate = Vec::new();
    let mut store_batch_rate = Vec::new();
    let trivial = TrivialServer::start();
    let (runs, store_divisor) = if quick() {
        (QUICK_RUNS, QUICK_STORE_DIVISOR)
    } else {
        (RUNS, 1)
    };
    let mut sweeps: Vec<Sweep> = other_clients()
        .into_iter()
        .map(|clients| Sweep {
            clients,
            single_rate: Vec::new(),
            single_p99: Vec::new(),
            batch_rate: Vec::new(),
            batch_p99: Vec::new(),
            trivial_rate: Vec::new(),
            trivial_p99: Vec::new(),
        })
        .collect();
    for run in 1..=runs {
        eprintln!("run {run}/{runs}");
        let full = Synchronous::Full;
        let (rate, p99) = load_service(&wrk, "/v1/events", &single, 1, full, CONNECTIONS);
        single_rate.push(rate);
        single_p99.push(p99);
        let (rate, p99) = load_service(&wrk, "/correct", &correct, 1, full, CONNECTIONS);
        correct_rate.push(rate);
        correct_p99.push(p99);
        let (rate, p99) = load_service(&wrk, "/v1/events", &batch, BATCH_SIZE, full, CONNECTIONS);
        batch_rate.push(rate);
        batch_p99.push(p99);
        let no_fsync = Synchronous::NoFsync;
        let (rate, _) = load_service(&wrk, "/v1/events", &single, 1, no_fsync, CONNECTIONS);
        no_fsync_rate.push(rate);
        let load = Load::run(&wrk, &trivial.url(), &single, CONNECTIONS);
        assert_eq!(
            load.ok, load.requests,
            "the trivial handler failed requests"
        );
        trivial_rate.push(load.rate);
        trivial_p99.push(load.p99_ms);
        for sweep in &mut sweeps {
            let clients = sweep.clients;
            let (rate, p99) = load_service(&wrk, "/v1/events", &single, 1, full, clients);
            sweep.single_rate.push(rate);
            sweep.single_p99.push(p99);
            let (rate, p99) = load_service(&wrk, "/v1/events", &batch, BATCH_SIZE, full, clients);
            sweep.batch_rate.push(rate);
            sweep.batch_p99.push(p99);
            let load = Load::run(&wrk, &trivial.url(), &single, clients);
            assert_eq!(
                load.ok, load.requests,
                "the trivial handler failed requests"
            );
            sweep.trivial_rate.push(load.rate);
            sweep.trivial_p99.push(load.p99_ms);
        }
        store_rate.push(store_group_commit(STORE_EVENTS / store_divisor, 1));
        store_batch_rate.push(store_group_commit(
            STORE_BATCH_EVENTS / store_divisor,
            BATCH_SIZE,
        ));
    }
    let latency = delivery_latency();

    // Before the table, which takes the samples: the results keep every run in its order.
    let capture = |figure: &str, unit: &str, better: Better| {
        Measurement::new("capture", "api", figure, unit, better).param("clients", CONNECTIONS)
    };
    let on = |measurement: Measurement, route: &str, per_request: usize, synchronous: &str| {
        measurement
            .param("route", route)
            .param("batch", per_request)
            .param("synchronous", synchronous)
    };
    let rate = || capture("throughput", "events/s", Better::Higher);
    let p99 = || capture("p99", "ms", Better::Lower);
    let sweep_figures = sweeps.iter().flat_map(|sweep| {
        let at = |measurement: Measurement, per_request: usize| {
            on(measurement, "/v1/events", per_request, "full").param("clients", sweep.clients)
        };
        [
            at(rate(), 1).runs(sweep.single_rate.clone()),
            at(p99(), 1).runs(sweep.single_p99.clone()),
            at(rate(), BATCH_SIZE).runs(sweep.batch_rate.clone()),
            at(p99(), BATCH_SIZE).runs(sweep.batch_p99.clone()),
            at(rate(), 1)
                .series(Series::Limit)
                .runs(sweep.trivial_rate.clone()),
            at(p99(), 1)
                .series(Series::Limit)
                .runs(sweep.trivial_p99.clone()),
        ]
    });
    let mut figures = vec![
        on(rate(), "/v1/events", 1, "full").runs(single_rate.clone()),
        on(p99(), "/v1/events", 1, "full").runs(single_p99.clone()),
        on(rate(), "/v1/events", 1, "full")
            .series(Series::Target)
            .runs([TARGET_SHARE_OF_TRIVIAL * results::median(&trivial_rate)]),
        on(p99(), "/v1/events", 1, "full")
            .series(Series::Target)
            .runs([SINGLE_P99_TARGET_MS]),
        on(rate(), "/correct", 1, "full").runs(correct_rate.clone()),
        on(p99(), "/correct", 1, "full").runs(correct_p99.clone()),
        on(rate(), "/v1/events", BATCH_SIZE, "full").runs(batch_rate.clone()),
        on(p99(), "/v1/events", BATCH_SIZE, "full").runs(batch_p99.clone()),
        on(rate(), "/v1/events", BATCH_SIZE, "full")
            .series(Series::Limit)
            .runs(store_batch_rate.clone()),
        on(rate(), "/v1/events", BATCH_SIZE, "full")
            .series(Series::Target)
            .runs([BATCH_TARGET]),
        on(rate(), "/v1/events", 1, "normal").runs(no_fsync_rate.clone()),
        capture("store group commit", "events/s", Better::Higher)
            .series(Series::Limit)
            .param("events_per_call", 1)
            .param("synchronous", "full")
            .runs(store_rate.clone()),
    ];
    // The trivial handler answers one event per request the same whichever route it stands for.
    for route in ["/v1/events", "/correct"] {
        figures.push(
            on(rate(), route, 1, "full")
                .series(Series::Limit)
                .runs(trivial_rate.clone()),
        );
        figures.push(
            on(p99(), route, 1, "full")
                .series(Series::Limit)
                .runs(trivial_p99.clone()),
        );
    }
    let delivery = |figure: &str, ms: f64| {
        Measurement::new("capture", "api", figure, "ms", Better::Lower)
            .param("events", LATENCY_EVENTS)
            .runs([ms])
    };
    figures.push(delivery("delivery p50", latency.after_ack_p50));
    figures.push(delivery("delivery p50", DELIVERY_P50_TARGET_MS).series(Series::Target));
    figures.push(delivery("delivery p99", latency.after_ack_p99));
    figures.push(delivery("delivery from send p50", latency.from_send_p50));
    figures.extend(sweep_figures);
    let path = results::write("api", &figures).unwrap();
    eprintln!("results: {}", path.display());

    println!("| scenario (64 keep-alive connections unless said) | median | runs |");
    println!("|---|---:|---|");
    let single = measure(
        "1. `POST /v1/events`, one event per request",
        "events/s",
        single_rate,
    );
    let single_p99 = measure("1. … p99 latency", "ms", single_p99);
    let correct = measure("2. `POST /correct`", "events/s", correct_rate);
    let correct_p99 = measure("2. … p99 latency", "ms", correct_p99);
    let batch = measure(
        "3. `POST /v1/events`, 100 events per request",
        "events/s",
        batch_rate,
    );
    measure("3. … p99 latency (per request)", "ms", batch_p99);
    let delivered_p50 = measure(
        "4. enqueue → delivered, 2xx → received by the ingest server, p50 (200 sequential events)",
        "ms",
        vec![latency.after_ack_p50],
    );
    measure("4. … p99", "ms", vec![latency.after_ack_p99]);
    measure(
        "4. … from sending the POST, p50",
        "ms",
        vec![latency.from_send_p50],
    );
    let trivial = measure(
        "limit: trivial axum handler, same load",
        "requests/s",
        trivial_rate,
    );
    measure("limit: … p99 latency", "ms", trivial_p99);
    let no_fsync = measure(
        "limit: the service with synchronous=normal (no fsync), one event per request",
        "events/s",
        no_fsync_rate,
    );
    let raw_store = measure(
        "limit: `Store::enqueue` from 64 tasks, one event each, synchronous=full",
        "events/s",
        store_rate,
    );
    let raw_store_batch = measure(
        "limit: `Store::enqueue` from 64 tasks, 100 events each, synchronous=full",
        "events/s",
        store_batch_rate,
    );
    for sweep in sweeps {
        let clients = sweep.clients;
        measure(
            &format!("1. `POST /v1/events`, one event per request, {clients} connections"),
            "events/s",
            sweep.single_rate,
        );
        measure("1. … p99 latency", "ms", sweep.single_p99);
        measure(
            &format!("3. `POST /v1/events`, 100 events per request, {clients} connections"),
            "events/s",
            sweep.batch_rate,
        );
        measure("3. … p99 latency (per request)", "ms", sweep.batch_p99);
        measure(
            &format!("limit: trivial axum handler, {clients} connections"),
            "requests/s",
            sweep.trivial_rate,
        );
        measure("limit: … p99 latency", "ms", sweep.trivial_p99);
    }
    for line in &table {
        println!("{line}");
    }
    println!();
    println!(
        "- single event: {:.0}% of the trivial handler, {:.0}% of raw group commit, {:.0}% of the service without fsync; target ≥ 20,000 events/s with p99 < 20 ms: {}",
        100.0 * single / trivial,
        100.0 * single / raw_store,
        100.0 * single / no_fsync,
        verdict(single >= 20_000.0 && single_p99 < 20.0)
    );
    println!(
        "- /correct: {:.0}% of the trivial handler (p99 {correct_p99:.1} ms)",
        100.0 * correct / trivial
    );
    println!(
        "- batches of 100: {:.0}% of raw group commit of 100-event batches; target ≥ 100,000 events/s: {}",
        100.0 * batch / raw_store_batch,
        verdict(batch >= 100_000.0)
    );
    println!(
        "- enqueue → delivered p50 {delivered_p50:.2} ms; target < 10 ms: {}",
        verdict(delivered_p50 < 10.0)
    );
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The payload of a typical correction.
fn correction() -> Value {
    json!({
        "old_string": "The quick brown fox jumps over the lazy dog.",
        "new_string": "The quick brown cat jumps over the lazy dog.",
        "file_path": "notes/animals.md",
        "session_id": "bench-session",
    })
}

/// `$WRK`, else `wrk` on `PATH`.
fn wrk() -> PathBuf {
    if let Some(path) = std::env::var_os("WRK") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("wrk"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("wrk not found: run benches/api.sh, or apt-get install wrk"))
}

/// The service binary: this build's, or `$GRADATA_BIN` (to compare two builds in one setting).
fn binary() -> PathBuf {
    std::env::var_os("GRADATA_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gradata")),
        PathBuf::from,
    )
}

/// One `wrk` run's figures.
struct Load {
    /// Responses received.
    requests: u64,
    /// 2xx responses (wrk counts every status from 400 up as an error; the service sends no 3xx).
    ok: u64,
    /// Responses per second.
    rate: f64,
    p99_ms: f64,
}

/// Sets the request up and, when the run is over, prints wrk's own counts as one line of JSON.
const WRK_SCRIPT: &str = r#"
local body = io.open(os.getenv("WRK_BODY_FILE"), "rb")
wrk.method = "POST"
wrk.body = body:read("*a")
body:close()
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(99)))
end
"#;

impl Load {
    /// POSTs of `body` to `url` for `load_seconds()`, from one load thread over `connections`
    /// keep-alive connections.
    fn run(wrk: &Path, url: &str, body: &[u8], connections: usize) -> Load {
        let dir = tempfile::tempdir().unwrap();
        let (script, body_file) = (dir.path().join("post.lua"), dir.path().join("body.json"));
        std::fs::write(&script, WRK_SCRIPT).unwrap();
        std::fs::write(&body_file, body).unwrap();
        let output = Command::new(wrk)
            .env("WRK_BODY_FILE", &body_file)
            .args(["--threads", "1", "--timeout", "10s"])
            .arg(format!("--connections={connections}"))
            .arg(format!("--duration={}s", load_seconds()))
            .arg("--script")
            .arg(&script)
            .arg(url)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "wrk failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str(line).ok())
            .unwrap_or_else(|| panic!("no summary line in wrk's output: {stdout}"));
        let count = |key: &str| report[key].as_u64().unwrap();
        let (requests, status_errors) = (count("requests"), count("status_errors"));
        if status_errors + count("socket_errors") > 0 {
            eprintln!("{url}: {stdout}");
        }
        Load {
            requests,
            ok: requests - status_errors,
            rate: requests as f64 / (count("duration_us") as f64 / 1e6),
            p99_ms: count("p99_us") as f64 / 1000.0,
        }
    }
}

/// A fresh service (sync disabled, committing as `synchronous` says), loaded on `path`; checks
/// every acknowledged event is in the outbox and returns events/s and p99 latency in ms.
fn load_service(
    wrk: &Path,
    path: &str,
    body: &[u8],
    events_per_request: usize,
    synchronous: Synchronous,
    connections: usize,
) -> (f64, f64) {
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
    let load = Load::run(wrk, &service.url(path), body, connections);
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
    (load.rate * events_per_request as f64, load.p99_ms)
}

/// `gradata serve` from the release build on a passed loopback socket; stopped when dropped.
struct Service {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    _notify: UnixDatagram,
}

impl Service {
    /// Starts the service with extra environment, waits for `READY=1`.
    fn start(env: &[(&str, OsString)]) -> Service {
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

    fn url(&self, path: &str) -> String {
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

/// Enqueue-to-delivered latencies, in ms.
struct Latency {
    after_ack_p50: f64,
    after_ack_p99: f64,
    from_send_p50: f64,
}

/// 200 sequential events, one keep-alive connection, into a service syncing to an idle fake
/// ingest server: the time from the 2xx (and from sending the POST) until the server has the
/// event. The server's request count is watched with a condition variable, so the wait ends the
/// moment the request is recorded.
fn delivery_latency() -> Latency {
    let server = FakeIngest::replying(Reply::ok());
    let service = Service::start(&[
        ("GRADATA_API_KEY", "bench-key".into()),
        ("GRADATA_CLOUD_INGEST_URL", server.url("/ingest").into()),
    ]);
    let mut stream = TcpStream::connect(service.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut after_ack = Vec::with_capacity(LATENCY_EVENTS);
    let mut from_send = Vec::with_capacity(LATENCY_EVENTS);
    for n in 0..LATENCY_EVENTS {
        let body =
            json!({"kind": "correction", "event_id": format!("lat-{n}"), "data": correction()})
                .to_string();
        let request = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            service.addr,
            body.len()
        );
        let sent = Instant::now();
        stream.write_all(request.as_bytes()).unwrap();
        let status = read_status(&mut stream);
        let acknowledged = Instant::now();
        assert_eq!(status, 200);
        assert!(
            server.wait_for(n + 1, Duration::from_secs(30)),
            "event {n} was never delivered"
        );
        let received = Instant::now();
        after_ack.push(
            received
                .saturating_duration_since(acknowledged)
                .as_secs_f64()
                * 1000.0,
        );
        from_send.push((received - sent).as_secs_f64() * 1000.0);
    }
    assert_eq!(
        server.count(),
        LATENCY_EVENTS,
        "an event was delivered twice"
    );
    let percentile = |samples: &mut Vec<f64>, p: f64| {
        samples.sort_by(f64::total_cmp);
        samples[((samples.len() - 1) as f64 * p).round() as usize]
    };
    Latency {
        after_ack_p50: percentile(&mut after_ack, 0.50),
        after_ack_p99: percentile(&mut after_ack, 0.99),
        from_send_p50: percentile(&mut from_send, 0.50),
    }
}

/// Reads one response on a keep-alive connection; returns its status.
fn read_status(stream: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
        return head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap();
    }
}

/// The HTTP limit: an axum route that reads the body and answers 200 with a small JSON body, served
/// from this process on its own multi-threaded runtime (as the service's is).
struct TrivialServer {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl TrivialServer {
    fn start() -> TrivialServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let app = axum::Router::new().route(
                "/v1/events",
                axum::routing::post(|_body: axum::body::Bytes| async {
                    axum::Json(json!({"accepted": 1, "duplicates": 0}))
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        TrivialServer {
            addr,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1/events", self.addr)
    }
}

/// Raw group commit: `Store::enqueue` from 64 concurrent tasks, `per_call` events per call, on a
/// fresh outbox with `synchronous=full`; returns events/s.
fn store_group_commit(events: usize, per_call: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(&store::Options::new(dir.path())).unwrap();
    let data = correction();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CONNECTIONS {
            let (store, data, next) = (store.clone(), data.clone(), next.clone());
            tasks.spawn(async move {
                while next.fetch_add(per_call, Ordering::Relaxed) < events {
                    let batch = (0..per_call)
                        .map(|_| {
                            NewEvent::new(
                                "brain-bench",
                                EventId::generate(),
                                Kind::Correction,
                                &data,
                            )
                        })
                        .collect();
                    store.enqueue(batch).await.unwrap();
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
    });
    let elapsed = started.elapsed();
    assert_eq!(
        runtime.block_on(store.stats()).unwrap().pending,
        events as u64
    );
    events as f64 / elapsed.as_secs_f64()
}
