//! Drain benchmark (issue: outbox and sync engine): how fast the outbox drains into a fake ingest
//! server on loopback, against the backlog size, next to the bare HTTP limit and the original
//! daemon's algorithm measured in the same run; then the 10^6-row drain as an operator runs it.
//!
//! 1. Backlog sweep without added latency, at 10^3, 3,200, 10^4, 10^5 and 10^6 rows: gradata's
//!    drain engine in this process (the default adaptive concurrency, 4 up to 32; at 3,200 rows
//!    also held at 16), the limit (the same payloads and headers posted with the same client
//!    library, 32 in flight, the engine's most, over keep-alive connections, no store) and the original daemon's
//!    algorithm re-created (one POST per row, sequential, a new connection per row, one commit
//!    per row). The original is slow: it runs at a size only while its projected time there, from
//!    the previous size's rate, fits [`Plan::original_budget`], and as many of the size's runs as
//!    fit; stdout says which sizes it skipped, and its plot line ends there. Runs per size: 7 up to
//!    3,200 rows, 3 at 10^4 and 10^5, one at 10^6; the median is reported.
//! 2. 20 ms of added latency per response: gradata at concurrency 16 and the original on the same
//!    800 rows (gradata 7 times, the original once: about 20 s a drain); and gradata on 3,200
//!    rows, 3 times, held to the bound 16 / 0.020 s (on 800 rows the first round trips, before
//!    every request is in flight, weigh a tenth).
//!
//! The 10^6-row drain as an operator runs it (`gradata drain`, the release binary as a process of
//! its own, its time and resident memory) is the backlog benchmark's (`benches/backlog.rs`).
//!
//! Each backlog is filled once per size through the store's enqueue, 10,000 rows a call, and
//! copied for every run. Each in-process rate is the rows over the time of the drain alone:
//! opening the store and building the HTTP client are startup costs (the startup benchmark
//! measures them), not drain throughput. The fake server without latency is the lean counting
//! one, and every scenario checks that it received exactly one request per row.
//!
//! Run: `cargo bench --bench drain` (release profile; about 4 minutes, most of it the 10^5 and
//! 10^6-row backlogs). `GRADATA_BENCH_QUICK=1`: 10^3 and 10^4 rows, one run each, and 50 rows at
//! 20 ms, in seconds. Results go to stdout as Markdown, and to `target/bench/drain.json` in the
//! suite's results format (`benches/support/results.rs`), area and scenario `drain`: figures
//! `throughput` (rows/s), `time` (s) and `cpu per row` (µs, the whole process), every run, with
//! params `rows` and `latency_ms` (and `concurrency` = 16 for the engine held there); series
//! `gradata`, `original` (the re-created algorithm), `limit` (the bare keep-alive POSTs; with
//! 20 ms, the bound 16 / 0.020 s, computed, not measured) and `target` (the issue's: 70% of the
//! limit at 3,200 rows without latency, 90% of the bound with 20 ms).
//!
//! A full run exits non-zero, after writing its file, when a target is missed.

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

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_ingest::{FakeIngest, Reply};
use gradata::store::{self, EventId, Kind, NewEvent, Store};
use gradata::sync::{ApiKey, Budget, Engine, Settings, Status, SyncState, Trigger};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use results::{Better, Measurement, Series};
use tokio_util::sync::CancellationToken;

/// The service binary's allocator, so the engine is measured as it runs in the service.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What one run of the benchmark does: the full run, or the quick mode that checks it works.
struct Plan {
    /// The backlog sizes of the sweep, smallest first, each with its drains per scenario.
    sizes: &'static [(usize, usize)],
    /// The size at which gradata is held to its share of the limit (and also runs at a fixed 16
    /// requests in flight).
    target_rows: usize,
    /// The most the original's runs at one size may take, projected from the previous size's rate.
    original_budget: Duration,
    /// The backlog of the 20 ms scenarios, the same for gradata and the original.
    slow_rows: usize,
    /// The backlog gradata drains at 20 ms to be held to the bound: long enough (4 s at the bound)
    /// that the first round trips, before every request is in flight, weigh little.
    slow_target_rows: usize,
    /// Drains of gradata and of the original in the 20 ms scenarios.
    slow_runs: usize,
    slow_original_runs: usize,
}

/// Seven drains at the small sizes, because a drain there lasts a fraction of a second and single
/// runs on this shared machine swing by a third; fewer where one drain lasts seconds or a minute.
const FULL: Plan = Plan {
    sizes: &[
        (1_000, 7),
        (3_200, 7),
        (10_000, 3),
        (100_000, 3),
        (1_000_000, 1),
    ],
    target_rows: 3_200,
    original_budget: Duration::from_secs(60),
    slow_rows: 800,
    slow_target_rows: 3_200,
    slow_runs: 7,
    slow_original_runs: 1,
};
const QUICK: Plan = Plan {
    sizes: &[(1_000, 1), (10_000, 1)],
    target_rows: 1_000,
    original_budget: Duration::from_secs(5),
    slow_rows: 50,
    slow_target_rows: 50,
    slow_runs: 1,
    slow_original_runs: 1,
};

/// Rows a call of the store's enqueue while filling a backlog: big batches keep the fill short.
const FILL_BATCH: usize = 10_000;
/// The engine's most requests in flight by default, and so the limit's: the bare POSTs are a
/// ceiling only when they may have as many in flight as the engine.
const MAX_IN_FLIGHT: usize = 32;
/// The latency the fake server adds in the slow scenarios, and the engine's concurrency there.
const SLOW_LATENCY: Duration = Duration::from_millis(20);
const SLOW_CONCURRENCY: usize = 16;
/// The targets: gradata's drain rate as a share of the bare limit without latency, and of
/// the bound concurrency / latency with it.
const TARGET_SHARE_OF_LIMIT: f64 = 0.70;
const TARGET_SHARE_OF_BOUND: f64 = 0.90;

fn main() -> ExitCode {
    let quick = std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let plan = if quick { &QUICK } else { &FULL };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The no-latency scenarios use the lean counting server: the recording one spends more CPU per
    // request than the client it is there to measure, on the same two cores.
    let fast = FakeIngest::counting("bench-key");
    let slow = FakeIngest::replying(Reply::ok().delay(SLOW_LATENCY));
    let fast_url = fast.url("/ingest");
    let slow_url = slow.url("/ingest");

    println!("| scenario | rows | median rows/s | CPU µs/row | runs (rows/s) |");
    println!("|---|---:|---:|---:|---|");
    let mut sweep: Vec<Drained> = Vec::new();
    let mut skipped = Vec::new();
    // The original's rate at the last size it ran at: its projection for the next.
    let mut original_rate: Option<f64> = None;
    for &(rows, runs) in plan.sizes {
        let filling = Instant::now();
        let template = backlog(&runtime, rows);
        eprintln!(
            "{rows} rows filled in {:.1} s",
            filling.elapsed().as_secs_f64()
        );
        let scenario = |series, concurrency| Scenario {
            rows,
            runs,
            latency: Duration::ZERO,
            series,
            concurrency,
        };
        sweep.push(measure(
            "limit: bare keep-alive POSTs, no store, 32 in flight",
            scenario(Series::Limit, None),
            template.path(),
            &fast,
            |dir| runtime.block_on(bare_posts(dir, &fast_url, MAX_IN_FLIGHT)),
        ));
        sweep.push(measure(
            "gradata drain, concurrency 4 (adaptive, max 32)",
            scenario(Series::Gradata, None),
            template.path(),
            &fast,
            |dir| runtime.block_on(engine_drain(dir, &fast_url, rows, 4, MAX_IN_FLIGHT)),
        ));
        if rows == plan.target_rows {
            // The same at 16 requests in flight, fixed: the engine without its ramp (+1 per clean
            // batch from 4).
            sweep.push(measure(
                "gradata drain, concurrency 16",
                scenario(Series::Gradata, Some(16)),
                template.path(),
                &fast,
                |dir| runtime.block_on(engine_drain(dir, &fast_url, rows, 16, 16)),
            ));
        }
        let budget = plan.original_budget.as_secs_f64();
        let original_runs = original_rate.map_or(runs, |rate| {
            runs.min((budget * rate / rows as f64).floor() as usize)
        });
        if original_runs == 0 {
            let projected = rows as f64 / original_rate.unwrap_or(f64::NAN);
            println!(
                "| original algorithm: skipped, projected {projected:.0} s a drain > budget {budget:.0} s | {rows} | | | |"
            );
            skipped.push(rows);
        } else {
            let drained = measure(
                "original algorithm",
                Scenario {
                    runs: original_runs,
                    ..scenario(Series::Original, None)
                },
                template.path(),
                &fast,
                |dir| runtime.block_on(original_drain(dir, &fast_url)),
            );
            if !drained.rates.is_empty() {
                original_rate = Some(drained.median);
            }
            sweep.push(drained);
        }
    }

    let slow_template = backlog(&runtime, plan.slow_rows);
    let slow_scenario = |series, runs| Scenario {
        rows: plan.slow_rows,
        runs,
        latency: SLOW_LATENCY,
        series,
        concurrency: None,
    };
    let original_slow = measure(
        "original algorithm, 20 ms latency",
        slow_scenario(Series::Original, plan.slow_original_runs),
        slow_template.path(),
        &slow,
        |dir| runtime.block_on(original_drain(dir, &slow_url)),
    );
    let slow_engine = |template: &Path, rows: usize, runs: usize| {
        measure(
            "gradata drain, 20 ms latency, concurrency 16",
            Scenario {
                rows,
                ..slow_scenario(Series::Gradata, runs)
            },
            template,
            &slow,
            |dir| {
                runtime.block_on(engine_drain(
                    dir,
                    &slow_url,
                    rows,
                    SLOW_CONCURRENCY,
                    SLOW_CONCURRENCY,
                ))
            },
        )
    };
    let gradata_paired = slow_engine(slow_template.path(), plan.slow_rows, plan.slow_runs);
    let gradata_slow = if plan.slow_target_rows == plan.slow_rows {
        None
    } else {
        let template = backlog(&runtime, plan.slow_target_rows);
        Some(slow_engine(template.path(), plan.slow_target_rows, 3))
    };
    let bound = SLOW_CONCURRENCY as f64 / SLOW_LATENCY.as_secs_f64();

    let mut out = measurements(&sweep, plan.target_rows);
    out.extend(original_slow.figures());
    out.extend(gradata_paired.figures());
    if let Some(held) = &gradata_slow {
        out.extend(held.figures());
    }
    let gradata_slow = gradata_slow.as_ref().unwrap_or(&gradata_paired);
    out.extend(slow_bound(gradata_slow, bound));
    let path = results::write("drain", &out).unwrap();
    eprintln!("results: {}", path.display());

    println!();
    if !skipped.is_empty() {
        let sizes: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        println!(
            "- the original was skipped at {} rows: its projected time exceeds {:.0} s",
            sizes.join(", "),
            plan.original_budget.as_secs_f64()
        );
    }
    let mut missed = Vec::new();
    for &(rows, _) in plan.sizes {
        let median = |series: Series, concurrency: Option<usize>| {
            sweep
                .iter()
                .find(|d| d.rows == rows && d.series == series && d.concurrency == concurrency)
                .map_or(f64::NAN, |d| d.median)
        };
        let (gradata, limit) = (median(Series::Gradata, None), median(Series::Limit, None));
        let original = median(Series::Original, None);
        let mut line = format!(
            "- {rows} rows, no added latency: gradata / bare HTTP limit = {:.0}%",
            100.0 * gradata / limit
        );
        if rows == plan.target_rows {
            let held = median(Series::Gradata, Some(16));
            line += &format!(
                " (at concurrency 16: {:.0}%; target {:.0}%)",
                100.0 * held / limit,
                100.0 * TARGET_SHARE_OF_LIMIT
            );
            if gradata < TARGET_SHARE_OF_LIMIT * limit {
                missed.push(format!("{rows} rows: gradata below 70% of the limit"));
            }
        }
        if original.is_finite() {
            line += &format!(", gradata / original = {:.1}x", gradata / original);
        }
        println!("{line}");
    }
    println!(
        "- 20 ms latency, {} rows: gradata / original = {:.1}x; {} rows: gradata {:.0} rows/s = {:.0}% of the bound {bound:.0} rows/s",
        plan.slow_rows,
        gradata_paired.median / original_slow.median,
        gradata_slow.rows,
        gradata_slow.median,
        100.0 * gradata_slow.median / bound
    );
    if gradata_slow.median < TARGET_SHARE_OF_BOUND * bound {
        missed.push("20 ms latency: gradata below 90% of the bound".to_owned());
    }
    if quick || missed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("targets missed: {}", missed.join("; "));
        ExitCode::FAILURE
    }
}

/// What one scenario drains, how often, and how it is labelled in the results.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    rows: usize,
    runs: usize,
    latency: Duration,
    series: Series,
    /// The engine's concurrency when it is held (a param of its own line).
    concurrency: Option<usize>,
}

/// One scenario's drains: every run's rate and CPU time per row, in the order of the runs.
struct Drained {
    rows: usize,
    latency: Duration,
    series: Series,
    concurrency: Option<usize>,
    rates: Vec<f64>,
    cpu_per_row: Vec<f64>,
    /// The median rate (NaN when the scenario was skipped).
    median: f64,
}

impl Drained {
    /// `measurement` with this scenario's series and params.
    fn label(&self, measurement: &Measurement) -> Measurement {
        let measurement = measurement
            .clone()
            .series(self.series)
            .param("rows", self.rows)
            .param("latency_ms", self.latency.as_millis() as u64);
        match self.concurrency {
            Some(concurrency) => measurement.param("concurrency", concurrency),
            None => measurement,
        }
    }

    /// Its throughput, time and CPU per row, every run.
    fn figures(&self) -> Vec<Measurement> {
        if self.rates.is_empty() {
            return Vec::new();
        }
        vec![
            self.label(&figure("throughput", "rows/s", Better::Higher))
                .runs(self.rates.iter().copied()),
            self.label(&figure("time", "s", Better::Lower))
                .runs(self.rates.iter().map(|rate| self.rows as f64 / rate)),
            self.label(&figure("cpu per row", "µs", Better::Lower))
                .runs(self.cpu_per_row.iter().copied()),
        ]
    }
}

/// A figure of the in-process scenarios.
fn figure(name: &str, unit: &str, better: Better) -> Measurement {
    Measurement::new("drain", "drain", name, unit, better)
}

/// The sweep in the suite's results format, with the target at `target_rows`: 70% of the limit
/// measured there, bound to gradata's line at the default concurrency.
fn measurements(sweep: &[Drained], target_rows: usize) -> Vec<Measurement> {
    let mut out = Vec::new();
    for drained in sweep {
        if drained.series == Series::Limit
            && drained.rows == target_rows
            && !drained.rates.is_empty()
        {
            out.push(
                drained
                    .label(&figure("throughput", "rows/s", Better::Higher))
                    .series(Series::Target)
                    .runs([TARGET_SHARE_OF_LIMIT * drained.median]),
            );
        }
        out.extend(drained.figures());
    }
    out
}

/// The 20 ms scenarios in the suite's results format, with the bound (computed, not measured) as
/// their limit and 90% of it as the target.
fn slow_bound(gradata: &Drained, bound: f64) -> Vec<Measurement> {
    if gradata.rates.is_empty() {
        return Vec::new();
    }
    let throughput = gradata.label(&figure("throughput", "rows/s", Better::Higher));
    vec![
        throughput.clone().series(Series::Limit).runs([bound]),
        throughput
            .series(Series::Target)
            .runs([TARGET_SHARE_OF_BOUND * bound]),
    ]
}

/// Runs `drain` on a fresh copy of the backlog in `template` as often as `scenario` says, the
/// server adding the scenario's latency to each answer; prints the median rate and returns every
/// run's figures.
fn measure(
    name: &str,
    scenario: Scenario,
    template: &Path,
    server: &FakeIngest,
    drain: impl Fn(&Path) -> (usize, Duration),
) -> Drained {
    let Scenario {
        rows,
        runs,
        latency,
        series,
        concurrency,
    } = scenario;
    let mut drained = Drained {
        rows,
        latency,
        series,
        concurrency,
        rates: Vec::new(),
        cpu_per_row: Vec::new(),
        median: f64::NAN,
    };
    // Profiling aid: `GRADATA_BENCH_ONLY=<text>` runs only the scenarios whose name contains it.
    if std::env::var("GRADATA_BENCH_ONLY").is_ok_and(|only| !name.contains(&only)) {
        return drained;
    }
    for _ in 0..runs {
        let dir = copy_of(template);
        let before = server.count();
        let cpu_before = cpu_time();
        let (delivered, elapsed) = drain(dir.path());
        drained
            .cpu_per_row
            .push((cpu_time() - cpu_before).as_secs_f64() * 1e6 / rows as f64);
        assert_eq!(delivered, rows, "{name}: not every row was delivered");
        assert_eq!(
            server.count() - before,
            rows,
            "{name}: the server did not receive one request per row"
        );
        drained.rates.push(rows as f64 / elapsed.as_secs_f64());
    }
    drained.median = results::median(&drained.rates);
    let mut rates = drained.rates.clone();
    rates.sort_by(f64::total_cmp);
    let runs: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "| {name} | {rows} | {:.0} | {:.0} | {} |",
        drained.median,
        results::median(&drained.cpu_per_row),
        runs.join(", ")
    );
    drained
}

/// A fresh directory holding a copy of the files of `template` (the database, its WAL if any, the
/// lock files): the same backlog for every run, without filling it again.
fn copy_of(template: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(template).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    dir
}

/// A new data directory whose outbox holds `rows` pending rows of about 300 bytes, written
/// through the store's enqueue in batches of [`FILL_BATCH`]; the store is closed on return.
fn backlog(runtime: &tokio::runtime::Runtime, rows: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store = Store::open(&store::Options::new(dir.path())).unwrap();
        let description = "x".repeat(200);
        for start in (0..rows).step_by(FILL_BATCH) {
            let events: Vec<NewEvent> = (start..rows.min(start + FILL_BATCH))
                .map(|i| {
                    let data = serde_json::json!({"session": i, "description": description, "severity": "minor"});
                    NewEvent::new("brain-bench", EventId::generate(), Kind::Correction, &data)
                })
                .collect();
            store.enqueue(events).await.unwrap();
        }
    });
    dir
}

/// CPU time of the whole process (every thread: client, fake server, writer, checkpointer) so far.
/// Per row, it tells a drain that is short of CPU from one that waits.
fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

async fn engine_drain(
    dir: &Path,
    url: &str,
    rows: usize,
    concurrency: usize,
    max_concurrency: usize,
) -> (usize, Duration) {
    let store = Store::open(&store::Options::new(dir)).unwrap();
    let mut settings = Settings::new(url.parse().unwrap(), ApiKey::new("bench-key"));
    settings.concurrency = concurrency;
    settings.max_concurrency = max_concurrency;
    let engine = Engine::new(
        store,
        settings,
        Status::new(SyncState::Idle),
        gradata::metrics::Metrics::new(),
    )
    .unwrap();
    // The whole backlog, with time to spare: the budget never stops a drain.
    let budget = Budget {
        max_rows: rows,
        max_time: Duration::from_secs(600),
    };
    let started = Instant::now();
    let report = engine
        .drain(
            Trigger::Startup,
            budget,
            &CancellationToken::new(),
            &mut |_| {},
        )
        .await;
    let elapsed = started.elapsed();
    (usize::try_from(report.delivered).unwrap(), elapsed)
}

/// A plain pooled HTTP client of the library the ingest client is built on, keeping at most
/// `idle` connections for reuse (0: a new connection per request).
fn plain_client(idle: usize) -> hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .build(connector)
}

/// One POST with the ingest client's headers; returns the status once the body is read.
async fn plain_post(
    client: &hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    uri: &hyper::Uri,
    event_id: Option<&str>,
    body: String,
) -> u16 {
    let mut request = hyper::Request::post(uri.clone())
        .header("authorization", "Bearer bench-key")
        .header("content-type", "application/json")
        .header("user-agent", "gradata/bench");
    if let Some(event_id) = event_id {
        request = request.header("idempotency-key", event_id);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await.unwrap();
    status
}

/// The HTTP limit on this machine: the same payloads and headers, posted with the same client
/// library over keep-alive connections, with no store at all.
async fn bare_posts(dir: &Path, url: &str, in_flight: usize) -> (usize, Duration) {
    use futures_util::StreamExt;
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT event_id, payload_json FROM sync_queue ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let client = plain_client(in_flight);
    let uri: hyper::Uri = url.parse().unwrap();
    let started = Instant::now();
    let delivered = futures_util::stream::iter(rows)
        .map(|(event_id, body)| {
            let (client, uri) = (&client, &uri);
            async move { plain_post(client, uri, Some(&event_id), body).await }
        })
        .buffer_unordered(in_flight)
        .count()
        .await;
    (delivered, started.elapsed())
}

/// The original daemon's loop: peek 50, then per row a POST on a fresh connection and a commit.
async fn original_drain(dir: &Path, url: &str) -> (usize, Duration) {
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    let client = plain_client(0);
    let uri: hyper::Uri = url.parse().unwrap();
    let started = Instant::now();
    let mut delivered = 0;
    loop {
        let batch: Vec<(i64, String)> = conn
            .prepare("SELECT id, payload_json FROM sync_queue WHERE synced_at IS NULL ORDER BY id LIMIT 50")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        if batch.is_empty() {
            return (delivered, started.elapsed());
        }
        for (id, payload) in batch {
            let status = plain_post(&client, &uri, None, payload).await;
            assert!((200..300).contains(&status));
            conn.execute(
                "UPDATE sync_queue SET synced_at = strftime('%s','now') WHERE id = ?1",
                [id],
            )
            .unwrap();
            delivered += 1;
        }
    }
}
