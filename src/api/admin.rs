//! The operator routes: `POST /sync` (the dashboard's "Sync now": one bounded drain right now),
//! `GET /v1/queue` and `POST /v1/queue/retry` (the `gradata queue` commands over HTTP), and
//! `GET /metrics` (Prometheus text).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::error::ApiError;
use crate::metrics::QueueReading;
use crate::store::{RetrySelector, RowId, RowState};
use crate::sync::{SyncState, Trigger};

/// Most rows `GET /v1/queue` returns at once.
const MAX_LIST: usize = 1000;

/// `POST /sync`: runs one bounded drain now (rows waiting on a backoff timer included) and says
/// what it delivered, what is still pending, and the sync state.
pub(super) async fn sync_now(State(state): State<super::State>) -> Json<Value> {
    let engine = state.engine();
    let report = engine
        .drain(
            Trigger::Manual,
            state.manual_drain_budget(),
            &CancellationToken::new(),
            &mut |_| {},
        )
        .await;
    let status = engine.status().snapshot();
    Json(json!({
        "status": "ok",
        "delivered": report.delivered,
        "dead": report.dead,
        "retried": report.retried,
        "pending": report.remaining,
        "reason": report.reason,
        "detail": report.detail,
        "state": status.state.as_str(),
        "last_success_at": status.last_success_at,
        "last_error": status.last_error,
    }))
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
