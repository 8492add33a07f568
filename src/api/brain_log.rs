//! `POST /log-event` and `POST /checkpoint`: the routes that write the brain's event log (its
//! `events` table and `events.jsonl`, as the Python daemon does) and queue the same event for the
//! cloud, both in one transaction. The outbox's limit never refuses them: when the queue is full
//! the brain's log is still written and the answer says `queued: false`.

use axum::Json;
use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::brain::{brain_failed, read_request};
use super::capture::{event_id, timestamp};
use super::error::ApiError;
use crate::brain::pyjson::{Object, Value};
use crate::store::{EventId, Kind, NewEvent, OutboxEntry, OutboxOutcome};

/// `POST /log-event` body.
#[derive(Debug, Default, Deserialize)]
struct LogEventRequest {
    #[serde(default)]
    event_type: Option<String>,
    /// Any JSON: anything but an object is refused with `logged: false`.
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
}

/// `POST /log-event` answer.
#[derive(Debug, Serialize)]
pub(super) struct LogEventAnswer {
    logged: bool,
    event_id: EventId,
    queued: bool,
}

/// `POST /log-event`: the event under its upper-cased type, source `plugin.hook`, session 0, as
/// the Python daemon logs it.
pub(super) async fn log_event(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<LogEventAnswer>, ApiError> {
    let not_logged = |err: ApiError| err.with_flag("logged", false);
    let body: LogEventRequest = read_request(&state, request).await.map_err(not_logged)?;
    let event_type = body.event_type.unwrap_or_else(|| "unknown".to_owned());
    if event_type.trim().is_empty() {
        return Err(not_logged(ApiError::bad_request(
            "invalid_request",
            "event_type must not be empty",
        )));
    }
    let data = match body.data {
        None | Some(Value::Null) => Object::new(),
        Some(Value::Object(data)) => data,
        Some(_) => {
            return Err(not_logged(ApiError::bad_request(
                "invalid_request",
                "data must be a JSON object",
            )));
        }
    };
    let event_id = event_id(body.event_id.as_deref()).map_err(not_logged)?;
    let payload = json!({
        "event_type": event_type,
        "data": data,
        "session_id": body.session_id.unwrap_or_default(),
        "timestamp": timestamp(),
    });
    let outbox = outbox_entry(&state, &event_id, Kind::Event, &payload);
    let queued = record(
        &state,
        &event_type.to_uppercase(),
        "plugin.hook",
        data,
        outbox,
    )
    .await?;
    Ok(Json(LogEventAnswer {
        logged: true,
        event_id,
        queued,
    }))
}

/// `POST /checkpoint` body.
#[derive(Debug, Default, Deserialize)]
struct CheckpointRequest {
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
}

/// `POST /checkpoint` answer.
#[derive(Debug, Serialize)]
pub(super) struct CheckpointAnswer {
    checkpointed: bool,
    pending_lessons: usize,
    /// Always 0, as in 0.6.0: nothing is held unsaved.
    unsaved_corrections: u64,
    event_id: EventId,
    queued: bool,
}

/// `POST /checkpoint`: counts the lessons still learning and logs a CHECKPOINT event (source
/// `plugin.pre_compact`), as the plugin's pre-compact hook expects.
pub(super) async fn checkpoint(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<CheckpointAnswer>, ApiError> {
    let body: CheckpointRequest = read_request(&state, request).await?;
    let event_id = event_id(body.event_id.as_deref())?;
    let session_id = body.session_id.unwrap_or_default();
    let reason = body.reason.unwrap_or_else(|| "manual".to_owned());
    let pending_lessons = state
        .brain()
        .lessons()
        .await
        .map_err(brain_failed)?
        .pending_lessons;
    let payload = json!({
        "event_type": "CHECKPOINT",
        "session_id": session_id,
        "reason": reason,
        "pending_lessons": pending_lessons,
        "timestamp": timestamp(),
    });
    let outbox = outbox_entry(&state, &event_id, Kind::Event, &payload);
    let mut data = Object::new();
    data.insert("session_id".to_owned(), Value::from(session_id));
    data.insert("reason".to_owned(), Value::from(reason));
    data.insert(
        "pending_lessons".to_owned(),
        Value::from(pending_lessons as u64),
    );
    let queued = record(&state, "CHECKPOINT", "plugin.pre_compact", data, outbox).await?;
    Ok(Json(CheckpointAnswer {
        checkpointed: true,
        pending_lessons,
        unsaved_corrections: 0,
        event_id,
        queued,
    }))
}

/// The outbox row for `payload`, within the current queue limits.
pub(super) fn outbox_entry(
    state: &super::State,
    event_id: &EventId,
    kind: Kind,
    payload: &impl serde::Serialize,
) -> OutboxEntry {
    OutboxEntry {
        event: NewEvent::new(&state.settings().brain_id, event_id.clone(), kind, payload),
        limit: Some(state.queue_limit()),
    }
}

/// Whether the outbox row of a brain write was queued, with what a queued row implies: the
/// acceptance counted, the worker woken, an episode of refused writes ended (only a queued row
/// ends one: a full outbox is still full).
pub(super) fn queued(state: &super::State, kind: Kind, outcome: &OutboxOutcome) -> bool {
    match outcome {
        OutboxOutcome::Queued(_) => {
            state.refusals().accepted();
            state.metrics().events_accepted(kind.as_str(), 1);
            state.wake();
            true
        }
        OutboxOutcome::Duplicate(_) => true,
        OutboxOutcome::NotAsked | OutboxOutcome::SkippedQueueFull => false,
        OutboxOutcome::Failed(err) => {
            tracing::warn!(
                error = %crate::logging::Causes(err),
                "an event was logged in the brain but could not be queued for the cloud"
            );
            false
        }
    }
}

/// Logs the event in the brain (session 0, as the Python daemon logs these) with its outbox row;
/// whether the row was queued.
async fn record(
    state: &super::State,
    event_type: &str,
    source: &str,
    data: Object,
    outbox: OutboxEntry,
) -> Result<bool, ApiError> {
    let logged = match state
        .brain()
        .record(event_type, source, 0, data, Vec::new(), Some(outbox))
        .await
    {
        Ok(logged) => logged,
        Err(crate::brain::Error::Store(err)) => {
            state.refusals().refused(&err);
            return Err(err.into());
        }
        Err(err) => return Err(brain_failed(err)),
    };
    let queued = queued(state, Kind::Event, &logged.outbox);
    Ok(queued)
}
