//! `gradata drain`: one bounded drain against the configured store and ingest URL, run in this
//! process (it does not ask a running service; leases keep the two from posting a row twice).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use super::{Outcome, cli_store_options, runtime};
use crate::config::Config;
use crate::sync::{self, Budget, StopReason, Trigger};

/// Arguments of `gradata drain`.
#[derive(Debug, Args)]
pub(crate) struct DrainArgs {
    /// Most rows to claim [default: drain.max_rows, 3200]
    #[arg(long, value_name = "N")]
    max_rows: Option<usize>,
    /// Most seconds to spend [default: drain.max_secs, 30]
    #[arg(long, value_name = "S")]
    max_seconds: Option<f64>,
    /// Print the summary as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config: &Config, args: &DrainArgs) -> anyhow::Result<Outcome> {
    let max_time = match args.max_seconds {
        // Checked, not `from_secs_f64`, which panics past about 584 billion years.
        Some(seconds) => Duration::try_from_secs_f64(seconds).map_err(|_| {
            anyhow::anyhow!(
                "--max-seconds must be a non-negative number of seconds that fits a duration, got {seconds}"
            )
        })?,
        None => config.drain.budget.max_time,
    };
    let budget = Budget {
        max_rows: args.max_rows.unwrap_or(config.drain.budget.max_rows),
        max_time,
    };
    let bar = if std::io::stderr().is_terminal() && !args.json {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} draining [{bar:30}] {pos}/{len} rows ({per_sec})",
            )
            .context("progress bar template")?
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let cancel = CancellationToken::new();
    let report = runtime()?.block_on(async {
        let on_ctrl_c = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_ctrl_c.cancel();
            }
        });
        let mut progress = |p: sync::Progress| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        };
        sync::open_and_drain(
            &cli_store_options(config),
            config.sync.engine.clone(),
            Trigger::Manual,
            budget,
            &cancel,
            &mut progress,
        )
        .await
    })?;
    bar.finish_and_clear();
    print_report(&report, args.json)?;
    Ok(match report.reason {
        StopReason::Empty
        | StopReason::Done
        | StopReason::RowBudget
        | StopReason::Leased
        | StopReason::TimeBudget
        | StopReason::NoDatabase
        | StopReason::NoQueueTable => Outcome::Success,
        StopReason::NoProgress
        | StopReason::RateLimited
        | StopReason::AuthFailed
        | StopReason::ConfigError
        | StopReason::Disabled
        | StopReason::Cancelled
        | StopReason::StoreError => Outcome::Failure,
    })
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn print_report(report: &sync::DrainReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).context("serialising the report")?
        );
    } else {
        let remaining = report
            .remaining
            .map_or_else(|| "unknown".to_owned(), |n| n.to_string());
        println!(
            "delivered {} rows, {} dead, {} to retry, {} pending; stopped: {} after {:.2}s",
            report.delivered,
            report.dead,
            report.retried,
            remaining,
            report.reason.as_str(),
            report.elapsed.as_secs_f64()
        );
        if let Some(detail) = &report.detail {
            println!("{detail}");
        }
    }
    Ok(())
}
