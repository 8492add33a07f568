//! The benchmark page renderer (`benches/report.rs`, issue 25), tested here because a
//! `harness = false` bench holds no tests: its modules are compiled into this crate as they are.
//!
//! `renders_the_sample` renders `benches/testdata/results-sample.json` (which covers every plot
//! kind) into a temporary directory and checks the page's parts and the plots; the others check
//! the headline's matching and verdicts, and what a results file without plot data gives.

#[path = "../../benches/report/charts.rs"]
mod charts;
#[path = "../../benches/report/draw.rs"]
mod draw;
#[path = "../../benches/report/notes.rs"]
mod notes;
#[path = "../../benches/report/page.rs"]
mod page;
#[path = "../../benches/report/render.rs"]
mod render;
#[path = "../../benches/report/results.rs"]
mod results;

use std::path::Path;

use page::Verdict;
use results::Results;

fn sample() -> Results {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/testdata/results-sample.json");
    Results::load(&path).unwrap()
}

/// The plots the sample must give: every kind, split as `charts.rs` says.
const SAMPLE_PLOTS: &[&str] = &[
    "drain-throughput.svg",
    "drain-time.svg",
    "capture-throughput-batch-1.svg",
    "capture-throughput-batch-100.svg",
    "capture-p99-batch-1.svg",
    "capture-p99-batch-100.svg",
    "rss-drain-backlog.svg",
    "rss-soak-soak.svg",
    "startup-ready.svg",
    "brain-routes.svg",
];

#[test]
fn renders_the_sample() {
    let results = sample();
    let dir = tempfile::tempdir().unwrap();
    let page_path = dir.path().join("page.md");
    // A plot left by an earlier rendering that this one does not draw must go.
    std::fs::create_dir_all(dir.path().join("bench")).unwrap();
    std::fs::write(dir.path().join("bench/old.svg"), "<svg/>").unwrap();

    let rendered = render::render(&results, &page_path).unwrap();
    assert_eq!(rendered.page, page_path);
    assert!(
        rendered.skipped.is_empty(),
        "skipped: {:?}",
        rendered.skipped
    );
    assert!(!dir.path().join("bench/old.svg").exists());

    let page = std::fs::read_to_string(&page_path).unwrap();
    assert!(page.starts_with(page::GENERATED), "{}", &page[..200]);
    assert!(page.contains("Commit `7c1ee62`"));
    assert!(page.contains("2 CPUs"));
    assert!(page.contains(
        "| figure | gradata | limit | original | gradata / limit | gradata / original | target | met? |"
    ));
    let headline = page
        .split("## Headline figures")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    assert!(headline.contains("**not met**"), "{headline}");
    assert!(headline.contains("| met |"), "{headline}");

    // One section per area, in page order.
    let mut at = 0;
    for area in notes::AREAS {
        let heading = format!("\n## {}\n", area.title);
        let found = page[at..]
            .find(&heading)
            .unwrap_or_else(|| panic!("no section {heading:?} after byte {at}"));
        at += found + heading.len();
        let section = page[at..].split("\n## ").next().unwrap();
        assert!(
            section.contains("Command: `benches/run.sh --only "),
            "{section}"
        );
        assert!(section.contains("**Method.** "), "{section}");
        assert!(
            section.contains("**What limits the figure.** "),
            "{section}"
        );
        assert!(section.contains("| scenario | figure | params | series | median | runs |"));
    }

    // Every plot drawn, referenced from the page, and an SVG with its lines or bars.
    let mut drawn: Vec<String> = rendered
        .plots
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    drawn.sort();
    let mut expected: Vec<String> = SAMPLE_PLOTS.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(drawn, expected);
    for file in SAMPLE_PLOTS {
        assert!(
            page.contains(&format!("](bench/{file})")),
            "{file} not on the page"
        );
        let svg = std::fs::read_to_string(dir.path().join("bench").join(file)).unwrap();
        assert!(
            svg.starts_with("<svg"),
            "{file}: {}",
            &svg[..svg.len().min(80)]
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{file}");
        assert!(
            svg.contains("<polyline") || svg.contains("<rect"),
            "{file} has no data drawn"
        );
        assert!(svg.contains("gradata"), "{file} has no gradata legend");
    }
    let drain = std::fs::read_to_string(dir.path().join("bench/drain-throughput.svg")).unwrap();
    for label in ["original", "limit", "1k", "1M"] {
        assert!(drain.contains(label), "drain plot lacks {label}");
    }
    // A time series is one row per series in the tables, not one per sample.
    assert!(page.contains("| soak | rss over time |"));
    assert_eq!(page.matches("t_s=").count(), 0);
}

#[test]
fn headline_matches_series_and_judges_targets() {
    // (the results' measurements; the expected rows: gradata, limit, original, the two ratios
    // and the target; their verdicts)
    let check = |measurements: &str, expected: &[[&str; 6]], verdicts: &[Verdict]| {
        let text = format!(r#"{{"schema": 1, "measurements": [{measurements}]}}"#);
        let results = Results::parse(&text).unwrap();
        let groups = page::groups(&results.measurements);
        let rows = page::headline(&groups);
        let got: Vec<[&str; 6]> = rows
            .iter()
            .map(|r| {
                [
                    r.gradata.as_str(),
                    r.limit.as_str(),
                    r.original.as_str(),
                    r.to_limit.as_str(),
                    r.to_original.as_str(),
                    r.target.as_str(),
                ]
            })
            .collect();
        let expected: Vec<[&str; 6]> = expected.to_vec();
        assert_eq!(got, expected, "{measurements}");
        let got: Vec<Verdict> = rows.iter().map(|r| r.verdict).collect();
        assert_eq!(got, verdicts, "{measurements}");
    };
    let m = |series: &str, params: &str, median: f64| {
        format!(
            r#"{{"area": "capture", "scenario": "capture", "figure": "throughput", "unit": "events/s",
                "series": "{series}", "params": {params}, "runs": [{median}], "median": {median},
                "better": "higher"}}"#
        )
    };
    let t = |unit: &str, params: &str, value: f64| {
        format!(
            r#"{{"area": "capture", "scenario": "capture", "figure": "throughput", "unit": "{unit}",
                "series": "target", "params": {params}, "runs": [{value}], "better": "higher"}}"#
        )
    };
    let p64 = r#"{"clients": 64, "batch": 1}"#;
    // Params match whatever their order and whether a whole number is written with a fraction.
    let p64_other = r#"{"batch": 1.0, "clients": 64}"#;
    let p16 = r#"{"clients": 16, "batch": 1}"#;

    // A ratio target to the limit, missed; a ratio to the original, met; one absolute, met.
    check(
        &[
            m("gradata", p64, 41600.0),
            m("limit", p64_other, 84100.0),
            m("original", p64, 780.0),
            t("x limit", p64, 0.6),
            t("× original", p64_other, 50.0),
            t("events/s", p64, 20000.0),
        ]
        .join(","),
        &[
            [
                "41,600 events/s",
                "84,100 events/s",
                "780 events/s",
                "0.49×",
                "53.3×",
                "≥ 0.60× limit",
            ],
            [
                "41,600 events/s",
                "84,100 events/s",
                "780 events/s",
                "0.49×",
                "53.3×",
                "≥ 50.0× original",
            ],
            [
                "41,600 events/s",
                "84,100 events/s",
                "780 events/s",
                "0.49×",
                "53.3×",
                "≥ 20,000 events/s",
            ],
        ],
        &[Verdict::NotMet, Verdict::Met, Verdict::Met],
    );
    // Other params do not match: the limit at 16 clients is not the limit at 64, so a ratio
    // target cannot be judged; a group without a target is no headline.
    check(
        &[
            m("gradata", p64, 41600.0),
            m("limit", p16, 79000.0),
            t("x limit", p64, 0.6),
            m("gradata", p16, 33800.0),
        ]
        .join(","),
        &[["41,600 events/s", "–", "–", "–", "–", "≥ 0.60× limit"]],
        &[Verdict::Unknown],
    );
}

#[test]
fn results_without_plot_data_skip_every_plot() {
    let text = r#"{"schema": 1, "commit": "abc1234", "quick": true, "measurements": [
        {"area": "memory", "scenario": "idle", "figure": "rss", "unit": "MiB", "series": "gradata",
         "params": {}, "runs": [8.6, 8.7, 8.9], "better": "lower"}]}"#;
    let results = Results::parse(text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page_path = dir.path().join("page.md");
    let rendered = render::render(&results, &page_path).unwrap();
    assert!(rendered.plots.is_empty());
    assert_eq!(rendered.skipped.len(), 7, "{:?}", rendered.skipped);
    let page = std::fs::read_to_string(&page_path).unwrap();
    assert!(page.contains("This was a quick run"));
    assert!(page.contains("This results file holds no targets."));
    assert!(page.contains("skipped for want of data"));
    // The median is taken from the runs when the file gives none.
    assert!(page.contains("| idle | rss |  | gradata | 8.70 MiB | 8.60, 8.70, 8.90 |"));
    assert!(page.contains("\n## Memory: idle and under large bodies\n"));
    assert!(!page.contains("\n## Capture"));

    let wrong = Results::parse(r#"{"schema": 2, "measurements": []}"#).unwrap_err();
    assert!(wrong.to_string().contains("schema 2"), "{wrong}");
}

#[test]
fn capture_plots_keep_curves_and_leave_room_for_the_legend() {
    let point = |series: &str, route: &str, clients: u32, value: f64| {
        format!(
            r#"{{"area": "capture", "scenario": "api", "figure": "throughput", "unit": "events/s",
                "series": "{series}", "params": {{"route": "{route}", "batch": 1, "clients": {clients}}},
                "runs": [{value}], "better": "higher"}}"#
        )
    };
    let measurements = [
        point("gradata", "/v1/events", 16, 30_000.0),
        point("gradata", "/v1/events", 64, 40_000.0),
        point("limit", "/v1/events", 16, 60_000.0),
        point("limit", "/v1/events", 64, 70_000.0),
        // Measured at one concurrency only: a figure of the tables, not a curve.
        point("limit", "/correct", 64, 65_000.0),
    ];
    let text = format!(
        r#"{{"schema": 1, "commit": "abc1234", "quick": true, "measurements": [{}]}}"#,
        measurements.join(",")
    );
    let results = Results::parse(&text).unwrap();
    let plan = charts::plan(&results);
    let chart = plan
        .charts
        .iter()
        .find(|chart| chart.file == "capture-throughput-batch-1.svg")
        .unwrap();
    let names: Vec<&str> = chart.lines.iter().map(|line| line.name.as_str()).collect();
    assert_eq!(
        names,
        ["gradata, route=/v1/events", "limit, route=/v1/events"]
    );

    // The legend sits in the upper right: the highest point must lie below it, in the lower part
    // of the plot (the SVG's y grows downwards, so its circles' y must be large).
    let svg = draw::svg(chart).unwrap();
    let top_of_data = svg
        .split("<circle")
        .skip(1)
        .filter_map(|circle| {
            let cy = circle.split("cy=\"").nth(1)?;
            cy.split('"').next()?.parse::<f64>().ok()
        })
        .fold(f64::INFINITY, f64::min);
    assert!(top_of_data.is_finite(), "no points drawn");
    assert!(
        top_of_data > 480.0 * 0.3,
        "a point at y = {top_of_data} reaches the legend"
    );
}

#[test]
fn the_headline_shows_its_figures_and_each_section_judges_its_own() {
    let text = r#"{"schema": 1, "commit": "abc1234", "quick": false, "measurements": [
        {"area": "capture", "scenario": "api", "figure": "throughput", "unit": "events/s",
         "series": "gradata", "params": {"route": "/v1/events", "batch": 1, "clients": 64},
         "runs": [50000], "better": "higher"},
        {"area": "capture", "scenario": "api", "figure": "throughput", "unit": "events/s",
         "series": "target", "params": {"route": "/v1/events", "batch": 1, "clients": 64},
         "runs": [60000], "better": "higher"},
        {"area": "soak", "scenario": "soak", "figure": "descriptor growth", "unit": "descriptors",
         "series": "gradata", "params": {}, "runs": [3], "better": "lower"},
        {"area": "soak", "scenario": "soak", "figure": "descriptor growth", "unit": "descriptors",
         "series": "target", "params": {}, "runs": [48], "better": "lower"}]}"#;
    let results = Results::parse(text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let page_path = dir.path().join("page.md");
    render::render(&results, &page_path).unwrap();
    let page = std::fs::read_to_string(&page_path).unwrap();
    let headline = page.split("## Headline figures").nth(1).unwrap();
    let headline = headline.split("\n## ").next().unwrap();
    assert!(headline.contains("capture api: throughput"), "{headline}");
    assert!(!headline.contains("descriptor growth |"), "{headline}");
    assert!(
        headline.contains(
            "Targets in all: 2, 1 met, 1 not met (capture api: throughput (batch=1, clients=64, route=/v1/events))."
        ),
        "{headline}"
    );
    let soak = page.split("\n## Soak").nth(1).unwrap();
    assert!(soak.contains("Targets:\n\n| figure |"), "{soak}");
    assert!(
        soak.contains("| soak: descriptor growth | 3.00 descriptors |"),
        "{soak}"
    );
}
