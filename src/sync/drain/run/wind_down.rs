//! The end of a drain: [`Run::wind_down`] settles or gives back every row still claimed, and
//! [`Run::stop_reason`] names why the drain stopped. Nothing here claims or sends.

use std::collections::HashMap;

use futures_util::stream::FuturesUnordered;

use super::settlement::retry_at;
use super::{BatchTally, Purpose, Run};
use crate::metrics::Outcome;
use crate::store::Settlement;
use crate::sync::drain::StopReason;
use crate::sync::drain::outage::OutageWatch;

impl Run<'_> {
    /// After the loop: every claimed row is settled or given back before the drain returns.
    pub(super) async fn wind_down(&mut self) {
        // A claim already sent to the store is finished, never dropped: its rows are leased and
        // must be released now rather than when the lease expires.
        if let Some(claim) = self.claiming.take() {
            if let (_, Ok((rows, lease_until))) = claim.await {
                let batch = self.next_batch;
                self.next_batch += 1;
                let leased = rows.iter().map(|row| row.id).collect();
                self.batches.insert(
                    batch,
                    BatchTally::claimed(lease_until, Purpose::Walk, leased, rows.len()),
                );
                self.abandoned
                    .extend(rows.iter().map(|row| (row.id, batch)));
            }
        }
        // Requests still in flight are abandoned: the server may or may not have taken them, so
        // the rows stay pending and will be posted again (at-least-once). Cut by an explicit
        // drain's deadline, each counts as a timed-out attempt; on cancellation (shutdown) they
        // are released untouched.
        let unsent = self.queued.drain(..).chain(self.probes.drain(..));
        self.abandoned
            .extend(unsent.map(|(row, batch)| (row.id, batch)));
        self.in_flight = FuturesUnordered::new();
        let mut releases: HashMap<usize, Vec<Settlement>> = HashMap::new();
        // Only an explicit drain leaves the loop at its deadline with requests in flight; the
        // worker leaves with some only when cancelled.
        let timed_out = self.past_deadline && self.trigger.is_explicit();
        let now = self.engine.store.clock().now();
        for (id, (batch, attempts)) in std::mem::take(&mut self.in_flight_ids) {
            if !timed_out {
                self.abandoned.push((id, batch));
                continue;
            }
            if !self.batches.contains_key(&batch) {
                continue;
            }
            let error = format!(
                "timeout: no response within the drain's time budget of {}",
                humantime::format_duration(self.budget.max_time)
            );
            self.engine.metrics().delivery(Outcome::retried);
            self.engine.status.record_error(&error);
            self.retried += 1;
            releases.entry(batch).or_default().push(Settlement::Retry {
                id,
                status: None,
                next_attempt_at: retry_at(
                    &self.engine.policy,
                    attempts.saturating_add(1),
                    None,
                    now,
                ),
                error,
            });
        }
        // Each batch cut short settles what completed and releases the rest, under its own lease.
        for (id, batch) in std::mem::take(&mut self.abandoned) {
            releases
                .entry(batch)
                .or_default()
                .push(Settlement::Release {
                    id,
                    status: None,
                    error: None,
                });
        }
        // Every batch still here has rows unanswered (a batch leaves when its last row is in).
        for (batch, tally) in std::mem::take(&mut self.batches) {
            let mut settlements = tally.settlements;
            settlements.extend(releases.remove(&batch).unwrap_or_default());
            self.settle(settlements, tally.lease_until);
        }
        while let Some(joined) = self.settling.join_next().await {
            self.settled(joined);
        }
    }

    /// Why the drain stopped, `remaining` rows left pending. `empty` means nothing is pending: a
    /// drain that claimed nothing while rows are pending says why (DESIGN §5 reasons).
    pub(super) fn stop_reason(&self, remaining: Option<u64>) -> StopReason {
        if let Some(reason) = self.stop {
            return reason;
        }
        let pending_left = remaining.is_some_and(|n| n > 0);
        // Rows pending that this drain has not tried: those it tried and passed over are not
        // what its row budget kept it from.
        let untried_left = remaining
            .is_some_and(|n| n > u64::try_from(self.passed_over.len()).unwrap_or(u64::MAX));
        let explicit = self.trigger.is_explicit();
        if self.taken >= self.budget.max_rows && untried_left {
            StopReason::RowBudget
        } else if self.taken == 0 && !pending_left {
            StopReason::Empty
        } else if self.taken == 0 && explicit {
            // An explicit drain takes every pending row whatever its timer: what it could not
            // claim is leased by another drainer.
            StopReason::Leased
        } else if explicit
            && self.retried > 0
            && !self.watch.as_ref().is_some_and(OutageWatch::progressed)
        {
            // Every row it sent failed: too few to call for a probe, but nothing went through.
            StopReason::NoProgress
        } else {
            // It went through every row it could take (the worker: every due row, maybe none):
            // the rest failed and wait on their timers, or on another drainer's lease.
            StopReason::Done
        }
    }
}
