//! The suite's results, as the benchmark programs write them: each program writes its figures to
//! `target/bench/<scenario>.json`, and `benches/run.sh` merges those files, with the commit, the
//! machine and the time of the run, into `target/bench/results.json` (schema 1), which the
//! renderer turns into the page.
//!
//! A [`Measurement`] is one figure of one scenario for one [`Series`] (gradata, the original
//! daemon, the limit measured in the same run, or a target), with every run's value in the order
//! the runs were made; its median is computed here from those runs, never passed in. A target is
//! a measurement too, with the target's value as its one run, and the same params as the figure
//! it binds, so the renderer can put figure, limit, original and target side by side by matching
//! area, scenario, figure and params.
//!
//! This module knows nothing of the machine or the commit (`run.sh` describes them once for the
//! whole run), nor of the page or its plots. Each benchmark program includes it with
//! `#[path = "support/results.rs"] mod results;`; the integration tests include it too, to check
//! the median and the shape of what is written.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The version of the results format (the `schema` key of every file).
pub(crate) const SCHEMA: u64 = 1;

/// Which way a figure is good: for ratios and the verdicts against targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Better {
    /// Throughput: more is better.
    Higher,
    /// Latency, time, memory: less is better.
    Lower,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }
}

/// What a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Series {
    /// This build of gradata.
    Gradata,
    /// The original: the Python daemon of PyPI `gradata==0.6.0`, or its re-created algorithm.
    Original,
    /// The bare limit of the machine or the HTTP stack, measured in the same run.
    Limit,
    /// A target of the project's issue: its value is the one run.
    Target,
}

impl Series {
    fn as_str(self) -> &'static str {
        match self {
            Series::Gradata => "gradata",
            Series::Original => "original",
            Series::Limit => "limit",
            Series::Target => "target",
        }
    }
}

/// One figure of one scenario for one series, with every run's value.
///
/// Built from [`Measurement::new`] with `series`, `param` and `runs`; a clone with other
/// params or series makes the next one, so a benchmark sets area, scenario and figure once.
#[derive(Debug, Clone)]
pub(crate) struct Measurement {
    area: String,
    scenario: String,
    figure: String,
    unit: String,
    series: Series,
    params: Map<String, Value>,
    runs: Vec<f64>,
    better: Better,
}

impl Measurement {
    /// A figure of `scenario` (the benchmark program, as `run.sh --only` names it), shown in the
    /// page's section `area`; of gradata, with no params and no runs yet.
    pub(crate) fn new(
        area: &str,
        scenario: &str,
        figure: &str,
        unit: &str,
        better: Better,
    ) -> Measurement {
        Measurement {
            area: area.to_owned(),
            scenario: scenario.to_owned(),
            figure: figure.to_owned(),
            unit: unit.to_owned(),
            series: Series::Gradata,
            params: Map::new(),
            runs: Vec::new(),
            better,
        }
    }

    /// The same measurement for `series`.
    pub(crate) fn series(mut self, series: Series) -> Measurement {
        self.series = series;
        self
    }

    /// Adds (or replaces) one parameter: numbers as numbers, names as strings.
    pub(crate) fn param(mut self, name: &str, value: impl Into<Value>) -> Measurement {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    /// Every run's value, in the order of the runs.
    ///
    /// # Panics
    ///
    /// When `runs` is empty or holds a value that is not finite: JSON has no NaN, and a figure
    /// without a run is a benchmark that measured nothing.
    pub(crate) fn runs(mut self, runs: impl IntoIterator<Item = f64>) -> Measurement {
        self.runs = runs.into_iter().collect();
        assert!(
            !self.runs.is_empty() && self.runs.iter().all(|run| run.is_finite()),
            "{} {} {}: runs must be finite and at least one, not {:?}",
            self.scenario,
            self.figure,
            self.series.as_str(),
            self.runs
        );
        self
    }

    /// The median of the runs: the middle value, or the mean of the two middle values when the
    /// number of runs is even.
    pub(crate) fn median(&self) -> f64 {
        median(&self.runs)
    }

    /// The measurement as the results format writes it.
    pub(crate) fn to_json(&self) -> Value {
        assert!(
            !self.runs.is_empty(),
            "{} {} {}: written without runs",
            self.scenario,
            self.figure,
            self.series.as_str()
        );
        json!({
            "area": self.area,
            "scenario": self.scenario,
            "figure": self.figure,
            "unit": self.unit,
            "series": self.series.as_str(),
            "params": self.params,
            "runs": self.runs,
            "median": self.median(),
            "better": self.better.as_str(),
        })
    }
}

/// The median of `values` (the mean of the two middle ones for an even count); NaN when empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[middle],
        _ => f64::midpoint(sorted[middle - 1], sorted[middle]),
    }
}

/// The file of one scenario's measurements: `{"schema": 1, "measurements": [...]}`.
pub(crate) fn document(measurements: &[Measurement]) -> Value {
    json!({
        "schema": SCHEMA,
        "measurements": measurements.iter().map(Measurement::to_json).collect::<Vec<_>>(),
    })
}

/// Where the results go: `bench/` in `$CARGO_TARGET_DIR`, else in `target/`, relative to the
/// package's root (where `cargo bench` runs the programs).
pub(crate) fn directory() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    target.join("bench")
}

/// Writes `measurements` to `target/bench/<scenario>.json`, replacing what an earlier run of the
/// scenario left there, through a temporary file and a rename, so that a reader never sees half
/// a file. Returns the file's path.
pub(crate) fn write(scenario: &str, measurements: &[Measurement]) -> std::io::Result<PathBuf> {
    let dir = directory();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{scenario}.json"));
    let temporary = dir.join(format!(".{scenario}.json.tmp"));
    let mut text = serde_json::to_string_pretty(&document(measurements))?;
    text.push('\n');
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, &path)?;
    Ok(path)
}
