//! Memory benchmark (issue: local HTTP API, abuse): the service's peak resident memory when many
//! clients post large bodies at once, with the shipped room for bodies in memory
//! (`api.max_buffered_body_bytes`, 64 MiB) and, side by side in the same run, with a room so large
//! that every body is read at once (how the service behaved before the room existed).
//!
//! Each run starts the release binary (`CARGO_BIN_EXE_gradata`) as `gradata serve` on a fresh data
//! directory, sync disabled (with the queue's limit without an API key, 10,000 rows, raised: it is
//! not what is measured), and has [`CLIENTS`] threads each post one `POST /v1/events` of
//! [`EVENTS_PER_BODY`] events (about 0.9 MB) at the same time. It checks that every client got a
//! 2xx and that every event is in the outbox, then reads the service's peak (`VmHWM`) and current
//! (`VmRSS`, one second after the last answer) resident memory and stops it.
//!
//! Run: `cargo bench --bench body_memory` (`GRADATA_BENCH_QUICK=1`: 40 clients, one round, a
//! check that it works). Results go to stdout as a Markdown table, and to
//! `target/bench/body_memory.json` in the suite's results format (`benches/support/results.rs`),
//! area `memory`: figures `peak rss` and `rss after` (MiB) and `answered in` (s), each round a
//! run, with params `state` (`large bodies`), `room` (`64 MiB` or `unbounded`) and `clients`.
//! There is no target: the figures show what the room for bodies bounds.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]
#![allow(clippy::cast_precision_loss, reason = "figures")]

#[path = "support/results.rs"]
#[allow(
    dead_code,
    reason = "shared by the benchmarks, each of which uses a part"
)]
mod results;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use results::{Better, Measurement};

/// Clients posting at once: well under systemd's default `LimitNOFILE` of 1,024; the quick mode's.
const CLIENTS: usize = 400;
const QUICK_CLIENTS: usize = 40;
/// Events per body: 1,000 events of about 930 bytes each.
const EVENTS_PER_BODY: usize = 1000;
/// Alternated rounds of the two settings (one in the quick mode).
const ROUNDS: usize = 2;
/// The shipped default, and one large enough never to make a body wait.
const SHIPPED_ROOM: u64 = 64 << 20;
const UNBOUNDED_ROOM: u64 = 1 << 40;

fn main() {
    let quick = std::env::var("GRADATA_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let (clients, rounds) = if quick {
        (QUICK_CLIENTS, 1)
    } else {
        (CLIENTS, ROUNDS)
    };
    let body = serde_json::to_vec(
        &(0..EVENTS_PER_BODY)
            .map(|_| serde_json::json!({"kind": "event", "data": {"pad": "x".repeat(900)}}))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    println!(
        "{clients} clients, one body each of {EVENTS_PER_BODY} events, {:.2} MB, {:.0} MB in all\n",
        body.len() as f64 / 1e6,
        (body.len() * clients) as f64 / 1e6
    );
    println!(
        "| round | room for bodies | peak RSS (VmHWM) | RSS 1 s after the last answer | all answered in |"
    );
    println!("|---|---|---:|---:|---:|");
    let settings = [
        ("64 MiB", "64 MiB (shipped)", SHIPPED_ROOM),
        ("unbounded", "unbounded", UNBOUNDED_ROOM),
    ];
    let mut runs: [Vec<Run>; 2] = Default::default();
    for round in 1..=rounds {
        for (n, &(_, name, room)) in settings.iter().enumerate() {
            let run = run(&body, room, clients);
            println!(
                "| {round} | {name} | {:.0} MiB | {:.0} MiB | {:.2} s |",
                run.peak_kib as f64 / 1024.0,
                run.after_kib as f64 / 1024.0,
                run.elapsed.as_secs_f64()
            );
            runs[n].push(run);
        }
    }
    let mut out = Vec::new();
    for (&(room, _, _), runs) in settings.iter().zip(&runs) {
        let figure = |name: &str, unit: &str| {
            Measurement::new("memory", "body_memory", name, unit, Better::Lower)
                .param("state", "large bodies")
                .param("room", room)
                .param("clients", clients)
        };
        let mib = |kib: u64| kib as f64 / 1024.0;
        out.push(figure("peak rss", "MiB").runs(runs.iter().map(|r| mib(r.peak_kib))));
        out.push(figure("rss after", "MiB").runs(runs.iter().map(|r| mib(r.after_kib))));
        out.push(figure("answered in", "s").runs(runs.iter().map(|r| r.elapsed.as_secs_f64())));
    }
    let path = results::write("body_memory", &out).unwrap();
    println!("\nresults: {}", path.display());
}

struct Run {
    peak_kib: u64,
    after_kib: u64,
    elapsed: Duration,
}

fn run(body: &[u8], room: u64, clients: usize) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (service, addr) = start(dir.path(), room);
    let request = {
        let mut head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        head.extend_from_slice(body);
        head
    };
    let started = Instant::now();
    std::thread::scope(|scope| {
        let posting: Vec<_> = (0..clients)
            .map(|_| scope.spawn(|| post(addr, &request)))
            .collect();
        for client in posting {
            let status = client.join().unwrap();
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        }
    });
    let elapsed = started.elapsed();
    let kib = |field: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", service.id()))
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    let peak_kib = kib("VmHWM:");
    // What the allocator keeps once the burst is over: it gives freed pages back after a delay.
    std::thread::sleep(Duration::from_secs(1));
    let after_kib = kib("VmRSS:");
    service.stop();
    let stored: i64 = rusqlite::Connection::open(dir.path().join("system.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM sync_queue", [], |row| row.get(0))
        .unwrap();
    assert_eq!(
        usize::try_from(stored).unwrap(),
        clients * EVENTS_PER_BODY,
        "events acknowledged but not stored"
    );
    Run {
        peak_kib,
        after_kib,
        elapsed,
    }
}

/// Sends `request` on a new connection; returns the status line of the answer.
fn post(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Starts the service on a free loopback port and waits for `READY=1`.
fn start(data_dir: &Path, room: u64) -> (Service, SocketAddr) {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let notify_path = data_dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let service = Service(
        Command::new(env!("CARGO_BIN_EXE_gradata"))
            .args(["serve", "--listen", &addr.to_string(), "--data-dir"])
            .arg(data_dir)
            .env_clear()
            .env("GRADATA_CONFIG", "")
            .env("HOME", data_dir)
            .env("GRADATA_SYNC_API_KEY_FILE", data_dir.join("no-key"))
            .env("GRADATA_API_MAX_BUFFERED_BODY_BYTES", room.to_string())
            // The queue's limit without an API key (10,000 rows) is not what is measured: it
            // would refuse most of the bodies.
            .env("GRADATA_SYNC_MAX_PENDING_ROWS_WITHOUT_KEY", "100000000")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("GRADATA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut buf = [0u8; 4096];
    loop {
        let n = notify.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|line| line == "READY=1")
        {
            return (service, addr);
        }
    }
}

/// The running service; killed if the benchmark fails before stopping it.
struct Service(Child);

impl Service {
    fn id(&self) -> u32 {
        self.0.id()
    }

    /// Stops it with SIGTERM, as systemd does, and checks it stopped cleanly.
    fn stop(mut self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.id().to_string())
            .status()
            .unwrap();
        assert!(self.0.wait().unwrap().success());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
