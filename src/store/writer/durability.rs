//! How a committed group becomes durable before its callers hear "yes" under `synchronous=FULL`:
//! the [`Syncer`] fsyncs the WAL itself, on the writer's thread or its own, one fsync at a time,
//! and the [`DurabilityAlarm`] remembers the first fsync that failed, after which nothing is
//! promised.
//!
//! It knows nothing of the queue or its SQL: it is handed committed groups of commands to answer.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// `synchronous=FULL` done by the [`Syncer`]: the connection commits with NORMAL (which in WAL
    /// mode differs from FULL only by the fsync of the WAL at commit) and the syncer performs that
    /// fsync before the durable commands of the group are answered.
    Syncer(Syncer),
}

impl Durability {
    /// Sets the connection up for `synchronous`. With FULL the WAL file is opened for the syncer;
    /// if it cannot be (it always exists once the store is open in WAL mode), SQLite's own FULL is
    /// kept: slower, equally safe.
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
        Ok(Durability::Syncer(Syncer::spawn(Box::new(wal), alarm)?))
    }
}

/// Fsyncs the WAL for durable groups, then answers their callers: on its own thread, so that the
/// writer can commit the next group meanwhile, or on the writer's thread when that is quicker.
///
/// Handing a group over costs two thread wake-ups, each of which can wait for a CPU (measured on
/// two busy cores: about 270 µs after each fsync). That pays when the writer has a long group to
/// write meanwhile (batches: 15–20% more events per second than fsyncing on the writer), and does
/// not when the group took less to write than an fsync takes (single events: 15% fewer). So a group
/// that was written in less time than the last fsync took is flushed by the writer itself, and a
/// longer one is handed over ([`Syncer::flush`]).
///
/// The hand-over channel is a rendezvous: the writer hands over a committed group only when the
/// thread is waiting for one, so at most one group is with the thread while the writer builds the
/// next one.
///
/// Invariant: one fsync of the WAL at a time ([`WalFile::flush`] holds a lock across it and checks
/// the alarm under it). The kernel reports a write-back error once per open file: of two fsyncs
/// running at once on one handle, one can see the EIO and the other return success for pages that
/// never reached the disk. Serialised, the fsync that sees it raises the alarm before the next one
/// may start, and that one (and every later one) fails its group without asking the kernel. If an
/// fsync fails, what the kernel kept of the WAL is unknown (a later fsync may
/// succeed without the lost pages), so every later write fails too, until the service is
/// restarted and SQLite recovers the WAL from what is really on disk. The first failure is
/// announced ([`DurabilityAlarm`]) so that the service stops for that restart instead of refusing
/// every write until an operator notices.
pub(super) struct Syncer {
    /// Whether long groups go to the fsync thread; false only under [`FSYNC_ON_THE_WRITER_HOOK`].
    hand_over: bool,
    groups: Option<mpsc::SyncSender<Vec<Command>>>,
    thread: Option<JoinHandle<()>>,
    wal: Arc<WalFile>,
}

/// Benchmark hook: when set (to anything), every group is fsynced on the writer's thread, so that
/// `benches/fsync.rs` can weigh the fsync thread against fsyncing inline in one run. Never set in
/// production.
const FSYNC_ON_THE_WRITER_HOOK: &str = "GRADATA_TEST_FSYNC_ON_THE_WRITER";

/// Whether writes can still be made durable. Raised by the first failed fsync of the WAL, the
/// [`Syncer`]'s own or SQLite's inside a commit, and never lowered: what the kernel kept of the WAL
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

/// What is fsynced: the WAL's open file; a stand-in in tests, to inject failures and watch calls.
trait SyncData: Send + Sync {
    fn sync_data(&self) -> std::io::Result<()>;
}

impl SyncData for File {
    fn sync_data(&self) -> std::io::Result<()> {
        File::sync_data(self)
    }
}

/// The WAL file, and what its fsyncs have shown so far.
struct WalFile {
    file: Box<dyn SyncData>,
    /// Held across each fsync and the alarm check before it, so that fsyncs of this file never
    /// overlap and none starts after one failed without seeing the alarm (see [`Syncer`]).
    fsync: Mutex<()>,
    /// Raised by a failed fsync; once raised, nothing written since can be promised durable.
    alarm: Arc<DurabilityAlarm>,
    /// How long the last fsync took, in microseconds.
    last_fsync_micros: AtomicU64,
    /// Fsyncs running now, and the most ever seen at once: the invariant above, made observable.
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl WalFile {
    fn new(file: Box<dyn SyncData>, alarm: Arc<DurabilityAlarm>) -> WalFile {
        WalFile {
            file,
            fsync: Mutex::new(()),
            alarm,
            last_fsync_micros: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            most_in_flight: AtomicUsize::new(0),
        }
    }

    /// Fsyncs the WAL, then answers `group`: its outcomes if the fsync succeeded, the error if not.
    /// Every command of the group hears the same outcome.
    fn flush(&self, group: Vec<Command>) {
        let outcome = self.sync();
        match outcome {
            Ok(()) => group.into_iter().for_each(Command::answer),
            Err(err) => group.into_iter().for_each(|command| command.fail(&err)),
        }
    }

    /// One fsync, after the previous one has finished, unless an earlier one failed; a failure
    /// raises the alarm before the next fsync may start.
    fn sync(&self) -> Result<(), Error> {
        // A panic while holding the lock leaves nothing half-done that the lock protects: the
        // fsync either ran or did not, and the alarm is atomic.
        let _one_at_a_time = self.fsync.lock().unwrap_or_else(PoisonError::into_inner);
        if self.alarm.raised() {
            return Err(Error::SyncFailed(
                "an earlier fsync of the WAL failed".to_owned(),
            ));
        }
        let started = Instant::now();
        let running = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(running, Ordering::SeqCst);
        let outcome = self.file.sync_data();
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_fsync_micros.store(micros, Ordering::Relaxed);
        outcome.map_err(|err| {
            let err = Error::SyncFailed(format!("fsync of the WAL: {err}"));
            self.alarm.raise(&err);
            err
        })
    }
}

impl Syncer {
    fn spawn(wal: Box<dyn SyncData>, alarm: Arc<DurabilityAlarm>) -> std::io::Result<Syncer> {
        let (groups, receiver) = mpsc::sync_channel::<Vec<Command>>(0);
        let wal = Arc::new(WalFile::new(wal, alarm));
        let thread_wal = wal.clone();
        let thread = std::thread::Builder::new()
            .name("gradata-fsync".to_owned())
            .spawn(move || {
                while let Ok(group) = receiver.recv() {
                    thread_wal.flush(group);
                }
            })?;
        Ok(Syncer {
            hand_over: std::env::var_os(FSYNC_ON_THE_WRITER_HOOK).is_none(),
            groups: Some(groups),
            thread: Some(thread),
            wal,
        })
    }

    /// Makes a committed group durable and answers it, on this thread or the syncer's (see
    /// [`Syncer`]); `written_in` is how long the writer took to run and commit it.
    pub(super) fn flush(&self, group: Vec<Command>, written_in: Duration) {
        let last_fsync = Duration::from_micros(self.wal.last_fsync_micros.load(Ordering::Relaxed));
        if written_in < last_fsync || !self.hand_over {
            self.wal.flush(group);
        } else {
            self.send(group);
        }
    }

    /// Hands durable commands over; they are answered after the next fsync.
    fn send(&self, group: Vec<Command>) {
        let unsent = match &self.groups {
            Some(groups) => match groups.send(group) {
                Ok(()) => return,
                Err(mpsc::SendError(group)) => group,
            },
            None => group,
        };
        // The syncer thread is gone (it panicked): nothing can be promised durable.
        let err = Error::SyncFailed("the fsync thread is gone".to_owned());
        self.wal.alarm.raise(&err);
        unsent.into_iter().for_each(|command| command.fail(&err));
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        // Let the thread flush and answer what it holds before the connection closes.
        drop(self.groups.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn syncer(dir: &Path, last_fsync: Duration) -> Syncer {
        let wal = File::create(dir.join("wal")).unwrap();
        let syncer = Syncer::spawn(Box::new(wal), DurabilityAlarm::new().0).unwrap();
        let micros = u64::try_from(last_fsync.as_micros()).unwrap();
        syncer
            .wal
            .last_fsync_micros
            .store(micros, Ordering::Relaxed);
        syncer
    }

    /// A group written in less time than the last fsync took is fsynced and answered before
    /// `flush` returns, on the caller's (the writer's) thread.
    #[test]
    fn a_quickly_written_group_is_flushed_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = syncer(dir.path(), Duration::from_secs(3600));
        let (command, mut answer) = ran_retry();
        syncer.flush(vec![command], Duration::from_millis(1));
        assert_eq!(answer.try_recv().unwrap().unwrap(), 1);
        // It was timed: the next decision compares against this fsync, not the hour set above.
        assert!(syncer.wal.last_fsync_micros.load(Ordering::Relaxed) < 3_600_000_000);
    }

    /// A group that took longer to write than the last fsync goes to the fsync thread, which
    /// answers it after its own fsync.
    #[test]
    fn a_long_group_is_flushed_by_the_fsync_thread() {
        let dir = tempfile::tempdir().unwrap();
        let syncer = syncer(dir.path(), Duration::ZERO);
        let (command, answer) = ran_retry();
        syncer.flush(vec![command], Duration::from_millis(1));
        assert_eq!(answer.blocking_recv().unwrap().unwrap(), 1);
    }

    /// A failed fsync fails its group and raises the alarm with its reason; later groups fail
    /// without another fsync, and the first reason stays the one reported.
    #[test]
    fn a_failed_fsync_raises_the_alarm_once() {
        let (alarm, mut lost) = DurabilityAlarm::new();
        // Linux refuses to fsync /dev/null (EINVAL), as a failing disk refuses with EIO.
        let wal = File::open("/dev/null").unwrap();
        let syncer = Syncer::spawn(Box::new(wal), alarm.clone()).unwrap();
        assert!(lost.borrow().is_none());
        let (command, answer) = ran_retry();
        syncer.flush(vec![command], Duration::from_millis(1));
        let Err(Error::SyncFailed(first)) = answer.blocking_recv().unwrap() else {
            panic!("acknowledged after a failed fsync");
        };
        assert!(first.starts_with("fsync of the WAL: "), "{first}");
        assert!(alarm.raised());
        let reason = lost.borrow_and_update().clone().unwrap();
        assert!(reason.ends_with(&first), "{reason}");

        let (command, answer) = ran_retry();
        syncer.flush(vec![command], Duration::from_millis(1));
        let Err(Error::SyncFailed(later)) = answer.blocking_recv().unwrap() else {
            panic!("acknowledged after a failed fsync");
        };
        assert_eq!(later, "an earlier fsync of the WAL failed");
        assert!(!lost.has_changed().unwrap(), "the reason was replaced");
    }

    /// A WAL that counts its fsyncs, watches how many run at once, and fails one of them with
    /// EIO (the kernel reports a write-back error once per open file, so later ones succeed).
    #[derive(Default)]
    struct FakeWal {
        calls: AtomicUsize,
        fail_call: usize,
        in_flight: AtomicUsize,
        most_in_flight: AtomicUsize,
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

    /// Flushes `groups` groups of `size` commands from four threads at once, half of them handed
    /// to the fsync thread and half fsynced by the caller, and returns every answer.
    fn flush_concurrently(
        wal: &Arc<FakeWal>,
        groups: usize,
        size: usize,
    ) -> (Syncer, Vec<Result<usize, Error>>) {
        let syncer = Syncer::spawn(Box::new(wal.clone()), DurabilityAlarm::new().0).unwrap();
        // A caller fsyncs itself when the group took less to write than the last fsync took.
        syncer
            .wal
            .last_fsync_micros
            .store(u64::MAX, Ordering::Relaxed);
        let answers = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..4)
                .map(|thread| {
                    let syncer = &syncer;
                    scope.spawn(move || {
                        let mut answers = Vec::new();
                        for n in (thread..groups).step_by(4) {
                            let written_in = if n % 2 == 0 {
                                Duration::ZERO
                            } else {
                                Duration::MAX
                            };
                            let (group, receivers): (Vec<_>, Vec<_>) =
                                (0..size).map(|_| ran_retry()).unzip();
                            syncer.flush(group, written_in);
                            answers
                                .extend(receivers.into_iter().map(|r| r.blocking_recv().unwrap()));
                        }
                        answers
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|thread| thread.join().unwrap())
                .collect()
        });
        (syncer, answers)
    }

    /// Whichever thread flushes (the writer's or the fsync thread), never two fsyncs of the WAL
    /// run at once.
    #[test]
    fn one_fsync_at_a_time() {
        let wal = Arc::new(FakeWal::default());
        let (syncer, answers) = flush_concurrently(&wal, 400, 1);
        assert!(answers.iter().all(Result::is_ok));
        assert_eq!(wal.calls.load(Ordering::SeqCst), 400);
        assert_eq!(wal.most_in_flight.load(Ordering::SeqCst), 1);
        assert_eq!(syncer.wal.most_in_flight.load(Ordering::SeqCst), 1);
    }

    /// An fsync that fails reaches every command of its group and of every group flushed after
    /// it, though the kernel would let the next fsync succeed: no fsync runs after the failed one,
    /// and exactly the groups fsynced before it are acknowledged.
    #[test]
    fn an_injected_fsync_error_reaches_every_waiter() {
        const SIZE: usize = 3;
        let fail_call = 25;
        let wal = Arc::new(FakeWal {
            fail_call,
            ..FakeWal::default()
        });
        let (syncer, answers) = flush_concurrently(&wal, 200, SIZE);
        assert!(syncer.wal.alarm.raised());
        assert_eq!(
            wal.calls.load(Ordering::SeqCst),
            fail_call,
            "an fsync ran after one had failed"
        );
        let acknowledged = answers.iter().filter(|answer| answer.is_ok()).count();
        assert_eq!(acknowledged, (fail_call - 1) * SIZE);
        assert!(
            answers
                .iter()
                .filter_map(|answer| answer.as_ref().err())
                .all(|err| matches!(err, Error::SyncFailed(_)))
        );
    }

    /// After a failed fsync nothing is promised durable, on either path.
    #[test]
    fn after_a_failed_fsync_every_flush_fails() {
        let dir = tempfile::tempdir().unwrap();
        for last_fsync in [Duration::from_secs(3600), Duration::ZERO] {
            let syncer = syncer(dir.path(), last_fsync);
            syncer
                .wal
                .alarm
                .raise(&Error::SyncFailed("test".to_owned()));
            let (command, answer) = ran_retry();
            syncer.flush(vec![command], Duration::from_millis(1));
            assert!(
                matches!(answer.blocking_recv().unwrap(), Err(Error::SyncFailed(_))),
                "last fsync {last_fsync:?}"
            );
        }
    }
}
