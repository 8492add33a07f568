//! The outbox's write routes: the original daemon's `POST /correct`, and the native
//! `POST /v1/events` (one object or an array, all committed together or not at all). Every one
//! ends in [`commit`]: queue limits, group-committed enqueue, worker wake-up; a 2xx is sent only
//! after the rows are durable. (`/log-event` and `/checkpoint` write the brain's log first: see
//! `brain_log`.)

use std::time::SystemTime;

use axum::Json;
use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::body::{parse_json, read_text};
use super::brain::brain_failed;
use super::brain_log::{outbox_entry, queued};
use super::correction::Severity;
use super::error::ApiError;
use crate::brain::category::Category;
use crate::brain::correct::{Correction, MAX_CORRECTION_CHARS};
use crate::brain::redact::redact;
use crate::brain::severity::Severity as BrainSeverity;
use crate::brain::{self, attribution::AdditionLesson, attribution::CorrectionConflict};
use crate::store::{EnqueueOutcome, EventId, Kind, NewEvent};

/// `POST /correct` body (the original daemon's fields).
#[derive(Debug, Deserialize)]
struct CorrectRequest {
    old_string: String,
    new_string: String,
    #[serde(default)]
    file_path: String,
    #[serde(default)]
    session_id: String,
    event_id: Option<String>,
}

/// One event of `POST /v1/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventRequest {
    kind: Kind,
    event_id: Option<String>,
    data: Map<String, Value>,
}

/// The data of the `correction` event `POST /correct` stores. The fields are in alphabetical
/// order, so its keys come out sorted like those of every other payload.
#[derive(Debug, Serialize)]
struct CorrectionData<'a> {
    category: &'static str,
    file_path: &'a str,
    new_string: &'a str,
    old_string: &'a str,
    session_id: &'a str,
    severity: &'static str,
    timestamp: String,
}

impl<'a> CorrectionData<'a> {
    /// The payload of `body` (already redacted), stamped now.
    fn of(body: &'a CorrectRequest, category: &'static str, severity: Severity) -> Self {
        CorrectionData {
            category,
            file_path: &body.file_path,
            new_string: &body.new_string,
            old_string: &body.old_string,
            session_id: &body.session_id,
            severity: severity.as_str(),
            timestamp: timestamp(),
        }
    }
}

/// `POST /correct` answer: 0.6.0's keys, filled from what the brain learned, plus the outbox's.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum CorrectAnswer {
    /// The original's answer to a correction that changes nothing: not an error, nothing stored.
    NoChange {
        captured: bool,
        error: &'static str,
    },
    Captured(Box<Captured>),
}

/// A learned correction.
#[derive(Debug, Serialize)]
pub(super) struct Captured {
    captured: bool,
    /// The brain's severity (`as-is` … `discarded`); the outbox payload keeps the cloud's.
    severity: &'static str,
    instruction_extracted: String,
    lesson_created: bool,
    /// The state of the lesson created or reinforced; `None` when nothing was learned.
    lesson_state: Option<&'static str>,
    misfired_rules: Vec<String>,
    accepted_rules: Vec<String>,
    addition_detected: bool,
    addition_lesson: Option<AdditionLesson>,
    correction_conflict: Option<CorrectionConflict>,
    event_id: EventId,
    category: &'static str,
    queued: bool,
}

/// `POST /correct`: the brain learns from the correction (`Brain::correct`), and the redacted
/// correction is queued for the cloud in the same transaction as its CORRECTION event. When the
/// queue is full the brain still learns and the answer says `queued: false`.
pub(super) async fn correct(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<CorrectAnswer>, ApiError> {
    let (body, _share): (CorrectRequest, _) = state.read_json(request).await?;
    if body.old_string == body.new_string {
        return Ok(Json(CorrectAnswer::NoChange {
            captured: false,
            error: "no change",
        }));
    }
    let event_id = event_id(body.event_id.as_deref())?;
    let category = Category::of(&body.file_path).as_str();
    let chars = body.old_string.chars().count() + body.new_string.chars().count();
    if chars > MAX_CORRECTION_CHARS {
        return queue_unlearned(&state, body, event_id, category).await;
    }
    let learning = Correction {
        old: body.old_string.clone(),
        new: body.new_string.clone(),
        file_path: body.file_path.clone(),
        session_id: body.session_id.clone(),
        category: category.to_owned(),
    };
    let (body, severity, _) = measure(body, false).await?;
    let data = CorrectionData::of(&body, category, severity);
    let outbox = outbox_entry(&state, &event_id, Kind::Correction, &data);
    let corrected = match state.brain().correct(learning, Some(outbox)).await {
        Ok(corrected) => corrected,
        Err(brain::correct::Error::Invalid(message)) => {
            return Err(ApiError::bad_request("invalid_correction", message));
        }
        Err(brain::correct::Error::Brain(brain::Error::Store(err))) => {
            state.refusals().refused(&err);
            return Err(err.into());
        }
        Err(brain::correct::Error::Brain(err)) => return Err(brain_failed(err)),
        Err(err) => {
            return Err(ApiError::internal(crate::logging::Causes(&err).to_string()));
        }
    };
    let queued = queued(&state, Kind::Correction, &corrected.logged.outbox);
    let attribution = corrected.attribution;
    Ok(Json(CorrectAnswer::Captured(Box::new(Captured {
        captured: true,
        severity: corrected.measure.severity.as_str(),
        instruction_extracted: corrected.instruction.text,
        lesson_created: corrected.lesson_created,
        lesson_state: corrected
            .lesson
            .as_ref()
            .map(|lesson| lesson.state.as_str()),
        misfired_rules: attribution.misfired_rules,
        accepted_rules: attribution.accepted_rules,
        addition_detected: attribution.addition_detected,
        addition_lesson: attribution.addition_lesson,
        correction_conflict: attribution.correction_conflict,
        event_id,
        category,
        queued,
    }))))
}

/// A correction too large to learn from (an edit of more than [`MAX_CORRECTION_CHARS`]
/// characters, usually a whole file replaced): queued for the cloud as before, redacted, but
/// the brain learns nothing from it, as 0.6.0's brain refuses it.
async fn queue_unlearned(
    state: &super::State,
    body: CorrectRequest,
    event_id: EventId,
    category: &'static str,
) -> Result<Json<CorrectAnswer>, ApiError> {
    let (body, severity, brain_severity) = measure(body, true).await?;
    let data = CorrectionData::of(&body, category, severity);
    let event = NewEvent::new(
        &state.settings().brain_id,
        event_id.clone(),
        Kind::Correction,
        &data,
    );
    commit(state, vec![event]).await?;
    Ok(Json(CorrectAnswer::Captured(Box::new(Captured {
        captured: true,
        severity: brain_severity.map_or(severity.as_str(), BrainSeverity::as_str),
        instruction_extracted: String::new(),
        lesson_created: false,
        lesson_state: None,
        misfired_rules: Vec::new(),
        accepted_rules: Vec::new(),
        addition_detected: false,
        addition_lesson: None,
        correction_conflict: None,
        event_id,
        category,
        queued: true,
    }))))
}

/// Edits larger than this (both texts together, in bytes) are measured on the blocking pool.
const INLINE_DIFF_LIMIT: usize = 16 * 1024;

/// The severity of `body`'s edit (and on the brain's scale too when `brain_scale`), and the
/// body back with its texts redacted: secrets and the
/// personal data `brain::redact` knows never reach the outbox, so never the cloud. The severity
/// is measured on the texts as the user edited them. A large edit's diff may run up to its
/// deadline, which on a runtime worker would stall every connection that worker serves.
async fn measure(
    body: CorrectRequest,
    brain_scale: bool,
) -> Result<(CorrectRequest, Severity, Option<BrainSeverity>), ApiError> {
    let measure = move |mut body: CorrectRequest| {
        let severity = Severity::of(&body.old_string, &body.new_string);
        let brain_severity = brain_scale
            .then(|| brain::severity::measure(&body.old_string, &body.new_string).severity);
        body.old_string = redact(&body.old_string).text;
        body.new_string = redact(&body.new_string).text;
        body.file_path = redact(&body.file_path).text;
        (body, severity, brain_severity)
    };
    if body.old_string.len() + body.new_string.len() <= INLINE_DIFF_LIMIT {
        return Ok(measure(body));
    }
    tokio::task::spawn_blocking(move || measure(body))
        .await
        .map_err(|e| ApiError::internal(format!("measuring the edit failed: {e}")))
}

/// `POST /v1/events` answer.
#[derive(Debug, Serialize)]
pub(super) struct EventsAnswer {
    accepted: usize,
    duplicates: usize,
    event_ids: Vec<EventId>,
}

/// `POST /v1/events`.
pub(super) async fn events(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<EventsAnswer>, ApiError> {
    let settings = state.settings();
    let (body, _share) = read_text(request, settings.limits.body, &settings.body_room).await?;
    let requests = parse_events(&body, settings.limits.max_events_per_request)?;
    // The text is not needed past here, and a large batch then waits for its commit holding only
    // its events; the share of the body room is held to the end.
    drop(body);
    let mut events = Vec::with_capacity(requests.len());
    for (index, request) in requests.into_iter().enumerate() {
        let id = event_id(request.event_id.as_deref()).map_err(|err| {
            ApiError::bad_request(
                "invalid_event_id",
                format!("event {index}: {}", err.message()),
            )
        })?;
        events.push(NewEvent::new(
            &settings.brain_id,
            id,
            request.kind,
            &request.data,
        ));
    }
    let event_ids: Vec<EventId> = events.iter().map(|e| e.event_id().clone()).collect();
    let outcomes = commit(&state, events).await?;
    let accepted = outcomes
        .iter()
        .filter(|o| matches!(o, EnqueueOutcome::Inserted(_)))
        .count();
    Ok(Json(EventsAnswer {
        accepted,
        duplicates: outcomes.len() - accepted,
        event_ids,
    }))
}

/// The events of a `POST /v1/events` body: one object or an array of at most `limit`. An error
/// names the event at fault.
fn parse_events(text: &str, limit: usize) -> Result<Vec<EventRequest>, ApiError> {
    let event_error = |index: usize, err: serde_json::Error| {
        ApiError::bad_request("invalid_request", format!("event {index}: {err}"))
    };
    // The common case, one object, is parsed straight into its type; anything else goes through
    // a JSON value first, so that an array's error can say which element is wrong.
    if text.trim_start().starts_with('{') {
        return match serde_json::from_str::<EventRequest>(text) {
            Ok(request) => Ok(vec![request]),
            Err(err) if err.is_data() => Err(event_error(0, err)),
            Err(err) => Err(ApiError::bad_request(
                "malformed_json",
                format!("invalid request body: {err}"),
            )),
        };
    }
    let Value::Array(items) = parse_json::<Value>(text)? else {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be an event object or an array of them",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the array holds no event",
        ));
    }
    if items.len() > limit {
        return Err(ApiError::bad_request(
            "too_many_events",
            format!(
                "{} events in one request; the limit is {limit} (api.max_events_per_request)",
                items.len()
            ),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| serde_json::from_value(item).map_err(|err| event_error(index, err)))
        .collect()
}

/// Validates a client's `event_id`, or makes a ULID.
pub(super) fn event_id(given: Option<&str>) -> Result<EventId, ApiError> {
    match given {
        None => Ok(EventId::generate()),
        Some(id) => EventId::parse(id)
            .map_err(|err| ApiError::bad_request("invalid_event_id", err.to_string())),
    }
}

/// Commits the events in one transaction within the queue limits, wakes the worker.
pub(super) async fn commit(
    state: &super::State,
    events: Vec<NewEvent>,
) -> Result<Vec<EnqueueOutcome>, ApiError> {
    let limit = state.queue_limit();
    let kinds: Vec<Kind> = events.iter().map(NewEvent::kind).collect();
    let outcomes = match state.store().enqueue_within(events, limit).await {
        Ok(outcomes) => outcomes,
        Err(err) => {
            state.refusals().refused(&err);
            return Err(err.into());
        }
    };
    state.refusals().accepted();
    state.wake();
    // One counter update per kind rather than per event: a batch of 100 is one or two updates.
    let mut accepted = [(Kind::Correction, 0), (Kind::Lesson, 0), (Kind::Event, 0)];
    for (kind, outcome) in kinds.iter().zip(&outcomes) {
        if matches!(outcome, EnqueueOutcome::Inserted(_)) {
            if let Some((_, count)) = accepted.iter_mut().find(|(k, _)| k == kind) {
                *count += 1;
            }
        }
    }
    if accepted.iter().any(|(_, count)| *count > 0) {
        let metrics = state.metrics();
        for (kind, count) in accepted {
            if count > 0 {
                metrics.events_accepted(kind.as_str(), count);
            }
        }
    }
    Ok(outcomes)
}

pub(super) fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
