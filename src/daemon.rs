//! `gradata serve`: the one place that orders startup and shutdown (DESIGN §2). Read top to bottom
//! it is the contract: signals, listeners, store, bounded startup drain, serve, `READY=1`; then the
//! worker, the watchdog and retention run until SIGTERM/SIGINT, SIGHUP reloads, and shutdown stops
//! accepting, lets requests finish, runs one bounded final drain and closes the store.
//!
//! Everything it calls is testable without a daemon; only this module spawns long-lived tasks.
//! Invariant: `READY=1` is sent only after every fallible startup step has succeeded, and only
//! after the startup drain, so systemd holds early connections and dependent units until then.

pub mod pid_file;
pub mod retention;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::brain::Brain;
use crate::brain::events::PlatformEnv;
use crate::config::{self, Config};
use crate::logging::Causes;
use crate::store::{self, Store};
use crate::sync::{self, Engine, Status, SyncState, Trigger, worker};
use crate::systemd::listeners::{self, Passed, Socket};
use crate::systemd::notify::{self, Notifier};

/// How often `STATUS=` is refreshed while serving.
const STATUS_REFRESH: Duration = Duration::from_secs(10);
/// Minimum time between two `STATUS=` progress lines during a drain.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Slack added to the drain budget when asking systemd for more start time.
const TIMEOUT_SLACK: Duration = Duration::from_secs(15);
/// The longest extension asked of systemd at once. `EXTEND_TIMEOUT_USEC=` is a u32 of
/// microseconds (about 71.6 minutes), so a longer phase is covered by asking again, every half of
/// this, before the last extension runs out.
const MAX_EXTENSION: Duration = Duration::from_secs(3600);
/// How long the server gets to drop its connections once the grace period is over. Closing a
/// connection is a drop, so this is only a guard against a server that does not return.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// How long the sync worker gets to finish its pass at shutdown before it is aborted.
const WORKER_STOP_WAIT: Duration = Duration::from_secs(5);
/// Test hook: when set to a number of seconds, the sync worker wedges itself after that long, so
/// tests can check that the watchdog stops being fed. Never set in production.
pub const STALL_WORKER_HOOK: &str = "GRADATA_TEST_STALL_WORKER_AFTER_SECS";

/// Reloads the configuration from the same sources as at start (SIGHUP).
pub type Reload = Box<dyn Fn() -> Result<Config, config::Error> + Send + Sync>;

/// Why the service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// A listener could not be adopted or bound.
    #[error(transparent)]
    Listeners(#[from] listeners::Error),
    /// A passed socket listens beyond loopback while no local token guards writes.
    #[error(
        "socket {0} listens on a non-loopback address, and api.token_file is not set: anyone on the network could write events; set a token or listen on loopback"
    )]
    Exposed(String),
    /// A bound socket could not be handed to the runtime.
    #[error("cannot use socket {name}: {cause}")]
    Socket {
        /// The socket.
        name: String,
        /// Why.
        cause: std::io::Error,
    },
    /// The outbox could not be opened.
    #[error("cannot open the outbox")]
    Store(#[from] store::Error),
    /// The brain could not be opened.
    #[error(transparent)]
    Brain(#[from] crate::brain::Error),
    /// The HTTP client for the ingest API could not be built.
    #[error("cannot set up cloud sync")]
    Sync(#[from] sync::ClientError),
    /// The HTTP server stopped on its own.
    #[error("the HTTP server failed: {0}")]
    Server(String),
    /// A blocking step of startup did not finish: it panicked (a bug).
    #[error("{0} did not finish")]
    Blocking(&'static str, #[source] tokio::task::JoinError),
    /// A background task ended unexpectedly.
    #[error("the {0} stopped unexpectedly")]
    Task(&'static str),
    /// An fsync of the outbox failed, or its writer died, so no write can be acknowledged until it
    /// is opened again.
    #[error("{0}; stopping, so that the service starts again on what the disk holds")]
    OutboxFailed(String),
}

impl Error {
    /// Whether the cause is configuration that a restart cannot fix (exit 78): a passed socket the
    /// service cannot use, or an address that is not one.
    pub fn is_configuration(&self) -> bool {
        match self {
            Error::Listeners(err) => err.is_configuration(),
            Error::Exposed(_) => true,
            _ => false,
        }
    }

    /// The `ERRNO=` sent to systemd before exiting.
    fn errno(&self) -> u32 {
        let raw = match self {
            // As for any configuration error (`cli` sends the same): the unit is wrong, not the
            // system.
            err if err.is_configuration() => Some(libc::EINVAL),
            Error::Listeners(
                listeners::Error::Bind { cause, .. } | listeners::Error::InUse { cause, .. },
            ) => cause.raw_os_error(),
            Error::Socket { cause, .. } | Error::Signals(cause) => cause.raw_os_error(),
            Error::Store(store::Error::Locked(_) | store::Error::BrainLocked(_)) => {
                Some(libc::EAGAIN)
            }
            Error::Store(store::Error::Io(_, cause)) => cause.raw_os_error().or_else(|| {
                (cause.kind() == std::io::ErrorKind::NotADirectory).then_some(libc::ENOTDIR)
            }),
            _ => None,
        };
        raw.and_then(|errno| u32::try_from(errno).ok())
            .unwrap_or(libc::EIO.unsigned_abs())
    }
}

/// Runs the service until it is told to stop. Returns `Ok` on a clean stop.
pub async fn run(config: Config, sockets: Passed, reload: Reload) -> Result<(), Error> {
    let notifier = Notifier::new();
    let result = serve(config, sockets, reload, notifier).await;
    if let Err(err) = &result {
        notifier.fatal(err.errno(), &format!("failed: {}", Causes(err)));
    }
    result
}

async fn serve(
    mut config: Config,
    sockets: Passed,
    reload: Reload,
    notifier: Notifier,
) -> Result<(), Error> {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    // 1. Signals first, so a stop during the drain is never missed (DESIGN §2.1).
    let stop = CancellationToken::new();
    // Cancelled by a second stop signal: whoever sent it will not wait for the grace period or
    // the final drain. Rows the drain had not delivered stay pending, so nothing is lost.
    let hurry = CancellationToken::new();
    let (reload_requests, mut reloads) = mpsc::channel(4);
    let signals = tokio::spawn(watch_signals(
        install_signals()?,
        Stops {
            stop: stop.clone(),
            hurry: hurry.clone(),
        },
        reload_requests,
    ));

    // 2. Listeners: adopted or bound, not accepted from yet.
    let listeners = open_listeners(sockets, &config.listen, config.api_token.is_some())?;

    // 3. The store: single-instance lock, open, migrate.
    let store = open_store(&config).await?;
    let brain_id = brain_id(&config).await?;
    let brain = Brain::open(&config.data_dir, store.clone(), PlatformEnv::from_process()).await?;
    // Before anyone is answered: what a crash left between the brain's writes (brain::repair).
    repair_brain(&brain).await;
    let status = Status::new(SyncState::Idle);
    let engine = Engine::new(store.clone(), config.sync.clone(), status.clone())?;
    if let Some(reason) = config.sync.disabled_reason() {
        tracing::warn!(reason = %reason, "cloud sync is disabled; events are kept in the outbox until it is enabled");
    } else {
        tracing::info!(ingest_url = %config.sync.ingest_url, key_source = %config.sync.api_key_source, "cloud sync enabled");
    }

    // 4. The bounded startup drain, with progress for `systemctl status`.
    let startup_extension =
        keep_timeout_extended(notifier, config.startup_drain.max_time + TIMEOUT_SLACK);
    let report = drain_with_progress(
        &engine,
        Trigger::Startup,
        config.startup_drain,
        &stop,
        notifier,
    )
    .await;
    drop(startup_extension);
    if stop.is_cancelled() {
        notifier.stopping("stopping before start-up finished");
        tracing::info!("stopped during the startup drain; pending rows stay queued");
        signals.abort();
        return Ok(());
    }

    // 5. Serve, then READY=1.
    let (engines, engine_updates) = watch::channel(engine);
    let wake = worker::Wake::new();
    let (api_settings, api_settings_updates) =
        watch::channel(Arc::new(api_settings(&config, brain_id, None)));
    let state = api::State::new(api::Shared {
        store: store.clone(),
        brain: Arc::new(brain),
        engines: engine_updates.clone(),
        wake: wake.clone(),
        data_dir: config.data_dir.clone(),
        started,
        settings: api_settings_updates,
    });
    // `finish` is cancelled with `stop`; `close` only when the grace period is over.
    let serving = api::Shutdown {
        finish: stop.child_token(),
        close: CancellationToken::new(),
    };
    let server_alive = Arc::new(AtomicBool::new(true));
    let served_port = listeners.iter().find_map(|listener| match listener {
        api::Listener::Tcp(tcp) => tcp.local_addr().ok().map(|address| address.port()),
        api::Listener::Unix(_) => None,
    });
    let (header_timeout, header_timeout_updates) = watch::channel(config.header_timeout);
    let mut server = tokio::spawn(run_server(
        listeners,
        api::router(state),
        header_timeout_updates,
        serving.clone(),
        server_alive.clone(),
    ));
    let pending = report.remaining.unwrap_or(0);
    notifier.ready(&format!("serving; {pending} pending"));
    tracing::info!(pending, elapsed_ms = millis(started.elapsed()), "ready");
    let pid_file = write_pid_file(&config, served_port, started_at);

    // 6. Background work.
    let heartbeat = worker::Heartbeat::default();
    heartbeat.beat();
    let mut sync_worker = tokio::spawn(run_worker(
        engine_updates,
        wake,
        heartbeat.clone(),
        stop.child_token(),
        report,
    ));
    let housekeeping = tokio::spawn(housekeeping(
        store.clone(),
        status.clone(),
        heartbeat,
        server_alive,
        notifier,
        stop.child_token(),
    ));
    let (retention, retention_updates) = watch::channel(config.synced_retention);
    let purges = tokio::spawn(retention::run(
        store.clone(),
        retention_updates,
        stop.child_token(),
    ));

    // 7. Until stopped: reload on SIGHUP; any task ending on its own is fatal, and so is a failed
    // fsync (or the store's writer dying): the store refuses every write from then on, and only a
    // fresh open (systemd's `Restart=on-failure`) recovers the WAL from what the disk really holds.
    let mut outbox_failed = std::pin::pin!(store.failed());
    let outcome = loop {
        tokio::select! {
            // Biased: once stop is requested, the server and worker ending is the expected result.
            biased;
            () = stop.cancelled() => break Ok(()),
            Some(()) = reloads.recv() => {
                notifier.reloading();
                let swaps = Swaps {
                    engines: &engines,
                    api_settings: &api_settings,
                    header_timeout: &header_timeout,
                    retention: &retention,
                };
                config = reload_config(config, &reload, swaps, &store, &status).await;
                notifier.ready(&serving_status(&store, &status).await);
            }
            // The server and the worker end on `stop` too, on other threads: a stop that lands
            // after this select polled `stop` but before it polled them is still a stop.
            joined = &mut server => break match joined {
                _ if stop.is_cancelled() => Ok(()),
                Ok(()) => Err(Error::Server("it stopped accepting connections".to_owned())),
                Err(err) => Err(Error::Server(err.to_string())),
            },
            _ = &mut sync_worker => break if stop.is_cancelled() {
                Ok(())
            } else {
                Err(Error::Task("sync worker"))
            },
            reason = &mut outbox_failed => break Err(Error::OutboxFailed(reason)),
        }
    };

    // Shutdown: stop accepting, let requests finish, final drain, close.
    let grace = config.shutdown_grace;
    let _shutdown_extension = keep_timeout_extended(
        notifier,
        grace + WORKER_STOP_WAIT + config.shutdown_drain.max_time + TIMEOUT_SLACK,
    );
    notifier.stopping("stopping: finishing requests in flight");
    stop.cancel();
    if !finished_within(&mut server, grace, &hurry).await {
        if !hurry.is_cancelled() {
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "requests still running after the grace period; closing them"
            );
        }
        // Aborting the server's task alone would leave its connections running: each is a task
        // of its own. Closing them ends the server; the abort is for a server that does not.
        serving.close.cancel();
        if tokio::time::timeout(CLOSE_WAIT, &mut server).await.is_err() {
            server.abort();
        }
    }
    if !finished_within(&mut sync_worker, WORKER_STOP_WAIT, &hurry).await {
        sync_worker.abort();
    }
    housekeeping.abort();
    // A step in flight still commits; the next start purges what this one left.
    purges.abort();
    if !hurry.is_cancelled() {
        notifier.status("stopping: final drain");
        let engine = engines.borrow().clone();
        // A second stop signal cuts the drain short; the rows it releases stay pending.
        engine
            .drain(
                Trigger::Shutdown,
                config.shutdown_drain,
                &hurry,
                &mut |_| {},
            )
            .await;
    }
    if let Some(pid_file) = pid_file {
        let path = pid_file.path().to_path_buf();
        if let Err(err) = pid_file.remove() {
            tracing::warn!(path = %path.display(), error = %err, "could not remove the pid file");
        }
    }
    signals.abort();
    tracing::info!("stopped");
    outcome
}

/// Writes the pid file once the service is ready (see [`pid_file`]). It is for tools that look
/// for a running daemon, not for the service itself, so a failure is a warning, not a stop.
fn write_pid_file(
    config: &Config,
    port: Option<u16>,
    started_at: std::time::SystemTime,
) -> Option<pid_file::PidFile> {
    // The original always listened on TCP; served over a unix socket alone, 0 says "no port".
    let contents = pid_file::Contents::new(port.unwrap_or(0), &config.data_dir, started_at);
    match pid_file::PidFile::write(&config.pid_file, &contents) {
        Ok(written) => Some(written),
        Err(err) => {
            tracing::warn!(path = %config.pid_file.display(), error = %err, "could not write the pid file");
            None
        }
    }
}

/// Whether `task` ends within `within`, waiting no longer once `hurry` is cancelled.
async fn finished_within(
    task: &mut tokio::task::JoinHandle<()>,
    within: Duration,
    hurry: &CancellationToken,
) -> bool {
    task.is_finished()
        || tokio::select! {
            joined = tokio::time::timeout(within, &mut *task) => joined.is_ok(),
            () = hurry.cancelled() => false,
        }
}

/// The signal streams, created once and kept for the life of the service.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

fn install_signals() -> Result<Signals, Error> {
    Ok(Signals {
        terminate: signal(SignalKind::terminate()).map_err(Error::Signals)?,
        interrupt: signal(SignalKind::interrupt()).map_err(Error::Signals)?,
        hangup: signal(SignalKind::hangup()).map_err(Error::Signals)?,
    })
}

/// The tokens stop signals cancel. `serve` holds the other clones and waits on them.
struct Stops {
    /// Cancelled by the first SIGTERM/SIGINT: stop accepting, then shut down in order.
    stop: CancellationToken,
    /// Cancelled by a second one: skip what is left of the grace period and the final drain.
    hurry: CancellationToken,
}

impl Stops {
    fn signalled(&self, name: &str) {
        if self.stop.is_cancelled() {
            tracing::warn!(
                signal = name,
                "second stop signal: skipping the grace period and the final drain"
            );
            self.hurry.cancel();
        } else {
            tracing::info!("{name} received, shutting down");
            self.stop.cancel();
        }
    }
}

/// Turns signals into cancelled tokens (SIGTERM, SIGINT: see [`Stops`]) or a reload request
/// (SIGHUP).
async fn watch_signals(mut signals: Signals, stops: Stops, reloads: mpsc::Sender<()>) {
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => stops.signalled("SIGTERM"),
            _ = signals.interrupt.recv() => stops.signalled("SIGINT"),
            _ = signals.hangup.recv() => {
                tracing::info!("SIGHUP received, reloading configuration");
                // A full channel already holds a pending reload; one is enough.
                let _ = reloads.try_send(());
            }
        }
    }
}

/// Adopts the passed sockets, or binds `addresses` when there are none. A TCP socket beyond
/// loopback is refused without a local token (configuration checks `api.listen` the same way;
/// this catches a socket unit's `ListenStream=`), and logged as a warning with one.
fn open_listeners(
    sockets: Passed,
    addresses: &[String],
    token_set: bool,
) -> Result<Vec<api::Listener>, Error> {
    let sockets = if sockets.is_empty() {
        listeners::bind(addresses)?
    } else {
        sockets.adopt()?
    };
    sockets
        .into_iter()
        .map(|socket| {
            let name = socket.describe();
            let exposed = match &socket {
                Socket::Tcp { listener, .. } => listener
                    .local_addr()
                    .is_ok_and(|address| !address.ip().is_loopback()),
                Socket::Unix { .. } => false,
            };
            if exposed && !token_set {
                return Err(Error::Exposed(name));
            }
            if exposed {
                tracing::warn!(socket = %name, "listening beyond loopback: writes need the local token, but reads (/health, /v1/queue, /metrics) are open to the network");
            } else {
                tracing::info!(socket = %name, "listening");
            }
            let wrap = |cause| Error::Socket {
                name: name.clone(),
                cause,
            };
            match socket {
                Socket::Tcp { listener, .. } => {
                    listener.set_nonblocking(true).map_err(wrap)?;
                    tokio::net::TcpListener::from_std(listener)
                        .map(api::Listener::Tcp)
                        .map_err(wrap)
                }
                Socket::Unix { listener, .. } => {
                    listener.set_nonblocking(true).map_err(wrap)?;
                    tokio::net::UnixListener::from_std(listener)
                        .map(api::Listener::Unix)
                        .map_err(wrap)
                }
            }
        })
        .collect()
}

/// Repairs what a crash may have left in the brain, logging each repair. A failed repair is
/// logged and the service starts all the same: the brain stays as usable as the crash left it,
/// and the next start tries again.
async fn repair_brain(brain: &Brain) {
    match brain.repair().await {
        Ok(repaired) => {
            for path in &repaired.temp_files {
                tracing::warn!(path = %path.display(), "removed a temporary file an interrupted write left behind");
            }
            for lesson in &repaired.moves_completed {
                tracing::warn!(lesson = %lesson, "completed an interrupted move to the lessons archive: the lesson left lessons.md");
            }
            if repaired.lines_restored > 0 {
                tracing::warn!(
                    lines = repaired.lines_restored,
                    "restored events.jsonl lines that an interrupted append lost"
                );
            }
            if repaired.rows_unrestorable > 0 {
                tracing::warn!(
                    rows = repaired.rows_unrestorable,
                    "events rows without their events.jsonl line could not be written as lines"
                );
            }
        }
        Err(err) => {
            tracing::error!(error = %Causes(&err), "could not repair the brain after a crash; starting all the same")
        }
    }
}

/// The configured brain id, else the data directory's (created once).
async fn brain_id(config: &Config) -> Result<String, Error> {
    if let Some(id) = &config.brain_id {
        return Ok(id.clone());
    }
    let dir = config.data_dir.clone();
    match tokio::task::spawn_blocking(move || store::resolve_brain_id(&dir)).await {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(err)) => Err(Error::Store(store::Error::Io(config.data_dir.clone(), err))),
        Err(join) => Err(Error::Blocking("resolving the brain id", join)),
    }
}

/// The API's reloadable settings, from the configuration and the resolved `brain_id`. The body
/// room in force is kept when its size did not change, so that the shares requests hold in it
/// still count; a new size takes a new room (requests in flight finish in the old one).
fn api_settings(
    config: &Config,
    brain_id: String,
    running_room: Option<Arc<api::BodyRoom>>,
) -> api::Settings {
    let body_room = running_room
        .filter(|room| room.bytes() == config.max_buffered_body_bytes)
        .unwrap_or_else(|| Arc::new(api::BodyRoom::new(config.max_buffered_body_bytes)));
    api::Settings {
        brain_id,
        limits: api_limits(config),
        guards: api::Guards {
            allowed_hosts: config.allowed_hosts.clone(),
            cors_origins: config.cors_origins.clone(),
            token: config.api_token.clone(),
        },
        body_room,
    }
}

fn api_limits(config: &Config) -> api::Limits {
    api::Limits {
        body: api::BodyLimits {
            max_bytes: config.max_body_bytes,
            timeout: config.body_timeout,
        },
        max_events_per_request: config.max_events_per_request,
        max_pending_rows: config.pending_row_limit(),
        max_pending_bytes: config.max_pending_bytes,
        degraded_after: config.degraded_after,
        manual_drain: config.startup_drain,
    }
}

async fn open_store(config: &Config) -> Result<Store, Error> {
    let options = config.store_options();
    match tokio::task::spawn_blocking(move || Store::open(&options)).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(Error::Blocking("opening the outbox", join)),
    }
}

/// Asks systemd for `needed` more time before its start (or stop) timeout, in extensions systemd
/// can take (see [`MAX_EXTENSION`]): the first at once, the rest from a task that the returned
/// handle aborts when dropped, i.e. when the phase is over. `None` when one extension covers it.
fn keep_timeout_extended(
    notifier: Notifier,
    needed: Duration,
) -> Option<tokio_util::task::AbortOnDropHandle<()>> {
    let mut schedule = extension_schedule(needed, MAX_EXTENSION).into_iter();
    let (_, first) = schedule.next()?;
    notifier.extend_timeout(first);
    let rest: Vec<(Duration, Duration)> = schedule.collect();
    if rest.is_empty() {
        return None;
    }
    let started = tokio::time::Instant::now();
    Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        async move {
            for (at, extension) in rest {
                tokio::time::sleep_until(started + at).await;
                notifier.extend_timeout(extension);
            }
        },
    )))
}

/// When to ask for how much (from the start of the phase) so that `needed` is covered without
/// asking for more than `max` at once: every `max / 2`, each extension reaching past the next
/// request, the last one ending exactly at `needed`.
fn extension_schedule(needed: Duration, max: Duration) -> Vec<(Duration, Duration)> {
    let step = max / 2;
    let mut schedule = Vec::new();
    let mut at = Duration::ZERO;
    loop {
        let remaining = needed.saturating_sub(at);
        schedule.push((at, remaining.min(max)));
        if remaining <= max || step.is_zero() {
            return schedule;
        }
        at += step;
    }
}

/// Runs a drain, sending `STATUS=draining sync queue: done/total rows` at most every 250 ms.
async fn drain_with_progress(
    engine: &Engine,
    trigger: Trigger,
    budget: sync::Budget,
    cancel: &CancellationToken,
    notifier: Notifier,
) -> sync::DrainReport {
    notifier.status("draining sync queue");
    let mut last = Instant::now();
    let mut progress = |p: sync::Progress| {
        if last.elapsed() >= PROGRESS_INTERVAL || p.done == p.total {
            last = Instant::now();
            notifier.status(&format!("draining sync queue: {}/{} rows", p.done, p.total));
        }
    };
    engine.drain(trigger, budget, cancel, &mut progress).await
}

async fn run_server(
    listeners: Vec<api::Listener>,
    router: axum::Router,
    header_timeout: watch::Receiver<Duration>,
    shutdown: api::Shutdown,
    alive: Arc<AtomicBool>,
) {
    api::serve(listeners, router, header_timeout, shutdown).await;
    alive.store(false, Ordering::Relaxed);
}

/// Runs the worker, which carries on from the startup drain's `startup` report (an outage it
/// found goes on being probed).
async fn run_worker(
    engines: watch::Receiver<Engine>,
    wake: worker::Wake,
    heartbeat: worker::Heartbeat,
    cancel: CancellationToken,
    startup: sync::DrainReport,
) {
    let startup = Some(startup);
    let stall_after = std::env::var(STALL_WORKER_HOOK)
        .ok()
        .and_then(|s| s.parse::<f64>().ok());
    let Some(seconds) = stall_after.filter(|s| s.is_finite() && *s >= 0.0) else {
        worker::run(engines, wake, heartbeat, cancel, startup).await;
        return;
    };
    tracing::warn!(
        "{STALL_WORKER_HOOK} is set: the sync worker will wedge itself after {seconds} s"
    );
    tokio::select! {
        () = worker::run(engines, wake, heartbeat, cancel.clone(), startup) => return,
        () = tokio::time::sleep(Duration::from_secs_f64(seconds)) => {}
    }
    // Wedged: alive as a task, but never beating again.
    cancel.cancelled().await;
}

/// Feeds the watchdog while the worker and the server are alive, and refreshes `STATUS=`.
/// Nothing here may take long: a tick that does not return delays the watchdog's next ping (the
/// retention purge runs in a task of its own for that reason).
async fn housekeeping(
    store: Store,
    status: Status,
    heartbeat: worker::Heartbeat,
    server_alive: Arc<AtomicBool>,
    notifier: Notifier,
    cancel: CancellationToken,
) {
    let watchdog = notify::watchdog_interval();
    let tick = watchdog.map_or(STATUS_REFRESH, |interval| {
        (interval / 2).min(STATUS_REFRESH)
    });
    // The worker beats only once per `HEARTBEAT_TICK` when idle, so with a `WatchdogSec=` shorter
    // than that a healthy worker would look wedged between beats: never call it silent sooner
    // than two ticks.
    let silent_after = watchdog.map(|interval| interval.max(2 * worker::HEARTBEAT_TICK));
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = Instant::now();
    let mut starving = false;
    let mut recount_failing = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // Another process (`gradata drain` or `gradata queue retry` from the CLI, an SDK sharing
        // the database) changes the pending rows behind the gauge the queue limits use; the store
        // counts them again when SQLite says another connection committed.
        match store.refresh_pending().await {
            Ok(_) => recount_failing = false,
            // Once per episode: the same error every tick adds nothing.
            Err(err) if !recount_failing => {
                recount_failing = true;
                tracing::warn!(error = %Causes(&err), "could not count the pending rows again");
            }
            Err(_) => {}
        }
        if let Some(silent_after) = silent_after {
            // Invariant: the watchdog is fed only while both loops show signs of life, so a wedged
            // worker or a dead server gets the service restarted.
            let healthy = heartbeat.age() < silent_after && server_alive.load(Ordering::Relaxed);
            if healthy {
                notifier.watchdog();
            } else if !starving {
                // Said once per episode: systemd is about to act, a line per tick adds nothing.
                tracing::error!(
                    worker_silent_ms = millis(heartbeat.age()),
                    "sync worker or HTTP server unresponsive; not feeding the watchdog"
                );
            }
            starving = !healthy;
        }
        if last_status.elapsed() >= STATUS_REFRESH {
            last_status = Instant::now();
            notifier.status(&serving_status(&store, &status).await);
        }
    }
}

/// `serving; N pending` plus the sync state when it is not the usual one.
async fn serving_status(store: &Store, status: &Status) -> String {
    let pending = match store.stats().await {
        Ok(stats) => stats.pending.to_string(),
        Err(_) => "?".to_owned(),
    };
    match status.state() {
        SyncState::Idle | SyncState::Sending | SyncState::Backoff => {
            format!("serving; {pending} pending")
        }
        other => format!("serving; {pending} pending; sync {}", other.as_str()),
    }
}

/// Where a reload puts what it built. The daemon holds both senders; the worker and the routes
/// hold the receivers.
struct Swaps<'a> {
    engines: &'a watch::Sender<Engine>,
    api_settings: &'a watch::Sender<Arc<api::Settings>>,
    /// Read by the server for each new connection.
    header_timeout: &'a watch::Sender<Duration>,
    /// Read by the retention task at each purge.
    retention: &'a watch::Sender<Duration>,
}

/// Builds and validates the new configuration, then swaps the sync engine and the API's settings
/// (token, hosts, origins, limits, `brain_id`), the header deadline of new connections and the
/// retention of synced rows; on any error keeps the old configuration in force
/// and says why. A changed `log.filter` replaces the running one. Every changed key that only a
/// restart applies is named in a warning.
async fn reload_config(
    current: Config,
    reload: &Reload,
    swaps: Swaps<'_>,
    store: &Store,
    status: &Status,
) -> Config {
    let rejected = |err: &dyn std::fmt::Display| {
        tracing::error!(error = %err, "configuration reload rejected; the running configuration stays in force");
    };
    let new = match reload() {
        Ok(new) => new,
        Err(err) => {
            rejected(&err);
            return current;
        }
    };
    let old_engine = swaps.engines.borrow().clone();
    let concurrency = if new.sync.max_concurrency == current.sync.max_concurrency {
        old_engine.concurrency().clone()
    } else {
        sync::Concurrency::new(new.sync.concurrency, new.sync.max_concurrency)
    };
    let policy = sync::RetryPolicy::new(new.sync.backoff_base, new.sync.backoff_cap);
    let engine = match Engine::with_parts(
        store.clone(),
        new.sync.clone(),
        status.clone(),
        concurrency,
        policy,
    ) {
        Ok(engine) => engine,
        Err(err) => {
            rejected(&err);
            return current;
        }
    };
    // The data directory is not reloaded, so a derived brain id is the one read at start.
    let brain_id = match brain_id(&Config {
        data_dir: current.data_dir.clone(),
        ..new.clone()
    })
    .await
    {
        Ok(id) => id,
        Err(err) => {
            rejected(&err);
            return current;
        }
    };
    for key in changes_needing_restart(&current, &new) {
        tracing::warn!(
            key,
            "changed setting not applied: it takes effect only at the next restart"
        );
    }
    swaps.engines.send_replace(engine);
    swaps.header_timeout.send_replace(new.header_timeout);
    swaps.retention.send_replace(new.synced_retention);
    let running_room = Arc::clone(&swaps.api_settings.borrow().body_room);
    swaps
        .api_settings
        .send_replace(Arc::new(api_settings(&new, brain_id, Some(running_room))));

    match new.sync.disabled_reason() {
        Some(reason) => {
            tracing::warn!(reason = %reason, "configuration reloaded; cloud sync is disabled")
        }
        None => tracing::info!(key_source = %new.sync.api_key_source, "configuration reloaded"),
    }
    // Last, so that the records above still pass the filter the operator had when asking.
    if new.log_filter != current.log_filter {
        if let Err(err) = crate::logging::set_filter(&new.log_filter) {
            tracing::warn!(error = %err, "log filter not replaced; the old one stays in force");
        }
    }
    new
}

/// The keys whose value changed from `running` to `new` but which this process applies only when
/// it starts again: what was bound, opened or installed at start. Everything else a reload applies
/// (the sync engine, the API's settings, the header deadline, the retention; the shutdown budgets
/// are read from the configuration in force when the stop comes).
fn changes_needing_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    // Destructured without `..` on purpose: a field added to `Config` does not compile here until
    // someone decides whether a reload applies it.
    let Config {
        config_file: _,
        // Follows `data_dir` or a flag, neither of which a reload changes.
        pid_file: _,
        data_dir,
        log_format,
        log_filter: _,
        listen,
        shutdown_grace: _,
        allowed_hosts: _,
        cors_origins: _,
        api_token: _,
        max_body_bytes: _,
        max_buffered_body_bytes: _,
        max_events_per_request: _,
        body_timeout: _,
        header_timeout: _,
        degraded_after: _,
        max_pending_rows: _,
        max_pending_bytes: _,
        max_pending_rows_without_key: _,
        brain_id: _,
        synchronous,
        busy_timeout,
        synced_retention: _,
        sync: _,
        startup_drain: _,
        shutdown_drain: _,
    } = running;
    [
        ("data_dir", *data_dir != new.data_dir),
        ("log.format", *log_format != new.log_format),
        ("api.listen", *listen != new.listen),
        ("store.synchronous", *synchronous != new.synchronous),
        ("store.busy_timeout_secs", *busy_timeout != new.busy_timeout),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(pairs: &[(&str, &str)]) -> Config {
        let mut env: crate::config::Environment = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (name, value) in [
            ("GRADATA_CONFIG", ""),
            ("GRADATA_DATA_DIR", "/nonexistent/data"),
            ("GRADATA_SYNC_API_KEY_FILE", "/nonexistent/api-key"),
        ] {
            env.insert(name.to_owned(), value.to_owned());
        }
        Config::load(&crate::config::Flags::default(), &env).unwrap()
    }

    /// A reload keeps the body room in force, with the shares requests hold in it, unless its
    /// size changed.
    #[test]
    fn a_reload_keeps_the_body_room_unless_its_size_changed() {
        let config = config_with(&[]);
        let first = api_settings(&config, "b".to_owned(), None);
        assert_eq!(first.body_room.bytes(), 64 << 20);
        let same = api_settings(&config, "b".to_owned(), Some(Arc::clone(&first.body_room)));
        assert!(Arc::ptr_eq(&first.body_room, &same.body_room));
        let larger = config_with(&[("GRADATA_API_MAX_BUFFERED_BODY_BYTES", "134217728")]);
        let resized = api_settings(&larger, "b".to_owned(), Some(Arc::clone(&first.body_room)));
        assert!(!Arc::ptr_eq(&first.body_room, &resized.body_room));
        assert_eq!(resized.body_room.bytes(), 128 << 20);
    }

    /// A passed socket the service cannot use, or one exposed without a token, is the unit's
    /// mistake (exit 78, `ERRNO=EINVAL`); an address already taken is not.
    #[test]
    fn socket_unit_mistakes_are_configuration_errors() {
        let exposed = Error::Exposed("http (0.0.0.0:8765)".to_owned());
        assert!(exposed.is_configuration());
        assert_eq!(exposed.errno(), libc::EINVAL.unsigned_abs());
        let not_listening = Error::Listeners(listeners::Error::NotListening {
            index: 0,
            name: "http".to_owned(),
        });
        assert!(not_listening.is_configuration());
        let taken = Error::Listeners(listeners::Error::InUse {
            address: "127.0.0.1:8765".to_owned(),
            cause: std::io::Error::from_raw_os_error(libc::EADDRINUSE),
        });
        assert!(!taken.is_configuration());
        assert_eq!(taken.errno(), libc::EADDRINUSE.unsigned_abs());
    }

    /// Each extension fits `EXTEND_TIMEOUT_USEC=` (u32 microseconds), each request comes before
    /// the previous extension runs out, and together they cover exactly what is needed, even for
    /// the longest budgets the configuration accepts.
    #[test]
    fn extensions_fit_the_notification_and_cover_the_budget() {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        for needed in [
            Duration::from_secs(45),
            MAX_EXTENSION,
            MAX_EXTENSION + Duration::from_secs(1),
            hours(2) + TIMEOUT_SLACK,
            hours(24) + TIMEOUT_SLACK,
            hours(2) + WORKER_STOP_WAIT + TIMEOUT_SLACK,
        ] {
            let schedule = extension_schedule(needed, MAX_EXTENSION);
            assert_eq!(schedule[0].0, Duration::ZERO, "{needed:?}");
            for &(_, extension) in &schedule {
                assert!(u32::try_from(extension.as_micros()).is_ok(), "{needed:?}");
            }
            for pair in schedule.windows(2) {
                let ((at, extension), (next_at, _)) = (pair[0], pair[1]);
                assert!(next_at < at + extension, "{needed:?}: a gap at {next_at:?}");
            }
            let &(last_at, last) = schedule.last().unwrap();
            assert_eq!(last_at + last, needed, "{needed:?}");
        }
        assert_eq!(
            extension_schedule(Duration::from_secs(45), MAX_EXTENSION).len(),
            1
        );
    }
}
