//! The decisions of 0.6.0 on recorded `/correct` sequences (see the fixture's `about`),
//! replayed through `instruction::extract`, `learn` and the attribution trackers.

use std::collections::HashMap;

use serde::Deserialize;

use super::super::attribution::{Edit, Trackers};
use super::super::category::Category;
use super::super::lessons::parse;
use super::super::rules::{FiredRule, tokens};
use super::*;

const FIXTURE: &str = include_str!("../testdata/correct_decisions_0_6_0.json");

#[derive(Deserialize)]
struct Fixture {
    scenarios: Vec<Scenario>,
}

#[derive(Deserialize)]
struct Scenario {
    name: String,
    lessons: String,
    steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Step {
    Apply {
        apply: Apply,
    },
    Correct {
        correct: Request,
        expected: Box<Expected>,
    },
}

#[derive(Deserialize)]
struct Apply {
    session_id: String,
    fired: Vec<Fired>,
}

#[derive(Deserialize)]
struct Fired {
    rule_id: String,
    instruction: String,
}

#[derive(Deserialize)]
struct Request {
    file_path: String,
    old: String,
    new: String,
    session_id: String,
}

#[derive(Deserialize)]
struct Expected {
    action: String,
    index: usize,
    category: String,
    state: String,
    misfired_rules: Vec<String>,
    addition_detected: bool,
    addition_fingerprint: Option<String>,
    correction_conflict: Option<serde_json::Value>,
    python_description_after: Option<String>,
}

/// What one replayed correction did here, next to what 0.6.0 did.
#[derive(Debug, PartialEq)]
struct Decision {
    action: &'static str,
    index: usize,
    category: String,
    misfired_rules: Vec<String>,
    addition_detected: bool,
    addition_fingerprint: Option<String>,
    correction_conflict: Option<serde_json::Value>,
}

/// One replayed correction.
struct Row {
    /// Scenario, step and our instruction, for messages.
    label: String,
    ours: Decision,
    theirs: Decision,
    /// The state of the lesson 0.6.0 reinforced, before the step (INSTINCT when created).
    state: String,
    /// Where 0.6.0 rewrote the reinforced lesson: its text after the step here, and there.
    rewritten: Option<(String, String)>,
}

/// Replays every scenario.
fn replay() -> Vec<Row> {
    let fixture: Fixture = serde_json::from_str(FIXTURE).expect("the fixture is valid JSON");
    let mut rows = Vec::new();
    for scenario in fixture.scenarios {
        let parsed = parse(&scenario.lessons);
        assert_eq!(parsed.problems, [], "{}: the brain parses", scenario.name);
        let mut lessons = parsed.lessons;
        let mut fired: HashMap<String, Vec<FiredRule>> = HashMap::new();
        let mut trackers = Trackers::default();
        for (n, step) in scenario.steps.into_iter().enumerate() {
            let (request, expected) = match step {
                Step::Apply { apply } => {
                    let rules = apply
                        .fired
                        .into_iter()
                        .map(|rule| FiredRule {
                            tokens: tokens(&rule.instruction),
                            rule_id: rule.rule_id,
                        })
                        .collect();
                    fired.insert(apply.session_id, rules);
                    continue;
                }
                Step::Correct { correct, expected } => (correct, *expected),
            };
            let category = Category::of(&request.file_path).as_str();
            let session_fired = fired.remove(&request.session_id).unwrap_or_default();
            let attributed = trackers.attribute(
                &session_fired,
                &Edit {
                    category,
                    file_path: &request.file_path,
                    old: &request.old,
                    new: &request.new,
                    session_id: &request.session_id,
                },
            );
            fired.insert(request.session_id.clone(), attributed.untested);
            let instruction = instruction::extract(&request.old, &request.new);
            let correction_id = format!("{n}");
            let learned = learn(
                &lessons,
                &Correction {
                    category,
                    severity: "major",
                    instruction: &instruction.text,
                    correction_id: &correction_id,
                    session: None,
                    date: "2026-04-01",
                    approval_required: false,
                },
            );
            let (action, index) = match &learned {
                Learned::Created(_) => ("created", lessons.len()),
                Learned::Reinforced { index, .. } => ("reinforced", *index),
            };
            learned.apply(&mut lessons);
            let attribution = attributed.attribution;
            let ours = Decision {
                action,
                index,
                category: lessons[index].category.clone(),
                misfired_rules: attribution.misfired_rules,
                addition_detected: attribution.addition_detected,
                addition_fingerprint: attribution.addition_lesson.map(|lesson| lesson.fingerprint),
                correction_conflict: attribution
                    .correction_conflict
                    .map(|conflict| serde_json::to_value(conflict).expect("serialises")),
            };
            let theirs = Decision {
                action: if expected.action == "created" {
                    "created"
                } else {
                    "reinforced"
                },
                index: expected.index,
                category: expected.category,
                misfired_rules: expected.misfired_rules,
                addition_detected: expected.addition_detected,
                addition_fingerprint: expected.addition_fingerprint,
                correction_conflict: expected.correction_conflict,
            };
            let rewritten = expected
                .python_description_after
                .map(|python| (lessons[index].description.clone(), python));
            let label = format!(
                "{} step {n}: {:?} ({})",
                scenario.name, instruction.text, request.file_path
            );
            rows.push(Row {
                label,
                ours,
                theirs,
                state: expected.state,
                rewritten,
            });
        }
    }
    rows
}

#[test]
fn create_or_reinforce_and_attribution_match_0_6_0() {
    let rows = replay();
    assert!(
        rows.len() >= 25,
        "the fixture holds {} corrections",
        rows.len()
    );
    for row in &rows {
        assert_eq!(row.ours, row.theirs, "{}", row.label);
        // New lessons start as INSTINCT in both.
        if row.ours.action == "created" {
            assert_eq!(row.state, "INSTINCT", "{}", row.label);
        }
    }
}

#[test]
fn regression_13_6_rule_text_kept_where_0_6_0_rewrote_it() {
    // Where 0.6.0 replaced a reinforced lesson's text, show both: a RULE keeps its text
    // here; other lessons take the longer instruction, as in 0.6.0 (with our wording).
    let rows = replay();
    let mut rules_kept = 0;
    for row in &rows {
        let Some((here, python)) = &row.rewritten else {
            continue;
        };
        if row.state == "RULE" {
            assert_ne!(here, python, "{}: 0.6.0 rewrote the RULE", row.label);
            rules_kept += 1;
        }
        assert_eq!(row.ours.action, "reinforced", "{}", row.label);
    }
    assert!(rules_kept >= 2, "the fixture has RULEs that 0.6.0 rewrote");
    let rule_rows: Vec<_> = rows
        .iter()
        .filter(|row| row.label.starts_with("rule_text"))
        .collect();
    assert_eq!(
        rule_rows.first().and_then(|row| row.rewritten.clone()),
        Some((
            "Always add type hints to public Python functions".to_owned(),
            "always add type hints to every public Python function you write".to_owned()
        ))
    );
}
