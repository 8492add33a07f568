//! The sockets the service serves: those systemd passed, or the configured addresses bound here,
//! checked against exposure beyond loopback and handed to the runtime. Accepting is the API's.

use super::Error;
use crate::api;
use crate::systemd::listeners::{self, Passed, Socket};

/// Adopts the passed sockets, or binds `addresses` when there are none. A TCP socket beyond
/// loopback is refused without a local token (configuration checks `api.listen` the same way;
/// this catches a socket unit's `ListenStream=`), and logged as a warning with one.
pub(super) fn open(
    sockets: Passed,
    addresses: &[String],
    token_set: bool,
) -> Result<Vec<api::Listener>, Error> {
    let sockets = if sockets.is_empty() {
        listeners::bind(addresses)?
    } else {
        sockets.adopt()?
    };
    sockets
        .into_iter()
        .map(|socket| {
            let name = socket.describe();
            let exposed = match &socket {
                Socket::Tcp { listener, .. } => listener
                    .local_addr()
                    .is_ok_and(|address| !address.ip().is_loopback()),
                Socket::Unix { .. } => false,
            };
            if exposed && !token_set {
                return Err(Error::Exposed(name));
            }
            if exposed {
                tracing::warn!(socket = %name, "listening beyond loopback: writes need the local token, but reads (/health, /v1/queue, /metrics) are open to the network");
            } else {
                tracing::info!(socket = %name, "listening");
            }
            let wrap = |cause| Error::Socket {
                name: name.clone(),
                cause,
            };
            match socket {
                Socket::Tcp { listener, .. } => {
                    listener.set_nonblocking(true).map_err(wrap)?;
                    tokio::net::TcpListener::from_std(listener)
                        .map(api::Listener::Tcp)
                        .map_err(wrap)
                }
                Socket::Unix { listener, .. } => {
                    listener.set_nonblocking(true).map_err(wrap)?;
                    tokio::net::UnixListener::from_std(listener)
                        .map(api::Listener::Unix)
                        .map_err(wrap)
                }
            }
        })
        .collect()
}
