//! The test plays systemd: it binds the listening socket and passes it as fd 3 (`LISTEN_FDS=1`),
//! receives `sd_notify` datagrams on its own `NOTIFY_SOCKET`, sends signals, and talks HTTP/1.1 to
//! the service with a plain `TcpStream`, so every assertion is about what the real binary does.
//!
//! Notifications are read by a background thread the moment they are sent (the daemon's
//! `sd_notify` send is blocking, so a test that is busy elsewhere must never stall it) and kept,
//! with their arrival time, for ordering assertions.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};

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

/// An HTTP/1.1 response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {:?}", self.body))
    }
}

/// `GET /health` with `Connection: close`: the request head, complete.
pub const HEALTH_REQUEST: &str =
    "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// Connects to `addr` with generous timeouts. Succeeds as soon as the kernel backlog takes the
/// connection, whether or not the daemon accepts yet.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads one response: the head, then `Content-Length` bytes (or to the end without one).
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!(
                    "connection closed before a response head; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    return Err(ErrorKind::UnexpectedEof.into());
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
        }
        None => {
            stream.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `GET /health` on a new connection.
pub fn try_get_health(addr: SocketAddr) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.write_all(HEALTH_REQUEST.as_bytes())?;
    read_response(&mut stream)
}

/// `GET /health`: the status and the JSON body.
pub fn get_health(addr: SocketAddr) -> (u16, serde_json::Value) {
    let response = try_get_health(addr).unwrap();
    (response.status, response.json())
}

/// A connection opened now whose request is sent later (to be in the backlog during the drain).
pub struct EarlyRequest {
    stream: TcpStream,
}

impl EarlyRequest {
    /// Connects (the kernel backlog holds the connection until the daemon accepts).
    pub fn connect(addr: SocketAddr) -> EarlyRequest {
        EarlyRequest {
            stream: connect(addr),
        }
    }

    /// Sends `GET /health` and waits for the answer.
    pub fn get_health(mut self) -> std::io::Result<Response> {
        self.stream.write_all(HEALTH_REQUEST.as_bytes())?;
        read_response(&mut self.stream)
    }
}

/// Whether the server side of the loopback connection from `client` to `server` exists and has
/// read every byte sent to it, from `/proc/net/tcp` (the `rx_queue` column of its socket). Lets a
/// test know the daemon has accepted a connection and consumed a partial request, without sleeping.
pub fn server_has_read_everything(server: SocketAddr, client: SocketAddr) -> bool {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("IPv4 only"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() > 4
            && cols[1] == local
            && cols[2] == remote
            && cols[3] == "01" // ESTABLISHED
            && cols[4].split_once(':').is_some_and(|(_, rx)| u64::from_str_radix(rx, 16) == Ok(0))
    })
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

/// Sends `raw` (a whole request, or a part of one) on a new connection and reads one response.
/// For requests no well-behaved client would send: invalid UTF-8, framing chosen by the test.
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(raw)?;
    read_response(&mut stream)
}

/// The bytes of an HTTP/1.1 request. `Host: <addr>`, `Content-Length` and `Connection: close` are
/// added unless `headers` sets them (a `Transfer-Encoding` also suppresses `Content-Length`, and
/// the body is then sent exactly as given: frame it with [`chunked`]).
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    if !has("content-length") && !has("transfer-encoding") && (!body.is_empty() || method == "POST")
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a new connection (see [`request_bytes`] for the headers added); panics if the
/// connection fails before a complete response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let raw = request_bytes(addr, method, path, headers, body);
    send_raw(addr, &raw).unwrap_or_else(|err| panic!("{method} {path}: {err}"))
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

/// `POST path` with a JSON body and `Content-Type: application/json`.
pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> Response {
    post_bytes(addr, path, &[], body.to_string().as_bytes())
}

/// `POST path` with `Content-Type: application/json`, the body as given, and extra headers.
pub fn post_bytes(addr: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, "POST", path, &all, body)
}

/// `body` in HTTP/1.1 chunked framing, `size` bytes per chunk, with the final empty chunk.
pub fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / size.max(1) * 8 + 5);
    for chunk in body.chunks(size.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
