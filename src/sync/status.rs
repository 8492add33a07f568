//! The sync worker's state as the rest of the service sees it: `/health`, `/metrics`, `gradata
//! status` and the worker's own pause logic read it; only the drain engine and the worker write it.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

/// The worker states of DESIGN §5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Nothing due; waiting for an enqueue or a timer.
    Idle,
    /// Posting rows.
    Sending,
    /// Some rows wait on their backoff timer after transient failures.
    Backoff,
    /// The server asked us to slow down; all sending paused until a deadline.
    RateLimited,
    /// The server refused the API key (401/403); paused, rows kept.
    AuthFailed,
    /// The ingest URL is wrong (3xx/404/405/410/501); paused, rows kept.
    ConfigError,
    /// No API key or the kill switch is on; rows accumulate, nothing is sent.
    Disabled,
    /// The outbox could not be read or written (disk full, I/O error, locked by another process
    /// for too long…); the worker tries again every few seconds, and `last_error` says why.
    StoreError,
}

impl SyncState {
    /// Every state, for metrics that list them all.
    pub const ALL: [SyncState; 8] = [
        SyncState::Idle,
        SyncState::Sending,
        SyncState::Backoff,
        SyncState::RateLimited,
        SyncState::AuthFailed,
        SyncState::ConfigError,
        SyncState::Disabled,
        SyncState::StoreError,
    ];

    /// The snake_case name used in JSON, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::Idle => "idle",
            SyncState::Sending => "sending",
            SyncState::Backoff => "backoff",
            SyncState::RateLimited => "rate_limited",
            SyncState::AuthFailed => "auth_failed",
            SyncState::ConfigError => "config_error",
            SyncState::Disabled => "disabled",
            SyncState::StoreError => "store_error",
        }
    }

    /// Whether sending is paused until an operator or a probe changes something.
    pub fn is_paused_for_operator(self) -> bool {
        matches!(self, SyncState::AuthFailed | SyncState::ConfigError)
    }
}

/// A snapshot of the status.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StatusSnapshot {
    /// Current state.
    pub state: SyncState,
    /// Unix seconds of the last delivered row.
    pub last_success_at: Option<f64>,
    /// The last failure, for operators.
    pub last_error: Option<String>,
}

/// Shared, cheap-to-clone sync status.
#[derive(Debug, Clone)]
pub struct Status {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    snapshot: StatusSnapshot,
    /// Sending is paused until this instant (rate limiting).
    paused_until: Option<Instant>,
}

impl Status {
    /// A fresh status in `state`.
    pub fn new(state: SyncState) -> Status {
        Status {
            inner: Arc::new(Mutex::new(Inner {
                snapshot: StatusSnapshot {
                    state,
                    last_success_at: None,
                    last_error: None,
                },
                paused_until: None,
            })),
        }
    }

    /// A copy of the current values.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.lock().snapshot.clone()
    }

    /// The current state.
    pub fn state(&self) -> SyncState {
        self.lock().snapshot.state
    }

    /// Until when sending is paused by the server, if it is.
    pub fn paused_until(&self) -> Option<Instant> {
        self.lock()
            .paused_until
            .filter(|until| *until > Instant::now())
    }

    pub(crate) fn set_state(&self, state: SyncState) {
        self.lock().snapshot.state = state;
    }

    pub(crate) fn record_success(&self, at: SystemTime) {
        let mut inner = self.lock();
        inner.snapshot.last_success_at = Some(crate::store::to_unix(at));
    }

    pub(crate) fn record_error(&self, error: &str) {
        self.lock().snapshot.last_error = Some(error.to_owned());
    }

    pub(crate) fn pause_until(&self, until: Instant) {
        let mut inner = self.lock();
        inner.paused_until = Some(inner.paused_until.map_or(until, |old| old.max(until)));
        inner.snapshot.state = SyncState::RateLimited;
    }

    pub(crate) fn clear_pause(&self) {
        self.lock().paused_until = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Held for field copies only; a poisoned lock still holds consistent plain data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
