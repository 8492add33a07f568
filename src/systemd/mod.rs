//! Thin wrappers over what systemd hands a service: readiness and status notifications
//! ([`notify`]), sockets passed by socket activation ([`listeners`]) and the journal
//! ([`journal`]).
//!
//! Invariant: a leaf. It depends on nothing else in the crate, and outside systemd every part of it
//! is a silent no-op (no `NOTIFY_SOCKET`: notifications go nowhere; no `LISTEN_FDS`: no sockets; no
//! journal: logging falls back to stderr).

pub mod journal;
pub mod listeners;
pub mod notify;
