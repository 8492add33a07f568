//! How each layer of the configuration (the file, the `GRADATA_*` environment, the flags) becomes
//! a TOML table, and the shape the merged table must have ([`RawConfig`]: every field with its
//! default, unknown keys rejected). Every option is declared here once, in [`OPTIONS`]: its key,
//! its environment variable and its type.
//!
//! It knows nothing of what a valid value is: `validate` decides that, after the merge.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    DEFAULT_API_KEY_FILE, DEFAULT_BODY_TIMEOUT_SECS, DEFAULT_DEGRADED_AFTER_SECS,
    DEFAULT_HEADER_TIMEOUT_SECS, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BUFFERED_BODY_BYTES, DEFAULT_MAX_EVENTS_PER_REQUEST, DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_ROWS, DEFAULT_MAX_PENDING_ROWS_WITHOUT_KEY, DEFAULT_SHUTDOWN_DRAIN_SECS,
    DEFAULT_SHUTDOWN_GRACE_SECS, DEFAULT_SYNCED_RETENTION_DAYS, Error, Source,
};
use crate::{store, sync};

/// The type of an option, for parsing environment values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ValueType {
    Str,
    Int,
    Float,
    Bool,
    List,
}

/// One option: its dotted key, its environment variable, its type.
pub(super) struct OptionDecl {
    pub(super) key: &'static str,
    pub(super) env: &'static str,
    pub(super) value_type: ValueType,
}

/// Every option of the config file, with its environment variable (DESIGN §6).
pub(super) const OPTIONS: &[OptionDecl] = &[
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
        key: "api.max_buffered_body_bytes",
        env: "GRADATA_API_MAX_BUFFERED_BODY_BYTES",
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
        key: "sync.max_pending_rows_without_key",
        env: "GRADATA_SYNC_MAX_PENDING_ROWS_WITHOUT_KEY",
        value_type: ValueType::Int,
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
pub(super) struct RawConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) data_dir: Option<PathBuf>,
    pub(super) log: RawLog,
    pub(super) api: RawApi,
    pub(super) store: RawStore,
    pub(super) sync: RawSync,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: String,
    pub(super) filter: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawApi {
    /// A list, or one string: config files written when the setting was a single address stay
    /// valid.
    #[serde(deserialize_with = "one_or_many")]
    pub(super) listen: Vec<String>,
    pub(super) shutdown_grace_secs: f64,
    pub(super) allowed_hosts: Vec<String>,
    pub(super) cors_origins: Vec<String>,
    pub(super) token_file: String,
    pub(super) max_body_bytes: u64,
    pub(super) max_buffered_body_bytes: u64,
    pub(super) max_events_per_request: u64,
    pub(super) body_timeout_secs: f64,
    pub(super) header_timeout_secs: f64,
    pub(super) degraded_after_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) synchronous: String,
    pub(super) busy_timeout_secs: f64,
    pub(super) synced_retention_days: f64,
    pub(super) max_pending_rows: u64,
    pub(super) max_pending_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSync {
    pub(super) brain_id: String,
    pub(super) enabled: bool,
    pub(super) ingest_url: String,
    pub(super) api_key_file: PathBuf,
    pub(super) batch_size: u64,
    pub(super) concurrency: u64,
    pub(super) max_concurrency: u64,
    pub(super) connect_timeout_secs: f64,
    pub(super) request_timeout_secs: f64,
    pub(super) lease_secs: f64,
    pub(super) backoff_base_secs: f64,
    pub(super) backoff_cap_secs: f64,
    pub(super) pause_probe_secs: f64,
    pub(super) max_pending_rows_without_key: u64,
    pub(super) startup_drain_max_rows: u64,
    pub(super) startup_drain_max_secs: f64,
    pub(super) shutdown_drain_max_secs: f64,
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
            listen: DEFAULT_LISTEN
                .iter()
                .map(|&address| address.to_owned())
                .collect(),
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
            allowed_hosts: Vec::new(),
            cors_origins: vec![crate::api::guard::DEFAULT_CORS_ORIGIN.to_owned()],
            token_file: String::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_buffered_body_bytes: DEFAULT_MAX_BUFFERED_BODY_BYTES,
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
            max_pending_rows_without_key: DEFAULT_MAX_PENDING_ROWS_WITHOUT_KEY,
            startup_drain_max_rows: sync::DEFAULT_MAX_ROWS as u64,
            startup_drain_max_secs: sync::DEFAULT_MAX_TIME.as_secs_f64(),
            shutdown_drain_max_secs: DEFAULT_SHUTDOWN_DRAIN_SECS,
        }
    }
}

/// A list of strings, or a single string taken as a list of one.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    struct OneOrMany;
    impl<'de> serde::de::Visitor<'de> for OneOrMany {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an address or a list of addresses")
        }

        fn visit_str<E: serde::de::Error>(self, address: &str) -> Result<Vec<String>, E> {
            Ok(vec![address.to_owned()])
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut addresses = Vec::new();
            while let Some(address) = seq.next_element::<String>()? {
                addresses.push(address);
            }
            Ok(addresses)
        }
    }
    deserializer.deserialize_any(OneOrMany)
}

pub(super) fn parse_file(path: &Path, text: &str) -> Result<toml::Table, Error> {
    let table: toml::Table = text.parse().map_err(|err: toml::de::Error| Error::File {
        path: path.to_path_buf(),
        message: one_line(&err, Some(text)),
    })?;
    // Checked alone, so that an unknown key or a wrong type is reported against the file.
    RawConfig::deserialize(table.clone()).map_err(|err| Error::File {
        path: path.to_path_buf(),
        message: one_line(&err, Some(text)),
    })?;
    Ok(table)
}

/// A TOML error as one line, key first: `sync.batch_size: invalid type: …`, or
/// `line 3, column 7: …` for a syntax error. The parser's own text spans several lines (a caret
/// snippet, the key on a line of its own), and systemd keeps only the first line of a `STATUS=`,
/// the journal makes each line of stderr a record of its own.
pub(super) fn one_line(err: &toml::de::Error, text: Option<&str>) -> String {
    let message = err
        .message()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    // The path of keys is public only through `Display`, as a last line "in `a.b`".
    let rendered = err.to_string();
    let mut key = rendered
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
        .map(str::to_owned);
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        key = Some(match key {
            Some(parent) => format!("{parent}.{field}"),
            None => field.to_owned(),
        });
    }
    let position = err.span().zip(text).and_then(|(span, text)| {
        let before = text.get(..span.start)?;
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Some(format!("line {line}, column {column}"))
    });
    match (key, position) {
        (Some(key), Some(position)) => format!("{key}: {message} ({position})"),
        (Some(key), None) => format!("{key}: {message}"),
        (None, Some(position)) => format!("{position}: {message}"),
        (None, None) => message,
    }
}

pub(super) fn record_sources(
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

pub(super) fn parse_env(option: &OptionDecl, value: &str) -> Result<toml::Value, Error> {
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

pub(super) fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

pub(super) fn insert(table: &mut toml::Table, dotted: &str, value: toml::Value) {
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
