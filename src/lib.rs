//! gradata: a systemd-native service that captures Gradata events from local agents over HTTP,
//! commits each one durably to an SQLite outbox, and forwards it at-least-once to the Gradata cloud
//! ingest API.
//!
//! # Layout
//!
//! - [`config`]: one validated `Config` from defaults, file, environment and flags; the API key.
//! - [`store`]: the outbox. Schema and migrations, group-commit enqueue, claim under lease,
//!   settle, stats, retention. Knows nothing of HTTP.
//! - [`sync`]: the ingest client, the response classification, the retry policy, the drain engine
//!   shared by every caller, and the background worker. Depends on `store` only.
//! - [`logging`]: where log records go (stderr text or JSON).
//! - [`cli`]: the subcommands; `main.rs` only parses and maps errors to exit codes.
//!
//! Dependencies point one way: `sync → store`, `cli → everything`; `store` depends on nothing of
//! ours but plain types.

pub mod cli;
pub mod config;
pub mod logging;
pub mod store;
pub mod sync;
