//! `gradata serve` as systemd runs it: the test passes the listening socket, reads the `sd_notify`
//! messages, sends signals and talks HTTP. One file per concern: `startup` (the drain before
//! `READY=1` and its record), `shutdown`, `refusals` (what stops the service before it is ready),
//! `listen` (listeners, the pid file, the original daemon's command line), `reload` and `health`
//! (the watchdog and `/health`); the checks they share are here.
//!
//! Every wait is for a condition, with a generous timeout that only guards against a hang; the one
//! fixed window (the starved watchdog) is explained where it is.

mod health;
mod listen;
mod refusals;
mod reload;
mod shutdown;
mod startup;

use crate::support::daemon::{Daemon, Message, PATIENCE, log_field};
use crate::support::{self};

/// The contract record of the startup drain.
const STARTUP_RECORD: &str = "sync queue drained at startup: ";

/// The one startup-drain record in `stderr`, checked to be the only one.
fn startup_record(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(STARTUP_RECORD))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one startup record; stderr:\n{stderr}"
    );
    lines[0].to_owned()
}

/// Checks the startup record says `rows` delivered, `remaining` left and `reason`.
fn assert_startup_record(stderr: &str, rows: u64, remaining: u64, reason: &str) {
    let line = startup_record(stderr);
    assert!(
        line.contains(&format!("{STARTUP_RECORD}{rows} rows")),
        "{line}"
    );
    assert_eq!(
        log_field(&line, "delivered").as_deref(),
        Some(rows.to_string().as_str()),
        "{line}"
    );
    assert_eq!(
        log_field(&line, "remaining").as_deref(),
        Some(remaining.to_string().as_str()),
        "{line}"
    );
    assert_eq!(
        log_field(&line, "reason").as_deref(),
        Some(reason),
        "{line}"
    );
}

/// Position of the first message satisfying `pred`.
fn position(messages: &[Message], pred: impl Fn(&Message) -> bool) -> Option<usize> {
    messages.iter().position(pred)
}

fn is_progress(message: &Message, total: usize) -> bool {
    message.value("STATUS").is_some_and(|status| {
        status.starts_with("draining sync queue: ") && status.ends_with(&format!("/{total} rows"))
    })
}

/// SIGTERM, then exit code 0 with `STOPPING=1` sent.
fn stop_cleanly(daemon: &mut Daemon) {
    daemon.sigterm();
    let code = daemon.exit_code(PATIENCE);
    assert_eq!(code, 0, "stderr:\n{}", daemon.stderr());
    assert!(
        daemon.notify().all().iter().any(|m| m.has("STOPPING=1")),
        "no STOPPING=1: {:#?}",
        daemon.notify().texts()
    );
}

fn pending(dir: &std::path::Path) -> usize {
    support::rows(dir)
        .iter()
        .filter(|row| row.synced_at.is_none() && row.dead_at.is_none())
        .count()
}
