use super::super::lessons::parse;
use super::*;

fn book(text: &str) -> RuleBook {
    let parsed = parse(text);
    assert_eq!(parsed.problems, [], "the fixture parses cleanly");
    RuleBook::new(&parsed.lessons)
}

fn request<'a>(prompt: &'a str, task_type: &'a str) -> Request<'a> {
    Request {
        prompt,
        task_type,
        agent_type: DEFAULT_AGENT_TYPE,
    }
}

/// (rule id, tier, relevance) of each applied rule, in order.
fn summary(applied: &Applied) -> Vec<(&str, State, f64)> {
    applied
        .rules
        .iter()
        .map(|rule| (rule.rule_id.as_str(), rule.tier, rule.relevance))
        .collect()
}

const SCOPED: &str = r#"[2026-04-02] [RULE:0.5] A: wildcard
[2026-04-02] [RULE:0.5] B: task code
  Scope: {"task_type": "code"}
[2026-04-02] [RULE:0.5] C: task code audience x
  Scope: {"task_type": "code", "audience": "x"}
[2026-04-02] [RULE:0.5] D: task email agent general
  Scope: {"task_type": "email", "agent_type": "general"}
[2026-04-02] [RULE:0.5] E: agent general
  Scope: {"agent_type": "general"}
[2026-04-02] [RULE:0.5] F: stakes normal, max idle 0, correction scope
  Scope: {"stakes": "normal", "max_idle_sessions": 0, "correction_scope": "x"}
[2026-04-02] [RULE:0.5] G: max idle 5
  Scope: {"max_idle_sessions": 5}
[2026-04-02] [PATTERN:0.5] H: bad json
  Scope: {bad
[2026-04-02] [PATTERN:0.5] I: task code agent general domain d
  Scope: {"task_type": "code", "agent_type": "general", "domain": "d"}
[2026-04-02] [PATTERN:0.5] J: list scope
  Scope: [1]
[2026-04-02] [PATTERN:0.5] K: null agent
  Scope: {"agent_type": null}
"#;

#[test]
fn scoped_lessons_rank_with_0_6_0_relevance_to_the_bit() {
    // Both tables are 0.6.0's answers for this brain.
    let book = book(SCOPED);
    let named = book.apply(&request("", "code"));
    assert_eq!(
        summary(&named),
        [
            ("B:b261bcda", State::Rule, 1.1),
            ("A:56ee1bcb", State::Rule, 0.8800000000000001),
            ("E:4726e0b7", State::Rule, 0.8800000000000001),
            ("F:7c922637", State::Rule, 0.8800000000000001),
            ("C:9096e665", State::Rule, 0.8250000000000001),
            ("D:16b4dfc1", State::Rule, 0.55),
            ("I:da3ff906", State::Pattern, 1.1),
            ("H:c1b0b09c", State::Pattern, 0.8800000000000001),
            ("J:a9f2b5bf", State::Pattern, 0.8800000000000001),
        ]
    );
    // Guessed from the prompt: the task is code and the agent type is reset to "", so the
    // lessons scoped to the "general" agent lose their match.
    let guessed = book.apply(&request("please write the code", ""));
    assert_eq!(
        summary(&guessed),
        [
            ("B:b261bcda", State::Rule, 1.1),
            ("A:56ee1bcb", State::Rule, 0.8800000000000001),
            ("F:7c922637", State::Rule, 0.8800000000000001),
            ("C:9096e665", State::Rule, 0.8250000000000001),
            ("H:c1b0b09c", State::Pattern, 0.8800000000000001),
            ("J:a9f2b5bf", State::Pattern, 0.8800000000000001),
            ("I:da3ff906", State::Pattern, 0.55),
        ]
    );
    let rule = &named.rules[0];
    assert_eq!(
        (rule.category.as_str(), rule.instruction.as_str()),
        ("B", "B: task code")
    );
}

#[test]
fn scope_defaults_compare_as_python_does() {
    // 0.6.0 kept exactly S2, S4 and S5 of these for task_type "code".
    let book = book(
        r#"[2026-04-02] [RULE:0.5] S1: stakes empty
  Scope: {"stakes": ""}
[2026-04-02] [RULE:0.5] S2: temporal empty
  Scope: {"temporal_relevance": ""}
[2026-04-02] [RULE:0.5] S3: temporal zero
  Scope: {"temporal_relevance": 0}
[2026-04-02] [RULE:0.5] S4: created false
  Scope: {"created_session": false}
[2026-04-02] [RULE:0.5] S5: created 0.0
  Scope: {"created_session": 0.0}
[2026-04-02] [RULE:0.5] S6: namespace 0
  Scope: {"namespace": 0}
[2026-04-02] [RULE:0.5] S7: created "0"
  Scope: {"created_session": "0"}
[2026-04-02] [RULE:0.5] S8: task_type number
  Scope: {"task_type": 5}
[2026-04-02] [RULE:0.5] S9: stakes high
  Scope: {"stakes": "high"}
"#,
    );
    let applied = book.apply(&request("", "code"));
    let ids: Vec<&str> = applied.rules.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(ids, ["S2:1758ecbd", "S4:8245c190", "S5:4ba25b5b"]);
}

#[test]
fn near_duplicates_are_dropped_and_categories_merged() {
    // The rules are 0.6.0's answer for this brain; its injection text had the same lines,
    // in a random order.
    let book = book(
        "[2026-04-02] [RULE:0.6] TONE: Never use em dashes in emails\n\
             [2026-04-02] [RULE:0.6] TONE: never use em dashes in client emails\n\
             [2026-04-02] [RULE:0.6] X: one..\n\
             [2026-04-02] [PATTERN:0.9] X: two.\n\
             [2026-04-02] [RULE:0.5] X: three\n\
             [2026-04-02] [RULE:0.5] E: Root cause: nothing\n\
             [2026-04-02] [RULE:0.5] E: something else\n\
             [2026-04-02] [RULE:0.5] Y: a b c d e f g\n\
             [2026-04-02] [RULE:0.5] Y: a b c d e f x\n\
             [2026-04-02] [RULE:0.5] Z: lone.\n",
    );
    let applied = book.apply(&request("", ""));
    let ids: Vec<&str> = applied.rules.iter().map(|r| r.rule_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "TONE:d5432e03",
            "TONE:803edd58",
            "X:3e997fbf",
            "X:f9c5b2db",
            "E:ea2a06b5",
            "E:b9808976",
            "Y:1419a97d",
            "Y:4b8ff5fd",
            "Z:843640f5",
            "X:671dfe8e",
        ]
    );
    assert_eq!(applied.rules[4].instruction, "E: ");
    // X's merged line (a RULE at 0.6 with a PATTERN at 0.9) is a RULE line, as in 0.6.0.
    assert_eq!(
        applied.injection_text,
        "<brain-rules>\n\
             - TONE: Never use em dashes in emails\n\
             - X: one. three. two.\n\
             - E: . something else.\n\
             - Y: a b c d e f g\n\
             - Z: lone.\n\
             </brain-rules>"
    );
    let fired: Vec<&str> = applied.fired.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(fired, ids);
}

#[test]
fn injection_text_puts_rules_before_patterns_in_ranked_order() {
    let book = book(
        "[2026-04-02] [PATTERN:0.9] P: pattern first in the file\n\
             [2026-04-02] [RULE:0.5] R: a rule\n\
             [2026-04-02] [RULE:0.4] S: another rule\n\
             [2026-04-02] [PATTERN:0.8] Q: a second pattern\n",
    );
    let applied = book.apply(&request("", ""));
    assert_eq!(
        applied.injection_text,
        "<brain-rules>\n- R: a rule\n- S: another rule\n- P: pattern first in the file\n\
             - Q: a second pattern\n</brain-rules>"
    );
}

#[test]
fn an_empty_brain_applies_nothing() {
    for text in [
        "",
        "# only a heading\n",
        "[2026-04-02] [INSTINCT] C: not eligible\n",
    ] {
        let applied = book(text).apply(&request("fix the bug", ""));
        assert_eq!(
            applied,
            Applied {
                rules: vec![],
                injection_text: String::new(),
                fired: vec![],
            },
            "{text:?}"
        );
    }
}

fn rules_text(n_rules: usize, idle_first: u64) -> String {
    let mut text = String::new();
    for n in 0..n_rules {
        // Decreasing confidence, so the ranked order is the file order.
        text.push_str(&format!(
            "[2026-04-02] [RULE:0.{:02}] R{n}: rule {n}\n",
            90 - n
        ));
        if n == 0 {
            text.push_str(&format!(
                "  Fire count: 0 | Sessions since fire: {idle_first} | Misfires: 0\n"
            ));
        }
    }
    text.push_str("[2026-04-02] [PATTERN:0.99] P: a pattern\n");
    text.push_str("[2026-04-02] [UNTESTABLE] U: never eligible\n");
    text.push_str("[2026-04-02] [KILLED] K: never eligible\n");
    text
}

#[test]
fn ten_rules_shut_patterns_out_and_the_cap_is_ten() {
    // As in 0.6.0: ten RULEs and a PATTERN at 0.99 answer the ten RULEs.
    let categories = |applied: &Applied| -> Vec<String> {
        applied
            .rules
            .iter()
            .map(|rule| rule.category.clone())
            .collect()
    };
    // 11 RULEs: only RULEs, the best ten.
    let applied = book(&rules_text(11, 0)).apply(&request("", ""));
    assert_eq!(
        categories(&applied),
        (0..10).map(|n| format!("R{n}")).collect::<Vec<_>>()
    );
    // 10 RULEs: still only RULEs.
    let applied = book(&rules_text(10, 0)).apply(&request("", ""));
    assert!(!categories(&applied).contains(&"P".to_owned()));
    // 9 RULEs: the PATTERN is eligible and ranks below them.
    let applied = book(&rules_text(9, 0)).apply(&request("", ""));
    assert_eq!(categories(&applied).last().map(String::as_str), Some("P"));
    assert_eq!(applied.rules.len(), 10);
}

#[test]
fn a_stale_rule_counts_as_a_pattern() {
    // Ten RULEs, the first idle for 50 sessions: nine count, so the PATTERN is eligible, and
    // the stale rule ranks among the patterns, here below P (confidence 0.99 > 0.90) and out
    // of the ten.
    let ten = book(&rules_text(10, 50));
    assert_eq!(ten.n_rules(), 9);
    let applied = ten.apply(&request("", ""));
    let ranked: Vec<(&str, State)> = applied
        .rules
        .iter()
        .map(|rule| (rule.category.as_str(), rule.tier))
        .collect();
    let mut expected: Vec<(String, State)> =
        (1..10).map(|n| (format!("R{n}"), State::Rule)).collect();
    expected.push(("P".to_owned(), State::Pattern));
    let expected: Vec<(&str, State)> = expected
        .iter()
        .map(|(c, tier)| (c.as_str(), *tier))
        .collect();
    assert_eq!(ranked, expected);

    let single = |idle: u64| {
        let text = format!(
            "[2026-04-02] [RULE] S: stale\n  Fire count: 0 | Sessions since fire: {idle} | Misfires: 0\n\
                 [2026-04-02] [PATTERN:0.1] Q: a pattern\n"
        );
        book(&text).apply(&request("", ""))
    };
    let stale = single(50);
    assert_eq!(stale.rules[0].tier, State::Pattern);
    assert_eq!(
        stale.injection_text,
        "<brain-rules>\n- S: stale\n- Q: a pattern\n</brain-rules>"
    );
    assert_eq!(single(49).rules[0].tier, State::Rule);
}

#[test]
fn ranking_is_tier_then_difficulty_then_relevance_then_confidence_then_file_order() {
    let book = book(
        "[2026-04-02] [RULE:0.9] WELL_FIRED: difficulty 0.0\n  \
               Fire count: 9 | Sessions since fire: 0 | Misfires: 0\n\
             [2026-04-02] [RULE:0.5] TIE_1: difficulty 0.5\n\
             [2026-04-02] [RULE:0.5] TIE_2: difficulty 0.5, same keys, later in the file\n\
             [2026-04-02] [RULE:0.6] CONFIDENT: difficulty 0.5\n\
             [2026-04-02] [RULE:0.1] SCOPED: exact task match\n  \
               Scope: {\"task_type\": \"code\"}\n\
             [2026-04-02] [RULE:0.1] MISFIRING: difficulty 0.75\n  \
               Fire count: 1 | Sessions since fire: 0 | Misfires: 3\n\
             [2026-04-02] [PATTERN:1.0] PATTERN: below every rule\n  \
               Fire count: 0 | Sessions since fire: 0 | Misfires: 5\n",
    );
    let applied = book.apply(&request("", "code"));
    let order: Vec<&str> = applied.rules.iter().map(|r| r.category.as_str()).collect();
    assert_eq!(
        order,
        [
            "MISFIRING",
            "SCOPED",
            "CONFIDENT",
            "TIE_1",
            "TIE_2",
            "WELL_FIRED",
            "PATTERN"
        ]
    );
}

#[test]
fn picking_the_best_ten_equals_a_stable_sort_of_all() {
    // A deterministic spread of states, counters, scopes and confidences, with many ties.
    let mut text = String::new();
    let mut seed: u64 = 7;
    for n in 0..300 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let state = ["RULE", "PATTERN", "INSTINCT"][(seed >> 33) as usize % 3];
        let confidence = (seed >> 40) % 4;
        let misfires = (seed >> 45) % 3;
        let fires = (seed >> 50) % 3;
        text.push_str(&format!(
            "[2026-04-02] [{state}:0.{confidence}] C{n}: lesson {n}\n"
        ));
        text.push_str(&format!(
            "  Fire count: {fires} | Sessions since fire: 0 | Misfires: {misfires}\n"
        ));
        if (seed >> 55) % 3 == 0 {
            text.push_str("  Scope: {\"task_type\": \"code\"}\n");
        }
    }
    let parsed = parse(&text);
    let book = RuleBook::new(&parsed.lessons);
    for task_type in ["code", "email", ""] {
        let applied = book.apply(&request("", task_type));
        // The reference: every eligible lesson in Python's stable sort on the four keys (the
        // ranking's file-order tie-break is what a stable sort keeps anyway).
        let mut all: Vec<Ranked<'_>> = book
            .candidates
            .iter()
            .enumerate()
            .map(|(index, candidate)| Ranked {
                index,
                candidate,
                relevance: candidate.scope.relevance(task_type, DEFAULT_AGENT_TYPE),
            })
            .filter(|ranked| ranked.relevance >= MIN_RELEVANCE)
            .filter(|ranked| book.n_rules < MAX_RULES || ranked.candidate.tier == State::Rule)
            .collect();
        all.sort_by(rank_order);
        let expected: Vec<String> = all[..MAX_RULES]
            .iter()
            .map(|r| format!("{}: {}", r.candidate.category, r.candidate.description))
            .collect();
        let got: Vec<String> = applied
            .rules
            .iter()
            .map(|r| r.instruction.clone())
            .collect();
        assert_eq!(got, expected, "task_type {task_type:?}");
    }
}

#[test]
fn the_task_type_is_guessed_from_the_first_matching_group() {
    // 0.6.0 guessed the same for each prompt (seen through lessons scoped to each task type).
    let cases = [
        ("Draft a reply", Some("email")),
        ("prepare the demo deck", Some("demo_prep")),
        ("write the latest notes", Some("code")), // "test" inside "latest"
        ("find leads", Some("prospecting")),
        ("compare the two", Some("research")),
        ("recall the meeting", Some("call")),
        ("update the README", Some("document")),
        ("email about the code", Some("email")),
        ("hello there", None),
        ("", None),
    ];
    for (prompt, expected) in cases {
        assert_eq!(
            guess_task_type(&request(prompt, "")),
            expected,
            "{prompt:?}"
        );
    }
    // A named task type is never overridden.
    assert_eq!(guess_task_type(&request("draft an email", "code")), None);
}

#[test]
fn a_guessed_task_resets_the_agent_type() {
    let book = book(
        "[2026-04-02] [RULE] A: for the general agent\n  \
               Scope: {\"agent_type\": \"general\"}\n",
    );
    assert_eq!(book.apply(&request("hello", "")).rules.len(), 1);
    assert_eq!(book.apply(&request("draft an email", "")).rules.len(), 0);
}

#[test]
fn tokens_drop_non_word_characters() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "CODE: Use pathlib, not os.path!",
            &["code", "not", "ospath", "pathlib", "use"],
        ),
        ("TONE: Never — ever", &["ever", "never", "tone"]),
        ("a_b   É\u{1f}x", &["a_b", "x", "é"]),
        ("", &[]),
    ];
    for (text, expected) in cases {
        let got: Vec<String> = tokens(text).into_iter().collect();
        assert_eq!(got, expected, "{text:?}");
    }
    let applied = book("[2026-04-02] [RULE] CODE: Use pathlib.\n").apply(&request("", ""));
    let expected: BTreeSet<String> = ["code", "use", "pathlib"].map(str::to_owned).into();
    assert_eq!(applied.fired[0].tokens, expected);
}
