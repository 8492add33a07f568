//! Capture benchmark: the local HTTP API and the outbox, beside a trivial handler (the limit) and
//! the Python daemon it replaces (the original), in the same run.
//!
//! Runs the release binary (`CARGO_BIN_EXE_gradata`) as `gradata serve` on a passed loopback
//! socket, with the default `synchronous=full` and sync disabled, so only the API and the outbox
//! are measured ([`service`]), a fresh data directory per load, and loads it with `wrk` ([`load`];
//! Debian's `wrk` package: one load thread, keep-alive connections, a fixed duration per run; a C
//! load generator, so it takes less of the two cores from the service than one built on a general
//! HTTP client library), at 64 connections and at each of `GRADATA_BENCH_CAPTURE_CLIENTS`:
//!
//! 1. single-event `POST /v1/events`: events/s and p99 latency;
//! 2. the same event through `POST /correct` and through the compatible `POST /log-event`;
//! 3. batches of 100 events per `POST /v1/events`: events/s.
//!
//! After every load run the outbox is counted with a separate SQLite connection: every event
//! `wrk` saw acknowledged (2xx) must be there, and at most the requests still in flight when `wrk`
//! stopped (one per connection) may be there beyond those.
//!
//! The original ([`original`]): the Python daemon of PyPI `gradata==0.6.0` on an empty brain,
//! fresh for each load, under the same `wrk` load with the same bodies on the routes it has
//! (`POST /log-event`, `POST /correct`), at the same numbers of connections, in shorter runs
//! (`ORIGINAL_LOAD_SECONDS`: it answers tens of requests per second). It speaks HTTP/1.0 and
//! closes every connection, so `wrk` reconnects for each request: rates count only 2xx answers,
//! `wrk`'s non-2xx answers and socket errors are counted per run and reported (figure `errors`, and
//! on stderr), and after each load its `events` table must hold every acknowledged request. It
//! never sets `synchronous`, so its SQLite commits with the default, `synchronous=full`, too.
//!
//! While the 64-connection single-event loads run, the resident memory (`VmRSS`) of the loaded
//! daemon is read every 20 ms; the peak is reported.
//!
//! Then, with sync enabled to an idle, healthy fake ingest server
//! (`tests/it/support/fake_ingest.rs`):
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
//! Run: `cargo bench --bench api` with `wrk` on `PATH` (or in `$WRK`) and the virtualenv's
//! Python in `$GRADATA_BENCH_PYTHON` (default `target/bench-venv/bin/python`); `benches/prepare.sh`
//! installs both when missing (`ensure_wrk`, `ensure_original_daemon`). Nothing is installed by
//! the benchmark itself: it stops at once, saying so, when 0.6.0 is not there.
//! `GRADATA_BIN=<path>` runs another build of the service instead, to compare two builds in the
//! same setting. Results go to stdout as a Markdown table; each figure is the median of three
//! runs. `GRADATA_BENCH_QUICK=1`: one run of 2 s loads, and a fifth of the events for the raw
//! store. `GRADATA_BENCH_CAPTURE_CLIENTS=1,16,256`: every load is also run over each of these
//! numbers of connections (64 is always measured), for capture against concurrency.
//!
//! The figures also go to `target/bench/api.json` in the suite's results format
//! (`benches/support/results.rs`), every run, area `capture`, scenario `api`, figures
//! `throughput` (events/s) and `p99` (ms) with params `route`, `batch` (events per request),
//! `clients` and `synchronous`: series `gradata` (the service, also with `synchronous=normal`),
//! `original` (0.6.0, also figure `errors`: failed requests per run), `limit` (the trivial
//! handler for one event per request: on `/v1/events` at every number of connections, and on
//! every route at 64; raw group commit of 100-event batches for the batches) and `target` (the project's issue: one event per request
//! at 60% of the trivial handler, p99 under 20 ms, batches at 100,000 events/s, and
//! `POST /log-event` at 50 times the original's median rate on it at 64 connections); raw group
//! commit of single events as figure `store group commit`; the enqueue-to-delivered latencies as
//! figures `delivery p50`, `delivery p99` and `delivery from send p50` (target: p50 under 10
//! ms); and area `memory`, figure `rss peak` (MiB), params `state` = `load`, `route`, `clients`,
//! series `gradata` and `original`. In a full run it exits with status 1, after writing the file,
//! when a target is missed.

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
#[path = "api/load.rs"]
mod load;
#[path = "api/original.rs"]
mod original;
#[path = "support/results.rs"]
#[allow(
    dead_code,
    reason = "shared by the benchmarks, each of which uses a part"
)]
mod results;
#[path = "api/service.rs"]
mod service;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fake_ingest::{FakeIngest, Reply};
use gradata::store::{self, EventId, Kind, NewEvent, Store};
use load::Load;
use original::{OriginalRun, Route};
use results::{Better, Measurement, Series};
use serde_json::{Value, json};
use service::{Capture, Service, Synchronous, load_service};

/// The service binary's allocator, so the in-process limits run as the service would.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent connections of every load run (`GRADATA_BENCH_CAPTURE_CLIENTS` adds others).
const CONNECTIONS: usize = 64;
/// Runs per scenario; the median is reported.
const RUNS: usize = 3;
/// Length of every load run of gradata and the trivial handler (`load_seconds`): with 0.6.0's
/// shorter runs, a full run with four numbers of connections stays within about seven minutes.
const LOAD_SECONDS: u32 = 4;
/// Length of every load run of 0.6.0 (`original_load_seconds`): at tens of requests per second
/// a few seconds give it hundreds of answers, and a SYN its full listen backlog drops is
/// retried after 1 s, well within a run.
const ORIGINAL_LOAD_SECONDS: u32 = 3;
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
/// `POST /log-event` at `TARGET_TIMES_ORIGINAL` times 0.6.0's rate on it; enqueue to delivered
/// under `DELIVERY_P50_TARGET_MS` at the median. All at `CONNECTIONS`.
const TARGET_SHARE_OF_TRIVIAL: f64 = 0.60;
const SINGLE_P99_TARGET_MS: f64 = 20.0;
const BATCH_TARGET: f64 = 100_000.0;
const TARGET_TIMES_ORIGINAL: f64 = 50.0;
const DELIVERY_P50_TARGET_MS: f64 = 10.0;

/// `CONNECTIONS`, then the other numbers of connections of `GRADATA_BENCH_CAPTURE_CLIENTS`, in
/// its order.
fn clients() -> Vec<usize> {
    let mut clients = vec![CONNECTIONS];
    let Ok(list) = std::env::var("GRADATA_BENCH_CAPTURE_CLIENTS") else {
        return clients;
    };
    for item in list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let n: usize = item.parse().ok().filter(|&n| n > 0).unwrap_or_else(|| {
            panic!("GRADATA_BENCH_CAPTURE_CLIENTS: {item:?} is not a number of connections")
        });
        if !clients.contains(&n) {
            clients.push(n);
        }
    }
    clients
}

/// One load scenario's figures, each run's in the order of the runs.
#[derive(Default)]
struct Runs {
    /// Events/s (for the trivial handler: requests/s).
    rate: Vec<f64>,
    p99: Vec<f64>,
    /// The loaded daemon's peak resident memory, MiB (not for the trivial handler).
    rss: Vec<f64>,
    /// Failed requests: non-2xx answers and socket errors (0.6.0 only; gradata's must be none).
    errors: Vec<f64>,
}

impl Runs {
    fn gradata(&mut self, capture: Capture) {
        self.rate.push(capture.rate);
        self.p99.push(capture.p99_ms);
        self.rss.push(capture.rss_peak_mib);
    }

    fn original(&mut self, run: OriginalRun) {
        self.rate.push(run.load.rate);
        self.p99.push(run.load.p99_ms);
        self.rss.push(run.rss_peak_mib);
        self.errors.push(run.load.errors() as f64);
    }

    fn trivial(&mut self, load: &Load) {
        assert_eq!(
            load.ok, load.requests,
            "the trivial handler failed requests"
        );
        self.rate.push(load.rate);
        self.p99.push(load.p99_ms);
    }
}

/// Every scenario loaded at one number of connections.
struct AtClients {
    clients: usize,
    single: Runs,
    batch: Runs,
    log_event: Runs,
    correct: Runs,
    trivial: Runs,
    original_log_event: Runs,
    original_correct: Runs,
}

/// `GRADATA_BENCH_QUICK=1`: the suite's quick check that the benchmark works, not its figures.
fn quick() -> bool {
    std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Length of every load run of gradata and the trivial handler.
fn load_seconds() -> u32 {
    if quick() {
        QUICK_LOAD_SECONDS
    } else {
        LOAD_SECONDS
    }
}

/// Length of every load run of 0.6.0.
fn original_load_seconds() -> u32 {
    if quick() {
        QUICK_LOAD_SECONDS
    } else {
        ORIGINAL_LOAD_SECONDS
    }
}

fn main() -> ExitCode {
    let wrk = load::wrk();
    // `wrk -v` prints its version and exits with status 1.
    let version = Command::new(&wrk).arg("-v").output().unwrap();
    let python = original::python();
    original::check_python_package(&python);
    eprintln!(
        "load generator: {} ({}); service: {}; original: gradata 0.6.0 from PyPI, {}",
        String::from_utf8_lossy(&version.stdout).trim(),
        wrk.display(),
        service::binary().display(),
        python.display()
    );

    let event = json!({"kind": "correction", "data": correction()});
    let single = event.to_string().into_bytes();
    let correct = correction().to_string().into_bytes();
    // The same event through the route both daemons have: 0.6.0 logs it as a CORRECTION.
    let log_event = json!({"event_type": "correction", "data": correction()})
        .to_string()
        .into_bytes();
    let batch = Value::Array(vec![event; BATCH_SIZE])
        .to_string()
        .into_bytes();

    // 1–3: the API and the outbox, sync disabled; 0.6.0 beside it.
    let mut no_fsync_rate = Vec::new();
    let mut store_rate = Vec::new();
    let mut store_batch_rate = Vec::new();
    let trivial = TrivialServer::start();
    let (runs, store_divisor) = if quick() {
        (QUICK_RUNS, QUICK_STORE_DIVISOR)
    } else {
        (RUNS, 1)
    };
    let mut loads: Vec<AtClients> = clients()
        .into_iter()
        .map(|clients| AtClients {
            clients,
            single: Runs::default(),
            batch: Runs::default(),
            log_event: Runs::default(),
            correct: Runs::default(),
            trivial: Runs::default(),
            original_log_event: Runs::default(),
            original_correct: Runs::default(),
        })
        .collect();
    let (seconds, original_seconds) = (load_seconds(), original_load_seconds());
    for run in 1..=runs {
        eprintln!("run {run}/{runs}");
        let full = Synchronous::Full;
        for at in &mut loads {
            let clients = at.clients;
            let service = |path: &str, body: &[u8], per_request: usize| {
                load_service(&wrk, path, body, per_request, full, clients, seconds)
            };
            at.single.gradata(service("/v1/events", &single, 1));
            at.batch.gradata(service("/v1/events", &batch, BATCH_SIZE));
            at.log_event.gradata(service("/log-event", &log_event, 1));
            at.correct.gradata(service("/correct", &correct, 1));
            let load = Load::run(&wrk, &trivial.url(), &single, clients, seconds);
            at.trivial.trivial(&load);
            let original = |route: Route, body: &[u8]| {
                original::load_original(&wrk, route, body, clients, original_seconds)
            };
            at.original_log_event
                .original(original(Route::LogEvent, &log_event));
            at.original_correct
                .original(original(Route::Correct, &correct));
        }
        let no_fsync = Synchronous::NoFsync;
        let capture = load_service(
            &wrk,
            "/v1/events",
            &single,
            1,
            no_fsync,
            CONNECTIONS,
            seconds,
        );
        no_fsync_rate.push(capture.rate);
        store_rate.push(store_group_commit(STORE_EVENTS / store_divisor, 1));
        store_batch_rate.push(store_group_commit(
            STORE_BATCH_EVENTS / store_divisor,
            BATCH_SIZE,
        ));
    }
    let latency = delivery_latency();
    let at_64 = &loads[0];
    let original_log_event = results::median(&at_64.original_log_event.rate);

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
    let mut figures = vec![
        on(rate(), "/v1/events", 1, "full")
            .series(Series::Target)
            .runs([TARGET_SHARE_OF_TRIVIAL * results::median(&at_64.trivial.rate)]),
        on(p99(), "/v1/events", 1, "full")
            .series(Series::Target)
            .runs([SINGLE_P99_TARGET_MS]),
        on(rate(), "/log-event", 1, "full")
            .series(Series::Target)
            .runs([TARGET_TIMES_ORIGINAL * original_log_event]),
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
    // The trivial handler answers one event per request the same whichever route it stands for;
    // at 64 connections it is the limit of each route's headline row.
    for route in ["/log-event", "/correct"] {
        figures.push(
            on(rate(), route, 1, "full")
                .series(Series::Limit)
                .runs(at_64.trivial.rate.clone()),
        );
        figures.push(
            on(p99(), route, 1, "full")
                .series(Series::Limit)
                .runs(at_64.trivial.p99.clone()),
        );
    }
    for at in &loads {
        let scenarios = [
            ("/v1/events", 1, Series::Gradata, &at.single),
            ("/v1/events", BATCH_SIZE, Series::Gradata, &at.batch),
            ("/log-event", 1, Series::Gradata, &at.log_event),
            ("/correct", 1, Series::Gradata, &at.correct),
            ("/v1/events", 1, Series::Limit, &at.trivial),
            ("/log-event", 1, Series::Original, &at.original_log_event),
            ("/correct", 1, Series::Original, &at.original_correct),
        ];
        for (route, per_request, series, runs) in scenarios {
            let at_clients =
                |m: Measurement| on(m, route, per_request, "full").param("clients", at.clients);
            figures.push(at_clients(rate()).series(series).runs(runs.rate.clone()));
            figures.push(at_clients(p99()).series(series).runs(runs.p99.clone()));
            if !runs.errors.is_empty() {
                figures.push(
                    at_clients(capture("errors", "requests", Better::Lower))
                        .series(series)
                        .runs(runs.errors.clone()),
                );
            }
            if at.clients == CONNECTIONS && per_request == 1 && !runs.rss.is_empty() {
                figures.push(
                    Measurement::new("memory", "api", "rss peak", "MiB", Better::Lower)
                        .series(series)
                        .param("state", "load")
                        .param("route", route)
                        .param("clients", at.clients)
                        .runs(runs.rss.clone()),
                );
            }
        }
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
    let path = results::write("api", &figures).unwrap();
    eprintln!("results: {}", path.display());

    let mut table = Table::default();
    println!("| scenario | median | runs |");
    println!("|---|---:|---|");
    let mut headline = None;
    for at in &loads {
        let clients = at.clients;
        let single = table.row(
            &format!("1. `POST /v1/events`, one event per request, {clients} connections"),
            "events/s",
            &at.single.rate,
        );
        let single_p99 = table.row("1. … p99 latency", "ms", &at.single.p99);
        let log_event = table.row("2. `POST /log-event`", "events/s", &at.log_event.rate);
        table.row("2. … p99 latency", "ms", &at.log_event.p99);
        let correct = table.row("2. `POST /correct`", "events/s", &at.correct.rate);
        let correct_p99 = table.row("2. … p99 latency", "ms", &at.correct.p99);
        let batch = table.row(
            "3. `POST /v1/events`, 100 events per request",
            "events/s",
            &at.batch.rate,
        );
        table.row("3. … p99 latency (per request)", "ms", &at.batch.p99);
        let trivial = table.row(
            "limit: trivial axum handler, same load",
            "requests/s",
            &at.trivial.rate,
        );
        table.row("limit: … p99 latency", "ms", &at.trivial.p99);
        for (route, runs) in [
            ("/log-event", &at.original_log_event),
            ("/correct", &at.original_correct),
        ] {
            table.row(
                &format!("original: 0.6.0 `POST {route}` (new connection per request)"),
                "events/s",
                &runs.rate,
            );
            table.row("original: … p99 latency", "ms", &runs.p99);
            table.row("original: … failed requests", "", &runs.errors);
        }
        if clients == CONNECTIONS {
            headline = Some((
                single,
                single_p99,
                log_event,
                correct,
                correct_p99,
                batch,
                trivial,
            ));
        }
    }
    let (single, single_p99, log_event, correct, correct_p99, batch, trivial) =
        headline.expect("64 connections are always loaded");
    let delivered_p50 = table.row(
        "4. enqueue → delivered, 2xx → received by the ingest server, p50 (200 sequential events)",
        "ms",
        &[latency.after_ack_p50],
    );
    table.row("4. … p99", "ms", &[latency.after_ack_p99]);
    table.row(
        "4. … from sending the POST, p50",
        "ms",
        &[latency.from_send_p50],
    );
    let no_fsync = table.row(
        "limit: the service with synchronous=normal (no fsync), one event per request",
        "events/s",
        &no_fsync_rate,
    );
    let raw_store = table.row(
        "limit: `Store::enqueue` from 64 tasks, one event each, synchronous=full",
        "events/s",
        &store_rate,
    );
    let raw_store_batch = table.row(
        "limit: `Store::enqueue` from 64 tasks, 100 events each, synchronous=full",
        "events/s",
        &store_batch_rate,
    );
    for (what, runs) in [
        ("gradata `POST /v1/events`", &at_64.single),
        ("gradata `POST /log-event`", &at_64.log_event),
        ("gradata `POST /correct`", &at_64.correct),
        ("original `POST /log-event`", &at_64.original_log_event),
        ("original `POST /correct`", &at_64.original_correct),
    ] {
        table.row(
            &format!("memory: peak RSS under {what}, 64 connections"),
            "MiB",
            &runs.rss,
        );
    }
    for line in &table.lines {
        println!("{line}");
    }
    println!();
    let single_met =
        single >= TARGET_SHARE_OF_TRIVIAL * trivial && single_p99 < SINGLE_P99_TARGET_MS;
    println!(
        "- single event: {:.0}% of the trivial handler, {:.0}% of raw group commit, {:.0}% of the service without fsync; target ≥ 60% of the trivial handler with p99 < 20 ms: {}",
        100.0 * single / trivial,
        100.0 * single / raw_store,
        100.0 * single / no_fsync,
        verdict(single_met)
    );
    let original_met = log_event >= TARGET_TIMES_ORIGINAL * original_log_event;
    println!(
        "- /log-event: {:.0}x the original's {original_log_event:.0} events/s; target ≥ 50x: {}",
        log_event / original_log_event,
        verdict(original_met)
    );
    println!(
        "- /correct: {:.0}% of the trivial handler (p99 {correct_p99:.1} ms), {:.0}x the original",
        100.0 * correct / trivial,
        correct / results::median(&at_64.original_correct.rate)
    );
    let batch_met = batch >= BATCH_TARGET;
    println!(
        "- batches of 100: {:.0}% of raw group commit of 100-event batches; target ≥ 100,000 events/s: {}",
        100.0 * batch / raw_store_batch,
        verdict(batch_met)
    );
    let delivery_met = delivered_p50 < DELIVERY_P50_TARGET_MS;
    println!(
        "- enqueue → delivered p50 {delivered_p50:.2} ms; target < 10 ms: {}",
        verdict(delivery_met)
    );
    let failed: f64 = loads
        .iter()
        .flat_map(|at| [&at.original_log_event, &at.original_correct])
        .flat_map(|runs| &runs.errors)
        .sum();
    if failed > 0.0 {
        println!(
            "- the original failed {failed:.0} requests (non-2xx or no answer): see its `failed requests` rows; its rates count only its 2xx answers"
        );
    }
    if quick() || (single_met && original_met && batch_met && delivery_met) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The Markdown table on stdout: one row per figure, its median and every run.
#[derive(Default)]
struct Table {
    lines: Vec<String>,
}

impl Table {
    /// Adds a row; returns the median.
    fn row(&mut self, name: &str, unit: &str, samples: &[f64]) -> f64 {
        let median = median(samples);
        // Rates and counts as whole numbers, latencies to the hundredth of a millisecond.
        let decimals = if unit == "ms" || unit == "MiB" { 2 } else { 0 };
        let runs: Vec<String> = samples.iter().map(|s| format!("{s:.decimals$}")).collect();
        self.lines.push(format!(
            "| {name} | {median:.decimals$} {unit} | {} |",
            runs.join(", ")
        ));
        median
    }
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
