//! Backlog benchmark (the project's issue 21): `gradata drain`, the release binary, delivers a
//! 1,000,000-row backlog into a local fake ingest server with no added latency.
//!
//! Targets: every row delivered, exactly one request per row, in under 30 s; peak resident memory
//! (`VmHWM`) under 64 MiB, and flat: the resident memory late in the drain is within 8 MiB of
//! what it was early on (a leak, or anything kept per row, would grow with the rows done). The
//! process's `/proc/<pid>/status` is sampled every 50 ms over the run.
//!
//! The queue is written straight into the store's table in one transaction (the schema created by
//! opening the store first), not through the HTTP API: filling is not what is measured. The fake
//! server is the lean counting one, on its own thread in this process. With
//! `GRADATA_BENCH_BASELINE=<another gradata binary>`, that binary drains a copy of the same
//! backlog first, for a side-by-side figure in the same run (the targets apply to this build).
//!
//! Run: `cargo bench --bench backlog` (`GRADATA_BENCH_QUICK=1`: 20,000 rows, a check that it works
//! that judges only the delivery). Results go to stdout as a Markdown table, and to
//! `target/bench/backlog.json` in the suite's results format (`benches/support/results.rs`), area
//! `drain`, scenario `backlog`, params `rows`, `latency_ms` (0) and `command`: `time` (s, exec to exit) and
//! `throughput` (rows/s), `delivered` (rows), `peak rss` (MiB) and `rss growth` (MiB, late less
//! early), each with its target, and `rss` (MiB) over `t_s` (seconds since exec, at most about 200
//! samples), the plot of RSS during the drain. The exit status is non-zero when a target is
//! missed, after the file is written.

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

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use fake_ingest::FakeIngest;
use gradata::store::{self, Store};
use results::{Better, Measurement, Series};

/// The backlog; the quick mode's.
const ROWS: usize = 1_000_000;
const QUICK_ROWS: usize = 20_000;
/// At most about this many RSS samples go to the results (every sample is taken and judged).
const PLOTTED_SAMPLES: usize = 200;
const KEY: &str = "bench-key";
const TIME_TARGET: Duration = Duration::from_secs(30);
const PEAK_TARGET_KIB: u64 = 64 * 1024;
/// How much the resident memory may grow from early in the drain to late in it.
const FLAT_TOLERANCE_KIB: u64 = 8 * 1024;
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// One reading of the drain's `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

/// What one drain of the backlog did.
struct Run {
    elapsed: Duration,
    report: serde_json::Value,
    requests: usize,
    keys: usize,
    samples: Vec<Sample>,
}

fn main() -> ExitCode {
    let quick = std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let rows = if quick { QUICK_ROWS } else { ROWS };
    let template = tempfile::tempdir().unwrap();
    let filling = Instant::now();
    fill(template.path(), rows);
    let filled = filling.elapsed();

    // `GRADATA_BENCH_BASELINE=<path of another gradata binary>` (say, a release build of the main
    // branch) drains the same backlog first, for a side-by-side figure in the same run.
    let baseline = std::env::var_os("GRADATA_BENCH_BASELINE")
        .map(|binary| drain(template.path(), Path::new(&binary), rows));
    let run = drain(
        template.path(),
        Path::new(env!("CARGO_BIN_EXE_gradata")),
        rows,
    );

    let delivered = run.report["delivered"].as_u64().unwrap_or(0);
    let drain_time = run.report["elapsed"].as_f64().unwrap_or(f64::NAN);
    let peak = run.samples.iter().map(|s| s.hwm_kib).max().unwrap_or(0);
    let early = window_max(&run.samples, run.elapsed, 0.1, 0.3);
    let late = window_max(&run.samples, run.elapsed, 0.7, 0.95);
    let (requests, keys) = (run.requests, run.keys);

    let mut checks = vec![
        (
            "every row delivered, one request each".to_owned(),
            format!("{delivered} delivered, {requests} requests, {keys} distinct keys"),
            format!("{rows}"),
            Some(delivered == rows as u64 && requests == rows && keys == rows),
        ),
        (
            "drain time (process exec → exit)".to_owned(),
            format!(
                "{:.1} s ({:.0} rows/s; the drain's own report: {drain_time:.1} s)",
                run.elapsed.as_secs_f64(),
                rows as f64 / run.elapsed.as_secs_f64()
            ),
            format!("< {} s", TIME_TARGET.as_secs()),
            (!quick).then_some(run.elapsed < TIME_TARGET),
        ),
        (
            "peak resident memory (VmHWM)".to_owned(),
            format!("{:.1} MiB", peak as f64 / 1024.0),
            format!("< {} MiB", PEAK_TARGET_KIB / 1024),
            (!quick).then_some(peak > 0 && peak < PEAK_TARGET_KIB),
        ),
        (
            "resident memory, early (10-30% of the run) vs late (70-95%), max of each".to_owned(),
            format!(
                "{:.1} MiB → {:.1} MiB",
                early as f64 / 1024.0,
                late as f64 / 1024.0
            ),
            format!("growth < {} MiB", FLAT_TOLERANCE_KIB / 1024),
            (!quick).then_some(early > 0 && late > 0 && late < early + FLAT_TOLERANCE_KIB),
        ),
    ];
    if let Some(baseline) = &baseline {
        let peak = baseline
            .samples
            .iter()
            .map(|s| s.hwm_kib)
            .max()
            .unwrap_or(0);
        checks.push((
            "baseline binary: drain time, peak memory, early → late".to_owned(),
            format!(
                "{:.1} s, {:.1} MiB, {:.1} → {:.1} MiB ({} delivered); this build / baseline time = {:.2}",
                baseline.elapsed.as_secs_f64(),
                peak as f64 / 1024.0,
                window_max(&baseline.samples, baseline.elapsed, 0.1, 0.3) as f64 / 1024.0,
                window_max(&baseline.samples, baseline.elapsed, 0.7, 0.95) as f64 / 1024.0,
                baseline.report["delivered"],
                run.elapsed.as_secs_f64() / baseline.elapsed.as_secs_f64()
            ),
            "(for comparison)".to_owned(),
            None,
        ));
    }
    println!(
        "Backlog of {rows} rows (filled in {:.1} s), `gradata drain` into a local fake ingest, no added latency; {} samples.",
        filled.as_secs_f64(),
        run.samples.len()
    );
    println!();
    println!("| measure | value | target | met |");
    println!("|---|---|---|---|");
    let mut all_met = true;
    for (name, value, target, met) in checks {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        println!("| {name} | {value} | {target} | {met} |");
        all_met &= met != "**no**";
    }
    let tenths: Vec<String> = (0..10)
        .map(|tenth| {
            let (from, to) = (f64::from(tenth) / 10.0, f64::from(tenth + 1) / 10.0);
            format!(
                "{:.1}",
                window_max(&run.samples, run.elapsed, from, to) as f64 / 1024.0
            )
        })
        .collect();
    println!();
    println!(
        "Resident memory (MiB, max per tenth of the run): {}",
        tenths.join(", ")
    );
    let path = results::write("backlog", &measurements(&run, rows, peak, early, late)).unwrap();
    eprintln!("results: {}", path.display());
    if all_met {
        ExitCode::SUCCESS
    } else {
        eprintln!("a target was missed; the drain's report: {}", run.report);
        ExitCode::FAILURE
    }
}

/// This build's drain in the suite's results format, each figure with its target.
fn measurements(
    run: &Run,
    rows: usize,
    peak_kib: u64,
    early_kib: u64,
    late_kib: u64,
) -> Vec<Measurement> {
    let figure = |name: &str, unit: &str, better: Better| {
        // `command` names the line in the drain plots: this time runs from exec to exit.
        Measurement::new("drain", "backlog", name, unit, better)
            .param("rows", rows)
            .param("latency_ms", 0)
            .param("command", "gradata drain")
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let seconds = run.elapsed.as_secs_f64();
    let delivered = run.report["delivered"].as_f64().unwrap_or(0.0);
    let mut out = Vec::new();
    for (m, value, target) in [
        (
            figure("time", "s", Better::Lower),
            seconds,
            TIME_TARGET.as_secs_f64(),
        ),
        (
            figure("delivered", "rows", Better::Higher),
            delivered,
            rows as f64,
        ),
        (
            figure("peak rss", "MiB", Better::Lower),
            mib(peak_kib),
            mib(PEAK_TARGET_KIB),
        ),
        (
            figure("rss growth", "MiB", Better::Lower),
            mib(late_kib) - mib(early_kib),
            mib(FLAT_TOLERANCE_KIB),
        ),
    ] {
        out.push(m.clone().series(Series::Target).runs([target]));
        out.push(m.runs([value]));
    }
    out.push(figure("throughput", "rows/s", Better::Higher).runs([rows as f64 / seconds]));
    let every = run.samples.len().div_ceil(PLOTTED_SAMPLES).max(1);
    for sample in run.samples.iter().step_by(every) {
        out.push(
            figure("rss", "MiB", Better::Lower)
                .param("t_s", (sample.at.as_secs_f64() * 100.0).round() / 100.0)
                .runs([mib(sample.rss_kib)]),
        );
    }
    out
}

/// Copies the backlog in `template` to a fresh directory and drains it with `binary` into a fresh
/// counting server, sampling the process's memory meanwhile.
fn drain(template: &Path, binary: &Path, rows: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(template).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let server = FakeIngest::counting(KEY);
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["drain", "--json", "--max-seconds", "120", "--max-rows"])
        .arg(rows.to_string())
        .env_clear()
        .env("GRADATA_CONFIG", "")
        .env("HOME", dir.path())
        .env("GRADATA_API_KEY", KEY)
        .env("GRADATA_CLOUD_INGEST_URL", server.url("/ingest"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut samples = Vec::new();
    let mut maps = Vec::new();
    while child.try_wait().unwrap().is_none() {
        if let Some(sample) = sample(child.id(), started.elapsed()) {
            samples.push(sample);
        }
        // Diagnosis aid: `GRADATA_BENCH_SMAPS=1` prints which mappings grew over the run.
        if std::env::var_os("GRADATA_BENCH_SMAPS").is_some() && samples.len() % 40 == 1 {
            if let Ok(smaps) = std::fs::read_to_string(format!("/proc/{}/smaps", child.id())) {
                maps.push(smaps_rss(&smaps));
            }
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    if let (Some(first), Some(last)) = (maps.get(1), maps.last()) {
        for (name, rss) in last {
            let before = first.get(name).copied().unwrap_or(0);
            if rss.abs_diff(before) > 256 {
                eprintln!("{name}: {before} kB -> {rss} kB");
            }
        }
    }
    let elapsed = started.elapsed();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "no JSON report from {} ({err}): {stdout}\n{}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let (requests, keys) = server.counted();
    Run {
        elapsed,
        report,
        requests,
        keys,
        samples,
    }
}

/// The store in `dir`, created by opening it (so the schema is the store's own), then `rows`
/// pending rows written in one transaction.
fn fill(dir: &Path, rows: usize) {
    drop(Store::open(&store::Options::new(dir)).unwrap());
    let mut conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    let transaction = conn.transaction().unwrap();
    {
        let mut insert = transaction
            .prepare(
                "INSERT INTO sync_queue (payload_json, kind, enqueued_at, attempts, event_id)
                 VALUES (?1, 'correction', ?2, 0, ?3)",
            )
            .unwrap();
        let description = "x".repeat(200);
        for i in 0..rows {
            let event_id = format!("01BACKLOG{i:017}");
            let payload = format!(
                r#"{{"brain_id":"brain-bench","event_id":"{event_id}","correction":{{"session":{i},"description":"{description}","severity":"minor"}}}}"#
            );
            insert
                .execute(rusqlite::params![payload, 1_780_000_000.0, event_id])
                .unwrap();
        }
    }
    transaction.commit().unwrap();
}

/// Resident kB per mapping name (anonymous mappings by their size class) in a `smaps` text.
fn smaps_rss(smaps: &str) -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    let mut name = String::new();
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            name = fields
                .get(5)
                .map_or_else(|| "[anon]".to_owned(), |n| (*n).to_owned());
        } else if fields.first() == Some(&"Rss:") {
            *by_name.entry(name.clone()).or_insert(0) += fields[1].parse::<u64>().unwrap_or(0);
        }
    }
    by_name
}

/// Reads `VmRSS` and `VmHWM` of `pid`; `None` once it is gone.
fn sample(pid: u32, at: Duration) -> Option<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Sample {
        at,
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// The largest `VmRSS` sampled between the fractions `from` and `to` of the run.
fn window_max(samples: &[Sample], run: Duration, from: f64, to: f64) -> u64 {
    samples
        .iter()
        .filter(|s| (run.mul_f64(from)..run.mul_f64(to)).contains(&s.at))
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(0)
}
