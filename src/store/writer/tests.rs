use super::*;
use std::time::Duration;

use crate::store::types::{EnqueueOutcome, EventId, Kind, NewEvent};
use durability::WalSync;
use durability::tests::FakeWal;

/// The real writer under eight concurrent callers, fsyncing a stand-in WAL that fails its
/// twentieth fsync: never two fsyncs at once; none after the failed one; every caller whose
/// group waited on it, and every later one, hears `SyncFailed`; and the alarm is raised.
#[test]
fn one_fsync_at_a_time_and_a_failure_reaches_every_waiter() {
    const CALLERS: usize = 8;
    const WRITES: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    // The schema, as the store creates it.
    drop(crate::store::Store::open(&crate::store::Options::new(dir.path())).unwrap());
    let path = dir.path().join(crate::store::DATABASE_FILE);
    let open = || {
        let conn = Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn
    };
    let fake = Arc::new(FakeWal {
        fail_call: 20,
        ..FakeWal::default()
    });
    let wal = fake.clone();
    let writer = Writer::spawn_with(
        open(),
        open(),
        Arc::new(PendingGauge::default()),
        |conn, alarm| {
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(std::io::Error::other)?;
            Ok(Durability::Wal(WalSync::new(Box::new(wal), alarm)))
        },
    )
    .unwrap();
    let mut lost = writer.durability_lost();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let writer = Arc::new(writer);
    let answers: Vec<Result<Vec<EnqueueOutcome>, Error>> = runtime.block_on(async {
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for _ in 0..WRITES {
                        let event = NewEvent::new(
                            "brain-test",
                            EventId::generate(),
                            Kind::Event,
                            &serde_json::json!({}),
                        );
                        answers.push(
                            writer
                                .call(|reply| Command::Enqueue {
                                    events: vec![event],
                                    limit: None,
                                    now: std::time::SystemTime::now(),
                                    reply,
                                })
                                .await,
                        );
                    }
                    answers
                })
            })
            .collect();
        let mut answers = Vec::new();
        for caller in callers {
            answers.extend(caller.await.unwrap());
        }
        answers
    });
    assert_eq!(fake.most_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        20,
        "an fsync after the failed one"
    );
    assert!(lost.borrow_and_update().is_some());
    let acknowledged = answers.iter().filter(|answer| answer.is_ok()).count();
    // At least one write per group fsynced before the failure; none after it.
    assert!(
        (19..CALLERS * WRITES).contains(&acknowledged),
        "{acknowledged}"
    );
    assert!(
        answers
            .iter()
            .filter_map(|answer| answer.as_ref().err())
            .all(|err| matches!(err, Error::SyncFailed(_)))
    );
}

/// A writer loop that panics raises the alarm (so the service stops and starts again); one
/// that returns does not.
#[test]
fn a_panic_in_the_writer_raises_the_alarm() {
    let (alarm, mut reason) = DurabilityAlarm::new();
    raise_if_it_panics(&alarm, || {});
    assert!(!alarm.raised());
    raise_if_it_panics(&alarm, || panic!("a bug"));
    assert!(alarm.raised());
    let said = reason.borrow_and_update().clone().unwrap();
    assert!(said.contains("writer thread stopped on a bug"), "{said}");
}
