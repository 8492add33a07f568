//! Which other drainers' leases are stale, judged on this process's monotonic clock alone.
//!
//! A stored lease is a token, not a deadline: a live holder changes it (renews) every third of
//! the lease period. A lease whose token has not changed for a whole period (`sync.lease_secs`) on
//! this process's [`Instant`] clock belongs to a holder that is gone or wedged, and is freed with
//! an update fenced by that token. Nothing here reads a wall clock, so a clock stepped either way,
//! here or in the holder's process, neither frees a live lease nor holds a dead one.
//!
//! Pure bookkeeping: it neither reads nor writes the store (the worker does, with what it says).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::store::RowId;

/// The leases seen so far: each row's token and when that token was first seen.
#[derive(Debug, Default)]
pub(super) struct LeaseObserver {
    seen: HashMap<RowId, Sighting>,
}

/// A token and when this process first saw it on its row.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    /// The stored value's bits: tokens are compared exactly, as the fenced update does.
    token: u64,
    first_seen: Instant,
}

/// What one look found.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Verdict {
    /// Leases unchanged for a whole period, `(id, token)`: to be freed, fenced by the token.
    pub(super) stale: Vec<(RowId, f64)>,
    /// When the next lease still watched would become stale: when to look again at the latest.
    pub(super) next_look: Option<Instant>,
}

impl LeaseObserver {
    /// Takes in the leases held now, `(id, token)`, seen at `now`: forgets rows that are no longer
    /// leased or whose token changed (their holder renewed or settled them), and returns those
    /// whose token has been the same for at least `lease`. A stale lease is forgotten once
    /// reported: if freeing it fails, the next look sees it again as new.
    pub(super) fn observe(
        &mut self,
        leases: &[(RowId, f64)],
        lease: Duration,
        now: Instant,
    ) -> Verdict {
        let mut current = HashMap::with_capacity(leases.len());
        let mut verdict = Verdict::default();
        for &(id, token) in leases {
            let bits = token.to_bits();
            let first_seen = match self.seen.get(&id) {
                Some(sighting) if sighting.token == bits => sighting.first_seen,
                _ => now,
            };
            let stale_at = first_seen.checked_add(lease).unwrap_or(first_seen);
            if stale_at <= now {
                verdict.stale.push((id, token));
                continue;
            }
            verdict.next_look = Some(verdict.next_look.map_or(stale_at, |at| at.min(stale_at)));
            current.insert(
                id,
                Sighting {
                    token: bits,
                    first_seen,
                },
            );
        }
        self.seen = current;
        verdict
    }

    /// Rows being watched.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);

    #[test]
    fn a_lease_unchanged_for_a_whole_period_is_stale() {
        let start = Instant::now();
        let mut observer = LeaseObserver::default();
        let leases = [(RowId(1), 1e9), (RowId(2), 1e9)];
        let first = observer.observe(&leases, LEASE, start);
        assert_eq!(first.stale, vec![]);
        assert_eq!(first.next_look, Some(start + LEASE));
        let almost = observer.observe(&leases, LEASE, start + LEASE - Duration::from_millis(1));
        assert_eq!(almost.stale, vec![]);
        let due = observer.observe(&leases, LEASE, start + LEASE);
        assert_eq!(due.stale, leases.to_vec());
        assert_eq!(due.next_look, None);
        assert_eq!(observer.watched(), 0, "reported once, then forgotten");
    }

    #[test]
    fn a_renewed_lease_is_watched_from_its_new_token() {
        let start = Instant::now();
        let mut observer = LeaseObserver::default();
        observer.observe(&[(RowId(1), 100.0)], LEASE, start);
        let renewed_at = start + LEASE / 3;
        let renewed = observer.observe(&[(RowId(1), 100.5)], LEASE, renewed_at);
        assert_eq!(renewed.next_look, Some(renewed_at + LEASE));
        let later = observer.observe(&[(RowId(1), 100.5)], LEASE, start + LEASE);
        assert_eq!(later.stale, vec![], "a live holder's row is never taken");
        let stale = observer.observe(&[(RowId(1), 100.5)], LEASE, renewed_at + LEASE);
        assert_eq!(stale.stale, vec![(RowId(1), 100.5)]);
    }

    /// Tokens are compared, never their values against a clock: a token far in the future (a
    /// holder whose wall clock ran ahead, or this one's behind) or long past goes stale after
    /// exactly one period, no sooner and no later.
    #[test]
    fn the_value_of_a_token_does_not_matter() {
        let start = Instant::now();
        for token in [0.0, 1.0, 4.0e9, -3.0, 1e300] {
            let mut observer = LeaseObserver::default();
            assert_eq!(
                observer.observe(&[(RowId(9), token)], LEASE, start).stale,
                vec![]
            );
            let half = observer.observe(&[(RowId(9), token)], LEASE, start + LEASE / 2);
            assert_eq!(half.stale, vec![], "{token}");
            let whole = observer.observe(&[(RowId(9), token)], LEASE, start + LEASE);
            assert_eq!(whole.stale, vec![(RowId(9), token)], "{token}");
        }
    }

    #[test]
    fn rows_no_longer_leased_are_forgotten() {
        let start = Instant::now();
        let mut observer = LeaseObserver::default();
        observer.observe(&[(RowId(1), 5.0), (RowId(2), 5.0)], LEASE, start);
        let verdict = observer.observe(&[(RowId(2), 5.0)], LEASE, start + LEASE / 2);
        assert_eq!(observer.watched(), 1);
        assert_eq!(verdict.next_look, Some(start + LEASE));
        // Leased again later with the same value: a new lease, watched from now.
        let again_at = start + LEASE;
        let again = observer.observe(&[(RowId(1), 5.0)], LEASE, again_at);
        assert_eq!(again.stale, vec![]);
        assert_eq!(again.next_look, Some(again_at + LEASE));
    }
}
