//! `GET /health`: liveness, the brain's counts as the Python daemon reports them (for the plugin's
//! status and doctor), plus the queue, sync and write state, for monitors and operators.
//! `status` is `degraded` while sync is paused for an operator (`auth_failed`, `config_error`), the
//! oldest pending row is older than `api.degraded_after_secs` while sync is enabled, or writes are
//! being refused (a full disk or queue: from the refusal until the next write is accepted).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::logging::Causes;
use crate::sync::SyncState;

/// Answers with status, version, uptime, data directory, queue counts and sync state.
pub(super) async fn get(State(state): State<super::State>) -> (StatusCode, Json<Value>) {
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
    let body = |queue: Value, status: &str| {
        json!({
            "status": status,
            "sdk_version": env!("CARGO_PKG_VERSION"),
            "brain_dir": brain.dir(),
            "uptime_seconds": (uptime * 100.0).round() / 100.0,
            "active_sessions": brain.active_sessions(),
            "rules_count": lessons.as_ref().map(|served| served.rules_count()),
            "lessons_count": lessons.as_ref().map(|served| served.lessons.len()),
            "version": env!("CARGO_PKG_VERSION"),
            "data_dir": state.inner.data_dir,
            "queue": queue,
            "sync": {
                "state": sync.state.as_str(),
                "last_success_at": sync.last_success_at,
                "last_error": sync.last_error,
            },
            "writes": writes,
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
            (
                StatusCode::OK,
                Json(body(queue, if degraded { "degraded" } else { "ok" })),
            )
        }
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(body(json!({ "error": Causes(&err).to_string() }), "error")),
        ),
    }
}
