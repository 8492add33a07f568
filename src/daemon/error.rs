//! Why the service could not start or had to stop, and what systemd is told of it (`ERRNO=`, and
//! whether a restart can help). The exit code is `main`'s; this only says whether the cause is
//! a configuration error.

use crate::store;
use crate::sync;
use crate::systemd::listeners;

/// Why the service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// A listener could not be adopted or bound.
    #[error(transparent)]
    Listeners(#[from] listeners::Error),
    /// A passed socket listens beyond loopback while no local token guards writes.
    #[error(
        "socket {0} listens on a non-loopback address, and api.token_file is not set: anyone on the network could write events; set a token or listen on loopback"
    )]
    Exposed(String),
    /// A bound socket could not be handed to the runtime.
    #[error("cannot use socket {name}: {cause}")]
    Socket {
        /// The socket.
        name: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The outbox could not be opened.
    #[error("cannot open the outbox")]
    Store(#[from] store::Error),
    /// The brain could not be opened.
    #[error(transparent)]
    Brain(#[from] crate::brain::Error),
    /// The HTTP client for the ingest API could not be built.
    #[error("cannot set up cloud sync")]
    Sync(#[from] sync::ClientError),
    /// The HTTP server stopped on its own.
    #[error("the HTTP server failed: {0}")]
    Server(String),
    /// A blocking step of startup did not finish: it panicked (a bug).
    #[error("{0} did not finish")]
    Blocking(&'static str, #[source] tokio::task::JoinError),
    /// A background task ended unexpectedly.
    #[error("the {0} stopped unexpectedly")]
    Task(&'static str),
    /// An fsync of the outbox failed, or its writer died, so no write can be acknowledged until it
    /// is opened again.
    #[error("{0}; stopping, so that the service starts again on what the disk holds")]
    OutboxFailed(String),
}

impl Error {
    /// Whether the cause is configuration that a restart cannot fix (exit 78): a passed socket the
    /// service cannot use, or an address that is not one.
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::Listeners(err) => err.is_configuration(),
            Error::Exposed(_) => true,
            _ => false,
        }
    }

    /// The `ERRNO=` sent to systemd before exiting.
    pub(super) fn errno(&self) -> u32 {
        let raw = match self {
            // As for any configuration error (`cli` sends the same): the unit is wrong, not the
            // system.
            err if err.is_configuration() => Some(libc::EINVAL),
            Error::Listeners(
                listeners::Error::Bind { cause, .. } | listeners::Error::InUse { cause, .. },
            ) => cause.raw_os_error(),
            Error::Socket { cause, .. } | Error::Signals(cause) => cause.raw_os_error(),
            Error::Store(store::Error::Locked(_) | store::Error::BrainLocked(_)) => {
                Some(libc::EAGAIN)
            }
            Error::Store(store::Error::Io(_, cause)) => cause.raw_os_error().or_else(|| {
                (cause.kind() == std::io::ErrorKind::NotADirectory).then_some(libc::ENOTDIR)
            }),
            _ => None,
        };
        raw.and_then(|errno| u32::try_from(errno).ok())
            .unwrap_or(libc::EIO.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A passed socket the service cannot use, or one exposed without a token, is the unit's
    /// mistake (exit 78, `ERRNO=EINVAL`); an address already taken is not.
    #[test]
    fn socket_unit_mistakes_are_configuration_errors() {
        let exposed = Error::Exposed("http (0.0.0.0:8765)".to_owned());
        assert!(exposed.is_configuration());
        assert_eq!(exposed.errno(), libc::EINVAL.unsigned_abs());
        let not_listening = Error::Listeners(listeners::Error::NotListening {
            index: 0,
            name: "http".to_owned(),
        });
        assert!(not_listening.is_configuration());
        let taken = Error::Listeners(listeners::Error::InUse {
            address: "127.0.0.1:8765".to_owned(),
            cause: std::io::Error::from_raw_os_error(libc::EADDRINUSE),
        });
        assert!(!taken.is_configuration());
        assert_eq!(taken.errno(), libc::EADDRINUSE.unsigned_abs());
    }
}
