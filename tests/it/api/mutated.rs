//! Seeded random mutations of valid bodies for every write route (the queue's retry included),
//! sent to the real binary. The
//! hand-written cases in `api.rs` cover each documented kind of bad input once; these try the
//! combinations nobody thought of: truncated, spliced and byte-flipped JSON, invalid UTF-8, values
//! of the wrong type at any depth, deep nesting, odd strings.
//!
//! Whatever the bytes: the answer is a 2xx, or a 4xx with a JSON `error` and `code`, never a 5xx
//! or a dropped connection; the outbox afterwards holds exactly the events that 2xx answers named;
//! and the service still serves. The seed is fixed, so a failure replays.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::Service;
use crate::support::daemon::{Response, post_bytes};

/// Mutated bodies per valid body.
const CASES_PER_ROUTE: usize = 300;
/// The fixed seed: the same bodies on every run.
const SEED: u64 = 20_261_126;

#[test]
fn mutated_bodies_get_a_2xx_or_a_json_4xx_and_only_2xx_writes() {
    let service = Service::start(|spec| spec);
    let addr = service.addr();
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut acknowledged = BTreeSet::new();
    let mut statuses = BTreeSet::new();
    for case in 0..CASES_PER_ROUTE {
        for (path, valid) in valid_bodies(case) {
            let body = mutate(&mut rng, &valid);
            let response = post_bytes(addr, path, &[], &body);
            let described = || {
                format!(
                    "case {case}, {path}, body {:?}: {response:?}",
                    String::from_utf8_lossy(&body[..body.len().min(400)])
                )
            };
            statuses.insert(response.status);
            match response.status {
                200..=299 => acknowledged.extend(acknowledged_ids(path, &response, &described)),
                400..=499 => {
                    let reason: Value = serde_json::from_str(&response.body)
                        .unwrap_or_else(|_| panic!("a 4xx without a JSON body: {}", described()));
                    for field in ["error", "code"] {
                        assert!(
                            reason[field].as_str().is_some_and(|s| !s.is_empty()),
                            "no {field}: {}",
                            described()
                        );
                    }
                }
                _ => panic!("neither a 2xx nor a 4xx: {}", described()),
            }
        }
    }
    // The mutations reached both sides: some bodies stayed acceptable, most did not.
    assert!(
        statuses.contains(&200) && statuses.contains(&400),
        "{statuses:?}"
    );
    assert!(
        acknowledged.len() > 50,
        "{} acknowledged",
        acknowledged.len()
    );

    let rows = service.rows();
    let stored: BTreeSet<String> = rows
        .iter()
        .map(|row| row.event_id.clone().unwrap())
        .collect();
    assert_eq!(stored.len(), rows.len(), "an event_id stored twice");
    assert_eq!(
        stored, acknowledged,
        "the outbox is not what the 2xx answers named"
    );
    assert_eq!(service.health()["queue"]["pending"], rows.len());
}

/// The event ids a 2xx answer names, checked against the route's documented answer.
fn acknowledged_ids(
    path: &str,
    response: &Response,
    described: &dyn Fn() -> String,
) -> Vec<String> {
    let answer: Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|_| panic!("a 2xx without a JSON body: {}", described()));
    let id = |answer: &Value| {
        answer["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no event_id: {}", described()))
            .to_owned()
    };
    match path {
        "/v1/events" => {
            let ids: Vec<String> = answer["event_ids"]
                .as_array()
                .unwrap_or_else(|| panic!("no event_ids: {}", described()))
                .iter()
                .map(|id| id.as_str().unwrap().to_owned())
                .collect();
            let counted =
                answer["accepted"].as_u64().unwrap() + answer["duplicates"].as_u64().unwrap();
            assert_eq!(counted, ids.len() as u64, "{}", described());
            ids
        }
        // No change between the strings: nothing captured, as the original answers.
        "/correct" if answer["captured"] == false => {
            assert_eq!(answer["error"], "no change", "{}", described());
            Vec::new()
        }
        "/correct" => {
            assert_eq!(answer["captured"], true, "{}", described());
            vec![id(&answer)]
        }
        "/log-event" => {
            assert_eq!(answer["logged"], true, "{}", described());
            vec![id(&answer)]
        }
        "/checkpoint" => {
            assert_eq!(answer["checkpointed"], true, "{}", described());
            vec![id(&answer)]
        }
        // Nothing is dead here; a retry by id only makes pending rows due now. Either way it
        // writes no row.
        "/v1/queue/retry" => {
            assert!(answer["retried"].is_u64(), "{}", described());
            Vec::new()
        }
        other => panic!("no such route in this test: {other}"),
    }
}

/// One valid body for each write route; `case` makes their event ids unique.
fn valid_bodies(case: usize) -> [(&'static str, Value); 7] {
    let correction = json!({
        "old_string": "let x = 1;",
        "new_string": "let x = 2;",
        "file_path": "src/main.rs",
        "session_id": "session-1",
    });
    [
        (
            "/v1/events",
            json!({"kind": "correction", "event_id": format!("one-{case}"), "data": correction}),
        ),
        (
            "/v1/events",
            json!([
                {"kind": "lesson", "event_id": format!("batch-{case}-a"), "data": {"text": "é ✓"}},
                {"kind": "event", "data": {"n": case, "list": [1, 2.5, null, true]}},
                {"kind": "event", "event_id": format!("batch-{case}-c"), "data": {}},
            ]),
        ),
        (
            "/correct",
            json!({
                "old_string": "fn main() {}",
                "new_string": "fn main() { run(); }",
                "file_path": "src/main.rs",
                "session_id": "session-1",
                "event_id": format!("correct-{case}"),
            }),
        ),
        (
            "/log-event",
            json!({
                "event_type": "TOOL_USE",
                "data": {"tool": "edit", "ok": true},
                "session_id": "session-1",
                "event_id": format!("log-{case}"),
            }),
        ),
        (
            "/checkpoint",
            json!({"session_id": "session-1", "reason": "compact", "event_id": format!("cp-{case}")}),
        ),
        ("/v1/queue/retry", json!({"ids": [1, case, 1_000_000]})),
        ("/v1/queue/retry", json!({"all_dead": true})),
    ]
}

/// A mutation of `valid`: of its JSON tree half the time, of its bytes otherwise.
fn mutate(rng: &mut StdRng, valid: &Value) -> Vec<u8> {
    if rng.gen_bool(0.5) {
        let mut value = valid.clone();
        mutate_tree(rng, &mut value);
        return value.to_string().into_bytes();
    }
    let mut bytes = valid.to_string().into_bytes();
    for _ in 0..rng.gen_range(1..=3) {
        mutate_bytes(rng, &mut bytes);
    }
    bytes
}

/// Replaces a node anywhere in the tree with a random value, or removes a key.
fn mutate_tree(rng: &mut StdRng, value: &mut Value) {
    let mut pointers = Vec::new();
    collect_pointers(value, String::new(), &mut pointers);
    let pointer = pointers.choose(rng).cloned().unwrap_or_default();
    if rng.gen_bool(0.25) {
        if let Some((parent, key)) = pointer.rsplit_once('/') {
            if let Some(Value::Object(object)) = value.pointer_mut(parent) {
                object.remove(key);
                return;
            }
        }
    }
    let replacement = random_value(rng, 3);
    match value.pointer_mut(&pointer) {
        Some(node) => *node = replacement,
        None => *value = replacement,
    }
}

/// The JSON pointer of every node under `value` (keys here never need escaping).
fn collect_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, child) in object {
                collect_pointers(child, format!("{at}/{key}"), out);
            }
        }
        Value::Array(array) => {
            for (index, child) in array.iter().enumerate() {
                collect_pointers(child, format!("{at}/{index}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..9) {
        0 => Value::Null,
        1 => Value::Bool(rng.r#gen()),
        2 => json!(rng.gen_range(i64::MIN..=i64::MAX)),
        3 => match rng.gen_range(0..4) {
            0 => json!(u64::MAX),
            1 => json!(-0.0),
            2 => json!(1e300),
            _ => json!(f64::MIN_POSITIVE),
        },
        4 | 5 => Value::String(random_string(rng)),
        6 if depth > 0 => Value::Array(
            (0..rng.gen_range(0..4))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        7 if depth > 0 => Value::Object(
            (0..rng.gen_range(0..4))
                .map(|_| (random_string(rng), random_value(rng, depth - 1)))
                .collect(),
        ),
        _ => {
            // Nesting, sometimes past what the service accepts.
            let mut nested = json!(1);
            for _ in 0..rng.gen_range(1..200) {
                nested = json!([nested]);
            }
            nested
        }
    }
}

/// Strings a person would not type: empty, control characters, non-Latin scripts, astral
/// characters, JSON-significant characters, or long.
fn random_string(rng: &mut StdRng) -> String {
    const PIECES: [&str; 12] = [
        "", "a", " ", "\u{0}", "\u{1f}", "\u{7f}", "é", "日本", "🦀", "\"", "\\", "\u{feff}",
    ];
    match rng.gen_range(0..4) {
        0 => String::new(),
        1 => "x".repeat(rng.gen_range(1..5000)),
        _ => (0..rng.gen_range(1..12))
            .map(|_| *PIECES.choose(rng).unwrap_or(&""))
            .collect(),
    }
}

/// Truncates, deletes, duplicates, flips or inserts bytes, JSON-significant ones included.
fn mutate_bytes(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    const INSERTS: [&[u8]; 12] = [
        b"{", b"}", b"[", b"]", b"\"", b",", b":", b"\\", b"null", b"-1e999", b"\\ud800", b"\xff",
    ];
    let insert = INSERTS[rng.gen_range(0..INSERTS.len())];
    if bytes.is_empty() {
        bytes.extend_from_slice(insert);
        return;
    }
    let at = rng.gen_range(0..bytes.len());
    match rng.gen_range(0..5) {
        0 => bytes.truncate(at),
        1 => {
            let end = rng.gen_range(at..=bytes.len());
            bytes.drain(at..end);
        }
        2 => {
            let end = rng.gen_range(at..=bytes.len().min(at + 40));
            let span = bytes[at..end].to_vec();
            bytes.splice(at..at, span);
        }
        3 => bytes[at] = rng.r#gen(),
        _ => {
            bytes.splice(at..at, insert.iter().copied());
        }
    }
}
