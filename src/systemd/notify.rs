//! `sd_notify(3)` messages: `READY=1`, `STATUS=`, `EXTEND_TIMEOUT_USEC=`, `WATCHDOG=1`,
//! `RELOADING=1`, `STOPPING=1`, `ERRNO=`. Sending is best effort: a lost notification must never
//! take the service down, so failures are logged at debug level and otherwise ignored.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends notifications to the service manager, when there is one.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifier;

impl Notifier {
    /// A notifier for the socket in `NOTIFY_SOCKET` (read at each send; absent means no-op).
    pub fn new() -> Notifier {
        Notifier
    }

    /// `STATUS=`: the one-line status `systemctl status` shows.
    pub fn status(&self, text: &str) {
        send(&[NotifyState::Status(text)]);
    }

    /// `EXTEND_TIMEOUT_USEC=`: asks for at least `by` more before the start (or stop) timeout.
    pub fn extend_timeout(&self, by: Duration) {
        let micros = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        send(&[NotifyState::ExtendTimeoutUsec(micros)]);
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// `RELOADING=1` (with `MONOTONIC_USEC=`, which `Type=notify-reload` requires).
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => send(&[
                NotifyState::Reloading,
                now,
                NotifyState::Status("reloading configuration"),
            ]),
            Err(_) => send(&[
                NotifyState::Reloading,
                NotifyState::Status("reloading configuration"),
            ]),
        }
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }

    /// `ERRNO=` and `STATUS=` before a fatal exit, so `systemctl status` says why.
    pub fn fatal(&self, errno: u32, status: &str) {
        send(&[NotifyState::Errno(errno), NotifyState::Status(status)]);
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this PID), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero())
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "could not notify the service manager");
    }
}
