//! A fake Gradata ingest API on loopback, with a fault plan, for tests and benchmarks.
//!
//! It runs on its own thread and runtime, so it serves while the test blocks, while a child
//! process drains into it, and while the code under test runs on another runtime. Every request is
//! recorded (path, headers, body, arrival order); the plan decides each reply. Benchmarks use the
//! lean [`FakeIngest::counting`] server instead, which keeps only each request's idempotency key
//! (and [`FakeIngest::counting_with`], the same with a plan that sees only the request's number,
//! on an address of the caller's choosing, so that a soak can stop the server and start it again
//! where the service under test keeps sending). Either can fail chosen rows, by event id, while it
//! takes the others ([`failing_rows`], [`FakeIngest::counting_failing`]): rows the ingest always
//! rejects, in a queue it otherwise takes.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// All headers.
    pub headers: HeaderMap,
    /// The body, byte for byte.
    pub body: Bytes,
}

impl Received {
    /// The `Idempotency-Key` header.
    pub fn idempotency_key(&self) -> Option<String> {
        self.headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
    /// Send the status and headers (announcing a longer body), then only the first bytes of the
    /// body, and stall this long before ending the response.
    pub stall_body: Option<Duration>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
            stall_body: None,
        }
    }

    pub fn ok() -> Reply {
        Reply {
            body: r#"{"status":"ok"}"#.to_owned(),
            ..Reply::status(200)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_owned();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn stall_body(mut self, stall: Duration) -> Reply {
        self.stall_body = Some(stall);
        self
    }
}

/// Decides the reply to the `n`-th request (0-based).
pub type Plan = Arc<dyn Fn(&Received, usize) -> Reply + Send + Sync>;

/// Decides the counting server's reply to its `n`-th request (0-based), from the number and the
/// request's idempotency key alone.
pub type CountingPlan = Arc<dyn Fn(usize, &[u8]) -> Reply + Send + Sync>;

/// A plan answering `failure` to every request whose idempotency key (the row's event id) is in
/// `failing`, and 200 to every other: rows the ingest rejects whenever they are sent.
pub fn failing_rows(
    failing: HashSet<String>,
    failure: Reply,
) -> impl Fn(&Received, usize) -> Reply + Send + Sync + 'static {
    move |request, _| match request.idempotency_key() {
        Some(key) if failing.contains(&key) => failure.clone(),
        _ => Reply::ok(),
    }
}

struct Shared {
    plan: Plan,
    received: Mutex<Vec<Received>>,
    arrived: Condvar,
    /// Requests are held until every one of these paths has been requested at least once.
    gate: Option<Gate>,
    /// The counting server's tally: requests, and the distinct idempotency keys among them.
    counted: Mutex<KeyTally>,
    /// The counting server's replies; `None`: 200 to every request.
    counting_plan: Option<CountingPlan>,
}

/// What the counting server keeps of the requests it answered.
#[derive(Debug, Default)]
struct KeyTally {
    /// The `Authorization` value a request must carry.
    bearer: String,
    requests: usize,
    /// The idempotency keys of the requests answered with a 2xx.
    keys: HashSet<Vec<u8>>,
}

struct Gate {
    paths: HashSet<String>,
    seen: Mutex<HashSet<String>>,
    opened: tokio::sync::Notify,
    timed_out: std::sync::atomic::AtomicBool,
}

/// The running server; stops when dropped.
pub struct FakeIngest {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeIngest {
    /// Answers every request with `reply`.
    pub fn replying(reply: Reply) -> FakeIngest {
        FakeIngest::start(Arc::new(move |_, _| reply.clone()), None)
    }

    /// Answers by the plan.
    pub fn with_plan(
        plan: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> FakeIngest {
        FakeIngest::start(Arc::new(plan), None)
    }

    /// Answers by the plan, but holds every request until each of `paths` has been requested:
    /// proof that drainers posting to different paths really ran at the same time.
    pub fn gated(
        paths: &[&str],
        plan: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static,
    ) -> FakeIngest {
        let gate = Gate {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            seen: Mutex::new(HashSet::new()),
            opened: tokio::sync::Notify::new(),
            timed_out: std::sync::atomic::AtomicBool::new(false),
        };
        FakeIngest::start(Arc::new(plan), Some(gate))
    }

    /// Answers 200 to every request with a body and the bearer `key`, and keeps only its
    /// `Idempotency-Key`. For benchmarks: recording every header and body costs the server, which
    /// shares the machine's cores with the client being measured, more than the client itself.
    pub fn counting(key: &str) -> FakeIngest {
        FakeIngest::counting_on(key, None, None)
    }

    /// The counting server on `addr` (a free loopback port when `None`), answering each request
    /// as `plan` says from its number; only the keys of requests answered with a 2xx are kept
    /// (after the reply's delay). Binding an address a stopped server used lets a benchmark refuse
    /// connections for a while and then serve again where the service under test sends.
    pub fn counting_with(
        key: &str,
        addr: Option<SocketAddr>,
        plan: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> FakeIngest {
        FakeIngest::counting_on(key, addr, Some(Arc::new(move |n, _: &[u8]| plan(n))))
    }

    /// The counting server answering `failure` to every request whose idempotency key is in
    /// `failing`, and 200 to every other (see [`failing_rows`]).
    pub fn counting_failing(key: &str, failing: HashSet<Vec<u8>>, failure: Reply) -> FakeIngest {
        let plan: CountingPlan = Arc::new(move |_, key: &[u8]| {
            if failing.contains(key) {
                failure.clone()
            } else {
                Reply::ok()
            }
        });
        FakeIngest::counting_on(key, None, Some(plan))
    }

    fn counting_on(key: &str, addr: Option<SocketAddr>, plan: Option<CountingPlan>) -> FakeIngest {
        let unused: Plan = Arc::new(|_, _| Reply::ok());
        let server = FakeIngest::serve(unused, None, plan, addr, |app| app.fallback(count_key));
        server.shared.counted.lock().unwrap().bearer = format!("Bearer {key}");
        server
    }

    fn start(plan: Plan, gate: Option<Gate>) -> FakeIngest {
        FakeIngest::serve(plan, gate, None, None, |app| app.fallback(handle))
    }

    fn serve(
        plan: Plan,
        gate: Option<Gate>,
        counting_plan: Option<CountingPlan>,
        addr: Option<SocketAddr>,
        route: impl FnOnce(axum::Router<Arc<Shared>>) -> axum::Router<Arc<Shared>>,
    ) -> FakeIngest {
        let bind = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = std::net::TcpListener::bind(bind).expect("bind fake ingest");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            plan,
            received: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            gate,
            counted: Mutex::new(KeyTally::default()),
            counting_plan,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = route(axum::Router::new()).with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name("fake-ingest".to_owned())
            .spawn(move || {
                // One thread: on a 2-core machine a second server thread mostly adds wake-ups and
                // takes the other core from the code under test.
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fake ingest runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async move {
                            let _ = stopped.await;
                        })
                        .await;
                });
            })
            .expect("spawn fake ingest");
        FakeIngest {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// How many requests so far (answered ones, for the counting server).
    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len() + self.shared.counted.lock().unwrap().requests
    }

    /// Waits until at least `n` requests arrived; false after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut received = self.shared.received.lock().unwrap();
        while received.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            received = self.shared.arrived.wait_timeout(received, left).unwrap().0;
        }
        true
    }

    /// The counting server's tally: requests answered, and distinct idempotency keys among those
    /// answered with a 2xx.
    pub fn counted(&self) -> (usize, usize) {
        let tally = self.shared.counted.lock().unwrap();
        (tally.requests, tally.keys.len())
    }

    /// The counting server's distinct idempotency keys of the requests answered with a 2xx.
    pub fn delivered_keys(&self) -> HashSet<Vec<u8>> {
        self.shared.counted.lock().unwrap().keys.clone()
    }

    /// Whether the gate had to give up waiting (the drainers did not overlap).
    pub fn gate_timed_out(&self) -> bool {
        self.shared
            .gate
            .as_ref()
            .is_some_and(|g| g.timed_out.load(std::sync::atomic::Ordering::SeqCst))
    }
}

impl Drop for FakeIngest {
    fn drop(&mut self) {
        self.halt();
    }
}

impl FakeIngest {
    /// Stops the counting server, once the requests in flight are answered, and returns the
    /// distinct idempotency keys it answered with a 2xx (every one of them, late ones included).
    pub fn stop(mut self) -> HashSet<Vec<u8>> {
        self.halt();
        std::mem::take(&mut self.shared.counted.lock().unwrap().keys)
    }

    /// Stops serving and waits for the server's thread.
    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The counting server's handler: 401 without the expected bearer key or a body, otherwise count
/// and answer as the counting plan says (200 without one), keeping the key of a 2xx.
async fn count_key(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let key = headers
        .get("idempotency-key")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    // The guard lives in this block alone: the future must be `Send` across the delay below.
    let reply = {
        let mut tally = shared.counted.lock().unwrap();
        let authorized = headers
            .get("authorization")
            .is_some_and(|v| v.as_bytes() == tally.bearer.as_bytes());
        if body.is_empty() || !authorized {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let n = tally.requests;
        tally.requests += 1;
        let Some(plan) = &shared.counting_plan else {
            tally.keys.insert(key);
            return (StatusCode::OK, r#"{"status":"ok"}"#).into_response();
        };
        plan(n, &key)
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).expect("valid status");
    if status.is_success() {
        shared.counted.lock().unwrap().keys.insert(key);
    }
    let mut response = (status, reply.body).into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            axum::http::HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = Received {
        path: uri.path().to_owned(),
        headers,
        body,
    };
    if let Some(gate) = &shared.gate {
        let open = {
            let mut seen = gate.seen.lock().unwrap();
            seen.insert(request.path.clone());
            gate.paths.iter().all(|p| seen.contains(p))
        };
        if open {
            gate.opened.notify_waiters();
        } else {
            let notified = gate.opened.notified();
            let still_closed = !gate
                .paths
                .iter()
                .all(|p| gate.seen.lock().unwrap().contains(p));
            if still_closed
                && tokio::time::timeout(Duration::from_secs(20), notified)
                    .await
                    .is_err()
            {
                gate.timed_out
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    let index = {
        let mut received = shared.received.lock().unwrap();
        received.push(request.clone());
        shared.arrived.notify_all();
        received.len() - 1
    };
    let reply = (shared.plan)(&request, index);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).expect("valid status");
    let mut response = match reply.stall_body {
        None => (status, reply.body).into_response(),
        Some(stall) => {
            // The head goes out at once; the body's first chunk follows, the rest never does
            // before the stall ends (and then the response ends short of its length).
            let first = Bytes::from(reply.body);
            let chunks = futures_util::stream::iter([Ok::<_, std::io::Error>(first)]).chain(
                futures_util::stream::once(async move {
                    tokio::time::sleep(stall).await;
                    Err(std::io::Error::other("stalled body ends"))
                }),
            );
            let mut response = (status, axum::body::Body::from_stream(chunks)).into_response();
            response.headers_mut().insert(
                "content-length",
                axum::http::HeaderValue::from_static("1000"),
            );
            response
        }
    };
    for (name, value) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            axum::http::HeaderValue::from_str(&value).expect("header value"),
        );
    }
    response
}
