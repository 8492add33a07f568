//! The `convergence` object against the one 0.6.0 computed over the same events.

use super::{Correction, convergence};
use crate::brain::pyjson::{self, Ascii};

/// Convergence (§9) over CORRECTION events measured on 0.6.0 (its `brain_convergence` over a
/// `system.db` holding them): the same object, to the byte of its JSON text.
#[test]
fn convergence_matches_0_6_0() {
    let table = include_str!("../../../../tests/data/convergence-0.6.0.jsonl");
    let mut cases = 0;
    for line in table.lines() {
        let case: serde_json::Value = serde_json::from_str(line).expect("json line");
        let rows: Vec<Correction> = case["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| Correction {
                session: row[0].as_i64().expect("session"),
                category: row[1].as_str().map(str::to_owned),
                edit_distance: row[2].as_f64(),
            })
            .collect();
        // Read again, keeping the key order 0.6.0 wrote.
        let ordered = pyjson::from_str(line).expect("json line");
        let expected = &ordered.as_object().expect("object")["convergence"];
        let expected = pyjson::to_string(expected, Ascii::Escape).expect("text");
        let got = pyjson::to_string(&convergence(&rows), Ascii::Escape).expect("text");
        assert_eq!(got, expected, "{} rows", rows.len());
        cases += 1;
    }
    assert_eq!(cases, 13);
}
