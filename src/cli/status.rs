//! `gradata status`: queue counts, the oldest pending age, the sync state and the last error, read
//! straight from the database with a read-only connection (no lock, no write), so it never
//! disturbs a running service. A database gradata has not migrated yet (the original daemon's,
//! which may still be writing to it) is counted from its original columns and left as it is.

use anyhow::Context;
use clap::Args;
use serde_json::json;

use super::{Outcome, cli_store_options};
use crate::config::Config;
use crate::store::{self, Store};
use crate::sync::{STATUS_META_KEY, StatusSnapshot};

/// Arguments of `gradata status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Print as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(config: &Config, args: &StatusArgs) -> anyhow::Result<Outcome> {
    let options = cli_store_options(config);
    // What is there: "missing" only when the file is really not there (an unreadable directory is
    // an error), "no_queue_table" for a database that is not an outbox (yet).
    let mut database_state = "ready";
    let store = match Store::open_read_only(&options) {
        Ok(store) => Some(store),
        Err(store::Error::NotFound(_)) => {
            database_state = "missing";
            None
        }
        Err(store::Error::NoQueueTable(_)) => {
            database_state = "no_queue_table";
            None
        }
        // A brain database the original daemon made, which it may still be writing to: not
        // migrated here (the service does that when it starts), only counted.
        Err(store::Error::NotMigrated(_)) => {
            database_state = "not_migrated";
            None
        }
        Err(err) => return Err(err).context("opening the queue"),
    };
    let now = crate::clock::now();
    let (stats, sync) = match &store {
        Some(store) => {
            let runtime = super::runtime()?;
            let stats = runtime
                .block_on(store.stats())
                .context("reading queue counts")?;
            let sync: Option<StatusSnapshot> = runtime
                .block_on(store.meta(STATUS_META_KEY))
                .context("reading the sync status")?
                .and_then(|text| serde_json::from_str(&text).ok());
            (Some(stats), sync)
        }
        None if database_state == "not_migrated" => {
            let stats = Store::unmigrated_stats(&options).context("reading queue counts")?;
            (Some(stats), None)
        }
        None => (None, None),
    };
    let report = json!({
        "data_dir": config.data_dir,
        "database": options.database_path(),
        "database_exists": database_state != "missing",
        "database_state": database_state,
        "queue": stats.as_ref().map(|s| json!({
            "pending": s.pending,
            "dead": s.dead,
            "synced": s.synced,
            "leased": s.leased,
            "pending_bytes": s.pending_bytes,
            "oldest_pending_age_seconds": s.oldest_pending_age(now).map(|age| age.as_secs_f64().floor()),
        })),
        "sync": sync,
        "sync_configured": config.sync.engine.disabled_reason().is_none(),
        "sync_disabled_reason": config.sync.engine.disabled_reason(),
    });
    print(&report, args.json)?;
    Ok(Outcome::Success)
}

#[expect(clippy::print_stdout, reason = "the command's output")]
fn print(report: &serde_json::Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).context("serialising the status")?
        );
        return Ok(());
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    println!("database:      {}", text(&report["database"]));
    match report["database_state"].as_str() {
        Some("missing") => {
            println!("               (not created yet: the service creates it on first start)");
            return Ok(());
        }
        Some("no_queue_table") => {
            println!(
                "               (exists, but has no sync_queue table: the service adds it on first start)"
            );
            return Ok(());
        }
        Some("not_migrated") => {
            println!(
                "               (not migrated yet: the service migrates it on first start; counted from the original columns)"
            );
        }
        _ => {}
    }
    let queue = &report["queue"];
    println!(
        "pending:       {} ({} bytes)",
        text(&queue["pending"]),
        text(&queue["pending_bytes"])
    );
    println!(
        "oldest:        {} s",
        text(&queue["oldest_pending_age_seconds"])
    );
    println!("dead:          {}", text(&queue["dead"]));
    println!("synced:        {}", text(&queue["synced"]));
    let sync = &report["sync"];
    println!("sync state:    {}", text(&sync["state"]));
    println!("last success:  {}", text(&sync["last_success_at"]));
    println!("last error:    {}", text(&sync["last_error"]));
    if let Some(reason) = report["sync_disabled_reason"].as_str() {
        println!("sync disabled: {reason}");
    }
    Ok(())
}
