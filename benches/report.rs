//! The benchmark page renderer: turns the suite's results file into `docs/benchmarks.md` and its
//! SVG plots, so the page is never edited by hand (issue 25).
//!
//! Run: `cargo bench --bench report -- [RESULTS [PAGE]]`
//! - `RESULTS`, else `$GRADATA_BENCH_RESULTS`, else `target/bench/results.json`: the results
//!   (schema 1, as `benches/run.sh` writes it; see `report/results.rs`);
//! - `PAGE`, else `$GRADATA_BENCH_PAGE`, else `docs/benchmarks.md`: the page to write. The plots
//!   go to `bench/` beside it, so CI renders to `target/bench/page.md` and never touches the
//!   committed page.
//!
//! It is a bench target (`harness = false`) so that it never ships and `cargo test` does not
//! build it; `cargo bench` passes it `--bench`, which it ignores like any other flag. The work is
//! in `report/`: `results.rs` reads the file, `charts.rs` picks each plot's data, `draw.rs` draws
//! it, `notes.rs` holds each area's fixed prose, `page.rs` writes the Markdown and `render.rs`
//! writes the files. `tests/it/bench_report.rs` renders `benches/testdata/results-sample.json`
//! with the same modules.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the renderer's report of what it wrote"
)]

#[path = "report/charts.rs"]
mod charts;
#[path = "report/draw.rs"]
mod draw;
#[path = "report/notes.rs"]
mod notes;
#[path = "report/page.rs"]
mod page;
#[path = "report/render.rs"]
mod render;
#[path = "report/results.rs"]
mod results;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;

const USAGE: &str = "usage: cargo bench --bench report -- [RESULTS [PAGE]]
  RESULTS  results file (default $GRADATA_BENCH_RESULTS, else target/bench/results.json)
  PAGE     page to write, plots go to bench/ beside it
           (default $GRADATA_BENCH_PAGE, else docs/benchmarks.md)";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("report: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut positional: Vec<OsString> = Vec::new();
    for argument in std::env::args_os().skip(1) {
        let text = argument.to_string_lossy();
        if text == "-h" || text == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        // `cargo bench` passes `--bench`; other flags are the harness's, not ours.
        if !text.starts_with('-') {
            positional.push(argument);
        }
    }
    if positional.len() > 2 {
        bail!("too many arguments\n{USAGE}");
    }
    let mut positional = positional.into_iter().map(PathBuf::from);
    // cargo runs a bench in the package's directory; the defaults are relative to it anyway so
    // the binary run by hand from elsewhere still finds them.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let results_path = positional
        .next()
        .or_else(|| std::env::var_os("GRADATA_BENCH_RESULTS").map(PathBuf::from))
        .unwrap_or_else(|| root.join("target/bench/results.json"));
    let page_path = positional
        .next()
        .or_else(|| std::env::var_os("GRADATA_BENCH_PAGE").map(PathBuf::from))
        .unwrap_or_else(|| root.join("docs/benchmarks.md"));

    let results = results::Results::load(&results_path)?;
    let rendered = render::render(&results, &page_path)?;
    println!(
        "report: {} from {} ({} measurements)",
        rendered.page.display(),
        results_path.display(),
        results.measurements.len()
    );
    for plot in &rendered.plots {
        println!("report: {}", plot.display());
    }
    for title in &rendered.skipped {
        println!("report: skipped, no data: {title}");
    }
    Ok(())
}
