//! The drain engine: the one implementation of "deliver what is pending" (DESIGN §5), used by the
//! startup drain, the background worker, the shutdown drain, `POST /sync` and `gradata drain`.
//!
//! A drain claims rows in batches under a lease, keeps up to [`Concurrency::current`] POSTs in
//! flight across batch boundaries (so a slow server is never waited on one batch at a time),
//! settles each batch in one transaction when its last row completes, and stops at the first of:
//! the row budget, the time budget, an empty queue, a batch with no progress, a pause (429, 401,
//! 404…), or cancellation. At its time budget the background worker's pass lets the requests in
//! flight finish (each is bounded by the request timeout) and settles them by their outcome; an
//! explicit drain (startup, shutdown, `POST /sync`, `gradata drain`) keeps its bound strictly and
//! counts each request it cuts short as a timed-out attempt, with a backoff and the cause. Only
//! cancellation releases rows in flight untouched. It returns a [`DrainReport`] and, for the startup drain, always emits the record
//! `sync queue drained at startup: N rows`, whatever the path.
//!
//! Invariants: a claimed row is always settled or released before the drain returns (or, if the
//! process dies, its lease expires or is recovered at the next open); no retryable row is ever
//! marked dead or synced. A row's lease never runs out while the drain holds it: each batch is
//! leased until the drain's deadline plus `Settings::lease`, which is longer than a request still
//! in flight at the deadline can take (DESIGN §4: two drainers never post the same row at once).
//! Settlements other than a delivery are fenced by that lease, so a drainer that somehow lost its
//! rows cannot undo what the new holder does.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::classify::Disposition;
use super::client::{Attempt, Client};
use super::retry::{Concurrency, RetryPolicy};
use super::status::{Status, SyncState};
use crate::metrics::Outcome;
use crate::store::{self, ClaimFrom, ClaimedRow, RowId, Settlement, Store};

/// `MESSAGE_ID` of the startup-drain record, so `journalctl MESSAGE_ID=…` finds every one.
pub const STARTUP_DRAIN_MESSAGE_ID: &str = "5f0b3a4c9d2e4e7a8c1f6b2d3e4a5b6c";

/// Default row budget of an explicit drain: 64 batches × 50, as the original.
pub const DEFAULT_MAX_ROWS: usize = 3200;
/// Default time budget of the startup drain and `gradata drain`.
pub const DEFAULT_MAX_TIME: Duration = Duration::from_secs(30);

/// How much one drain may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most rows claimed.
    pub max_rows: usize,
    /// Most wall time spent claiming and sending. At the deadline nothing more is claimed or
    /// sent. The worker's passes then await the requests in flight (each bounded by the request
    /// timeout); explicit drains cut them short and count each as a timed-out attempt.
    pub max_time: Duration,
}

/// Who asked for the drain. Every trigger but the worker's ([`Trigger::Worker`],
/// [`Trigger::CatchUp`]) is explicit: it retries rows still waiting on a backoff timer, because a
/// restart or "sync now" is the moment to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Before `READY=1`.
    Startup,
    /// After `STOPPING=1`.
    Shutdown,
    /// `POST /sync` or `gradata drain`.
    Manual,
    /// The background worker.
    Worker,
    /// The background worker releasing a backlog after an outage: like an explicit drain it
    /// claims by id, every pending row above `after` whatever its timer says, but it is the
    /// worker's pass in every other respect (its deadline awaits the requests in flight, its
    /// record is a debug line, its metrics are the worker's).
    CatchUp {
        /// The highest id already gone through; claims start above it.
        after: RowId,
    },
}

impl Trigger {
    /// The lower-case name, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Shutdown => "shutdown",
            Trigger::Manual => "manual",
            Trigger::Worker | Trigger::CatchUp { .. } => "worker",
        }
    }

    fn is_explicit(self) -> bool {
        !matches!(self, Trigger::Worker | Trigger::CatchUp { .. })
    }

    /// Where the drain's first claim starts.
    fn first_claim(self) -> ClaimFrom {
        match self {
            Trigger::CatchUp { after } => ClaimFrom::After(after),
            trigger if trigger.is_explicit() => ClaimFrom::After(RowId(0)),
            _ => ClaimFrom::Due,
        }
    }
}

/// Why a drain stopped. The names are a contract (DESIGN §5): they appear in logs and JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Nothing was pending.
    Empty,
    /// It took every claimable row.
    Done,
    /// It claimed `max_rows` and more were waiting (with a row budget of 0: it claimed nothing).
    RowBudget,
    /// Rows are pending, but every one it could have taken was leased by another drainer (another
    /// process's drain, or a concurrent `POST /sync`).
    Leased,
    /// It ran out of time.
    TimeBudget,
    /// A whole batch completed without one row delivered or dead (the server is failing).
    NoProgress,
    /// The server throttled us (429, or 503 with `Retry-After`).
    RateLimited,
    /// The server refused the API key.
    AuthFailed,
    /// The ingest URL is wrong.
    ConfigError,
    /// No API key, or sync switched off.
    Disabled,
    /// The database has no `sync_queue` table.
    NoQueueTable,
    /// There is no database at all (nothing was created).
    NoDatabase,
    /// Shutdown was requested.
    Cancelled,
    /// The store failed (disk full, I/O error).
    StoreError,
}

impl StopReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Empty => "empty",
            StopReason::Done => "done",
            StopReason::RowBudget => "row_budget",
            StopReason::Leased => "leased",
            StopReason::TimeBudget => "time_budget",
            StopReason::NoProgress => "no_progress",
            StopReason::RateLimited => "rate_limited",
            StopReason::AuthFailed => "auth_failed",
            StopReason::ConfigError => "config_error",
            StopReason::Disabled => "disabled",
            StopReason::NoQueueTable => "no_queue_table",
            StopReason::NoDatabase => "no_database",
            StopReason::Cancelled => "cancelled",
            StopReason::StoreError => "store_error",
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DrainReport {
    /// Rows delivered (2xx).
    pub delivered: u64,
    /// Rows sent to dead.
    pub dead: u64,
    /// Attempts that failed and were scheduled for retry.
    pub retried: u64,
    /// Pending rows left afterwards (unknown when the store could not be read).
    pub remaining: Option<u64>,
    /// Wall time taken.
    #[serde(serialize_with = "as_seconds")]
    pub elapsed: Duration,
    /// Why it stopped.
    pub reason: StopReason,
    /// Detail for operators: why sync is disabled, the last error…
    pub detail: Option<String>,
    /// The highest id among the rows this drain sent and heard an answer for. Rows are sent in
    /// the order they are claimed, so a drain claiming by id has gone through every row up to it;
    /// the worker's catch-up resumes above it.
    #[serde(skip)]
    pub last_answered: Option<RowId>,
}

fn as_seconds<S: serde::Serializer>(elapsed: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64((elapsed.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl DrainReport {
    /// A drain that did nothing, for `reason`.
    pub fn skipped(
        reason: StopReason,
        remaining: Option<u64>,
        detail: Option<String>,
    ) -> DrainReport {
        DrainReport {
            delivered: 0,
            dead: 0,
            retried: 0,
            remaining,
            elapsed: Duration::ZERO,
            reason,
            detail,
            last_answered: None,
        }
    }

    /// Emits the log record for this drain. For the startup drain this is the contract record
    /// `sync queue drained at startup: N rows`, exactly once per start.
    pub fn emit(&self, trigger: Trigger) {
        // Unknown (no database to count) leaves the field out rather than inventing a number.
        let remaining = self.remaining;
        let elapsed_ms = u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX);
        let detail = self.detail.as_deref().unwrap_or("");
        let reason = self.reason.as_str();
        let (delivered, dead) = (self.delivered, self.dead);
        match trigger {
            Trigger::Startup => tracing::info!(
                message_id = STARTUP_DRAIN_MESSAGE_ID,
                delivered,
                dead,
                remaining,
                elapsed_ms,
                reason,
                detail,
                "sync queue drained at startup: {delivered} rows"
            ),
            Trigger::Shutdown => tracing::info!(
                delivered,
                dead,
                remaining,
                elapsed_ms,
                reason,
                detail,
                "sync queue drained at shutdown: {delivered} rows"
            ),
            Trigger::Manual => tracing::info!(
                delivered,
                dead,
                remaining,
                elapsed_ms,
                reason,
                detail,
                "sync queue drained: {delivered} rows"
            ),
            Trigger::Worker | Trigger::CatchUp { .. } => tracing::debug!(
                delivered,
                dead,
                remaining,
                elapsed_ms,
                reason,
                detail,
                "sync pass: {delivered} rows"
            ),
        }
    }
}

/// Progress of a running drain, for `STATUS=` and progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Rows completed (delivered, dead or failed).
    pub done: u64,
    /// Rows delivered so far.
    pub delivered: u64,
    /// Rows the drain expects to handle: the pending count at start, capped by the row budget.
    pub total: u64,
}

/// Delivers pending rows. Cheap to clone; built once per configuration (a reload builds a new one
/// around the same [`Status`] and [`Concurrency`]).
#[derive(Debug, Clone)]
pub struct Engine {
    store: Store,
    /// `None` when sync is disabled; `settings.disabled_reason` then says why.
    client: Option<Client>,
    settings: Arc<Settings>,
    status: Status,
    concurrency: Concurrency,
    policy: RetryPolicy,
}

/// A claim sent to the store's writer, awaited beside the requests in flight; it yields the rows
/// and the lease they were claimed with.
type ClaimFuture = dyn Future<Output = Result<(Vec<ClaimedRow>, SystemTime), store::Error>> + Send;

/// A batch's bookkeeping while its rows are in flight.
struct BatchTally {
    /// The lease its rows hold, and the token that fences their settlements.
    lease_until: SystemTime,
    outstanding: usize,
    progressed: bool,
    clean: bool,
    settlements: Vec<Settlement>,
}

impl BatchTally {
    /// A batch of `rows` just claimed under `lease_until`, none of them answered yet.
    fn claimed(lease_until: SystemTime, rows: usize) -> BatchTally {
        BatchTally {
            lease_until,
            outstanding: rows,
            progressed: false,
            clean: true,
            settlements: Vec::with_capacity(rows),
        }
    }
}

/// The mutable state of one drain.
struct Run {
    delivered: u64,
    dead: u64,
    retried: u64,
    done: u64,
    stop: Option<StopReason>,
    detail: Option<String>,
    batches: Vec<BatchTally>,
    settling: JoinSet<Result<(), store::Error>>,
}

impl Engine {
    /// Builds an engine; the HTTP client is built only when sync is enabled.
    pub fn new(
        store: Store,
        settings: Settings,
        status: Status,
    ) -> Result<Engine, super::client::ClientError> {
        let concurrency = Concurrency::new(settings.concurrency, settings.max_concurrency);
        let policy = RetryPolicy::new(settings.backoff_base, settings.backoff_cap);
        Engine::with_parts(store, settings, status, concurrency, policy)
    }

    /// Builds an engine that shares `concurrency` and `policy` with a previous one (reload) or
    /// uses seeded ones (tests).
    pub fn with_parts(
        store: Store,
        settings: Settings,
        status: Status,
        concurrency: Concurrency,
        policy: RetryPolicy,
    ) -> Result<Engine, super::client::ClientError> {
        let client = match (&settings.api_key, settings.disabled_reason()) {
            (Some(key), None) => Some(Client::new(&settings.client_options(), key)?),
            _ => None,
        };
        if client.is_none() {
            status.set_state(SyncState::Disabled);
        } else if status.state() == SyncState::Disabled {
            status.set_state(SyncState::Idle);
        }
        Ok(Engine {
            store,
            client,
            settings: Arc::new(settings),
            status,
            concurrency,
            policy,
        })
    }

    /// Whether this engine sends at all (an API key and sync switched on).
    pub fn is_sending_enabled(&self) -> bool {
        self.client.is_some()
    }

    /// The store this engine drains.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The shared sync status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// The shared concurrency limit.
    pub fn concurrency(&self) -> &Concurrency {
        &self.concurrency
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The settings this engine was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Runs one bounded drain, emits its record, and returns what it did.
    pub async fn drain(
        &self,
        trigger: Trigger,
        budget: Budget,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> DrainReport {
        let report = self.drain_quietly(trigger, budget, cancel, progress).await;
        self.status
            .metrics()
            .drain_finished(trigger.as_str(), report.elapsed);
        report.emit(trigger);
        report
    }

    async fn drain_quietly(
        &self,
        trigger: Trigger,
        budget: Budget,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> DrainReport {
        let started = Instant::now();
        let Some(client) = &self.client else {
            let remaining = self.pending(trigger).await;
            return DrainReport::skipped(
                StopReason::Disabled,
                remaining,
                self.settings.disabled_reason(),
            );
        };
        if self.status.paused_until().is_some() {
            let remaining = self.pending(trigger).await;
            return DrainReport::skipped(
                StopReason::RateLimited,
                remaining,
                self.status.snapshot().last_error,
            );
        }
        let total = self
            .pending(trigger)
            .await
            .map_or(0, |n| n.min(budget.max_rows as u64));

        let mut run = Run {
            delivered: 0,
            dead: 0,
            retried: 0,
            done: 0,
            stop: None,
            detail: None,
            batches: Vec::new(),
            settling: JoinSet::new(),
        };
        // A budget too large to add is as good as none.
        let deadline = started
            .checked_add(budget.max_time)
            .unwrap_or(started + Duration::from_secs(100 * 365 * 86_400));
        let mut cursor = trigger.first_claim();
        let mut last_answered: Option<RowId> = None;
        let mut claimed = 0usize;
        let mut exhausted = false;
        let mut queued: VecDeque<(ClaimedRow, usize)> = VecDeque::new();
        let mut in_flight = FuturesUnordered::new();
        // Rows given back untouched, and rows in flight (with their attempts so far), with the
        // batch (and so the lease) of each.
        let mut abandoned: Vec<(RowId, usize)> = Vec::new();
        let mut in_flight_ids: HashMap<RowId, (usize, u32)> = HashMap::new();

        // At most one claim is outstanding, polled beside the requests, so the senders never wait
        // for the store: the next batch is leased while the current one is still in flight. A
        // claim is asked for while fewer than a batch beyond the in-flight limit is queued: the
        // writer may be busy settling when it arrives, and a fast server empties a queue of only
        // `limit` rows before the claim's answer comes back.
        let mut claiming: Option<Pin<Box<ClaimFuture>>> = None;
        let deadline_reached = tokio::time::sleep_until(deadline.into());
        tokio::pin!(deadline_reached);
        let mut past_deadline = false;
        loop {
            let limit = self.concurrency.current();
            if claiming.is_none()
                && run.stop.is_none()
                && !exhausted
                && claimed < budget.max_rows
                && queued.len() < limit + self.settings.batch_size
            {
                let want = self.settings.batch_size.min(budget.max_rows - claimed);
                let (store, lease_until) = (self.store.clone(), self.lease_until(deadline));
                let longest_wait = self.longest_retry_wait();
                claiming = Some(Box::pin(async move {
                    let rows = store
                        .claim_batch_until(want, cursor, lease_until, longest_wait)
                        .await?;
                    Ok((rows, lease_until))
                }));
            }
            if run.stop.is_some() {
                // Rows not yet sent go back untouched.
                abandoned.extend(queued.drain(..).map(|(row, batch)| (row.id, batch)));
            }
            while in_flight.len() < limit {
                let Some((row, batch)) = queued.pop_front() else {
                    break;
                };
                let client = client.clone();
                in_flight_ids.insert(row.id, (batch, row.attempts));
                in_flight.push(async move {
                    let mut row = row;
                    // The payload is not needed once sent: move it into the request, no copy.
                    let body = std::mem::take(&mut row.payload_json);
                    let attempt = client.send(row.event_id.as_deref(), body).await;
                    (row, batch, attempt)
                });
            }
            if in_flight.is_empty() && claiming.is_none() {
                break;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    run.stop.get_or_insert(StopReason::Cancelled);
                    break;
                }
                // The deadline stops claiming and sending. The worker then waits for the requests
                // in flight, each bounded by the request timeout, so that a server slower than a
                // pass is heard rather than posted the same rows again by the next pass. An
                // explicit drain keeps its bound (the startup drain holds READY=1) and cuts them
                // short below, each counted as a timed-out attempt with a backoff: released
                // untouched, a hanging server would get them again at once, and never show.
                () = &mut deadline_reached, if !past_deadline => {
                    past_deadline = true;
                    run.stop.get_or_insert(StopReason::TimeBudget);
                    if trigger.is_explicit() {
                        break;
                    }
                }
                claim = async { claiming.as_mut().expect("guarded by the branch condition").await }, if claiming.is_some() => {
                    claiming = None;
                    match claim {
                        Ok((rows, _)) if rows.is_empty() => exhausted = true,
                        Ok((rows, lease_until)) => {
                            claimed += rows.len();
                            if let (ClaimFrom::After(_), Some(last)) = (cursor, rows.last()) {
                                cursor = ClaimFrom::After(last.id);
                            }
                            if run.batches.is_empty() {
                                // Only now is there something to send: an empty pass stays idle.
                                self.status.set_state(SyncState::Sending);
                            }
                            let batch = run.batches.len();
                            run.batches.push(BatchTally::claimed(lease_until, rows.len()));
                            queued.extend(rows.into_iter().map(|row| (row, batch)));
                        }
                        Err(err) => {
                            run.stop.get_or_insert(StopReason::StoreError);
                            run.detail = Some(err.to_string());
                        }
                    }
                }
                Some((row, batch, attempt)) = in_flight.next(), if !in_flight.is_empty() => {
                    in_flight_ids.remove(&row.id);
                    last_answered = last_answered.max(Some(row.id));
                    self.record(&mut run, row, batch, attempt);
                    progress(Progress { done: run.done, delivered: run.delivered, total });
                }
            }
        }
        // A claim already sent to the store is finished, never dropped: its rows are leased and
        // must be released now rather than when the lease expires.
        if let Some(claim) = claiming.take() {
            if let Ok((rows, lease_until)) = claim.await {
                let batch = run.batches.len();
                run.batches
                    .push(BatchTally::claimed(lease_until, rows.len()));
                abandoned.extend(rows.iter().map(|row| (row.id, batch)));
            }
        }
        // Requests still in flight are abandoned: the server may or may not have taken them, so
        // the rows stay pending and will be posted again (at-least-once). Cut by an explicit
        // drain's deadline, each counts as a timed-out attempt; on cancellation (shutdown) they are
        // released untouched.
        abandoned.extend(queued.drain(..).map(|(row, batch)| (row.id, batch)));
        drop(in_flight);
        let mut releases: Vec<Vec<Settlement>> = run.batches.iter().map(|_| Vec::new()).collect();
        // Only an explicit drain leaves the loop at its deadline with requests in flight; the
        // worker leaves with some only when cancelled.
        let timed_out = past_deadline && trigger.is_explicit();
        for (id, (batch, attempts)) in in_flight_ids.drain() {
            if !timed_out {
                abandoned.push((id, batch));
                continue;
            }
            let Some(release) = releases.get_mut(batch) else {
                continue;
            };
            let error = format!(
                "timeout: no response within the drain's time budget of {}",
                humantime::format_duration(budget.max_time)
            );
            self.status.metrics().delivery(Outcome::retried);
            self.status.record_error(&error);
            run.retried += 1;
            release.push(Settlement::Retry {
                id,
                status: None,
                next_attempt_at: SystemTime::now() + self.policy.backoff(attempts + 1),
                error,
            });
        }
        // Each batch cut short settles what completed and releases the rest, under its own lease.
        for (id, batch) in abandoned {
            if let Some(release) = releases.get_mut(batch) {
                release.push(Settlement::Release {
                    id,
                    status: None,
                    error: None,
                });
            }
        }
        for (tally, release) in run.batches.iter_mut().zip(&mut releases) {
            if tally.outstanding > 0 {
                release.append(&mut tally.settlements);
            }
            if !release.is_empty() {
                let (store, release) = (self.store.clone(), std::mem::take(release));
                let lease_until = tally.lease_until;
                run.settling
                    .spawn(async move { store.settle_leased(release, lease_until).await });
            }
        }
        while let Some(joined) = run.settling.join_next().await {
            if let Ok(Err(err)) = joined {
                run.stop.get_or_insert(StopReason::StoreError);
                run.detail = Some(err.to_string());
            }
        }

        let remaining = self.pending(trigger).await;
        let pending_left = remaining.is_some_and(|n| n > 0);
        // `empty` means nothing is pending: a drain that claimed nothing while rows are pending
        // says why (DESIGN §5 reasons).
        let reason = run
            .stop
            .unwrap_or(if claimed >= budget.max_rows && pending_left {
                StopReason::RowBudget
            } else if claimed == 0 && !pending_left {
                StopReason::Empty
            } else if claimed == 0 && trigger.is_explicit() {
                // An explicit drain takes every pending row whatever its timer: what it could not
                // claim is leased by another drainer.
                StopReason::Leased
            } else {
                // The worker took every due row (maybe none): the rest wait on their timers or on
                // another drainer's lease.
                StopReason::Done
            });
        self.finish_status(reason, &run);
        self.persist_status().await;
        DrainReport {
            delivered: run.delivered,
            dead: run.dead,
            retried: run.retried,
            remaining,
            elapsed: started.elapsed(),
            reason,
            detail: run.detail,
            last_answered,
        }
    }

    /// Applies one attempt's outcome to the drain's bookkeeping.
    fn record(&self, run: &mut Run, row: ClaimedRow, batch: usize, attempt: Attempt) {
        run.done += 1;
        let now = SystemTime::now();
        let settlement = match attempt.disposition {
            Disposition::Delivered => {
                self.status.metrics().delivery(Outcome::delivered);
                run.delivered += 1;
                self.status.record_success(now);
                Settlement::Synced {
                    id: row.id,
                    status: attempt.status.unwrap_or(200),
                }
            }
            Disposition::Dead => {
                self.status.metrics().delivery(Outcome::dead);
                run.dead += 1;
                tracing::warn!(row_id = %row.id, event_id = row.event_id.as_deref().unwrap_or(""),
                    status = attempt.status, "ingest rejected row for good, moved to dead: {}", attempt.detail);
                Settlement::Dead {
                    id: row.id,
                    status: attempt.status.unwrap_or(0),
                    error: attempt.detail.clone(),
                }
            }
            Disposition::RetryLater => {
                self.status.metrics().delivery(Outcome::retried);
                run.retried += 1;
                tracing::debug!(row_id = %row.id, attempts = row.attempts + 1, "delivery failed, will retry: {}", attempt.detail);
                let delay = self.policy.backoff(row.attempts + 1);
                Settlement::Retry {
                    id: row.id,
                    status: attempt.status,
                    error: attempt.detail.clone(),
                    next_attempt_at: now + delay,
                }
            }
            Disposition::Throttled { retry_after } => {
                self.status.metrics().delivery(Outcome::throttled);
                run.retried += 1;
                let delay = retry_after
                    .unwrap_or_default()
                    .max(self.policy.backoff(row.attempts + 1));
                if run.stop.is_none() {
                    tracing::warn!(
                        status = attempt.status,
                        pause_seconds = delay.as_secs(),
                        "ingest is throttling, pausing all sending: {}",
                        attempt.detail
                    );
                }
                self.status.pause_until(Instant::now() + delay);
                self.concurrency.halve();
                run.stop.get_or_insert(StopReason::RateLimited);
                Settlement::Retry {
                    id: row.id,
                    status: attempt.status,
                    error: attempt.detail.clone(),
                    next_attempt_at: now + delay,
                }
            }
            Disposition::AuthFailed | Disposition::ConfigError => {
                self.status.metrics().delivery(Outcome::refused);
                let reason = if attempt.disposition == Disposition::AuthFailed {
                    StopReason::AuthFailed
                } else {
                    StopReason::ConfigError
                };
                if run.stop.is_none() {
                    tracing::error!(status = attempt.status, url = %self.settings.ingest_url,
                        "ingest refused the request, pausing sync ({}): {}", reason.as_str(), attempt.detail);
                }
                run.stop.get_or_insert(reason);
                Settlement::Release {
                    id: row.id,
                    status: attempt.status,
                    error: Some(attempt.detail.clone()),
                }
            }
        };
        if !attempt.detail.is_empty() {
            self.status.record_error(&attempt.detail);
            run.detail = Some(attempt.detail);
        }
        let Some(tally) = run.batches.get_mut(batch) else {
            return;
        };
        tally.outstanding -= 1;
        match settlement {
            Settlement::Synced { .. } | Settlement::Dead { .. } => tally.progressed = true,
            _ => tally.clean = false,
        }
        tally.settlements.push(settlement);
        if tally.outstanding == 0 {
            if !tally.progressed {
                run.stop.get_or_insert(StopReason::NoProgress);
            } else if tally.clean {
                self.concurrency.increase();
            }
            let settlements = std::mem::take(&mut tally.settlements);
            let (store, lease_until) = (self.store.clone(), tally.lease_until);
            run.settling
                .spawn(async move { store.settle_leased(settlements, lease_until).await });
        }
    }

    /// The longest a settlement can make a row wait: the backoff cap or the longest `Retry-After`
    /// honoured, whichever is longer.
    pub fn longest_retry_wait(&self) -> Duration {
        self.settings.backoff_cap.max(super::RETRY_AFTER_CAP)
    }

    /// When a batch claimed now is leased until: the drain sends nothing after its deadline, a
    /// request then in flight ends within the request timeout, and the lease (longer than the
    /// request timeout, as the configuration checks) covers that and the settlement. So a held
    /// row's lease never runs out, however long the drain or the queue ahead of the row.
    fn lease_until(&self, deadline: Instant) -> SystemTime {
        let now = SystemTime::now();
        let left = deadline.saturating_duration_since(Instant::now());
        now.checked_add(left.saturating_add(self.settings.lease))
            .unwrap_or(now + self.settings.lease)
    }

    fn finish_status(&self, reason: StopReason, run: &Run) {
        let state = match reason {
            StopReason::RateLimited => SyncState::RateLimited,
            StopReason::AuthFailed => SyncState::AuthFailed,
            StopReason::ConfigError => SyncState::ConfigError,
            StopReason::Disabled => SyncState::Disabled,
            StopReason::StoreError => {
                // Shown by /health and `gradata status`, not only in the drain's record.
                if let Some(detail) = &run.detail {
                    self.status.record_error(detail);
                }
                SyncState::StoreError
            }
            _ if run.retried > 0 => SyncState::Backoff,
            _ => SyncState::Idle,
        };
        self.status.set_state(state);
    }

    /// Saves the status for `gradata status`, which reads the database, not the service.
    async fn persist_status(&self) {
        let snapshot = self.status.snapshot();
        let Ok(json) = serde_json::to_string(&snapshot) else {
            return;
        };
        if let Err(err) = self.store.set_meta(super::STATUS_META_KEY, json).await {
            tracing::debug!(error = %err, "could not save the sync status");
        }
    }

    /// The pending count, read off the async workers.
    ///
    /// The worker, woken by every write, reads the store's gauge: even a count per pass would be
    /// one per write under load. Explicit drains, whose reports people read, count (from the
    /// index of claimable rows, so that rows written by other processes are included too).
    async fn pending(&self, trigger: Trigger) -> Option<u64> {
        if !trigger.is_explicit() {
            return Some(self.store.pending().0);
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.count_pending()).await {
            Ok(Ok(rows)) => Some(rows),
            _ => None,
        }
    }
}
