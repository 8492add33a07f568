//! The operator routes: `POST /sync` (the dashboard's "Sync now": one bounded drain right now),
//! `GET /v1/queue` and `POST /v1/queue/retry` (the `gradata queue` commands over HTTP), and
//! `GET /metrics` (Prometheus text).
//!
//! The drain is the sync engine's and the rows are the store's: these routes only ask and report.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::clock;
use crate::metrics::QueueReading;
use crate::store::{RetrySelector, RowId, RowState};
use crate::sync::{DrainReport, StopReason, SyncState, Trigger};

/// Most rows `GET /v1/queue` returns at once.
const MAX_LIST: usize = 1000;

/// What the original daemon answered to `POST /sync` when there were rows to push and no key.
/// The Gradata dashboard shows this text as it is.
const NO_KEY_ERROR: &str = "No Gradata API key found. Set GRADATA_API_KEY, write ~/.gradata/key, \
                            or pass --api-key to the daemon.";

/// `POST /sync`: runs one bounded drain now (rows waiting on a backoff timer included) and says
/// what it delivered, what is still pending, and the sync state.
///
/// The answer carries the original daemon's shape (`status`, `pushed`, `last_sync_at`, or
/// `status: "error"` with `error` and a 502 when the push failed) beside this service's fields,
/// so the dashboard's "Sync now" reads it as it read the original's.
pub(super) async fn sync_now(State(state): State<super::State>) -> (StatusCode, Json<Value>) {
    let engine = state.engine();
    let report = engine
        .drain(
            Trigger::Manual,
            state.manual_drain_budget(),
            &CancellationToken::new(),
            &mut |_| {},
        )
        .await;
    let settings = engine.settings();
    let no_key = settings.enabled && settings.api_key.is_none();
    let status = engine.status().snapshot();
    let mut body = json!({
        "status": "ok",
        "pushed": report.delivered,
        "delivered": report.delivered,
        "dead": report.dead,
        "retried": report.retried,
        "pending": report.remaining,
        "reason": report.reason,
        "detail": report.detail,
        "state": status.state.as_str(),
        "last_success_at": status.last_success_at,
        "last_error": status.last_error,
    });
    match sync_failure(&report, no_key) {
        None => {
            body["last_sync_at"] =
                json!(humantime::format_rfc3339_millis(clock::now()).to_string());
            (StatusCode::OK, Json(body))
        }
        Some((code, error)) => {
            body["status"] = json!("error");
            body["error"] = json!(error);
            (code, Json(body))
        }
    }
}

/// Why a `POST /sync` failed and its status, or `None` when it did what it could: a sync fails
/// (502, as the original's) when rows are still pending and the drain stopped because the ingest
/// could not be reached, refused them or throttled, because no key is configured, or because sync
/// is switched off, or the ingest took none of the rows it was sent; and (500) when the outbox
/// could not be read. A drain that delivered some rows, or found every pending row leased by
/// another drainer, did not fail: what is left is retried later.
fn sync_failure(report: &DrainReport, no_key: bool) -> Option<(StatusCode, String)> {
    if report.remaining.is_none_or(|pending| pending == 0) {
        return None;
    }
    let detail = report.detail.as_deref().unwrap_or("no detail");
    let error = match report.reason {
        StopReason::Disabled if no_key => NO_KEY_ERROR.to_owned(),
        StopReason::Disabled => format!("cloud sync is disabled: {detail}"),
        StopReason::NoProgress => format!("the ingest is not taking events: {detail}"),
        StopReason::RateLimited => format!("the ingest is throttling: {detail}"),
        StopReason::AuthFailed => format!("the ingest refused the API key: {detail}"),
        StopReason::ConfigError => format!("the ingest URL is wrong: {detail}"),
        StopReason::StoreError => {
            return Some((
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the outbox could not be read: {detail}"),
            ));
        }
        // The drain went through the rows it could take, and the ingest took none of them.
        StopReason::Done | StopReason::RowBudget | StopReason::TimeBudget
            if report.delivered == 0 && report.retried > 0 =>
        {
            format!(
                "the ingest took none of the {} rows sent: {detail}",
                report.retried
            )
        }
        StopReason::Empty
        | StopReason::Done
        | StopReason::RowBudget
        | StopReason::Leased
        | StopReason::TimeBudget
        | StopReason::NoQueueTable
        | StopReason::NoDatabase
        | StopReason::Cancelled => return None,
    };
    Some((StatusCode::BAD_GATEWAY, error))
}

/// `GET /v1/queue` parameters.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    #[serde(default = "pending")]
    state: RowState,
    #[serde(default = "fifty")]
    limit: usize,
}

fn pending() -> RowState {
    RowState::Pending
}

fn fifty() -> usize {
    50
}

/// `GET /v1/queue?state=pending|dead|synced&limit=N`.
pub(super) async fn list(
    State(state): State<super::State>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    // axum's own rejection is a plain-text 400; every error of this API is JSON with a code.
    let Query(query) =
        query.map_err(|err| ApiError::bad_request("invalid_request", err.body_text()))?;
    let limit = query.limit.min(MAX_LIST);
    let rows = state.store().list(query.state, limit).await?;
    Ok(Json(json!({ "state": query.state, "rows": rows })))
}

/// `POST /v1/queue/retry` body: `{"ids": [..]}` or `{"all_dead": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryRequest {
    #[serde(default)]
    ids: Vec<i64>,
    #[serde(default)]
    all_dead: bool,
}

/// `POST /v1/queue/retry`.
pub(super) async fn retry(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<Value>, ApiError> {
    let (body, _share): (RetryRequest, _) = state.read_json(request).await?;
    let selector = match (body.all_dead, body.ids.is_empty()) {
        (true, true) => RetrySelector::AllDead,
        (false, false) => RetrySelector::Ids(body.ids.into_iter().map(RowId).collect()),
        (true, false) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give either ids or all_dead, not both",
            ));
        }
        (false, true) => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "give ids (a non-empty array) or all_dead: true",
            ));
        }
    };
    let retried = state.store().retry(selector).await?;
    state.wake();
    Ok(Json(json!({ "retried": retried })))
}

/// `GET /metrics`.
pub(super) async fn metrics(
    State(state): State<super::State>,
) -> Result<impl IntoResponse, ApiError> {
    let stats = state.store().stats().await?;
    let reading = QueueReading {
        pending: stats.pending,
        dead: stats.dead,
        synced: stats.synced,
        pending_bytes: stats.pending_bytes,
        oldest_pending_age: stats.oldest_pending_age(crate::clock::now()),
    };
    let all: Vec<&str> = SyncState::ALL.iter().map(|s| s.as_str()).collect();
    let metrics = state.metrics();
    let room = &state.settings().body_room;
    metrics.body_room(room.held(), room.bytes());
    let text = metrics.render(&reading, state.status().state().as_str(), &all);
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report(reason: StopReason, remaining: Option<u64>) -> DrainReport {
        let mut report =
            DrainReport::skipped(reason, remaining, Some("connection refused".to_owned()));
        report.elapsed = Duration::from_millis(5);
        report
    }

    fn sent(mut report: DrainReport, delivered: u64, retried: u64) -> DrainReport {
        report.delivered = delivered;
        report.retried = retried;
        report
    }

    #[test]
    fn a_drain_that_delivered_nothing_of_what_it_sent_failed() {
        let none_taken = sent(report(StopReason::Done, Some(3)), 0, 3);
        let (code, error) = sync_failure(&none_taken, false).expect("nothing was taken");
        assert_eq!(code, StatusCode::BAD_GATEWAY);
        assert!(error.contains("none of the 3 rows"), "{error}");
        let some_taken = sent(report(StopReason::Done, Some(3)), 2, 3);
        assert_eq!(
            sync_failure(&some_taken, false),
            None,
            "some were delivered"
        );
    }

    #[test]
    fn a_sync_fails_only_when_rows_are_left_for_a_reason_of_the_ingest_or_the_key() {
        let bad_gateway = Some(StatusCode::BAD_GATEWAY);
        for (reason, remaining, no_key, expected) in [
            (StopReason::Done, Some(0), false, None),
            (StopReason::Empty, Some(0), true, None),
            (StopReason::RowBudget, Some(10), false, None),
            (StopReason::TimeBudget, Some(10), false, None),
            (StopReason::Leased, Some(10), false, None),
            // Nothing left to push is a success, whatever stopped the drain.
            (StopReason::NoProgress, Some(0), false, None),
            (StopReason::Disabled, Some(0), true, None),
            (StopReason::NoProgress, Some(3), false, bad_gateway),
            (StopReason::RateLimited, Some(3), false, bad_gateway),
            (StopReason::AuthFailed, Some(3), false, bad_gateway),
            (StopReason::ConfigError, Some(3), false, bad_gateway),
            (StopReason::Disabled, Some(3), true, bad_gateway),
            (StopReason::Disabled, Some(3), false, bad_gateway),
            (
                StopReason::StoreError,
                Some(3),
                false,
                Some(StatusCode::INTERNAL_SERVER_ERROR),
            ),
        ] {
            let failure = sync_failure(&report(reason, remaining), no_key);
            assert_eq!(
                failure.as_ref().map(|(code, _)| *code),
                expected,
                "{reason:?}, {remaining:?} pending, no key: {no_key}: {failure:?}"
            );
        }
    }

    #[test]
    fn without_a_key_the_error_is_the_original_daemons() {
        let (_, error) = sync_failure(&report(StopReason::Disabled, Some(1)), true)
            .expect("rows pending without a key is a failure");
        assert_eq!(error, NO_KEY_ERROR);
        let (_, error) = sync_failure(&report(StopReason::NoProgress, Some(1)), false)
            .expect("rows pending behind a down ingest is a failure");
        assert!(error.contains("connection refused"), "{error}");
    }
}
