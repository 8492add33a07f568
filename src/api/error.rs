//! `ApiError`: every failure of the local API as a JSON body with a reason, and the right status.
//!
//! The body is `{"error": "<what is wrong, for a person>", "code": "<stable machine code>"}`: the
//! original daemon's clients read `error`, new clients can branch on `code`. A handler returns
//! `Result<_, ApiError>`; nothing is ever answered by dropping the connection.
//!
//! It knows no route: each handler picks the failure, and a store error maps to its status here.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::logging::Causes;
use crate::store;

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
    /// A flag of the route's own answer the body keeps beside the error, as in
    /// `{"logged": false, "error": …}`: a client that reads only that flag still learns the truth.
    flag: Option<(&'static str, bool)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            flag: None,
        }
    }

    /// 400: the body is not valid JSON, or not of the expected shape.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: a write without the configured local token.
    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this write needs the local API token (Authorization: Bearer …)",
        )
    }

    /// 403: a request from a host name or origin that is not allowed.
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    /// 404: no such route.
    pub fn not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {path}"),
        )
    }

    /// 405: the route exists with other methods.
    pub fn method_not_allowed(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )
    }

    /// 408: the client did not send its body in time.
    pub fn body_timeout() -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
        )
    }

    /// 413: the body is larger than allowed.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 415: the body is not declared as JSON.
    pub fn unsupported_media_type(found: Option<&str>) -> ApiError {
        let found = found.map_or_else(|| "none".to_owned(), |f| format!("{f:?}"));
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type must be application/json, got {found}"),
        )
    }

    /// 503 with `Retry-After`: the queue is full or the disk is; nothing was written.
    pub fn unavailable(
        code: &'static str,
        message: impl Into<String>,
        retry_after: Duration,
    ) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// 503 with `Retry-After`: other requests' bodies fill the memory set aside for bodies, and
    /// none was given back in time; this body was not read.
    pub fn body_room_full(room: usize) -> ApiError {
        ApiError::unavailable(
            "body_memory_full",
            format!(
                "other requests' bodies fill the memory set aside for them (api.max_buffered_body_bytes = {room}); this body was not read and nothing was written"
            ),
            Duration::from_secs(1),
        )
    }

    /// 500: the store failed for another reason; nothing was acknowledged.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The same error, with the route's `key: value` flag in its body.
    pub fn with_flag(self, key: &'static str, value: bool) -> ApiError {
        ApiError {
            flag: Some((key, value)),
            ..self
        }
    }

    /// What is wrong, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> ApiError {
        match err {
            store::Error::DiskFull(_) => ApiError::unavailable(
                "disk_full",
                "the disk is full; nothing was written",
                Duration::from_secs(30),
            ),
            store::Error::Busy(_) => ApiError::unavailable(
                "store_busy",
                "the outbox is busy; nothing was written",
                Duration::from_secs(1),
            ),
            full @ store::Error::QueueFull { .. } => ApiError::unavailable(
                "queue_full",
                format!("{full}; nothing was written"),
                // Long enough for a healthy worker to make room; a producer retrying sooner
                // would only be refused again.
                Duration::from_secs(30),
            ),
            store::Error::Closed => ApiError::unavailable(
                "shutting_down",
                "the service is shutting down; nothing was written",
                Duration::from_secs(5),
            ),
            // The service stops on this and systemd starts it again; a retry then succeeds.
            store::Error::SyncFailed(detail) => ApiError::unavailable(
                "flush_failed",
                format!(
                    "the outbox could not flush to disk, so this write is not acknowledged; the service is stopping to start again on what the disk holds: {detail}"
                ),
                Duration::from_secs(5),
            ),
            other => ApiError::internal(format!(
                "the outbox failed; nothing was written: {}",
                Causes(&other)
            )),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message, "code": self.code });
        if let (Some((key, value)), Some(fields)) = (self.flag, body.as_object_mut()) {
            fields.insert(key.to_owned(), value.into());
        }
        let body = Json(body);
        let mut response = (self.status, body).into_response();
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs().max(1).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
