//! Turns the merged [`RawConfig`] into a [`Config`]: every value checked and given its concrete
//! type, and every error naming the key and where its value came from.
//!
//! It knows nothing of how the layers were read or merged; `layers` did that.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::credentials::{resolve_api_key, resolve_data_dir};
use super::options::RawConfig;
use super::{
    ApiConfig, Config, DrainConfig, Environment, Error, Flags, LogConfig, LogFormat, Source,
    StoreConfig, SyncConfig,
};
use crate::store;
use crate::sync::{self, Budget};

pub(super) struct Validator<'a> {
    pub(super) sources: &'a BTreeMap<String, Source>,
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

    pub(super) fn build(
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
        let api_token = self.local_token(&raw.api.token_file)?;
        for address in &raw.api.listen {
            match address.parse::<std::net::SocketAddr>() {
                // The API is for this machine (DESIGN §7): the Host guard stops a web page, not a
                // network client, which can send any Host. With a token, writes are guarded, and
                // the operator has chosen to expose the API (a container's published port).
                Ok(socket) if !socket.ip().is_loopback() && api_token.is_none() => {
                    return Err(self.invalid(
                        "api.listen",
                        format!("{address} is not a loopback address; listening on the network needs api.token_file, so that writes need the token"),
                    ));
                }
                Ok(_) => {}
                Err(_) if address.starts_with('/') => {}
                Err(_) => {
                    return Err(self.invalid(
                        "api.listen",
                        format!("{address:?} is neither host:port (an IP address) nor an absolute unix socket path"),
                    ));
                }
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
            return Err(self.invalid("sync.lease_secs", "must be longer than sync.request_timeout_secs: a lease not renewed for this long is freed, and a drain must be able to renew its leases between the answers of its requests"));
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
        let drain = &raw.drain;
        let drain_budget = Budget {
            max_rows: self.count("drain.max_rows", drain.max_rows, 0, 10_000_000)?,
            max_time: self.seconds("drain.max_secs", drain.max_secs, 0.0, 86_400.0)?,
        };
        let shutdown_drain = Budget {
            max_rows: drain_budget.max_rows,
            max_time: self.seconds(
                "drain.shutdown_max_secs",
                drain.shutdown_max_secs,
                0.0,
                3600.0,
            )?,
        };
        let max_body_bytes =
            self.count("api.max_body_bytes", raw.api.max_body_bytes, 1024, 1 << 30)?;
        let max_buffered_body_bytes = self.count(
            "api.max_buffered_body_bytes",
            raw.api.max_buffered_body_bytes,
            1024,
            1 << 40,
        )?;
        if max_buffered_body_bytes < max_body_bytes {
            return Err(self.invalid(
                "api.max_buffered_body_bytes",
                format!("must be at least api.max_body_bytes ({max_body_bytes}): a body of the largest size allowed would never be read"),
            ));
        }
        let pid_file = flags
            .pid_file
            .clone()
            .unwrap_or_else(|| data_dir.join(super::PID_FILE_NAME));
        Ok(Config {
            config_file,
            pid_file,
            data_dir,
            log: LogConfig {
                format: log_format,
                filter: super::compat::log_filter(raw.log.filter),
            },
            api: ApiConfig {
                listen: raw.api.listen,
                shutdown_grace: self.seconds(
                    "api.shutdown_grace_secs",
                    raw.api.shutdown_grace_secs,
                    0.0,
                    3600.0,
                )?,
                allowed_hosts: raw.api.allowed_hosts,
                cors_origins: self.origins(raw.api.cors_origins)?,
                token: api_token,
                max_body_bytes,
                max_buffered_body_bytes,
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
            },
            store: StoreConfig {
                synchronous,
                busy_timeout,
                synced_retention,
                max_pending_rows: self
                    .positive("store.max_pending_rows", raw.store.max_pending_rows)?,
                max_pending_bytes: self
                    .positive("store.max_pending_bytes", raw.store.max_pending_bytes)?,
            },
            sync: SyncConfig {
                engine: settings,
                brain_id: self.brain_id(raw.sync.brain_id)?,
                max_pending_rows_without_key: self.positive(
                    "sync.max_pending_rows_without_key",
                    raw.sync.max_pending_rows_without_key,
                )?,
            },
            drain: DrainConfig {
                budget: drain_budget,
                shutdown: shutdown_drain,
            },
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
