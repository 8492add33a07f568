//! Accepting connections and speaking HTTP on them (hyper), with what axum's own `serve` cannot
//! be told: a deadline for each request's headers. It counts from when a connection opens or its
//! previous response was sent, so a client that stalls mid-header and a keep-alive connection left
//! idle are both closed after it, and cannot hold sockets forever. The body has its own deadline,
//! in `body`.
//!
//! At shutdown it stops accepting, asks every connection to finish the request in flight and
//! close, and returns once they have (the daemon bounds that wait with its grace period).
//!
//! It knows nothing of routes or the outbox: it is given a [`Router`] and its listeners.

use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::serve::Listener as AcceptConnections;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Listener;

/// Serves `router` on every listener until `shutdown` fires, then stops accepting and waits for
/// the connections in flight to finish their requests and close. `header_timeout` bounds how long
/// a connection may take to send a request's headers (see the module's documentation).
pub async fn serve(
    listeners: Vec<Listener>,
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let mut acceptors = tokio::task::JoinSet::new();
    for listener in listeners {
        let connection = Connection {
            router: router.clone(),
            header_timeout,
            shutdown: shutdown.clone(),
        };
        let (connections, shutdown) = (connections.clone(), shutdown.clone());
        match listener {
            Listener::Tcp(listener) => {
                acceptors.spawn(accept(listener, connection, connections, shutdown));
            }
            Listener::Unix(listener) => {
                acceptors.spawn(accept(listener, connection, connections, shutdown));
            }
        }
    }
    // An acceptor only returns once `shutdown` has fired.
    while acceptors.join_next().await.is_some() {}
    connections.close();
    connections.wait().await;
}

/// Accepts connections until `shutdown` fires, serving each on its own task. axum's listeners
/// ride out accept errors (a full file table waits a second and tries again).
async fn accept<L: AcceptConnections>(
    mut listener: L,
    connection: Connection,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let io = tokio::select! {
            () = shutdown.cancelled() => return,
            (io, _peer) = listener.accept() => io,
        };
        connections.spawn(connection.clone().serve(io));
    }
}

/// What every connection is served with.
#[derive(Clone)]
struct Connection {
    router: Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
}

impl Connection {
    /// Speaks HTTP on `io` until the client closes, a deadline passes, or shutdown lets the
    /// request in flight finish.
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let service = TowerToHyperService::new(self.router);
        let mut connection =
            pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
        // A connection that ends in an error (a reset, a deadline, garbage) concerns its client
        // only; the client has been answered where HTTP allows it.
        tokio::select! {
            _ = connection.as_mut() => {}
            () = self.shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }
}
