//! The brain's read routes, with the Python daemon 0.6.0's request and response shapes:
//! `/apply-rules`, `/detect`, `/enforce-rules`, `/tag-delta` and `/brain-recall`. Each reads its
//! request ([`read_request`]: an empty body is `{}`, a missing or `null` field takes its default,
//! a field of the wrong type is a 400 that names it), asks [`crate::brain::Brain`] and answers.
//! Responses are structs, so their keys come out in 0.6.0's order.
//!
//! The decisions live in `crate::brain`; nothing here knows how a rule is chosen.

use axum::Json;
use axum::extract::{Request, State};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{parse_json, read_text};
use super::error::ApiError;
use crate::brain::enforce::Enforcement;
use crate::brain::feedback::Signal;
use crate::brain::recall::RecallHit;
use crate::brain::tag_delta::{TagDelta, tag_delta as tags_of};
use crate::brain::{self, mode, rules};

/// Reads a brain route's request: `{}` for an empty body, as 0.6.0 reads one.
pub(super) async fn read_request<T: DeserializeOwned + Default>(
    state: &super::State,
    request: Request,
) -> Result<T, ApiError> {
    let settings = state.settings();
    let (text, _share) = read_text(request, settings.limits.body, &settings.body_room).await?;
    let body = text.trim_start();
    if body.is_empty() {
        return Ok(T::default());
    }
    // serde reads a JSON array into a struct's fields in order; 0.6.0 wanted an object.
    if !body.starts_with('{') {
        // Not JSON at all is "malformed"; other JSON is the wrong shape.
        parse_json::<Value>(body)?;
        return Err(ApiError::bad_request(
            "invalid_request",
            "the body must be a JSON object",
        ));
    }
    parse_json(body)
}

/// `POST /apply-rules` body.
#[derive(Debug, Default, Deserialize)]
struct ApplyRulesRequest {
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    context: Option<ApplyContext>,
}

/// `context` of `POST /apply-rules`.
#[derive(Debug, Default, Deserialize)]
struct ApplyContext {
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    agent_type: Option<String>,
}

/// `POST /apply-rules` answer.
#[derive(Debug, Serialize)]
pub(super) struct ApplyRulesAnswer {
    rules: Vec<AppliedRuleAnswer>,
    injection_text: String,
    mode_detected: &'static str,
    mode_confidence: f64,
    fired_rule_ids: Vec<String>,
}

/// One rule of the `/apply-rules` answer.
#[derive(Debug, Serialize)]
struct AppliedRuleAnswer {
    rule_id: String,
    tier: &'static str,
    category: String,
    instruction: String,
    relevance: f64,
}

/// `POST /apply-rules`.
pub(super) async fn apply_rules(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<ApplyRulesAnswer>, ApiError> {
    let body: ApplyRulesRequest = read_request(&state, request).await?;
    let prompt = body.prompt.unwrap_or_default();
    let context = body.context.unwrap_or_default();
    let task_type = context.task_type.unwrap_or_default();
    let agent_type = context
        .agent_type
        .unwrap_or_else(|| rules::DEFAULT_AGENT_TYPE.to_owned());
    let decision = rules::Request {
        prompt: &prompt,
        task_type: &task_type,
        agent_type: &agent_type,
    };
    let applied = state
        .brain()
        .apply_rules(&decision, body.session_id.as_deref().unwrap_or_default())
        .await
        .map_err(brain_failed)?;
    let guess = mode::classify(&prompt);
    let fired_rule_ids = applied.rules.iter().map(|r| r.rule_id.clone()).collect();
    Ok(Json(ApplyRulesAnswer {
        rules: applied
            .rules
            .into_iter()
            .map(|rule| AppliedRuleAnswer {
                rule_id: rule.rule_id,
                tier: rule.tier.as_str(),
                category: rule.category,
                instruction: rule.instruction,
                relevance: rule.relevance,
            })
            .collect(),
        injection_text: applied.injection_text,
        mode_detected: guess.mode.as_str(),
        mode_confidence: guess.confidence,
        fired_rule_ids,
    }))
}

/// `POST /detect` body.
#[derive(Debug, Default, Deserialize)]
struct DetectRequest {
    #[serde(default)]
    user_message: Option<String>,
    #[serde(default)]
    session_id: Option<String>,
    /// Echoed back when feedback is found; any JSON, as 0.6.0 echoes it.
    #[serde(default)]
    recent_fired_rules: Option<Value>,
}

/// `POST /detect` answer.
#[derive(Debug, Serialize)]
pub(super) struct DetectAnswer {
    implicit_feedback: ImplicitFeedback,
    mode: &'static str,
    mode_confidence: f64,
}

/// `implicit_feedback` of the `/detect` answer.
#[derive(Debug, Serialize)]
struct ImplicitFeedback {
    detected: bool,
    signals: Vec<Signal>,
    related_rules: Value,
    action_taken: Option<&'static str>,
}

/// `POST /detect`.
pub(super) async fn detect(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<DetectAnswer>, ApiError> {
    let body: DetectRequest = read_request(&state, request).await?;
    let message = body.user_message.unwrap_or_default();
    let signals = state
        .brain()
        .detect(&message, body.session_id.as_deref().unwrap_or_default())
        .await
        .map_err(brain_failed)?;
    let detected = !signals.is_empty();
    let guess = mode::classify(&message);
    Ok(Json(DetectAnswer {
        implicit_feedback: ImplicitFeedback {
            detected,
            signals,
            related_rules: if detected {
                body.recent_fired_rules
                    .unwrap_or_else(|| Value::Array(Vec::new()))
            } else {
                Value::Array(Vec::new())
            },
            action_taken: detected.then_some("logged"),
        },
        mode: guess.mode.as_str(),
        mode_confidence: guess.confidence,
    }))
}

/// `POST /enforce-rules` body (the plugin also sends `file_path` and `session_id`, unused).
#[derive(Debug, Default, Deserialize)]
struct EnforceRequest {
    #[serde(default)]
    content: Option<String>,
}

/// `POST /enforce-rules`.
pub(super) async fn enforce_rules(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<Enforcement>, ApiError> {
    let body: EnforceRequest = read_request(&state, request).await?;
    let content = body.content.unwrap_or_default();
    let enforcement = state
        .brain()
        .enforce(&content)
        .await
        .map_err(brain_failed)?;
    Ok(Json(enforcement))
}

/// `POST /tag-delta` body.
#[derive(Debug, Default, Deserialize)]
struct TagDeltaRequest {
    #[serde(default)]
    file_path: Option<String>,
    #[serde(default)]
    old_content: Option<String>,
    #[serde(default)]
    new_content: Option<String>,
}

/// `POST /tag-delta`: a pure function of the request.
pub(super) async fn tag_delta(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<TagDelta>, ApiError> {
    let body: TagDeltaRequest = read_request(&state, request).await?;
    Ok(Json(tags_of(
        body.file_path.as_deref().unwrap_or_default(),
        body.old_content.as_deref().unwrap_or_default(),
        body.new_content.as_deref().unwrap_or_default(),
    )))
}

/// `POST /brain-recall` body.
#[derive(Debug, Default, Deserialize)]
struct RecallRequest {
    #[serde(default)]
    file_path: Option<String>,
    #[serde(default)]
    content_preview: Option<String>,
}

/// `POST /brain-recall` answer: `context` as 0.6.0 prints it, and the same hits as objects.
#[derive(Debug, Serialize)]
pub(super) struct RecallAnswer {
    context: String,
    /// Always empty, as in 0.6.0: rules are injected by `/apply-rules`, not recalled.
    relevant_rules: Vec<Value>,
    relevant_corrections: Vec<RecallHit>,
}

/// `POST /brain-recall`.
pub(super) async fn brain_recall(
    State(state): State<super::State>,
    request: Request,
) -> Result<Json<RecallAnswer>, ApiError> {
    let body: RecallRequest = read_request(&state, request).await?;
    let recall = state
        .brain()
        .recall(
            body.file_path.as_deref().unwrap_or_default(),
            body.content_preview.as_deref().unwrap_or_default(),
        )
        .await
        .map_err(brain_failed)?;
    Ok(Json(RecallAnswer {
        context: recall.context(),
        relevant_rules: Vec::new(),
        relevant_corrections: recall.hits,
    }))
}

/// A brain failure as the client sees it: a lessons file a writer holds too long is worth a
/// retry; the rest is the service's fault, said with every cause.
pub(super) fn brain_failed(err: brain::Error) -> ApiError {
    match err {
        brain::Error::Store(err) => ApiError::from(err),
        brain::Error::Lessons(err @ brain::lessons_file::Error::LockTimeout { .. }) => {
            ApiError::unavailable(
                "lessons_locked",
                crate::logging::Causes(&err).to_string(),
                std::time::Duration::from_secs(1),
            )
        }
        err => ApiError::internal(crate::logging::Causes(&err).to_string()),
    }
}
