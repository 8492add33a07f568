//! Reading a JSON request body safely: declared as JSON (415), within the size limit (413), in
//! time (408: a client that never finishes its body does not hold a connection forever), valid
//! UTF-8 and valid JSON of the expected shape (400, with serde's message naming the field and
//! position). Deep nesting stops at serde_json's recursion limit (128) with a 400.
//!
//! Bodies share one room in memory ([`BodyRoom`], `api.max_buffered_body_bytes`): a request takes
//! its share before any of its body is read and holds it until its answer is ready, so a thousand
//! clients posting large bodies at once are read in turn, not all into memory together. A request
//! that finds no room within the body timeout gets 503 unread.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::header;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

use super::episode::{Line, SharedEpisode};
use super::error::ApiError;

/// Bounds on request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Longest a client may take to send its body.
    pub timeout: Duration,
}

/// The memory request bodies may take at once, shared by every connection. Room is counted in
/// whole KiB: a request takes its declared length (the largest body allowed when it declares none,
/// as with chunked encoding), rounded up.
#[derive(Debug)]
pub struct BodyRoom {
    kib: Arc<Semaphore>,
    bytes: usize,
    /// Requests refused for want of room, from the first to the next that finds room.
    refusals: SharedEpisode,
}

/// A request's share of the [`BodyRoom`], given back when it is dropped.
#[derive(Debug)]
#[must_use = "the room is given back as soon as the share is dropped"]
pub(super) struct BodyShare {
    _permit: OwnedSemaphorePermit,
}

impl BodyRoom {
    /// Room for `bytes` of request bodies at once.
    pub fn new(bytes: usize) -> BodyRoom {
        BodyRoom {
            kib: Arc::new(Semaphore::new(kib(bytes) as usize)),
            bytes,
            refusals: SharedEpisode::default(),
        }
    }

    /// The room, in bytes, as it was configured.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Takes room for a body of `length` bytes, waiting up to `patience` for other requests to
    /// give some back (in the order they asked).
    pub(super) async fn take(
        &self,
        length: usize,
        patience: Duration,
    ) -> Result<BodyShare, ApiError> {
        let wanted = kib(length);
        let permits = Arc::clone(&self.kib);
        let taken = match permits.try_acquire_many_owned(wanted) {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::NoPermits) => {
                let permits = Arc::clone(&self.kib);
                tokio::time::timeout(patience, permits.acquire_many_owned(wanted))
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            // The semaphore is never closed; should it be, nothing can be read.
            Err(TryAcquireError::Closed) => None,
        };
        match taken {
            Some(permit) => {
                self.found_room();
                Ok(BodyShare { _permit: permit })
            }
            None => {
                self.refused();
                Err(ApiError::body_room_full(self.bytes))
            }
        }
    }

    /// Bytes requests hold in the room now (whole KiB).
    pub(super) fn held(&self) -> usize {
        (kib(self.bytes) as usize)
            .saturating_sub(self.kib.available_permits())
            .saturating_mul(1024)
    }

    /// Room left right now, in bytes (whole KiB).
    #[cfg(test)]
    fn available(&self) -> usize {
        self.kib.available_permits().saturating_mul(1024)
    }

    fn refused(&self) {
        let (message, refused) = match self.refusals.failure(()) {
            Some(Line::Started) => ("request bodies are refused: their memory is full", 1),
            Some(Line::Still(unlogged)) => ("request bodies are still refused", unlogged),
            None => return,
        };
        tracing::warn!(
            limit_bytes = self.bytes,
            refused,
            "{message}; raise api.max_buffered_body_bytes if clients post many large bodies at once"
        );
    }

    fn found_room(&self) {
        if let Some(episode) = self.refusals.success() {
            tracing::info!(
                refused = episode.count(),
                lasted_secs = episode.lasted().as_secs_f64(),
                "request bodies are read again"
            );
        }
    }
}

/// `bytes` in whole KiB, rounded up; a semaphore takes at most `u32::MAX` permits at once, far
/// more than the largest body allowed.
fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Reads and parses the body of `request` as `T`, with the share of the room it holds.
pub(super) async fn read_json<T: DeserializeOwned>(
    request: Request,
    limits: BodyLimits,
    room: &BodyRoom,
) -> Result<(T, BodyShare), ApiError> {
    let (body, share) = read_text(request, limits, room).await?;
    Ok((parse_json(&body)?, share))
}

/// Reads the body of `request` as text: declared as JSON, within the limits, valid UTF-8. Its JSON
/// is left to the caller; the share of the room is held until the caller drops it.
pub(super) async fn read_text(
    request: Request,
    limits: BodyLimits,
    room: &BodyRoom,
) -> Result<(String, BodyShare), ApiError> {
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
    // hyper knows the exact length when the request declares one, and that it is 0 when there is
    // no body at all; a chunked body may be as large as the limit.
    let length = body
        .size_hint()
        .exact()
        .and_then(|n| usize::try_from(n).ok())
        .map_or(limits.max_bytes, |n| n.min(limits.max_bytes));
    let share = room.take(length, limits.timeout).await?;
    let bytes = read_bounded(body, limits).await?;
    // `Vec::from` takes the buffer over when nothing else shares it and copies it otherwise (at
    // most the size limit); either way the text is checked once.
    let text = String::from_utf8(Vec::from(bytes)).map_err(|err| {
        ApiError::bad_request(
            "invalid_utf8",
            format!(
                "the body is not valid UTF-8 (at byte {})",
                err.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok((text, share))
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
    fn room_is_counted_in_whole_kib_rounded_up() {
        assert_eq!([0, 1, 1024, 1025, 1 << 20].map(kib), [0, 1, 1, 2, 1024]);
        assert_eq!(BodyRoom::new(1025).available(), 2048);
    }

    #[tokio::test]
    async fn a_body_waits_for_room_and_gets_it_when_another_gives_it_back() {
        let room = Arc::new(BodyRoom::new(4096));
        let first = room.take(3000, Duration::ZERO).await.unwrap();
        assert_eq!((room.available(), room.held()), (1024, 3072));
        let waiting = tokio::spawn({
            let room = Arc::clone(&room);
            async move { room.take(2048, Duration::from_secs(60)).await.map(drop) }
        });
        // An empty body needs no room, even while the room is full.
        let empty = room.take(0, Duration::ZERO).await.unwrap();
        drop(first);
        waiting.await.unwrap().unwrap();
        drop(empty);
        assert_eq!(room.available(), 4096);
        assert!(room.refusals.ongoing().is_none());
    }

    #[tokio::test]
    async fn a_body_that_finds_no_room_in_time_is_refused_until_room_is_found() {
        let room = BodyRoom::new(4096);
        let held = room.take(4096, Duration::ZERO).await.unwrap();
        let refused = room.take(1, Duration::from_millis(20)).await.unwrap_err();
        assert_eq!(
            refused.status(),
            axum::http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(
            refused
                .message()
                .contains("api.max_buffered_body_bytes = 4096"),
            "{}",
            refused.message()
        );
        assert_eq!(
            room.refusals.ongoing().map(|ongoing| ongoing.failures),
            Some(1)
        );
        // The refused request holds nothing.
        drop(held);
        assert_eq!(room.available(), 4096);
        let _share = room.take(4096, Duration::ZERO).await.unwrap();
        assert!(room.refusals.ongoing().is_none());
    }

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
