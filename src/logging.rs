//! Where log records go: the journal under systemd, otherwise text lines or JSON objects on stderr.
//!
//! Records are structured (`tracing` fields) everywhere, so the same call site produces a readable
//! line on a terminal, separate keys in JSON and separate journal fields (`DELIVERED=`…). The
//! filter can be replaced while running ([`set_filter`], on a reload); the format cannot.
//!
//! A panic (a bug) is a record too, at error level with its thread and place: the standard hook's
//! plain line on stderr would reach the journal at the priority of ordinary output, where
//! `journalctl -p err` does not show it.
//!
//! What is logged, and when, is each module's; this one only routes records and prints an error's
//! chain ([`Causes`]).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The handle that swaps the filter of the installed subscriber (a reload's `log.filter`). Set
/// once, by the [`init`] that installed the subscriber; never set if another subscriber was
/// installed first (tests).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Why a new log filter was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The filter does not parse, or is empty.
    #[error("invalid log filter {filter:?}: {reason}")]
    Invalid {
        /// The filter as configured.
        filter: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No subscriber of ours is installed, or it is gone.
    #[error("the log filter cannot be changed: {0}")]
    NotInstalled(String),
}

use crate::config::LogFormat;
use crate::systemd::journal;

/// Where records ended up going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The native journal protocol.
    Journal,
    /// Text on stderr.
    Text,
    /// JSON on stderr.
    Json,
}

/// Installs the global subscriber. `Auto` means the journal when systemd runs us with one, text
/// otherwise; `Journal` falls back to text (with a warning) when no journal answers. An invalid
/// or empty filter falls back to `info` with a warning rather than silencing the logs.
pub fn init(format: LogFormat, filter: &str) -> Sink {
    let (env_filter, bad_filter) = match parse_filter(filter) {
        Ok(parsed) => (parsed, None),
        Err(err) => (EnvFilter::new("info"), Some(err)),
    };
    let wants_journal = match format {
        LogFormat::Auto => journal::running_under_journal(),
        LogFormat::Journal => true,
        LogFormat::Text | LogFormat::Json => false,
    };
    let (journal_layer, journal_error) = if wants_journal {
        match journal::layer() {
            Ok(layer) => (Some(layer), None),
            Err(err) => (None, Some(err)),
        }
    } else {
        (None, None)
    };
    let sink = match (&journal_layer, format) {
        (Some(_), _) => Sink::Journal,
        (None, LogFormat::Json) => Sink::Json,
        (None, _) => Sink::Text,
    };
    let text = (sink == Sink::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            // Colours for a person at a terminal; a file or a pipe gets plain text.
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
    });
    let json = (sink == Sink::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    let (env_filter, filter_handle) = reload::Layer::new(env_filter);
    let installed = tracing_subscriber::registry()
        .with(env_filter)
        .with(journal_layer)
        .with(text)
        .with(json)
        .try_init();
    if installed.is_ok() {
        // Only the first `init` of a process installs a subscriber, so the cell is empty here.
        let _ = FILTER.set(filter_handle);
        std::panic::set_hook(Box::new(log_panic));
        if let Some(err) = bad_filter {
            tracing::warn!("invalid log filter {filter:?} ({err}); using \"info\"");
        }
        if let (Some(err), LogFormat::Journal) = (journal_error, format) {
            tracing::warn!("the journal is not reachable ({err}); logging to stderr");
        }
    }
    sink
}

/// The panic hook once the subscriber is installed: one error record, with the panic's message,
/// thread and place, and its backtrace when `RUST_BACKTRACE` asks for one.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let location = info
        .location()
        .map(|at| format!("{}:{}:{}", at.file(), at.line(), at.column()))
        .unwrap_or_default();
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("unnamed");
    let backtrace = std::backtrace::Backtrace::capture();
    if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
        tracing::error!(thread, location, backtrace = %backtrace, "panicked (a bug): {message}");
    } else {
        tracing::error!(thread, location, "panicked (a bug): {message}");
    }
}

/// Replaces the filter of the installed subscriber (SIGHUP with a changed `log.filter`). An
/// invalid or empty filter changes nothing.
pub fn set_filter(filter: &str) -> Result<(), FilterError> {
    let parsed = parse_filter(filter).map_err(|reason| FilterError::Invalid {
        filter: filter.to_owned(),
        reason,
    })?;
    let handle = FILTER
        .get()
        .ok_or_else(|| FilterError::NotInstalled("no subscriber installed".to_owned()))?;
    handle
        .reload(parsed)
        .map_err(|err| FilterError::NotInstalled(err.to_string()))
}

/// Parses a filter. An empty one is refused like an invalid one: `EnvFilter` would read it as "no
/// directives", which lets only errors through and so hides even the startup drain record.
fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    if filter.trim().is_empty() {
        return Err("it is empty".to_owned());
    }
    EnvFilter::try_new(filter).map_err(|err| err.to_string())
}

/// An error and its causes as `error: cause: cause`, each said once: how an error is shown to a
/// person (the CLI's last line, the service's `STATUS=`, a log record's `error` field).
pub struct Causes<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(err) = cause {
            write!(f, ": {err}")?;
            cause = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_filter_is_refused_like_an_invalid_one() {
        for (filter, accepted) in [
            ("info", true),
            ("info,gradata=debug", true),
            ("", false),
            ("  ", false),
            ("info,gradata=nonsense[", false),
        ] {
            assert_eq!(parse_filter(filter).is_ok(), accepted, "{filter:?}");
        }
    }

    /// Set in the copy of this test binary that [`a_panic_is_one_error_record_with_its_thread_and_place`]
    /// runs, where the panic happens: a hook is global to its process.
    const PANIC_CHILD: &str = "GRADATA_TEST_PANIC_CHILD";

    #[test]
    fn a_panic_is_one_error_record_with_its_thread_and_place() {
        if std::env::var_os(PANIC_CHILD).is_some() {
            init(LogFormat::Json, "info");
            let doomed = std::thread::Builder::new()
                .name("doomed".to_owned())
                .spawn(|| panic!("on purpose, {}", 42))
                .unwrap();
            assert!(doomed.join().is_err());
            return;
        }
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "logging::tests::a_panic_is_one_error_record_with_its_thread_and_place",
                "--nocapture",
            ])
            .env(PANIC_CHILD, "1")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{output:?}");
        let records: Vec<serde_json::Value> = stderr
            .lines()
            .filter(|line| line.contains("panicked"))
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        let [record] = records.as_slice() else {
            panic!("not one panic record: {stderr}");
        };
        assert_eq!(record["level"], "ERROR", "{record}");
        assert_eq!(
            record["message"], "panicked (a bug): on purpose, 42",
            "{record}"
        );
        assert_eq!(record["thread"], "doomed", "{record}");
        assert!(
            record["location"]
                .as_str()
                .is_some_and(|at| at.starts_with("src/logging.rs:")),
            "{record}"
        );
    }
}
