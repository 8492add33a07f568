//! The pending rows and bytes the queue limits are checked against, kept in memory by the writer
//! ([`PendingGauge`]), and how one transaction changes them ([`PendingDelta`]).
//!
//! It knows nothing of SQL: the writer counts what its commands changed and applies it on commit.

use std::sync::atomic::{AtomicI64, Ordering};

/// The pending rows and bytes, kept up to date by the writer after every commit so that the API
/// can refuse writes past the queue limits without counting the table on every request. Writes by
/// other processes (the CLI, an SDK sharing the database) are not seen here; the daemon corrects
/// the gauge from a full count now and then ([`crate::store::Store::recount_pending`]).
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

    pub(super) fn apply(&self, delta: PendingDelta) {
        self.rows.fetch_add(delta.rows, Ordering::Relaxed);
        self.bytes.fetch_add(delta.bytes, Ordering::Relaxed);
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
}
