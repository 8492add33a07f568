use super::super::rules::tokens;
use super::*;

fn fired(id: &str, instruction: &str) -> FiredRule {
    FiredRule {
        rule_id: id.to_owned(),
        tokens: tokens(instruction),
    }
}

fn edit<'a>(
    category: &'a str,
    file_path: &'a str,
    old: &'a str,
    new: &'a str,
    session_id: &'a str,
) -> Edit<'a> {
    Edit {
        category,
        file_path,
        old,
        new,
        session_id,
    }
}

#[test]
fn misfired_rules_are_the_fired_rules_of_the_category() {
    let rules = [
        fired("CODE:d5aaa5cd", "CODE: Always add type hints"),
        fired("CONTENT:d58f110f", "CONTENT: Keep notes short"),
        fired("CODE:56a61410", "CODE: Write tests"),
        fired("CODEX:00000000", "CODEX: a prefix is not a category"),
        fired("nocolon", "no category at all"),
    ];
    let (misfired, untested) = split_misfired(&rules, "CODE");
    let ids = |rules: &[FiredRule]| rules.iter().map(|r| r.rule_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&misfired), ["CODE:d5aaa5cd", "CODE:56a61410"]);
    assert_eq!(
        ids(&untested),
        ["CONTENT:d58f110f", "CODEX:00000000", "nocolon"]
    );
}

#[test]
fn additions_by_length_and_order() {
    let table = [
        ("", "0123456789", true),
        ("", "012345678", false),
        ("x = 1", "import os\nx = 1", true),
        ("x = 1", "import o\nx=1", false),
        ("abc", "a--------b--c", true),
        ("abc", "c-----------ba", false),
        ("abc", "", false),
        ("é", "é123456789x", true),
    ];
    for (old, new, expected) in table {
        assert_eq!(is_addition(old, new), expected, "{old:?} -> {new:?}");
    }
}

#[test]
fn fingerprints_by_language_and_kind() {
    let table = [
        ("a.py", "x = 1", "import os\nx = 1", "python", "import"),
        (
            "a.PY",
            "",
            "def load(p: str) -> str:\n    pass",
            "python",
            "return_type",
        ),
        ("a.pyi", "", "count: int = 0", "python", "type_annotation"),
        ("a.py", "", "@cache\ndef f(): pass", "python", "decorator"),
        ("a.py", "", "x = compute()", "python", "other"),
        (
            "notes.md",
            "",
            "- a new list item here",
            "markdown",
            "list_item",
        ),
        (
            "notes.md",
            "",
            "See [the docs](https://x.y)",
            "markdown",
            "link",
        ),
        ("notes.txt", "", "## Heading here", "text", "heading"),
        (
            "notes.rst",
            "",
            "plain words added",
            "restructuredtext",
            "other",
        ),
        ("a.rs", "", "use std::fs;\nfn main() {}", "rust", "import"),
        (
            "a.ts",
            "",
            "// explain why\nlet x = 1;",
            "typescript",
            "comment",
        ),
        (
            "a.js",
            "",
            "try { run(); } finally {}",
            "javascript",
            "error_handling",
        ),
        ("a.go", "", "log.Printf(\"hi\")", "go", "logging"),
        ("a.yaml", "", "key: value", "yaml", "other"),
        ("Makefile", "", "all: build", "unknown", "other"),
    ];
    for (path, old, new, language, kind) in table {
        let found = fingerprint(path, old, new);
        assert_eq!(
            (found.language.as_str(), found.kind),
            (language, kind),
            "{path}: {new:?}"
        );
    }
}

#[test]
fn an_addition_habit_fires_on_the_third_or_across_two_sessions_and_starts_again() {
    let mut trackers = Trackers::default();
    let mut add = |file: &str, new: &str, session: &str| {
        trackers
            .attribute(&[], &edit("CODE", file, "x = 1", new, session))
            .attribution
            .addition_lesson
    };
    // As measured on 0.6.0: a, b, b → the second (two sessions) fires, the third starts
    // a new count.
    assert_eq!(add("a.py", "import os\nx = 1", "a"), None);
    let habit = add("b.py", "import sys\nx = 1", "b").expect("two sessions make a habit");
    assert_eq!(
        serde_json::to_value(&habit).expect("serialises"),
        serde_json::json!({
            "description": "Always include import in python files",
            "category": "python",
            "detection": "addition_pattern",
            "fingerprint": "PYTHON:import"
        })
    );
    assert_eq!(add("c.py", "import json\nx = 1", "b"), None);
    // Three in one session, the empty id counting as one.
    let mut trackers = Trackers::default();
    let mut add = |new: &str| {
        trackers
            .attribute(&[], &edit("CONTENT", "n.md", "", new, ""))
            .attribution
            .addition_lesson
    };
    assert_eq!(add("- a new list item here"), None);
    assert_eq!(add("- another list item"), None);
    assert_eq!(
        add("- third list item x").map(|habit| habit.fingerprint),
        Some("MARKDOWN:list_item".to_owned())
    );
}

#[test]
fn conflicts_count_per_rule_demote_on_the_second_and_kill_from_the_third() {
    let rule = fired(
        "CODE:d5aaa5cd",
        "CODE: Always add type hints to public Python functions",
    );
    let other = fired("CONTENT:d58f110f", "CONTENT: Keep release notes short");
    let mut trackers = Trackers::default();
    let mut correct = |old: &str| {
        trackers
            .attribute(
                &[rule.clone(), other.clone()],
                &edit("CODE", "a.py", old, "x = 1", "s"),
            )
            .attribution
    };
    let first = correct("# add type hints to public python functions\nx = 1");
    assert_eq!(first.misfired_rules, ["CODE:d5aaa5cd"]);
    assert_eq!(
        first.correction_conflict, None,
        "the first conflict is only counted"
    );
    let second = correct("# always add type hints to functions\nx = 1");
    assert_eq!(
        second.correction_conflict,
        Some(CorrectionConflict {
            rule_id: "CODE:d5aaa5cd".to_owned(),
            action: ConflictAction::Demote,
            conflict_count: 2
        })
    );
    // Under 30 % of the rule's eight tokens removed: no conflict, the count stays.
    let unrelated = correct("# public\nx = 1");
    assert_eq!(unrelated.correction_conflict, None);
    let third = correct("# hints for public functions, typed\nx = 1");
    let json = serde_json::to_value(&third).expect("serialises");
    assert_eq!(
        json["correction_conflict"],
        serde_json::json!({"rule_id": "CODE:d5aaa5cd", "action": "kill", "conflict_count": 3})
    );
    let text = serde_json::to_string(&third).expect("serialises");
    let positions: Vec<Option<usize>> = [
        "misfired_rules",
        "accepted_rules",
        "addition_detected",
        "addition_lesson",
        "correction_conflict",
    ]
    .iter()
    .map(|key| text.find(&format!("\"{key}\"")))
    .collect();
    assert!(positions.iter().all(Option::is_some), "{text}");
    assert!(positions.is_sorted(), "0.6.0's key order: {text}");
}

#[test]
fn untested_rules_are_the_other_categories() {
    let mut trackers = Trackers::default();
    let rules = [fired("CODE:1", "CODE: a b"), fired("TONE:2", "TONE: c d")];
    let attributed = trackers.attribute(&rules, &edit("TONE", "", "c d", "e", ""));
    assert_eq!(attributed.attribution.misfired_rules, ["TONE:2"]);
    assert_eq!(attributed.untested, [rules[0].clone()]);
    assert!(!attributed.attribution.addition_detected);
    assert!(attributed.attribution.accepted_rules.is_empty());
}

#[test]
fn trackers_stay_bounded_and_forget_the_oldest() {
    let mut conflicts = ConflictTracker::new(2);
    let rule = |id: &str| fired(id, "CODE: alpha beta");
    for id in ["CODE:1", "CODE:2", "CODE:1", "CODE:3"] {
        conflicts.record(&[rule(id)], "alpha beta", "gamma");
    }
    assert_eq!(conflicts.len(), 2);
    assert_eq!(conflicts.count("CODE:1"), 2, "used last but one, kept");
    assert_eq!(conflicts.count("CODE:2"), 0, "the oldest, forgotten");
    assert_eq!(conflicts.count("CODE:3"), 1);
    let mut additions = AdditionTracker::new(1);
    let print = |kind: &'static str| Fingerprint {
        language: "python".to_owned(),
        kind,
    };
    assert_eq!(additions.record(print("import"), "a"), None);
    assert_eq!(additions.record(print("docstring"), "a"), None);
    assert_eq!(additions.len(), 1);
    assert_eq!(
        additions.record(print("import"), "a"),
        None,
        "its count started again"
    );
}
