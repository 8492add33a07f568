//! What a response from the ingest API means for the row and for the worker (DESIGN §5 table).
//!
//! [`classify`] is a pure function of the status and the `Retry-After` header, so every row of the
//! table has a unit test and the drain engine only acts on a [`Disposition`].

use std::time::{Duration, SystemTime};

/// Longest `Retry-After` honoured; a larger value is taken as this (DESIGN §5).
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

/// What to do with a row after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// 2xx: the row is synced.
    Delivered,
    /// 408, 425, 5xx but 501, or no response at all: retry this row after its backoff.
    RetryLater,
    /// 429, or 503 with `Retry-After`: retry after `max(retry_after, backoff)` and pause all
    /// sending until then.
    Throttled {
        /// What the server asked for, when it said.
        retry_after: Option<Duration>,
    },
    /// 401, 403: keep the row, pause sending (`auth_failed`).
    AuthFailed,
    /// 3xx, 404, 405, 410, 501: keep the row, pause sending (`config_error`): the URL is wrong.
    ConfigError,
    /// 400, 413, 415, 422 and every other 4xx: the server will never take this payload; the row
    /// goes to dead, where an operator can inspect and retry it.
    Dead,
}

/// Classifies an HTTP response. `retry_after` is the raw header value, if any; `now` anchors an
/// HTTP-date.
pub fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Disposition {
    match status {
        200..=299 => Disposition::Delivered,
        429 => Disposition::Throttled {
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        503 => match retry_after.and_then(|v| parse_retry_after(v, now)) {
            Some(delay) => Disposition::Throttled {
                retry_after: Some(delay),
            },
            None => Disposition::RetryLater,
        },
        401 | 403 => Disposition::AuthFailed,
        300..=399 | 404 | 405 | 410 | 501 => Disposition::ConfigError,
        408 | 425 | 500..=599 => Disposition::RetryLater,
        400..=499 => Disposition::Dead,
        // 1xx cannot be final and anything else is not HTTP: treat as transient, never drop.
        _ => Disposition::RetryLater,
    }
}

/// Parses `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3), capped at
/// [`RETRY_AFTER_CAP`]. A date in the past means "now" (zero); garbage means "not given".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too large for u64 is still "a very long time".
        Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: u16, retry_after: Option<&str>, expected: Disposition) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            classify(status, retry_after, now),
            expected,
            "status {status} {retry_after:?}"
        );
    }

    #[test]
    fn the_design_table_row_by_row() {
        use Disposition::*;
        for status in [200, 201, 202, 204, 299] {
            check(status, None, Delivered);
        }
        for status in [408, 425, 500, 502, 503, 504, 599] {
            check(status, None, RetryLater);
        }
        check(429, None, Throttled { retry_after: None });
        check(
            429,
            Some("7"),
            Throttled {
                retry_after: Some(Duration::from_secs(7)),
            },
        );
        check(
            503,
            Some("2"),
            Throttled {
                retry_after: Some(Duration::from_secs(2)),
            },
        );
        check(503, Some("soon"), RetryLater);
        for status in [401, 403] {
            check(status, None, AuthFailed);
        }
        for status in [301, 302, 307, 308, 404, 405, 410, 501] {
            check(status, None, ConfigError);
        }
        for status in [400, 402, 409, 411, 413, 415, 422, 451, 499] {
            check(status, None, Dead);
        }
        check(100, None, RetryLater);
    }

    #[test]
    fn retry_after_in_both_forms_and_capped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        for (value, expected) in [
            ("0", Some(Duration::ZERO)),
            (" 120 ", Some(Duration::from_secs(120))),
            ("999999", Some(RETRY_AFTER_CAP)),
            ("99999999999999999999999", Some(RETRY_AFTER_CAP)),
            (later.as_str(), Some(Duration::from_secs(90))),
            (earlier.as_str(), Some(Duration::ZERO)),
            ("-5", None),
            ("", None),
            ("tomorrow", None),
        ] {
            assert_eq!(parse_retry_after(value, now), expected, "{value:?}");
        }
    }
}
