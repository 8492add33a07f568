//! Where log records go. Text lines or JSON objects on stderr; the journald sink joins in
//! `systemd::journal` for the service.
//!
//! Records are structured (`tracing` fields) everywhere, so the same call site produces a readable
//! line on a terminal and separate fields in JSON or the journal.

use tracing_subscriber::EnvFilter;

/// Output format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber. `filter` uses `EnvFilter` syntax (`info`, `gradata=debug`…); an
/// invalid filter falls back to `info` with a warning, rather than silencing the logs.
pub fn init_stderr(filter: &str, format: StderrFormat) {
    let (env_filter, bad_filter) = match EnvFilter::try_new(filter) {
        Ok(parsed) => (parsed, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        StderrFormat::Text => builder.with_target(false).try_init(),
        StderrFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_ok() {
        if let Some(err) = bad_filter {
            tracing::warn!("invalid log filter {filter:?} ({err}); using \"info\"");
        }
    }
}
