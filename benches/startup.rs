//! Startup benchmark (issue: gradata serve): time from exec to `READY=1` with an empty queue, and
//! resident memory once idle, measured on the release binary, next to the time to exec `/bin/true`
//! (the floor for starting any process on this machine) in the same run.
//!
//! Run: `cargo bench --bench startup` (`GRADATA_BENCH_QUICK=1`: 5 runs instead of 15). Results go
//! to stdout as a Markdown table, and to `target/bench/startup.json` in the suite's results format
//! (`benches/support/results.rs`), with the targets of the project's issue: `READY=1` within
//! 10 ms with an existing empty queue, idle resident memory under 10 MiB.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark harness"
)]
#![allow(clippy::cast_precision_loss, reason = "figures")]

#[path = "support/results.rs"]
#[allow(
    dead_code,
    reason = "shared by the benchmarks, each of which uses a part"
)]
mod results;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use results::{Better, Measurement, Series};

/// Starts of each kind, full and quick (odd, so the median is one run's value).
const RUNS: usize = 15;
const QUICK_RUNS: usize = 5;
/// The targets: exec to `READY=1` with an existing empty queue, and idle resident memory.
const READY_TARGET_MS: f64 = 10.0;
const IDLE_RSS_TARGET_MIB: f64 = 10.0;

fn main() {
    let quick = std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let runs = if quick { QUICK_RUNS } else { RUNS };
    let mut floor = Vec::new();
    let mut fresh = Vec::new();
    let mut existing = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        Command::new("/bin/true").status().unwrap();
        floor.push(started.elapsed());

        let dir = tempfile::tempdir().unwrap();
        let (ready, _) = start_and_stop(dir.path(), false);
        fresh.push(ready);
        let (ready, idle_rss) = start_and_stop(dir.path(), true);
        existing.push(ready);
        rss.push(idle_rss);
    }
    // Before the table, which sorts the samples: the results keep the runs in their order.
    let path = results::write("startup", &measurements(&floor, &fresh, &existing, &rss)).unwrap();
    eprintln!("results: {}", path.display());
    println!("| measure | median | min | max |");
    println!("|---|---:|---:|---:|");
    row("exec of /bin/true (floor)", &mut floor);
    row(
        "exec → READY=1, new data directory (creates system.db)",
        &mut fresh,
    );
    row("exec → READY=1, existing empty queue", &mut existing);
    rss.sort_unstable();
    println!(
        "| resident memory when idle (VmRSS, 1 s after READY=1) | {} KiB | {} KiB | {} KiB |",
        rss[rss.len() / 2],
        rss[0],
        rss[rss.len() - 1]
    );
}

/// The figures in the suite's results format: each start as a run, `/bin/true` as the limit of
/// both kinds of start.
fn measurements(
    floor: &[Duration],
    fresh: &[Duration],
    existing: &[Duration],
    rss_kib: &[u64],
) -> Vec<Measurement> {
    let ms = |samples: &[Duration]| -> Vec<f64> {
        samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect()
    };
    let ready = Measurement::new("startup", "startup", "ready", "ms", Better::Lower);
    let mut out = Vec::new();
    for (data_dir, samples) in [("new", fresh), ("existing", existing)] {
        let ready = ready.clone().param("data_dir", data_dir).param("rows", 0);
        out.push(ready.clone().runs(ms(samples)));
        out.push(ready.clone().series(Series::Limit).runs(ms(floor)));
        if data_dir == "existing" {
            out.push(ready.series(Series::Target).runs([READY_TARGET_MS]));
        }
    }
    let rss = Measurement::new("memory", "startup", "rss", "MiB", Better::Lower)
        .param("state", "idle")
        .param("rows", 0);
    out.push(
        rss.clone()
            .runs(rss_kib.iter().map(|&kib| kib as f64 / 1024.0)),
    );
    out.push(rss.series(Series::Target).runs([IDLE_RSS_TARGET_MIB]));
    out
}

fn row(name: &str, samples: &mut [Duration]) {
    samples.sort_unstable();
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {name} | {} | {} | {} |",
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1])
    );
}

/// Starts the service, waits for `READY=1`, optionally reads its idle RSS, and stops it.
fn start_and_stop(data_dir: &std::path::Path, measure_rss: bool) -> (Duration, u64) {
    let notify_path = data_dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradata"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_clear()
        .env("GRADATA_CONFIG", "")
        .env("HOME", data_dir)
        .env("GRADATA_SYNC_API_KEY_FILE", data_dir.join("no-key"))
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
    let rss = if measure_rss {
        std::thread::sleep(Duration::from_secs(1));
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    } else {
        0
    };
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    (ready, rss)
}
