//! Accepting connections and speaking HTTP on them (hyper), with what axum's own `serve` cannot
//! be told: a deadline for each request's headers. It counts from when a connection opens or its
//! previous response was sent, so a client that stalls mid-header and a keep-alive connection left
//! idle are both closed after it, and cannot hold sockets forever. The body has its own deadline,
//! in `body`. A client that shuts down its sending side after its request still gets the answer.
//!
//! When a connection cannot be accepted (the service has as many files open as `LimitNOFILE`
//! lets it), it tries again every second, and the journal says so when it starts, at most once a
//! minute while it lasts, and when connections are accepted again.
//!
//! At shutdown it stops accepting, asks every connection to finish the request in flight and
//! close, and returns once they have. The daemon bounds that wait with its grace period: when the
//! grace runs out it fires the `close` token, and every connection still open is dropped at once
//! (its socket closed, its request abandoned), so nothing a client does can hold the process.
//!
//! It knows nothing of routes or the outbox: it is given a [`Router`] and its listeners.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Listener;
use super::episode::{Episode, Line};

/// How long to wait before accepting again after an accept failed.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// The two steps of the server's shutdown, each a token the daemon cancels.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled first: stop accepting, let each connection finish its request in flight, then
    /// close it.
    pub finish: CancellationToken,
    /// Cancelled when the grace period is over: close every connection still open, whatever it is
    /// doing. Invariant: once both are cancelled, [`serve`] returns without waiting on any client.
    pub close: CancellationToken,
}

/// Serves `router` on every listener until `shutdown.finish` fires, then stops accepting and
/// waits for the connections in flight to finish their requests and close, or for
/// `shutdown.close`. `header_timeout` bounds how long a connection may take to send a request's
/// headers (see the module's documentation); each new connection takes the value current when it
/// is accepted (a reload changes it).
pub async fn serve(
    listeners: Vec<Listener>,
    router: Router,
    header_timeout: watch::Receiver<Duration>,
    shutdown: Shutdown,
) {
    let connections = TaskTracker::new();
    let mut acceptors = tokio::task::JoinSet::new();
    for listener in listeners {
        let connection = Connection {
            router: router.clone(),
            header_timeout: header_timeout.clone(),
            shutdown: shutdown.clone(),
        };
        let shutdown = shutdown.finish.clone();
        let connections = connections.clone();
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

/// A listening socket, as the accept loop sees it.
trait Accept: Send + 'static {
    type Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;

    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept_one(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(io, _peer)| io)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept_one(&self) -> io::Result<Self::Io> {
        self.accept().await.map(|(io, _peer)| io)
    }
}

/// Accepts connections until `shutdown` fires, serving each on its own task.
async fn accept<L: Accept>(
    listener: L,
    connection: Connection,
    connections: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut failing: Option<Episode> = None;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept_one() => accepted,
        };
        match accepted {
            Ok(io) => {
                if let Some(episode) = failing.take() {
                    tracing::info!(
                        failures = episode.count(),
                        lasted_secs = episode.lasted().as_secs_f64(),
                        "connections are accepted again"
                    );
                }
                connections.spawn(connection.clone().serve(io));
            }
            // The client gave up before it was accepted: nothing wrong here.
            Err(err) if gave_up(&err) => {}
            Err(err) => {
                match Episode::failure(&mut failing, Instant::now()) {
                    Some(Line::Started) => {
                        log_accept_failure(&err, "cannot accept connections", 1);
                    }
                    Some(Line::Still(unlogged)) => {
                        log_accept_failure(&err, "still cannot accept connections", unlogged);
                    }
                    None => {}
                }
                // Retrying at once would spin: the listener stays readable.
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(ACCEPT_RETRY) => {}
                }
            }
        }
    }
}

fn gave_up(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

fn log_accept_failure(err: &io::Error, message: &str, failures: u64) {
    use nix::errno::Errno;
    let out_of_files = [Errno::EMFILE, Errno::ENFILE].map(|errno| Some(errno as i32));
    let hint = match err.raw_os_error() {
        code if out_of_files.contains(&code) => {
            "too many open files: clients hold many connections open, or LimitNOFILE is too low; \
             new clients wait in the listen queue and are served once connections close"
        }
        _ => "retrying every second",
    };
    tracing::error!(error = %err, failures, hint, "{message}");
}

/// What every connection is served with.
#[derive(Clone)]
struct Connection {
    router: Router,
    header_timeout: watch::Receiver<Duration>,
    shutdown: Shutdown,
}

impl Connection {
    /// Speaks HTTP on `io` until the client closes, a deadline passes, shutdown lets the request
    /// in flight finish, or the grace period is over (dropping the connection closes its socket).
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // HTTP/1 only: the API's clients speak HTTP/1.1 (the original daemon spoke nothing else),
        // and the guards read HTTP/1's `Host`. Half-closes: a client that shuts down its sending
        // side after its request still gets the answer; without this hyper closes the connection
        // when it reads the end of the stream, and a write that was committed goes
        // unacknowledged.
        let header_timeout = *self.header_timeout.borrow();
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .half_close(true);
        let service = TowerToHyperService::new(self.router);
        let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
        // A connection that ends in an error (a reset, a deadline, garbage) concerns its client
        // only; the client has been answered where HTTP allows it.
        let finish = async {
            tokio::select! {
                _ = connection.as_mut() => {}
                () = self.shutdown.finish.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.as_mut().await;
                }
            }
        };
        tokio::select! {
            () = finish => {}
            () = self.shutdown.close.cancelled() => {}
        }
    }
}
