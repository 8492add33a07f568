//! What the service refuses to start with, before `READY=1`: a corrupt outbox, a data directory or
//! brain another service holds, an unusable passed socket, and a non-loopback listener without
//! the local token.

use std::time::Duration;

use super::stop_cleanly;
use crate::support::daemon::{self, PATIENCE, Spec};
use crate::support::{self};

/// An outbox that is not an SQLite database (or a damaged one): the service does not start, says
/// which file and what to do, never sends `READY=1`, and leaves the file exactly as it was; the CLI
/// says the same.
#[test]
fn a_corrupt_outbox_is_named_and_left_untouched() {
    let (_guard, dir) = support::temp_dir();
    let database = dir.join(gradata::store::DATABASE_FILE);
    let garbage: Vec<u8> = b"not an SQLite database; ".repeat(400);
    std::fs::write(&database, &garbage).unwrap();

    let mut daemon = Spec::new(&dir).spawn();
    let code = daemon.exit_code(PATIENCE);
    assert!(code != 0 && code != 78, "exit code {code}");
    let stderr = daemon.stderr();
    for needle in [
        database.display().to_string().as_str(),
        "not a readable SQLite database; move it aside",
        "file is not a database",
        "move it aside to start again with an empty outbox",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
    assert!(!daemon.notify().all().iter().any(|m| m.has("READY=1")));
    assert_eq!(std::fs::read(&database).unwrap(), garbage);
    assert!(!dir.join("system.db-wal").exists());

    let status = support::gradata(&dir).arg("status").output().unwrap();
    assert_eq!(status.status.code(), Some(1), "{status:?}");
    let said = String::from_utf8_lossy(&status.stderr);
    assert!(said.contains("not a readable SQLite database"), "{said}");
    assert!(said.contains(&database.display().to_string()), "{said}");
    assert_eq!(std::fs::read(&database).unwrap(), garbage);
}

/// A second service on the same data directory fails at once, says why, and tells systemd.
#[test]
fn a_second_service_on_the_same_data_dir_fails_fast() {
    let (_guard, dir) = support::temp_dir();
    let mut first = Spec::new(&dir).spawn();
    first.expect_ready();

    let mut second = Spec::new(&dir).spawn();
    let code = second.exit_code(Duration::from_secs(10));
    assert_ne!(code, 0);
    let stderr = second.stderr();
    assert!(
        stderr.contains("another gradata service holds this data directory"),
        "{stderr}"
    );
    let fatal = second
        .notify()
        .expect("ERRNO=", |m| m.sets("ERRNO"), Duration::from_secs(1));
    let fatal = fatal.last().unwrap();
    assert_eq!(
        fatal.value("ERRNO"),
        Some(libc::EAGAIN.to_string().as_str()),
        "{fatal:?}"
    );
    support::assert_contains(fatal.value("STATUS"), "another gradata service", fatal);
    assert!(!second.notify().all().iter().any(|m| m.has("READY=1")));

    let (status, _) = daemon::get_health(first.addr());
    assert_eq!(status, 200, "the first service was disturbed");
    stop_cleanly(&mut first);
}

/// The service holds the Python Gradata daemon's instance lock (`.brain.lock`) as that daemon
/// does, PID inside: while it runs, the lock cannot be taken; a brain whose lock another daemon
/// holds is refused at start, naming the lock, before anything touches the database.
#[test]
fn the_service_and_the_python_daemon_never_serve_one_brain_at_once() {
    use nix::fcntl::{Flock, FlockArg};
    let (_guard, dir) = support::temp_dir();
    let lock_path = dir.join(gradata::store::BRAIN_LOCK);
    let mut service = Spec::new(&dir).spawn();
    service.expect_ready();
    assert_eq!(
        std::fs::read_to_string(&lock_path).unwrap(),
        service.pid().to_string()
    );
    let file = std::fs::File::open(&lock_path).unwrap();
    assert!(
        Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err(),
        "a Python daemon could take the brain gradata serves"
    );
    stop_cleanly(&mut service);

    // Now the Python daemon holds it.
    let file = std::fs::File::open(&lock_path).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
    let database = dir.join(gradata::store::DATABASE_FILE);
    let before = std::fs::read(&database).unwrap();
    let mut refused = Spec::new(&dir).spawn();
    let code = refused.exit_code(Duration::from_secs(10));
    assert_ne!(code, 0);
    let stderr = refused.stderr();
    assert!(
        stderr.contains(".brain.lock")
            && stderr.contains("another Gradata daemon serves this brain"),
        "{stderr}"
    );
    assert!(!refused.notify().all().iter().any(|m| m.has("READY=1")));
    assert_eq!(
        std::fs::read(&database).unwrap(),
        before,
        "the database was touched"
    );
    drop(held);
}

/// A passed socket the service cannot accept from is refused before `READY=1`, with exit 78 (a
/// socket unit mistake, which a restart cannot fix): a bound TCP socket nobody called `listen(2)`
/// on (what `Accept=yes` or a hand-made launcher passes), and a UDP socket.
#[test]
fn an_unusable_passed_socket_exits_78_before_ready() {
    use socket2::{Domain, Socket, Type};
    // Bound, and nothing more: no `listen(2)` for the stream socket, none possible for UDP.
    let bound = |kind: Type| {
        let socket = Socket::new(Domain::IPV4, kind, None).unwrap();
        socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        socket
    };
    for (socket, needle) in [
        (bound(Type::STREAM), "is not listening"),
        (bound(Type::DGRAM), "neither a TCP nor a unix stream socket"),
    ] {
        let (_guard, dir) = support::temp_dir();
        let mut daemon = Spec::new(&dir).passing(socket.into()).spawn();
        let code = daemon.exit_code(PATIENCE);
        let stderr = daemon.stderr();
        assert_eq!(code, 78, "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
        let all = daemon.notify().all();
        assert!(!all.iter().any(|m| m.has("READY=1")), "{all:#?}");
    }
}

/// Listening beyond loopback without a local token would let anyone on the network write events
/// (a network client can send any `Host`): refused with exit 78, for a `--listen` address and for
/// a socket systemd passes. With `api.token_file` set it is allowed, with a warning naming it.
#[test]
fn a_non_loopback_listener_needs_the_local_token() {
    let (_guard, dir) = support::temp_dir();
    let wildcard = format!("0.0.0.0:{}", daemon::free_port());
    let mut bound = Spec::new(&dir)
        .without_socket()
        .serve_arg("--listen")
        .serve_arg(&wildcard)
        .spawn();
    assert_eq!(bound.exit_code(PATIENCE), 78, "{}", bound.stderr());
    let stderr = bound.stderr();
    assert!(
        stderr.contains("api.listen") && stderr.contains(&wildcard),
        "{stderr}"
    );

    let passed = || std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let mut refused = Spec::new(&dir).passing(passed().into()).spawn();
    assert_eq!(refused.exit_code(PATIENCE), 78, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("api.token_file"),
        "{}",
        refused.stderr()
    );
    let all = refused.notify().all();
    assert!(!all.iter().any(|m| m.has("READY=1")), "{all:#?}");

    let token = dir.join("token");
    std::fs::write(&token, "local-token\n").unwrap();
    let mut allowed = Spec::new(&dir)
        .env("GRADATA_API_TOKEN_FILE", &token)
        .passing(passed().into())
        .spawn();
    allowed.expect_ready();
    let warning = allowed.wait_for_log("listening beyond loopback", PATIENCE);
    assert!(
        warning.contains("WARN") && warning.contains("0.0.0.0"),
        "{warning}"
    );
    stop_cleanly(&mut allowed);
}
