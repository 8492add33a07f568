//! `gradata serve`: runs the service (see [`crate::daemon`]) on a multi-threaded runtime.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::Outcome;
use crate::config::{Config, Environment, Flags};
use crate::daemon;
use crate::systemd::listeners::Passed;

/// Arguments of `gradata serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on when systemd passes no socket: host:port, or an absolute path for a
    /// unix socket; repeatable [default: 127.0.0.1:7342 (the plugin's) and 127.0.0.1:8765]
    #[arg(long, value_name = "ADDR")]
    pub(crate) listen: Vec<String>,
    #[command(flatten)]
    pub(crate) pid_file: PidFileArg,
}

/// Arguments of `gradata daemon`, the Python Gradata daemon's command line: `gradata daemon
/// --brain-dir DIR --port N --pid-file F` runs the service as `gradata serve` would, so container
/// entrypoints and units written for the original keep working.
#[derive(Debug, Args)]
pub(crate) struct DaemonArgs {
    /// Listen on 127.0.0.1:PORT only (0: a port the system picks, written to the pid file)
    /// [default: the addresses of gradata serve]
    #[arg(long, value_name = "PORT")]
    pub(crate) port: Option<u16>,
    #[command(flatten)]
    pub(crate) pid_file: PidFileArg,
}

/// `--pid-file`, which `gradata serve` and `gradata daemon` share.
#[derive(Debug, Args)]
pub(crate) struct PidFileArg {
    /// Where to write the pid file once ready, removed at a clean stop [default:
    /// DATA_DIR/daemon.pid]
    #[arg(long = "pid-file", value_name = "PATH")]
    pub(crate) path: Option<PathBuf>,
}

impl DaemonArgs {
    /// The addresses `--port` stands for: the original always bound loopback.
    pub(crate) fn listen(&self) -> Vec<String> {
        self.port
            .map(|port| vec![format!("127.0.0.1:{port}")])
            .unwrap_or_default()
    }
}

pub(crate) fn run(
    config: Config,
    sockets: Passed,
    flags: Flags,
    env: Environment,
) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gradata-worker")
        .build()
        .context("cannot start the async runtime")?;
    // SIGHUP re-reads the same sources: the file and key files are read again; the environment is
    // the one the service was started with.
    let reload: daemon::Reload = Box::new(move || Config::load(&flags, &env));
    runtime.block_on(daemon::run(config, sockets, reload))?;
    Ok(Outcome::Success)
}
