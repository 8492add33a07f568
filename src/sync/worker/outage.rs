//! The worker's outage: [`Worker::outage_begins`] when a pass fails everything, then only probes
//! ([`Worker::probe`], spaced by [`probe_wait`]) until one is answered, then the catch-up
//! ([`Worker::catch_up`]) that sends the backlog whatever its timers. Each step sets the phase and
//! the next pass; the loop that runs the passes, and why there is an outage phase at all, are the
//! parent's.

use std::time::{Duration, Instant};

use super::{
    PASS, PROBE, PROBE_CAP, PROBE_FIRST, Phase, Worker, after, fails_everything, is_quiet,
};
use crate::store::RowId;
use crate::sync::{DrainReport, Engine, StopReason, Trigger};

impl Worker {
    /// The ingest failed everything: from now on only probes, the first one shortly.
    pub(super) fn outage_begins(&mut self, report: &DrainReport, resume: RowId) {
        tracing::warn!(
            retried = report.retried,
            probe_cap_seconds = PROBE_CAP.as_secs(),
            detail = report.detail.as_deref().unwrap_or(""),
            "the ingest failed every request of a pass; sending only probes until it answers: {}",
            report.detail.as_deref().unwrap_or("unknown error")
        );
        self.phase = Phase::Outage {
            failed_probes: 0,
            cursor: report.last_answered.unwrap_or(resume).max(resume),
            resume,
        };
        self.probed_at = Instant::now();
        self.next_pass = Some(self.probed_at + probe_wait(0));
    }

    /// One probe of an outage: a due row if there is one (rows never tried first), else the next
    /// row by id whatever its timer, from the start again once past the end.
    pub(super) async fn probe(
        &mut self,
        engine: &Engine,
        failed_probes: u32,
        cursor: RowId,
        resume: RowId,
    ) {
        let mut cursor = cursor;
        self.probed_at = Instant::now();
        let mut report = self.pass(engine, Trigger::Worker, PROBE).await;
        for after in [cursor, RowId(0)] {
            if tried_any(&report) || !is_quiet(report.reason) {
                break;
            }
            report = self.pass(engine, Trigger::CatchUp { after }, PROBE).await;
            cursor = report.last_answered.unwrap_or(after);
        }
        if report.delivered + report.dead > 0 {
            tracing::info!(
                "the ingest answers again; sending every pending row, whatever its backoff timer"
            );
            self.phase = Phase::CatchUp { cursor: resume };
            self.next_pass = Some(Instant::now());
        } else if fails_everything(&report) {
            let failed_probes = failed_probes.saturating_add(1);
            self.phase = Phase::Outage {
                failed_probes,
                cursor,
                resume,
            };
            self.next_pass = Some(Instant::now() + probe_wait(failed_probes));
        } else {
            // Nothing left to probe with (the queue is empty, or another drainer holds every
            // row), or an answer that pauses sending on its own terms (429, 401, a bad URL), or a
            // store failure: the normal schedule takes over.
            self.phase = Phase::Flowing;
            self.next_pass = after(engine, &report).await;
        }
    }

    /// One pass of the catch-up after an outage, from `cursor` on, whatever the rows' timers say.
    pub(super) async fn catch_up(&mut self, engine: &Engine, cursor: RowId) {
        let report = self
            .pass(engine, Trigger::CatchUp { after: cursor }, PASS)
            .await;
        let through = report.last_answered.unwrap_or(cursor).max(cursor);
        if fails_everything(&report) {
            self.outage_begins(&report, through);
            return;
        }
        match report.reason {
            // More rows above the cursor: on at once (the pass stopped for its budget, or after a
            // batch of failing rows, which keep their timers and are passed over).
            StopReason::RowBudget | StopReason::TimeBudget | StopReason::NoProgress => {
                self.phase = Phase::CatchUp { cursor: through };
                self.next_pass = Some(Instant::now());
            }
            // Paused for a while (429), or the store failed: go on from here afterwards.
            StopReason::RateLimited | StopReason::StoreError => {
                self.phase = Phase::CatchUp { cursor: through };
                self.next_pass = after(engine, &report).await;
            }
            // Past the end of the queue (or nothing more to do): back to the rows' own timers.
            StopReason::Empty
            | StopReason::Done
            | StopReason::Leased
            | StopReason::AuthFailed
            | StopReason::ConfigError
            | StopReason::Disabled
            | StopReason::Cancelled
            | StopReason::NoQueueTable
            | StopReason::NoDatabase => {
                if matches!(report.reason, StopReason::Empty | StopReason::Done) {
                    tracing::info!("the backlog held back by the outage has been sent");
                }
                self.phase = Phase::Flowing;
                self.next_pass = after(engine, &report).await;
            }
        }
    }
}

/// Whether a drain sent any row and heard back.
fn tried_any(report: &DrainReport) -> bool {
    report.delivered + report.dead + report.retried > 0
}

/// The wait before the probe that follows `failed_probes` failed ones.
pub(super) fn probe_wait(failed_probes: u32) -> Duration {
    let factor = 2u32.checked_pow(failed_probes.min(31)).unwrap_or(u32::MAX);
    PROBE_FIRST
        .checked_mul(factor)
        .map_or(PROBE_CAP, |wait| wait.min(PROBE_CAP))
}
