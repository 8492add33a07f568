//! The paced load generator of the brain benchmark: a fixed offered rate over keep-alive
//! connections, latency measured from when each request was due (open loop, coordinated omission
//! corrected, as wrk2 measures it).
//!
//! A closed loop (`wrk`: every connection sends its next request as soon as the last is answered)
//! measures capacity, but its latencies at saturation are queueing time: the load generator and
//! the daemon share the machine's two cores, and each connection waits for the fifteen others.
//! A latency ceiling is only meaningful at a stated load, so this generator offers one: `run`
//! starts one thread per connection, each with a blocking `TcpStream` kept alive, and request `k`
//! of connection `i` (of `N`) is due at `t0 + (k * N + i) / rate`, so the connections together
//! offer `rate` requests a second, evenly spaced. A connection sends a request when it is due, or
//! at once when the previous answer came late; its latency runs from when it was *due* to the end
//! of its answer, so a stall the daemon causes counts against every request it delays, not only
//! the one that met it (the error of a closed loop, which would simply send fewer requests).
//!
//! The first `warm_up` of the schedule is sent but not counted. The figures are exact
//! percentiles of every counted latency, and the achieved rate: counted answers divided by the
//! time from the start of the counted window to the last counted answer (at least the window).
//! A daemon that cannot keep up falls ever further behind its schedule, so its achieved rate
//! drops below the offered one and its latencies grow with the run; the benchmark treats an
//! achieved rate under `KEEP_UP` of the offered one as a failure, since the latency figures then
//! describe a backlog. A connection that is more than `late_limit` behind its schedule stops,
//! so such a run ends instead of working off its whole backlog.
//!
//! It does not retry: a non-2xx answer is counted (the benchmark fails on any), a socket error is
//! counted and the connection opened again. Timer slack makes a sleeping thread wake some tens of
//! microseconds after its request is due; that counts in the latency, as it does in wrk2.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The share of the offered rate a run must achieve for its latency figures to count.
pub(crate) const KEEP_UP: f64 = 0.95;

/// What a paced run sends, how fast and for how long.
pub(crate) struct Schedule<'a> {
    pub(crate) addr: SocketAddr,
    pub(crate) path: &'a str,
    /// The request body; `REQUEST_NO` in it becomes `number_prefix` and the request's number
    /// (from 1) when `number_prefix` is set, as wrk's script numbers requests.
    pub(crate) body: &'a [u8],
    pub(crate) number_prefix: Option<String>,
    pub(crate) connections: usize,
    /// Offered requests per second, over all connections.
    pub(crate) rate: f64,
    pub(crate) warm_up: Duration,
    /// The counted window, after the warm-up.
    pub(crate) seconds: u32,
    /// `Connection: close` and a new connection for every request.
    pub(crate) connection_close: bool,
}

/// One paced run's figures.
pub(crate) struct Paced {
    pub(crate) offered: f64,
    pub(crate) achieved: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    /// Counted requests answered, of those the counted window scheduled.
    pub(crate) answered: usize,
    pub(crate) scheduled: usize,
    pub(crate) non_2xx: u64,
    pub(crate) socket_errors: u64,
}

impl Paced {
    /// Whether the daemon kept up with the offered rate, so the latencies mean something.
    pub(crate) fn kept_up(&self) -> bool {
        self.achieved >= KEEP_UP * self.offered && self.socket_errors == 0
    }
}

/// What one connection's thread brings back.
#[derive(Default)]
struct Tally {
    /// Counted latencies, from due to answered.
    latencies: Vec<Duration>,
    /// When the last counted answer ended.
    last_answer: Option<Instant>,
    scheduled: usize,
    non_2xx: u64,
    socket_errors: u64,
}

/// Sends `schedule`'s requests on time; returns the figures of the counted window.
pub(crate) fn run(schedule: &Schedule<'_>) -> Paced {
    assert!(schedule.rate > 0.0 && schedule.connections > 0);
    // Every thread connects before t0, so the schedule does not start with handshakes.
    let t0 = Instant::now() + Duration::from_millis(100);
    let counted_from = t0 + schedule.warm_up;
    let end = counted_from + Duration::from_secs(u64::from(schedule.seconds));
    let late_limit = Duration::from_secs(u64::from(schedule.seconds.max(1)));
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..schedule.connections)
            .map(|i| {
                scope.spawn(move || connection(schedule, i, t0, counted_from, end, late_limit))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("a paced connection's thread panicked"))
            .collect()
    });
    let mut latencies: Vec<Duration> = tallies
        .iter()
        .flat_map(|t| t.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let window = Duration::from_secs(u64::from(schedule.seconds));
    let last = tallies.iter().filter_map(|t| t.last_answer).max();
    let span = last.map_or(window, |last| (last - counted_from).max(window));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Paced {
        offered: schedule.rate,
        achieved: latencies.len() as f64 / span.as_secs_f64(),
        p50_ms: percentile(&latencies, 0.50).map_or(f64::NAN, ms),
        p99_ms: percentile(&latencies, 0.99).map_or(f64::NAN, ms),
        max_ms: latencies.last().copied().map_or(f64::NAN, ms),
        answered: latencies.len(),
        scheduled: tallies.iter().map(|t| t.scheduled).sum(),
        non_2xx: tallies.iter().map(|t| t.non_2xx).sum(),
        socket_errors: tallies.iter().map(|t| t.socket_errors).sum(),
    }
}

/// The exact `q` quantile of sorted values: the smallest value at or above a share `q` of them.
fn percentile(sorted: &[Duration], q: f64) -> Option<Duration> {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// Connection `i`'s share of the schedule: requests `i`, `i + N`, `i + 2N`, ….
fn connection(
    schedule: &Schedule<'_>,
    i: usize,
    t0: Instant,
    counted_from: Instant,
    end: Instant,
    late_limit: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Conn> = Conn::open(schedule.addr).ok();
    let mut fixed_request = None;
    for k in 0.. {
        let number = k * schedule.connections + i;
        let due = t0 + Duration::from_secs_f64(number as f64 / schedule.rate);
        if due >= end {
            break;
        }
        let counted = due >= counted_from;
        tally.scheduled += usize::from(counted);
        let now = Instant::now();
        if now > end + late_limit {
            // So far behind that the rest of the run would only work off a backlog.
            continue;
        }
        if due > now {
            std::thread::sleep(due - now);
        }
        let request: &[u8] = match &schedule.number_prefix {
            Some(prefix) => &request_bytes(schedule, Some(&format!("{prefix}{}", number + 1))),
            None => fixed_request.get_or_insert_with(|| request_bytes(schedule, None)),
        };
        let answer = match &mut conn {
            Some(c) => c.exchange(request),
            None => Err(std::io::Error::from(ErrorKind::NotConnected)),
        };
        let done = Instant::now();
        match answer {
            Ok(answer) => {
                if !(200..300).contains(&answer.status) {
                    tally.non_2xx += 1;
                }
                if counted {
                    tally.latencies.push(done - due);
                    tally.last_answer = Some(done);
                }
                if answer.close || schedule.connection_close {
                    conn = Conn::open(schedule.addr).ok();
                }
            }
            Err(_) => {
                tally.socket_errors += 1;
                conn = Conn::open(schedule.addr).ok();
            }
        }
    }
    tally
}

/// The request's bytes: head and body, numbered when `number` is set.
fn request_bytes(schedule: &Schedule<'_>, number: Option<&str>) -> Vec<u8> {
    let body = match number {
        Some(number) => String::from_utf8_lossy(schedule.body)
            .replace("REQUEST_NO", number)
            .into_bytes(),
        None => schedule.body.to_vec(),
    };
    let close = if schedule.connection_close {
        "Connection: close\r\n"
    } else {
        ""
    };
    let mut bytes = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{close}\r\n",
        schedule.path,
        schedule.addr,
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// A kept-alive connection and the bytes read past the last answer.
struct Conn {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// The parts of an answer the generator looks at.
struct Answer {
    status: u16,
    /// The server said it closes the connection after this answer.
    close: bool,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn {
            stream,
            buffer: Vec::with_capacity(16 * 1024),
        })
    }

    /// Writes `request` and reads its whole answer: status line, headers, `Content-Length` body.
    fn exchange(&mut self, request: &[u8]) -> std::io::Result<Answer> {
        self.stream.write_all(request)?;
        let head_end = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buffer[..head_end])
            .map_err(|_| invalid("an answer head that is not UTF-8"))?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let mut length = None;
        let mut close = head.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(invalid("a chunked answer (only Content-Length is read)"));
            }
        }
        let length = length.ok_or_else(|| invalid("an answer without Content-Length"))?;
        while self.buffer.len() < head_end + length {
            self.fill()?;
        }
        self.buffer.drain(..head_end + length);
        Ok(Answer { status, close })
    }

    /// Appends what the socket has to the buffer; an end of stream is an error mid-answer.
    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn invalid(what: &str) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, what)
}
