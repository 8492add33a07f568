//! Opening a data directory: file modes, the instance lock, leases a gone store left, `Create::Never`,
//! migrating an original database, and read-only opens.

use super::*;

/// What the store creates is its owner's alone, whatever the umask (a developer's usual 022 here):
/// the data directory 0700, the database, its WAL files, the lock files and `brain_id` 0600. A
/// directory that already exists keeps its mode.
#[test]
fn a_new_store_is_private_to_its_owner() {
    use nix::sys::stat::{Mode, umask};
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let (_guard, dir) = support::temp_dir();
    let data_dir = dir.join("state").join("gradata");
    let existing = dir.join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The umask is the process's; 022 is what most tests run under anyway.
    let previous = umask(Mode::from_bits_truncate(0o022));
    let opened = [&data_dir, &existing].map(|dir| {
        let store = Store::open(&Options::new(dir)).unwrap();
        gradata::store::resolve_brain_id(dir).unwrap();
        store
    });
    umask(previous);

    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(
        mode(&existing),
        0o755,
        "an existing directory's mode changed"
    );
    for dir in [&data_dir, &existing] {
        for name in [
            "system.db",
            "system.db-wal",
            "system.db-shm",
            ".gradata.leases.lock",
            "brain_id",
        ] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{}", dir.join(name).display());
        }
    }
    drop(opened);
    let _service = Store::open(&Options {
        instance_lock: InstanceLock::Exclusive,
        ..Options::new(&data_dir)
    })
    .unwrap();
    assert_eq!(mode(&data_dir.join(gradata::store::INSTANCE_LOCK)), 0o600);
}

/// A second exclusive open of a data directory fails with `Locked` until the first store is gone.
#[test]
fn instance_lock_admits_one_store_at_a_time() {
    let (_guard, dir) = support::temp_dir();
    let options = Options {
        instance_lock: InstanceLock::Exclusive,
        ..Options::new(&dir)
    };
    let first = Store::open(&options).unwrap();
    let second = Store::open(&options);
    assert!(
        matches!(second, Err(Error::Locked(_))),
        "second exclusive open: {second:?}"
    );
    drop(first);
    Store::open(&options).unwrap();
}

/// Leases left by a store that is gone are released by the next open when it is alone.
#[tokio::test]
async fn stale_leases_are_recovered_by_a_lone_open() {
    let (_guard, dir) = support::temp_dir();
    let store = support::open_store(&dir);
    support::fill(&store, 10).await;
    let claimed = claim_first(&store, 10).await;
    assert_eq!(claimed.len(), 10);
    drop(store);
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.lease_until.is_some()),
        "the dead store's leases should still be in the table"
    );

    let store = support::open_store(&dir);
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.lease_until.is_none()),
        "a lone open should release stale leases"
    );
    let again = claim_first(&store, 10).await;
    assert_eq!(ids(&again), ids(&claimed));
}

/// An open while another store is still open leaves that store's leases alone.
#[tokio::test]
async fn an_open_beside_a_live_store_keeps_its_leases() {
    let (_guard, dir) = support::temp_dir();
    let live = support::open_store(&dir);
    support::fill(&live, 10).await;
    claim_first(&live, 10).await;
    let leases_before: Vec<Option<f64>> = support::rows(&dir)
        .iter()
        .map(|row| row.lease_until)
        .collect();

    let second = support::open_store(&dir);
    let leases_after: Vec<Option<f64>> = support::rows(&dir)
        .iter()
        .map(|row| row.lease_until)
        .collect();
    assert_eq!(leases_after, leases_before);
    assert!(leases_after.iter().all(Option::is_some));
    let stolen = claim_first(&second, 10).await;
    assert!(
        stolen.is_empty(),
        "claimed a live store's rows: {:?}",
        ids(&stolen)
    );
    drop(live);
}

/// `Create::Never` on an empty directory fails with `NotFound` and creates nothing there.
#[test]
fn create_never_on_an_empty_dir_creates_nothing() {
    let (_guard, dir) = support::temp_dir();
    let options = Options {
        create: Create::Never,
        ..Options::new(&dir)
    };
    assert!(dir_listing(&dir).is_empty());
    let opened = Store::open(&options);
    assert!(matches!(opened, Err(Error::NotFound(_))), "{opened:?}");
    assert_eq!(dir_listing(&dir), BTreeSet::new());
}

/// `Create::Never` on a database without the queue table fails with `NoQueueTable`, adds nothing.
#[test]
fn create_never_without_queue_table_adds_no_table() {
    let (_guard, dir) = support::temp_dir();
    let path = dir.join(gradata::store::DATABASE_FILE);
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE other (x INTEGER);")
            .unwrap();
    }
    let options = Options {
        create: Create::Never,
        ..Options::new(&dir)
    };
    let opened = Store::open(&options);
    assert!(matches!(opened, Err(Error::NoQueueTable(_))), "{opened:?}");
    let conn = Connection::open(&path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(tables, vec!["other".to_owned()]);
}

/// `Create::Never` on a database without the queue table leaves the file byte for byte unchanged.
#[test]
fn create_never_without_queue_table_writes_nothing() {
    let (_guard, dir) = support::temp_dir();
    let path = dir.join(gradata::store::DATABASE_FILE);
    {
        // Another tool's database, in SQLite's default rollback-journal mode.
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE other (x INTEGER);")
            .unwrap();
    }
    let bytes = std::fs::read(&path).unwrap();
    let listing = dir_listing(&dir);
    let opened = Store::open(&Options {
        create: Create::Never,
        ..Options::new(&dir)
    });
    assert!(matches!(opened, Err(Error::NoQueueTable(_))), "{opened:?}");
    assert_eq!(dir_listing(&dir), listing);
    let after = std::fs::read(&path).unwrap();
    let changed: Vec<usize> = (0..bytes.len().max(after.len()))
        .filter(|&i| bytes.get(i) != after.get(i))
        .collect();
    assert!(
        changed.is_empty(),
        "the database file was modified at byte offsets {changed:?}"
    );
}

/// The original daemon's columns, read before gradata has added its own.
type OriginalRow = (
    i64,
    String,
    String,
    f64,
    Option<f64>,
    Option<i64>,
    Option<String>,
);

fn original_rows(dir: &Path) -> Vec<OriginalRow> {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.prepare(
        "SELECT id, payload_json, kind, enqueued_at, synced_at, attempts, last_error
           FROM sync_queue ORDER BY id",
    )
    .unwrap()
    .query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Opening an original database keeps every original value, backfills `event_id`, and is idempotent.
#[test]
fn migrating_an_original_database_keeps_its_rows() {
    let (_guard, dir) = support::temp_dir();
    let payloads: Vec<String> = (0..50).map(support::original_payload).collect();
    support::original_db(&dir, &payloads);
    {
        // Some history, as the original would have left it.
        let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
        conn.execute_batch(
            "UPDATE sync_queue SET synced_at = enqueued_at + 5 WHERE id <= 10;
             UPDATE sync_queue SET attempts = 3, last_error = 'timeout' WHERE id BETWEEN 11 AND 15;
             UPDATE sync_queue SET attempts = NULL WHERE id = 16;",
        )
        .unwrap();
    }
    let before = original_rows(&dir);
    assert_eq!(before.len(), 50);

    drop(support::open_store(&dir));
    let migrated = support::rows(&dir);
    let kept: Vec<OriginalRow> = migrated
        .iter()
        .map(|row| {
            (
                row.id,
                row.payload_json.clone(),
                row.kind.clone(),
                row.enqueued_at,
                row.synced_at,
                row.attempts,
                row.last_error.clone(),
            )
        })
        .collect();
    assert_eq!(kept, before);
    for (n, row) in migrated.iter().enumerate() {
        assert_eq!(
            row.event_id,
            Some(format!("01ORIG{n:08}")),
            "row {}",
            row.id
        );
        assert_eq!(
            (
                row.next_attempt_at,
                row.lease_until,
                row.dead_at,
                row.last_status
            ),
            (None, None, None, None)
        );
    }

    drop(support::open_store(&dir));
    assert_eq!(support::rows(&dir), migrated, "a second open changed rows");
}

/// `open_read_only` refuses an unmigrated original database, and reads it once migrated.
#[tokio::test]
async fn read_only_open_needs_a_migrated_database() {
    let (_guard, dir) = support::temp_dir();
    let payloads: Vec<String> = (0..50).map(support::original_payload).collect();
    support::original_db(&dir, &payloads);
    let options = Options::new(&dir);
    let refused = Store::open_read_only(&options);
    assert!(matches!(refused, Err(Error::NotMigrated(_))), "{refused:?}");

    drop(Store::open(&options).unwrap());
    let store = Store::open_read_only(&options).unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.pending, stats.dead, stats.synced), (50, 0, 0));
    assert_eq!(
        stats.pending_bytes,
        payloads.iter().map(|p| p.len() as u64).sum::<u64>()
    );
    assert!(matches!(
        store.list(RowState::Pending, 1).await.map(|l| l.len()),
        Ok(1)
    ));
}
