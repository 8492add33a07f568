//! The background sync worker: delivers rows as they arrive and retries them when their backoff
//! timers expire, using the same drain [`Engine`] as every explicit drain.
//!
//! It never polls the table. It sleeps until one of: an enqueue wakes it ([`Wake::wake`]), the
//! earliest backoff timer or rate-limit pause expires (the outbox's next due time, asked after a
//! pass: one indexed lookup), the configuration is reloaded (a new engine arrives on the `watch`),
//! or shutdown is requested. Rows another process makes pending (`gradata queue retry`, an SDK
//! writing the same database) wake nothing here, so an idle worker reads SQLite's
//! `PRAGMA data_version` every [`IDLE_POLL_INTERVAL`] and asks for the next due time again only
//! when that number changed. The pragma reads no table and costs the same at any queue size: it
//! changes exactly when some other connection has committed, which is the only way such rows
//! appear (a timer in this process would need the process that wrote them to tell it).
//!
//! When every attempt of a pass fails with a transient error (refused connections, timeouts,
//! 5xx), the ingest is taken to be down and the worker backs off as a whole (`Phase::Outage`):
//! it sends only probes, one row each, at [`PROBE_FIRST`] doubling up to [`PROBE_CAP`] on the
//! monotonic clock, and ignores row timers meanwhile, instead of re-sending every row whose own
//! timer runs out; an enqueue only brings the next probe forward, to a second after the last one.
//! A probe takes a due row (the store hands out rows never tried first, so rows that keep failing
//! neither hide a healthy ingest nor hold new rows back), or else the next row by id whatever its
//! timer. The first answered probe releases the backlog (`Phase::CatchUp`): passes claim by id,
//! ignoring timers, from where the outage began until they have passed the end of the queue once,
//! so every row flows within a probe interval of the ingest's return, however long its own timer
//! grew. A row that fails during the catch-up keeps its timer and is passed over; only a catch-up
//! pass that fails everything is an outage again. A pass in which some rows succeed is no outage:
//! failing rows wait on their own timers and the rest flow.
//!
//! While paused by `auth_failed` or `config_error` it ignores enqueues and probes once per
//! `pause_probe_interval` or on reload, so a revoked key costs one request every five minutes
//! rather than one per event.
//!
//! It also frees the rows of drainers that are gone: it reads the leases held (a few entries of
//! `idx_sync_queue_leased`) and frees, fenced by the token, each lease it has seen unchanged for a
//! whole `sync.lease_secs` on its monotonic clock, since a live drainer renews its leases more
//! often than that (see `stale_leases`). It looks when the next lease watched could turn
//! stale, and otherwise once a lease period, so such rows flow again within about two periods,
//! whatever any wall clock did.
//!
//! It beats a [`Heartbeat`] on every loop turn (at least once per [`HEARTBEAT_TICK`]); the daemon's
//! watchdog pings systemd only while the beat is fresh, so a wedged worker gets the service
//! restarted.
//!
//! This file is the loop and its schedule; the outage's probes and catch-up are in `outage`.

mod outage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::drain::{Budget, DrainReport, Engine, StopReason, Trigger};
use super::stale_leases::LeaseObserver;
use crate::store::RowId;

/// Longest the worker sleeps without beating its heartbeat.
pub const HEARTBEAT_TICK: Duration = Duration::from_secs(1);

/// How often an idle worker reads the outbox's `data_version` (no table is read) to learn whether
/// another process committed, and only then asks when its next row is due: rows made pending
/// elsewhere are sent within about this long rather than at the next local enqueue.
pub const IDLE_POLL_INTERVAL: Duration = Duration::from_secs(2);

/// The first probe of an outage comes this long after the pass that failed everything; each probe
/// that fails doubles the wait, up to [`PROBE_CAP`].
pub const PROBE_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two probes of an outage: the ingest's return is noticed within this
/// long, and a failing ingest gets a few requests a minute.
pub const PROBE_CAP: Duration = Duration::from_secs(15);

/// How soon a worker whose pass failed on the store tries again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// How much one worker pass may do before it yields (and beats) and goes on: rows claimed, and
/// time spent claiming and sending. Requests still in flight at the deadline are awaited (each is
/// bounded by the request timeout) and settled by their outcome, so a slow server is heard, or
/// backed off from, rather than posted to again by the next pass.
const PASS: Budget = Budget {
    max_rows: 1000,
    max_time: Duration::from_secs(10),
};

/// A probe of an outage: one row.
const PROBE: Budget = Budget {
    max_rows: 1,
    max_time: PASS.max_time,
};

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

/// What the worker is doing about the ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Rows flow: each pass takes the due rows; the worker sleeps until an enqueue or the earliest
    /// due time.
    Flowing,
    /// The ingest failed every attempt of the last pass: only probes are sent.
    Outage {
        /// Probes that failed since the outage began (the next one waits longer).
        failed_probes: u32,
        /// The row the last probe by id took; the next one takes the row above it.
        cursor: RowId,
        /// Where the catch-up starts once a probe is answered.
        resume: RowId,
    },
    /// A probe was answered: passes take every row above `cursor`, whatever its timer, until
    /// they have passed the end of the queue.
    CatchUp {
        /// The highest id gone through.
        cursor: RowId,
    },
}

/// The worker's state between loop turns.
struct Worker {
    heartbeat: Heartbeat,
    cancel: CancellationToken,
    phase: Phase,
    /// When the next pass (or probe) is due; `None`: only when woken.
    next_pass: Option<Instant>,
    /// Whether the last pass failed on the store: a persistent failure is logged once when it
    /// starts and once when it ends, not at every retry.
    store_failing: bool,
    /// The outbox's `data_version` at the last look, and when that was.
    seen_version: Option<i64>,
    last_look: Instant,
    /// When the last probe (or the pass that began the outage) was sent.
    probed_at: Instant,
    /// Other drainers' leases as last seen, to free those their holder stopped renewing.
    leases: LeaseObserver,
    /// When to look at the leases next.
    next_lease_look: Instant,
}

/// Runs the worker until `cancel` fires. The engine comes from a `watch` so that a reload swaps it
/// between passes, never during one.
///
/// `startup` is the report of the startup drain, when one ran. If it found the ingest down, the
/// worker begins in the outage's probes: the rows that drain tried now wait on backoff timers,
/// and a worker that had only those timers to go by would let every row wait its own out after
/// the ingest returned, instead of releasing the backlog at the first answered probe.
pub async fn run(
    mut engines: watch::Receiver<Engine>,
    wake: Wake,
    heartbeat: Heartbeat,
    cancel: CancellationToken,
    startup: Option<DrainReport>,
) {
    let mut worker = Worker {
        heartbeat,
        cancel,
        phase: Phase::Flowing,
        next_pass: Some(Instant::now()),
        store_failing: false,
        seen_version: None,
        last_look: Instant::now(),
        probed_at: Instant::now(),
        leases: LeaseObserver::default(),
        next_lease_look: Instant::now(),
    };
    if let Some(report) = startup.filter(fails_everything) {
        worker.outage_begins(&report, RowId(0));
    }
    loop {
        worker.heartbeat.beat();
        if worker.cancel.is_cancelled() {
            return;
        }
        let engine = engines.borrow_and_update().clone();
        if worker.next_lease_look <= Instant::now() {
            worker.observe_leases(&engine).await;
        }
        if worker.next_pass.is_some_and(|at| at <= Instant::now()) {
            worker.step(&engine).await;
            if worker.next_pass.is_some_and(|at| at <= Instant::now()) {
                continue;
            }
        }
        if worker.may_look(&engine) && worker.look(&engine).await {
            continue;
        }
        let sleep = worker.next_pass.map_or(HEARTBEAT_TICK, |at| {
            at.saturating_duration_since(Instant::now())
                .min(HEARTBEAT_TICK)
        });
        tokio::select! {
            () = worker.cancel.cancelled() => return,
            () = wake.0.notified(), if worker.listens(&engine) => {
                // New rows: look now (during an outage: probe soon), unless an operator must act
                // first (a probe per event would hammer a server that already said no).
                if !is_paused(&engine) {
                    worker.next_pass = Some(worker.pass_for_new_rows());
                }
            }
            changed = engines.changed() => {
                if changed.is_err() {
                    return; // The daemon dropped the sender: it is shutting down.
                }
                engine.status().clear_pause();
                worker.next_pass = Some(Instant::now());
            }
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

impl Worker {
    /// Whether an enqueue is heard now. While sync is off a pass only reports "disabled": writes
    /// do not wake the worker at all (under load that was a turn of this loop per write); a reload
    /// re-enables it. During an outage a write brings the next probe forward once (to
    /// [`PROBE_FIRST`] after the last one), so that new rows, which the probe takes first, wait
    /// a second rather than the whole probe interval while some old rows keep failing; a pass per
    /// write would be a request per event into a failing ingest. A catch-up takes every row anyway.
    /// A wake not heard is kept for later.
    fn listens(&self, engine: &Engine) -> bool {
        engine.is_sending_enabled()
            && match self.phase {
                Phase::Flowing => true,
                Phase::Outage { .. } => self
                    .next_pass
                    .is_none_or(|at| at > self.probed_at + PROBE_FIRST),
                Phase::CatchUp { .. } => false,
            }
    }

    /// When to look at rows just enqueued.
    fn pass_for_new_rows(&self) -> Instant {
        match self.phase {
            Phase::Outage { .. } => {
                let soon = self.probed_at + PROBE_FIRST;
                self.next_pass.map_or(soon, |at| at.min(soon))
            }
            Phase::Flowing | Phase::CatchUp { .. } => Instant::now(),
        }
    }

    /// One pass, probe or catch-up pass, as the phase says; sets the phase and the next pass.
    async fn step(&mut self, engine: &Engine) {
        match self.phase {
            Phase::Flowing => {
                let report = self.pass(engine, Trigger::Worker, PASS).await;
                if fails_everything(&report) {
                    self.outage_begins(&report, RowId(0));
                } else {
                    self.next_pass = after(engine, &report).await;
                }
            }
            Phase::Outage {
                failed_probes,
                cursor,
                resume,
            } => self.probe(engine, failed_probes, cursor, resume).await,
            Phase::CatchUp { cursor } => self.catch_up(engine, cursor).await,
        }
    }

    /// Runs one drain for the worker, beating the heartbeat meanwhile, and logs a store failure
    /// once per episode.
    async fn pass(&mut self, engine: &Engine, trigger: Trigger, budget: Budget) -> DrainReport {
        // The worker is alive while this task is polled, even when no request completes for a
        // while (a slow server): beat on a timer beside the drain, not only on progress.
        let mut ignore_progress = |_| {};
        let drain = engine.drain(trigger, budget, &self.cancel, &mut ignore_progress);
        tokio::pin!(drain);
        let mut ticks = tokio::time::interval(HEARTBEAT_TICK);
        let report = loop {
            tokio::select! {
                report = &mut drain => break report,
                _ = ticks.tick() => self.heartbeat.beat(),
            }
        };
        self.heartbeat.beat();
        match (report.reason, self.store_failing) {
            (StopReason::StoreError, false) => {
                self.store_failing = true;
                tracing::warn!(
                    detail = report.detail.as_deref().unwrap_or(""),
                    retry_seconds = STORE_RETRY.as_secs(),
                    "sync worker cannot use the outbox; nothing is sent until it can: {}",
                    report.detail.as_deref().unwrap_or("unknown error")
                );
            }
            // A pass cancelled, or skipped because sync is off, says nothing about the store.
            (StopReason::StoreError | StopReason::Cancelled | StopReason::Disabled, _)
            | (_, false) => {}
            (_, true) => {
                self.store_failing = false;
                tracing::info!("sync worker can use the outbox again");
            }
        }
        report
    }

    /// Looks at the leases held in the outbox and frees those whose token has not changed for a
    /// whole lease period on this process's monotonic clock: their holder (another process, or a
    /// drain of this one) would have renewed them every third of that period, so it is gone. The
    /// next look is when the next lease watched could become stale, or a lease period from now,
    /// which bounds how long a dead holder's rows wait to about two lease periods.
    async fn observe_leases(&mut self, engine: &Engine) {
        let lease = engine.settings().lease;
        let now = Instant::now();
        self.next_lease_look = now + lease;
        let leases = match engine.store().leases().await {
            Ok(leases) => leases,
            Err(err) => {
                tracing::debug!(error = %err, "could not read the outbox's leases");
                return;
            }
        };
        let verdict = self.leases.observe(&leases, lease, now);
        if let Some(at) = verdict.next_look {
            self.next_lease_look = at;
        }
        if verdict.stale.is_empty() {
            return;
        }
        match engine.store().release_stale_leases(verdict.stale).await {
            Ok(0) => {}
            Ok(freed) => {
                tracing::info!(
                    rows = freed,
                    lease_seconds = lease.as_secs_f64(),
                    "freed rows whose lease was not renewed for a whole lease period; the drainer \
                     that held them is gone"
                );
                if self.phase == Phase::Flowing {
                    self.next_pass = Some(Instant::now());
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not free stale leases: {err}");
            }
        }
    }

    /// Whether it is time to check for rows made pending by another process: only while rows
    /// flow and nothing is due sooner anyway.
    fn may_look(&self, engine: &Engine) -> bool {
        self.phase == Phase::Flowing
            && engine.is_sending_enabled()
            && !is_paused(engine)
            && self.last_look.elapsed() >= IDLE_POLL_INTERVAL
            && self
                .next_pass
                .is_none_or(|at| at > Instant::now() + IDLE_POLL_INTERVAL)
    }

    /// Asks the outbox for its next due time if another connection committed since the last
    /// look; true when that moved the next pass sooner.
    async fn look(&mut self, engine: &Engine) -> bool {
        self.last_look = Instant::now();
        let version = data_version(engine).await;
        // Unknown (the read failed) counts as changed: the lookup then says what it can.
        if version.is_some() && version == self.seen_version {
            return false;
        }
        self.seen_version = version;
        match next_due(engine).await {
            Some(due) if self.next_pass.is_none_or(|at| due < at) => {
                self.next_pass = Some(due);
                true
            }
            _ => false,
        }
    }
}

/// Whether sending is paused: by the server (429) or until an operator acts (401, a bad URL).
fn is_paused(engine: &Engine) -> bool {
    engine.status().state().is_paused_for_operator() || engine.status().paused_until().is_some()
}

/// Whether every attempt of a drain failed and would be retried: the ingest looks down. Pauses
/// (429, 401, a bad URL) have their own handling, and a drain that sent nothing says nothing.
fn fails_everything(report: &DrainReport) -> bool {
    report.delivered == 0 && report.dead == 0 && report.retried > 0 && is_quiet(report.reason)
}

/// Whether a drain stopped for a reason of its own (budget, queue, progress) rather than for one
/// that pauses or stops the worker.
fn is_quiet(reason: StopReason) -> bool {
    matches!(
        reason,
        StopReason::Empty
            | StopReason::Done
            | StopReason::Leased
            | StopReason::RowBudget
            | StopReason::TimeBudget
            | StopReason::NoProgress
    )
}

/// When the next pass is due after `report`, by the rows' own timers (`None`: only when woken).
async fn after(engine: &Engine, report: &DrainReport) -> Option<Instant> {
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

/// The outbox's `data_version` (see [`crate::store::Store::data_version`]); `None` when it cannot
/// be read.
async fn data_version(engine: &Engine) -> Option<i64> {
    engine.store().data_version().await.ok()
}

/// When the earliest waiting row becomes due, as an `Instant`.
async fn next_due(engine: &Engine) -> Option<Instant> {
    let due = engine.store().next_due_at().await.ok()??;
    let ahead = due
        .duration_since(engine.store().clock().now())
        .unwrap_or(Duration::ZERO);
    Some(Instant::now() + wait_for_timer(ahead, engine.longest_retry_wait()))
}

/// How long to sleep for a timer `ahead` of now, when no retry is ever set further off than
/// `longest_wait`. A timer beyond that means the wall clock went back since it was set, and a due
/// claim takes such a row as due now (its horizon clause): so the worker does not wait at all,
/// rather than for as long as the clock jumped (or as long as the longest wait).
fn wait_for_timer(ahead: Duration, longest_wait: Duration) -> Duration {
    if ahead > longest_wait {
        Duration::ZERO
    } else {
        ahead
    }
}

#[cfg(test)]
mod tests;
