//! Integration tests: the library's engines against a fake ingest server, and the real binary.
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
#![allow(missing_docs, unreachable_pub, reason = "test code")]
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "test diagnostics"
)]

mod support;

mod api;
mod bench_report;
mod bench_results;
mod brain;
mod brain_events;
mod brain_recall;
mod crash;
mod dedup;
mod drain;
mod durability;
mod group_commit;
mod journal;
mod learning;
mod learning_correct;
mod leases;
mod maintain;
mod outbox_model;

mod cli;
mod daemon;
mod retention;
mod review;
mod secrets;
mod store;
mod worker;
