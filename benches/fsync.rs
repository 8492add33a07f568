//! Does the fsync thread pay? The store's writer can hand a committed group to a second thread
//! that fsyncs the WAL while the writer runs the next group, or fsync it itself. This benchmark
//! weighs the two in one run, on the library's `Store::enqueue` from 64 concurrent tasks with
//! `synchronous=full` on a fresh outbox:
//!
//! 1. single events (one event per call): events/s;
//! 2. batches (100 events per call): events/s.
//!
//! Each figure is measured in a child process of this benchmark, with the fsync thread (the
//! default) and without it (`GRADATA_TEST_FSYNC_ON_THE_WRITER` set: every group fsynced on the
//! writer's thread), alternating the two three times; the table gives the medians and the ratio
//! thread / inline. Nothing is asserted: the figure decides a design question, and is recorded
//! where the store's durability is documented (docs/ARCHITECTURE.md).
//!
//! Run: `cargo bench --bench fsync`.

#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "benchmark harness"
)]
#![allow(clippy::cast_precision_loss, reason = "figures")]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gradata::store::{self, EventId, Kind, NewEvent, Store};

/// Concurrent callers, as many as the API benchmark's connections.
const CALLERS: usize = 64;
/// How long each measurement runs.
const RUN: Duration = Duration::from_secs(4);
/// Rounds of the A/B comparison.
const ROUNDS: usize = 3;
/// The hook that makes the writer fsync every group itself (see `store/writer/durability.rs`).
const INLINE_HOOK: &str = "GRADATA_TEST_FSYNC_ON_THE_WRITER";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|arg| arg == "--measure") {
        let per_call: usize = args[at + 1].parse().unwrap();
        println!("{}", events_per_second(per_call));
        return;
    }
    let workloads = [("single events", 1), ("batches of 100", 100)];
    let mut figures = vec![(Vec::new(), Vec::new()); workloads.len()];
    for round in 0..ROUNDS {
        for (n, &(name, per_call)) in workloads.iter().enumerate() {
            let thread = measure(per_call, false);
            let inline = measure(per_call, true);
            eprintln!("round {round}: {name}: thread {thread:.0}/s, inline {inline:.0}/s");
            figures[n].0.push(thread);
            figures[n].1.push(inline);
        }
    }
    println!(
        "| workload (64 callers, synchronous=full) | fsync thread, events/s | inline, events/s | thread / inline |"
    );
    println!("|---|---|---|---|");
    for ((name, _), (thread, inline)) in workloads.iter().zip(figures) {
        let (thread, inline) = (median(thread), median(inline));
        println!(
            "| {name} | {thread:.0} | {inline:.0} | {:.2} |",
            thread / inline
        );
    }
}

/// Runs one measurement in a child process (the hook is read when the store opens).
fn measure(per_call: usize, inline: bool) -> f64 {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--measure", &per_call.to_string()]);
    if inline {
        command.env(INLINE_HOOK, "1");
    } else {
        command.env_remove(INLINE_HOOK);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Events per second acknowledged by `Store::enqueue` from [`CALLERS`] tasks over [`RUN`].
fn events_per_second(per_call: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(&store::Options::new(dir.path())).unwrap();
    let data = serde_json::json!({"before": "teh", "after": "the", "note": "a benchmark event"});
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + RUN;
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            let (store, data, acknowledged) = (store.clone(), data.clone(), acknowledged.clone());
            tasks.spawn(async move {
                while Instant::now() < deadline {
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
                    acknowledged.fetch_add(per_call, Ordering::Relaxed);
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.unwrap();
        }
    });
    let elapsed = started.elapsed();
    let events = acknowledged.load(Ordering::Relaxed);
    assert_eq!(store.stats().unwrap().pending, events as u64);
    events as f64 / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
