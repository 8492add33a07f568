//! The soak's flapping cloud: the fake ingest server (the lean counting one of
//! `tests/it/support/fake_ingest.rs`) and the thread that moves it through the phases (healthy,
//! 503, 500, slow, refused), keeping every key an instance answered 2xx across its restarts.
//! It knows nothing of the service or the load.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::fake_ingest::{FakeIngest, Reply};
use super::{KEY, parse_event_id};

/// What the fake ingest server does in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Healthy,
    Throttled,
    Failing,
    Slow,
    Refused,
}

impl Phase {
    const CYCLE: [Phase; 8] = [
        Phase::Healthy,
        Phase::Throttled,
        Phase::Healthy,
        Phase::Failing,
        Phase::Healthy,
        Phase::Slow,
        Phase::Healthy,
        Phase::Refused,
    ];

    fn from_u8(value: u8) -> Phase {
        Phase::CYCLE
            .into_iter()
            .find(|p| *p as u8 == value)
            .unwrap()
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::Throttled => "503",
            Phase::Failing => "500",
            Phase::Slow => "slow",
            Phase::Refused => "refused",
        }
    }

    fn reply(self) -> Reply {
        match self {
            Phase::Healthy | Phase::Refused => Reply::ok(),
            Phase::Throttled => Reply::status(503).header("Retry-After", "1"),
            Phase::Failing => Reply::status(500).body("internal error"),
            Phase::Slow => Reply::ok().delay(Duration::from_millis(300)),
        }
    }
}

/// The fake ingest server and the thread that moves it through the phases.
pub(crate) struct Ingest {
    addr: SocketAddr,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(FakeIngest, HashSet<Vec<u8>>)>,
}

/// The healed server, and the keys every earlier instance answered 2xx.
pub(crate) struct Healed {
    pub(crate) server: FakeIngest,
    earlier: HashSet<Vec<u8>>,
}

impl Ingest {
    pub(crate) fn start(length: Duration) -> Ingest {
        let phase = Arc::new(AtomicU8::new(Phase::Healthy as u8));
        let serve = |phase: &Arc<AtomicU8>, addr: Option<SocketAddr>| {
            let phase = phase.clone();
            FakeIngest::counting_with(KEY, addr, move |_| {
                Phase::from_u8(phase.load(Ordering::Relaxed)).reply()
            })
        };
        let first = serve(&phase, None);
        let addr = first.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (phase, stop) = (phase.clone(), stop.clone());
            std::thread::Builder::new()
                .name("soak-ingest".to_owned())
                .spawn(move || {
                    let mut server = Some(first);
                    let mut earlier = HashSet::new();
                    let mut deadline = Instant::now();
                    'cycles: for next in Phase::CYCLE.into_iter().cycle() {
                        if next == Phase::Refused {
                            if let Some(gone) = server.take() {
                                // Stopped first: a request in flight is answered, and counted,
                                // before the server is gone.
                                earlier.extend(gone.stop());
                            }
                        } else if server.is_none() {
                            server = Some(serve(&phase, Some(addr)));
                        }
                        phase.store(next as u8, Ordering::Relaxed);
                        deadline += length;
                        while Instant::now() < deadline {
                            if stop.load(Ordering::Relaxed) {
                                break 'cycles;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    phase.store(Phase::Healthy as u8, Ordering::Relaxed);
                    let server = server.unwrap_or_else(|| serve(&phase, Some(addr)));
                    (server, earlier)
                })
                .unwrap()
        };
        Ingest {
            addr,
            phase,
            stop,
            thread,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    pub(crate) fn phase(&self) -> &'static str {
        Phase::from_u8(self.phase.load(Ordering::Relaxed)).name()
    }

    /// Ends the phases: the server answers 200 from now on.
    pub(crate) fn heal(self) -> Healed {
        self.stop.store(true, Ordering::Relaxed);
        let (server, earlier) = self.thread.join().unwrap();
        Healed { server, earlier }
    }
}

impl Healed {
    /// Every event id answered 2xx by any instance, packed as [`Worker::run`] returns them.
    pub(crate) fn delivered(&self) -> HashSet<u64> {
        self.earlier
            .iter()
            .chain(self.server.delivered_keys().iter())
            .filter_map(|key| parse_event_id(key))
            .collect()
    }
}
