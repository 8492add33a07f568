//! The pending rows and bytes the queue limits are checked against, kept in memory by the writer
//! ([`PendingGauge`]), and how one transaction changes them ([`PendingDelta`]).
//!
//! It knows nothing of SQL: the writer counts what its commands changed and applies it on commit,
//! and decides with [`ExactCount`] when the gauge must be checked against a count of the table.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// The pending rows and bytes, kept up to date by the writer after every commit so that the API
/// can refuse writes past the queue limits without reading the database on every request. Writes
/// by other processes (`gradata drain` or `gradata queue retry` from the CLI, an SDK sharing the
/// database) are not seen here, so the writer reads the counts again when another connection has
/// committed: before it refuses a write for a limit ([`ExactCount`]), and when the daemon asks
/// ([`crate::store::Store::refresh_pending`]). Those counts are the ones the database's triggers
/// keep (`gradata_queue_counts`), so reading them costs the same at any queue size.
#[derive(Debug, Default)]
pub(in crate::store) struct PendingGauge {
    rows: AtomicI64,
    bytes: AtomicI64,
}

impl PendingGauge {
    pub(in crate::store) fn set(&self, rows: u64, bytes: u64) {
        self.rows
            .store(i64::try_from(rows).unwrap_or(i64::MAX), Ordering::Relaxed);
        self.bytes
            .store(i64::try_from(bytes).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub(in crate::store) fn get(&self) -> (u64, u64) {
        let clamp = |v: i64| u64::try_from(v).unwrap_or(0);
        (
            clamp(self.rows.load(Ordering::Relaxed)),
            clamp(self.bytes.load(Ordering::Relaxed)),
        )
    }

    /// Adds what a committed transaction changed. Never goes below zero: a negative gauge (rows
    /// another process added, then settled here) would let that many rows past the limits.
    pub(super) fn apply(&self, delta: PendingDelta) {
        let add = |gauge: &AtomicI64, by: i64| {
            // Only the writer thread applies deltas; the closure never fails, so neither does the
            // update.
            let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| {
                Some(value.saturating_add(by).max(0))
            });
        };
        add(&self.rows, delta.rows);
        add(&self.bytes, delta.bytes);
    }
}

/// How often, at most, a refused write recounts the table when no other connection has committed
/// since the last count: the gauge is then exact, and a queue that is really full must not cost a
/// full count per refused request. The bound is a safety net against a miscount of our own.
const RECOUNT_UNCHANGED_EVERY: Duration = Duration::from_secs(1);

/// When the writer last counted the pending rows exactly, and what SQLite's `data_version` of its
/// connection was then. That number changes exactly when another connection (another process, or
/// a tool) commits, so an unchanged one means the gauge still holds.
#[derive(Debug, Default)]
pub(super) struct ExactCount {
    last: Option<(i64, Instant)>,
}

impl ExactCount {
    /// Whether another connection has committed since the last count (or nothing was counted yet).
    pub(super) fn changed_since(&self, data_version: i64) -> bool {
        self.last.is_none_or(|(seen, _)| seen != data_version)
    }

    /// Whether a write about to be refused should be checked against a new count first.
    pub(super) fn worth_recounting(&self, data_version: i64, now: Instant) -> bool {
        self.changed_since(data_version)
            || self
                .last
                .is_some_and(|(_, at)| now.duration_since(at) >= RECOUNT_UNCHANGED_EVERY)
    }

    pub(super) fn counted(&mut self, data_version: i64, now: Instant) {
        self.last = Some((data_version, now));
    }
}

/// How a command changes the pending rows and bytes; applied only if its transaction commits.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PendingDelta {
    pub(super) rows: i64,
    pub(super) bytes: i64,
}

impl PendingDelta {
    pub(super) fn add(&mut self, other: PendingDelta) {
        self.rows += other.rows;
        self.bytes += other.bytes;
    }

    pub(super) fn row(&mut self, sign: i64, bytes: i64) {
        self.rows += sign;
        self.bytes += sign * bytes;
    }

    pub(super) fn plus(self, other: PendingDelta) -> PendingDelta {
        PendingDelta {
            rows: self.rows + other.rows,
            bytes: self.bytes + other.bytes,
        }
    }

    /// As rows and bytes, a negative count read as zero.
    pub(super) fn counts(self) -> (u64, u64) {
        (
            u64::try_from(self.rows).unwrap_or(0),
            u64::try_from(self.bytes).unwrap_or(0),
        )
    }

    pub(super) fn minus(self, other: PendingDelta) -> PendingDelta {
        PendingDelta {
            rows: self.rows - other.rows,
            bytes: self.bytes - other.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_never_goes_below_zero() {
        let gauge = PendingGauge::default();
        gauge.set(2, 100);
        gauge.apply(PendingDelta {
            rows: -5,
            bytes: -500,
        });
        assert_eq!(gauge.get(), (0, 0));
        // And a later insert counts from zero, not from -3.
        gauge.apply(PendingDelta { rows: 1, bytes: 10 });
        assert_eq!(gauge.get(), (1, 10));
    }

    #[test]
    fn a_refusal_recounts_only_after_another_commit_or_a_while() {
        let mut exact = ExactCount::default();
        let start = Instant::now();
        assert!(exact.worth_recounting(7, start), "never counted");
        exact.counted(7, start);
        assert!(!exact.worth_recounting(7, start));
        assert!(
            exact.worth_recounting(8, start),
            "another connection committed"
        );
        assert!(exact.worth_recounting(7, start + RECOUNT_UNCHANGED_EVERY));
    }
}
