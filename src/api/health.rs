//! `GET /health`: liveness, the brain's counts as the Python daemon reports them (for the plugin's
//! status and doctor), plus the queue, sync and write state, for monitors and operators.
//! `status` is `degraded` while sync is paused for an operator (`auth_failed`, `config_error`), the
//! oldest pending row is older than `api.degraded_after_secs` while sync is enabled, or writes are
//! being refused (a full disk or queue: from the refusal until the next write is accepted).
//!
//! It only reads: the counts are the store's and the brain's, the sync state the engine's.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use std::path::Path;

use crate::logging::Causes;
use crate::sync::SyncState;

/// The answer: the Python daemon's keys first, in its order, then gradata's own.
#[derive(Debug, Serialize)]
struct HealthAnswer<'a> {
    status: &'static str,
    sdk_version: &'static str,
    brain_dir: &'a Path,
    uptime_seconds: f64,
    active_sessions: usize,
    rules_count: Option<usize>,
    lessons_count: Option<usize>,
    version: &'static str,
    data_dir: &'a Path,
    queue: Value,
    sync: Value,
    writes: Value,
}

/// Answers with status, version, uptime, data directory, queue counts and sync state.
pub(super) async fn get(State(state): State<super::State>) -> Response {
    let stats = state.store().stats().await;
    let sync = state.status().snapshot();
    let uptime = state.inner.started.elapsed().as_secs_f64();
    let refusing = state.refusals().current();
    let brain = state.brain();
    // A lessons file that cannot be read shows as null counts; the routes that need it say why.
    let lessons = brain.lessons().await.ok();
    let writes = match &refusing {
        None => json!({ "refused": false }),
        Some(ongoing) => json!({
            "refused": true,
            "refused_count": ongoing.refused,
            "refused_for_seconds": ongoing.lasted.as_secs_f64().floor(),
            "error": ongoing.error,
        }),
    };
    let body = |queue: Value, status: &'static str| {
        Json(HealthAnswer {
            status,
            sdk_version: env!("CARGO_PKG_VERSION"),
            brain_dir: brain.dir(),
            uptime_seconds: (uptime * 100.0).round() / 100.0,
            active_sessions: brain.active_sessions(),
            rules_count: lessons.as_ref().map(|served| served.rules_count()),
            lessons_count: lessons.as_ref().map(|served| served.lessons.len()),
            version: env!("CARGO_PKG_VERSION"),
            data_dir: &state.inner.data_dir,
            queue,
            sync: json!({
                "state": sync.state.as_str(),
                "last_success_at": sync.last_success_at,
                "last_error": sync.last_error,
            }),
            writes: writes.clone(),
        })
    };
    match stats {
        Ok(stats) => {
            let oldest = stats.oldest_pending_age(crate::clock::now());
            // With sync disabled (no key, or switched off) no row is expected to leave, so age
            // says nothing is wrong: local use reports ok.
            let stale = sync.state != SyncState::Disabled
                && oldest.is_some_and(|age| age > state.limits().degraded_after);
            // Sending stopped until someone acts: a refused key, a wrong URL, a failing outbox.
            let paused = matches!(
                sync.state,
                SyncState::AuthFailed | SyncState::ConfigError | SyncState::StoreError
            );
            let queue = json!({
                "pending": stats.pending,
                "dead": stats.dead,
                "synced": stats.synced,
                "oldest_pending_age_seconds": oldest.map(|age| age.as_secs_f64().floor()),
            });
            let degraded = stale || paused || refusing.is_some();
            let status = if degraded { "degraded" } else { "ok" };
            (StatusCode::OK, body(queue, status)).into_response()
        }
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            body(json!({ "error": Causes(&err).to_string() }), "error"),
        )
            .into_response(),
    }
}
