//! `gradata serve`: runs the service (see [`crate::daemon`]) on a multi-threaded runtime.

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
