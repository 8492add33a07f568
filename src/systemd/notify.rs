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
        send(&[NotifyState::Status(&one_line(text))]);
    }

    /// `EXTEND_TIMEOUT_USEC=`: asks for at least `by` more before the start (or stop) timeout.
    pub fn extend_timeout(&self, by: Duration) {
        let micros = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        send(&[NotifyState::ExtendTimeoutUsec(micros)]);
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
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
        send(&[
            NotifyState::Stopping,
            NotifyState::Status(&one_line(status)),
        ]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }

    /// `ERRNO=` and `STATUS=` before a fatal exit, so `systemctl status` says why.
    pub fn fatal(&self, errno: u32, status: &str) {
        send(&[
            NotifyState::Errno(errno),
            NotifyState::Status(&one_line(status)),
        ]);
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this PID), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|interval| !interval.is_zero())
}

/// `text` on one line: systemd splits a notification at newlines, so a second line of a status
/// would be read as an assignment of its own and dropped, and `systemctl status` would show only
/// the first. Callers write one line already; this keeps a stray newline from costing the rest.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!(error = %err, "could not notify the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_one_line() {
        assert_eq!(one_line("serving; 3 pending"), "serving; 3 pending");
        assert_eq!(
            one_line("a.toml: bad\nin `sync`\n"),
            "a.toml: bad; in `sync`"
        );
    }
}
