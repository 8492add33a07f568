//! The background sync worker: delivers rows as they arrive and retries them when their backoff
//! timers expire, using the same drain [`Engine`] as every explicit drain.
//!
//! It sleeps until one of: an enqueue wakes it ([`Wake::wake`]), the earliest backoff timer or
//! rate-limit pause expires, the configuration is reloaded (a new engine arrives on the `watch`),
//! or shutdown is requested. Rows another process makes pending (`gradata queue retry`, an SDK
//! writing the same database) wake nothing here, so a worker with nothing due sooner also looks at
//! the outbox's earliest due time every [`IDLE_POLL_INTERVAL`]. While paused by `auth_failed` or
//! `config_error` it ignores enqueues and probes once per `pause_probe_interval` or on reload, so
//! a revoked key costs one request every five minutes rather than one per event.
//!
//! It beats a [`Heartbeat`] on every loop turn (at least once per [`HEARTBEAT_TICK`]); the daemon's
//! watchdog pings systemd only while the beat is fresh, so a wedged worker gets the service
//! restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::drain::{Budget, Engine, StopReason, Trigger};

/// Longest the worker sleeps without beating its heartbeat.
pub const HEARTBEAT_TICK: Duration = Duration::from_secs(1);

/// How often a worker with nothing due sooner asks the outbox when its next row is due: one query
/// over the index of pending rows, so that rows made pending by another process are sent within
/// this long rather than at the next local enqueue.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// How soon a worker whose pass failed on the store tries again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Rows one worker pass may claim before it yields (and beats) and goes on.
const PASS_MAX_ROWS: usize = 1000;
/// Time one worker pass may spend claiming and sending. Requests still in flight then are awaited
/// (each is bounded by the request timeout) and settled by their outcome, so a slow server is
/// heard, or backed off from, rather than posted to again by the next pass.
const PASS_MAX_TIME: Duration = Duration::from_secs(10);

/// Wakes the worker; cheap to clone. Held by every producer (the API's enqueue paths).
#[derive(Debug, Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    /// A new, unconnected wake handle.
    pub fn new() -> Wake {
        Wake::default()
    }

    /// Asks the worker to look at the queue now. A wake while it is busy is remembered.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Time of the worker's last sign of life; cheap to clone.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    origin: Instant,
    /// Milliseconds since `origin` of the last beat.
    last: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat {
            origin: Instant::now(),
            last: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Heartbeat {
    /// Records a sign of life now.
    pub fn beat(&self) {
        let millis = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(millis, Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// Runs the worker until `cancel` fires. The engine comes from a `watch` so that a reload swaps it
/// between passes, never during one.
pub async fn run(
    mut engines: watch::Receiver<Engine>,
    wake: Wake,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
) {
    let mut next_pass: Option<Instant> = Some(Instant::now());
    // When the worker last learned when the next row is due (a pass, or a look at the outbox).
    let mut last_look = Instant::now();
    // Whether the last pass failed on the store: a persistent failure is logged once when it
    // starts and once when it ends, not at every retry.
    let mut store_failing = false;
    loop {
        heartbeat.beat();
        if cancel.is_cancelled() {
            return;
        }
        let engine = engines.borrow_and_update().clone();
        if next_pass.is_some_and(|at| at <= Instant::now()) {
            next_pass = pass(&engine, &heartbeat, &cancel, &mut store_failing).await;
            last_look = Instant::now();
            if next_pass.is_some_and(|at| at <= Instant::now()) {
                continue;
            }
        }
        let paused = engine.status().state().is_paused_for_operator()
            || engine.status().paused_until().is_some();
        if engine.is_sending_enabled()
            && !paused
            && last_look.elapsed() >= IDLE_POLL_INTERVAL
            && next_pass.is_none_or(|at| at > Instant::now() + IDLE_POLL_INTERVAL)
        {
            last_look = Instant::now();
            if let Some(due) = next_due(&engine).await {
                if next_pass.is_none_or(|at| due < at) {
                    next_pass = Some(due);
                    continue;
                }
            }
        }
        let sleep = next_pass.map_or(HEARTBEAT_TICK, |at| {
            at.saturating_duration_since(Instant::now())
                .min(HEARTBEAT_TICK)
        });
        tokio::select! {
            () = cancel.cancelled() => return,
            // While sync is off a pass only reports "disabled": writes do not wake the worker at
            // all (under load that was a turn of this loop per write). A reload re-enables it.
            () = wake.0.notified(), if engine.is_sending_enabled() => {
                // New rows: look now, unless an operator must act first (a probe per event would
                // hammer a server that already said no).
                if !engine.status().state().is_paused_for_operator() && engine.status().paused_until().is_none() {
                    next_pass = Some(Instant::now());
                }
            }
            changed = engines.changed() => {
                if changed.is_err() {
                    return; // The daemon dropped the sender: it is shutting down.
                }
                engine.status().clear_pause();
                next_pass = Some(Instant::now());
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One pass; returns when the next one is due (`None`: only when woken).
async fn pass(
    engine: &Engine,
    heartbeat: &Heartbeat,
    cancel: &CancellationToken,
    store_failing: &mut bool,
) -> Option<Instant> {
    let budget = Budget {
        max_rows: PASS_MAX_ROWS,
        max_time: PASS_MAX_TIME,
    };
    // The worker is alive while this task is polled, even when no request completes for a while
    // (a slow server): beat on a timer beside the drain, not only on progress.
    let mut ignore_progress = |_| {};
    let drain = engine.drain(Trigger::Worker, budget, cancel, &mut ignore_progress);
    tokio::pin!(drain);
    let mut ticks = tokio::time::interval(HEARTBEAT_TICK);
    let report = loop {
        tokio::select! {
            report = &mut drain => break report,
            _ = ticks.tick() => heartbeat.beat(),
        }
    };
    heartbeat.beat();
    match (report.reason, *store_failing) {
        (StopReason::StoreError, false) => {
            *store_failing = true;
            tracing::warn!(
                detail = report.detail.as_deref().unwrap_or(""),
                retry_seconds = STORE_RETRY.as_secs(),
                "sync worker cannot use the outbox; nothing is sent until it can: {}",
                report.detail.as_deref().unwrap_or("unknown error")
            );
        }
        // A pass cancelled, or skipped because sync is off, says nothing about the store.
        (StopReason::StoreError | StopReason::Cancelled | StopReason::Disabled, _) | (_, false) => {
        }
        (_, true) => {
            *store_failing = false;
            tracing::info!("sync worker can use the outbox again");
        }
    }
    let now = Instant::now();
    match report.reason {
        StopReason::RowBudget => Some(now),
        StopReason::Disabled | StopReason::Cancelled => None,
        StopReason::RateLimited => Some(engine.status().paused_until().unwrap_or(now)),
        StopReason::AuthFailed | StopReason::ConfigError => {
            Some(now + engine.settings().pause_probe_interval)
        }
        // The store failed (disk full?): try again shortly rather than spin.
        StopReason::StoreError | StopReason::NoQueueTable | StopReason::NoDatabase => {
            Some(now + STORE_RETRY)
        }
        StopReason::Empty
        | StopReason::Done
        | StopReason::Leased
        | StopReason::TimeBudget
        | StopReason::NoProgress => next_due(engine).await,
    }
}

/// When the earliest waiting row becomes due, as an `Instant`.
async fn next_due(engine: &Engine) -> Option<Instant> {
    let store = engine.store().clone();
    let due = tokio::task::spawn_blocking(move || store.next_due_at())
        .await
        .ok()?
        .ok()??;
    // A timer further off than any retry can be set means the wall clock went back; the pass then
    // claims such rows as due. Waiting at most that long also keeps a row leased far ahead by a
    // long drain elsewhere from being polled for in a loop.
    let wait = due
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .min(engine.longest_retry_wait());
    Some(Instant::now() + wait)
}
