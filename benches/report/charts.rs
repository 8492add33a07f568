//! Which plots the page has, and the data of each, taken from the results: pure, no drawing
//! (`draw.rs` turns a [`Chart`] into SVG).
//!
//! Each plot is a [`Spec`] in [`SPECS`]: the measurements it takes (area, figures), the parameter
//! on its x axis, and how the measurements split into files and lines. A measurement belongs to
//! a plot when its area and figure match and it has the x parameter; its other parameters name
//! its line (`gradata, route=/log-event`), so gradata, the limit and the original measured on the
//! same work are lines of one plot. Targets are not drawn (the headline table states them).
//!
//! What the suite writes for each plot (schema 1 names; the x parameter is a number unless said):
//!
//! | plot | area | figure | x parameter | split into files by |
//! |---|---|---|---|---|
//! | drain throughput | `drain` | `throughput` | `rows` (backlog size) | |
//! | drain time | `drain` | `time` | `rows` | |
//! | capture throughput | `capture` | `throughput` | `clients` | `batch` |
//! | capture p99 | `capture` | `p99` | `clients` | `batch` |
//! | RSS over time | any | `rss` | `t_s` (seconds since the start) | area and scenario |
//! | time to READY | `startup` | `ready` (or `time`) | `rows` | |
//! | brain routes | `brain` | `throughput` | `route` (a string) | |
//!
//! RSS over time is one measurement per sample: `{"figure": "rss", "unit": "MiB",
//! "params": {"t_s": 12.0, ...}, "runs": [21.8]}`. The brain plot keeps only the largest
//! `clients` measured, so it compares the routes at one load.
//!
//! A plot with no matching measurement is skipped, and [`Plan::skipped`] says so for the page.

use super::results::{Measurement, Results, TARGET};

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scale {
    Linear,
    Log,
    /// Evenly spaced categories (the distinct x values, or names): used where the values span
    /// decades but include 0, and for routes.
    Ordinal,
}

/// Lines with points, or grouped bars per category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Lines,
    Bars,
}

/// One plot, ready to draw.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    /// The file name under the page's `bench/` directory.
    pub(crate) file: String,
    pub(crate) area: String,
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub(crate) x_scale: Scale,
    pub(crate) y_scale: Scale,
    pub(crate) kind: Kind,
    /// For an ordinal x axis, the label of each position (x = 0, 1, …).
    pub(crate) categories: Vec<String>,
    pub(crate) lines: Vec<Line>,
}

/// One line (or one set of bars) of a plot.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub(crate) name: String,
    /// `gradata`, `limit`, `original`, …: picks the colour.
    pub(crate) series: String,
    /// Which of its series' lines this is (0, 1, …): picks the shade and marker.
    pub(crate) variant: usize,
    /// Sorted by x.
    pub(crate) points: Vec<(f64, f64)>,
}

/// A plot the results had no data for.
#[derive(Debug, Clone)]
pub(crate) struct Skipped {
    pub(crate) area: &'static str,
    pub(crate) title: &'static str,
    pub(crate) wants: &'static str,
}

/// The plots of one results file.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    pub(crate) charts: Vec<Chart>,
    pub(crate) skipped: Vec<Skipped>,
}

/// How measurements are split into files.
#[derive(Debug, Clone, Copy)]
enum Split {
    None,
    /// One file per value of this parameter (which then leaves the line names).
    Param(&'static str),
    /// One file per area and scenario.
    Scenario,
}

/// One kind of plot.
#[derive(Debug)]
struct Spec {
    file: &'static str,
    /// The measurements' area; `None` takes every area.
    area: Option<&'static str>,
    figures: &'static [&'static str],
    x_param: &'static str,
    title: &'static str,
    x_label: &'static str,
    x_scale: Scale,
    y_scale: Scale,
    kind: Kind,
    split: Split,
    /// Keep only the measurements at the largest value of this parameter.
    largest: Option<&'static str>,
    /// Drop lines of a single point: there they are figures the tables carry (a limit or a
    /// setting measured at one concurrency), not curves.
    curves_only: bool,
    /// What the suite must write for it, for the page's list of skipped plots.
    wants: &'static str,
    /// The area whose section shows it.
    section: &'static str,
}

const SPECS: &[Spec] = &[
    Spec {
        file: "drain-throughput",
        area: Some("drain"),
        figures: &["throughput"],
        x_param: "rows",
        title: "Drain throughput against backlog size",
        x_label: "backlog (rows)",
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        kind: Kind::Lines,
        split: Split::None,
        largest: None,
        curves_only: false,
        wants: "area drain, figure throughput, params.rows",
        section: "drain",
    },
    Spec {
        file: "drain-time",
        area: Some("drain"),
        figures: &["time"],
        x_param: "rows",
        title: "Drain time against backlog size",
        x_label: "backlog (rows)",
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        kind: Kind::Lines,
        split: Split::None,
        largest: None,
        curves_only: false,
        wants: "area drain, figure time, params.rows",
        section: "drain",
    },
    Spec {
        file: "capture-throughput",
        area: Some("capture"),
        figures: &["throughput"],
        x_param: "clients",
        title: "Capture throughput against concurrency",
        x_label: "concurrent clients",
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        kind: Kind::Lines,
        split: Split::Param("batch"),
        largest: None,
        curves_only: true,
        wants: "area capture, figure throughput, params.clients",
        section: "capture",
    },
    Spec {
        file: "capture-p99",
        area: Some("capture"),
        figures: &["p99"],
        x_param: "clients",
        title: "Capture p99 latency against concurrency",
        x_label: "concurrent clients",
        x_scale: Scale::Log,
        y_scale: Scale::Log,
        kind: Kind::Lines,
        split: Split::Param("batch"),
        largest: None,
        curves_only: true,
        wants: "area capture, figure p99, params.clients",
        section: "capture",
    },
    Spec {
        file: "rss",
        area: None,
        figures: &["rss"],
        x_param: "t_s",
        title: "Resident memory over time",
        x_label: "time since start (s)",
        x_scale: Scale::Linear,
        y_scale: Scale::Linear,
        kind: Kind::Lines,
        split: Split::Scenario,
        largest: None,
        curves_only: false,
        wants: "figure rss, params.t_s (one measurement per sample)",
        section: "",
    },
    Spec {
        file: "startup-ready",
        area: Some("startup"),
        figures: &["ready", "time"],
        x_param: "rows",
        title: "Time from exec to READY=1 against backlog size",
        x_label: "backlog at start (rows)",
        x_scale: Scale::Ordinal,
        y_scale: Scale::Log,
        kind: Kind::Lines,
        split: Split::None,
        largest: None,
        curves_only: false,
        wants: "area startup, figure ready, params.rows",
        section: "startup",
    },
    Spec {
        file: "brain-routes",
        area: Some("brain"),
        figures: &["throughput"],
        x_param: "route",
        title: "Brain routes: requests/s",
        x_label: "route",
        x_scale: Scale::Ordinal,
        y_scale: Scale::Log,
        kind: Kind::Bars,
        split: Split::None,
        largest: Some("clients"),
        curves_only: false,
        wants: "area brain, figure throughput, params.route",
        section: "brain",
    },
];

/// The plots of a results file, in [`SPECS`] order, and the kinds that had no data.
pub(crate) fn plan(results: &Results) -> Plan {
    let mut plan = Plan::default();
    for spec in SPECS {
        let charts = charts_of(spec, &results.measurements);
        if charts.is_empty() {
            plan.skipped.push(Skipped {
                area: spec.section,
                title: spec.title,
                wants: spec.wants,
            });
        }
        plan.charts.extend(charts);
    }
    plan
}

fn charts_of(spec: &Spec, measurements: &[Measurement]) -> Vec<Chart> {
    let mut selected: Vec<&Measurement> = measurements
        .iter()
        .filter(|m| m.series != TARGET)
        .filter(|m| spec.area.is_none_or(|area| m.area == area))
        .filter(|m| spec.figures.contains(&m.figure.as_str()))
        .filter(|m| m.params.contains_key(spec.x_param))
        .collect();
    if let Some(name) = spec.largest {
        let largest = selected
            .iter()
            .filter_map(|m| m.param(name))
            .fold(None, |top: Option<f64>, v| {
                Some(top.map_or(v, |t| t.max(v)))
            });
        if let Some(largest) = largest {
            selected.retain(|m| m.param(name).is_none_or(|v| v == largest));
        }
    }

    // Files in order of first appearance.
    let mut files: Vec<(String, Vec<&Measurement>)> = Vec::new();
    for measurement in selected {
        let split_key = match spec.split {
            Split::None => String::new(),
            Split::Param(name) => measurement
                .params
                .get(name)
                .map(super::results::param_value)
                .unwrap_or_default(),
            Split::Scenario => format!("{}-{}", measurement.area, measurement.scenario),
        };
        match files.iter_mut().find(|(key, _)| *key == split_key) {
            Some((_, members)) => members.push(measurement),
            None => files.push((split_key, vec![measurement])),
        }
    }

    let mut charts = Vec::new();
    for (split_key, members) in files {
        let (file, title, area) = match spec.split {
            Split::None => (
                spec.file.to_owned(),
                spec.title.to_owned(),
                spec.section.to_owned(),
            ),
            Split::Param(_) if split_key.is_empty() => (
                spec.file.to_owned(),
                spec.title.to_owned(),
                spec.section.to_owned(),
            ),
            Split::Param(name) => (
                format!("{}-{name}-{}", spec.file, file_safe(&split_key)),
                format!("{} ({name} {split_key})", spec.title),
                spec.section.to_owned(),
            ),
            Split::Scenario => {
                let first = members[0];
                (
                    format!("{}-{}", spec.file, file_safe(&split_key)),
                    format!("{} ({})", spec.title, first.scenario),
                    first.area.clone(),
                )
            }
        };
        if let Some(chart) = chart_of(spec, file, title, area, &members) {
            charts.push(chart);
        }
    }
    charts
}

fn chart_of(
    spec: &Spec,
    file: String,
    title: String,
    area: String,
    members: &[&Measurement],
) -> Option<Chart> {
    let skip: Vec<&str> = match spec.split {
        Split::Param(name) => vec![spec.x_param, name],
        Split::None | Split::Scenario => vec![spec.x_param],
    };

    // Categories of an ordinal axis: route names in order of appearance, numbers sorted.
    let mut categories: Vec<String> = Vec::new();
    if spec.x_scale == Scale::Ordinal {
        let mut numbers: Vec<f64> = members
            .iter()
            .filter_map(|m| m.param(spec.x_param))
            .collect();
        if numbers.len() == members.len() {
            numbers.sort_by(f64::total_cmp);
            numbers.dedup();
            categories = numbers
                .iter()
                .map(|v| super::results::param_value(&serde_json::json!(v)))
                .collect();
        } else {
            for m in members {
                let name = super::results::param_value(&m.params[spec.x_param]);
                if !categories.contains(&name) {
                    categories.push(name);
                }
            }
        }
    }

    let mut lines: Vec<Line> = Vec::new();
    for m in members {
        let Some(y) = m.value() else { continue };
        let x = if spec.x_scale == Scale::Ordinal {
            let name = super::results::param_value(&m.params[spec.x_param]);
            let Some(index) = categories.iter().position(|c| *c == name) else {
                continue;
            };
            index as f64
        } else {
            let Some(x) = m.param(spec.x_param) else {
                continue;
            };
            x
        };
        // A log axis has no place for zero or less.
        if (spec.x_scale == Scale::Log && x <= 0.0) || (spec.y_scale == Scale::Log && y <= 0.0) {
            continue;
        }
        let rest = m.params_text(&skip);
        let name = if rest.is_empty() {
            m.series.clone()
        } else {
            format!("{}, {rest}", m.series)
        };
        match lines.iter_mut().find(|line| line.name == name) {
            Some(line) => line.points.push((x, y)),
            None => {
                let variant = lines.iter().filter(|l| l.series == m.series).count();
                lines.push(Line {
                    name,
                    series: m.series.clone(),
                    variant,
                    points: vec![(x, y)],
                });
            }
        }
    }
    if spec.curves_only && lines.iter().any(|line| line.points.len() > 1) {
        lines.retain(|line| line.points.len() > 1);
    }
    if lines.is_empty() {
        return None;
    }
    for line in &mut lines {
        line.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    // gradata first, then the limit, then the original: the legend reads in that order.
    lines.sort_by_key(|line| (series_rank(&line.series), line.variant));

    let first = members[0];
    Some(Chart {
        file: format!("{file}.svg"),
        area,
        title,
        x_label: spec.x_label.to_owned(),
        y_label: axis_label(&first.figure, &first.unit),
        x_scale: spec.x_scale,
        y_scale: spec.y_scale,
        kind: spec.kind,
        categories,
        lines,
    })
}

/// The order series are listed in: gradata, limit, original, then any other.
pub(crate) fn series_rank(series: &str) -> u8 {
    match series {
        super::results::GRADATA => 0,
        super::results::LIMIT => 1,
        super::results::ORIGINAL => 2,
        TARGET => 4,
        _ => 3,
    }
}

fn axis_label(figure: &str, unit: &str) -> String {
    if unit.is_empty() {
        figure.to_owned()
    } else {
        format!("{figure} ({unit})")
    }
}

fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .to_owned()
}
