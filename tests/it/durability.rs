//! Durability of the outbox under the real binary: a SIGKILL under write load loses no
//! acknowledged event, and a failed fsync stops the service so that a restart recovers from what
//! the disk holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::api::{Service, ok};
use crate::support::daemon::{self, PATIENCE, request, request_bytes};
use crate::support::{self};

/// SIGKILL while clients are writing: every event whose `POST` was answered 2xx is in the outbox
/// afterwards, the database passes SQLite's integrity check, and the service starts again on it
/// with those rows pending. A 2xx sent before its commit, or a commit torn by the kill, fails this.
/// (The page cache outlives a killed process, so this does not show the WAL's fsync; that a group
/// is answered only after its fsync, and never after a failed one, is shown by the writer's unit
/// tests.)
#[test]
fn sigkill_under_write_load_keeps_every_acknowledged_event() {
    const CLIENTS: usize = 8;
    const BEFORE_KILL: usize = 400;
    let mut service = Service::start(|spec| spec);
    let addr = service.addr();
    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                let mut stream = daemon::connect(addr);
                // Until the kill breaks the connection: each answer is read before the next write.
                for n in 0.. {
                    let id = format!("kill-{client}-{n}");
                    let body = json!({"kind": "event", "event_id": id, "data": {"n": n}});
                    let raw = request_bytes(
                        addr,
                        "POST",
                        "/v1/events",
                        &[
                            ("Content-Type", "application/json"),
                            ("Connection", "keep-alive"),
                        ],
                        body.to_string().as_bytes(),
                    );
                    if std::io::Write::write_all(&mut stream, &raw).is_err() {
                        return;
                    }
                    match daemon::read_response(&mut stream) {
                        Ok(response) if response.status == 200 => {
                            acknowledged.lock().unwrap().push(id);
                        }
                        Ok(response) => panic!("{id}: refused under load: {response:?}"),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + PATIENCE;
    while acknowledged.lock().unwrap().len() < BEFORE_KILL {
        assert!(
            Instant::now() < deadline,
            "fewer than {BEFORE_KILL} writes acknowledged within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    service.daemon.signal("KILL");
    assert!(
        service.daemon.wait(PATIENCE).is_some(),
        "still running after SIGKILL"
    );
    for client in clients {
        client.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= BEFORE_KILL);

    service.assert_database_intact();
    let stored: std::collections::HashSet<String> = service
        .rows()
        .into_iter()
        .filter_map(|row| row.event_id)
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged events are not in the outbox, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
    // At most one request per client was in flight at the kill: committed, but never answered.
    assert!(
        stored.len() <= acknowledged.len() + CLIENTS,
        "{} rows for {} acknowledged writes from {CLIENTS} clients",
        stored.len(),
        acknowledged.len()
    );

    let restarted = service.start_again();
    let (status, health) = daemon::get_health(restarted.addr());
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["queue"]["pending"], stored.len(), "{health}");
}

/// A failing disk (every fsync of the WAL fails with `EIO`, through a preloaded library): the write
/// that waited for the failed fsync is answered 503 `flush_failed` with `Retry-After`, and the
/// service stops with a failure that names the cause, so that systemd (`Restart=on-failure`)
/// starts it again: only a fresh open recovers the WAL from what the disk really holds. Started
/// again on the same directory, every event acknowledged before the fault is there, the database
/// is intact, and writes are acknowledged again.
#[test]
fn a_failed_fsync_stops_the_service_and_a_restart_recovers() {
    let (_marker_dir, marker_dir) = support::temp_dir();
    let marker = marker_dir.join("disk-fails");
    let mut service = Service::start(|spec| {
        spec.env("LD_PRELOAD", support::fsync_fault_library())
            .env("FSYNC_FAULT_MARKER", &marker)
            .json_logs()
    });
    let acknowledged: Vec<String> = (0..3).map(|n| format!("before-{n}")).collect();
    for id in &acknowledged {
        ok(
            id,
            &service.post(
                "/v1/events",
                &json!({"kind": "event", "event_id": id, "data": {}}),
            ),
        );
    }

    std::fs::write(&marker, b"").unwrap();
    let refused = service.post(
        "/v1/events",
        &json!({"kind": "event", "event_id": "during", "data": {}}),
    );
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.json()["code"], "flush_failed", "{refused:?}");
    assert!(refused.header("retry-after").is_some(), "{refused:?}");
    let code = service.daemon.exit_code(PATIENCE);
    assert!(
        code != 0 && code != 78,
        "exit code {code}: systemd restarts on-failure, but not after 0 or 78"
    );
    let notified = service.daemon.notify().texts().join("\n");
    assert!(notified.contains("ERRNO=5"), "{notified}");
    assert!(
        notified.contains("STATUS=failed: the outbox could not be made durable: fsync of the WAL"),
        "{notified}"
    );
    // Said in the journal when writes are first refused, and as the reason for stopping. The
    // failed fsync is the syncer's, or SQLite's own when the commit started the WAL over.
    let stderr = service.daemon.stderr();
    let reasons = stderr
        .lines()
        .filter(|line| line.contains("the outbox could not be made durable: fsync of the WAL"))
        .count();
    assert!(reasons >= 2, "the cause is not logged:\n{stderr}");
    assert!(
        stderr.contains("stopping, so that the service starts again on what the disk holds"),
        "{stderr}"
    );

    std::fs::remove_file(&marker).unwrap();
    service.assert_database_intact();
    let restarted = service.start_again();
    let stored: Vec<String> = service
        .rows()
        .into_iter()
        .filter_map(|row| row.event_id)
        .collect();
    for id in &acknowledged {
        assert!(
            stored.contains(id),
            "{id} was acknowledged but is lost: {stored:?}"
        );
    }
    // The refused write may be there (committed, never acknowledged): a retry deduplicates.
    assert!(stored.len() <= acknowledged.len() + 1, "{stored:?}");
    let (status, health) = daemon::get_health(restarted.addr());
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["queue"]["pending"], stored.len(), "{health}");
    let retried = request(
        restarted.addr(),
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json")],
        json!({"kind": "event", "event_id": "during", "data": {}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(retried.status, 200, "{retried:?}");
}
