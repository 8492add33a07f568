//! `POST /maintain`, with the Python daemon 0.6.0's request (`tasks`, a list of task names,
//! `["manifest"]` when absent) and response (`completed`, `failed`, `duration_ms`). Unlike 0.6.0,
//! which iterates a string's characters as task names (brain spec §13 #16), any `tasks` that is
//! not a list of at most [`MAX_TASKS`] strings is refused with a 400 and nothing runs.
//!
//! The tasks themselves are [`crate::brain::Brain::maintain`]'s; nothing here knows what they do.

use axum::Json;
use axum::extract::{Request, State};
use serde::Serialize;
use serde_json::Value;

use super::brain::read_request;
use super::error::ApiError;
use crate::brain::lessons_write::SaveError;
use crate::brain::maintain::{DEFAULT_TASKS, MAX_TASKS, MaintainError};

/// `POST /maintain` answer, in 0.6.0's key order.
#[derive(Debug, Serialize)]
pub(super) struct MaintainAnswer {
    completed: Vec<String>,
    failed: Vec<String>,
    duration_ms: u64,
}

/// `POST /maintain`.
pub(super) async fn maintain(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<MaintainAnswer>, ApiError> {
    let body: serde_json::Map<String, Value> = read_request(&state, request).await?;
    let tasks = tasks_of(&body)?;
    let done = state
        .brain()
        .maintain(&tasks)
        .await
        .map_err(maintain_failed)?;
    Ok(Json(MaintainAnswer {
        completed: done.completed,
        failed: done.failed,
        // Rounded, as 0.6.0 rounds it.
        duration_ms: u64::try_from(done.duration.as_micros().saturating_add(500) / 1000)
            .unwrap_or(u64::MAX),
    }))
}

/// The task names `body` asks for, or why they are refused.
fn tasks_of(body: &serde_json::Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let refused = |message: String| ApiError::bad_request("invalid_request", message);
    // `null` reads as the default, as a `null` field does on every brain route.
    let tasks = match body.get("tasks") {
        None | Some(Value::Null) => {
            return Ok(DEFAULT_TASKS.iter().map(|&task| task.to_owned()).collect());
        }
        Some(tasks) => tasks,
    };
    let Value::Array(tasks) = tasks else {
        return Err(refused(format!(
            "tasks must be a list of task names, not {}",
            json_kind(tasks)
        )));
    };
    if tasks.len() > MAX_TASKS {
        return Err(refused(format!(
            "tasks names {} tasks; at most {MAX_TASKS} are run in one request",
            tasks.len()
        )));
    }
    tasks
        .iter()
        .map(|task| match task {
            Value::String(name) => Ok(name.clone()),
            other => Err(refused(format!(
                "every task must be a name (a string), not {}",
                json_kind(other)
            ))),
        })
        .collect()
}

/// A JSON value's kind, for messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn maintain_failed(err: MaintainError) -> ApiError {
    match err {
        MaintainError::Lock(err @ SaveError::LockTimeout { .. }) => ApiError::unavailable(
            "lessons_locked",
            crate::logging::Causes(&err).to_string(),
            std::time::Duration::from_secs(1),
        ),
        err => ApiError::internal(crate::logging::Causes(&err).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tasks(body: Value) -> Result<Vec<String>, ApiError> {
        tasks_of(body.as_object().unwrap())
    }

    #[test]
    fn tasks_default_to_the_manifest_and_keep_their_order() {
        assert_eq!(tasks(json!({})).unwrap(), ["manifest"]);
        assert_eq!(tasks(json!({"tasks": null})).unwrap(), ["manifest"]);
        assert_eq!(
            tasks(json!({"tasks": ["patterns", "bogus", "manifest"]})).unwrap(),
            ["patterns", "bogus", "manifest"]
        );
        assert!(tasks(json!({"tasks": []})).unwrap().is_empty());
    }

    #[test]
    fn a_string_a_non_string_task_or_too_many_tasks_are_refused() {
        for body in [
            json!({"tasks": "manifest"}),
            json!({"tasks": true}),
            json!({"tasks": {"manifest": true}}),
            json!({"tasks": ["manifest", 1]}),
            json!({"tasks": vec!["patterns"; MAX_TASKS + 1]}),
        ] {
            assert!(tasks(body.clone()).is_err(), "{body}");
        }
        assert!(tasks(json!({"tasks": vec!["patterns"; MAX_TASKS]})).is_ok());
    }
}
