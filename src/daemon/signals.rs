//! Signals: the first SIGTERM or SIGINT asks for an orderly stop, a second one for a hurried one
//! (no grace period, no final drain), and SIGHUP for a reload. Nothing else in the service
//! installs signal handlers; what a stop or reload does is the daemon's.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Error;

/// The signal streams, created once and kept for the life of the service.
pub(super) struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

pub(super) fn install() -> Result<Signals, Error> {
    Ok(Signals {
        terminate: signal(SignalKind::terminate()).map_err(Error::Signals)?,
        interrupt: signal(SignalKind::interrupt()).map_err(Error::Signals)?,
        hangup: signal(SignalKind::hangup()).map_err(Error::Signals)?,
    })
}

/// The tokens stop signals cancel. `serve` holds the other clones and waits on them.
pub(super) struct Stops {
    /// Cancelled by the first SIGTERM/SIGINT: stop accepting, then shut down in order.
    pub(super) stop: CancellationToken,
    /// Cancelled by a second one: skip what is left of the grace period and the final drain.
    pub(super) hurry: CancellationToken,
}

impl Stops {
    fn signalled(&self, name: &str) {
        if self.stop.is_cancelled() {
            tracing::warn!(
                signal = name,
                "second stop signal: skipping the grace period and the final drain"
            );
            self.hurry.cancel();
        } else {
            tracing::info!("{name} received, shutting down");
            self.stop.cancel();
        }
    }
}

/// Turns signals into cancelled tokens (SIGTERM, SIGINT: see [`Stops`]) or a reload request
/// (SIGHUP).
pub(super) async fn watch(mut signals: Signals, stops: Stops, reloads: mpsc::Sender<()>) {
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => stops.signalled("SIGTERM"),
            _ = signals.interrupt.recv() => stops.signalled("SIGINT"),
            _ = signals.hangup.recv() => {
                tracing::info!("SIGHUP received, reloading configuration");
                // A full channel already holds a pending reload; one is enough.
                let _ = reloads.try_send(());
            }
        }
    }
}
