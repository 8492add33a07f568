//! How a committed group becomes durable before its callers hear "yes" under `synchronous=FULL`:
//! the writer fsyncs the WAL itself ([`WalSync`]), once per group, on its own thread, and the
//! [`DurabilityAlarm`] remembers the first fsync that failed, after which nothing is promised.
//!
//! Invariant: one fsync of the WAL's handle at a time, and every command waiting on an fsync
//! hears its outcome. The kernel reports a write-back error once per open file: of two fsyncs
//! running at once on one handle, one can see the EIO and the other return success for pages that
//! never reached the disk. Here only the writer's thread fsyncs, through [`WalSync::flush`], which
//! takes `&mut self`: a second fsync cannot start before the first has returned and, if it failed,
//! raised the alarm, after which no fsync runs and every later group fails.
//!
//! An fsync thread that flushed long groups while the writer ran the next one was tried and
//! removed: a benchmark of `Store::enqueue` from 64 concurrent tasks, with and without it in one
//! run on the project's two-core machine (`benches/fsync.rs`, removed with the thread), found it
//! did not pay (events/s with the thread over inline, medians of three rounds, two runs: 0.82 and
//! 0.93 for single events, 0.94 and 1.06 for batches of 100), while it needed a lock to keep its
//! fsyncs from overlapping the writer's.
//!
//! What this costs the local API: with 64 keep-alive clients a group holds tens of requests (24
//! on average in one counted run: 8,467 `fdatasync`s for 204,511 requests), and the clients wait
//! for the fsync together, so a cycle is the HTTP work of the group plus one fsync, one after the
//! other: events/s ≈ clients / (clients / rate without fsync + fsync time). The fsync (0.5 to 1
//! ms on the project's machine, from the disk, not the CPU) is why `synchronous=full` runs at
//! about half the rate of `normal`; only work overlapping the fsync would take it out of the
//! cycle.
//!
//! It knows nothing of the queue or its SQL: it is handed committed groups of commands to answer.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rusqlite::Connection;
use tokio::sync::watch;

use super::command::Command;
use crate::store::{Error, Synchronous};

fn set_synchronous(conn: &Connection, synchronous: Synchronous) -> rusqlite::Result<()> {
    let value = match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", value)
}

/// How durable commits are made durable.
pub(super) enum Durability {
    /// SQLite syncs (or not) inside the commit, as `synchronous` says; nothing else to do.
    Sqlite,
    /// `synchronous=FULL` done by the writer: the connection commits with NORMAL (which in WAL
    /// mode differs from FULL only by the fsync of the WAL at commit) and [`WalSync`] performs
    /// that fsync before the durable commands of the group are answered, once for the group.
    Wal(WalSync),
}

impl Durability {
    /// Sets the connection up for `synchronous`. With FULL the WAL file is opened for the writer to
    /// fsync; if it cannot be (it always exists once the store is open in WAL mode), SQLite's own
    /// FULL is kept: slower, equally safe.
    pub(super) fn new(
        conn: &Connection,
        database_path: &Path,
        synchronous: Synchronous,
        alarm: Arc<DurabilityAlarm>,
    ) -> std::io::Result<Durability> {
        let sqlite = |synchronous| {
            set_synchronous(conn, synchronous)
                .map(|()| Durability::Sqlite)
                .map_err(std::io::Error::other)
        };
        if synchronous == Synchronous::Normal {
            return sqlite(Synchronous::Normal);
        }
        let mut wal_path = database_path.as_os_str().to_owned();
        wal_path.push("-wal");
        let Ok(wal) = File::open(&wal_path) else {
            return sqlite(Synchronous::Full);
        };
        set_synchronous(conn, Synchronous::Normal).map_err(std::io::Error::other)?;
        Ok(Durability::Wal(WalSync::new(Box::new(wal), alarm)))
    }
}

/// Whether writes can still be made durable. Raised by the first failed fsync of the WAL, the
/// [`WalSync`]'s or SQLite's inside a commit, and never lowered: what the kernel kept of the WAL
/// is unknown from then on, so the writer refuses every command, and [`super::Writer::durability_lost`]
/// tells the service, which stops so that a fresh open recovers the WAL from the disk. The death
/// of the writer thread (a bug) raises it too: nothing can be written after that either.
pub(super) struct DurabilityAlarm {
    /// Read before every group: a plain load, where the watch below would take its lock.
    raised: AtomicBool,
    /// The reason, for the [`super::Writer`]'s receiver; dropped with the last holder of the alarm.
    reason: watch::Sender<Option<String>>,
}

impl DurabilityAlarm {
    pub(super) fn new() -> (Arc<DurabilityAlarm>, watch::Receiver<Option<String>>) {
        let (reason, receiver) = watch::channel(None);
        let alarm = DurabilityAlarm {
            raised: AtomicBool::new(false),
            reason,
        };
        (Arc::new(alarm), receiver)
    }

    /// Raises the alarm; only the first reason is kept.
    pub(super) fn raise(&self, reason: &dyn std::fmt::Display) {
        if !self.raised.swap(true, Ordering::SeqCst) {
            self.reason.send_replace(Some(reason.to_string()));
        }
    }

    pub(super) fn raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }
}

/// Whether SQLite failed a commit because an fsync failed.
pub(super) fn is_failed_fsync(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_IOERR_FSYNC
                || failure.extended_code == rusqlite::ffi::SQLITE_IOERR_DIR_FSYNC
    )
}

/// What is fsynced: the WAL's open file; a stand-in in tests, to inject failures and count calls.
pub(super) trait SyncData: Send {
    fn sync_data(&self) -> std::io::Result<()>;
}

impl SyncData for File {
    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }
}

/// The WAL file, fsynced by the writer for each group that promises durability. Owned by the
/// writer's loop alone (see the module's invariant). If an fsync fails, what the kernel kept of the
/// WAL is unknown (a later fsync may succeed without the lost pages), so every later write fails
/// too, until the service is restarted and SQLite recovers the WAL from what is really on disk.
/// The first failure is announced ([`DurabilityAlarm`]) so that the service stops for that restart
/// instead of refusing every write until an operator notices.
pub(super) struct WalSync {
    file: Box<dyn SyncData>,
    /// Raised by a failed fsync; once raised, nothing written since can be promised durable.
    alarm: Arc<DurabilityAlarm>,
}

impl WalSync {
    pub(super) fn new(file: Box<dyn SyncData>, alarm: Arc<DurabilityAlarm>) -> WalSync {
        WalSync { file, alarm }
    }

    /// Fsyncs the WAL, then answers `group`: its outcomes if the fsync succeeded, the error if
    /// not. Every command of the group hears the same outcome.
    pub(super) fn flush(&mut self, group: Vec<Command>) {
        match self.sync() {
            Ok(()) => group.into_iter().for_each(Command::answer),
            Err(err) => group.into_iter().for_each(|command| command.fail(&err)),
        }
    }

    /// One fsync, unless an earlier one failed; a failure raises the alarm before returning, so
    /// no later fsync is asked of the kernel.
    fn sync(&mut self) -> Result<(), Error> {
        if self.alarm.raised() {
            return Err(Error::SyncFailed(
                "an earlier fsync of the WAL failed".to_owned(),
            ));
        }
        self.file.sync_data().map_err(|err| {
            let err = Error::SyncFailed(format!("fsync of the WAL: {err}"));
            self.alarm.raise(&err);
            err
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::oneshot;

    use super::*;
    use crate::store::types::RetrySelector;
    use crate::store::writer::Reply;

    /// A durable command that has run and awaits its fsync, and the receiver of its answer.
    fn ran_retry() -> (Command, oneshot::Receiver<Result<usize, Error>>) {
        let (sender, receiver) = oneshot::channel();
        let mut reply = Reply::new(sender);
        reply.set(Ok(1));
        let command = Command::Retry {
            selector: RetrySelector::AllDead,
            reply,
        };
        (command, receiver)
    }

    /// A WAL that counts its fsyncs and fails one of them with EIO (the kernel reports a
    /// write-back error once per open file, so later ones would succeed).
    /// It also records the most fsyncs it ever saw running at once.
    #[derive(Default)]
    pub(in crate::store::writer) struct FakeWal {
        pub(in crate::store::writer) calls: AtomicUsize,
        pub(in crate::store::writer) fail_call: usize,
        pub(in crate::store::writer) in_flight: AtomicUsize,
        pub(in crate::store::writer) most_in_flight: AtomicUsize,
    }

    impl SyncData for Arc<FakeWal> {
        fn sync_data(&self) -> std::io::Result<()> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let running = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_in_flight.fetch_max(running, Ordering::SeqCst);
            // Takes a little while, as an fsync does, so that overlapping calls would show.
            for _ in 0..50 {
                std::thread::yield_now();
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if call == self.fail_call {
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        }
    }

    /// Flushes a group of `size` commands; returns their answers.
    fn flush(wal: &mut WalSync, size: usize) -> Vec<Result<usize, Error>> {
        let (group, answers): (Vec<_>, Vec<_>) = (0..size).map(|_| ran_retry()).unzip();
        wal.flush(group);
        answers
            .into_iter()
            .map(|mut answer| answer.try_recv().unwrap())
            .collect()
    }

    /// An fsync that fails reaches every command of its group, and of every group after it,
    /// though the kernel would let the next fsync succeed: no fsync runs after the failed one. The
    /// groups before it were acknowledged. The alarm says why, once.
    #[test]
    fn an_injected_fsync_error_reaches_every_waiter() {
        let fake = Arc::new(FakeWal {
            fail_call: 2,
            ..FakeWal::default()
        });
        let (alarm, mut lost) = DurabilityAlarm::new();
        let mut wal = WalSync::new(Box::new(fake.clone()), alarm.clone());
        assert!(flush(&mut wal, 3).iter().all(Result::is_ok));
        assert!(lost.borrow().is_none());

        let failed = flush(&mut wal, 5);
        assert_eq!(failed.len(), 5);
        for answer in &failed {
            let Err(Error::SyncFailed(why)) = answer else {
                panic!("acknowledged after a failed fsync: {answer:?}");
            };
            assert!(why.starts_with("fsync of the WAL: "), "{why}");
        }
        assert!(alarm.raised());
        let reason = lost.borrow_and_update().clone().unwrap();
        assert!(reason.contains("fsync of the WAL: "), "{reason}");

        for answer in flush(&mut wal, 4) {
            let Err(Error::SyncFailed(why)) = answer else {
                panic!("acknowledged after a failed fsync: {answer:?}");
            };
            assert_eq!(why, "an earlier fsync of the WAL failed");
        }
        assert_eq!(
            fake.calls.load(Ordering::SeqCst),
            2,
            "an fsync after the failed one"
        );
        assert!(!lost.has_changed().unwrap(), "the reason was replaced");
    }

    /// A real file: Linux refuses to fsync /dev/null (EINVAL), as a failing disk refuses with EIO.
    #[test]
    fn a_file_that_cannot_be_fsynced_fails_the_group() {
        let (alarm, _lost) = DurabilityAlarm::new();
        let mut wal = WalSync::new(Box::new(File::open("/dev/null").unwrap()), alarm);
        assert!(
            flush(&mut wal, 2)
                .iter()
                .all(|answer| matches!(answer, Err(Error::SyncFailed(_))))
        );
        let dir = tempfile::tempdir().unwrap();
        let (alarm, _lost) = DurabilityAlarm::new();
        let file = File::create(dir.path().join("wal")).unwrap();
        let mut wal = WalSync::new(Box::new(file), alarm);
        assert!(flush(&mut wal, 2).iter().all(Result::is_ok));
    }
}
