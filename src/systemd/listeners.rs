//! The sockets the service listens on: adopted from systemd (`LISTEN_FDS`, `LISTEN_FDNAMES`) or,
//! when none were passed, bound from `--listen` addresses (`host:port`, or an absolute path for a
//! unix socket).
//!
//! Sockets are returned bound and listening but not yet accepted from: until the server starts,
//! the kernel backlog holds every connection, which is what lets the startup drain finish before
//! the first request is answered.
//!
//! It knows nothing of HTTP or of who may connect: refusing a socket exposed beyond loopback
//! without a token is the daemon's (`daemon/listen.rs`).

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// A listening socket, with a name for logs.
#[derive(Debug)]
pub enum Socket {
    /// A TCP listener.
    Tcp {
        /// `LISTEN_FDNAMES` entry, or the address it was bound to.
        name: String,
        /// The socket.
        listener: TcpListener,
    },
    /// A unix stream listener.
    Unix {
        /// `LISTEN_FDNAMES` entry, or the path it was bound to.
        name: String,
        /// The socket.
        listener: UnixListener,
    },
}

impl Socket {
    /// A description for logs: `http (127.0.0.1:8765)`.
    pub fn describe(&self) -> String {
        match self {
            Socket::Tcp { name, listener } => match listener.local_addr() {
                Ok(addr) if name != &addr.to_string() => format!("{name} ({addr})"),
                _ => name.clone(),
            },
            Socket::Unix { name, listener } => match listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
            {
                Some(path) if name != &path => format!("{name} ({path})"),
                _ => name.clone(),
            },
        }
    }
}

/// Why a socket could not be adopted or bound.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A passed fd is neither a TCP nor a unix stream listener.
    #[error(
        "socket {index} passed by systemd ({name}) is neither a TCP nor a unix stream socket: {cause}"
    )]
    Unusable {
        /// Position in `LISTEN_FDS`.
        index: usize,
        /// Its `LISTEN_FDNAMES` entry.
        name: String,
        /// What the check said.
        cause: io::Error,
    },
    /// A passed socket is bound but nobody called `listen(2)` on it, so accepting from it would
    /// fail forever (systemd passes listening sockets unless the socket unit says `Accept=yes`).
    #[error(
        "socket {index} passed by systemd ({name}) is not listening (SO_ACCEPTCONN is off); check the socket unit: gradata needs Accept=no"
    )]
    NotListening {
        /// Position in `LISTEN_FDS`.
        index: usize,
        /// Its `LISTEN_FDNAMES` entry.
        name: String,
    },
    /// Another process listens on the address already: most often a Python Gradata daemon still
    /// running, or a second gradata.
    #[error(
        "cannot listen on {address}: it is in use by another process (a Python Gradata daemon, or another gradata?); stop that process, or listen elsewhere (api.listen, GRADATA_LISTEN or --listen)"
    )]
    InUse {
        /// The address.
        address: String,
        /// The bind error (`EADDRINUSE`).
        #[source]
        cause: io::Error,
    },
    /// Binding an address failed.
    #[error("cannot listen on {address}: {cause}")]
    Bind {
        /// The address.
        address: String,
        /// Why.
        cause: io::Error,
    },
    /// The address is neither `host:port` nor an absolute path.
    #[error(
        "cannot listen on {0:?}: expected host:port (an IP address) or an absolute unix socket path"
    )]
    BadAddress(String),
}

impl Error {
    /// Whether the error is in what the service was given to listen on (the socket unit, or an
    /// address), not in the system: restarting cannot fix it, so it maps to exit 78 (EX_CONFIG),
    /// which the unit's `RestartPreventExitStatus=` keeps from looping.
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::Unusable { .. } | Error::NotListening { .. } | Error::BadAddress(_) => true,
            Error::Bind { .. } | Error::InUse { .. } => false,
        }
    }
}

/// Sockets passed by systemd, taken from the environment.
pub struct Passed {
    fds: listenfd::ListenFd,
    names: Vec<String>,
}

impl std::fmt::Debug for Passed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passed")
            .field("count", &self.fds.len())
            .field("names", &self.names)
            .finish()
    }
}

impl Passed {
    /// Takes the passed sockets. Call it first thing, before any thread starts: it removes
    /// `LISTEN_FDS` and `LISTEN_PID` from the environment so children do not inherit them.
    pub fn take_from_env() -> Passed {
        let names = std::env::var("LISTEN_FDNAMES")
            .map(|names| names.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        Passed {
            fds: listenfd::ListenFd::from_env(),
            names,
        }
    }

    /// No sockets (for callers that never use socket activation).
    pub fn none() -> Passed {
        Passed {
            fds: listenfd::ListenFd::empty(),
            names: Vec::new(),
        }
    }

    /// How many sockets systemd passed.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether systemd passed none.
    pub fn is_empty(&self) -> bool {
        self.fds.len() == 0
    }

    /// Adopts every passed socket; any one that is unusable is an error.
    pub fn adopt(mut self) -> Result<Vec<Socket>, Error> {
        let mut sockets = Vec::with_capacity(self.fds.len());
        for index in 0..self.fds.len() {
            let name = self
                .names
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("fd {}", index + 3));
            // listenfd checks the family and the type, not whether the socket listens.
            match self.fds.take_tcp_listener(index) {
                Ok(Some(listener)) => {
                    check_listening(&listener, index, &name)?;
                    sockets.push(Socket::Tcp { name, listener });
                    continue;
                }
                Ok(None) => continue,
                Err(_) => {}
            }
            match self.fds.take_unix_listener(index) {
                Ok(Some(listener)) => {
                    check_listening(&listener, index, &name)?;
                    sockets.push(Socket::Unix { name, listener });
                }
                Ok(None) => {}
                Err(cause) => return Err(Error::Unusable { index, name, cause }),
            }
        }
        Ok(sockets)
    }
}

/// Refuses a passed socket that is not listening: adopted, it would be reported ready, then fail
/// every accept.
fn check_listening(socket: &impl std::os::fd::AsFd, index: usize, name: &str) -> Result<(), Error> {
    match socket2::SockRef::from(socket).is_listener() {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::NotListening {
            index,
            name: name.to_owned(),
        }),
        Err(cause) => Err(Error::Unusable {
            index,
            name: name.to_owned(),
            cause,
        }),
    }
}

/// Binds each address: `host:port` for TCP, an absolute path for a unix socket.
pub fn bind(addresses: &[String]) -> Result<Vec<Socket>, Error> {
    addresses.iter().map(|address| bind_one(address)).collect()
}

fn bind_one(address: &str) -> Result<Socket, Error> {
    let bind_error = |cause: io::Error| {
        let address = address.to_owned();
        if cause.kind() == io::ErrorKind::AddrInUse {
            Error::InUse { address, cause }
        } else {
            Error::Bind { address, cause }
        }
    };
    if address.starts_with('/') {
        let path = PathBuf::from(address);
        // A socket file left by a previous run that nobody listens on is removed; anything else
        // at that path (a live socket, a regular file) is left alone and reported.
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.file_type().is_socket()
                && std::os::unix::net::UnixStream::connect(&path).is_err()
            {
                std::fs::remove_file(&path).map_err(bind_error)?;
            }
        }
        let listener = UnixListener::bind(&path).map_err(bind_error)?;
        return Ok(Socket::Unix {
            name: address.to_owned(),
            listener,
        });
    }
    let addr: SocketAddr = address
        .parse()
        .map_err(|_| Error::BadAddress(address.to_owned()))?;
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let name = listener
        .local_addr()
        .map_or_else(|_| address.to_owned(), |a| a.to_string());
    Ok(Socket::Tcp { name, listener })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_tcp_and_unix_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock").display().to_string();
        let sockets = bind(&["127.0.0.1:0".to_owned(), path.clone()]).unwrap();
        assert!(matches!(sockets[0], Socket::Tcp { .. }));
        assert!(matches!(sockets[1], Socket::Unix { .. }));
        drop(sockets);
        // A stale socket file from a previous run is replaced.
        assert!(bind(&[path]).is_ok());
        assert!(matches!(
            bind(&["localhost:80".to_owned()]),
            Err(Error::BadAddress(_))
        ));
    }

    #[test]
    fn a_taken_port_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        let err = bind(&["127.0.0.1:0".to_owned(), address.clone()]).unwrap_err();
        assert!(matches!(err, Error::InUse { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&address), "{message}");
        assert!(message.contains("Python Gradata daemon"), "{message}");
        assert!(message.contains("api.listen"), "{message}");
    }
}
