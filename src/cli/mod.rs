//! The command line: one clap definition drives parsing, `--help`, the man page and completions.
//!
//! Each subcommand lives in its own file and says whether it opens the store directly (`drain`,
//! `status`, `queue`) or runs the service (`serve`). `--help` and `--version` finish inside clap,
//! before any configuration is read.

mod drain;
mod generate;
mod queue;
mod serve;
mod status;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Flags};
use crate::logging;
use crate::systemd::listeners::Passed;
use crate::systemd::notify::Notifier;

/// What a command concluded, when it ran to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the command ran but what it reports is a failure (e.g. a drain stopped by a 401).
    Failure,
}

/// Captures Gradata events from local agents and forwards them to the Gradata cloud.
#[derive(Debug, Parser)]
#[command(name = "gradata", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
struct GlobalArgs {
    /// Config file [default: /etc/gradata/gradata.toml, if it exists]
    // GRADATA_CONFIG is read by `Config::load`, where an empty value means "no file".
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Directory holding system.db (a Gradata brain directory works too)
    #[arg(long, visible_alias = "brain-dir", global = true, value_name = "PATH")]
    data_dir: Option<PathBuf>,
    /// File containing the cloud API key (overrides GRADATA_API_KEY and credentials)
    #[arg(long, global = true, value_name = "PATH")]
    api_key_file: Option<PathBuf>,
    /// Ingest URL [default: the Gradata cloud, api.gradata.ai/api/v1/ingest]
    #[arg(long, global = true, value_name = "URL")]
    ingest_url: Option<String>,
    /// Log format: auto, journal, text or json
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: drain the backlog, then serve the local API (systemd starts this)
    Serve(serve::ServeArgs),
    /// Run the service with the Python Gradata daemon's options (--brain-dir DIR, --port N,
    /// --pid-file PATH), as gradata serve
    Daemon(serve::DaemonArgs),
    /// Deliver pending events now, within a row and time budget
    Drain(drain::DrainArgs),
    /// Show queue counts, the sync state and the last error
    Status(status::StatusArgs),
    /// List or retry queued events
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Generate the man page or shell completions (for packaging)
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCommand),
}

/// Parses the command line (exits on `--help`, `--version` and usage errors, as clap does).
pub fn parse() -> Cli {
    Cli::parse()
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<Outcome> {
    // Sockets passed by systemd are taken before anything else can start a thread: taking them
    // edits the environment.
    let sockets = match &cli.command {
        Command::Serve(_) | Command::Daemon(_) => Passed::take_from_env(),
        // Generated from the command definition alone: no configuration is read.
        Command::Generate(command) => return generate::run(command),
        _ => Passed::none(),
    };
    let env = config::process_environment();
    let flags = Flags {
        config: cli.global.config.clone(),
        data_dir: cli.global.data_dir.clone(),
        api_key_file: cli.global.api_key_file.clone(),
        ingest_url: cli.global.ingest_url.clone(),
        listen: match &cli.command {
            Command::Serve(args) => args.listen.clone(),
            Command::Daemon(args) => args.listen(),
            _ => Vec::new(),
        },
        pid_file: match &cli.command {
            Command::Serve(args) => args.pid_file.path.clone(),
            Command::Daemon(args) => args.pid_file.path.clone(),
            _ => None,
        },
        log_format: cli.global.log_format.clone(),
    };
    let config = match Config::load(&flags, &env) {
        Ok(config) => config,
        Err(err) => {
            // Under systemd, say why in `systemctl status` too.
            Notifier::new().fatal(
                libc::EINVAL.unsigned_abs(),
                &format!("invalid configuration: {err}"),
            );
            return Err(err).context("invalid configuration");
        }
    };
    logging::init(config.log.format, &config.log.filter);
    for unknown in config::unknown_variables(&env) {
        match unknown.suggestion {
            Some(known) => tracing::warn!(
                variable = %unknown.name,
                "unknown environment variable ignored; did you mean {known}?"
            ),
            None => {
                tracing::warn!(variable = %unknown.name, "unknown environment variable ignored")
            }
        }
    }
    match cli.command {
        Command::Serve(_) | Command::Daemon(_) => serve::run(config, sockets, flags, env),
        Command::Drain(args) => drain::run(&config, &args),
        Command::Status(args) => status::run(&config, &args),
        Command::Queue(command) => queue::run(&config, &command),
        Command::Generate(command) => generate::run(&command),
    }
}

/// Prints an error and its causes on stderr, once, as `gradata: cause: cause`.
#[expect(
    clippy::print_stderr,
    reason = "the one place the CLI reports a fatal error"
)]
pub fn report_error(err: &anyhow::Error) {
    eprintln!("gradata: {}", error_chain(err));
}

/// An error and its causes as `error: cause: cause`. Each error's message leaves its cause to
/// the next link of the chain (`#[source]`, never `{0}` in the message), so each is said once.
fn error_chain(err: &anyhow::Error) -> String {
    crate::logging::Causes(err.as_ref()).to_string()
}

/// A current-thread runtime for the commands that talk to the network or the store's writer.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Store options for the CLI: never create, never take the service's lock.
fn cli_store_options(config: &Config) -> crate::store::Options {
    crate::store::Options {
        create: crate::store::Create::Never,
        instance_lock: crate::store::InstanceLock::None,
        ..config.store_options()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chains the CLI really prints: the service's error around the store's around the I/O
    /// error, each said once, with no trimming.
    #[test]
    fn error_chain_says_each_cause_once() {
        let io = || std::io::Error::other("disk I/O error");
        let opened = anyhow::Error::from(crate::daemon::Error::Store(crate::store::Error::Io(
            PathBuf::from("/data"),
            io(),
        )));
        assert_eq!(
            error_chain(&opened),
            "cannot open the outbox: /data: disk I/O error"
        );
        let context = opened.context("serving");
        assert_eq!(
            error_chain(&context),
            "serving: cannot open the outbox: /data: disk I/O error"
        );
        let plain = anyhow::Error::from(io()).context("reading /etc/gradata/gradata.toml");
        assert_eq!(
            error_chain(&plain),
            "reading /etc/gradata/gradata.toml: disk I/O error"
        );
    }
}
