//! The results file the renderer reads: `target/bench/results.json`, schema 1, as written by
//! `benches/run.sh` (one object with the commit, the machine, the start time, the quick flag and
//! every measurement; `docs/benchmarks.md` is generated from it).
//!
//! A [`Measurement`] is one figure of one scenario for one series (`gradata`, `limit`, `original`
//! or `target`) with every run's value. Measurements that differ only in their series describe
//! the same thing and are compared: [`Measurement::key`] is the match (area, scenario, figure and
//! parameters). Unknown fields are ignored, so the suite can add some without breaking the page;
//! a wrong schema number is refused.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The schema this renderer understands.
pub(crate) const SCHEMA: u64 = 1;

/// The series name of the daemon this project builds.
pub(crate) const GRADATA: &str = "gradata";
/// The series name of the limit measured in the same run.
pub(crate) const LIMIT: &str = "limit";
/// The series name of the Python daemon 0.6.0 (or its re-created algorithm).
pub(crate) const ORIGINAL: &str = "original";
/// The series name of a target: its value is the bound, its params say what it binds.
pub(crate) const TARGET: &str = "target";

/// The whole file.
#[derive(Debug, Deserialize)]
pub(crate) struct Results {
    pub(crate) schema: u64,
    #[serde(default)]
    pub(crate) commit: String,
    #[serde(default)]
    pub(crate) started_at: String,
    #[serde(default)]
    pub(crate) quick: bool,
    #[serde(default)]
    pub(crate) machine: Machine,
    #[serde(default)]
    pub(crate) measurements: Vec<Measurement>,
}

/// What the suite ran on; every field may be missing.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Machine {
    pub(crate) cpus: Option<u64>,
    pub(crate) cpu_model: Option<String>,
    pub(crate) memory_gib: Option<f64>,
    pub(crate) kernel: Option<String>,
    pub(crate) os: Option<String>,
}

/// One figure of one scenario for one series.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Measurement {
    pub(crate) area: String,
    pub(crate) scenario: String,
    pub(crate) figure: String,
    #[serde(default)]
    pub(crate) unit: String,
    pub(crate) series: String,
    #[serde(default)]
    pub(crate) params: Map<String, Value>,
    #[serde(default)]
    pub(crate) runs: Vec<f64>,
    /// Given by the suite; when absent, the median of `runs`.
    #[serde(default)]
    pub(crate) median: Option<f64>,
    #[serde(default)]
    pub(crate) better: Better,
}

/// Which way a figure is good.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Better {
    #[default]
    Higher,
    Lower,
}

impl Results {
    /// Reads and checks a results file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Results> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the results", path.display()))?;
        Results::parse(&text).with_context(|| format!("{}: not a results file", path.display()))
    }

    /// Parses and checks the text of a results file: the schema number, and a value for every
    /// measurement (a median, or runs to take it from).
    pub(crate) fn parse(text: &str) -> anyhow::Result<Results> {
        let results: Results = serde_json::from_str(text)?;
        if results.schema != SCHEMA {
            bail!(
                "schema {} (this renderer reads schema {SCHEMA})",
                results.schema
            );
        }
        for (index, measurement) in results.measurements.iter().enumerate() {
            if measurement.value().is_none() {
                bail!(
                    "measurement {index} ({} {} {} {}) has neither a median nor runs",
                    measurement.area,
                    measurement.scenario,
                    measurement.figure,
                    measurement.series
                );
            }
        }
        Ok(results)
    }
}

impl Measurement {
    /// The figure's value: the median given, else the median of the runs.
    pub(crate) fn value(&self) -> Option<f64> {
        self.median.or_else(|| median(&self.runs))
    }

    /// A numeric parameter.
    pub(crate) fn param(&self, name: &str) -> Option<f64> {
        self.params.get(name).and_then(Value::as_f64)
    }

    /// The parameters except `skip`, as `name=value` in name order: the part of the match key
    /// (and of a plot's line name) that the parameters give.
    pub(crate) fn params_text(&self, skip: &[&str]) -> String {
        let mut names: Vec<&String> = self
            .params
            .keys()
            .filter(|name| !skip.contains(&name.as_str()))
            .collect();
        names.sort();
        let mut text = String::new();
        for name in names {
            if !text.is_empty() {
                text.push_str(", ");
            }
            let _ = write!(text, "{name}={}", param_value(&self.params[name]));
        }
        text
    }

    /// What two measurements must share to be compared: area, scenario, figure and parameters.
    pub(crate) fn key(&self) -> String {
        format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{}",
            self.area,
            self.scenario,
            self.figure,
            self.params_text(&[])
        )
    }
}

/// A parameter's value as the page shows it: strings bare, whole numbers without a fraction
/// (so `0` and `0.0` match), large ones with thousands separators.
pub(crate) fn param_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => match number.as_f64() {
            Some(float) if float.fract() == 0.0 && float.abs() < 1e15 => group_digits(float),
            _ => number.to_string(),
        },
        other => other.to_string(),
    }
}

/// The median of some values (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// A whole number with thousands separators: `1234567` as `1,234,567`.
pub(crate) fn group_digits(value: f64) -> String {
    let text = format!("{value:.0}");
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{sign}{grouped}")
}

/// A figure as the page shows it: three significant digits at most for small values, whole
/// numbers with separators from 1,000 up.
pub(crate) fn figure_value(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1000.0 {
        group_digits(value)
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else if magnitude >= 10.0 {
        format!("{value:.1}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else if magnitude == 0.0 {
        "0".to_owned()
    } else {
        format!("{value:.3}")
    }
}

/// A ratio as the page shows it, `0.52×` or `3,200×`.
pub(crate) fn ratio_value(ratio: f64) -> String {
    if ratio >= 100.0 {
        format!("{}×", group_digits(ratio))
    } else if ratio >= 10.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.2}×")
    }
}
