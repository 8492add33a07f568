//! The test plays systemd: it binds the listening socket and passes it as fd 3 (`LISTEN_FDS=1`),
//! receives `sd_notify` datagrams on its own `NOTIFY_SOCKET`, sends signals, and talks HTTP/1.1 to
//! the service with a plain `TcpStream` (the client is in `http`, re-exported here), so every
//! assertion is about what the real binary does.
//!
//! Notifications are read by a background thread the moment they are sent (the daemon's
//! `sd_notify` send is blocking, so a test that is busy elsewhere must never stall it) and kept,
//! with their arrival time, for ordering assertions.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};

pub use super::http::{
    EarlyRequest, HEALTH_REQUEST, Response, chunked, connect, get, get_health, post_bytes,
    post_json, read_response, request, request_bytes, send_raw, server_has_read_everything,
    try_get_health, wait_until_read,
};

/// How long a test waits for something that should happen promptly; only a failure guard.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// One `sd_notify` datagram, as received.
#[derive(Debug, Clone)]
pub struct Message {
    /// When the test's reader thread received it.
    pub at: Instant,
    /// The datagram: `KEY=value` lines.
    pub text: String,
}

impl Message {
    /// Whether one of its lines is exactly `line` (`READY=1`).
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// The value of `key` (`STATUS` gives the status text), if the datagram sets it.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }

    /// Whether it sets `key` at all.
    pub fn sets(&self, key: &str) -> bool {
        self.value(key).is_some()
    }
}

#[derive(Default)]
struct Inbox {
    all: Vec<Message>,
    unread: VecDeque<Message>,
}

/// The `NOTIFY_SOCKET` end: a datagram socket at a temporary path, read continuously.
pub struct NotifyReader {
    path: PathBuf,
    inbox: Arc<(Mutex<Inbox>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl NotifyReader {
    /// Binds a fresh socket and starts reading it.
    pub fn new() -> NotifyReader {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        // The timeout only bounds how long the thread takes to notice `stop`.
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let inbox = Arc::new((Mutex::new(Inbox::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (inbox, stop) = (inbox.clone(), stop.clone());
            std::thread::Builder::new()
                .name("notify-reader".to_owned())
                .spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while !stop.load(Ordering::Relaxed) {
                        match socket.recv(&mut buf) {
                            Ok(n) => {
                                let message = Message {
                                    at: Instant::now(),
                                    text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                                };
                                let (lock, arrived) = &*inbox;
                                let mut inbox = lock.lock().unwrap();
                                inbox.all.push(message.clone());
                                inbox.unread.push_back(message);
                                arrived.notify_all();
                            }
                            Err(err)
                                if matches!(
                                    err.kind(),
                                    ErrorKind::WouldBlock
                                        | ErrorKind::TimedOut
                                        | ErrorKind::Interrupted
                                ) => {}
                            Err(err) => panic!("notify socket: {err}"),
                        }
                    }
                })
                .unwrap()
        };
        NotifyReader {
            path,
            inbox,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// The path to put in `NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next message not yet returned by `next`/`wait_for`, or `None` after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        let (lock, arrived) = &*self.inbox;
        let mut inbox = lock.lock().unwrap();
        loop {
            if let Some(message) = inbox.unread.pop_front() {
                return Some(message);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            inbox = arrived.wait_timeout(inbox, left).unwrap().0;
        }
    }

    /// Reads messages in order until one satisfies `pred`; returns every message read, the
    /// matching one last, or `None` if none matched within `timeout` (what was read is consumed).
    pub fn wait_for(
        &self,
        pred: impl Fn(&Message) -> bool,
        timeout: Duration,
    ) -> Option<Vec<Message>> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self.next(left)?;
            let done = pred(&message);
            seen.push(message);
            if done {
                return Some(seen);
            }
        }
    }

    /// `wait_for`, panicking with `what` and every message so far when it times out.
    pub fn expect(
        &self,
        what: &str,
        pred: impl Fn(&Message) -> bool,
        timeout: Duration,
    ) -> Vec<Message> {
        self.wait_for(pred, timeout).unwrap_or_else(|| {
            panic!(
                "no notification {what} within {timeout:?}; received: {:#?}",
                self.texts()
            )
        })
    }

    /// Every message received so far, read or not, in order.
    pub fn all(&self) -> Vec<Message> {
        self.inbox.0.lock().unwrap().all.clone()
    }

    /// The texts of every message so far, for failure messages.
    pub fn texts(&self) -> Vec<String> {
        self.all().into_iter().map(|m| m.text).collect()
    }
}

impl Drop for NotifyReader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Log format of the daemon's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logs {
    Text,
    Json,
}

/// How to start a daemon.
pub struct Spec {
    data_dir: PathBuf,
    env: Vec<(String, OsString)>,
    serve_args: Vec<OsString>,
    global_args: Vec<OsString>,
    pass_socket: bool,
    /// Passed at fd 3 instead of a fresh listening socket: a socket systemd should not pass.
    odd_socket: Option<OwnedFd>,
    logs: Logs,
    launch: Launch,
}

/// What starts the daemon: the binary itself, or a launcher that sets something up and execs it.
#[derive(Debug, Clone, Copy)]
enum Launch {
    Direct,
    OnSmallDisk(super::SmallDisk),
    WithOpenFilesLimit(u64),
}

impl Spec {
    /// `gradata serve` on `data_dir`, with a passed socket and text logs.
    pub fn new(data_dir: &Path) -> Spec {
        Spec {
            data_dir: data_dir.to_path_buf(),
            env: Vec::new(),
            serve_args: Vec::new(),
            global_args: Vec::new(),
            pass_socket: true,
            odd_socket: None,
            logs: Logs::Text,
            launch: Launch::Direct,
        }
    }

    /// The data directory on a disk that fills up (see [`super::gradata_on_small_disk`]).
    pub fn on_small_disk(mut self, disk: super::SmallDisk) -> Spec {
        self.launch = Launch::OnSmallDisk(disk);
        self
    }

    /// At most `limit` open files (`RLIMIT_NOFILE`, what systemd's `LimitNOFILE=` sets).
    pub fn open_files_limit(mut self, limit: u64) -> Spec {
        self.launch = Launch::WithOpenFilesLimit(limit);
        self
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, name: &str, value: impl Into<OsString>) -> Spec {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// Cloud sync to `url` with a test key.
    pub fn syncing_to(self, url: &str) -> Spec {
        self.env("GRADATA_API_KEY", "k")
            .env("GRADATA_CLOUD_INGEST_URL", url)
    }

    /// An argument after `serve` (`--listen ADDR`).
    pub fn serve_arg(mut self, arg: impl Into<OsString>) -> Spec {
        self.serve_args.push(arg.into());
        self
    }

    /// An argument before `serve` (`--config PATH`).
    pub fn global_arg(mut self, arg: impl Into<OsString>) -> Spec {
        self.global_args.push(arg.into());
        self
    }

    /// No socket passed: the daemon binds its `--listen` addresses itself.
    pub fn without_socket(mut self) -> Spec {
        self.pass_socket = false;
        self
    }

    /// Passes `socket` at fd 3 (named `http`) in place of a listening TCP socket.
    pub fn passing(mut self, socket: OwnedFd) -> Spec {
        self.odd_socket = Some(socket);
        self
    }

    /// JSON log records on stderr.
    pub fn json_logs(mut self) -> Spec {
        self.logs = Logs::Json;
        self
    }

    /// Spawns the daemon.
    pub fn spawn(self) -> Daemon {
        let run_dir = tempfile::tempdir().unwrap();
        let notify = NotifyReader::new();
        let stderr_path = run_dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).unwrap();

        let mut command: Command = match self.launch {
            Launch::Direct => super::gradata(&self.data_dir),
            Launch::OnSmallDisk(disk) => super::gradata_on_small_disk(&self.data_dir, disk),
            Launch::WithOpenFilesLimit(limit) => {
                super::gradata_with_open_files_limit(&self.data_dir, limit)
            }
        };
        command
            .env("HOME", run_dir.path())
            .env("NOTIFY_SOCKET", notify.path())
            .args(&self.global_args)
            .arg("--log-format")
            .arg(match self.logs {
                Logs::Text => "text",
                Logs::Json => "json",
            })
            .arg("serve")
            .args(&self.serve_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for (name, value) in &self.env {
            command.env(name, value);
        }
        let mut addr = None;
        if let Some(socket) = self.odd_socket {
            command
                .env("LISTEN_FDS", "1")
                .env("LISTEN_FDNAMES", "http")
                .fd_mappings(vec![FdMapping {
                    parent_fd: socket,
                    child_fd: 3,
                }])
                .unwrap();
        } else if self.pass_socket {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            addr = Some(listener.local_addr().unwrap());
            // No LISTEN_PID: the child's pid is unknown before the fork, and the adoption code
            // accepts its absence (as systemd-socket-activate style launchers do).
            command
                .env("LISTEN_FDS", "1")
                .env("LISTEN_FDNAMES", "http")
                .fd_mappings(vec![FdMapping {
                    parent_fd: listener.as_fd().try_clone_to_owned().unwrap(),
                    child_fd: 3,
                }])
                .unwrap();
        }
        let spawned = Instant::now();
        let child = command.spawn().unwrap();
        // `command` holds the parent's copy of the socket until dropped; the test keeps only the
        // address, so once the daemon is gone connections are refused rather than left hanging.
        drop(command);
        Daemon {
            child,
            addr,
            spawned,
            stderr_path,
            notify,
            _run_dir: run_dir,
        }
    }
}

/// A running `gradata serve`; killed (SIGKILL) if still running when dropped.
pub struct Daemon {
    child: Child,
    addr: Option<SocketAddr>,
    spawned: Instant,
    stderr_path: PathBuf,
    notify: NotifyReader,
    _run_dir: tempfile::TempDir,
}

impl Daemon {
    /// The address of the socket passed to it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .expect("this daemon was started without a passed socket")
    }

    /// When it was spawned.
    pub fn spawned(&self) -> Instant {
        self.spawned
    }

    /// Its `NOTIFY_SOCKET`.
    pub fn notify(&self) -> &NotifyReader {
        &self.notify
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `HUP`), through kill(1): the crate forbids `unsafe`, and
    /// nix is built without its `signal` feature.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// SIGTERM.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// SIGHUP.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Waits for it to exit; `None` if still running after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for it to exit and returns the exit code, panicking with its stderr if it does not
    /// exit within `timeout` or was killed by a signal.
    pub fn exit_code(&mut self, timeout: Duration) -> i32 {
        match self.wait(timeout) {
            Some(status) => status
                .code()
                .unwrap_or_else(|| panic!("killed by a signal: {status}\n{}", self.stderr())),
            None => panic!(
                "still running after {timeout:?}\nstderr:\n{}\nnotifications: {:#?}",
                self.stderr(),
                self.notify.texts()
            ),
        }
    }

    /// Everything it wrote to stderr so far, as written (a file gets no colour codes).
    pub fn stderr(&self) -> String {
        let raw = std::fs::read(&self.stderr_path).unwrap_or_default();
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// Waits until stderr has a line containing `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for `READY=1`, panicking with stderr if it does not come; returns what was read.
    pub fn expect_ready(&self) -> Vec<Message> {
        self.notify
            .wait_for(|m| m.has("READY=1"), PATIENCE)
            .unwrap_or_else(|| {
                panic!(
                    "no READY=1 within {PATIENCE:?}; notifications: {:#?}\nstderr:\n{}",
                    self.notify.texts(),
                    self.stderr()
                )
            })
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `name=…` in a text log line, quotes removed (`reason="done"` gives `done`).
pub fn log_field(line: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=");
    let start = line.find(&key)? + key.len();
    let rest = &line[start..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => return Some(value),
                c => value.push(c),
            }
        }
        None
    } else {
        Some(rest.split_whitespace().next().unwrap_or("").to_owned())
    }
}

/// Creates the store in `dir` with `n` pending rows and closes it; returns their event ids.
pub fn prepare(dir: &Path, n: usize) -> Vec<String> {
    let store = super::open_store(dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ids = runtime.block_on(super::fill(&store, n));
    drop(store);
    ids
}

/// A free loopback port, by binding port 0 and closing (another process could take it in between;
/// good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
