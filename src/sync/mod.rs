//! Delivery to the Gradata cloud (DESIGN §5): the ingest [`Client`], the response table
//! ([`classify()`]), the [`RetryPolicy`], the drain [`Engine`] shared by every caller, and the
//! background [`worker`].
//!
//! Boundary: depends on [`crate::store`] for rows (and its clock) and on nothing of the local HTTP
//! API or systemd. Invariant: no retryable row is ever dropped; this side makes a row dead only
//! on the server's definitive 4xx (the store buries rows it cannot read at all).

mod classify;
mod client;
mod drain;
mod retry;
mod stale_leases;
mod status;
pub mod worker;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use url::Url;

pub use classify::{Disposition, RETRY_AFTER_CAP, classify, parse_retry_after};
pub use client::{ApiKey, Attempt, Client, ClientError, ClientOptions, InvalidKey};
pub use drain::{
    Budget, DEFAULT_MAX_ROWS, DEFAULT_MAX_TIME, DrainReport, Engine, Progress,
    STARTUP_DRAIN_MESSAGE_ID, StopReason, Trigger,
};
pub use retry::{Concurrency, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, RetryPolicy};
pub use status::{Status, StatusSnapshot, SyncState};

use crate::store::{self, Store};

/// Default ingest URL (DESIGN §5).
pub const DEFAULT_INGEST_URL: &str = "https://api.gradata.ai/api/v1/ingest";
/// Default rows per claimed batch, as the original.
pub const DEFAULT_BATCH_SIZE: usize = 50;
/// Default requests in flight at start.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default ceiling of the adaptive concurrency.
pub const DEFAULT_MAX_CONCURRENCY: usize = 32;
/// Default connect timeout (DESIGN §5).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default request timeout (DESIGN §5).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Default lease period: a lease whose token no one has renewed for this long (on the observer's
/// monotonic clock) is freed by the service's worker.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);
/// How often a paused worker (`auth_failed`, `config_error`) probes again (DESIGN §5).
pub const DEFAULT_PAUSE_PROBE_INTERVAL: Duration = Duration::from_secs(300);

/// Key under which the last sync status is saved in the store's meta table.
pub const STATUS_META_KEY: &str = "sync_status";

/// Everything the sync side needs, built from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where events are posted.
    pub ingest_url: Url,
    /// The cloud API key, if one was found.
    pub api_key: Option<ApiKey>,
    /// Where the key came from, or the places searched when none was found (for the journal).
    pub api_key_source: String,
    /// False when the kill switch (`GRADATA_CLOUD_SYNC_DISABLE`, `sync.enabled = false`) is on.
    pub enabled: bool,
    /// Rows claimed per batch.
    pub batch_size: usize,
    /// Requests in flight at start.
    pub concurrency: usize,
    /// Ceiling of the adaptive concurrency.
    pub max_concurrency: usize,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed until the response's status and headers; its body is then read under a short
    /// bound of its own, within this.
    pub request_timeout: Duration,
    /// The lease period: a drain renews its leases at least every third of it, and the service's
    /// worker frees a lease it has seen unchanged for this long.
    pub lease: Duration,
    /// Backoff base.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_cap: Duration,
    /// How often a paused worker probes again.
    pub pause_probe_interval: Duration,
}

impl Settings {
    /// Defaults for everything but the URL and key.
    pub fn new(ingest_url: Url, api_key: Option<ApiKey>) -> Settings {
        Settings {
            ingest_url,
            api_key,
            api_key_source: String::from("given directly"),
            enabled: true,
            batch_size: DEFAULT_BATCH_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            lease: DEFAULT_LEASE,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_cap: DEFAULT_BACKOFF_CAP,
            pause_probe_interval: DEFAULT_PAUSE_PROBE_INTERVAL,
        }
    }

    /// Why nothing will be sent, or `None` when sync is on.
    pub fn disabled_reason(&self) -> Option<String> {
        if !self.enabled {
            Some(
                "cloud sync is switched off (GRADATA_CLOUD_SYNC_DISABLE or sync.enabled = false)"
                    .to_owned(),
            )
        } else if self.api_key.is_none() {
            Some(format!("no API key: {}", self.api_key_source))
        } else {
            None
        }
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            ingest_url: self.ingest_url.clone(),
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            max_idle_connections: self.max_concurrency,
        }
    }
}

/// Why a drain could not even start.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Opening the store panicked (a bug).
    #[error("opening the store failed unexpectedly: {0}")]
    Panicked(String),
}

/// Opens an existing store and drains it: `gradata drain`, and the contract entry point that never
/// creates anything. A missing database or table is a reported no-op, not an error, and the drain's
/// record is emitted on every path.
pub async fn open_and_drain(
    options: &store::Options,
    settings: Settings,
    trigger: Trigger,
    budget: Budget,
    cancel: &CancellationToken,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<DrainReport, DrainError> {
    let opened = {
        let options = store::Options {
            create: store::Create::Never,
            ..options.clone()
        };
        tokio::task::spawn_blocking(move || Store::open(&options)).await
    };
    let store = match opened {
        Ok(Ok(store)) => store,
        Ok(Err(store::Error::NotFound(path))) => {
            let report = DrainReport::skipped(
                StopReason::NoDatabase,
                None,
                Some(format!(
                    "{}: no such database; nothing to drain",
                    path.display()
                )),
            );
            report.emit(trigger);
            return Ok(report);
        }
        Ok(Err(store::Error::NoQueueTable(path))) => {
            let report = DrainReport::skipped(
                StopReason::NoQueueTable,
                None,
                Some(format!(
                    "{}: no sync_queue table; nothing to drain",
                    path.display()
                )),
            );
            report.emit(trigger);
            return Ok(report);
        }
        Ok(Err(err)) => return Err(DrainError::Store(err)),
        Err(join) => return Err(DrainError::Panicked(join.to_string())),
    };
    let engine = Engine::new(
        store,
        settings,
        Status::new(SyncState::Idle),
        crate::metrics::Metrics::new(),
    )?;
    Ok(engine.drain(trigger, budget, cancel, progress).await)
}
