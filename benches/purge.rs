//! Retention at scale: the release binary purges 1,000,000 expired synced rows while a probe
//! writes single events (`POST /v1/events`) at 100 requests a second, under a 30 s watchdog.
//!
//! The service runs as systemd would run it: `WATCHDOG_USEC=30000000` and a notify socket this
//! benchmark reads (every `WATCHDOG=1` is timed). Sync is disabled, so only the API, the outbox
//! and the purge are measured. A test hook (`GRADATA_TEST_FIRST_PURGE_AFTER_SECS`) starts the
//! purge [`BASELINE`] after start instead of a minute: the probe's latencies before the purge
//! starts are the baseline, those while it runs (from the retention task's debug record that it
//! starts to its record of what it deleted) are compared with them, in the same run. The probe
//! keeps its schedule whatever the answers take (each latency counts from when the request was
//! due), so a stall shows in every request it delays.
//!
//! Targets (the project's issue): the probe's p99.9 during the purge within 2x of the baseline's,
//! its worst single latency under 250 ms, every row past its retention deleted, and the watchdog
//! fed throughout (no gap of 30 s between two pings, from `READY=1` to the purge's end). Also
//! shown: the purge's duration and the WAL's size afterwards. Prints a Markdown table; exits
//! non-zero if a target is missed.
//!
//! It writes `target/bench/purge.json` in the suite's results format
//! (`benches/support/results.rs`), area `retention`, scenario `purge`, param `rows`: `p50`, `p99`,
//! `p99.9` and `max` (ms) during the purge, the same without it as the limit, the p99.9's target
//! as 2x the limit and the max's as 250 ms; `purged` (rows), `watchdog silence` (s) and `failed
//! probes` (requests), each with its target; `purge time` (s) and `wal after` (MiB).
//!
//! Run: `cargo bench --bench purge`. `GRADATA_BENCH_QUICK=1`: 20,000 rows after a baseline of 4 s,
//! a check that it works that judges nothing.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::exit,
    reason = "benchmark harness"
)]
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "figures"
)]

#[path = "support/results.rs"]
#[allow(
    dead_code,
    reason = "shared by the benchmarks, each of which uses a part"
)]
mod results;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use results::{Better, Measurement, Series};

/// Expired synced rows the purge deletes; the quick mode's.
const ROWS: u64 = 1_000_000;
const QUICK_ROWS: u64 = 20_000;
/// The probe's rate: one request every 10 ms.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// How long the probe runs before the purge starts (the baseline); the quick mode's.
const BASELINE: Duration = Duration::from_secs(30);
const QUICK_BASELINE: Duration = Duration::from_secs(4);
/// The targets: p99.9 during the purge over p99.9 without it, and the worst latency during it.
const P999_RATIO_TARGET: f64 = 2.0;
const MAX_TARGET: Duration = Duration::from_millis(250);
/// The watchdog the service runs under.
const WATCHDOG: Duration = Duration::from_secs(30);
/// Longest the purge may take before the benchmark gives up on it.
const PURGE_PATIENCE: Duration = Duration::from_secs(600);

const PURGE_STARTS: &str = "purging synced rows past their retention";
const PURGE_ENDS: &str = "deleted synced rows past their retention";

fn main() {
    let quick = std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let (rows, baseline_length) = if quick {
        (QUICK_ROWS, QUICK_BASELINE)
    } else {
        (ROWS, BASELINE)
    };
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    fill(dir.path(), rows);
    eprintln!(
        "{rows} expired rows written in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let notify = Notify::bind(&dir.path().join("notify.sock"));
    let addr = free_addr();
    let stderr_path = dir.path().join("stderr.log");
    let mut service = spawn(
        dir.path(),
        addr,
        &notify.path,
        &stderr_path,
        baseline_length,
    );
    notify.wait_for("READY=1", Duration::from_secs(120));
    let ready = Instant::now();

    let probe = Probe::start(addr);
    let purge_started = wait_for_log(&stderr_path, PURGE_STARTS, baseline_length * 4);
    eprintln!("purge started");
    let (purge_ended, record) = {
        let at = wait_for_log(&stderr_path, PURGE_ENDS, PURGE_PATIENCE);
        (at.0, at.1)
    };
    eprintln!("purge ended: {record}");
    // A little more probing after the end, so requests the purge's last step delayed are in.
    std::thread::sleep(Duration::from_secs(2));
    let samples = probe.stop();
    let alive = service.try_wait().unwrap().is_none();
    let pings = notify.pings();
    let wal = wal_bytes(dir.path());
    stop(&mut service);

    let baseline: Vec<Duration> = samples
        .iter()
        .filter(|(due, _)| *due > ready + Duration::from_secs(2) && *due < purge_started.0)
        .map(|(_, latency)| *latency)
        .collect();
    let during: Vec<Duration> = samples
        .iter()
        .filter(|(due, _)| *due >= purge_started.0 && *due <= purge_ended)
        .map(|(_, latency)| *latency)
        .collect();
    let failed = samples.len() - samples.iter().filter(|(_, l)| *l != Duration::MAX).count();
    let purged: u64 = field(&record, "purged")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let steps = field(&record, "steps").unwrap_or_default();
    // The watchdog: the longest silence from READY=1 to the purge's end, the last one included.
    let mut marks: Vec<Instant> = vec![ready];
    marks.extend(pings.iter().copied().filter(|at| *at <= purge_ended));
    marks.push(purge_ended);
    let longest_silence = marks
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();

    // Where the purge's slowest probes fell, for whoever tunes it.
    let mut slowest: Vec<(Duration, Duration)> = samples
        .iter()
        .filter(|(due, _)| *due >= purge_started.0 && *due <= purge_ended)
        .map(|(due, latency)| (*latency, *due - purge_started.0))
        .collect();
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    for (latency, at) in slowest.iter().take(5) {
        eprintln!(
            "slow during the purge: {:.1} ms, {:.2} s after it started",
            latency.as_secs_f64() * 1000.0,
            at.as_secs_f64()
        );
    }
    let base = Summary::of(baseline);
    let purge = Summary::of(during);
    let ratio = purge.p999.as_secs_f64() / base.p999.as_secs_f64();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!("| measure | without purge | during purge | target | met |");
    println!("|---|---:|---:|---|---|");
    let checks = [
        (
            "probe p99.9 (100 req/s, POST /v1/events)".to_owned(),
            ms(base.p999),
            ms(purge.p999),
            format!("≤ {P999_RATIO_TARGET}x without ({ratio:.2}x)"),
            ratio <= P999_RATIO_TARGET,
        ),
        (
            "probe worst latency".to_owned(),
            ms(base.max),
            ms(purge.max),
            format!("< {} ms during", MAX_TARGET.as_millis()),
            purge.max < MAX_TARGET,
        ),
        (
            "probe p50 / p99".to_owned(),
            format!("{} / {}", ms(base.p50), ms(base.p99)),
            format!("{} / {}", ms(purge.p50), ms(purge.p99)),
            "-".to_owned(),
            true,
        ),
        (
            "probe requests (failed)".to_owned(),
            base.count.to_string(),
            purge.count.to_string(),
            format!("none failed ({failed})"),
            failed == 0 && purge.count > 0,
        ),
        (
            "rows purged".to_owned(),
            "-".to_owned(),
            format!(
                "{purged} in {:.1} s, {steps} steps",
                (purge_ended - purge_started.0).as_secs_f64()
            ),
            format!("{rows}"),
            purged == rows,
        ),
        (
            "longest watchdog silence (WatchdogSec=30)".to_owned(),
            "-".to_owned(),
            format!(
                "{:.1} s ({} pings)",
                longest_silence.as_secs_f64(),
                pings.len()
            ),
            "< 30 s, service alive".to_owned(),
            longest_silence < WATCHDOG && alive,
        ),
        (
            "WAL after the purge".to_owned(),
            "-".to_owned(),
            format!("{} KiB", wal / 1024),
            "-".to_owned(),
            true,
        ),
    ];
    let mut missed = false;
    for (name, without, with, target, met) in checks {
        println!(
            "| {name} | {without} | {with} | {target} | {} |",
            if met { "yes" } else { "NO" }
        );
        missed |= !met;
    }
    let figures = Figures {
        rows,
        base,
        purge,
        purged,
        failed,
        longest_silence,
        purge_time: purge_ended - purge_started.0,
        wal,
    };
    let path = results::write("purge", &figures.measurements()).unwrap();
    eprintln!("results: {}", path.display());
    if missed && !quick {
        eprintln!("a target was missed");
        std::process::exit(1);
    }
}

/// What the purge writes to the suite's results.
struct Figures {
    rows: u64,
    /// The probe without the purge, and during it.
    base: Summary,
    purge: Summary,
    purged: u64,
    failed: usize,
    longest_silence: Duration,
    purge_time: Duration,
    wal: u64,
}

impl Figures {
    fn measurements(&self) -> Vec<Measurement> {
        let figure = |name: &str, unit: &str, better: Better| {
            Measurement::new("retention", "purge", name, unit, better).param("rows", self.rows)
        };
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut out = Vec::new();
        for (name, pick) in [
            ("p50", (|s: &Summary| s.p50) as fn(&Summary) -> Duration),
            ("p99", |s: &Summary| s.p99),
            ("p99.9", |s: &Summary| s.p999),
            ("max", |s: &Summary| s.max),
        ] {
            let latency = figure(name, "ms", Better::Lower);
            out.push(latency.clone().runs([ms(pick(&self.purge))]));
            out.push(
                latency
                    .clone()
                    .series(Series::Limit)
                    .runs([ms(pick(&self.base))]),
            );
            match name {
                "p99.9" => out.push(
                    figure(name, "x limit", Better::Lower)
                        .series(Series::Target)
                        .runs([P999_RATIO_TARGET]),
                ),
                "max" => out.push(latency.series(Series::Target).runs([ms(MAX_TARGET)])),
                _ => {}
            }
        }
        for (m, value, target) in [
            (
                figure("purged", "rows", Better::Higher),
                self.purged as f64,
                self.rows as f64,
            ),
            (
                figure("watchdog silence", "s", Better::Lower),
                self.longest_silence.as_secs_f64(),
                WATCHDOG.as_secs_f64(),
            ),
            (
                figure("failed probes", "requests", Better::Lower),
                self.failed as f64,
                0.0,
            ),
        ] {
            out.push(m.clone().series(Series::Target).runs([target]));
            out.push(m.runs([value]));
        }
        out.push(figure("purge time", "s", Better::Lower).runs([self.purge_time.as_secs_f64()]));
        out.push(
            figure("wal after", "MiB", Better::Lower).runs([self.wal as f64 / (1024.0 * 1024.0)]),
        );
        out
    }
}

/// Creates the outbox (through the library, so the schema is the service's), then writes
/// `rows` rows synced 30 days ago straight into it, about 300 bytes of payload each.
fn fill(dir: &Path, rows: u64) {
    drop(gradata::store::Store::open(&gradata::store::Options::new(dir)).unwrap());
    let conn = rusqlite::Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let month_ago = now - 30.0 * 86_400.0;
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO sync_queue (payload_json, kind, enqueued_at, synced_at, attempts, event_id)
         SELECT '{\"brain_id\": \"bench\", \"event\": {\"pad\": \"' || printf('%.250c', 'x')
                || '\"}, \"event_id\": \"p' || i || '\"}',
                'event', ?2, ?2, 1, 'p' || i
         FROM n",
        rusqlite::params![rows as i64, month_ago],
    )
    .unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn spawn(dir: &Path, addr: SocketAddr, notify: &Path, stderr: &Path, baseline: Duration) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gradata"))
        .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
        .arg(dir)
        .env_clear()
        .env("GRADATA_CONFIG", "")
        .env("HOME", dir)
        .env("GRADATA_SYNC_API_KEY_FILE", dir.join("no-key"))
        .env("NOTIFY_SOCKET", notify)
        .env("WATCHDOG_USEC", WATCHDOG.as_micros().to_string())
        .env(
            "GRADATA_TEST_FIRST_PURGE_AFTER_SECS",
            baseline.as_secs().to_string(),
        )
        .env("GRADATA_LOG", "info,gradata::daemon::retention=debug")
        .env("GRADATA_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

fn stop(service: &mut Child) {
    Command::new("kill")
        .arg("-TERM")
        .arg(service.id().to_string())
        .status()
        .unwrap();
    let status = service.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// Waits until the service's stderr has a line containing `needle`; returns when it was seen and
/// the line.
fn wait_for_log(path: &Path, needle: &str, patience: Duration) -> (Instant, String) {
    let deadline = Instant::now() + patience;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|line| line.contains(needle)) {
            return (Instant::now(), line.to_owned());
        }
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `name=value` in a text log line.
fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    Some(
        line[start..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_owned(),
    )
}

fn wal_bytes(dir: &Path) -> u64 {
    let mut wal = dir.join(gradata::store::DATABASE_FILE).into_os_string();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |meta| meta.len())
}

/// The notify socket, read on a thread that times every message.
struct Notify {
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    fn bind(path: &Path) -> Notify {
        let socket = UnixDatagram::bind(path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let received = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                received.lock().unwrap().push((Instant::now(), text));
            }
        });
        Notify {
            path: path.to_owned(),
            messages,
        }
    }

    fn wait_for(&self, line: &str, patience: Duration) {
        let deadline = Instant::now() + patience;
        while !self.has(line) {
            assert!(Instant::now() < deadline, "no {line}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn has(&self, line: &str) -> bool {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .any(|(_, text)| text.lines().any(|l| l == line))
    }

    fn pings(&self) -> Vec<Instant> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, text)| text.lines().any(|l| l == "WATCHDOG=1"))
            .map(|(at, _)| *at)
            .collect()
    }
}

/// The probe: single events at a fixed rate on one keep-alive connection; each latency counts
/// from when its request was due. A request that fails counts as `Duration::MAX`.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Instant, Duration)>>,
}

impl Probe {
    fn start(addr: SocketAddr) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut stream = connect(addr);
            let first = Instant::now();
            for n in 0u64.. {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                let due = first + PROBE_INTERVAL * u32::try_from(n).unwrap();
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let latency = match post_event(&mut stream, n) {
                    Ok(()) => due.elapsed(),
                    Err(err) => {
                        eprintln!("probe request {n} failed: {err}");
                        stream = connect(addr);
                        Duration::MAX
                    }
                };
                samples.push((due, latency));
            }
            samples
        });
        Probe { stop, thread }
    }

    fn stop(self) -> Vec<(Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// One `POST /v1/events` with a single event; Ok on a 2xx.
fn post_event(stream: &mut TcpStream, n: u64) -> std::io::Result<()> {
    let body = format!(r#"{{"kind": "event", "data": {{"probe": {n}}}}}"#);
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let (head_end, length) = loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.extend_from_slice(&buf[..n]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..at]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if !head.starts_with("http/1.1 2") {
                return Err(std::io::Error::other(head));
            }
            break (at + 4, length);
        }
    };
    while response.len() < head_end + length {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        response.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Percentiles of a set of latencies.
struct Summary {
    count: usize,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

impl Summary {
    fn of(mut latencies: Vec<Duration>) -> Summary {
        latencies.sort_unstable();
        let at = |q: f64| {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            let index = ((latencies.len() as f64) * q).ceil() as usize;
            latencies[index.clamp(1, latencies.len()) - 1]
        };
        Summary {
            count: latencies.len(),
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: latencies.last().copied().unwrap_or_default(),
        }
    }
}
