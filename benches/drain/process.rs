//! The drain as an operator runs it: `gradata drain`, the release binary, as a process of its own
//! on a copy of a backlog, into a fresh counting fake ingest server in the benchmark's process,
//! with a budget large enough for every row. The process's `/proc/<pid>/status` is read every
//! [`SAMPLE_EVERY`] from exec to exit.
//!
//! It knows nothing of the in-process scenarios of `drain.rs`; it reports the time from exec to
//! exit, every `VmRSS` sample and the peak, with their targets.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fake_ingest::FakeIngest;
use super::results::{Better, Measurement, Series};

/// How often the process's memory is read.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// The ceilings: the 10^6-row drain's time, and its resident memory.
const TIME_TARGET_S: f64 = 30.0;
const RSS_TARGET_MIB: f64 = 64.0;
const KEY: &str = "bench-key";
/// The command, as a param of the figures: it names their line apart from the in-process engine's.
const COMMAND: &str = "gradata drain";

/// One reading of the process's `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Since exec.
    at: Duration,
    rss_kib: u64,
    hwm_kib: u64,
}

/// What the process drain did.
pub(crate) struct ProcessDrain {
    rows: usize,
    /// From exec to exit.
    elapsed: Duration,
    /// Its `--json` summary.
    report: serde_json::Value,
    samples: Vec<Sample>,
    /// The peak resident memory: the largest `VmHWM` sampled. Not the kernel's `maxrss` of the
    /// waited child: a child spawned with `vfork` and `exec` inherits there the high-water mark of
    /// the benchmark's own memory (hundreds of MiB after the limit's run at 10^6 rows).
    peak_kib: u64,
}

/// Drains a copy of the backlog in `template` (`rows` pending rows) with the service binary;
/// `None` when `GRADATA_BENCH_ONLY` leaves it out.
///
/// # Panics
///
/// When the process fails, or the server did not receive each row exactly once.
pub(crate) fn drain(template: &Path, rows: usize) -> Option<ProcessDrain> {
    if std::env::var("GRADATA_BENCH_ONLY").is_ok_and(|only| !COMMAND.contains(&only)) {
        return None;
    }
    let dir = super::copy_of(template);
    let server = FakeIngest::counting(KEY);
    let binary = env!("CARGO_BIN_EXE_gradata");
    let started = Instant::now();
    let child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["drain", "--json", "--max-seconds", "600", "--max-rows"])
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
    // The samples are taken on a thread of their own, on a clock, so that the exit is seen the
    // moment it happens (`wait`), not at the next sample; dropping `stop` ends the sampling.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let pid = child.id();
    let sampler = std::thread::spawn(move || {
        // The first reading one period after the spawn: one taken at once would catch the
        // process before its exec is done, with the memory of no program.
        let mut samples = Vec::new();
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(SAMPLE_EVERY)
        {
            if let Some(sample) = sample(pid, started.elapsed()) {
                samples.push(sample);
            }
        }
        samples
    });
    let output = child.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    drop(stop);
    let samples = sampler.join().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "no JSON report from gradata drain ({err}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(output.status.success(), "gradata drain failed: {report}");
    let peak_kib = samples.iter().map(|s| s.hwm_kib).max().unwrap_or(0);
    assert_eq!(
        report["delivered"].as_u64(),
        Some(rows as u64),
        "gradata drain: not every row was delivered: {report}"
    );
    assert_eq!(
        server.counted(),
        (rows, rows),
        "gradata drain: the server did not receive each row exactly once (requests, distinct keys)"
    );
    Some(ProcessDrain {
        rows,
        elapsed,
        report,
        samples,
        peak_kib,
    })
}

impl ProcessDrain {
    /// Its figures in the suite's results format: time with its target, every memory sample
    /// (scenario `rss_scenario`), and the peak with its target.
    pub(crate) fn measurements(&self, rss_scenario: &str) -> Vec<Measurement> {
        let time = Measurement::new("drain", "drain-process", "time", "s", Better::Lower)
            .param("rows", self.rows)
            .param("latency_ms", 0)
            .param("command", COMMAND);
        let peak = Measurement::new("drain", "drain-process", "rss max", "MiB", Better::Lower)
            .param("rows", self.rows)
            .param("command", COMMAND);
        let rss = Measurement::new("drain", rss_scenario, "rss", "MiB", Better::Lower);
        let mut out = vec![
            time.clone().runs([self.elapsed.as_secs_f64()]),
            time.series(Series::Target).runs([TIME_TARGET_S]),
            peak.clone().runs([mib(self.peak_kib)]),
            peak.series(Series::Target).runs([RSS_TARGET_MIB]),
        ];
        out.extend(self.samples.iter().map(|sample| {
            rss.clone()
                .param("t_s", sample.at.as_secs_f64())
                .runs([mib(sample.rss_kib)])
        }));
        out
    }

    /// A line of the summary on stdout.
    pub(crate) fn print(&self) {
        let rss: Vec<u64> = self.samples.iter().map(|s| s.rss_kib).collect();
        let last = rss.last().copied().unwrap_or(0);
        println!(
            "- `gradata drain` as a process, {} rows: {:.1} s from exec to exit ({:.0} rows/s; its own report: {:.1} s), peak RSS {:.1} MiB (target {RSS_TARGET_MIB:.0}), last sample {:.1} MiB, {} samples",
            self.rows,
            self.elapsed.as_secs_f64(),
            self.rows as f64 / self.elapsed.as_secs_f64(),
            self.report["elapsed"].as_f64().unwrap_or(f64::NAN),
            mib(self.peak_kib),
            mib(last),
            rss.len()
        );
    }

    /// The targets it missed, if any.
    pub(crate) fn missed(&self) -> Vec<String> {
        let mut missed = Vec::new();
        if self.elapsed.as_secs_f64() >= TIME_TARGET_S {
            missed.push(format!(
                "gradata drain of {} rows took {:.1} s (target {TIME_TARGET_S} s)",
                self.rows,
                self.elapsed.as_secs_f64()
            ));
        }
        // No sample (a drain shorter than a sampling period) is no proof of the ceiling.
        if self.samples.is_empty() || mib(self.peak_kib) >= RSS_TARGET_MIB {
            missed.push(format!(
                "gradata drain peaked at {:.1} MiB (target {RSS_TARGET_MIB} MiB)",
                mib(self.peak_kib)
            ));
        }
        missed
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
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
