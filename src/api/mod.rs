//! The local HTTP API (DESIGN §7): the router, its shared [`State`], and [`serve`], which runs the
//! router on listeners it is given (never addresses: socket activation and port-0 tests need no
//! extra code) until a shutdown token fires, then lets requests in flight finish.
//!
//! Boundary: talks to the outbox through [`crate::store`] and reads the sync status; it never
//! posts to the cloud itself.

mod body;
pub mod correction;
mod error;
pub mod guard;
mod health;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::sync;

/// What every handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct State {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    status: sync::Status,
    data_dir: PathBuf,
    started: Instant,
}

impl State {
    /// The state of a service that started at `started`.
    pub fn new(store: Store, status: sync::Status, data_dir: PathBuf, started: Instant) -> State {
        State {
            inner: Arc::new(Inner {
                store,
                status,
                data_dir,
                started,
            }),
        }
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

/// The routes.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/health", get(health::get))
        .with_state(state)
}

/// Serves `router` on every listener until `shutdown` fires, then stops accepting and waits for the
/// connections in flight to finish (the caller bounds that wait with its grace period).
pub async fn serve(
    listeners: Vec<Listener>,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut servers = tokio::task::JoinSet::new();
    for listener in listeners {
        let (router, stop) = (router.clone(), shutdown.clone().cancelled_owned());
        match listener {
            Listener::Tcp(listener) => {
                servers.spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                });
            }
            Listener::Unix(listener) => {
                servers.spawn(async move {
                    axum::serve(listener, router)
                        .with_graceful_shutdown(stop)
                        .await
                });
            }
        }
    }
    let mut result = Ok(());
    while let Some(joined) = servers.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => result = Err(err),
            Err(join) => result = Err(std::io::Error::other(join.to_string())),
        }
    }
    result
}
