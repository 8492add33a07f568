//! Reading a JSON request body safely: declared as JSON (415), within the size limit (413), in
//! time (408: a client that never finishes its body does not hold a connection forever), valid
//! UTF-8 and valid JSON of the expected shape (400, with serde's message naming the field and
//! position). Deep nesting stops at serde_json's recursion limit (128) with a 400.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Bounds on request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Longest a client may take to send its body.
    pub timeout: Duration,
}

/// Reads and parses the body of `request` as `T`.
pub(super) async fn read_json<T: DeserializeOwned>(
    request: Request,
    limits: BodyLimits,
) -> Result<T, ApiError> {
    let body = read_text(request, limits).await?;
    parse_json(&body)
}

/// Reads the body of `request` as text: declared as JSON, within the limits, valid UTF-8. Its JSON
/// is left to the caller.
pub(super) async fn read_text(request: Request, limits: BodyLimits) -> Result<String, ApiError> {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(is_json) {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limits.max_bytes) {
        return Err(ApiError::too_large(limits.max_bytes));
    }
    let bytes = read_bounded(body, limits).await?;
    // `Vec::from` takes the buffer over when nothing else shares it and copies it otherwise (at
    // most the size limit); either way the text is checked once.
    String::from_utf8(Vec::from(bytes)).map_err(|err| {
        ApiError::bad_request(
            "invalid_utf8",
            format!(
                "the body is not valid UTF-8 (at byte {})",
                err.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Parses `text` as `T`: `malformed_json` if it is not JSON, `invalid_request` if it is JSON of
/// the wrong shape, each with serde's message naming the field and position.
pub(super) fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|err| {
        let code = if err.is_syntax() || err.is_eof() {
            "malformed_json"
        } else {
            "invalid_request"
        };
        ApiError::bad_request(code, format!("invalid request body: {err}"))
    })
}

async fn read_bounded(body: Body, limits: BodyLimits) -> Result<axum::body::Bytes, ApiError> {
    match tokio::time::timeout(limits.timeout, axum::body::to_bytes(body, limits.max_bytes)).await {
        Err(_) => Err(ApiError::body_timeout()),
        Ok(Ok(bytes)) => Ok(bytes),
        // `to_bytes` fails for a body over the limit, or a connection that broke mid-body.
        Ok(Err(err)) => {
            let over_limit = std::error::Error::source(&err)
                .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
            if over_limit {
                Err(ApiError::too_large(limits.max_bytes))
            } else {
                Err(ApiError::bad_request(
                    "body_read_failed",
                    format!("could not read the request body: {err}"),
                ))
            }
        }
    }
}

/// `application/json`, with or without parameters (`; charset=utf-8`), any case.
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for (value, expected) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("", false),
        ] {
            assert_eq!(is_json(value), expected, "{value:?}");
        }
    }
}
