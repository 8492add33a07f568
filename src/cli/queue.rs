//! `gradata queue list` and `gradata queue retry`: look at rows and put dead ones back in line.
//! Both open the store directly; `retry` is one transaction through the store's writer.

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{Outcome, cli_store_options, runtime};
use crate::config::Config;
use crate::store::{RetrySelector, RowId, RowState, Store};

/// `gradata queue …`.
#[derive(Debug, Subcommand)]
pub(crate) enum QueueCommand {
    /// List rows in one state, oldest first
    List(ListArgs),
    /// Make dead rows (or the given rows) pending and due now
    Retry(RetryArgs),
}

/// Arguments of `gradata queue list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Which rows
    #[arg(long, value_enum, default_value = "pending")]
    state: StateArg,
    /// Most rows to show
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Print as JSON on stdout
    #[arg(long)]
    json: bool,
}

/// Arguments of `gradata queue retry`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["all_dead", "ids"]))]
pub(crate) struct RetryArgs {
    /// Retry every dead row
    #[arg(long)]
    all_dead: bool,
    /// Row ids to retry
    #[arg(value_name = "ID")]
    ids: Vec<i64>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StateArg {
    Pending,
    Dead,
    Synced,
}

impl From<StateArg> for RowState {
    fn from(state: StateArg) -> RowState {
        match state {
            StateArg::Pending => RowState::Pending,
            StateArg::Dead => RowState::Dead,
            StateArg::Synced => RowState::Synced,
        }
    }
}

pub(crate) fn run(config: &Config, command: &QueueCommand) -> anyhow::Result<Outcome> {
    match command {
        QueueCommand::List(args) => list(config, args),
        QueueCommand::Retry(args) => retry(config, args),
    }
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn list(config: &Config, args: &ListArgs) -> anyhow::Result<Outcome> {
    let store = Store::open(&cli_store_options(config)).context("opening the queue")?;
    let entries = super::runtime()?
        .block_on(store.list(args.state.into(), args.limit))
        .context("listing the queue")?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&entries).context("serialising the rows")?
        );
        return Ok(Outcome::Success);
    }
    println!(
        "{:>8}  {:<28} {:<10} {:>8}  {:>6}  LAST ERROR",
        "ID", "EVENT ID", "KIND", "ATTEMPTS", "STATUS"
    );
    for entry in &entries {
        println!(
            "{:>8}  {:<28} {:<10} {:>8}  {:>6}  {}",
            entry.id,
            entry.event_id.as_deref().unwrap_or("-"),
            entry.kind,
            entry.attempts,
            entry
                .last_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            entry.last_error.as_deref().unwrap_or("")
        );
    }
    Ok(Outcome::Success)
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn retry(config: &Config, args: &RetryArgs) -> anyhow::Result<Outcome> {
    let store = Store::open(&cli_store_options(config)).context("opening the queue")?;
    let selector = if args.all_dead {
        RetrySelector::AllDead
    } else {
        RetrySelector::Ids(args.ids.iter().copied().map(RowId).collect())
    };
    let changed = runtime()?
        .block_on(store.retry(selector))
        .context("retrying rows")?;
    println!("{changed} rows queued for retry");
    Ok(Outcome::Success)
}
