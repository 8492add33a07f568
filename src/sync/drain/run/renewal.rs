//! Keeping the leases of the batches in hand alive ([`Run::renew`]): every [`renewal_period`]
//! each gets a new token, fenced by the old one, so that an observer of stale leases never frees
//! rows a live drain holds. It claims, sends and settles nothing.

use std::time::{Duration, Instant};

use super::Run;

impl Run<'_> {
    /// Renews the lease of every batch in hand to a new token, fenced by the old one, so that an
    /// observer of stale leases (the service's worker) sees that this drain is alive and never
    /// frees rows it holds, however long their requests take. A renewal that fails leaves the
    /// batch on its old token; it is tried again at the next renewal.
    pub(super) async fn renew(&mut self) {
        let engine = self.engine;
        self.next_renewal = Instant::now() + renewal_period(engine.settings.lease);
        for tally in self.batches.values_mut() {
            let renewed = engine.renewed_lease(tally.lease_until, self.deadline);
            match engine
                .store
                .renew_leases(&tally.rows, tally.lease_until, renewed)
                .await
            {
                Ok(_) => tally.lease_until = renewed,
                Err(err) => tracing::debug!(error = %err, "could not renew a batch's lease"),
            }
        }
    }
}

/// How often a drain renews its leases: three times a lease period, so that an observer, which
/// frees a lease unchanged for a whole period, always sees a live holder's token change; and at
/// least once a second, so that an observer whose own `sync.lease_secs` is shorter (another
/// process, configured apart) does too, down to a lease of two seconds. A renewal is one small
/// update per batch in hand.
pub(super) fn renewal_period(lease: Duration) -> Duration {
    (lease / 3).clamp(Duration::from_millis(100), RENEWAL_PERIOD_CAP)
}

/// The longest time between two renewals of a drain's leases.
const RENEWAL_PERIOD_CAP: Duration = Duration::from_secs(1);
