//! `gradata serve`: the one place that orders startup and shutdown (DESIGN §2). Read top to bottom
//! it is the contract: signals, listeners, store, the brain and its crash repair, bounded startup
//! drain, serve, `READY=1`; then the worker, the watchdog and retention run until SIGTERM/SIGINT,
//! SIGHUP reloads, and shutdown stops accepting, lets requests finish, runs one bounded final drain
//! and closes the store.
//!
//! Everything it calls is testable without a daemon. It alone spawns the service's long-lived
//! tasks; the store owns its threads, and the server a task per connection.
//! Invariant: `READY=1` is sent only after every fallible startup step has succeeded, and only
//! after the startup drain, so systemd holds early connections and dependent units until then.

mod error;
mod housekeeping;
mod listen;
pub mod pid_file;
mod progress;
mod reload;
pub mod retention;
mod signals;

pub use error::Error;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::brain::Brain;
use crate::brain::events::PlatformEnv;
use crate::config::{self, Config};
use crate::logging::Causes;
use crate::metrics::Metrics;
use crate::store::{self, Store};
use crate::sync::{self, Engine, Status, SyncState, Trigger, worker};
use crate::systemd::listeners::Passed;
use crate::systemd::notify::Notifier;

/// Slack added to the drain budget when asking systemd for more start time.
const TIMEOUT_SLACK: Duration = Duration::from_secs(15);
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
    let signals = tokio::spawn(signals::watch(
        signals::install()?,
        signals::Stops {
            stop: stop.clone(),
            hurry: hurry.clone(),
        },
        reload_requests,
    ));

    // 2. Listeners: adopted or bound, not accepted from yet.
    let listeners = listen::open(sockets, &config.api.listen, config.api.token.is_some())?;

    // 3. The store: single-instance lock, open, migrate.
    let store = open_store(&config).await?;
    let brain_id = brain_id(&config).await?;
    let brain = Brain::open(&config.data_dir, store.clone(), PlatformEnv::from_process()).await?;
    // Before anyone is answered: what a crash left between the brain's writes (brain::repair).
    repair_brain(&brain).await;
    let status = Status::new(SyncState::Idle);
    let metrics = Metrics::new();
    let engine = Engine::new(
        store.clone(),
        config.sync.engine.clone(),
        status.clone(),
        metrics.clone(),
    )?;
    if let Some(reason) = config.sync.engine.disabled_reason() {
        tracing::warn!(reason = %reason, "cloud sync is disabled; events are kept in the outbox until it is enabled");
    } else {
        tracing::info!(ingest_url = %config.sync.engine.ingest_url, key_source = %config.sync.engine.api_key_source, "cloud sync enabled");
    }

    // 4. The bounded startup drain, with progress for `systemctl status`.
    let startup_extension =
        progress::keep_timeout_extended(notifier, config.drain.budget.max_time + TIMEOUT_SLACK);
    let report = progress::drain_with_progress(
        &engine,
        Trigger::Startup,
        config.drain.budget,
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
        watch::channel(Arc::new(reload::api_settings(&config, brain_id, None)));
    let state = api::State::new(api::Shared {
        store: store.clone(),
        brain: Arc::new(brain),
        engines: engine_updates.clone(),
        wake: wake.clone(),
        data_dir: config.data_dir.clone(),
        started,
        metrics,
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
    let (header_timeout, header_timeout_updates) = watch::channel(config.api.header_timeout);
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
    let housekeeping = tokio::spawn(housekeeping::run(
        store.clone(),
        status.clone(),
        heartbeat,
        server_alive,
        notifier,
        stop.child_token(),
    ));
    let (retention, retention_updates) = watch::channel(config.store.synced_retention);
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
                let swaps = reload::Swaps {
                    engines: &engines,
                    api_settings: &api_settings,
                    header_timeout: &header_timeout,
                    retention: &retention,
                };
                config = reload::apply(config, &reload, swaps, &store, &status).await;
                notifier.ready(&housekeeping::serving_status(&store, &status).await);
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
    let grace = config.api.shutdown_grace;
    let _shutdown_extension = progress::keep_timeout_extended(
        notifier,
        grace + WORKER_STOP_WAIT + config.drain.shutdown.max_time + TIMEOUT_SLACK,
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
                config.drain.shutdown,
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
    if let Some(id) = &config.sync.brain_id {
        return Ok(id.clone());
    }
    let dir = config.data_dir.clone();
    match tokio::task::spawn_blocking(move || store::resolve_brain_id(&dir)).await {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(err)) => Err(Error::Store(store::Error::Io(config.data_dir.clone(), err))),
        Err(join) => Err(Error::Blocking("resolving the brain id", join)),
    }
}

async fn open_store(config: &Config) -> Result<Store, Error> {
    let options = config.store_options();
    match tokio::task::spawn_blocking(move || Store::open(&options)).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(Error::Blocking("opening the outbox", join)),
    }
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

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
