//! What one answer means for its row ([`Run::settlement`]): the settlement it gets, the counters
//! and the status it moves, and the pause a throttle imposes. It sends nothing and settles
//! nothing; [`Run::answered`] hands the settlement on.

use std::time::{Duration, Instant, SystemTime};

use super::{Run, StopReason};
use crate::metrics::Outcome;
use crate::store::{ClaimedRow, Settlement};
use crate::sync::classify::Disposition;
use crate::sync::client::Attempt;
use crate::sync::retry::RetryPolicy;

impl Run<'_> {
    /// What one attempt means for its row, counted and logged.
    pub(super) fn settlement(&mut self, row: &ClaimedRow, attempt: &Attempt) -> Settlement {
        let engine = self.engine;
        let metrics = engine.metrics();
        let now = engine.store.clock().now();
        // Saturating: `attempts` comes from a column anyone may have written.
        let attempts = row.attempts.saturating_add(1);
        match attempt.disposition {
            Disposition::Delivered => {
                metrics.delivery(Outcome::delivered);
                self.delivered += 1;
                engine.status.record_success(now);
                Settlement::Synced {
                    id: row.id,
                    status: attempt.status.unwrap_or(200),
                }
            }
            Disposition::Dead => {
                metrics.delivery(Outcome::dead);
                self.dead += 1;
                tracing::warn!(row_id = %row.id, event_id = row.event_id.as_deref().unwrap_or(""),
                    status = attempt.status, "ingest rejected row for good, moved to dead: {}", attempt.detail);
                Settlement::Dead {
                    id: row.id,
                    status: attempt.status.unwrap_or(0),
                    error: attempt.detail.clone(),
                }
            }
            Disposition::RetryLater => {
                metrics.delivery(Outcome::retried);
                self.retried += 1;
                tracing::debug!(row_id = %row.id, attempts, "delivery failed, will retry: {}", attempt.detail);
                Settlement::Retry {
                    id: row.id,
                    status: attempt.status,
                    error: attempt.detail.clone(),
                    next_attempt_at: retry_at(&engine.policy, attempts, None, now),
                }
            }
            Disposition::Throttled { retry_after } => {
                metrics.delivery(Outcome::throttled);
                self.retried += 1;
                let next_attempt_at = retry_at(&engine.policy, attempts, retry_after, now);
                let delay = next_attempt_at.duration_since(now).unwrap_or_default();
                if self.stop.is_none() {
                    tracing::warn!(
                        status = attempt.status,
                        pause_seconds = delay.as_secs(),
                        "ingest is throttling, pausing all sending: {}",
                        attempt.detail
                    );
                }
                engine.status.pause_until(
                    Instant::now()
                        .checked_add(delay)
                        .unwrap_or_else(Instant::now),
                );
                engine.concurrency.halve();
                self.stop.get_or_insert(StopReason::RateLimited);
                Settlement::Retry {
                    id: row.id,
                    status: attempt.status,
                    error: attempt.detail.clone(),
                    next_attempt_at,
                }
            }
            Disposition::AuthFailed | Disposition::ConfigError => {
                metrics.delivery(Outcome::refused);
                let reason = if attempt.disposition == Disposition::AuthFailed {
                    StopReason::AuthFailed
                } else {
                    StopReason::ConfigError
                };
                if self.stop.is_none() {
                    tracing::error!(status = attempt.status, url = %engine.settings.ingest_url,
                        "ingest refused the request, pausing sync ({}): {}", reason.as_str(), attempt.detail);
                }
                self.stop.get_or_insert(reason);
                Settlement::Release {
                    id: row.id,
                    status: attempt.status,
                    error: Some(attempt.detail.clone()),
                }
            }
        }
    }
}

/// When a row that failed its `attempts`-th attempt is due again: after its backoff, or after
/// `retry_after` if the server asked for longer. Never panics, whatever the stored count.
pub(super) fn retry_at(
    policy: &RetryPolicy,
    attempts: u32,
    retry_after: Option<Duration>,
    now: SystemTime,
) -> SystemTime {
    let delay = retry_after
        .unwrap_or_default()
        .max(policy.backoff(attempts));
    now.checked_add(delay).unwrap_or(now)
}
