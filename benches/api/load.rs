//! The load of the capture benchmark: one `wrk` run ([`Load`]) and what it counted, and the peak
//! resident memory of a process sampled while a load runs ([`peak_rss_during`]). It knows nothing
//! of which daemon it loads, nor of the results format.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

/// How often the resident memory is read while a load runs.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// One `wrk` run's figures.
pub(crate) struct Load {
    /// Responses received.
    pub(crate) requests: u64,
    /// 2xx responses (wrk counts every status from 400 up as an error; neither daemon sends 3xx).
    pub(crate) ok: u64,
    /// Connect, read and write errors and timeouts: requests that got no answer (a server that
    /// closes a connection `wrk` still writes to shows here, not in `requests`).
    pub(crate) socket_errors: u64,
    /// 2xx responses per second: an error is never counted as work done.
    pub(crate) rate: f64,
    /// From writing the request's first byte to the end of its answer: a new connection's
    /// handshake is not in it.
    pub(crate) p99_ms: f64,
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
    /// POSTs of `body` to `url` for `seconds`, from one load thread over `connections`
    /// connections (kept alive unless the server closes them: then `wrk` opens a new one for the
    /// next request).
    pub(crate) fn run(
        wrk: &Path,
        url: &str,
        body: &[u8],
        connections: usize,
        seconds: u32,
    ) -> Load {
        let dir = tempfile::tempdir().unwrap();
        let (script, body_file) = (dir.path().join("post.lua"), dir.path().join("body.json"));
        std::fs::write(&script, WRK_SCRIPT).unwrap();
        std::fs::write(&body_file, body).unwrap();
        let output = Command::new(wrk)
            .env("WRK_BODY_FILE", &body_file)
            .args(["--threads", "1", "--timeout", "10s"])
            .arg(format!("--connections={connections}"))
            .arg(format!("--duration={seconds}s"))
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
        let socket_errors = count("socket_errors");
        if status_errors + socket_errors > 0 {
            eprintln!("{url}: {stdout}");
        }
        let ok = requests - status_errors;
        Load {
            requests,
            ok,
            socket_errors,
            rate: ok as f64 / (count("duration_us") as f64 / 1e6),
            p99_ms: count("p99_us") as f64 / 1000.0,
        }
    }

    /// Requests that failed: non-2xx answers and requests that got no answer.
    pub(crate) fn errors(&self) -> u64 {
        self.requests - self.ok + self.socket_errors
    }
}

/// `$WRK`, else `wrk` on `PATH`.
pub(crate) fn wrk() -> PathBuf {
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

/// Runs `work` while a thread reads process `pid`'s resident memory (`VmRSS`) every
/// `RSS_SAMPLE_EVERY`; returns what `work` returned and the largest value read, in MiB. `VmHWM`
/// would include the start's peak; this is the peak while the load runs.
pub(crate) fn peak_rss_during<T>(pid: u32, work: impl FnOnce() -> T) -> (T, f64) {
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = rss_mib(pid);
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(RSS_SAMPLE_EVERY);
                peak = peak.max(rss_mib(pid));
            }
            peak
        });
        let value = work();
        done.store(true, Ordering::Relaxed);
        (value, sampler.join().unwrap())
    })
}

/// Process `pid`'s resident memory now (`VmRSS` of `/proc/<pid>/status`), in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in the status of process {pid}"));
    kib as f64 / 1024.0
}
