//! The retention task: every [`INTERVAL`] it deletes the synced rows past their retention, in
//! steps of at most [`STEP_IDS`] rows (one transaction each, through the store's writer), resting
//! between steps as long as the last one took, so that the purge takes at most half of the
//! writer's time and writes submitted meanwhile wait at most one step. Then the WAL is checkpointed
//! and cut back, giving back the disk the purge wrote through.
//!
//! It runs in a task of its own, apart from the watchdog's: a purge of millions of rows takes as
//! long as it takes without starving the watchdog. It knows nothing of what a synced row is: the
//! store decides what a step deletes.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{self, Store, WalCheckpoint};

/// How often synced rows past their retention are purged.
pub const INTERVAL: Duration = Duration::from_secs(3600);
/// How long after the start the first purge runs: not during the startup's own work.
pub const FIRST_AFTER: Duration = Duration::from_secs(60);
/// Ids (so rows, at most) one step covers. A step of 250 expired rows takes about a millisecond
/// of the writer's time, which is what a write arriving during it may wait; a million rows then
/// take about 4,000 steps (11 s in the purge benchmark). Steps of 1,000 rows held writes up to
/// 25 ms there, against 10 ms with steps of 250.
pub const STEP_IDS: u32 = 250;
/// Steps between two pauses until the WAL is checkpointed to its end (after which the next commit
/// starts it over): a step writes about 23 pages, so the WAL stays near 3,000 pages (12 MiB), well
/// short of the writer's backstop checkpoint at 8,000 (which would copy them all inside a commit
/// and hold every write meanwhile).
pub const STEPS_PER_CATCH_UP: usize = 128;
/// How many checkpoints a pause tries before the purge goes on anyway, and the rest between them
/// (the writes of others, committed meanwhile, are what keeps a checkpoint from the end).
const CATCH_UP_TRIES: u32 = 20;
const CATCH_UP_REST: Duration = Duration::from_millis(5);
/// Test hook: when set to a number of seconds, the first purge runs that long after the start
/// instead of [`FIRST_AFTER`], so tests and benchmarks need not wait a minute. Never set in
/// production.
pub const FIRST_PURGE_HOOK: &str = "GRADATA_TEST_FIRST_PURGE_AFTER_SECS";

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Synced rows deleted.
    pub purged: usize,
    /// Steps taken, each its own transaction.
    pub steps: usize,
    /// The most rows one step deleted.
    pub largest_step: usize,
    /// Whether the WAL was checkpointed and cut back afterwards.
    pub wal_truncated: bool,
    /// Whether `cancel` stopped it before the end.
    pub cancelled: bool,
}

/// Deletes the rows synced more than `older_than` ago, in steps of `step_ids` ids, resting between
/// steps as long as the step took, and every [`STEPS_PER_CATCH_UP`] steps until the WAL is
/// checkpointed to its end; stops between two steps once `cancel` fires. When it deleted anything,
/// the WAL is then cut back ([`Store::checkpoint_wal`]).
pub async fn purge(
    store: &Store,
    older_than: Duration,
    step_ids: u32,
    cancel: &CancellationToken,
) -> Result<PurgeReport, store::Error> {
    let mut report = PurgeReport::default();
    let mut after = None;
    loop {
        let started = Instant::now();
        let step = store.purge_synced(older_than, after, step_ids).await?;
        report.steps += 1;
        report.purged += step.deleted;
        report.largest_step = report.largest_step.max(step.deleted);
        let Some(next) = step.next else { break };
        after = Some(next);
        if report.steps % STEPS_PER_CATCH_UP == 0 {
            catch_up(store).await?;
        }
        // The rest lets the writes that queued during the step commit in groups of their own,
        // instead of with the next step's deletions.
        tokio::select! {
            () = cancel.cancelled() => {
                report.cancelled = true;
                break;
            }
            () = tokio::time::sleep(started.elapsed()) => {}
        }
    }
    if report.purged > 0 {
        catch_up(store).await?;
        report.wal_truncated = store.checkpoint_wal(WalCheckpoint::Truncate).await?;
    }
    Ok(report)
}

/// Runs passive checkpoints until one reaches the WAL's end, a few at most.
async fn catch_up(store: &Store) -> Result<(), store::Error> {
    for _ in 0..CATCH_UP_TRIES {
        if store.checkpoint_wal(WalCheckpoint::CatchUp).await? {
            break;
        }
        tokio::time::sleep(CATCH_UP_REST).await;
    }
    Ok(())
}

/// Purges every [`INTERVAL`] (the first time after [`FIRST_AFTER`], or the test hook's delay),
/// with the retention a reload last set, until `cancel` fires.
pub async fn run(store: Store, retention: watch::Receiver<Duration>, cancel: CancellationToken) {
    let first_after = std::env::var(FIRST_PURGE_HOOK)
        .ok()
        .and_then(|value| value.parse::<f64>().ok())
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .unwrap_or(FIRST_AFTER);
    let mut next = tokio::time::Instant::now() + first_after;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + INTERVAL;
        let older_than = *retention.borrow();
        let started = Instant::now();
        tracing::debug!("purging synced rows past their retention");
        match purge(&store, older_than, STEP_IDS, &cancel).await {
            Ok(report) if report.purged == 0 => {
                tracing::debug!(steps = report.steps, "no synced rows past their retention");
            }
            Ok(report) => tracing::info!(
                purged = report.purged,
                steps = report.steps,
                elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                wal_truncated = report.wal_truncated,
                "deleted synced rows past their retention"
            ),
            Err(err) => tracing::warn!(error = %err, "could not purge synced rows"),
        }
    }
}
