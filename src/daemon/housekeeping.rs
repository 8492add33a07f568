//! Housekeeping while serving: feeds the watchdog only while the sync worker and the HTTP server
//! show signs of life, recounts the pending rows other processes changed, and refreshes
//! `STATUS=`. Retention purges run in a task of their own (`retention`), so a long purge never
//! delays a watchdog ping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::millis;
use crate::logging::Causes;
use crate::store::Store;
use crate::sync::{Status, SyncState, worker};
use crate::systemd::notify::{self, Notifier};

/// How often `STATUS=` is refreshed while serving.
const STATUS_REFRESH: Duration = Duration::from_secs(10);

/// Feeds the watchdog while the worker and the server are alive, and refreshes `STATUS=`.
/// Nothing here may take long: a tick that does not return delays the watchdog's next ping (the
/// retention purge runs in a task of its own for that reason).
pub(super) async fn run(
    store: Store,
    status: Status,
    heartbeat: worker::Heartbeat,
    server_alive: Arc<AtomicBool>,
    notifier: Notifier,
    cancel: CancellationToken,
) {
    let watchdog = notify::watchdog_interval();
    let tick = watchdog.map_or(STATUS_REFRESH, |interval| {
        (interval / 2).min(STATUS_REFRESH)
    });
    // The worker beats only once per `HEARTBEAT_TICK` when idle, so with a `WatchdogSec=` shorter
    // than that a healthy worker would look wedged between beats: never call it silent sooner
    // than two ticks.
    let silent_after = watchdog.map(|interval| interval.max(2 * worker::HEARTBEAT_TICK));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = Instant::now();
    let mut starving = false;
    let mut recount_failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Another process (`gradata drain` or `gradata queue retry` from the CLI, an SDK sharing
        // the database) changes the pending rows behind the gauge the queue limits use; the store
        // counts them again when SQLite says another connection committed.
        match store.refresh_pending().await {
            Ok(_) => recount_failing = false,
            // Once per episode: the same error every tick adds nothing.
            Err(err) if !recount_failing => {
                recount_failing = true;
                tracing::warn!(error = %Causes(&err), "could not count the pending rows again");
            }
            Err(_) => {}
        }
        if let Some(silent_after) = silent_after {
            // Invariant: the watchdog is fed only while both loops show signs of life, so a wedged
            // worker or a dead server gets the service restarted.
            let healthy = heartbeat.age() < silent_after && server_alive.load(Ordering::Relaxed);
            if healthy {
                notifier.watchdog();
            } else if !starving {
                // Said once per episode: systemd is about to act, a line per tick adds nothing.
                tracing::error!(
                    worker_silent_ms = millis(heartbeat.age()),
                    "sync worker or HTTP server unresponsive; not feeding the watchdog"
                );
            }
            starving = !healthy;
        }
        if last_status.elapsed() >= STATUS_REFRESH {
            last_status = Instant::now();
            notifier.status(&serving_status(&store, &status).await);
        }
    }
}

/// `serving; N pending` plus the sync state when it is not the usual one.
pub(super) async fn serving_status(store: &Store, status: &Status) -> String {
    let pending = match store.stats().await {
        Ok(stats) => stats.pending.to_string(),
        Err(_) => "?".to_owned(),
    };
    match status.state() {
        SyncState::Idle | SyncState::Sending | SyncState::Backoff => {
            format!("serving; {pending} pending")
        }
        other => format!("serving; {pending} pending; sync {}", other.as_str()),
    }
}
