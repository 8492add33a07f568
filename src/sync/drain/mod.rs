//! The drain engine: the one implementation of "deliver what is pending" (DESIGN §5), used by the
//! startup drain, the background worker, the shutdown drain, `POST /sync` and `gradata drain`.
//!
//! A drain claims rows in batches under a lease, keeps up to [`Concurrency::current`] POSTs in
//! flight across batch boundaries (so a slow server is never waited on one batch at a time),
//! settles each batch in one transaction when its last row completes, and stops at the first of:
//! the row budget, the time budget, the end of the queue, an ingest that fails everything, a pause
//! (429, 401, 404…), or cancellation.
//!
//! An explicit drain (startup, shutdown, `POST /sync`, `gradata drain`) walks every pending row
//! in id order, whatever its backoff timer, and sends each at most once: a row that fails is
//! settled for a retry and passed over, so rows the ingest keeps rejecting cannot block the rows
//! behind them. It stops early only when the ingest fails everything, which `outage` tells from
//! failing rows (an answer no row could get, or probes elsewhere in the queue that fail too),
//! within a few batches. The background worker's pass takes the due rows and ends at the first
//! batch without progress.
//!
//! At its time budget the background worker's pass lets the requests in flight finish (each is
//! bounded by the request timeout) and settles them by their outcome; an explicit drain keeps its
//! bound strictly and counts each request it cuts short as a timed-out attempt, with a backoff and
//! the cause. Only cancellation releases rows in flight untouched. It returns a [`DrainReport`]
//! and, for the startup drain, always emits the record `sync queue drained at startup: N rows`,
//! whatever the path.
//!
//! Layout: this file holds the [`Engine`] and what callers pass it; `run` is one drain step by
//! step; `outage` is the pure rule that tells failing rows from a failing ingest; `report` names
//! the outcome.
//!
//! Invariants: a claimed row is always settled or released before the drain returns (or, if the
//! process dies, the service's worker frees its lease once it has stayed unchanged for a lease
//! period, as does the next open that is alone with the store); no retryable row is ever
//! marked dead or synced. A stored lease is a token, never compared with a wall clock: a claim
//! takes only rows with no lease, and a drain renews (changes) the token of every batch it holds
//! at least every third of `Settings::lease` on its monotonic clock, so the service's observer
//! (the worker), which frees only a token it has seen unchanged for a whole lease period on its
//! own monotonic clock, never frees a row a live drain holds (DESIGN §4: two drainers never post
//! the same row at once), and a clock stepped either way changes nothing. Settlements other than
//! a delivery are fenced by the current token, so a drainer that somehow lost its rows cannot undo
//! what the new holder does. No arithmetic on a stored value can panic: an
//! attempt count saturates.

mod outage;
mod report;
mod run;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

pub use report::{DrainReport, STARTUP_DRAIN_MESSAGE_ID, StopReason};

use super::Settings;
use super::client::Client;
use super::retry::{Concurrency, RetryPolicy};
use super::status::{Status, SyncState};
use crate::metrics::Metrics;
use crate::store::{ClaimFrom, RowId, Store};
use run::Run;

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
    /// Where deliveries and drains are counted; the daemon's registry, shared across reloads.
    metrics: Metrics,
    concurrency: Concurrency,
    policy: RetryPolicy,
}

impl Engine {
    /// Builds an engine; the HTTP client is built only when sync is enabled.
    pub fn new(
        store: Store,
        settings: Settings,
        status: Status,
        metrics: Metrics,
    ) -> Result<Engine, super::client::ClientError> {
        let concurrency = Concurrency::new(settings.concurrency, settings.max_concurrency);
        let policy = RetryPolicy::new(settings.backoff_base, settings.backoff_cap);
        Engine::with_parts(store, settings, status, metrics, concurrency, policy)
    }

    /// Builds an engine that shares `concurrency` and `policy` with a previous one (reload) or
    /// uses seeded ones (tests).
    pub fn with_parts(
        store: Store,
        settings: Settings,
        status: Status,
        metrics: Metrics,
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
            metrics,
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

    /// The metrics registry deliveries and drains are counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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
        self.metrics
            .drain_finished(trigger.as_str(), report.elapsed);
        report.emit(trigger);
        report
    }

    /// The drain without its record and metrics: a drain that cannot send reports at once.
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
        let pending = self.pending(trigger).await;
        Run::new(self, client.clone(), trigger, budget, started, pending)
            .run(cancel, progress)
            .await
    }

    /// The longest a settlement can make a row wait: the backoff cap or the longest `Retry-After`
    /// honoured, whichever is longer.
    pub fn longest_retry_wait(&self) -> Duration {
        self.settings.backoff_cap.max(super::RETRY_AFTER_CAP)
    }

    /// The token a batch claimed now is leased with: a wall-clock time (from [`crate::clock`]),
    /// the drain's deadline plus the lease, which is only a value no other lease is likely to
    /// have. No gradata process compares it with a clock; what keeps the row is the renewal.
    fn lease_until(&self, deadline: Instant) -> SystemTime {
        let now = self.store.clock().now();
        let left = deadline.saturating_duration_since(Instant::now());
        now.checked_add(left.saturating_add(self.settings.lease))
            .unwrap_or(now + self.settings.lease)
    }

    /// The token a batch leased with `held` is renewed to: the lease as [`Engine::lease_until`]
    /// gives it now, made different from `held` (a wall clock stepped back could give the same
    /// value), since a renewal shows that the holder is alive only by changing the token.
    fn renewed_lease(&self, held: SystemTime, deadline: Instant) -> SystemTime {
        let renewed = self.lease_until(deadline);
        if crate::store::to_unix(renewed) == crate::store::to_unix(held) {
            held.checked_add(Duration::from_millis(1))
                .unwrap_or(renewed)
        } else {
            renewed
        }
    }

    /// Sets the sync state a drain leaves, from why it stopped and whether rows failed.
    fn finish_status(&self, reason: StopReason, retried: u64, detail: Option<&str>) {
        let state = match reason {
            StopReason::RateLimited => SyncState::RateLimited,
            StopReason::AuthFailed => SyncState::AuthFailed,
            StopReason::ConfigError => SyncState::ConfigError,
            StopReason::Disabled => SyncState::Disabled,
            StopReason::StoreError => {
                // Shown by /health and `gradata status`, not only in the drain's record.
                if let Some(detail) = detail {
                    self.status.record_error(detail);
                }
                SyncState::StoreError
            }
            _ if retried > 0 => SyncState::Backoff,
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
        self.store.count_pending().await.ok()
    }
}
