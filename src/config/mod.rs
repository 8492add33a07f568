//! One validated [`Config`], built from defaults < config file < `GRADATA_*` environment < flags
//! (DESIGN §6), plus the data directory and API key resolution.
//!
//! Loading has two stages. First each layer is turned into a TOML table and checked on its own, so
//! an error names exactly where the bad value came from (the file, the variable, the flag). Then
//! the merged table is deserialized once into `RawConfig` (every field with its default, unknown
//! keys rejected) and validated into [`Config`], whose fields have concrete types and whose
//! errors name the key and its source.
//!
//! This file orders the loading and holds the types callers see. Beside it: `options` (every
//! option declared once; the file's shape `RawConfig`, the checked groups, the restart keys and
//! the example config are generated from it), `layers` (the parsing of each layer, old key names
//! read as the new ones), `validate` (the checks, and those across options) and `credentials`
//! (the data directory and the API key when the configuration does not name them).
//!
//! Adding an option touches three places: (1) its declaration in `options` (key, default, docs,
//! environment variable, the type it is used as and the check that gives it, `live` or
//! `restart`), then `gradata generate config > packaging/gradata.toml`; (2) where it is used,
//! through its field in [`Config`] (an option of the sync engine or of a drain budget is passed
//! into [`sync::Settings`] or [`Budget`] in `validate`, which is how that module uses it); (3) its
//! test. Tests keep the shipped example equal to the generated one, every option documented
//! there, and the docs naming only declared options.
//!
//! Invariants: no I/O beyond reading the config file and the credential files; the API key is
//! never printed (it lives in [`crate::sync::ApiKey`], whose `Debug` redacts it).

mod compat;
mod credentials;
mod layers;
mod options;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::store;
use crate::sync::{self, Budget};
use layers::{insert, parse_bool, parse_env, parse_file, record_sources};
pub(crate) use options::changes_needing_restart;
pub(crate) use options::example as example_config;
use options::{ALIASES, OPTIONS, RawConfig};
pub use options::{ApiConfig, LogConfig, StoreConfig};
use validate::Validator;

/// The config file read when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/gradata/gradata.toml";
/// The API key file read when no other source has a key.
pub const DEFAULT_API_KEY_FILE: &str = "/etc/gradata/api-key";
/// Name of the key inside `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=api-key:…`).
pub const CREDENTIAL_NAME: &str = "api-key";
/// The address the Gradata plugin calls by default (its `GRADATA_DAEMON_HOST` and
/// `GRADATA_DAEMON_PORT` unset).
pub const PLUGIN_LISTEN: &str = "127.0.0.1:7342";
/// The address the Python daemon's installer, container image and dashboard use.
pub const DASHBOARD_LISTEN: &str = "127.0.0.1:8765";
/// Default listen addresses: both, so that the plugin and the dashboard reach the service with no
/// configuration (DESIGN §2).
pub const DEFAULT_LISTEN: [&str; 2] = [PLUGIN_LISTEN, DASHBOARD_LISTEN];
/// Default age after which synced rows are deleted.
pub const DEFAULT_SYNCED_RETENTION_DAYS: f64 = 7.0;
/// Default time requests in flight get to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: f64 = 10.0;
/// Default largest request body, in bytes (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Default memory request bodies may take at once: 64 bodies of the default largest size.
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: u64 = 64 * DEFAULT_MAX_BODY_BYTES;
/// Default most events in one `POST /v1/events`.
pub const DEFAULT_MAX_EVENTS_PER_REQUEST: u64 = 1000;
/// Default time a client has to send its request body.
pub const DEFAULT_BODY_TIMEOUT_SECS: f64 = 10.0;
/// Default time a connection has to send a request's headers, from when it opens or its last
/// response was sent.
pub const DEFAULT_HEADER_TIMEOUT_SECS: f64 = 60.0;
/// Default age of the oldest pending row past which `/health` says `degraded` (one hour).
pub const DEFAULT_DEGRADED_AFTER_SECS: f64 = 3600.0;
/// Default most pending rows before writes get 503 (one million).
pub const DEFAULT_MAX_PENDING_ROWS: u64 = 1_000_000;
/// Default most pending rows while no API key is configured (local use, common with the plugin).
/// Nothing leaves the outbox then, so without a bound of its own it would grow for good. Ten
/// thousand rows is days of a busy plugin (a few events per tool call) kept for a key added later,
/// and about ten megabytes of disk at the plugin's event sizes.
pub const DEFAULT_MAX_PENDING_ROWS_WITHOUT_KEY: u64 = 10_000;
/// Default most pending payload bytes before writes get 503 (1 GiB).
pub const DEFAULT_MAX_PENDING_BYTES: u64 = 1024 * 1024 * 1024;
/// Default time budget of the final drain at shutdown.
pub const DEFAULT_SHUTDOWN_DRAIN_SECS: f64 = 5.0;

/// The environment a configuration is loaded from: a snapshot, so tests can supply their own.
pub type Environment = BTreeMap<String, String>;

/// Reads the variables the configuration looks at from the process environment.
///
/// Invariant: wherever the configuration reads a variable, an empty value means the same as an
/// unset one (`GRADATA_CONFIG=` being "no config file" is the one documented meaning of its own).
/// A drop-in's `Environment=GRADATA_X=` is the usual way to reset a variable, and an empty value
/// silently meaning "the current directory", "sync off" or "log nothing" helps nobody.
pub fn process_environment() -> Environment {
    std::env::vars()
        .filter(|(name, _)| {
            name.starts_with("GRADATA_")
                || matches!(
                    name.as_str(),
                    "STATE_DIRECTORY"
                        | "XDG_STATE_HOME"
                        | "HOME"
                        | "CREDENTIALS_DIRECTORY"
                        | "XDG_RUNTIME_DIR"
                        | "RUST_LOG"
                )
        })
        .collect()
}

/// The config file to read, and whether it must exist: `--config`, else `GRADATA_CONFIG` (empty:
/// no file at all, which the per-user unit uses so that a host's system config never applies to
/// a user's instance), else the default file if it exists.
fn config_file(flags: &Flags, env: &Environment) -> Option<(PathBuf, bool)> {
    match (&flags.config, env.get("GRADATA_CONFIG")) {
        (Some(path), _) => Some((path.clone(), true)),
        (None, Some(path)) if path.is_empty() => None,
        (None, Some(path)) => Some((PathBuf::from(path), true)),
        (None, None) => Some((PathBuf::from(DEFAULT_CONFIG_FILE), false)),
    }
}

/// Values given on the command line (already parsed by clap). `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--data-dir` / `--brain-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--api-key-file`.
    pub api_key_file: Option<PathBuf>,
    /// `--ingest-url`.
    pub ingest_url: Option<String>,
    /// `--listen`, repeatable.
    pub listen: Vec<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--pid-file` of `serve` and `daemon`.
    pub pid_file: Option<PathBuf>,
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A config file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("the default"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Env(name) => write!(f, "environment variable {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// A configuration that cannot be used. Maps to exit code 78 (EX_CONFIG).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value is of the wrong type or out of range.
    #[error("{origin}: {key}: {message}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// Where the value came from.
        origin: Source,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The config file is not valid TOML or has an unknown key.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The parser's message on one line, key first (`sync.batch_size: invalid type: …`), or
        /// the line and column of a syntax error.
        message: String,
    },
    /// A file named by the configuration cannot be read.
    #[error("{}: {err}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        err: std::io::Error,
    },
    /// No data directory was given and none can be derived.
    #[error(
        "no data directory: set --data-dir or GRADATA_DATA_DIR (or STATE_DIRECTORY, XDG_STATE_HOME, HOME)"
    )]
    NoDataDir,
}

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Journal when running under systemd, text otherwise.
    Auto,
    /// Native journald protocol.
    Journal,
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
}

/// The validated configuration, grouped as the config file groups its keys.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Where the outbox lives.
    pub data_dir: PathBuf,
    /// Where the service writes its pid file once ready: `--pid-file`, else
    /// `<data_dir>/daemon.pid`, where the Python daemon's tools look.
    pub pid_file: PathBuf,
    /// `log.*`.
    pub log: LogConfig,
    /// `api.*`.
    pub api: ApiConfig,
    /// `store.*`.
    pub store: StoreConfig,
    /// `sync.*`.
    pub sync: SyncConfig,
    /// `drain.*`.
    pub drain: DrainConfig,
}

/// `sync.*`: forwarding to the cloud.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// What the sync engine is built from, API key included.
    pub engine: sync::Settings,
    /// The `brain_id` put in every payload; `None` means derive it from the data directory.
    pub brain_id: Option<String>,
    /// Most pending rows while no API key is configured (the lower of this and
    /// `store.max_pending_rows` applies then; see [`Config::pending_row_limit`]).
    pub max_pending_rows_without_key: u64,
}

/// `drain.*`: the bounds of every explicit drain (at startup, `POST /sync`, `gradata drain`, and
/// at shutdown), as opposed to the sync worker's continuous sending, which has none.
#[derive(Debug, Clone)]
pub struct DrainConfig {
    /// Budget of the drain at startup, of `POST /sync` and of `gradata drain`.
    pub budget: Budget,
    /// Budget of the drain at shutdown: the same rows, its own time.
    pub shutdown: Budget,
}

impl Config {
    /// Loads the configuration from the flags and an environment snapshot.
    pub fn load(flags: &Flags, env: &Environment) -> Result<Config, Error> {
        let mut sources: BTreeMap<String, Source> = BTreeMap::new();
        let mut merged = toml::Table::new();

        let config_file = config_file(flags, env);
        let mut file_read = None;
        if let Some((path, required)) = config_file {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let table = parse_file(&path, &text)?;
                    record_sources(&table, "", &Source::File(path.clone()), &mut sources);
                    merged = table;
                    file_read = Some(path);
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(err) => return Err(Error::Io { path, err }),
            }
        }

        for option in OPTIONS {
            // An option's old variable counts only when its own is unset.
            let old_names = ALIASES
                .iter()
                .filter(|alias| alias.key == option.key)
                .map(|alias| alias.old_env);
            let given = std::iter::once(option.env)
                .chain(old_names)
                .find_map(|name| Some((name, non_empty(env, name)?)));
            if let Some((name, value)) = given {
                let parsed = parse_env(option, name, value)?;
                insert(&mut merged, option.key, parsed);
                sources.insert(option.key.to_owned(), Source::Env(name));
            }
        }
        if let Some(value) = non_empty(env, "GRADATA_CLOUD_SYNC_DISABLE") {
            let disable = parse_bool(value).ok_or_else(|| Error::Invalid {
                key: "sync.enabled".to_owned(),
                origin: Source::Env("GRADATA_CLOUD_SYNC_DISABLE"),
                message: format!("expected 1/0, true/false, yes/no or on/off, got {value:?}"),
            })?;
            if disable {
                insert(&mut merged, "sync.enabled", toml::Value::Boolean(false));
                sources.insert(
                    "sync.enabled".to_owned(),
                    Source::Env("GRADATA_CLOUD_SYNC_DISABLE"),
                );
            }
        }
        compat::apply(env, &mut merged, &mut sources)?;
        if non_empty(env, "GRADATA_LOG").is_none() {
            if let Some(filter) = non_empty(env, "RUST_LOG") {
                insert(
                    &mut merged,
                    "log.filter",
                    toml::Value::String(filter.clone()),
                );
                sources.insert("log.filter".to_owned(), Source::Env("RUST_LOG"));
            }
        }

        let flag_values: [(&str, &'static str, Option<toml::Value>); 4] = [
            (
                "data_dir",
                "--data-dir",
                flags
                    .data_dir
                    .as_ref()
                    .map(|p| toml::Value::String(p.display().to_string())),
            ),
            (
                "sync.ingest_url",
                "--ingest-url",
                flags.ingest_url.clone().map(toml::Value::String),
            ),
            (
                "log.format",
                "--log-format",
                flags.log_format.clone().map(toml::Value::String),
            ),
            (
                "api.listen",
                "--listen",
                (!flags.listen.is_empty()).then(|| {
                    toml::Value::Array(
                        flags
                            .listen
                            .iter()
                            .cloned()
                            .map(toml::Value::String)
                            .collect(),
                    )
                }),
            ),
        ];
        for (key, flag, value) in flag_values {
            if let Some(value) = value {
                insert(&mut merged, key, value);
                sources.insert(key.to_owned(), Source::Flag(flag));
            }
        }

        // Each layer was checked alone, so this fails only on a combination of layers; the
        // message names the key.
        let raw: RawConfig = RawConfig::deserialize(merged).map_err(|err| Error::Invalid {
            key: "(merged)".to_owned(),
            origin: Source::Default,
            message: layers::one_line(&err, None),
        })?;
        Validator {
            sources: &sources,
            flags,
            env,
        }
        .build(raw, file_read)
    }

    /// The most pending rows the outbox may hold: `max_pending_rows`, or while no API key is
    /// configured the lower `max_pending_rows_without_key`, since nothing leaves the outbox then.
    pub fn pending_row_limit(&self) -> u64 {
        let max = self.store.max_pending_rows;
        if self.sync.engine.api_key.is_none() {
            max.min(self.sync.max_pending_rows_without_key)
        } else {
            max
        }
    }

    /// Store options for the service: create what is missing, single instance.
    pub fn store_options(&self) -> store::Options {
        store::Options {
            data_dir: self.data_dir.clone(),
            synchronous: self.store.synchronous,
            busy_timeout: self.store.busy_timeout,
            create: store::Create::IfMissing,
            instance_lock: store::InstanceLock::Exclusive,
        }
    }
}

/// The `GRADATA_*` variables read outside the options' table: the config file, the key sources,
/// the kill switch, and the variables of the Python daemon and the plugin that gradata honours
/// (`compat`). The man page documents each.
pub const OTHER_VARIABLES: [&str; 9] = [
    "GRADATA_CONFIG",
    "GRADATA_API_KEY",
    "GRADATA_API_KEY_FILE",
    "GRADATA_CLOUD_SYNC_DISABLE",
    "GRADATA_DAEMON_HOST",
    "GRADATA_DAEMON_PORT",
    "GRADATA_BRAIN_DIR",
    "GRADATA_DISABLE_WRITE_THROUGH",
    "GRADATA_HOME",
];
pub use compat::IGNORED_VARIABLES;
/// The pid file's name in the data directory when `--pid-file` is not given.
pub const PID_FILE_NAME: &str = "daemon.pid";
/// Variables under this prefix are test hooks, read where they act, never documented for users.
const TEST_HOOK_PREFIX: &str = "GRADATA_TEST_";

/// A `GRADATA_*` variable that no option reads, and the known one it most resembles, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVariable {
    /// The variable as set.
    pub name: String,
    /// The known variable it is probably a misspelling of.
    pub suggestion: Option<&'static str>,
}

/// Every `GRADATA_*` variable in `env` that nothing reads, including an option's old variable
/// when its new one is set as well (the new one wins). These are warned about, not refused:
/// a variable is inherited by every process below the shell that set it, so refusing one would
/// stop a command from running because of a stranger's environment, while the config file,
/// which is written for gradata alone, refuses unknown keys.
pub fn unknown_variables(env: &Environment) -> Vec<UnknownVariable> {
    // Only variables gradata acts on are suggested; those it accepts and ignores are not unknown.
    let honoured = || {
        OPTIONS
            .iter()
            .map(|option| option.env)
            .chain(OTHER_VARIABLES)
    };
    let ignored = |name: &str| {
        IGNORED_VARIABLES
            .iter()
            .any(|(ignored, _)| *ignored == name)
    };
    // An option's old variable is read unless its new one is set too, and then it is the one
    // ignored, and named as such.
    let superseded = |name: &str| {
        ALIASES
            .iter()
            .find(|alias| alias.old_env == name)
            .and_then(|alias| {
                let option = OPTIONS.iter().find(|option| option.key == alias.key)?;
                non_empty(env, option.env).map(|_| option.env)
            })
    };
    let old_name = |name: &str| ALIASES.iter().any(|alias| alias.old_env == name);
    env.keys()
        .filter(|name| name.starts_with("GRADATA_") && !name.starts_with(TEST_HOOK_PREFIX))
        .filter_map(|name| match superseded(name) {
            Some(new) => Some(UnknownVariable {
                name: name.clone(),
                suggestion: Some(new),
            }),
            None if honoured().any(|known| known == name.as_str())
                || ignored(name)
                || old_name(name) =>
            {
                None
            }
            None => Some(UnknownVariable {
                name: name.clone(),
                suggestion: closest(name, honoured()),
            }),
        })
        .collect()
}

/// The known name most like `name`: one whose part after `GRADATA_` contains `name`'s or is
/// contained in it (`GRADATA_INGEST_URL`, `GRADATA_CLOUD_INGEST_URL`), else one a few edits away
/// (`GRADATA_DATADIR`, `GRADATA_DATA_DIR`).
fn closest(name: &str, known: impl Iterator<Item = &'static str>) -> Option<&'static str> {
    let suffix = |name: &str| name.trim_start_matches("GRADATA_").to_owned();
    let wanted = suffix(name);
    known
        .map(|candidate| {
            let theirs = suffix(candidate);
            let contained = theirs.contains(&wanted) || wanted.contains(&theirs);
            let similarity = strsim::normalized_damerau_levenshtein(&wanted, &theirs);
            (candidate, contained, similarity)
        })
        .filter(|(_, contained, similarity)| *contained || *similarity >= 0.7)
        .max_by(|a, b| {
            (a.1, a.2)
                .partial_cmp(&(b.1, b.2))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|(candidate, _, _)| candidate)
}

/// The value of `name`, unless it is unset or blank (see [`process_environment`]).
fn non_empty<'a>(env: &'a Environment, name: &str) -> Option<&'a String> {
    env.get(name).filter(|value| !value.trim().is_empty())
}

/// The old variable of each renamed option, with its new one (the man page lists both).
pub fn renamed_variables() -> impl Iterator<Item = (&'static str, &'static str)> {
    ALIASES.iter().filter_map(|alias| {
        let option = OPTIONS.iter().find(|option| option.key == alias.key)?;
        Some((alias.old_env, option.env))
    })
}

/// The dotted keys of every option, in declaration order (used by tests and docs checks).
pub fn option_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    OPTIONS.iter().map(|option| (option.key, option.env))
}

#[cfg(test)]
mod tests;
