//! One validated [`Config`], built from defaults < config file < `GRADATA_*` environment < flags
//! (DESIGN §6), plus the data directory and API key resolution.
//!
//! Loading has two stages. First each layer is turned into a TOML table and checked on its own, so
//! an error names exactly where the bad value came from (the file, the variable, the flag). Then
//! the merged table is deserialized once into `RawConfig` (every field with its default, unknown
//! keys rejected) and validated into [`Config`], whose fields have concrete types and whose
//! errors name the key and its source.
//!
//! Every option is declared once in `OPTIONS`: its key, its environment variable and its type.
//! The example config shipped in the packages is checked against it by a test.
//!
//! Invariants: no I/O beyond reading the config file and the credential files; the API key is
//! never printed (it lives in [`ApiKey`], whose `Debug` redacts it).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::store;
use crate::sync::{self, ApiKey, Budget};

/// The config file read when none is named.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/gradata/gradata.toml";
/// The API key file read when no other source has a key.
pub const DEFAULT_API_KEY_FILE: &str = "/etc/gradata/api-key";
/// Name of the key inside `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=api-key:…`).
pub const CREDENTIAL_NAME: &str = "api-key";
/// Default listen address (DESIGN §2).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8765";
/// Default age after which synced rows are deleted.
pub const DEFAULT_SYNCED_RETENTION_DAYS: f64 = 7.0;
/// Default time requests in flight get to finish at shutdown.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: f64 = 10.0;
/// Default largest request body, in bytes (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
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
/// Default most pending payload bytes before writes get 503 (1 GiB).
pub const DEFAULT_MAX_PENDING_BYTES: u64 = 1024 * 1024 * 1024;
/// Default time budget of the final drain at shutdown.
pub const DEFAULT_SHUTDOWN_DRAIN_SECS: f64 = 5.0;

/// The environment a configuration is loaded from: a snapshot, so tests can supply their own.
pub type Environment = BTreeMap<String, String>;

/// Reads the variables the configuration looks at from the process environment.
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
                        | "RUST_LOG"
                )
        })
        .collect()
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
}

/// The type of an option, for parsing environment values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueType {
    Str,
    Int,
    Float,
    Bool,
    List,
}

/// One option: its dotted key, its environment variable, its type.
struct OptionDecl {
    key: &'static str,
    env: &'static str,
    value_type: ValueType,
}

/// Every option of the config file, with its environment variable (DESIGN §6).
const OPTIONS: &[OptionDecl] = &[
    OptionDecl {
        key: "data_dir",
        env: "GRADATA_DATA_DIR",
        value_type: ValueType::Str,
    },
    OptionDecl {
        key: "log.format",
        env: "GRADATA_LOG_FORMAT",
        value_type: ValueType::Str,
    },
    OptionDecl {
        key: "log.filter",
        env: "GRADATA_LOG",
        value_type: ValueType::Str,
    },
    OptionDecl {
        key: "api.listen",
        env: "GRADATA_LISTEN",
        value_type: ValueType::List,
    },
    OptionDecl {
        key: "api.shutdown_grace_secs",
        env: "GRADATA_API_SHUTDOWN_GRACE_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "api.allowed_hosts",
        env: "GRADATA_API_ALLOWED_HOSTS",
        value_type: ValueType::List,
    },
    OptionDecl {
        key: "api.cors_origins",
        env: "GRADATA_API_CORS_ORIGINS",
        value_type: ValueType::List,
    },
    OptionDecl {
        key: "api.token_file",
        env: "GRADATA_API_TOKEN_FILE",
        value_type: ValueType::Str,
    },
    OptionDecl {
        key: "api.max_body_bytes",
        env: "GRADATA_API_MAX_BODY_BYTES",
        value_type: ValueType::Int,
    },
    OptionDecl {
        key: "api.max_events_per_request",
        env: "GRADATA_API_MAX_EVENTS_PER_REQUEST",
        value_type: ValueType::Int,
    },
    OptionDecl {
        key: "api.body_timeout_secs",
        env: "GRADATA_API_BODY_TIMEOUT_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "api.header_timeout_secs",
        env: "GRADATA_API_HEADER_TIMEOUT_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "api.degraded_after_secs",
        env: "GRADATA_API_DEGRADED_AFTER_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "store.max_pending_rows",
        env: "GRADATA_STORE_MAX_PENDING_ROWS",
        value_type: ValueType::Int,
    },
    OptionDecl {
        key: "store.max_pending_bytes",
        env: "GRADATA_STORE_MAX_PENDING_BYTES",
        value_type: ValueType::Int,
    },
    OptionDecl {
        key: "sync.brain_id",
        env: "GRADATA_BRAIN_ID",
        value_type: ValueType::Str,
    },
    OptionDecl {
        key: "store.synchronous",
        env: "GRADATA_STORE_SYNCHRONOUS",
        value_type: ValueType::Str,
    },
    OptionDecl {
        key: "store.busy_timeout_secs",
        env: "GRADATA_STORE_BUSY_TIMEOUT_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "store.synced_retention_days",
        env: "GRADATA_STORE_SYNCED_RETENTION_DAYS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "sync.enabled",
        env: "GRADATA_SYNC_ENABLED",
        value_type: ValueType::Bool,
    },
    OptionDecl {
        key: "sync.ingest_url",
        env: "GRADATA_CLOUD_INGEST_URL",
        value_type: ValueType::Str,
    },
    OptionDecl {
        key: "sync.api_key_file",
        env: "GRADATA_SYNC_API_KEY_FILE",
        value_type: ValueType::Str,
    },
    OptionDecl {
        key: "sync.batch_size",
        env: "GRADATA_SYNC_BATCH_SIZE",
        value_type: ValueType::Int,
    },
    OptionDecl {
        key: "sync.concurrency",
        env: "GRADATA_SYNC_CONCURRENCY",
        value_type: ValueType::Int,
    },
    OptionDecl {
        key: "sync.max_concurrency",
        env: "GRADATA_SYNC_MAX_CONCURRENCY",
        value_type: ValueType::Int,
    },
    OptionDecl {
        key: "sync.connect_timeout_secs",
        env: "GRADATA_SYNC_CONNECT_TIMEOUT_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "sync.request_timeout_secs",
        env: "GRADATA_SYNC_REQUEST_TIMEOUT_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "sync.lease_secs",
        env: "GRADATA_SYNC_LEASE_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "sync.backoff_base_secs",
        env: "GRADATA_SYNC_BACKOFF_BASE_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "sync.backoff_cap_secs",
        env: "GRADATA_SYNC_BACKOFF_CAP_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "sync.pause_probe_secs",
        env: "GRADATA_SYNC_PAUSE_PROBE_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "sync.startup_drain_max_rows",
        env: "GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS",
        value_type: ValueType::Int,
    },
    OptionDecl {
        key: "sync.startup_drain_max_secs",
        env: "GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS",
        value_type: ValueType::Float,
    },
    OptionDecl {
        key: "sync.shutdown_drain_max_secs",
        env: "GRADATA_SYNC_SHUTDOWN_DRAIN_MAX_SECS",
        value_type: ValueType::Float,
    },
];

/// The file's shape, every field defaulted. Unknown keys are errors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    log: RawLog,
    api: RawApi,
    store: RawStore,
    sync: RawSync,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawLog {
    format: String,
    filter: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawApi {
    listen: Vec<String>,
    shutdown_grace_secs: f64,
    allowed_hosts: Vec<String>,
    cors_origins: Vec<String>,
    token_file: String,
    max_body_bytes: u64,
    max_events_per_request: u64,
    body_timeout_secs: f64,
    header_timeout_secs: f64,
    degraded_after_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawStore {
    synchronous: String,
    busy_timeout_secs: f64,
    synced_retention_days: f64,
    max_pending_rows: u64,
    max_pending_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawSync {
    brain_id: String,
    enabled: bool,
    ingest_url: String,
    api_key_file: PathBuf,
    batch_size: u64,
    concurrency: u64,
    max_concurrency: u64,
    connect_timeout_secs: f64,
    request_timeout_secs: f64,
    lease_secs: f64,
    backoff_base_secs: f64,
    backoff_cap_secs: f64,
    pause_probe_secs: f64,
    startup_drain_max_rows: u64,
    startup_drain_max_secs: f64,
    shutdown_drain_max_secs: f64,
}

impl Default for RawLog {
    fn default() -> RawLog {
        RawLog {
            format: "auto".to_owned(),
            filter: "info".to_owned(),
        }
    }
}

impl Default for RawApi {
    fn default() -> RawApi {
        RawApi {
            listen: vec![DEFAULT_LISTEN.to_owned()],
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            allowed_hosts: Vec::new(),
            cors_origins: vec![crate::api::guard::DEFAULT_CORS_ORIGIN.to_owned()],
            token_file: String::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_events_per_request: DEFAULT_MAX_EVENTS_PER_REQUEST,
            body_timeout_secs: DEFAULT_BODY_TIMEOUT_SECS,
            header_timeout_secs: DEFAULT_HEADER_TIMEOUT_SECS,
            degraded_after_secs: DEFAULT_DEGRADED_AFTER_SECS,
        }
    }
}

impl Default for RawStore {
    fn default() -> RawStore {
        RawStore {
            synchronous: "full".to_owned(),
            busy_timeout_secs: store::DEFAULT_BUSY_TIMEOUT.as_secs_f64(),
            synced_retention_days: DEFAULT_SYNCED_RETENTION_DAYS,
            max_pending_rows: DEFAULT_MAX_PENDING_ROWS,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
        }
    }
}

impl Default for RawSync {
    fn default() -> RawSync {
        RawSync {
            brain_id: String::new(),
            enabled: true,
            ingest_url: sync::DEFAULT_INGEST_URL.to_owned(),
            api_key_file: PathBuf::from(DEFAULT_API_KEY_FILE),
            batch_size: sync::DEFAULT_BATCH_SIZE as u64,
            concurrency: sync::DEFAULT_CONCURRENCY as u64,
            max_concurrency: sync::DEFAULT_MAX_CONCURRENCY as u64,
            connect_timeout_secs: sync::DEFAULT_CONNECT_TIMEOUT.as_secs_f64(),
            request_timeout_secs: sync::DEFAULT_REQUEST_TIMEOUT.as_secs_f64(),
            lease_secs: sync::DEFAULT_LEASE.as_secs_f64(),
            backoff_base_secs: sync::DEFAULT_BACKOFF_BASE.as_secs_f64(),
            backoff_cap_secs: sync::DEFAULT_BACKOFF_CAP.as_secs_f64(),
            pause_probe_secs: sync::DEFAULT_PAUSE_PROBE_INTERVAL.as_secs_f64(),
            startup_drain_max_rows: sync::DEFAULT_MAX_ROWS as u64,
            startup_drain_max_secs: sync::DEFAULT_MAX_TIME.as_secs_f64(),
            shutdown_drain_max_secs: DEFAULT_SHUTDOWN_DRAIN_SECS,
        }
    }
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
        /// The parser's message (it names the key and the line).
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

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Where the outbox lives.
    pub data_dir: PathBuf,
    /// Log output format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_filter: String,
    /// Addresses to bind when systemd passes no sockets: `host:port` or a unix socket path.
    pub listen: Vec<String>,
    /// Time requests in flight get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Host names accepted besides loopback.
    pub allowed_hosts: Vec<String>,
    /// Browser origins allowed to call the API.
    pub cors_origins: Vec<String>,
    /// The local API token, read from `api.token_file`, required on writes when set.
    pub api_token: Option<crate::api::guard::LocalToken>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most events in one `POST /v1/events`.
    pub max_events_per_request: usize,
    /// Time a client has to send its body.
    pub body_timeout: Duration,
    /// Time a connection has to send a request's headers, from when it opens or its last response
    /// was sent: slow clients and idle keep-alive connections are closed after it.
    pub header_timeout: Duration,
    /// Age of the oldest pending row past which `/health` says `degraded`.
    pub degraded_after: Duration,
    /// Most pending rows before writes are refused with 503.
    pub max_pending_rows: u64,
    /// Most pending payload bytes before writes are refused with 503.
    pub max_pending_bytes: u64,
    /// The `brain_id` put in every payload; `None` means derive it from the data directory.
    pub brain_id: Option<String>,
    /// SQLite `synchronous`.
    pub synchronous: store::Synchronous,
    /// SQLite busy timeout.
    pub busy_timeout: Duration,
    /// Age after which synced rows are deleted.
    pub synced_retention: Duration,
    /// Sync settings, API key included.
    pub sync: sync::Settings,
    /// Budget of the startup drain.
    pub startup_drain: Budget,
    /// Time budget of the shutdown drain.
    pub shutdown_drain: Budget,
}

impl Config {
    /// Loads the configuration from the flags and an environment snapshot.
    pub fn load(flags: &Flags, env: &Environment) -> Result<Config, Error> {
        let mut sources: BTreeMap<String, Source> = BTreeMap::new();
        let mut merged = toml::Table::new();

        let config_file = match (&flags.config, env.get("GRADATA_CONFIG")) {
            (Some(path), _) => Some((path.clone(), true)),
            (None, Some(path)) if !path.is_empty() => Some((PathBuf::from(path), true)),
            _ => Some((PathBuf::from(DEFAULT_CONFIG_FILE), false)),
        };
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
            if let Some(value) = env.get(option.env) {
                let parsed = parse_env(option, value)?;
                insert(&mut merged, option.key, parsed);
                sources.insert(option.key.to_owned(), Source::Env(option.env));
            }
        }
        if let Some(value) = env.get("GRADATA_CLOUD_SYNC_DISABLE") {
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
        if env.get("GRADATA_LOG").is_none() {
            if let Some(filter) = env.get("RUST_LOG") {
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

        let raw: RawConfig = RawConfig::deserialize(merged).map_err(|err| Error::Invalid {
            key: "(merged)".to_owned(),
            origin: Source::Default,
            message: err.to_string(),
        })?;
        Validator { sources: &sources }.build(raw, file_read, flags, env)
    }

    /// Store options for the service: create what is missing, single instance.
    pub fn store_options(&self) -> store::Options {
        store::Options {
            data_dir: self.data_dir.clone(),
            synchronous: self.synchronous,
            busy_timeout: self.busy_timeout,
            create: store::Create::IfMissing,
            instance_lock: store::InstanceLock::Exclusive,
        }
    }
}

struct Validator<'a> {
    sources: &'a BTreeMap<String, Source>,
}

impl Validator<'_> {
    fn source(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }

    fn invalid(&self, key: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            key: key.to_owned(),
            origin: self.source(key),
            message: message.into(),
        }
    }

    fn seconds(&self, key: &str, value: f64, min: f64, max: f64) -> Result<Duration, Error> {
        if !value.is_finite() || value < min || value > max {
            return Err(self.invalid(
                key,
                format!("must be between {min} and {max} seconds, got {value}"),
            ));
        }
        Ok(Duration::from_secs_f64(value))
    }

    fn count(&self, key: &str, value: u64, min: u64, max: u64) -> Result<usize, Error> {
        if value < min || value > max {
            return Err(self.invalid(key, format!("must be between {min} and {max}, got {value}")));
        }
        usize::try_from(value).map_err(|_| self.invalid(key, "too large"))
    }

    fn positive(&self, key: &str, value: u64) -> Result<u64, Error> {
        if value == 0 {
            return Err(self.invalid(key, "must be at least 1"));
        }
        Ok(value)
    }

    fn build(
        &self,
        raw: RawConfig,
        config_file: Option<PathBuf>,
        flags: &Flags,
        env: &Environment,
    ) -> Result<Config, Error> {
        let data_dir = resolve_data_dir(raw.data_dir.as_deref(), env)?;
        let log_format = match raw.log.format.as_str() {
            "auto" => LogFormat::Auto,
            "journal" => LogFormat::Journal,
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(self.invalid(
                    "log.format",
                    format!("expected auto, journal, text or json, got {other:?}"),
                ));
            }
        };
        if raw.api.listen.is_empty() {
            return Err(self.invalid("api.listen", "needs at least one address"));
        }
        for address in &raw.api.listen {
            if address.parse::<std::net::SocketAddr>().is_err() && !address.starts_with('/') {
                return Err(self.invalid(
                    "api.listen",
                    format!("{address:?} is neither host:port (an IP address) nor an absolute unix socket path"),
                ));
            }
        }
        let synchronous = match raw.store.synchronous.to_ascii_lowercase().as_str() {
            "full" => store::Synchronous::Full,
            "normal" => store::Synchronous::Normal,
            other => {
                return Err(self.invalid(
                    "store.synchronous",
                    format!("expected full or normal, got {other:?}"),
                ));
            }
        };
        let busy_timeout = self.seconds(
            "store.busy_timeout_secs",
            raw.store.busy_timeout_secs,
            0.0,
            600.0,
        )?;
        let retention_days = raw.store.synced_retention_days;
        if !retention_days.is_finite() || !(0.0..=3650.0).contains(&retention_days) {
            return Err(self.invalid(
                "store.synced_retention_days",
                format!("must be between 0 and 3650 days, got {retention_days}"),
            ));
        }
        let synced_retention = Duration::from_secs_f64(retention_days * 86_400.0);

        let ingest_url = self.ingest_url(&raw.sync.ingest_url)?;
        let (api_key, api_key_source) = resolve_api_key(
            flags,
            env,
            &raw.sync.api_key_file,
            &self.source("sync.api_key_file"),
        )?;
        let s = &raw.sync;
        let max_concurrency = self.count("sync.max_concurrency", s.max_concurrency, 1, 1024)?;
        let concurrency = self.count("sync.concurrency", s.concurrency, 1, 1024)?;
        if concurrency > max_concurrency {
            return Err(self.invalid(
                "sync.concurrency",
                format!("{concurrency} is above sync.max_concurrency ({max_concurrency})"),
            ));
        }
        let request_timeout = self.seconds(
            "sync.request_timeout_secs",
            s.request_timeout_secs,
            0.01,
            3600.0,
        )?;
        let lease = self.seconds("sync.lease_secs", s.lease_secs, 1.0, 86_400.0)?;
        if lease <= request_timeout {
            return Err(self.invalid("sync.lease_secs", "must be longer than sync.request_timeout_secs, or a slow request could be posted twice at once"));
        }
        let settings = sync::Settings {
            ingest_url,
            api_key,
            api_key_source,
            enabled: s.enabled,
            batch_size: self.count("sync.batch_size", s.batch_size, 1, 10_000)?,
            concurrency,
            max_concurrency,
            connect_timeout: self.seconds(
                "sync.connect_timeout_secs",
                s.connect_timeout_secs,
                0.01,
                600.0,
            )?,
            request_timeout,
            lease,
            backoff_base: self.seconds(
                "sync.backoff_base_secs",
                s.backoff_base_secs,
                0.001,
                3600.0,
            )?,
            backoff_cap: self.seconds(
                "sync.backoff_cap_secs",
                s.backoff_cap_secs,
                0.001,
                86_400.0,
            )?,
            pause_probe_interval: self.seconds(
                "sync.pause_probe_secs",
                s.pause_probe_secs,
                0.01,
                86_400.0,
            )?,
        };
        let startup_drain = Budget {
            max_rows: self.count(
                "sync.startup_drain_max_rows",
                s.startup_drain_max_rows,
                0,
                10_000_000,
            )?,
            max_time: self.seconds(
                "sync.startup_drain_max_secs",
                s.startup_drain_max_secs,
                0.0,
                86_400.0,
            )?,
        };
        let shutdown_drain = Budget {
            max_rows: startup_drain.max_rows,
            max_time: self.seconds(
                "sync.shutdown_drain_max_secs",
                s.shutdown_drain_max_secs,
                0.0,
                3600.0,
            )?,
        };
        Ok(Config {
            config_file,
            data_dir,
            log_format,
            log_filter: raw.log.filter,
            listen: raw.api.listen,
            shutdown_grace: self.seconds(
                "api.shutdown_grace_secs",
                raw.api.shutdown_grace_secs,
                0.0,
                3600.0,
            )?,
            allowed_hosts: raw.api.allowed_hosts,
            cors_origins: self.origins(raw.api.cors_origins)?,
            api_token: self.local_token(&raw.api.token_file)?,
            max_body_bytes: self.count(
                "api.max_body_bytes",
                raw.api.max_body_bytes,
                1024,
                1 << 30,
            )?,
            max_events_per_request: self.count(
                "api.max_events_per_request",
                raw.api.max_events_per_request,
                1,
                100_000,
            )?,
            body_timeout: self.seconds(
                "api.body_timeout_secs",
                raw.api.body_timeout_secs,
                0.01,
                3600.0,
            )?,
            header_timeout: self.seconds(
                "api.header_timeout_secs",
                raw.api.header_timeout_secs,
                0.01,
                3600.0,
            )?,
            degraded_after: self.seconds(
                "api.degraded_after_secs",
                raw.api.degraded_after_secs,
                1.0,
                31_536_000.0,
            )?,
            max_pending_rows: self
                .positive("store.max_pending_rows", raw.store.max_pending_rows)?,
            max_pending_bytes: self
                .positive("store.max_pending_bytes", raw.store.max_pending_bytes)?,
            brain_id: self.brain_id(raw.sync.brain_id)?,
            synchronous,
            busy_timeout,
            synced_retention,
            sync: settings,
            startup_drain,
            shutdown_drain,
        })
    }

    fn origins(&self, origins: Vec<String>) -> Result<Vec<String>, Error> {
        for origin in &origins {
            // An origin is scheme://host[:port], nothing else; `*` is refused on purpose.
            let valid = Url::parse(origin).is_ok_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.path() == "/"
                    && !origin.ends_with('/')
            });
            if !valid {
                return Err(self.invalid("api.cors_origins", format!("{origin:?} is not an origin like https://app.gradata.ai (no path, no wildcard)")));
            }
        }
        Ok(origins)
    }

    fn local_token(&self, path: &str) -> Result<Option<crate::api::guard::LocalToken>, Error> {
        if path.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path).map_err(|err| Error::Io {
            path: PathBuf::from(path),
            err,
        })?;
        match crate::api::guard::LocalToken::new(&text) {
            Some(token) => Ok(Some(token)),
            None => Err(self.invalid("api.token_file", format!("{path} is empty"))),
        }
    }

    fn brain_id(&self, id: String) -> Result<Option<String>, Error> {
        if id.is_empty() {
            return Ok(None);
        }
        if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.invalid(
                "sync.brain_id",
                "must be 1 to 128 printable ASCII characters",
            ));
        }
        Ok(Some(id))
    }

    fn ingest_url(&self, value: &str) -> Result<Url, Error> {
        let key = "sync.ingest_url";
        let url = Url::parse(value)
            .map_err(|err| self.invalid(key, format!("{value:?} is not a URL: {err}")))?;
        match url.scheme() {
            "https" => Ok(url),
            // Plain HTTP would send the bearer token in clear text; only loopback is exempt.
            "http" if is_loopback_host(&url) => Ok(url),
            "http" => Err(self.invalid(
                key,
                "plain http:// is allowed only for loopback hosts; use https://",
            )),
            other => Err(self.invalid(key, format!("unsupported scheme {other:?}; use https://"))),
        }
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn resolve_data_dir(configured: Option<&Path>, env: &Environment) -> Result<PathBuf, Error> {
    if let Some(dir) = configured {
        return Ok(dir.to_path_buf());
    }
    // systemd's StateDirectory= may list several directories separated by colons; ours is first.
    if let Some(dir) = env
        .get("STATE_DIRECTORY")
        .and_then(|dirs| dirs.split(':').next())
        .filter(|d| !d.is_empty())
    {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = env.get("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(Path::new(dir).join("gradata"));
    }
    if let Some(home) = env.get("HOME").filter(|d| !d.is_empty()) {
        return Ok(Path::new(home).join(".local/state/gradata"));
    }
    Err(Error::NoDataDir)
}

/// Finds the API key: `--api-key-file`/`GRADATA_API_KEY_FILE` > `GRADATA_API_KEY` >
/// `$CREDENTIALS_DIRECTORY/api-key` > `sync.api_key_file`. Returns the key (if any) and a
/// description of where it came from, or of every place searched.
fn resolve_api_key(
    flags: &Flags,
    env: &Environment,
    configured_file: &Path,
    configured_source: &Source,
) -> Result<(Option<ApiKey>, String), Error> {
    let explicit = flags
        .api_key_file
        .clone()
        .map(|path| (path, "--api-key-file"))
        .or_else(|| {
            env.get("GRADATA_API_KEY_FILE")
                .filter(|p| !p.is_empty())
                .map(|p| (PathBuf::from(p), "GRADATA_API_KEY_FILE"))
        });
    if let Some((path, origin)) = explicit {
        // A file named explicitly must exist: a typo should not silently disable sync.
        let key = read_key_file(&path)?;
        return Ok(match key {
            Some(key) => (
                Some(key),
                format!("file {} (from {origin})", path.display()),
            ),
            None => (None, format!("{} (from {origin}) is empty", path.display())),
        });
    }
    let mut looked = vec![String::from(
        "--api-key-file and GRADATA_API_KEY_FILE are unset",
    )];
    match env.get("GRADATA_API_KEY") {
        Some(value) => match ApiKey::new(value) {
            Some(key) => return Ok((Some(key), "environment variable GRADATA_API_KEY".to_owned())),
            None => looked.push("GRADATA_API_KEY is empty".to_owned()),
        },
        None => looked.push("GRADATA_API_KEY is unset".to_owned()),
    }
    match env.get("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty()) {
        Some(dir) => {
            let path = Path::new(dir).join(CREDENTIAL_NAME);
            // An unreadable credentials directory is systemd's business (containers without
            // credential support hand over an empty root-only one); say so and look further
            // rather than refuse to start.
            match read_optional_key_file(&path) {
                Ok(Some(key)) => {
                    return Ok((Some(key), format!("systemd credential {}", path.display())));
                }
                Ok(None) => looked.push(format!("{} is missing or empty", path.display())),
                Err(Error::Io { err, .. }) => {
                    looked.push(format!("{} is unreadable ({err})", path.display()))
                }
                Err(other) => return Err(other),
            }
        }
        None => looked.push("CREDENTIALS_DIRECTORY is unset (no LoadCredential=)".to_owned()),
    }
    // The key file is root-only by design (the service gets the key as a credential), so a CLI
    // run as an ordinary user cannot read it: that is noted, not fatal; sync is then disabled.
    match read_optional_key_file(configured_file) {
        Ok(Some(key)) => Ok((
            Some(key),
            format!(
                "file {} (sync.api_key_file, {configured_source})",
                configured_file.display()
            ),
        )),
        Ok(None) => {
            looked.push(format!("{} is missing or empty", configured_file.display()));
            Ok((None, format!("looked at: {}", looked.join("; "))))
        }
        Err(Error::Io { err, .. }) => {
            looked.push(format!(
                "{} is unreadable ({err})",
                configured_file.display()
            ));
            Ok((None, format!("looked at: {}", looked.join("; "))))
        }
        Err(other) => Err(other),
    }
}

fn read_key_file(path: &Path) -> Result<Option<ApiKey>, Error> {
    let text = std::fs::read_to_string(path).map_err(|err| Error::Io {
        path: path.to_path_buf(),
        err,
    })?;
    Ok(ApiKey::new(&text))
}

fn read_optional_key_file(path: &Path) -> Result<Option<ApiKey>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(ApiKey::new(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::Io {
            path: path.to_path_buf(),
            err,
        }),
    }
}

fn parse_file(path: &Path, text: &str) -> Result<toml::Table, Error> {
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| Error::File {
        path: path.to_path_buf(),
        message: err.to_string().trim_end().to_owned(),
    })?;
    // Checked alone, so that an unknown key or a wrong type is reported against the file.
    RawConfig::deserialize(table.clone()).map_err(|err| Error::File {
        path: path.to_path_buf(),
        message: err.to_string().trim_end().to_owned(),
    })?;
    Ok(table)
}

fn record_sources(
    table: &toml::Table,
    prefix: &str,
    source: &Source,
    sources: &mut BTreeMap<String, Source>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => record_sources(inner, &path, source, sources),
            _ => {
                sources.insert(path, source.clone());
            }
        }
    }
}

fn parse_env(option: &OptionDecl, value: &str) -> Result<toml::Value, Error> {
    let invalid = |expected: &str| Error::Invalid {
        key: option.key.to_owned(),
        origin: Source::Env(option.env),
        message: format!("expected {expected}, got {value:?}"),
    };
    Ok(match option.value_type {
        ValueType::Str => toml::Value::String(value.to_owned()),
        ValueType::Int => toml::Value::Integer(
            value
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| invalid("a whole number"))?,
        ),
        ValueType::Float => {
            let number = value
                .trim()
                .parse::<f64>()
                .map_err(|_| invalid("a number"))?;
            if !number.is_finite() {
                return Err(invalid("a finite number"));
            }
            toml::Value::Float(number)
        }
        ValueType::Bool => toml::Value::Boolean(
            parse_bool(value).ok_or_else(|| invalid("1/0, true/false, yes/no or on/off"))?,
        ),
        ValueType::List => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
    })
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

fn insert(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(inner) = entry else {
            return;
        };
        current = inner;
    }
    current.insert(last.to_owned(), value);
}

/// The dotted keys of every option, in declaration order (used by tests and docs checks).
pub fn option_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    OPTIONS.iter().map(|option| (option.key, option.env))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        let mut env: Environment = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.entry("HOME".to_owned())
            .or_insert_with(|| "/home/test".to_owned());
        // Point away from /etc so the host's files never leak into a test.
        env.entry("GRADATA_SYNC_API_KEY_FILE".to_owned())
            .or_insert_with(|| "/nonexistent/api-key".to_owned());
        env
    }

    fn flags_with_config(path: &Path) -> Flags {
        Flags {
            config: Some(path.to_path_buf()),
            ..Flags::default()
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn every_option_is_declared_once_and_matches_the_file_shape() {
        let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
        let mut from_struct = BTreeMap::new();
        record_sources(&defaults, "", &Source::Default, &mut from_struct);
        let mut declared: Vec<&str> = OPTIONS
            .iter()
            .map(|o| o.key)
            .filter(|k| *k != "data_dir")
            .collect();
        declared.sort_unstable();
        let from_struct: Vec<&str> = from_struct.keys().map(String::as_str).collect();
        assert_eq!(declared, from_struct);
        let mut envs: Vec<&str> = OPTIONS.iter().map(|o| o.env).collect();
        envs.sort_unstable();
        envs.dedup();
        assert_eq!(
            envs.len(),
            OPTIONS.len(),
            "an environment variable is declared twice"
        );
    }

    /// The example shipped as /etc/gradata/gradata.toml sets every option to its default and names
    /// every environment variable, so installing it changes nothing and documents everything.
    #[test]
    fn shipped_example_config_is_every_option_at_its_default() {
        let example = include_str!("../packaging/gradata.toml");
        let parsed: RawConfig = toml::from_str(example).unwrap();
        assert_eq!(
            toml::Table::try_from(&parsed).unwrap(),
            toml::Table::try_from(RawConfig::default()).unwrap()
        );
        for (key, env) in option_keys() {
            let name = key.rsplit('.').next().unwrap();
            assert!(
                example.contains(&format!("{name} =")),
                "{key} is missing from the example"
            );
            assert!(
                example.contains(env),
                "{env} is not mentioned in the example"
            );
        }
    }

    #[test]
    fn defaults_without_any_file() {
        let config = Config::load(&Flags::default(), &env(&[("GRADATA_CONFIG", "")])).unwrap();
        assert_eq!(
            config.data_dir,
            PathBuf::from("/home/test/.local/state/gradata")
        );
        assert_eq!(config.listen, vec![DEFAULT_LISTEN]);
        assert_eq!(config.synchronous, store::Synchronous::Full);
        assert_eq!(config.sync.ingest_url.as_str(), sync::DEFAULT_INGEST_URL);
        assert_eq!(
            config.startup_drain,
            Budget {
                max_rows: 3200,
                max_time: Duration::from_secs(30)
            }
        );
        assert!(config.sync.api_key.is_none());
    }

    #[test]
    fn precedence_is_defaults_file_env_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "g.toml",
            "data_dir = \"/from/file\"\n[sync]\nbatch_size = 10\nconcurrency = 2\ningest_url = \"https://file.example/ingest\"\n",
        );
        let env = env(&[
            ("GRADATA_DATA_DIR", "/from/env"),
            ("GRADATA_SYNC_BATCH_SIZE", "20"),
        ]);
        let config = Config::load(&flags_with_config(&file), &env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/env"));
        assert_eq!(config.sync.batch_size, 20);
        assert_eq!(config.sync.concurrency, 2);
        assert_eq!(
            config.sync.ingest_url.as_str(),
            "https://file.example/ingest"
        );
        let flags = Flags {
            data_dir: Some("/from/flag".into()),
            ingest_url: Some("http://127.0.0.1:9/x".into()),
            ..flags_with_config(&file)
        };
        let config = Config::load(&flags, &env).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.sync.ingest_url.as_str(), "http://127.0.0.1:9/x");
    }

    #[test]
    fn data_dir_falls_back_through_systemd_and_xdg() {
        let load = |pairs: &[(&str, &str)]| {
            Config::load(&Flags::default(), &env(pairs))
                .unwrap()
                .data_dir
        };
        assert_eq!(
            load(&[
                ("GRADATA_CONFIG", ""),
                ("STATE_DIRECTORY", "/var/lib/gradata:/var/lib/other")
            ]),
            PathBuf::from("/var/lib/gradata")
        );
        assert_eq!(
            load(&[("GRADATA_CONFIG", ""), ("XDG_STATE_HOME", "/x")]),
            PathBuf::from("/x/gradata")
        );
    }

    #[test]
    fn errors_name_the_key_and_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let unknown = write(dir.path(), "unknown.toml", "[sync]\nbatchsize = 3\n");
        let message = Config::load(&flags_with_config(&unknown), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("unknown.toml") && message.contains("batchsize"),
            "{message}"
        );

        let wrong_type = write(dir.path(), "type.toml", "[sync]\nconcurrency = \"many\"\n");
        let message = Config::load(&flags_with_config(&wrong_type), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("type.toml") && message.contains("concurrency"),
            "{message}"
        );

        let range = write(dir.path(), "range.toml", "[sync]\nconcurrency = 0\n");
        let message = Config::load(&flags_with_config(&range), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("range.toml") && message.contains("sync.concurrency"),
            "{message}"
        );

        let message = Config::load(
            &Flags::default(),
            &env(&[("GRADATA_CONFIG", ""), ("GRADATA_SYNC_BATCH_SIZE", "lots")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("GRADATA_SYNC_BATCH_SIZE") && message.contains("sync.batch_size"),
            "{message}"
        );

        let message = Config::load(
            &Flags::default(),
            &env(&[
                ("GRADATA_CONFIG", ""),
                ("GRADATA_CLOUD_INGEST_URL", "http://example.com/ingest"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("GRADATA_CLOUD_INGEST_URL") && message.contains("loopback"),
            "{message}"
        );

        let missing = Config::load(&flags_with_config(&dir.path().join("nope.toml")), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.toml"), "{missing}");
    }

    #[test]
    fn api_key_resolution_order_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        write(&creds, CREDENTIAL_NAME, "from-credential\n");
        let file_key = write(dir.path(), "file-key", "from-flag-file");
        let conf_key = write(dir.path(), "conf-key", "from-config");
        let base = [
            ("GRADATA_CONFIG", ""),
            ("GRADATA_SYNC_API_KEY_FILE", conf_key.to_str().unwrap()),
        ];
        let key_of = |flags: &Flags, extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            Config::load(flags, &env(&pairs)).unwrap().sync
        };
        let creds_dir = creds.to_str().unwrap();
        let flags = Flags {
            api_key_file: Some(file_key.clone()),
            ..Flags::default()
        };
        let all = [
            ("GRADATA_API_KEY", "from-env"),
            ("CREDENTIALS_DIRECTORY", creds_dir),
        ];
        assert_eq!(key_of(&flags, &all).api_key, ApiKey::new("from-flag-file"));
        assert_eq!(
            key_of(&Flags::default(), &all).api_key,
            ApiKey::new("from-env")
        );
        assert_eq!(
            key_of(&Flags::default(), &all[1..]).api_key,
            ApiKey::new("from-credential")
        );
        let settings = key_of(&Flags::default(), &[]);
        assert_eq!(settings.api_key, ApiKey::new("from-config"));
        let config = Config::load(&flags, &env(&base)).unwrap();
        assert!(
            !format!("{config:?}").contains("from-flag-file"),
            "the key leaked into Debug"
        );

        let none = Config::load(&Flags::default(), &env(&[("GRADATA_CONFIG", "")]))
            .unwrap()
            .sync;
        assert!(none.api_key.is_none());
        assert!(
            none.disabled_reason()
                .unwrap()
                .contains("GRADATA_API_KEY is unset")
        );

        let missing = Flags {
            api_key_file: Some(dir.path().join("typo")),
            ..Flags::default()
        };
        assert!(
            Config::load(&missing, &env(&base))
                .unwrap_err()
                .to_string()
                .contains("typo")
        );
    }

    #[test]
    fn kill_switch_disables_sync() {
        let config = Config::load(
            &Flags::default(),
            &env(&[
                ("GRADATA_CONFIG", ""),
                ("GRADATA_API_KEY", "k"),
                ("GRADATA_CLOUD_SYNC_DISABLE", "1"),
            ]),
        )
        .unwrap();
        assert!(!config.sync.enabled);
        assert!(config.sync.disabled_reason().is_some());
    }
}
