//! Every option of the configuration, declared once: its key, its environment variable, its type,
//! its default, its documentation, the type it is used as with the check that gives it, and
//! whether a reload applies it. From these declarations come the shape of the config file
//! (`RawConfig` and its groups, unknown keys rejected), the checked groups ([`LogConfig`],
//! [`ApiConfig`], [`StoreConfig`], and the parts `validate` assembles into the sync and drain
//! settings), the keys a reload leaves for a restart ([`changes_needing_restart`]), the table the
//! environment layer and the unknown-variable check read ([`OPTIONS`]), the man page's list of
//! variables, and the example config shipped in the packages ([`example`]), which a test keeps
//! equal to `packaging/gradata.toml`.
//!
//! What a valid value is belongs to the checks (`Validator`'s methods, in `validate`); this file
//! only names them, and knows nothing of how the layers are read.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::layers::one_or_many;
use super::validate::Validator;
use super::{
    Config, DEFAULT_API_KEY_FILE, DEFAULT_BODY_TIMEOUT_SECS, DEFAULT_DEGRADED_AFTER_SECS,
    DEFAULT_HEADER_TIMEOUT_SECS, DEFAULT_LISTEN, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_BUFFERED_BODY_BYTES, DEFAULT_MAX_EVENTS_PER_REQUEST, DEFAULT_MAX_PENDING_BYTES,
    DEFAULT_MAX_PENDING_ROWS, DEFAULT_MAX_PENDING_ROWS_WITHOUT_KEY, DEFAULT_SHUTDOWN_DRAIN_SECS,
    DEFAULT_SHUTDOWN_GRACE_SECS, DEFAULT_SYNCED_RETENTION_DAYS, Error, LogFormat,
};
use crate::api::guard::LocalToken;
use crate::sync::ApiKey;
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

/// The [`ValueType`] of each Rust type an option may have.
trait OptionType {
    const VALUE_TYPE: ValueType;
}

impl OptionType for String {
    const VALUE_TYPE: ValueType = ValueType::Str;
}
impl OptionType for PathBuf {
    const VALUE_TYPE: ValueType = ValueType::Str;
}
impl OptionType for u64 {
    const VALUE_TYPE: ValueType = ValueType::Int;
}
impl OptionType for f64 {
    const VALUE_TYPE: ValueType = ValueType::Float;
}
impl OptionType for bool {
    const VALUE_TYPE: ValueType = ValueType::Bool;
}
impl OptionType for Vec<String> {
    const VALUE_TYPE: ValueType = ValueType::List;
}

/// One option: its dotted key, its environment variable, its type, and its documentation as the
/// example config shows it (one string per line, `Env: …` last).
pub(super) struct OptionDecl {
    pub(super) key: &'static str,
    pub(super) env: &'static str,
    pub(super) value_type: ValueType,
    pub(super) doc: &'static [&'static str],
}

/// A key and a variable an option had before it was renamed, still accepted so that an installed
/// config file and a unit's drop-ins keep working. In one config file, the old key beside the new
/// one is an error (which one was meant is unclear); in the environment the new variable wins and
/// the old one is reported as ignored.
pub(super) struct Alias {
    pub(super) old_key: &'static str,
    pub(super) old_env: &'static str,
    pub(super) key: &'static str,
}

/// The renamed options: the drain bounds were named for the startup drain, but bound every
/// explicit drain.
pub(super) const ALIASES: [Alias; 3] = [
    Alias {
        old_key: "sync.startup_drain_max_rows",
        old_env: "GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS",
        key: "drain.max_rows",
    },
    Alias {
        old_key: "sync.startup_drain_max_secs",
        old_env: "GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS",
        key: "drain.max_secs",
    },
    Alias {
        old_key: "sync.shutdown_drain_max_secs",
        old_env: "GRADATA_SYNC_SHUTDOWN_DRAIN_MAX_SECS",
        key: "drain.shutdown_max_secs",
    },
];

/// The value the example shows, commented out, for `data_dir`.
const DATA_DIR_EXAMPLE: &str = "\"/var/lib/gradata\"";

/// `data_dir`, the one option outside a group: unset by default (it is derived; see
/// `credentials`), so the example shows it commented out, as [`DATA_DIR_EXAMPLE`].
const DATA_DIR: OptionDecl = OptionDecl {
    key: "data_dir",
    env: "GRADATA_DATA_DIR",
    value_type: ValueType::Str,
    doc: &[
        " Directory holding the outbox, system.db. Not set by default: under systemd it is the unit's",
        " state directory, /var/lib/gradata ($STATE_DIRECTORY); when run by hand, $XDG_STATE_HOME/gradata",
        " or ~/.local/state/gradata. A Gradata brain directory works too, for the command line run as",
        " the brain's owner. The service cannot reach one as shipped: it runs as user gradata with",
        " ProtectSystem=strict (everything outside /var/lib/gradata is read-only) and ProtectHome=yes",
        " (/home, /root and /run/user are invisible). For the service, add a drop-in",
        " (systemctl edit gradata.service) with ReadWritePaths=/the/brain and, for a brain under /home,",
        " ProtectHome=no (or =tmpfs with BindPaths=/the/brain), and make the directory and its system.db",
        " owned by (or writable for) user gradata.",
        " Env: GRADATA_DATA_DIR. Flag: --data-dir (alias --brain-dir).",
    ],
};

/// Declares the groups of options. For each group: the struct the file's table deserializes
/// into (every field defaulted, unknown keys rejected), one [`OptionDecl`] per field in
/// [`OPTIONS`], and the checked group (`$typed`), whose fields are built in declaration order by
/// the check each option names (a method of [`Validator`], given the key, the raw value and the
/// declared arguments). Each option also says whether a reload applies it (`live`) or only a
/// restart (`restart`), for [`changes_needing_restart`]. The doc comments are the example
/// config's text, and the checked fields' docs.
macro_rules! options {
    ($(
        $group:ident: $raw:ident => $vis:vis $typed:ident = $prefix:literal {
            $(
                $(#[doc = $doc:literal])*
                $(#[serde($($serde:tt)*)])*
                $field:ident: $ty:ty = $default:expr, $env:literal
                    => $reload:ident $checked:ident: $checked_ty:ty = $check:ident($($arg:expr),*);
            )*
        }
    )*) => {
        /// The file's shape, every field defaulted. Unknown keys are errors.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub(super) struct RawConfig {
            #[serde(skip_serializing_if = "Option::is_none")]
            pub(super) data_dir: Option<PathBuf>,
            $(pub(super) $group: $raw,)*
        }

        $(
            #[derive(Debug, Clone, Serialize, Deserialize)]
            #[serde(default, deny_unknown_fields)]
            pub(super) struct $raw {
                $($(#[serde($($serde)*)])* pub(super) $field: $ty,)*
            }

            impl Default for $raw {
                fn default() -> $raw {
                    $raw { $($field: $default,)* }
                }
            }

            #[doc = concat!("`", $prefix, ".*`, checked: each field is the option of the same")]
            #[doc = "key in the config file, with the type it is used as."]
            #[derive(Debug, Clone)]
            #[allow(
                rustdoc::invalid_html_tags,
                rustdoc::broken_intra_doc_links,
                reason = "the docs are the example config's text: <token> is a placeholder, [:port] optional"
            )]
            $vis struct $typed {
                $(
                    #[doc = concat!("`", $prefix, ".", stringify!($field), "`:")]
                    $(#[doc = $doc])*
                    pub $checked: $checked_ty,
                )*
            }
        )*

        /// Every option, in the order the example config lists them.
        pub(super) const OPTIONS: &[OptionDecl] = &[
            DATA_DIR,
            $($(
                OptionDecl {
                    key: concat!($prefix, ".", stringify!($field)),
                    env: $env,
                    value_type: <$ty as OptionType>::VALUE_TYPE,
                    doc: &[$($doc),*],
                },
            )*)*
        ];

        /// Every group checked, in declaration order.
        pub(super) struct Checked {
            $(pub(super) $group: $typed,)*
        }

        /// Checks every option of `raw` but `data_dir`, in declaration order; the first error
        /// found is returned. Checks across options are `validate`'s.
        pub(super) fn check(validator: &Validator<'_>, raw: RawConfig) -> Result<Checked, Error> {
            Ok(Checked {
                $($group: {
                    let group = raw.$group;
                    $typed {
                        $($checked: validator.$check(
                            concat!($prefix, ".", stringify!($field)),
                            group.$field,
                            $($arg),*
                        )?,)*
                    }
                },)*
            })
        }

        /// The keys whose value changed from `running` to `new` but which a running service
        /// applies only when it starts again: what was bound, opened or installed at start.
        pub(crate) fn changes_needing_restart(running: &Config, new: &Config) -> Vec<&'static str> {
            let mut keys = Vec::new();
            // Not an option of a group: a reload changes it only by a changed file.
            if running.data_dir != new.data_dir {
                keys.push("data_dir");
            }
            $($(
                needs_restart!(
                    $reload,
                    keys,
                    concat!($prefix, ".", stringify!($field)),
                    running.$group.$checked,
                    new.$group.$checked
                );
            )*)*
            keys
        }
    };
}

/// One option's part of [`changes_needing_restart`]: only a `restart` option is compared.
macro_rules! needs_restart {
    (restart, $keys:ident, $key:expr, $running:expr, $new:expr) => {
        if $running != $new {
            $keys.push($key);
        }
    };
    (live, $($ignored:tt)*) => {};
}

options! {
    log: RawLog => pub LogConfig = "log" {
        /// Where log records go: "auto" (the journal when run by systemd, text on stderr otherwise),
        /// "journal", "text" or "json" (one JSON object per line on stderr).
        /// Env: GRADATA_LOG_FORMAT. Flag: --log-format.
        format: String = "auto".to_owned(), "GRADATA_LOG_FORMAT"
            => restart format: LogFormat = log_format();
        /// Which records are written, in tracing EnvFilter syntax: a level ("error", "warn", "info",
        /// "debug", "trace") or per-module directives such as "info,gradata::sync=debug".
        /// A reload applies a new filter (e.g. "debug" while chasing a problem, then back).
        /// Env: GRADATA_LOG (RUST_LOG is honoured when GRADATA_LOG is unset).
        filter: String = "info".to_owned(), "GRADATA_LOG"
            => live filter: String = log_filter();
    }
    api: RawApi => pub ApiConfig = "api" {
        /// Addresses the local HTTP API listens on when systemd passes no sockets (gradata serve run by
        /// hand): "host:port" with an IP address, or an absolute path for a unix socket; a list, or one
        /// address as a string. The defaults are the two ports Gradata clients call: 7342, the Gradata
        /// plugin's (its GRADATA_DAEMON_PORT), and 8765, the Python daemon's installer, container image
        /// and dashboard. Under systemd the sockets come from gradata.socket (the same two addresses)
        /// and gradata-unix.socket (/run/gradata/gradata.sock) and this list is ignored; change the ports
        /// with a drop-in for gradata.socket instead. An address already in use (a Python Gradata daemon
        /// still running, say) stops the service at start with an error naming it.
        /// A non-loopback address (0.0.0.0:8765, say), here or in the socket unit, needs token_file below:
        /// without it the service refuses to start (exit 78), since any program that can reach the
        /// address could write events. With it, writes need the token but reads do not (see the
        /// "Security" section of the API reference).
        /// Env: GRADATA_LISTEN (comma-separated); GRADATA_DAEMON_HOST and GRADATA_DAEMON_PORT (the
        /// plugin's variables) replace the first address when GRADATA_LISTEN is unset.
        /// Flag: gradata serve --listen ADDR (repeatable), gradata daemon --port N.
        #[serde(deserialize_with = "one_or_many")]
        listen: Vec<String> = DEFAULT_LISTEN.iter().map(|&address| address.to_owned()).collect(), "GRADATA_LISTEN"
            => restart listen: Vec<String> = addresses();
        /// Seconds requests in flight get to finish when the service stops.
        /// Env: GRADATA_API_SHUTDOWN_GRACE_SECS.
        shutdown_grace_secs: f64 = DEFAULT_SHUTDOWN_GRACE_SECS, "GRADATA_API_SHUTDOWN_GRACE_SECS"
            => live shutdown_grace: Duration = seconds(0.0, 3600.0);
        /// Host names accepted in the Host header besides loopback addresses and "localhost" (the guard
        /// against DNS rebinding: a web page cannot reach the API through a name of its own).
        /// Env: GRADATA_API_ALLOWED_HOSTS (comma-separated).
        allowed_hosts: Vec<String> = Vec::new(), "GRADATA_API_ALLOWED_HOSTS"
            => live allowed_hosts: Vec<String> = any();
        /// Browser origins allowed to call the API (CORS), exactly as "scheme://host[:port]"; "*" is
        /// refused. Requests without an Origin header (agents, curl) are not affected.
        /// Env: GRADATA_API_CORS_ORIGINS (comma-separated).
        cors_origins: Vec<String> = vec![crate::api::guard::DEFAULT_CORS_ORIGIN.to_owned()], "GRADATA_API_CORS_ORIGINS"
            => live cors_origins: Vec<String> = origins();
        /// File holding a local token that every write must present as "Authorization: Bearer <token>".
        /// Empty: no token. The service reads it itself, as user gradata: make it readable by the
        /// service and nobody else, e.g. owner root, group gradata, mode 0640.
        /// Env: GRADATA_API_TOKEN_FILE.
        token_file: String = String::new(), "GRADATA_API_TOKEN_FILE"
            => live token: Option<LocalToken> = local_token();
        /// Largest request body, in bytes; a larger one gets 413.
        /// Env: GRADATA_API_MAX_BODY_BYTES.
        max_body_bytes: u64 = DEFAULT_MAX_BODY_BYTES, "GRADATA_API_MAX_BODY_BYTES"
            => live max_body_bytes: usize = count(1024, 1 << 30);
        /// Most bytes of request bodies held in memory at once, across all connections (at least
        /// max_body_bytes). A request takes room for its body before any of it is read: when many clients
        /// post large bodies at once they are read in turn, and memory stays bounded. A body that finds no
        /// room within body_timeout_secs gets 503 with Retry-After, unread.
        /// Env: GRADATA_API_MAX_BUFFERED_BODY_BYTES.
        max_buffered_body_bytes: u64 = DEFAULT_MAX_BUFFERED_BODY_BYTES, "GRADATA_API_MAX_BUFFERED_BODY_BYTES"
            => live max_buffered_body_bytes: usize = count(1024, 1 << 40);
        /// Most events in one POST /v1/events.
        /// Env: GRADATA_API_MAX_EVENTS_PER_REQUEST.
        max_events_per_request: u64 = DEFAULT_MAX_EVENTS_PER_REQUEST, "GRADATA_API_MAX_EVENTS_PER_REQUEST"
            => live max_events_per_request: usize = count(1, 100_000);
        /// Seconds a client has to send its request body.
        /// Env: GRADATA_API_BODY_TIMEOUT_SECS.
        body_timeout_secs: f64 = DEFAULT_BODY_TIMEOUT_SECS, "GRADATA_API_BODY_TIMEOUT_SECS"
            => live body_timeout: Duration = seconds(0.01, 3600.0);
        /// Seconds a connection has to send a request's headers, counted from when it opens or from the
        /// previous response: a client that stalls mid-header, or a keep-alive connection left idle this
        /// long, is closed.
        /// Env: GRADATA_API_HEADER_TIMEOUT_SECS.
        header_timeout_secs: f64 = DEFAULT_HEADER_TIMEOUT_SECS, "GRADATA_API_HEADER_TIMEOUT_SECS"
            => live header_timeout: Duration = seconds(0.01, 3600.0);
        /// Age in seconds of the oldest pending event past which GET /health reports "degraded".
        /// Env: GRADATA_API_DEGRADED_AFTER_SECS.
        degraded_after_secs: f64 = DEFAULT_DEGRADED_AFTER_SECS, "GRADATA_API_DEGRADED_AFTER_SECS"
            => live degraded_after: Duration = seconds(1.0, 31_536_000.0);
    }
    store: RawStore => pub StoreConfig = "store" {
        /// SQLite synchronous mode of the outbox: "full" (a 2xx to a client means the event is on disk,
        /// even across a power loss) or "normal" (faster; the last commits may be lost on power loss,
        /// never corrupted). Takes effect at the next restart.
        /// Env: GRADATA_STORE_SYNCHRONOUS.
        synchronous: String = "full".to_owned(), "GRADATA_STORE_SYNCHRONOUS"
            => restart synchronous: store::Synchronous = synchronous();
        /// Seconds a writer waits for a lock held by another connection (e.g. gradata drain) before
        /// giving up.
        /// Env: GRADATA_STORE_BUSY_TIMEOUT_SECS.
        busy_timeout_secs: f64 = store::DEFAULT_BUSY_TIMEOUT.as_secs_f64(), "GRADATA_STORE_BUSY_TIMEOUT_SECS"
            => restart busy_timeout: Duration = seconds(0.0, 600.0);
        /// Days after which delivered (synced) rows are deleted. Pending and dead rows are never deleted.
        /// Env: GRADATA_STORE_SYNCED_RETENTION_DAYS.
        synced_retention_days: f64 = DEFAULT_SYNCED_RETENTION_DAYS, "GRADATA_STORE_SYNCED_RETENTION_DAYS"
            => live synced_retention: Duration = days(0.0, 3650.0);
        /// Most pending events, and most bytes of pending payloads, the outbox holds; beyond either,
        /// writes are refused with 503 and Retry-After (nothing already stored is dropped). Rows delivered
        /// or retried by another process (gradata drain, gradata queue retry) count as soon as they change.
        /// Env: GRADATA_STORE_MAX_PENDING_ROWS.
        max_pending_rows: u64 = DEFAULT_MAX_PENDING_ROWS, "GRADATA_STORE_MAX_PENDING_ROWS"
            => live max_pending_rows: u64 = positive();
        /// Env: GRADATA_STORE_MAX_PENDING_BYTES.
        max_pending_bytes: u64 = DEFAULT_MAX_PENDING_BYTES, "GRADATA_STORE_MAX_PENDING_BYTES"
            => live max_pending_bytes: u64 = positive();
    }
    sync: RawSync => pub(super) SyncOptions = "sync" {
        /// The brain_id put in every event sent to the cloud. Empty: the .tenant_id file of a Gradata
        /// brain directory used as data directory, else an id made once and kept in <data_dir>/brain_id.
        /// Env: GRADATA_BRAIN_ID.
        brain_id: String = String::new(), "GRADATA_BRAIN_ID"
            => live brain_id: Option<String> = brain_id();
        /// Forward events to the cloud at all. With false (or without an API key) the service keeps
        /// accepting and storing events, and forwards nothing.
        /// Env: GRADATA_SYNC_ENABLED; GRADATA_CLOUD_SYNC_DISABLE=1 also turns it off.
        enabled: bool = true, "GRADATA_SYNC_ENABLED"
            => live enabled: bool = any();
        /// The ingest endpoint every event is POSTed to. https:// only; http:// is accepted for loopback
        /// hosts (a local proxy or test server).
        /// Env: GRADATA_CLOUD_INGEST_URL. Flag: --ingest-url.
        ingest_url: String = sync::DEFAULT_INGEST_URL.to_owned(), "GRADATA_CLOUD_INGEST_URL"
            => live ingest_url: Url = ingest_url();
        /// File holding the API key, read when no other source has one. Sources, first found wins:
        /// --api-key-file / GRADATA_API_KEY_FILE, GRADATA_API_KEY, the systemd credential "api-key"
        /// (which gradata.service loads from /etc/gradata/api-key), then this file, and last, for a
        /// user's instance only (the user unit, or a login shell: XDG_RUNTIME_DIR is set), the Gradata
        /// SDK's key file, $GRADATA_HOME/key or ~/.gradata/key. A key file holds the key alone, on one
        /// line: a second line (a comment) or a space inside is an error (exit 78).
        /// Env: GRADATA_SYNC_API_KEY_FILE.
        api_key_file: PathBuf = PathBuf::from(DEFAULT_API_KEY_FILE), "GRADATA_SYNC_API_KEY_FILE"
            => live api_key: (Option<ApiKey>, String) = api_key();
        /// Rows claimed from the outbox per batch.
        /// Env: GRADATA_SYNC_BATCH_SIZE.
        batch_size: u64 = sync::DEFAULT_BATCH_SIZE as u64, "GRADATA_SYNC_BATCH_SIZE"
            => live batch_size: usize = count(1, 10_000);
        /// POSTs in flight at once when sending starts. Adaptive: halved on a 429, +1 after each clean
        /// batch, never above max_concurrency.
        /// Env: GRADATA_SYNC_CONCURRENCY.
        concurrency: u64 = sync::DEFAULT_CONCURRENCY as u64, "GRADATA_SYNC_CONCURRENCY"
            => live concurrency: usize = count(1, 1024);
        /// Upper bound of the adaptive concurrency.
        /// Env: GRADATA_SYNC_MAX_CONCURRENCY.
        max_concurrency: u64 = sync::DEFAULT_MAX_CONCURRENCY as u64, "GRADATA_SYNC_MAX_CONCURRENCY"
            => live max_concurrency: usize = count(1, 1024);
        /// Seconds to establish a connection to the ingest endpoint.
        /// Env: GRADATA_SYNC_CONNECT_TIMEOUT_SECS.
        connect_timeout_secs: f64 = sync::DEFAULT_CONNECT_TIMEOUT.as_secs_f64(), "GRADATA_SYNC_CONNECT_TIMEOUT_SECS"
            => live connect_timeout: Duration = seconds(0.01, 600.0);
        /// Seconds one POST may wait for the response's status and headers before it counts as failed
        /// (and is retried). The body is then read for at most 2 s more, within the same time; a body
        /// that stalls does not change what the status decided.
        /// Env: GRADATA_SYNC_REQUEST_TIMEOUT_SECS.
        request_timeout_secs: f64 = sync::DEFAULT_REQUEST_TIMEOUT.as_secs_f64(), "GRADATA_SYNC_REQUEST_TIMEOUT_SECS"
            => live request_timeout: Duration = seconds(0.01, 3600.0);
        /// The lease period. A drainer renews the lease of the rows it holds at least every third of
        /// this (and at least once a second); the service frees a lease it has seen unchanged for this
        /// long on its monotonic clock, so the rows of a drainer that died flow again after about two
        /// periods (or at once when the store is next opened alone). No wall clock is involved. Must be
        /// longer than request_timeout_secs; processes sharing one outbox should use the same value.
        /// Env: GRADATA_SYNC_LEASE_SECS.
        lease_secs: f64 = sync::DEFAULT_LEASE.as_secs_f64(), "GRADATA_SYNC_LEASE_SECS"
            => live lease: Duration = seconds(1.0, 86_400.0);
        /// Retry backoff after a transient failure: a random delay between 0 and
        /// min(backoff_cap_secs, backoff_base_secs * 2^attempts).
        /// Env: GRADATA_SYNC_BACKOFF_BASE_SECS.
        backoff_base_secs: f64 = sync::DEFAULT_BACKOFF_BASE.as_secs_f64(), "GRADATA_SYNC_BACKOFF_BASE_SECS"
            => live backoff_base: Duration = seconds(0.001, 3600.0);
        /// Env: GRADATA_SYNC_BACKOFF_CAP_SECS.
        backoff_cap_secs: f64 = sync::DEFAULT_BACKOFF_CAP.as_secs_f64(), "GRADATA_SYNC_BACKOFF_CAP_SECS"
            => live backoff_cap: Duration = seconds(0.001, 86_400.0);
        /// Seconds between probes while sync is paused by a refused key (401/403) or a wrong URL
        /// (3xx, 404, 405, 410, 501); a reload probes at once.
        /// Env: GRADATA_SYNC_PAUSE_PROBE_SECS.
        pause_probe_secs: f64 = sync::DEFAULT_PAUSE_PROBE_INTERVAL.as_secs_f64(), "GRADATA_SYNC_PAUSE_PROBE_SECS"
            => live pause_probe_interval: Duration = seconds(0.01, 86_400.0);
        /// Most pending events the outbox holds while no API key is configured (local use, common with the
        /// Gradata plugin): nothing is sent then, so the outbox would otherwise grow for good. The lower of
        /// this and store.max_pending_rows applies; beyond it, POST /v1/events gets 503, and the brain
        /// routes keep working without queueing for the cloud. Once a key is configured, what was kept is
        /// sent and store.max_pending_rows applies again.
        /// Env: GRADATA_SYNC_MAX_PENDING_ROWS_WITHOUT_KEY.
        max_pending_rows_without_key: u64 = DEFAULT_MAX_PENDING_ROWS_WITHOUT_KEY, "GRADATA_SYNC_MAX_PENDING_ROWS_WITHOUT_KEY"
            => live max_pending_rows_without_key: u64 = positive();
    }
    drain: RawDrain => pub(super) DrainOptions = "drain" {
        /// Bounds of every explicit drain: the one at startup (before the service reports ready), POST
        /// /sync and gradata drain send at most this many rows and for at most this many seconds (each also
        /// stops early when the queue is empty or the cloud is unreachable). The drain at shutdown has the
        /// same row bound and its own time, below. A request still in flight at the deadline is cut short
        /// and counts as a timed-out attempt (retried after a backoff). Raising the time is fine: the
        /// service extends systemd's start timeout by it. A row bound of 0 turns these drains into no-ops,
        /// which report reason="row_budget"; the sync worker's continuous sending is not bounded by them.
        /// Formerly sync.startup_drain_max_rows and sync.startup_drain_max_secs, names still accepted.
        /// Env: GRADATA_DRAIN_MAX_ROWS (formerly GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS, still accepted).
        max_rows: u64 = sync::DEFAULT_MAX_ROWS as u64, "GRADATA_DRAIN_MAX_ROWS"
            => live max_rows: usize = count(0, 10_000_000);
        /// Env: GRADATA_DRAIN_MAX_SECS (formerly GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS, still accepted).
        max_secs: f64 = sync::DEFAULT_MAX_TIME.as_secs_f64(), "GRADATA_DRAIN_MAX_SECS"
            => live max_time: Duration = seconds(0.0, 86_400.0);
        /// Seconds the final drain at shutdown may take. Formerly sync.shutdown_drain_max_secs.
        /// Env: GRADATA_DRAIN_SHUTDOWN_MAX_SECS (formerly GRADATA_SYNC_SHUTDOWN_DRAIN_MAX_SECS, still
        /// accepted).
        shutdown_max_secs: f64 = DEFAULT_SHUTDOWN_DRAIN_SECS, "GRADATA_DRAIN_SHUTDOWN_MAX_SECS"
            => live shutdown_max_time: Duration = seconds(0.0, 3600.0);
    }
}

/// The text before the options in the example config.
const EXAMPLE_HEADER: &str = "\
# /etc/gradata/gradata.toml: configuration of the gradata service (gradata.service) and of the
# gradata command line.
#
# Every option is listed here, set to its built-in default: this file as shipped changes nothing,
# and deleting it changes nothing either. Edit a value to change it, then apply it with
#     systemctl reload gradata      (sync settings, brain_id, the local token, allowed hosts,
#                                    CORS origins, request and queue limits, timeouts, the
#                                    retention of synced rows, log.filter)
#     systemctl restart gradata     (data_dir, api.listen, store.synchronous,
#                                    store.busy_timeout_secs, log.format, and a new API key:
#                                    the service gets it as a credential at start)
# A reload names, in a warning, each changed setting that waits for the restart. See
# /usr/share/doc/gradata/operations.md, \"Stopping and reloading\".
#
# Precedence: built-in defaults < this file (or --config PATH, or GRADATA_CONFIG) < GRADATA_*
# environment variables < command-line flags. Each option names its environment variable; under
# systemd, set those in a drop-in (systemctl edit gradata.service), e.g.
#     [Service]
#     Environment=GRADATA_SYNC_BATCH_SIZE=100
# An empty variable (Environment=GRADATA_SYNC_BATCH_SIZE=) counts as unset, as does an empty
# data_dir; an empty log filter is refused like an invalid one, and \"info\" is used.
# A GRADATA_* variable that no option reads is ignored with a warning naming it (and the known
# variable it resembles): a variable can be inherited from anywhere, a file key cannot.
# Unknown keys and out-of-range values are errors: the service refuses to start (exit code 78)
# and names the key and this file; on reload the running configuration stays in force.
#
# The cloud API key does not belong in this file. Put it in /etc/gradata/api-key (owner root,
# mode 0600); systemd hands it to the service as a credential (LoadCredential=). See
# /usr/share/doc/gradata/README.md, section \"Install\".
";

/// The example config: every option at its default, with its documentation. `packaging/gradata.toml`
/// is this text (`gradata generate config` prints it).
pub(crate) fn example() -> String {
    let defaults = toml::Table::try_from(RawConfig::default()).unwrap_or_default();
    let mut text = String::from(EXAMPLE_HEADER);
    let mut group = "";
    for option in OPTIONS {
        let (prefix, name) = option.key.rsplit_once('.').unwrap_or(("", option.key));
        if prefix != group {
            text.push_str(&format!("\n[{prefix}]\n"));
            group = prefix;
        } else if prefix.is_empty() {
            text.push('\n');
        }
        for line in option.doc {
            text.push_str(&format!("#{line}\n"));
        }
        let value = defaults
            .get(prefix)
            .and_then(|table| table.get(name))
            .map(ToString::to_string);
        match value {
            Some(value) => text.push_str(&format!("{name} = {value}\n")),
            None => text.push_str(&format!("#{name} = {DATA_DIR_EXAMPLE}\n")),
        }
    }
    text
}
