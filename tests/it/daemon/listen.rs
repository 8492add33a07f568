//! Where the service listens and what it leaves for the original daemon's tools: `--listen` (TCP,
//! unix socket, a taken address), every passed socket, the pid file, the original command line
//! and its environment.

use std::time::{Duration, Instant};

use super::stop_cleanly;
use crate::support::daemon::{self, PATIENCE, Spec};
use crate::support::{self};

/// Without passed sockets the service binds `--listen` itself.
#[test]
fn listen_flag_binds_without_passed_sockets() {
    let (_guard, dir) = support::temp_dir();
    let address = format!("127.0.0.1:{}", daemon::free_port());
    let mut daemon = Spec::new(&dir)
        .without_socket()
        .serve_arg("--listen")
        .serve_arg(&address)
        .spawn();
    let addr = address.parse().unwrap();
    let deadline = Instant::now() + PATIENCE;
    let response = loop {
        match daemon::try_get_health(addr) {
            Ok(response) => break response,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "/health never answered on {address} ({err}); stderr:\n{}",
                    daemon.stderr()
                );
                assert!(daemon.wait(Duration::ZERO).is_none(), "{}", daemon.stderr());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(response.status, 200, "{response:?}");
    stop_cleanly(&mut daemon);
}

/// `--listen` with an absolute path serves HTTP on a unix socket, like the packaged
/// `gradata-unix.socket`.
#[test]
fn listen_flag_serves_a_unix_socket() {
    use std::io::{Read, Write};
    let (_guard, dir) = support::temp_dir();
    let path = dir.join("api.sock");
    let mut daemon = Spec::new(&dir)
        .without_socket()
        .serve_arg("--listen")
        .serve_arg(&path)
        .spawn();
    daemon.expect_ready();
    let mut stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(daemon::HEALTH_REQUEST.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let health: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(health["status"], "ok", "{response}");
    stop_cleanly(&mut daemon);
}

/// `--listen` on an address in use fails with a message naming it.
#[test]
fn listen_on_a_taken_address_fails_naming_it() {
    let (_guard, dir) = support::temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let mut daemon = Spec::new(&dir)
        .without_socket()
        .serve_arg("--listen")
        .serve_arg(&address)
        .spawn();
    let code = daemon.exit_code(Duration::from_secs(10));
    assert_ne!(code, 0);
    let stderr = daemon.stderr();
    assert!(
        stderr.contains(&format!(
            "cannot listen on {address}: it is in use by another process (a Python Gradata daemon"
        )),
        "{stderr}"
    );
    let all = daemon.notify().all();
    assert!(
        all.iter()
            .any(|m| m.value("ERRNO") == Some(libc::EADDRINUSE.to_string().as_str())),
        "{all:#?}"
    );
}

/// Polls `GET /health` on `addr` until it answers, failing if `child` exits first.
fn health_once_up(
    addr: std::net::SocketAddr,
    child: &mut std::process::Child,
) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match daemon::try_get_health(addr) {
            Ok(response) => {
                assert_eq!(response.status, 200, "{response:?}");
                return response.json();
            }
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "/health never answered on {addr}: {err}"
                );
                assert!(child.try_wait().unwrap().is_none(), "the service exited");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The socket unit passes two listening sockets (the plugin's port and the dashboard's): both
/// are adopted and served.
#[test]
fn every_passed_socket_is_served() {
    use command_fds::{CommandFdExt, FdMapping};
    use std::os::fd::AsFd;
    let (_guard, dir) = support::temp_dir();
    let plugin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dashboard = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addresses = [
        plugin.local_addr().unwrap(),
        dashboard.local_addr().unwrap(),
    ];
    let mut command = support::gradata(&dir);
    command
        .args(["--log-format", "text", "serve"])
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "plugin:dashboard")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .fd_mappings(vec![
            FdMapping {
                parent_fd: plugin.as_fd().try_clone_to_owned().unwrap(),
                child_fd: 3,
            },
            FdMapping {
                parent_fd: dashboard.as_fd().try_clone_to_owned().unwrap(),
                child_fd: 4,
            },
        ])
        .unwrap();
    let mut child = command.spawn().unwrap();
    drop(command);
    // The test's own copies would let the kernel hand connections to nobody once the service
    // exits; the service holds its copies.
    drop((plugin, dashboard));
    for addr in addresses {
        let health = health_once_up(addr, &mut child);
        assert_eq!(health["status"], "ok", "{addr}: {health}");
    }
    support::run(std::process::Command::new("kill").arg(child.id().to_string()));
    assert!(child.wait().unwrap().success());
}

/// Reads the pid file at `path` once it exists (it is written just after `READY=1`).
fn pid_file_once_written(path: &std::path::Path) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{} is not JSON ({err}): {text:?}", path.display()));
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `gradata serve` writes `<data_dir>/daemon.pid` once ready, with the original's fields and the
/// passed socket's port, and removes it at a clean stop.
#[test]
fn serve_writes_the_pid_file_and_removes_it_at_a_clean_stop() {
    let (_guard, dir) = support::temp_dir();
    let mut daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    let path = dir.join("daemon.pid");
    let pid_file = pid_file_once_written(&path);
    assert_eq!(pid_file["port"], daemon.addr().port(), "{pid_file}");
    assert_eq!(pid_file["pid"], daemon.pid(), "{pid_file}");
    assert_eq!(
        pid_file["brain_dir"],
        dir.display().to_string(),
        "{pid_file}"
    );
    assert_eq!(
        pid_file["sdk_version"],
        env!("CARGO_PKG_VERSION"),
        "{pid_file}"
    );
    let started_at = pid_file["started_at"].as_str().unwrap();
    assert!(
        started_at.ends_with("+00:00")
            && started_at.len() == "2026-12-07T17:00:09.123456+00:00".len(),
        "{started_at}"
    );
    stop_cleanly(&mut daemon);
    assert!(!path.exists(), "the pid file outlived a clean stop");
}

/// The original daemon's command line: `gradata daemon --brain-dir DIR --port N --pid-file F`
/// serves DIR on 127.0.0.1:N and writes F. A crash (SIGKILL) leaves the pid file behind, stale;
/// the next start replaces it.
#[test]
fn the_original_command_line_serves_the_brain() {
    let (_guard, dir) = support::temp_dir();
    let pid_path = dir.join("run").join("gradata.pid");
    std::fs::create_dir(dir.join("run")).unwrap();
    let brain = dir.join("brain");
    std::fs::create_dir(&brain).unwrap();
    let start = || {
        let port = daemon::free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_gradata"))
            .env_clear()
            .env("HOME", &dir)
            .env("GRADATA_CONFIG", "")
            .env("GRADATA_SYNC_API_KEY_FILE", dir.join("no-such-key"))
            .args(["daemon", "--brain-dir"])
            .arg(&brain)
            .args(["--port", &port.to_string(), "--pid-file"])
            .arg(&pid_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (port, child)
    };
    let (port, mut first) = start();
    let health = health_once_up(([127, 0, 0, 1], port).into(), &mut first);
    assert_eq!(health["data_dir"], brain.display().to_string(), "{health}");
    assert!(brain.join("system.db").exists());
    let pid_file = pid_file_once_written(&pid_path);
    assert_eq!(pid_file["port"], port, "{pid_file}");
    assert_eq!(pid_file["pid"], first.id(), "{pid_file}");
    assert_eq!(
        pid_file["brain_dir"],
        brain.display().to_string(),
        "{pid_file}"
    );
    assert!(
        !brain.join("daemon.pid").exists(),
        "--pid-file was not used"
    );

    first.kill().unwrap();
    first.wait().unwrap();
    let stale = pid_file_once_written(&pid_path);
    assert_eq!(stale["pid"], first.id(), "a crash removed the pid file");

    let (port, mut second) = start();
    health_once_up(([127, 0, 0, 1], port).into(), &mut second);
    let deadline = Instant::now() + PATIENCE;
    while pid_file_once_written(&pid_path)["pid"] != second.id() {
        assert!(
            Instant::now() < deadline,
            "the stale pid file was never replaced"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pid_file_once_written(&pid_path)["port"], port);
    support::run(std::process::Command::new("kill").arg(second.id().to_string()));
    assert!(second.wait().unwrap().success());
    assert!(!pid_path.exists(), "the pid file outlived a clean stop");
}

/// The environment of a shell set up for the Python daemon and the plugin starts the service
/// without a single unknown-variable warning.
#[test]
fn the_originals_environment_gets_no_warning() {
    let (_guard, dir) = support::temp_dir();
    let mut spec = Spec::new(&dir);
    for name in gradata::config::OTHER_VARIABLES {
        spec = spec.env(name, "1");
    }
    for (name, _) in gradata::config::IGNORED_VARIABLES {
        spec = spec.env(name, "1");
    }
    let mut daemon = spec
        .env("GRADATA_DAEMON_PORT", "7342")
        .env("GRADATA_DAEMON_HOST", "127.0.0.1")
        .env(
            "GRADATA_BRAIN_DIR",
            dir.join("ignored-as-data-dir-is-given"),
        )
        .env("GRADATA_HOME", dir.join("home"))
        .env("GRADATA_API_KEY", "")
        .env("GRADATA_API_KEY_FILE", "")
        .env("GRADATA_CONFIG", "")
        .spawn();
    daemon.expect_ready();
    stop_cleanly(&mut daemon);
    let stderr = daemon.stderr();
    assert!(!stderr.contains("unknown environment variable"), "{stderr}");
    // Sanity: the same start with a misspelt variable does warn.
    let mut warned = Spec::new(&dir).env("GRADATA_DAEMON_PROT", "1").spawn();
    warned.expect_ready();
    stop_cleanly(&mut warned);
    assert!(
        warned.stderr().contains("unknown environment variable"),
        "{}",
        warned.stderr()
    );
}
