//! [`Store`], the cheap-to-clone handle every caller holds: the write commands it sends to the
//! writer thread, and the one read path, which runs queries on the read connection off the async
//! workers.
//!
//! It holds no SQL of its own: the queries live in `read.rs` and `writer/queries*`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rusqlite::Connection;

use super::lock::LockFile;
use super::read::{self, QueueEntry, Stats};
use super::types::{
    BrainEventRow, ClaimFrom, ClaimedRow, EnqueueOutcome, NewEvent, OutboxEntry, QueueLimit,
    RecordedEvent, RetrySelector, RowId, RowState, Settlement, lease_until,
};
use super::writer::{Command, PendingGauge, Writer};
use super::{Error, to_unix};
use crate::clock::Clock;

/// Handle to the outbox. Clones share one writer thread and one read connection.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// The handle over what [`Store::open`] or [`Store::open_read_only`] set up.
    pub(super) fn new(shared: Shared) -> Store {
        Store {
            shared: Arc::new(shared),
        }
    }
}

/// What every clone of a [`Store`] shares; `open.rs` builds it.
pub(super) struct Shared {
    /// Read-only queries. A std mutex: held only for one short query, never across `.await`.
    /// Declared (so dropped) before the writer: the last connection to close checkpoints the WAL
    /// and removes it, which only a read-write connection can do.
    pub(super) reader: Mutex<Connection>,
    /// Sends commands to the writer thread. Dropped (with `Shared`) to tell the thread to finish.
    /// `None` for a read-only store.
    pub(super) writer: Option<Writer>,
    /// Pending rows and bytes as of the last commit (updated by the writer thread).
    pub(super) pending: Arc<PendingGauge>,
    pub(super) database_path: PathBuf,
    /// Where the stored times (`enqueued_at`, settlements, claims' due check) come from.
    pub(super) clock: Clock,
    /// Held for the life of the store; released after the writer has closed its connection.
    pub(super) _instance_lock: Option<InstanceLocks>,
    pub(super) _leases_lock: Option<LockFile>,
}

/// The two instance locks a service holds: gradata's own and the Python daemon's (`lock.rs`).
#[derive(Debug)]
pub(super) struct InstanceLocks {
    pub(super) _own: LockFile,
    pub(super) _brain: LockFile,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("database", &self.shared.database_path)
            .finish()
    }
}

impl Store {
    /// Path of the database file.
    pub fn database_path(&self) -> &Path {
        &self.shared.database_path
    }

    /// The clock this store reads the times it stores from; the engine draining it reads the same.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Commits events; idempotent on `event_id`. All events of one call commit together or not at
    /// all, and the future resolves only after the commit is durable.
    pub async fn enqueue(&self, events: Vec<NewEvent>) -> Result<Vec<EnqueueOutcome>, Error> {
        self.writer()?
            .call(|reply| Command::Enqueue {
                events,
                limit: None,
                now: self.shared.clock.now(),
                reply,
            })
            .await
    }

    /// [`Store::enqueue`], unless the events would take the pending rows or bytes past `limit`:
    /// then nothing is written and the answer is [`Error::QueueFull`]. The check runs in the
    /// writer's transaction, against every write committed or grouped before it.
    pub async fn enqueue_within(
        &self,
        events: Vec<NewEvent>,
        limit: QueueLimit,
    ) -> Result<Vec<EnqueueOutcome>, Error> {
        self.writer()?
            .call(|reply| Command::Enqueue {
                events,
                limit: Some(limit),
                now: self.shared.clock.now(),
                reply,
            })
            .await
    }

    /// Commits a row of the brain's `events` table and, if given, an outbox row, in one
    /// transaction, answered once it is durable. The outbox row never costs the brain its event:
    /// when the queue is at the entry's limit it is skipped, and when its insert fails it alone
    /// is rolled back ([`crate::store::OutboxOutcome`] says which). When the event's insert fails,
    /// nothing is written.
    pub async fn record_brain_event(
        &self,
        event: BrainEventRow,
        outbox: Option<OutboxEntry>,
    ) -> Result<RecordedEvent, Error> {
        self.writer()?
            .call(|reply| Command::Record {
                event: Box::new(event),
                outbox,
                now: self.shared.clock.now(),
                reply,
            })
            .await
    }

    /// The highest integer `session` in the brain's `events` table, `None` when there is none
    /// (or no table): where the brain's session numbering starts again after a restart.
    pub async fn max_event_session(&self) -> Result<Option<i64>, Error> {
        self.read(|conn| Ok(super::schema::max_event_session(conn)?))
            .await
    }

    /// Leases up to `limit` pending rows for `lease` and returns them in id order. Rows leased by
    /// another drainer (thread or process) are skipped, so no row is handed out twice at once.
    pub async fn claim_batch(
        &self,
        limit: usize,
        from: ClaimFrom,
        lease: Duration,
    ) -> Result<Vec<ClaimedRow>, Error> {
        let now = self.shared.clock.now();
        self.claim_batch_until(limit, from, lease_until(now, lease), Duration::MAX)
            .await
    }

    /// Like [`Store::claim_batch`], with the lease's token given. A lease is a token, not a
    /// deadline: no claim takes a leased row, whatever its value, and the holder keeps it by
    /// renewing it ([`Store::renew_leases`]). `lease_until` is stored exactly as given, and
    /// [`Store::settle_leased`] takes it back as the token that proves the rows are still this
    /// drainer's.
    ///
    /// `longest_wait` is the longest backoff or `Retry-After` a settlement can give: a due claim
    /// ([`ClaimFrom::Due`]) also takes rows timed further off than that from now, which only a
    /// wall clock stepped back since they were settled can produce, so that such a step does not
    /// hold them back for as long as it was.
    pub async fn claim_batch_until(
        &self,
        limit: usize,
        from: ClaimFrom,
        lease_until: SystemTime,
        longest_wait: Duration,
    ) -> Result<Vec<ClaimedRow>, Error> {
        let now = self.shared.clock.now();
        self.writer()?
            .call(|reply| Command::Claim {
                limit,
                from,
                lease_until,
                longest_wait,
                now,
                reply,
            })
            .await
    }

    /// Records the outcome of delivery attempts, whoever holds the rows; each settlement also
    /// releases the row's lease. For tools and tests; a drain settles with
    /// [`Store::settle_leased`].
    pub async fn settle(&self, settlements: Vec<Settlement>) -> Result<(), Error> {
        self.settle_fenced(settlements, None).await
    }

    /// Records the outcome of delivery attempts on rows claimed with `lease_until` (the value
    /// given to [`Store::claim_batch_until`]). `Retry`, `Dead` and `Release` change a row only
    /// while it still holds that lease: a drainer whose lease ran out (it stalled, or the clock
    /// jumped) must not clear another drainer's live lease or overwrite what it recorded.
    /// `Synced` is not fenced: a delivery is a fact, whoever learned it.
    pub async fn settle_leased(
        &self,
        settlements: Vec<Settlement>,
        lease_until: SystemTime,
    ) -> Result<(), Error> {
        self.settle_fenced(settlements, Some(lease_until)).await
    }

    async fn settle_fenced(
        &self,
        settlements: Vec<Settlement>,
        lease_until: Option<SystemTime>,
    ) -> Result<(), Error> {
        self.writer()?
            .call(|reply| Command::Settle {
                settlements,
                lease_until,
                now: self.shared.clock.now(),
                reply,
            })
            .await
    }

    /// Every lease held on a pending row, as `(id, token)` (a few index entries: the rows in
    /// drainers' hands). For the observer of stale leases.
    pub async fn leases(&self) -> Result<Vec<(RowId, f64)>, Error> {
        self.read(read::leases).await
    }

    /// Renews the lease of `rows`, claimed (or last renewed) with `held`, to `renewed`, a
    /// different value: an observer that saw `held` then sees a lease still in use. Rows that no
    /// longer hold `held` are left alone. Returns how many were renewed.
    pub async fn renew_leases(
        &self,
        rows: &[RowId],
        held: SystemTime,
        renewed: SystemTime,
    ) -> Result<usize, Error> {
        let held = to_unix(held);
        let rows = rows.iter().map(|id| (*id, held)).collect();
        let to = Some(to_unix(renewed));
        self.writer()?
            .call(|reply| Command::Relet { rows, to, reply })
            .await
    }

    /// Frees the leases of `stale` rows, each `(id, token)`: only a row that still holds the
    /// token observed is freed, so a lease renewed meanwhile stays. Returns how many were freed.
    pub async fn release_stale_leases(&self, stale: Vec<(RowId, f64)>) -> Result<usize, Error> {
        self.writer()?
            .call(|reply| Command::Relet {
                rows: stale,
                to: None,
                reply,
            })
            .await
    }

    /// Makes dead rows (or the given rows) pending and due now; returns how many changed.
    pub async fn retry(&self, selector: RetrySelector) -> Result<usize, Error> {
        self.writer()?
            .call(|reply| Command::Retry { selector, reply })
            .await
    }

    /// Stores a small status value (e.g. the sync state) for `gradata status` to read.
    pub async fn set_meta(&self, key: &'static str, value: String) -> Result<(), Error> {
        self.writer()?
            .call(|reply| Command::SetMeta {
                key,
                value,
                now: self.shared.clock.now(),
                reply,
            })
            .await
    }

    /// Write transactions committed by this handle's writer since it opened (0 when read-only).
    /// Group commit shows here as fewer commits than write calls.
    pub fn commits(&self) -> u64 {
        self.shared.writer.as_ref().map_or(0, Writer::commits)
    }

    /// WAL checkpoints completed by this handle's checkpointer thread since it opened (0 when
    /// read-only).
    pub fn checkpoints(&self) -> u64 {
        self.shared.writer.as_ref().map_or(0, Writer::checkpoints)
    }

    /// Resolves, with the reason, once this store can no longer make writes durable: an fsync of
    /// the WAL failed, so what the kernel kept of it is unknown and every later write fails with
    /// [`Error::SyncFailed`], or the writer thread died on a bug. Only opening the store again
    /// recovers, SQLite then reading the WAL as it is on disk; the service stops for that. Never
    /// resolves while fsyncs succeed and the writer runs, nor for a read-only store. Holds no
    /// reference to the store.
    pub fn failed(&self) -> impl Future<Output = String> + Send + 'static {
        let receiver = self.shared.writer.as_ref().map(Writer::durability_lost);
        async move {
            if let Some(mut receiver) = receiver {
                let reason = receiver
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|reason| reason.clone());
                if let Some(reason) = reason {
                    return reason;
                }
            }
            // The writer is gone, or it never fsyncs itself: nothing will ever be announced.
            std::future::pending().await
        }
    }

    /// Pending rows and payload bytes, as this process's writes left them: a cheap gauge, exact
    /// for this process, corrected for other writers by [`Store::refresh_pending`] and before a
    /// write is refused for a queue limit.
    pub fn pending(&self) -> (u64, u64) {
        self.shared.pending.get()
    }

    /// Reads the pending rows and bytes again, in the writer's transaction, and resets the pending
    /// gauge from them; returns them. They come from the counts the database's triggers keep, so
    /// this costs the same at any queue size.
    pub async fn recount_pending(&self) -> Result<(u64, u64), Error> {
        self.writer()?
            .call(|reply| Command::Recount {
                only_if_changed: false,
                reply,
            })
            .await
            // Always `Some` when not asked to skip.
            .map(Option::unwrap_or_default)
    }

    /// [`Store::recount_pending`] if another process (`gradata drain`, `gradata queue retry`, an
    /// SDK sharing the database) has committed since the last count, which SQLite's
    /// `data_version` tells at no cost; `None` when nothing needed counting. The service calls it
    /// periodically, so the gauge the queue limits use follows other writers.
    pub async fn refresh_pending(&self) -> Result<Option<(u64, u64)>, Error> {
        self.writer()?
            .call(|reply| Command::Recount {
                only_if_changed: true,
                reply,
            })
            .await
    }

    /// The pending rows now, including those written by other processes, from the counts the
    /// database's triggers keep. Blocking (one row is read): a shim for the sync engine's
    /// `spawn_blocking` call sites until they move to the async read path.
    pub async fn count_pending(&self) -> Result<u64, Error> {
        self.read(|conn| read::pending(conn).map(|(rows, _)| rows))
            .await
    }

    /// Counts by state, the live leases and the oldest pending row's age, in time that does not
    /// grow with the queue.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.read(read::stats).await
    }

    /// Lists rows in one state, oldest first.
    pub async fn list(&self, state: RowState, limit: usize) -> Result<Vec<QueueEntry>, Error> {
        self.read(move |conn| read::list(conn, state, limit)).await
    }

    /// Reads a value stored with [`Store::set_meta`].
    pub async fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        let key = key.to_owned();
        self.read(move |conn| read::meta(conn, &key)).await
    }

    /// When the earliest pending row becomes due (a few index lookups). Blocking: a shim for the
    /// sync worker's `spawn_blocking` call site until it moves to the async read path.
    pub async fn next_due_at(&self) -> Result<Option<SystemTime>, Error> {
        self.read(read::next_due_at).await
    }

    /// SQLite's `PRAGMA data_version` of the read connection: a number that changes exactly when
    /// another connection (this store's writer, another process) has committed since the last
    /// call. Reads no table: a cheap way to learn that someone else may have changed the queue.
    pub async fn data_version(&self) -> Result<i64, Error> {
        self.read(read::data_version).await
    }

    /// The one async read path: runs `query` on the read connection on tokio's blocking pool, so
    /// that neither the query nor the wait for the connection's lock holds an async worker.
    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read_blocking(query))
            .await
            .map_err(|err| Error::ReadTask(Arc::new(err)))?
    }

    /// Runs `query` on the read connection, on this thread.
    fn read_blocking<T>(
        &self,
        query: impl FnOnce(&Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // A poisoned lock only means another reader panicked mid-query; the connection is fine.
        let conn = self
            .shared
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        query(&conn)
    }

    pub(super) fn writer(&self) -> Result<&Writer, Error> {
        self.shared.writer.as_ref().ok_or(Error::ReadOnly)
    }
}
