//! The ingest client: one POST per event, exactly as DESIGN §5 specifies, over pooled keep-alive
//! connections, and the [`ApiKey`] it authenticates with.
//!
//! Built directly on hyper's pooled client with rustls, not on a higher-level HTTP library: the
//! drain sends one small request per row, so per-request overhead is the drain's cost, and the
//! higher-level layers (redirect handling that re-parses every response's URL, per-request
//! middleware) cost more CPU than the request itself while giving nothing DESIGN §5 wants.
//! Redirects are never followed because nothing here follows them.
//!
//! The client only sends and reports; what a response means is [`super::classify()`]'s job, and what
//! to do about it is the drain engine's.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT,
};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as PooledClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use url::Url;

use super::classify::{Disposition, classify};
use crate::store::ClaimedRow;

/// The header that carries the event id, for the cloud to deduplicate re-sends.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Every body is the row's payload, verbatim.
const JSON: HeaderValue = HeaderValue::from_static("application/json");
/// `User-Agent: gradata/<version>` (DESIGN §5).
const GRADATA_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("gradata/", env!("CARGO_PKG_VERSION")));
/// Longest response body kept for `last_error` and logs.
const BODY_PREVIEW_BYTES: usize = 200;
/// Most response body read to keep a connection reusable; a longer body closes the connection.
const BODY_DRAIN_LIMIT: usize = 64 * 1024;
/// Longest wait for the body of a response whose status already arrived. The status decides what
/// happens to the row; the body is only read for the preview and to reuse the connection, so a
/// body that stalls must not turn a 2xx or a 401 into a timeout.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// The TLS stack could not be set up.
    #[error("cannot set up TLS for the ingest client")]
    Tls(#[source] rustls::Error),
    /// The ingest URL is not one an HTTP request can be sent to.
    #[error("the ingest URL {url} cannot be used for a request")]
    Url {
        /// The URL as configured.
        url: String,
        /// Why it was refused.
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
}

/// Connection settings of the client.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Where events are posted.
    pub ingest_url: Url,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed until the response's status and headers (the body then gets what is left,
    /// at most `BODY_READ_TIMEOUT`).
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
#[derive(Clone)]
pub struct Client {
    http: PooledClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    bearer: HeaderValue,
    request_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bearer header is the API key: never printed.
        f.debug_struct("Client")
            .field("uri", &self.uri)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client that authenticates with `key`.
    pub fn new(options: &ClientOptions, key: &ApiKey) -> Result<Client, ClientError> {
        let bearer = key.bearer()?;
        let uri: Uri = options
            .ingest_url
            .as_str()
            .parse()
            .map_err(|source| ClientError::Url {
                url: options.ingest_url.to_string(),
                source,
            })?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false); // the TLS layer above it handles https://
        tcp.set_connect_timeout(Some(options.connect_timeout));
        tcp.set_nodelay(true);
        // Plain http:// is refused by the configuration for anything but loopback (DESIGN §5).
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(ClientError::Tls)?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let http = PooledClient::builder(TokioExecutor::new())
            .pool_max_idle_per_host(options.max_idle_connections)
            .build(connector);
        Ok(Client {
            http,
            uri,
            bearer,
            request_timeout: options.request_timeout,
        })
    }

    /// Posts one row's payload, verbatim.
    pub async fn post(&self, row: &ClaimedRow) -> Attempt {
        self.send(row.event_id.as_deref(), row.payload_json.clone())
            .await
    }

    /// Posts a payload, verbatim, with its event id as the `Idempotency-Key`. Takes the body by
    /// value: the drain hands over the payload it will not need again instead of copying it.
    ///
    /// The request timeout runs until the response's status and headers arrive; the body is then
    /// read under a short bound of its own (`BODY_READ_TIMEOUT`, never past the request
    /// timeout), and the disposition stays the one the status decided even if the body stalls.
    pub async fn send(&self, event_id: Option<&str>, body: String) -> Attempt {
        let started = tokio::time::Instant::now();
        let response =
            match tokio::time::timeout(self.request_timeout, self.request(event_id, body)).await {
                Ok(Ok(response)) => response,
                Ok(Err(attempt)) => return attempt,
                Err(_) => {
                    return Attempt::failed(format!(
                        "timeout: no response within {}",
                        humantime::format_duration(self.request_timeout)
                    ));
                }
            };
        let left = self.request_timeout.saturating_sub(started.elapsed());
        read_answer(response, BODY_READ_TIMEOUT.min(left)).await
    }

    /// Sends the request and waits for the response's head.
    async fn request(
        &self,
        event_id: Option<&str>,
        body: String,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Attempt> {
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        headers.insert(AUTHORIZATION, self.bearer.clone());
        headers.insert(CONTENT_TYPE, JSON);
        headers.insert(USER_AGENT, GRADATA_AGENT);
        if let Some(event_id) = event_id {
            match HeaderValue::from_str(event_id) {
                Ok(value) => {
                    headers.insert(IDEMPOTENCY_KEY, value);
                }
                // Event ids are checked when accepted; one that is not a valid header value can
                // only come from a row written by someone else. Sent without the key, the cloud
                // still takes it (it dedupes by the payload's own event_id).
                Err(_) => tracing::debug!("event id is not a valid header value; sent without it"),
            }
        }
        self.http
            .request(request)
            .await
            .map_err(|err| Attempt::failed(transport_error(&err)))
    }
}

/// Classifies a response by its status and headers, then reads its body (bounded in size and by
/// `body_timeout`) for the preview. A body cut short leaves the disposition as the status decided.
async fn read_answer(
    response: hyper::Response<hyper::body::Incoming>,
    body_timeout: Duration,
) -> Attempt {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let disposition = classify(status, retry_after.as_deref(), SystemTime::now());
    // Read the body (bounded) so the connection goes back to the pool, keeping a preview of it for
    // failures. A body that stalls past the bound is dropped with its connection.
    let mut body = response.into_body();
    let mut preview = Vec::new();
    let read_body = async {
        let mut read = 0;
        while read < BODY_DRAIN_LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    let Ok(chunk) = frame.into_data() else {
                        continue; // trailers
                    };
                    read += chunk.len();
                    let room = BODY_PREVIEW_BYTES.saturating_sub(preview.len());
                    preview.extend_from_slice(&chunk[..room.min(chunk.len())]);
                }
                None | Some(Err(_)) => break,
            }
        }
    };
    let complete = tokio::time::timeout(body_timeout, read_body).await.is_ok();
    let detail = match disposition {
        Disposition::Delivered => String::new(),
        _ => {
            let body = String::from_utf8_lossy(&preview);
            let cut = if complete {
                ""
            } else {
                " (body cut short: it stalled)"
            };
            format!("http {status}: {}{cut}", body.trim())
        }
    };
    Attempt {
        disposition,
        status: Some(status),
        detail,
    }
}

impl Attempt {
    /// No response came: the network, the connection or the timeout failed. Always retried.
    fn failed(detail: String) -> Attempt {
        Attempt {
            disposition: Disposition::RetryLater,
            status: None,
            detail,
        }
    }
}

/// Describes a transport failure, with its causes; never our headers.
fn transport_error(err: &hyper_util::client::legacy::Error) -> String {
    let kind = if err.is_connect() {
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
