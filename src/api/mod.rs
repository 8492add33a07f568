//! The local HTTP API (its contract is `docs/api.md`): the router, its shared [`State`], and
//! [`serve`], which runs the router on listeners it is given (never addresses: socket activation
//! and port-0 tests need no extra code) until a shutdown token fires, then lets requests in flight
//! finish.
//!
//! Layout: one file per family of routes (`brain`, `learning`, `maintain`, `brain_log`,
//! `capture`, `admin`, `health`); `guard` and `body` check and read a request; `error` answers
//! every failure as JSON; `server` speaks HTTP on the connections; `refusals` and `episode` log a
//! run of failures once rather than per request; `correction` measures an edit, purely.
//!
//! Boundary: asks [`crate::brain`] for every brain decision, talks to the outbox through
//! [`crate::store`], reads the sync status and asks the current sync engine for a drain on
//! `POST /sync`; it never posts to the cloud itself.
//! Invariants: a 2xx to a write is sent only after the commit; bad input writes nothing.

mod admin;
mod body;
mod brain;
mod brain_log;
mod capture;
pub mod correction;
mod episode;
mod error;
pub mod guard;
mod health;
mod learning;
mod maintain;
mod refusals;
mod server;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::watch;

pub use body::{BodyLimits, BodyRoom};
pub use error::ApiError;
pub use guard::Guards;
pub use server::{Shutdown, serve};

use crate::metrics::Metrics;
use crate::store::{QueueLimit, Store};
use crate::sync::{self, Engine, worker::Wake};
use refusals::Refusals;

/// Limits on what clients may send and queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Body size and time.
    pub body: BodyLimits,
    /// Most events in one `POST /v1/events`.
    pub max_events_per_request: usize,
    /// Most pending rows before writes get 503.
    pub max_pending_rows: u64,
    /// Most pending payload bytes before writes get 503.
    pub max_pending_bytes: u64,
    /// Oldest pending age past which `/health` says `degraded`.
    pub degraded_after: Duration,
    /// Budget of a `POST /sync` drain.
    pub manual_drain: sync::Budget,
}

/// What a configuration reload changes while the server runs (SIGHUP): who may call, what they
/// may send and queue, and the `brain_id` put in every payload. Each request reads the value
/// current when it arrives and keeps it to the end, so one request never mixes two.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `brain_id` of every payload.
    pub brain_id: String,
    /// Client limits.
    pub limits: Limits,
    /// Access rules.
    pub guards: Guards,
    /// The memory request bodies may take at once. A reload that keeps its size keeps this one,
    /// with the shares requests hold in it.
    pub body_room: Arc<BodyRoom>,
}

/// Everything the routes share, built by the daemon.
#[derive(Debug)]
pub struct Shared {
    /// The outbox.
    pub store: Store,
    /// The current sync engine (replaced on reload).
    pub engines: watch::Receiver<Engine>,
    /// Wakes the sync worker after a write.
    pub wake: Wake,
    /// Where the outbox lives, for `/health`.
    pub data_dir: PathBuf,
    /// The brain the brain routes serve (the same directory).
    pub brain: Arc<crate::brain::Brain>,
    /// When the service started, for `/health`.
    pub started: Instant,
    /// The service's metrics registry (the sync engine records in it too).
    pub metrics: Metrics,
    /// The reloadable settings. The daemon holds the sender and replaces the value on a reload;
    /// if the sender is dropped the routes keep the last value.
    pub settings: watch::Receiver<Arc<Settings>>,
}

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct State {
    inner: Arc<Shared>,
    refusals: Arc<Refusals>,
}

impl State {
    /// Wraps the shared parts.
    pub fn new(shared: Shared) -> State {
        State {
            inner: Arc::new(shared),
            refusals: Arc::default(),
        }
    }

    fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    fn store(&self) -> &Store {
        &self.inner.store
    }

    fn brain(&self) -> &crate::brain::Brain {
        &self.inner.brain
    }

    fn engine(&self) -> Engine {
        self.inner.engines.borrow().clone()
    }

    fn status(&self) -> sync::Status {
        self.inner.engines.borrow().status().clone()
    }

    fn metrics(&self) -> Metrics {
        self.inner.metrics.clone()
    }

    fn wake(&self) {
        self.inner.wake.wake();
    }

    /// The current settings. A clone of the `Arc`, so no lock is held past this call.
    fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.inner.settings.borrow())
    }

    fn limits(&self) -> Limits {
        self.inner.settings.borrow().limits
    }

    /// The outbox's limit for a write now: pending rows and bytes.
    fn queue_limit(&self) -> QueueLimit {
        let limits = self.limits();
        QueueLimit {
            max_rows: limits.max_pending_rows,
            max_bytes: limits.max_pending_bytes,
        }
    }

    /// Reads and parses the body of `request` as `T`, under the settings current when it arrived.
    /// The share of the body room comes back with it, to be held until the answer is ready.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        request: Request,
    ) -> Result<(T, body::BodyShare), ApiError> {
        let settings = self.settings();
        body::read_json(request, settings.limits.body, &settings.body_room).await
    }

    fn manual_drain_budget(&self) -> sync::Budget {
        self.limits().manual_drain
    }
}

/// A listening socket the server accepts from.
#[derive(Debug)]
pub enum Listener {
    /// TCP (loopback).
    Tcp(tokio::net::TcpListener),
    /// A unix stream socket.
    Unix(tokio::net::UnixListener),
}

/// The routes, behind the guards and the request counter.
pub fn router(state: State) -> Router {
    let router = Router::new()
        .route("/health", get(health::get))
        .route("/correct", post(capture::correct))
        .route("/log-event", post(brain_log::log_event))
        .route("/checkpoint", post(brain_log::checkpoint))
        .route("/apply-rules", post(brain::apply_rules))
        .route("/detect", post(brain::detect))
        .route("/enforce-rules", post(brain::enforce_rules))
        .route("/tag-delta", post(brain::tag_delta))
        .route("/brain-recall", post(brain::brain_recall))
        .route("/end-session", post(learning::end_session))
        .route("/maintain", post(maintain::maintain))
        .route("/v1/events", post(capture::events))
        .route("/sync", post(admin::sync_now))
        .route("/v1/queue", get(admin::list))
        .route("/v1/queue/retry", post(admin::retry))
        .route("/metrics", get(admin::metrics));
    let front_door = FrontDoor {
        settings: state.inner.settings.clone(),
        metrics: state.metrics(),
    };
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(front_door, admit))
}

/// What the one middleware in front of every route needs. One layer rather than one per concern:
/// each `from_fn` layer clones the routes' boxed service and boxes a future on every request.
#[derive(Debug, Clone)]
struct FrontDoor {
    /// The reloadable settings, for their guards (see [`Shared::settings`]).
    settings: watch::Receiver<Arc<Settings>>,
    metrics: Metrics,
}

/// Runs the request through the guards to its route, and counts it by route and status.
async fn admit(
    axum::extract::State(door): axum::extract::State<FrontDoor>,
    request: Request,
    next: Next,
) -> Response {
    // A clone of the matched path is a reference count, not a copy of the string.
    let route = request.extensions().get::<MatchedPath>().cloned();
    // The `Arc` is cloned out so that no lock on the settings is held across the request.
    let settings = Arc::clone(&door.settings.borrow());
    let response = answer_even_a_panic(guard::check(&settings.guards, request, next)).await;
    door.metrics.http_request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        response.status().as_u16(),
    );
    response
}

/// The response of `handling`, or a 500 if it panicked (a bug, logged by the panic hook): the
/// client gets an answer rather than a dropped connection, and the service keeps serving.
async fn answer_even_a_panic(handling: impl Future<Output = Response>) -> Response {
    use futures_util::FutureExt;
    match std::panic::AssertUnwindSafe(handling).catch_unwind().await {
        Ok(response) => response,
        Err(_) => ApiError::internal(
            "the service failed while handling this request (a bug, logged in its journal); the event may or may not be stored: send it again with the same event_id",
        )
        .into_response(),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    /// A request whose handling panics gets a JSON 500, not a dropped connection; one that does
    /// not is answered as it was.
    #[tokio::test]
    async fn a_panicking_request_gets_a_500() {
        let fine = answer_even_a_panic(async { StatusCode::ACCEPTED.into_response() }).await;
        assert_eq!(fine.status(), StatusCode::ACCEPTED);
        let panicked = answer_even_a_panic(async {
            if fine.status().is_success() {
                panic!("a bug");
            }
            fine
        })
        .await;
        assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(panicked.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "internal", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("same event_id"),
            "{body}"
        );
    }
}
