//! The Markdown text of `docs/benchmarks.md`, from the results and the plots drawn: pure, no I/O.
//!
//! Layout: the generated-file line, the run (commit, machine, date), the headline table (one row
//! per target: gradata beside the limit and the original measured on the same work, the two
//! ratios, the target and its verdict), the plots that were skipped, then one section per area
//! present in the results, in [`notes::AREAS`] order: its plots, the command, the method, what
//! limits the figure, and every measurement of the area.
//!
//! Measurements are compared when they share area, scenario, figure and parameters
//! ([`Measurement::key`]); a [`Group`] is such a set. A target's unit says what it bounds:
//! `x limit` or `x original` (also written `×`) bounds gradata's ratio to that series, any other
//! unit bounds gradata's own value. Its `better` says which side is good.

use std::fmt::Write as _;

use super::charts::{Plan, series_rank};
use super::notes;
use super::results::{
    Better, GRADATA, LIMIT, Machine, Measurement, ORIGINAL, Results, TARGET, figure_value,
    ratio_value,
};

/// The first line of every generated page.
pub(crate) const GENERATED: &str = "<!-- Generated from target/bench/results.json by \
benches/run.sh (the renderer is benches/report.rs). Do not edit: change the renderer or run the \
suite again. -->";

/// The parameter that makes a measurement one sample of a time series.
const TIME_PARAM: &str = "t_s";

/// The page.
pub(crate) fn page(results: &Results, plan: &Plan) -> String {
    let groups = groups(&results.measurements);
    let mut page = String::new();
    let _ = writeln!(page, "{GENERATED}\n");
    page.push_str("# Benchmarks\n\n");
    let _ = writeln!(
        page,
        "Commit `{}`, run started {}, on {}.",
        or_unknown(&results.commit),
        or_unknown(&results.started_at),
        machine_text(&results.machine)
    );
    if results.quick {
        page.push_str(
            "This was a quick run (`benches/run.sh --quick`): short runs that prove the suite \
             works. Its figures are not comparable with a full run's.\n",
        );
    }
    page.push_str(
        "\nEach figure is the median of its runs (every run is in its area's table). The \
         **limit** is the most this machine allows for the same work and the **original** is the \
         Python daemon gradata replaces (0.6.0; for the drain, its algorithm re-created), both \
         measured in the same run: this machine's speed drifts through the day, so a ratio is \
         only taken within one run. Regenerate the page with `benches/run.sh`.\n\n",
    );

    page.push_str("## Headline figures\n\n");
    let rows = headline(&groups);
    if rows.is_empty() {
        page.push_str("This results file holds no targets.\n\n");
    } else {
        // A results file with none of the headline's figures (a partial run) shows them all.
        let featured: Vec<&HeadlineRow> = if rows.iter().any(|r| r.featured) {
            rows.iter().filter(|r| r.featured).collect()
        } else {
            rows.iter().collect()
        };
        target_table(&mut page, &featured);
        let missed: Vec<&HeadlineRow> = rows
            .iter()
            .filter(|r| r.verdict == Verdict::NotMet)
            .collect();
        let _ = write!(
            page,
            "Targets in all: {}, {} met, {} not met",
            rows.len(),
            rows.iter().filter(|r| r.verdict == Verdict::Met).count(),
            missed.len()
        );
        if missed.is_empty() {
            page.push_str(". ");
        } else {
            let names: Vec<String> = missed.iter().map(|r| r.figure.clone()).collect();
            let _ = write!(page, " ({}). ", names.join("; "));
        }
        page.push_str("Each area's section judges its own.\n\n");
    }

    if plan.skipped.is_empty() {
        let _ = writeln!(page, "Plots: all {} drawn.\n", plan.charts.len());
    } else {
        let _ = writeln!(
            page,
            "Plots: {} drawn; skipped for want of data in this results file:\n",
            plan.charts.len()
        );
        for skipped in &plan.skipped {
            let _ = writeln!(page, "- {} (needs {})", skipped.title, skipped.wants);
        }
        page.push('\n');
    }

    for area in areas(&results.measurements) {
        section(&mut page, &area, &groups, plan);
    }
    page
}

/// A set of measurements of the same thing, one per series.
#[derive(Debug)]
pub(crate) struct Group<'a> {
    pub(crate) members: Vec<&'a Measurement>,
}

impl<'a> Group<'a> {
    fn first(&self) -> &'a Measurement {
        self.members[0]
    }

    fn series(&self, name: &str) -> Option<&'a Measurement> {
        self.members.iter().copied().find(|m| m.series == name)
    }

    fn value_of(&self, name: &str) -> Option<f64> {
        self.series(name).and_then(Measurement::value)
    }
}

/// The measurements grouped by [`Measurement::key`], groups in order of first appearance and
/// members in series order (gradata, limit, original, others, targets).
pub(crate) fn groups(measurements: &[Measurement]) -> Vec<Group<'_>> {
    let mut keys: Vec<String> = Vec::new();
    let mut groups: Vec<Group<'_>> = Vec::new();
    for measurement in measurements {
        let key = measurement.key();
        match keys.iter().position(|k| *k == key) {
            Some(index) => groups[index].members.push(measurement),
            None => {
                keys.push(key);
                groups.push(Group {
                    members: vec![measurement],
                });
            }
        }
    }
    for group in &mut groups {
        group.members.sort_by_key(|m| series_rank(&m.series));
    }
    groups
}

/// What a target bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    /// gradata's own value, in the group's unit.
    Value,
    /// gradata's value over that series' value.
    RatioTo(&'static str),
}

impl Bound {
    /// Read from a target's unit.
    pub(crate) fn of(target: &Measurement) -> Bound {
        let unit = target.unit.trim().to_lowercase().replace('×', "x");
        let unit = unit.split_whitespace().collect::<Vec<_>>().join(" ");
        match unit.as_str() {
            "x limit" | "of limit" => Bound::RatioTo(LIMIT),
            "x original" | "of original" => Bound::RatioTo(ORIGINAL),
            _ => Bound::Value,
        }
    }
}

/// A target's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Met,
    NotMet,
    /// A figure the target needs was not measured.
    Unknown,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "**not met**",
            Verdict::Unknown => "not measured",
        }
    }
}

/// One row of the headline table, its cells already formatted.
#[derive(Debug)]
pub(crate) struct HeadlineRow {
    /// The area whose section judges it.
    pub(crate) area: String,
    /// Whether it is one of the headline's figures ([`notes::HEADLINE`]).
    pub(crate) featured: bool,
    pub(crate) figure: String,
    pub(crate) gradata: String,
    pub(crate) limit: String,
    pub(crate) original: String,
    pub(crate) to_limit: String,
    pub(crate) to_original: String,
    pub(crate) target: String,
    pub(crate) verdict: Verdict,
}

/// One row per target, in the order of the groups.
pub(crate) fn headline(groups: &[Group<'_>]) -> Vec<HeadlineRow> {
    let mut rows = Vec::new();
    for group in groups {
        let first = group.first();
        let gradata = group.value_of(GRADATA);
        let limit = group.value_of(LIMIT);
        let original = group.value_of(ORIGINAL);
        let unit = group
            .members
            .iter()
            .find(|m| m.series != TARGET)
            .map_or(first.unit.as_str(), |m| m.unit.as_str());
        for target in group.members.iter().filter(|m| m.series == TARGET) {
            let Some(bound) = target.value() else {
                continue;
            };
            let (subject, target_text) = match Bound::of(target) {
                Bound::Value => (
                    gradata,
                    format!("{} {}", better_sign(target.better), with_unit(bound, unit)),
                ),
                Bound::RatioTo(series) => (
                    gradata
                        .zip(group.value_of(series))
                        .and_then(|(g, s)| ratio(g, s)),
                    format!(
                        "{} {} {series}",
                        better_sign(target.better),
                        ratio_value(bound)
                    ),
                ),
            };
            let verdict = match subject {
                None => Verdict::Unknown,
                Some(value) => {
                    let met = match target.better {
                        Better::Higher => value >= bound,
                        Better::Lower => value <= bound,
                    };
                    if met { Verdict::Met } else { Verdict::NotMet }
                }
            };
            rows.push(HeadlineRow {
                area: first.area.clone(),
                featured: notes::HEADLINE.iter().any(|f| is_featured(f, first)),
                figure: figure_label(first),
                gradata: gradata.map_or_else(dash, |v| with_unit(v, unit)),
                limit: limit.map_or_else(dash, |v| with_unit(v, unit)),
                original: original.map_or_else(dash, |v| with_unit(v, unit)),
                to_limit: gradata
                    .zip(limit)
                    .and_then(|(g, l)| ratio(g, l))
                    .map_or_else(dash, ratio_value),
                to_original: gradata
                    .zip(original)
                    .and_then(|(g, o)| ratio(g, o))
                    .map_or_else(dash, ratio_value),
                target: target_text,
                verdict,
            });
        }
    }
    rows
}

fn section(page: &mut String, area: &str, groups: &[Group<'_>], plan: &Plan) {
    let notes = notes::of(area);
    let _ = writeln!(page, "## {}\n", notes.map_or(area, |n| n.title));
    for chart in plan.charts.iter().filter(|c| c.area == area) {
        let _ = writeln!(page, "![{}](bench/{})\n", chart.title, chart.file);
    }
    for skipped in plan.skipped.iter().filter(|s| s.area == area) {
        let _ = writeln!(
            page,
            "Plot skipped: {} (no measurements with {}).\n",
            skipped.title, skipped.wants
        );
    }

    let in_area: Vec<&Group<'_>> = groups.iter().filter(|g| g.first().area == area).collect();
    let mut scenarios: Vec<&str> = Vec::new();
    for group in &in_area {
        let scenario = group.first().scenario.as_str();
        if !scenarios.contains(&scenario) {
            scenarios.push(scenario);
        }
    }
    let commands: Vec<String> = scenarios
        .iter()
        .map(|s| format!("`benches/run.sh --only {s}`"))
        .collect();
    let _ = writeln!(page, "Command: {}.\n", commands.join(", "));
    match notes {
        Some(notes) => {
            let _ = writeln!(page, "**Method.** {}\n", notes.method);
            let _ = writeln!(page, "**What limits the figure.** {}\n", notes.limits);
        }
        None => page.push_str("This area has no notes in the renderer yet.\n\n"),
    }

    let targets: Vec<HeadlineRow> = headline(groups)
        .into_iter()
        .filter(|row| row.area == area)
        .collect();
    if !targets.is_empty() {
        page.push_str("Targets:\n\n");
        target_table(page, &targets.iter().collect::<Vec<_>>());
    }

    page.push_str(
        "| scenario | figure | params | series | median | runs |\n|---|---|---|---|---:|---|\n",
    );
    let mut series_done: Vec<String> = Vec::new();
    for group in in_area {
        for m in &group.members {
            if m.params.contains_key(TIME_PARAM) {
                time_series_row(page, m, groups, &mut series_done);
                continue;
            }
            let runs: Vec<String> = m.runs.iter().map(|v| figure_value(*v)).collect();
            let _ = writeln!(
                page,
                "| {} | {} | {} | {} | {} | {} |",
                cell(&m.scenario),
                cell(&m.figure),
                cell(&m.params_text(&[])),
                cell(&m.series),
                m.value().map_or_else(dash, |v| with_unit(v, &m.unit)),
                runs.join(", ")
            );
        }
    }
    page.push('\n');
}

/// A time series (one measurement per sample) as one row: its samples' span, first, last and
/// largest values.
fn time_series_row(
    page: &mut String,
    m: &Measurement,
    groups: &[Group<'_>],
    done: &mut Vec<String>,
) {
    let rest = m.params_text(&[TIME_PARAM]);
    let id = format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{rest}",
        m.area, m.scenario, m.figure, m.series
    );
    if done.contains(&id) {
        return;
    }
    done.push(id);
    let mut samples: Vec<(f64, f64)> = groups
        .iter()
        .flat_map(|g| g.members.iter())
        .filter(|o| {
            o.area == m.area
                && o.scenario == m.scenario
                && o.figure == m.figure
                && o.series == m.series
                && o.params_text(&[TIME_PARAM]) == rest
        })
        .filter_map(|o| Some((o.param(TIME_PARAM)?, o.value()?)))
        .collect();
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return;
    };
    let largest = samples
        .iter()
        .map(|s| s.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let _ = writeln!(
        page,
        "| {} | {} over time | {} | {} | max {} | {} samples from {} s to {} s: first {}, last {} |",
        cell(&m.scenario),
        cell(&m.figure),
        cell(&rest),
        cell(&m.series),
        with_unit(largest, &m.unit),
        samples.len(),
        figure_value(first.0),
        figure_value(last.0),
        figure_value(first.1),
        figure_value(last.1)
    );
}

/// The areas present, in page order, then any the renderer has no notes for.
fn areas(measurements: &[Measurement]) -> Vec<String> {
    let mut areas: Vec<String> = notes::AREAS
        .iter()
        .filter(|n| measurements.iter().any(|m| m.area == n.area))
        .map(|n| n.area.to_owned())
        .collect();
    for m in measurements {
        if !areas.contains(&m.area) {
            areas.push(m.area.clone());
        }
    }
    areas
}

/// Target rows as a table: figure, gradata, limit, original, the ratios, target, verdict.
fn target_table(page: &mut String, rows: &[&HeadlineRow]) {
    page.push_str(
        "| figure | gradata | limit | original | gradata / limit | gradata / original | target \
         | met? |\n|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            page,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&row.figure),
            row.gradata,
            row.limit,
            row.original,
            row.to_limit,
            row.to_original,
            cell(&row.target),
            row.verdict.text()
        );
    }
    page.push('\n');
}

/// Whether a measurement is the headline figure `featured` names.
fn is_featured(featured: &notes::Featured, m: &Measurement) -> bool {
    featured.area == m.area
        && featured.scenario == m.scenario
        && featured.figure == m.figure
        && featured.params.iter().all(|&(name, value)| {
            m.params
                .get(name)
                .is_some_and(|v| super::results::param_value(v) == value)
        })
}

fn figure_label(m: &Measurement) -> String {
    let params = m.params_text(&[]);
    let name = if m.scenario == m.area {
        format!("{}: {}", m.area, m.figure)
    } else {
        format!("{} {}: {}", m.area, m.scenario, m.figure)
    };
    if params.is_empty() {
        name
    } else {
        format!("{name} ({params})")
    }
}

fn machine_text(machine: &Machine) -> String {
    let mut parts = Vec::new();
    match (machine.cpus, &machine.cpu_model) {
        (Some(cpus), Some(model)) => parts.push(format!("{cpus} CPUs ({model})")),
        (Some(cpus), None) => parts.push(format!("{cpus} CPUs")),
        (None, Some(model)) => parts.push(model.clone()),
        (None, None) => {}
    }
    if let Some(memory) = machine.memory_gib {
        parts.push(format!("{memory:.1} GiB"));
    }
    if let Some(os) = &machine.os {
        parts.push(os.clone());
    }
    if let Some(kernel) = &machine.kernel {
        parts.push(format!("kernel {kernel}"));
    }
    if parts.is_empty() {
        "an undescribed machine".to_owned()
    } else {
        parts.join(", ")
    }
}

fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator != 0.0).then(|| numerator / denominator)
}

fn better_sign(better: Better) -> &'static str {
    match better {
        Better::Higher => "≥",
        Better::Lower => "≤",
    }
}

fn with_unit(value: f64, unit: &str) -> String {
    if unit.is_empty() {
        figure_value(value)
    } else {
        format!("{} {unit}", figure_value(value))
    }
}

fn dash() -> String {
    "–".to_owned()
}

fn or_unknown(text: &str) -> &str {
    if text.is_empty() { "unknown" } else { text }
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}
