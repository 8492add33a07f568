//! The raw HTTP/1.1 client the binary's tests talk through: requests written byte for byte on a
//! plain `TcpStream` (so a test can send what no well-behaved client would), responses read off
//! the wire, and the check that the service has read every byte sent so far. It knows nothing of
//! how the service is started.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::daemon::PATIENCE;

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

/// Waits until the service at `server` has read every byte sent on `stream` so far (it has
/// accepted the connection and consumed a partial request), failing after [`PATIENCE`].
pub fn wait_until_read(server: SocketAddr, stream: &TcpStream, what: &str) {
    let client = stream.local_addr().unwrap();
    let deadline = Instant::now() + PATIENCE;
    while !server_has_read_everything(server, client) {
        assert!(Instant::now() < deadline, "the service never read {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `raw` (a whole request, or a part of one) on a new connection and reads one response.
/// For requests no well-behaved client would send: invalid UTF-8, framing chosen by the test.
pub fn send_raw(addr: SocketAddr, raw: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(PATIENCE))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    if let Err(err) = stream.write_all(raw) {
        // The service may answer and close before it has read all of a request it refuses (a
        // head over its limit): the answer is then already here, and the write's error is only
        // the reset of a connection the service closed.
        return read_response(&mut stream).map_err(|_| err);
    }
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
