//! Turns the merged [`RawConfig`] into a [`Config`]: the checks the options' declarations name
//! (one method of [`Validator`] each, given the key, the value and the declared bounds), the
//! checks across options, and the sync engine's and the drains' settings assembled from the
//! checked values. Every error names the key and where its value came from.
//!
//! It knows nothing of how the layers were read or merged; `layers` did that.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::credentials::{resolve_api_key, resolve_data_dir};
use super::options::{self, Checked, RawConfig};
use super::{Config, DrainConfig, Environment, Error, Flags, LogFormat, Source, SyncConfig};
use crate::api::guard::LocalToken;
use crate::store;
use crate::sync::{self, Budget};

/// Checks values against where they came from; the API key's sources are the flags and the
/// environment besides the configured file.
pub(super) struct Validator<'a> {
    pub(super) sources: &'a BTreeMap<String, Source>,
    pub(super) flags: &'a Flags,
    pub(super) env: &'a Environment,
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

    pub(super) fn seconds(
        &self,
        key: &str,
        value: f64,
        min: f64,
        max: f64,
    ) -> Result<Duration, Error> {
        if !value.is_finite() || value < min || value > max {
            return Err(self.invalid(
                key,
                format!("must be between {min} and {max} seconds, got {value}"),
            ));
        }
        Ok(Duration::from_secs_f64(value))
    }

    pub(super) fn count(&self, key: &str, value: u64, min: u64, max: u64) -> Result<usize, Error> {
        if value < min || value > max {
            return Err(self.invalid(key, format!("must be between {min} and {max}, got {value}")));
        }
        usize::try_from(value).map_err(|_| self.invalid(key, "too large"))
    }

    pub(super) fn positive(&self, key: &str, value: u64) -> Result<u64, Error> {
        if value == 0 {
            return Err(self.invalid(key, "must be at least 1"));
        }
        Ok(value)
    }

    pub(super) fn build(
        &self,
        raw: RawConfig,
        config_file: Option<PathBuf>,
    ) -> Result<Config, Error> {
        let data_dir = resolve_data_dir(raw.data_dir.as_deref(), self.env)?;
        let Checked {
            log,
            api,
            store,
            sync,
            drain,
        } = options::check(self, raw)?;
        for address in &api.listen {
            // Checked here, not by `addresses`, because it needs the token: the API is for this
            // machine (DESIGN §7), and the Host guard stops a web page, not a network client,
            // which can send any Host. With a token, writes are guarded, and the operator has
            // chosen to expose the API (a container's published port).
            match address.parse::<std::net::SocketAddr>() {
                Ok(socket) if !socket.ip().is_loopback() && api.token.is_none() => {
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
        if api.max_buffered_body_bytes < api.max_body_bytes {
            return Err(self.invalid(
                "api.max_buffered_body_bytes",
                format!(
                    "must be at least api.max_body_bytes ({}): a body of the largest size allowed would never be read",
                    api.max_body_bytes
                ),
            ));
        }
        if sync.concurrency > sync.max_concurrency {
            return Err(self.invalid(
                "sync.concurrency",
                format!(
                    "{} is above sync.max_concurrency ({})",
                    sync.concurrency, sync.max_concurrency
                ),
            ));
        }
        if sync.lease <= sync.request_timeout {
            return Err(self.invalid("sync.lease_secs", "must be longer than sync.request_timeout_secs: a lease not renewed for this long is freed, and a drain must be able to renew its leases between the answers of its requests"));
        }
        let pid_file = self
            .flags
            .pid_file
            .clone()
            .unwrap_or_else(|| data_dir.join(super::PID_FILE_NAME));
        let (api_key, api_key_source) = sync.api_key;
        let budget = Budget {
            max_rows: drain.max_rows,
            max_time: drain.max_time,
        };
        Ok(Config {
            config_file,
            pid_file,
            data_dir,
            log,
            api,
            store,
            sync: SyncConfig {
                engine: sync::Settings {
                    ingest_url: sync.ingest_url,
                    api_key,
                    api_key_source,
                    enabled: sync.enabled,
                    batch_size: sync.batch_size,
                    concurrency: sync.concurrency,
                    max_concurrency: sync.max_concurrency,
                    connect_timeout: sync.connect_timeout,
                    request_timeout: sync.request_timeout,
                    lease: sync.lease,
                    backoff_base: sync.backoff_base,
                    backoff_cap: sync.backoff_cap,
                    pause_probe_interval: sync.pause_probe_interval,
                },
                brain_id: sync.brain_id,
                max_pending_rows_without_key: sync.max_pending_rows_without_key,
            },
            drain: DrainConfig {
                budget,
                // The same rows, its own time.
                shutdown: Budget {
                    max_time: drain.shutdown_max_time,
                    ..budget
                },
            },
        })
    }

    /// A value used as given.
    pub(super) fn any<T>(&self, _key: &str, value: T) -> Result<T, Error> {
        Ok(value)
    }

    pub(super) fn log_format(&self, key: &str, value: String) -> Result<LogFormat, Error> {
        match value.as_str() {
            "auto" => Ok(LogFormat::Auto),
            "journal" => Ok(LogFormat::Journal),
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(self.invalid(
                key,
                format!("expected auto, journal, text or json, got {other:?}"),
            )),
        }
    }

    /// The filter with the Python daemon's level names read as tracing's; an invalid filter is
    /// refused where logging is set up, which falls back to "info".
    pub(super) fn log_filter(&self, _key: &str, value: String) -> Result<String, Error> {
        Ok(super::compat::log_filter(value))
    }

    /// At least one address; each one's form is checked by `build`, with the token.
    pub(super) fn addresses(&self, key: &str, value: Vec<String>) -> Result<Vec<String>, Error> {
        if value.is_empty() {
            return Err(self.invalid(key, "needs at least one address"));
        }
        Ok(value)
    }

    pub(super) fn synchronous(
        &self,
        key: &str,
        value: String,
    ) -> Result<store::Synchronous, Error> {
        match value.to_ascii_lowercase().as_str() {
            "full" => Ok(store::Synchronous::Full),
            "normal" => Ok(store::Synchronous::Normal),
            other => Err(self.invalid(key, format!("expected full or normal, got {other:?}"))),
        }
    }

    pub(super) fn days(&self, key: &str, days: f64, min: f64, max: f64) -> Result<Duration, Error> {
        if !days.is_finite() || !(min..=max).contains(&days) {
            return Err(self.invalid(
                key,
                format!("must be between {min} and {max} days, got {days}"),
            ));
        }
        Ok(Duration::from_secs_f64(days * 86_400.0))
    }

    /// The key from the first source that has one, `value` (the configured key file) among them.
    pub(super) fn api_key(
        &self,
        key: &str,
        value: PathBuf,
    ) -> Result<(Option<sync::ApiKey>, String), Error> {
        resolve_api_key(self.flags, self.env, &value, &self.source(key))
    }

    pub(super) fn origins(&self, key: &str, origins: Vec<String>) -> Result<Vec<String>, Error> {
        for origin in &origins {
            // An origin is scheme://host[:port], nothing else; `*` is refused on purpose.
            let valid = Url::parse(origin).is_ok_and(|url| {
                matches!(url.scheme(), "http" | "https")
                    && url.host().is_some()
                    && url.path() == "/"
                    && !origin.ends_with('/')
            });
            if !valid {
                return Err(self.invalid(key, format!("{origin:?} is not an origin like https://app.gradata.ai (no path, no wildcard)")));
            }
        }
        Ok(origins)
    }

    pub(super) fn local_token(&self, key: &str, path: String) -> Result<Option<LocalToken>, Error> {
        if path.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|err| Error::Io {
            path: PathBuf::from(&path),
            err,
        })?;
        match LocalToken::new(&text) {
            Some(token) => Ok(Some(token)),
            None => Err(self.invalid(key, format!("{path} is empty"))),
        }
    }

    pub(super) fn brain_id(&self, key: &str, id: String) -> Result<Option<String>, Error> {
        if id.is_empty() {
            return Ok(None);
        }
        if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.invalid(key, "must be 1 to 128 printable ASCII characters"));
        }
        Ok(Some(id))
    }

    pub(super) fn ingest_url(&self, key: &str, value: String) -> Result<Url, Error> {
        let url = Url::parse(&value)
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
