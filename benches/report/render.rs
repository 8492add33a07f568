//! Writes the page and its plots: the one place the renderer touches the file system.
//!
//! The plots go to `bench/` beside the page, as `<name>.svg`. That directory holds only
//! generated plots, so an SVG there that this run did not draw (a plot now skipped) is removed,
//! and the page never points at a stale picture.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::charts;
use super::draw;
use super::page;
use super::results::Results;

/// What one rendering wrote.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) page: PathBuf,
    pub(crate) plots: Vec<PathBuf>,
    /// Plots skipped for want of data, by title.
    pub(crate) skipped: Vec<&'static str>,
}

/// Renders `results` to the page at `page_path` and its plots to `bench/` beside it.
pub(crate) fn render(results: &Results, page_path: &Path) -> anyhow::Result<Rendered> {
    let plan = charts::plan(results);
    let directory = match page_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let plots_directory = directory.join("bench");
    std::fs::create_dir_all(&plots_directory)
        .with_context(|| format!("{}: cannot create", plots_directory.display()))?;

    let mut plots = Vec::new();
    for chart in &plan.charts {
        let path = plots_directory.join(&chart.file);
        let svg = draw::svg(chart).with_context(|| format!("{}", path.display()))?;
        std::fs::write(&path, svg).with_context(|| format!("{}: cannot write", path.display()))?;
        plots.push(path);
    }
    remove_stale(&plots_directory, &plots)?;

    let text = page::page(results, &plan);
    std::fs::write(page_path, text)
        .with_context(|| format!("{}: cannot write", page_path.display()))?;
    Ok(Rendered {
        page: page_path.to_path_buf(),
        plots,
        skipped: plan.skipped.iter().map(|s| s.title).collect(),
    })
}

fn remove_stale(directory: &Path, kept: &[PathBuf]) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(directory)
        .with_context(|| format!("{}: cannot list", directory.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("{}: cannot list", directory.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "svg") && !kept.contains(&path) {
            std::fs::remove_file(&path)
                .with_context(|| format!("{}: cannot remove a stale plot", path.display()))?;
        }
    }
    Ok(())
}
