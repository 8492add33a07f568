//! gradata: a systemd-native service that captures Gradata events from local agents over HTTP,
//! commits each one durably to an SQLite outbox, and forwards it at-least-once to the Gradata cloud
//! ingest API.
//!
//! # Layout
//!
//! - [`clock`]: the wall-clock times that are stored (a leaf; in-process waits use `Instant`).
//! - [`config`]: one validated `Config` from defaults, file, environment and flags; the API key.
//! - [`store`]: the outbox. Schema and migrations, group-commit enqueue, claim under lease,
//!   settle, stats, retention. Knows nothing of HTTP.
//! - [`sync`]: the ingest client, the response classification, the retry policy, the drain engine
//!   shared by every caller, and the background worker. Depends on `store` only.
//! - [`api`]: the local HTTP API: routes, handlers, `serve` on given listeners.
//! - [`systemd`]: thin wrappers: notifications, socket activation, the journal. A leaf.
//! - [`daemon`]: the one place that orders startup and shutdown of `gradata serve`.
//! - [`metrics`]: the Prometheus registry every part records into.
//! - [`logging`]: where log records go (the journal, or stderr text or JSON).
//! - [`cli`]: the subcommands; `main.rs` only parses and maps errors to exit codes.
//!
//! Dependencies point one way: `api → store`, `sync → store`, `daemon → everything`, `cli →
//! everything`; `store` and `systemd` depend on nothing of ours but the leaf `clock`.

pub mod api;
pub mod brain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod store;
pub mod sync;
pub mod systemd;
