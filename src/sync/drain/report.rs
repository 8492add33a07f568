//! What a drain did and why it stopped: [`DrainReport`] and [`StopReason`], and the log record
//! each drain leaves (for the startup drain, the contract record `sync queue drained at startup:
//! N rows`, DESIGN §2 and §5).
//!
//! Plain data: it knows nothing of how a drain runs, only how its outcome is named and logged.

use std::time::Duration;

use super::Trigger;
use crate::store::RowId;

/// `MESSAGE_ID` of the startup-drain record, so `journalctl MESSAGE_ID=…` finds every one.
pub const STARTUP_DRAIN_MESSAGE_ID: &str = "5f0b3a4c9d2e4e7a8c1f6b2d3e4a5b6c";

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
    /// The ingest fails every row: a whole batch completed without one row delivered or dead and
    /// rows probed elsewhere in the queue failed too, or an answer that concerns every row came
    /// (no connection, a timeout, 503). The detail says which. Rows that fail while others go
    /// through do not stop an explicit drain: they are passed over.
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
    /// Rows that failed and were passed over: scheduled for a retry after a backoff (each row is
    /// sent at most once per drain).
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
        let (delivered, dead, retried) = (self.delivered, self.dead, self.retried);
        // One list of fields for every trigger: only the level, the message and the startup
        // drain's message id differ.
        macro_rules! record {
            ($level:ident, $($id:ident = $value:expr,)? $message:literal) => {
                tracing::$level!(
                    $($id = $value,)?
                    delivered,
                    dead,
                    retried,
                    remaining,
                    elapsed_ms,
                    reason,
                    detail,
                    $message
                )
            };
        }
        match trigger {
            Trigger::Startup => record!(
                info,
                message_id = STARTUP_DRAIN_MESSAGE_ID,
                "sync queue drained at startup: {delivered} rows"
            ),
            Trigger::Shutdown => record!(info, "sync queue drained at shutdown: {delivered} rows"),
            Trigger::Manual => record!(info, "sync queue drained: {delivered} rows"),
            Trigger::Worker | Trigger::CatchUp { .. } => {
                record!(debug, "sync pass: {delivered} rows");
            }
        }
    }
}
