//! The soak's HTTP/1.1 client: one keep-alive connection per [`Client`], opened again when it
//! fails, and the bytes of a request, so that the load can also send half requests and drop
//! connections. It knows nothing of the routes or of what the load counts.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub(crate) fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    close: bool,
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default().as_bytes());
    bytes
}

/// A minimal HTTP/1.1 client on one keep-alive connection, opened again when it fails.
pub(crate) struct Client {
    addr: SocketAddr,
    stream: Option<TcpStream>,
}

impl Client {
    pub(crate) fn new(addr: SocketAddr) -> Client {
        Client { addr, stream: None }
    }

    pub(crate) fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        close: bool,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let result = self.exchange(method, path, body, close);
        if result.is_err() || close {
            self.stream = None;
        }
        result
    }

    fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        close: bool,
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(10))?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                stream
            }
        };
        let stream = self.stream.insert(stream);
        stream.write_all(&request_bytes(self.addr, method, path, body, close))?;
        read_response(stream)
    }
}

/// Reads one response: its status and body (by `Content-Length`, or chunked).
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, Vec<u8>)> {
    let eof = || std::io::Error::new(ErrorKind::UnexpectedEof, "connection closed");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(eof());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let mut body = buf[end + 4..].to_vec();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
    };
    if let Some(length) = header("content-length:") {
        let length: usize = length
            .parse()
            .map_err(|_| std::io::Error::other("bad content-length"))?;
        while body.len() < length {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(eof());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(length);
        return Ok((status, body));
    }
    if header("transfer-encoding:").is_some_and(|v| v.contains("chunked")) {
        // Read to the last chunk, then strip the framing.
        while !body.ends_with(b"0\r\n\r\n") {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(eof());
            }
            body.extend_from_slice(&chunk[..n]);
        }
        let mut plain = Vec::new();
        let mut rest = body.as_slice();
        while let Some(at) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..at]).trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            if size == 0 {
                break;
            }
            let start = at + 2;
            plain.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
        return Ok((status, plain));
    }
    stream.read_to_end(&mut body)?;
    Ok((status, body))
}
