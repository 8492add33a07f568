//! Retention of synced rows at scale: the purge runs in bounded steps that writes pass between,
//! deletes only synced rows past their retention, gives the WAL's disk back afterwards, and runs
//! off the watchdog's path in the service.

use std::path::Path;
use std::time::Duration;

use gradata::daemon::retention;
use gradata::store::{self, EventId, Kind, NewEvent};
use tokio_util::sync::CancellationToken;

use crate::support::daemon::{PATIENCE, Spec, prepare};
use crate::support::{self};

const DAY: f64 = 86_400.0;

/// How many rows of each state [`add_rows`] wrote.
#[derive(Debug, Default)]
struct Added {
    /// Synced 30 days ago.
    expired: usize,
    pending: usize,
    dead: usize,
    /// Synced an hour ago.
    recent: usize,
}

/// Adds `n` rows straight into the outbox in `dir`, in one transaction, one in ten of each of
/// these states: pending, dead, synced an hour ago; the rest synced 30 days ago (past any
/// retention below that). Payloads of about 500 bytes, so that deleting them writes pages.
fn add_rows(dir: &Path, n: usize) -> Added {
    let conn = rusqlite::Connection::open(dir.join(store::DATABASE_FILE)).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO sync_queue (payload_json, kind, enqueued_at, synced_at, attempts, dead_at)
         SELECT '{\"event\": {\"pad\": \"' || printf('%.500c', 'x') || '\"}}', 'event',
                ?2 - 31 * ?3,
                CASE i % 10 WHEN 0 THEN NULL WHEN 5 THEN NULL WHEN 7 THEN ?2 - 3600
                            ELSE ?2 - 30 * ?3 END,
                1,
                CASE i % 10 WHEN 5 THEN ?2 - 30 * ?3 ELSE NULL END
         FROM n",
        rusqlite::params![i64::try_from(n).unwrap(), now, DAY],
    )
    .unwrap();
    let with_remainder = |r: usize| (1..=n).filter(|i| i % 10 == r).count();
    let (pending, dead, recent) = (with_remainder(0), with_remainder(5), with_remainder(7));
    Added {
        expired: n - pending - dead - recent,
        pending,
        dead,
        recent,
    }
}

fn wal_bytes(dir: &Path) -> u64 {
    let mut wal = dir.join(store::DATABASE_FILE).into_os_string();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |meta| meta.len())
}

/// A purge of 40 steps' worth of expired rows runs as at least 40 transactions of at most a step
/// each; a write submitted while it runs commits before it ends (it waits for a step, not for the
/// purge); only synced rows past the retention go; and the WAL, several MiB after the purge's
/// deletions, is cut back afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_runs_in_bounded_steps_that_writes_pass_between() {
    const STEP: u32 = 250;
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    let added = add_rows(&dir, 40 * STEP as usize * 10 / 7);
    assert!(added.expired >= 40 * STEP as usize, "{added:?}");
    // What the bound on the WAL below is measured against: the rows just written are in it.
    assert!(wal_bytes(&dir) > 4 << 20, "{}", wal_bytes(&dir));

    let commits_before = store.commits();
    let purging = tokio::spawn({
        let store = store.clone();
        async move {
            let cancel = CancellationToken::new();
            let report =
                retention::purge(&store, Duration::from_secs_f64(7.0 * DAY), STEP, &cancel)
                    .await
                    .unwrap();
            (report, store.commits(), wal_bytes_after(&store))
        }
    });
    // Once the purge has committed a step, a write goes in.
    while store.commits() == commits_before {
        tokio::task::yield_now().await;
    }
    let event = NewEvent::new(
        "brain-test",
        EventId::generate(),
        Kind::Event,
        &serde_json::json!({"during": "the purge"}),
    );
    store.enqueue(vec![event]).await.unwrap();
    let commits_at_write = store.commits();
    assert!(
        !purging.is_finished(),
        "the write waited for the whole purge"
    );
    let (report, commits_after, wal_after) = purging.await.unwrap();

    assert_eq!(report.purged, added.expired, "{report:?}");
    assert!(report.largest_step <= STEP as usize, "{report:?}");
    assert!(report.steps >= 40, "{report:?}");
    // Every step is a commit of its own; the write's commit came with steps still to go.
    assert!(
        commits_after - commits_before >= 40,
        "{commits_after} {commits_before}"
    );
    assert!(
        commits_after > commits_at_write + 10,
        "{commits_after} {commits_at_write}"
    );
    let rows = support::rows(&dir);
    assert_eq!(rows.len(), added.pending + added.dead + added.recent + 1);
    let count = |pred: fn(&support::Row) -> bool| rows.iter().filter(|row| pred(row)).count();
    assert_eq!(count(|row| row.dead_at.is_some()), added.dead);
    assert_eq!(count(|row| row.synced_at.is_some()), added.recent);
    assert_eq!(
        count(|row| row.synced_at.is_none() && row.dead_at.is_none()),
        added.pending + 1
    );
    assert!(report.wal_truncated, "{report:?}");
    assert!(wal_after < 64 * 1024, "the WAL kept {wal_after} bytes");
}

/// The WAL's size as the purge left it, read before anything else writes.
fn wal_bytes_after(store: &gradata::store::Store) -> u64 {
    let dir = store.database_path().parent().unwrap();
    wal_bytes(dir)
}

/// The service purges in a task of its own: while a purge of 300,000 expired rows runs, the
/// watchdog keeps being fed (before, the purge ran in the loop that feeds it, and no ping could
/// come until it was over), and the rows past their retention are gone at the end.
#[test]
fn the_watchdog_is_fed_while_a_purge_runs() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 0);
    let added = add_rows(&dir, 300_000);
    let mut daemon = Spec::new(&dir)
        .env("WATCHDOG_USEC", "400000")
        .env("GRADATA_TEST_FIRST_PURGE_AFTER_SECS", "0")
        .env("GRADATA_LOG", "info,gradata::daemon::retention=debug")
        .spawn();
    daemon.expect_ready();
    daemon.wait_for_log("purging synced rows past their retention", PATIENCE);
    let started = std::time::Instant::now();
    let done = daemon.wait_for_log("deleted synced rows past their retention", PATIENCE * 4);
    let ended = std::time::Instant::now();
    assert_eq!(
        crate::support::daemon::log_field(&done, "purged").as_deref(),
        Some(added.expired.to_string().as_str()),
        "{done}"
    );
    let pings = daemon
        .notify()
        .all()
        .iter()
        .filter(|m| m.has("WATCHDOG=1") && m.at > started && m.at < ended)
        .count();
    // A ping every 200 ms: a purge this long that let the watchdog be fed shows several.
    assert!(
        pings >= 2,
        "{pings} pings during a purge of {:?}",
        ended - started
    );
    assert!(!daemon.stderr().contains("not feeding the watchdog"));
    daemon.sigterm();
    assert_eq!(daemon.exit_code(PATIENCE), 0, "{}", daemon.stderr());
}
