//! The brain's learning routes: `POST /end-session`, with the Python daemon 0.6.0's request
//! (`session_id`, `session_type`, their defaults) and response keys, and the real counters of
//! the brain spec (§13 #1) where 0.6.0 answered constants.
//!
//! The sweep itself is [`crate::brain::Brain::end_session`]; nothing here knows how a lesson
//! graduates.

use axum::Json;
use axum::extract::{Request, State};
use serde::{Deserialize, Serialize};

use super::brain::{brain_failed, read_request};
use super::error::ApiError;
use crate::brain::end_session::EndSessionError;
use crate::brain::graduation::convergence::Convergence;

/// `POST /end-session` body.
#[derive(Debug, Default, Deserialize)]
struct EndSessionRequest {
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    session_type: Option<String>,
}

/// `POST /end-session` answer, in 0.6.0's key order.
#[derive(Debug, Serialize)]
pub(super) struct EndSessionAnswer {
    corrections_captured: u64,
    instructions_extracted: u64,
    lessons_graduated: u64,
    meta_rules_synthesized: u64,
    convergence: Convergence,
    cross_project_candidates: [(); 0],
}

/// `POST /end-session`.
pub(super) async fn end_session(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<EndSessionAnswer>, ApiError> {
    // Read as an object first: serde would take a JSON array as the struct's fields in order.
    let body: serde_json::Map<String, serde_json::Value> = read_request(&state, request).await?;
    let body: EndSessionRequest =
        serde_json::from_value(serde_json::Value::Object(body)).map_err(|err| {
            ApiError::bad_request("invalid_request", format!("invalid request body: {err}"))
        })?;
    let session_id = body.session_id.unwrap_or_default();
    let session_type = body.session_type.unwrap_or_else(|| "full".to_owned());
    let ended = state
        .brain()
        .end_session(&session_id, &session_type)
        .await
        .map_err(end_session_failed)?;
    Ok(Json(EndSessionAnswer {
        corrections_captured: ended.corrections_captured,
        instructions_extracted: ended.instructions_extracted,
        lessons_graduated: ended.counters.promotions,
        // Meta-rules are discovered in the cloud only, as in 0.6.0.
        meta_rules_synthesized: 0,
        convergence: ended.convergence,
        cross_project_candidates: [],
    }))
}

fn end_session_failed(err: EndSessionError) -> ApiError {
    match err {
        EndSessionError::Brain(err) => brain_failed(err),
        EndSessionError::Lessons(
            err @ crate::brain::lessons_write::SaveError::LockTimeout { .. },
        ) => ApiError::unavailable(
            "lessons_locked",
            crate::logging::Causes(&err).to_string(),
            std::time::Duration::from_secs(1),
        ),
        err => ApiError::internal(crate::logging::Causes(&err).to_string()),
    }
}
