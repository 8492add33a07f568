//! The ingest client: one POST per event, exactly as DESIGN §5 specifies, over pooled keep-alive
//! connections, and the [`ApiKey`] it authenticates with.
//!
//! The client only sends and reports; what a response means is [`super::classify()`]'s job, and what
//! to do about it is the drain engine's.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use url::Url;

use super::classify::{Disposition, classify};
use crate::store::ClaimedRow;

/// The header that carries the event id, for the cloud to deduplicate re-sends.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Longest response body kept for `last_error` and logs.
const BODY_PREVIEW_BYTES: usize = 200;
/// Most response body read to keep a connection reusable; a longer body closes the connection.
const BODY_DRAIN_LIMIT: usize = 64 * 1024;

/// The cloud API key. Never printed: `Debug` redacts it and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key, trimming the whitespace a file or a shell leaves around it. `None` if empty.
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_owned()))
    }

    fn bearer(&self) -> Result<HeaderValue, InvalidKey> {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", self.0)).map_err(|_| InvalidKey)?;
        value.set_sensitive(true);
        Ok(value)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The API key holds characters that cannot be sent in a header.
#[derive(Debug, thiserror::Error)]
#[error("the API key contains characters that are not allowed in an HTTP header")]
pub struct InvalidKey;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// See [`InvalidKey`].
    #[error(transparent)]
    InvalidKey(#[from] InvalidKey),
    /// The TLS stack or connection pool could not be set up.
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// Connection settings of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where events are posted.
    pub ingest_url: Url,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, response included.
    pub request_timeout: Duration,
    /// Idle connections kept per host; at least the maximum concurrency.
    pub max_idle_connections: usize,
}

/// The result of one POST.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// What it means for the row.
    pub disposition: Disposition,
    /// The HTTP status, when a response came.
    pub status: Option<u16>,
    /// For failures: the status and a preview of the body, or the transport error.
    pub detail: String,
}

/// Posts events to the ingest API. Cheap to clone; clones share the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    url: Url,
}

impl Client {
    /// Builds a client that authenticates with `key`.
    pub fn new(options: &ClientOptions, key: &ApiKey) -> Result<Client, ClientError> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, key.bearer()?);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("gradata/", env!("CARGO_PKG_VERSION"))),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // A POST must never silently become a GET, nor follow a redirect to another host
            // with our bearer token: a redirect is a configuration error (DESIGN §5).
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .pool_max_idle_per_host(options.max_idle_connections)
            .tcp_nodelay(true)
            .use_rustls_tls()
            .build()
            .map_err(ClientError::Build)?;
        Ok(Client {
            http,
            url: options.ingest_url.clone(),
        })
    }

    /// Posts one row's payload, verbatim.
    pub async fn post(&self, row: &ClaimedRow) -> Attempt {
        self.send(row.event_id.as_deref(), row.payload_json.clone())
            .await
    }

    /// Posts a payload, verbatim, with its event id as the `Idempotency-Key`. Takes the body by
    /// value: the drain hands over the payload it will not need again instead of copying it.
    pub async fn send(&self, event_id: Option<&str>, body: String) -> Attempt {
        let mut request = self.http.post(self.url.clone()).body(body);
        if let Some(event_id) = event_id {
            request = request.header(IDEMPOTENCY_KEY, event_id);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                return Attempt {
                    disposition: Disposition::RetryLater,
                    status: None,
                    detail: transport_error(&err),
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let disposition = classify(status, retry_after.as_deref(), SystemTime::now());
        // Read the body (bounded) so the connection goes back to the pool, keeping a preview of
        // it for failures.
        let mut preview = Vec::new();
        let mut read = 0;
        while read < BODY_DRAIN_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = BODY_PREVIEW_BYTES.saturating_sub(preview.len());
                    preview.extend_from_slice(&chunk[..room.min(chunk.len())]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let detail = match disposition {
            Disposition::Delivered => String::new(),
            _ => {
                let body = String::from_utf8_lossy(&preview);
                format!("http {status}: {}", body.trim())
            }
        };
        Attempt {
            disposition,
            status: Some(status),
            detail,
        }
    }
}

/// Describes a transport failure without the URL's query or our headers.
fn transport_error(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "network"
    };
    let mut message = format!("{kind}: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_debug_is_redacted_and_whitespace_trimmed() {
        let key = ApiKey::new("  gk_live_secret\n").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
        assert_eq!(key, ApiKey::new("gk_live_secret").unwrap());
        assert!(ApiKey::new(" \n").is_none());
    }
}
