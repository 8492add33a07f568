//! Startup benchmark: time from exec to `READY=1` of the release binary (`gradata serve`, with a
//! notification socket of its own), against the backlog a previous run left in `system.db`, with
//! sync enabled to a fake ingest server on loopback (`tests/it/support/fake_ingest.rs`, the lean
//! counting one) answering at once and with 5 ms of added latency; resident memory once idle; the
//! time to exec `/bin/true` (the floor for starting any process here) as the limit; and, in the
//! same run, the original daemon (PyPI `gradata==0.6.0`, `benches/startup/original.rs`): its time
//! from exec to its first answered request and its idle memory.
//!
//! The service sends `READY=1` only after its startup drain, which is bounded (`drain.max_rows`,
//! 3,200 rows by default, and `drain.max_secs`, 30 s): the benchmark also records how many rows the
//! ingest server had received when `READY=1` came, which is the whole backlog below the bound and
//! the bound above it (the worker, which carries on after `READY=1`, may add its first requests;
//! each start is stopped right after, without a final drain). A backlog is made once per size as a previous run leaves it (a data
//! directory the service has run on, then rows enqueued through the library's store) and copied
//! for every start, so each start finds the same queue.
//!
//! Run: `cargo bench --bench startup`: backlogs of 0, 10^3, 10^4 and 10^5 rows (15 starts of each
//! kind with an empty queue, 7 with a backlog, 5 at 10^5; 7 starts of the original).
//! `GRADATA_BENCH_QUICK=1`: backlogs of 0 and 10^3 rows, 5 and 3 starts, 3 of the original, which
//! is skipped with a message when its virtualenv is missing (in a full run that is an error).
//! The virtualenv is `$GRADATA_BENCH_PYTHON`, else `target/bench-venv/bin/python`
//! (`benches/prepare.sh` installs it).
//!
//! Results go to stdout as a Markdown table, and to `target/bench/startup.json` in the suite's
//! results format (`benches/support/results.rs`), scenario `startup`:
//! - area `startup`, figure `ready` (ms), params `rows` and `latency_ms`: gradata at every backlog
//!   and latency; at `rows` 0 and `latency_ms` 0 (an existing empty queue) also the limit
//!   (`/bin/true`), the original (its time to first answer, on an empty brain directory) and the
//!   project's target, 10 ms;
//! - area `startup`, figure `ready` (ms), param `data_dir` `new` (the first start on a new data
//!   directory, which creates `system.db`, sync enabled at no added latency): gradata and the
//!   limit; without `rows`, so the plot's lines are one per series and latency;
//! - area `startup`, figure `drained before ready` (rows), params `rows` and `latency_ms`, for
//!   every backlog;
//! - area `memory`, figure `rss` (MiB), params `state` `idle` and `rows` 0: `VmRSS` one second
//!   after `READY=1` (after the first answer, for the original), gradata, the original and the
//!   target, 10 MiB.
//!
//! A full run exits non-zero, after writing its file, when gradata misses either target.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark harness"
)]
#![allow(clippy::cast_precision_loss, reason = "figures")]

#[path = "../tests/it/support/fake_ingest.rs"]
#[allow(
    dead_code,
    unreachable_pub,
    reason = "shared with the tests, which use all of it"
)]
mod fake_ingest;
#[path = "startup/original.rs"]
mod original;
#[path = "support/results.rs"]
#[allow(
    dead_code,
    reason = "shared by the benchmarks, each of which uses a part"
)]
mod results;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use fake_ingest::{FakeIngest, Reply};
use gradata::store::{self, EventId, Kind, NewEvent, Store};
use results::{Better, Measurement, Series};

/// Starts of each kind with an empty queue, full and quick (odd, so the median is one run's value).
const RUNS: usize = 15;
const QUICK_RUNS: usize = 5;
/// The backlogs, each with its number of starts per latency: fewer at 10^5, where each start
/// first copies the whole database.
const BACKLOGS: &[(usize, usize)] = &[(1_000, 7), (10_000, 7), (100_000, 5)];
const QUICK_BACKLOGS: &[(usize, usize)] = &[(1_000, 3)];
/// Starts of the original daemon, each about a second and a half (its start, then an idle second).
const ORIGINAL_RUNS: usize = 7;
const QUICK_ORIGINAL_RUNS: usize = 3;
/// The latencies the ingest server adds to every answer.
const LATENCIES_MS: [u64; 2] = [0, 5];
/// The targets: exec to `READY=1` with an existing empty queue, and idle resident memory.
const READY_TARGET_MS: f64 = 10.0;
const IDLE_RSS_TARGET_MIB: f64 = 10.0;
const KEY: &str = "bench-key";

/// One start of the service.
struct Start {
    /// From exec to the `READY=1` datagram.
    ready: Duration,
    /// Requests (one per row) the ingest server had received when `READY=1` came.
    received: usize,
    /// `VmRSS` one second after `READY=1`, when asked for.
    idle_rss_kib: Option<u64>,
}

/// The ingest server at each latency of [`LATENCIES_MS`].
struct Ingest {
    latency_ms: u64,
    server: FakeIngest,
}

fn main() -> ExitCode {
    let quick = std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let (runs, backlogs, original_runs) = if quick {
        (QUICK_RUNS, QUICK_BACKLOGS, QUICK_ORIGINAL_RUNS)
    } else {
        (RUNS, BACKLOGS, ORIGINAL_RUNS)
    };
    let python = original::python();
    let original_runs = match original::missing(&python) {
        None => original_runs,
        Some(why) if quick => {
            eprintln!(
                "the original daemon is skipped: {why} (benches/prepare.sh installs it; \
                 GRADATA_BENCH_PYTHON names another)"
            );
            0
        }
        Some(why) => {
            eprintln!(
                "the original daemon cannot be measured: {why} (benches/prepare.sh installs it; \
                 GRADATA_BENCH_PYTHON names another)"
            );
            return ExitCode::FAILURE;
        }
    };
    let ingests: Vec<Ingest> = LATENCIES_MS
        .iter()
        .map(|&latency_ms| Ingest {
            latency_ms,
            server: FakeIngest::counting_with(KEY, None, move |_| {
                Reply::ok().delay(Duration::from_millis(latency_ms))
            }),
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();

    // Empty queues, the kinds of start interleaved so that the machine's drift touches each alike.
    let mut floor = Vec::new();
    let mut fresh = Vec::new();
    let mut empty: Vec<Vec<Duration>> = vec![Vec::new(); ingests.len()];
    let mut rss = Vec::new();
    let mut original_ready = Vec::new();
    let mut original_rss = Vec::new();
    for run in 0..runs {
        let before = Instant::now();
        Command::new("/bin/true").status().unwrap();
        floor.push(before.elapsed());

        let dir = tempfile::tempdir().unwrap();
        fresh.push(start(dir.path(), &ingests[0], false).ready);
        for (ingest, samples) in ingests.iter().zip(&mut empty) {
            let start = start(dir.path(), ingest, ingest.latency_ms == 0);
            assert_eq!(start.received, 0, "an empty queue sent rows");
            samples.push(start.ready);
            rss.extend(start.idle_rss_kib);
        }
        if run < original_runs {
            let start = original::start(&python);
            original_ready.push(start.first_answer);
            original_rss.push(start.idle_rss_kib);
        }
    }

    // Backlogs: (rows, latency, starts).
    let mut backlog_starts: Vec<(usize, u64, Vec<Start>)> = Vec::new();
    for &(rows, starts) in backlogs {
        let filling = Instant::now();
        let template = tempfile::tempdir().unwrap();
        previous_run(template.path(), rows, &ingests[0], &runtime);
        eprintln!(
            "backlog of {rows} rows made in {:.1} s",
            filling.elapsed().as_secs_f64()
        );
        let mut by_latency: Vec<Vec<Start>> = ingests.iter().map(|_| Vec::new()).collect();
        for _ in 0..starts {
            for (ingest, samples) in ingests.iter().zip(&mut by_latency) {
                let dir = tempfile::tempdir().unwrap();
                copy_dir(template.path(), dir.path());
                let start = start(dir.path(), ingest, false);
                // Every row the startup drain takes is delivered before `READY=1`; the worker's
                // first requests after it may be counted too.
                let bound = rows.min(gradata::sync::DEFAULT_MAX_ROWS);
                assert!(
                    (bound..=rows).contains(&start.received),
                    "{rows} rows at {} ms: {} received before READY=1, not {bound} to {rows}",
                    ingest.latency_ms,
                    start.received
                );
                samples.push(start);
            }
        }
        for (ingest, samples) in ingests.iter().zip(by_latency) {
            backlog_starts.push((rows, ingest.latency_ms, samples));
        }
    }
    eprintln!("measured in {:.1} s", started.elapsed().as_secs_f64());

    let mut out = empty_queue_measurements(&floor, &fresh, &empty, &rss);
    out.extend(original_measurements(&original_ready, &original_rss));
    for (rows, latency_ms, starts) in &backlog_starts {
        let ready = Measurement::new("startup", "startup", "ready", "ms", Better::Lower)
            .param("rows", *rows)
            .param("latency_ms", *latency_ms);
        out.push(ready.runs(starts.iter().map(|s| ms(s.ready))));
        let drained = Measurement::new(
            "startup",
            "startup",
            "drained before ready",
            "rows",
            Better::Higher,
        )
        .param("rows", *rows)
        .param("latency_ms", *latency_ms);
        out.push(drained.runs(starts.iter().map(|s| s.received as f64)));
    }
    // Before the table, which sorts the samples: the results keep the runs in their order.
    let path = results::write("startup", &out).unwrap();
    eprintln!("results: {}", path.display());

    println!("| measure | median | min | max | starts |");
    println!("|---|---:|---:|---:|---:|");
    row_ms("exec of /bin/true (limit)", &floor);
    row_ms(
        "exec → READY=1, new data directory (creates system.db)",
        &fresh,
    );
    for (ingest, samples) in ingests.iter().zip(&empty) {
        row_ms(
            &format!(
                "exec → READY=1, existing empty queue, ingest +{} ms",
                ingest.latency_ms
            ),
            samples,
        );
    }
    for (rows, latency_ms, starts) in &backlog_starts {
        let ready: Vec<Duration> = starts.iter().map(|s| s.ready).collect();
        row_ms(
            &format!("exec → READY=1, {rows} rows pending, ingest +{latency_ms} ms"),
            &ready,
        );
        let received: Vec<f64> = starts.iter().map(|s| s.received as f64).collect();
        row(
            &format!("rows received by READY=1, {rows} rows pending, ingest +{latency_ms} ms"),
            &received,
            "",
        );
    }
    row_kib("resident memory when idle (VmRSS, 1 s after READY=1)", &rss);
    if !original_ready.is_empty() {
        row_ms(
            "original 0.6.0: exec → first answer, empty brain directory",
            &original_ready,
        );
        row_kib(
            "original 0.6.0: resident memory 1 s after the first answer",
            &original_rss,
        );
    }

    // The targets bind gradata's medians; a quick run's figures are not to be judged.
    let ready_median = results::median(&empty[0].iter().copied().map(ms).collect::<Vec<_>>());
    let rss_median = results::median(&rss.iter().map(|&kib| mib(kib)).collect::<Vec<_>>());
    let mut missed = Vec::new();
    if ready_median > READY_TARGET_MS {
        missed.push(format!(
            "exec → READY=1 with an existing empty queue: {ready_median:.1} ms \
             (target {READY_TARGET_MS} ms)"
        ));
    }
    if rss_median > IDLE_RSS_TARGET_MIB {
        missed.push(format!(
            "idle resident memory: {rss_median:.1} MiB (target {IDLE_RSS_TARGET_MIB} MiB)"
        ));
    }
    for miss in &missed {
        eprintln!("target missed: {miss}");
    }
    if missed.is_empty() || quick {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The figures with an empty queue: each start as a run; `/bin/true` as the limit of both kinds
/// of start; the existing queue's at each latency, the target beside the one without.
fn empty_queue_measurements(
    floor: &[Duration],
    fresh: &[Duration],
    empty: &[Vec<Duration>],
    rss_kib: &[u64],
) -> Vec<Measurement> {
    let ready = Measurement::new("startup", "startup", "ready", "ms", Better::Lower);
    let mut out = Vec::new();
    let new = ready.clone().param("data_dir", "new");
    out.push(new.clone().runs(fresh.iter().copied().map(ms)));
    out.push(
        new.series(Series::Limit)
            .runs(floor.iter().copied().map(ms)),
    );
    for (&latency_ms, samples) in LATENCIES_MS.iter().zip(empty) {
        let existing = ready
            .clone()
            .param("rows", 0)
            .param("latency_ms", latency_ms);
        out.push(existing.clone().runs(samples.iter().copied().map(ms)));
        if latency_ms == 0 {
            out.push(
                existing
                    .clone()
                    .series(Series::Limit)
                    .runs(floor.iter().copied().map(ms)),
            );
            out.push(existing.series(Series::Target).runs([READY_TARGET_MS]));
        }
    }
    let rss = idle_rss();
    out.push(rss.clone().runs(rss_kib.iter().copied().map(mib)));
    out.push(rss.series(Series::Target).runs([IDLE_RSS_TARGET_MIB]));
    out
}

/// The original's figures, beside gradata's with an existing empty queue and no added latency
/// (the original has no outbox to drain); none when it was skipped.
fn original_measurements(ready: &[Duration], rss_kib: &[u64]) -> Vec<Measurement> {
    if ready.is_empty() {
        return Vec::new();
    }
    vec![
        Measurement::new("startup", "startup", "ready", "ms", Better::Lower)
            .series(Series::Original)
            .param("rows", 0)
            .param("latency_ms", 0)
            .runs(ready.iter().copied().map(ms)),
        idle_rss()
            .series(Series::Original)
            .runs(rss_kib.iter().copied().map(mib)),
    ]
}

/// Idle resident memory, with nothing queued.
fn idle_rss() -> Measurement {
    Measurement::new("memory", "startup", "rss", "MiB", Better::Lower)
        .param("state", "idle")
        .param("rows", 0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn row_ms(name: &str, samples: &[Duration]) {
    let values: Vec<f64> = samples.iter().copied().map(ms).collect();
    row(name, &values, " ms");
}

fn row_kib(name: &str, samples: &[u64]) {
    let values: Vec<f64> = samples.iter().map(|&kib| kib as f64).collect();
    row(name, &values, " KiB");
}

fn row(name: &str, values: &[f64], unit: &str) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    println!(
        "| {name} | {:.1}{unit} | {:.1}{unit} | {:.1}{unit} | {} |",
        results::median(&sorted),
        sorted[0],
        sorted[sorted.len() - 1],
        sorted.len()
    );
}

/// Leaves in `dir` what a previous run leaves with `rows` rows still pending: the service has
/// started and stopped there once (the brain's files, `system.db`), then the rows are enqueued
/// through the library's store, in one transaction, as the API would have stored them.
fn previous_run(dir: &Path, rows: usize, ingest: &Ingest, runtime: &tokio::runtime::Runtime) {
    start(dir, ingest, false);
    // Corrections of about 300 bytes, as the drain benchmark's.
    let description = "x".repeat(200);
    let events: Vec<NewEvent> = (0..rows)
        .map(|session| {
            let data = serde_json::json!({
                "session": session,
                "description": description,
                "severity": "minor",
            });
            NewEvent::new("brain-bench", EventId::generate(), Kind::Correction, &data)
        })
        .collect();
    runtime.block_on(async {
        let store = Store::open(&store::Options::new(dir)).unwrap();
        store.enqueue(events).await.unwrap();
    });
}

/// Copies the files of `from` into `to`, subdirectories included.
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Starts the service on `data_dir` with sync to `ingest`, waits for `READY=1`, counts what the
/// ingest server had received by then, optionally reads the idle RSS, and stops it.
fn start(data_dir: &Path, ingest: &Ingest, measure_rss: bool) -> Start {
    // Outside the data directory: the socket is the benchmark's, not something a run leaves.
    let socket_dir = tempfile::tempdir().unwrap();
    let notify_path = socket_dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let received_before = ingest.server.counted().0;
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradata"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_clear()
        .env("GRADATA_CONFIG", "")
        .env("HOME", data_dir)
        .env("GRADATA_API_KEY", KEY)
        .env("GRADATA_CLOUD_INGEST_URL", ingest.server.url("/ingest"))
        // After `READY=1` the worker carries on with the backlog; the final drain would only make
        // each stop longer, and no figure is taken from it.
        .env("GRADATA_DRAIN_SHUTDOWN_MAX_SECS", "0")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("GRADATA_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
    let received = ingest.server.counted().0 - received_before;
    let idle_rss_kib = measure_rss.then(|| {
        std::thread::sleep(Duration::from_secs(1));
        vm_rss_kib(child.id())
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
    Start {
        ready,
        received,
        idle_rss_kib,
    }
}

/// `VmRSS` of a running process, in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
