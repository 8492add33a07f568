//! The benchmarks' results format (`benches/support/results.rs`), which `benches/run.sh` merges
//! and the renderer reads: the median of the runs, and a measurement as schema 1 has it. The
//! benchmark programs have no test harness, so the module is checked here.

#[path = "../../benches/support/results.rs"]
#[allow(
    dead_code,
    reason = "the tests check the pure parts, not the writing of files"
)]
mod results;

use results::{Better, Measurement, Series};
use serde_json::json;

#[test]
fn median_of_the_runs() {
    let check = |runs: &[f64], expected: f64| {
        assert_eq!(results::median(runs), expected, "runs {runs:?}");
    };
    check(&[7.0], 7.0);
    check(&[3.0, 1.0, 2.0], 2.0);
    check(&[4.0, 1.0, 3.0, 2.0], 2.5);
    check(&[5.0, 5.0], 5.0);
    assert!(results::median(&[]).is_nan());
}

#[test]
fn a_measurement_keeps_its_runs_in_order_beside_their_median() {
    let measurement = Measurement::new("brain", "brain", "p99", "ms", Better::Lower)
        .series(Series::Original)
        .param("route", "/apply-rules")
        .param("lessons", 10_000)
        .param("clients", 16)
        .runs([3.5, 1.0, 2.25]);
    let target = Measurement::new("startup", "startup", "ready", "ms", Better::Lower)
        .param("rows", 0)
        .series(Series::Target)
        .runs([10.0]);
    assert_eq!(
        results::document(&[measurement, target]),
        json!({
            "schema": 1,
            "measurements": [
                {
                    "area": "brain",
                    "scenario": "brain",
                    "figure": "p99",
                    "unit": "ms",
                    "series": "original",
                    "params": {"route": "/apply-rules", "lessons": 10_000, "clients": 16},
                    "runs": [3.5, 1.0, 2.25],
                    "median": 2.25,
                    "better": "lower",
                },
                {
                    "area": "startup",
                    "scenario": "startup",
                    "figure": "ready",
                    "unit": "ms",
                    "series": "target",
                    "params": {"rows": 0},
                    "runs": [10.0],
                    "median": 10.0,
                    "better": "lower",
                },
            ],
        })
    );
}
