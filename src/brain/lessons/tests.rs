use super::*;

/// (header line, state, confidence, category, description, root cause)
type HeaderCase = (
    &'static str,
    State,
    f64,
    &'static str,
    &'static str,
    &'static str,
);

#[test]
fn the_spec_example_reads_as_three_lessons() {
    let text = "# Team brain: lessons\n\
            [2026-04-02] [RULE:0.94] TONE: Never open client emails with small talk\n  \
            Root cause: user deleted greeting paragraphs\n  \
            Fire count: 12 | Sessions since fire: 1 | Misfires: 0\n  \
            Corrections: 41,57\n\
            \n\
            [2026-04-09] [PATTERN:0.71] CODE: Prefer explicit error types over strings\n  \
            Fire count: 4 | Sessions since fire: 0 | Misfires: 1\n  \
            Scope: {\"task_type\": \"code\"}\n\
            \n\
            [2026-04-20] [INSTINCT] DOCS: Link the runbook in incident summaries\n";
    let parsed = parse(text);
    assert_eq!(parsed.problems, []);
    let [tone, code, docs] = parsed.lessons.as_slice() else {
        panic!("three lessons expected: {:?}", parsed.lessons);
    };
    assert_eq!((tone.line, tone.date.as_str()), (2, "2026-04-02"));
    assert_eq!((tone.state, tone.confidence), (State::Rule, 0.94));
    assert_eq!(tone.category, "TONE");
    assert_eq!(tone.description, "Never open client emails with small talk");
    assert_eq!(tone.root_cause, "user deleted greeting paragraphs");
    assert_eq!(
        (tone.fire_count, tone.sessions_since_fire, tone.misfires),
        (12, 1, 0)
    );
    assert_eq!(tone.corrections, ["41", "57"]);
    assert_eq!(
        (code.state, code.confidence, code.misfires),
        (State::Pattern, 0.71, 1)
    );
    assert_eq!(code.scope, r#"{"task_type": "code"}"#);
    assert_eq!(code.root_cause, "");
    assert_eq!((docs.state, docs.confidence), (State::Instinct, 0.5));
    assert_eq!(docs.description, "Link the runbook in incident summaries");
    assert_eq!(docs.metadata, Metadata::default());
    assert_eq!(docs.beta, BetaParams::default());
}

#[test]
fn headers_read_as_the_sdk_reads_them() {
    let cases: [HeaderCase; 14] = [
        (
            "[2026-04-02] [rule] code/x: lower case",
            State::Rule,
            0.9,
            "CODE/X",
            "lower case",
            "",
        ),
        (
            "[2026-04-02] [PATTERN:] CAT: empty confidence",
            State::Pattern,
            0.7,
            "CAT",
            "empty confidence",
            "",
        ),
        (
            "[2026-04-02]  [PATTERN:1.]  CAT:  spaced   out  ",
            State::Pattern,
            1.0,
            "CAT",
            "spaced   out",
            "",
        ),
        (
            "[2026-04-02] [RULE:5] C: clamped",
            State::Rule,
            1.0,
            "C",
            "clamped",
            "",
        ),
        (
            "[2026-04-02] [RULE:.285] C: half even on the binary value",
            State::Rule,
            0.28,
            "C",
            "half even on the binary value",
            "",
        ),
        (
            "[2026-04-02] [UNTESTABLE] C: d",
            State::Untestable,
            0.0,
            "C",
            "d",
            "",
        ),
        (
            "[2026-04-02] [KILLED] C: d",
            State::Killed,
            0.0,
            "C",
            "d",
            "",
        ),
        (
            "[2026-04-02] [ARCHIVED] C: d",
            State::Archived,
            0.5,
            "C",
            "d",
            "",
        ),
        (
            "[2026-04-02] [INSTINCT:0.33] C: d",
            State::Instinct,
            0.33,
            "C",
            "d",
            "",
        ),
        (
            "  [2026-04-02] [RULE:0.8] A_B: indented but not after a lesson",
            State::Rule,
            0.8,
            "A_B",
            "indented but not after a lesson",
            "",
        ),
        (
            "[2026-04-02] [RULE] C: say it   Root cause:   it was deleted  ",
            State::Rule,
            0.9,
            "C",
            "say it",
            "it was deleted",
        ),
        (
            "[2026-04-02] [RULE] C: a: b",
            State::Rule,
            0.9,
            "C",
            "a: b",
            "",
        ),
        (
            "[2026-04-02] [RULE] C:\u{1f}separator counts as space",
            State::Rule,
            0.9,
            "C",
            "separator counts as space",
            "",
        ),
        (
            "[2026-04-02] [RULE] straße: upper-cased as Python does",
            State::Rule,
            0.9,
            "STRASSE",
            "upper-cased as Python does",
            "",
        ),
    ];
    for (line, state, confidence, category, description, root_cause) in cases {
        let parsed = parse(line);
        assert_eq!(parsed.problems, [], "{line}");
        let [lesson] = parsed.lessons.as_slice() else {
            panic!("one lesson expected from {line:?}: {:?}", parsed.lessons);
        };
        assert_eq!(lesson.state, state, "{line}");
        assert_eq!(lesson.confidence, confidence, "{line}");
        assert_eq!(lesson.category, category, "{line}");
        assert_eq!(lesson.description, description, "{line}");
        assert_eq!(lesson.root_cause, root_cause, "{line}");
    }
}

#[test]
fn lines_that_are_not_headers_are_skipped_silently() {
    let not_headers = [
        "# heading",
        "[2026-04-02] [RULE:0.9] a:b: the first colon is not followed by a space",
        "[2026-04-02] [RULE:0.9] :C: category starts with a word character",
        "[2026-4-02] [RULE] C: short month",
        "[2026-04-02][RULE] C: no space after the date",
        "[2026-04-02] [RULE] C:",
        "[2026-04-02] [RULE-X] C: state is one word",
        "text [2026-04-02] [RULE] C: anchored at the start",
    ];
    for line in not_headers {
        assert_eq!(parse(line), Parsed::default(), "{line}");
    }
}

#[test]
fn a_malformed_value_keeps_the_lesson_with_its_default_and_names_the_line() {
    let text = "[2026-04-02] [RULE:0.9.1] TONE: bad confidence\n\
            [2026-04-02] [MAYBE:0.4] TONE: unknown state\n\
            [2026-04-02] [PATTERN:.] TONE: a lone dot\n";
    let parsed = parse(text);
    let read: Vec<(State, f64)> = parsed
        .lessons
        .iter()
        .map(|lesson| (lesson.state, lesson.confidence))
        .collect();
    assert_eq!(
        read,
        [
            (State::Rule, 0.9),
            (State::Instinct, 0.4),
            (State::Pattern, 0.7)
        ]
    );
    let lines: Vec<usize> = parsed.problems.iter().map(|problem| problem.line).collect();
    assert_eq!(lines, [1, 2, 3]);
    assert!(
        parsed.problems[0].message.contains("\"0.9.1\""),
        "{:?}",
        parsed.problems
    );
    assert!(
        parsed.problems[1].message.contains("MAYBE"),
        "{:?}",
        parsed.problems
    );
}

#[test]
fn every_continuation_field_is_kept() {
    let text = "[2026-04-02] [KILLED:0.10] CODE: Use pathlib\n  \
            Root cause: first\n  \
            Root cause: second is ignored\n  \
            Fire count:3|Sessions since fire:  7 |  Misfires: 2\n  \
            Agent: reviewer\n  \
            Kill reason: contradicted twice\n  \
            Corrections: 4, ,5 ,x\n  \
            Pending approval: YES\n  \
            Parent meta-rule: META:1\n  \
            Memory links: m1,m2\n  \
            Scope: {\"task_type\":\"code\", \"correction_scope\": 1}\n  \
            Beta params: {\"alpha\": 3.0, \"beta\": 2}\n  \
            Domain scores: {\"python\": 0.7}\n  \
            Path: src/a.py\n  \
            Secondary categories: STYLE, TONE\n  \
            Climb: {\"count\": 2, \"last_session\": 9, \"level\": 1}\n  \
            Metadata: {\"what\": \"w\", \"why\": \"y\", \"who\": \"u\", \"when_created\": \"c\", \"when_validated\": \"v\", \"where_scope\": \"s\", \"how_enforced\": \"hook\", \"utility_score\": 1.7, \"safety_score\": 0.125}\n  \
            Unknown: ignored\n";
    let parsed = parse(text);
    assert_eq!(parsed.problems, []);
    let [lesson] = parsed.lessons.as_slice() else {
        panic!("one lesson expected: {:?}", parsed.lessons);
    };
    assert_eq!((lesson.state, lesson.confidence), (State::Killed, 0.1));
    assert_eq!(lesson.root_cause, "first");
    assert_eq!(
        (
            lesson.fire_count,
            lesson.sessions_since_fire,
            lesson.misfires
        ),
        (3, 7, 2)
    );
    assert_eq!(lesson.agent, "reviewer");
    assert_eq!(lesson.kill_reason, "contradicted twice");
    assert_eq!(lesson.corrections, ["4", "5", "x"]);
    assert!(lesson.pending_approval);
    assert_eq!(lesson.parent_meta_rule, "META:1");
    assert_eq!(lesson.memory_links, ["m1", "m2"]);
    assert_eq!(
        lesson.scope,
        r#"{"task_type":"code", "correction_scope": 1}"#
    );
    let scope = lesson.scope_fields().expect("the scope is an object");
    assert_eq!(scope.get("task_type"), Some(&Value::from("code")));
    assert_eq!(
        lesson.beta,
        BetaParams {
            alpha: 3.0,
            beta: 2.0
        }
    );
    assert_eq!(lesson.domain_scores, r#"{"python": 0.7}"#);
    assert_eq!(lesson.path, "src/a.py");
    assert_eq!(lesson.secondary_categories, ["STYLE", "TONE"]);
    assert_eq!(
        lesson.climb,
        Climb {
            count: 2,
            last_session: 9,
            level: 1
        }
    );
    let metadata = Metadata {
        what: "w".into(),
        why: "y".into(),
        who: "u".into(),
        when_created: "c".into(),
        when_validated: "v".into(),
        where_scope: "s".into(),
        how_enforced: "hook".into(),
        utility_score: 1.0,
        safety_score: 0.12,
    };
    assert_eq!(lesson.metadata, metadata);
}

#[test]
fn bad_json_fields_keep_their_defaults_and_are_reported() {
    let text = "[2026-04-02] [RULE] C: d\n  \
            Beta params: {\"alpha\": 2\n  \
            Domain scores: [1]\n  \
            Climb: {\"count\": 1.5}\n  \
            Metadata: {\"what\": 3}\n  \
            Pending approval: no\n  \
            Scope: not json\n  \
            Fire count: 99999999999999999999 | Sessions since fire: 1 | Misfires: 0\n";
    let parsed = parse(text);
    let [lesson] = parsed.lessons.as_slice() else {
        panic!("one lesson expected: {:?}", parsed.lessons);
    };
    assert_eq!(lesson.beta, BetaParams::default());
    assert_eq!(lesson.domain_scores, "");
    assert_eq!(lesson.climb, Climb::default());
    assert_eq!(lesson.metadata, Metadata::default());
    assert!(!lesson.pending_approval);
    assert_eq!(lesson.scope, "not json");
    assert_eq!(lesson.scope_fields(), None);
    assert_eq!((lesson.fire_count, lesson.sessions_since_fire), (0, 0));
    let lines: Vec<usize> = parsed.problems.iter().map(|problem| problem.line).collect();
    assert_eq!(lines, [2, 3, 4, 5, 8]);
}

#[test]
fn the_block_ends_where_the_sdk_ends_it() {
    let text = "[2026-04-02] [RULE] A: first\n  \
            Agent: kept\n    \
            [2026-04-02] [RULE] B: an indented header right after a lesson is swallowed\n\
            \t[2026-04-02] [RULE] C: a tab-indented header starts a lesson\n  \
            Agent: of C\n\
            \n  \
            Agent: after a blank line, belongs to nobody\n\
            [2026-04-02] [RULE] D: last\r  Agent: a carriage return is a line break\u{2028}  Path: so is U+2028";
    let parsed = parse(text);
    assert_eq!(parsed.problems, []);
    let read: Vec<(&str, &str, &str, usize)> = parsed
        .lessons
        .iter()
        .map(|l| {
            (
                l.category.as_str(),
                l.agent.as_str(),
                l.path.as_str(),
                l.line,
            )
        })
        .collect();
    assert_eq!(
        read,
        [
            ("A", "kept", "", 1),
            ("C", "of C", "", 4),
            ("D", "a carriage return is a line break", "so is U+2028", 8),
        ]
    );
}

#[test]
fn a_rule_idle_for_fifty_sessions_counts_as_a_pattern() {
    let cases = [
        (State::Rule, 0, State::Rule),
        (State::Rule, 49, State::Rule),
        (State::Rule, 50, State::Pattern),
        (State::Rule, 900, State::Pattern),
        (State::Pattern, 50, State::Pattern),
        (State::Instinct, 50, State::Instinct),
        (State::Killed, 50, State::Killed),
    ];
    for (state, idle, effective) in cases {
        let mut lesson = Lesson::new(1, "2026-04-02", state, "C".into());
        lesson.sessions_since_fire = idle;
        assert_eq!(lesson.effective_state(), effective, "{state} idle {idle}");
        assert_eq!(lesson.state, state);
    }
}

#[test]
fn pieces_give_back_the_file_and_name_the_unknown_continuation_lines() {
    let text = "# heading\r\n[2026-04-02] [RULE] A: d\n  Note: mine\n  Agent: x\n  \
            Root cause: first\n  Root cause: ignored but known\n\u{2028}prose";
    let (pieces, problems) = parse_pieces(text);
    assert_eq!(problems, []);
    let raw: String = pieces
        .iter()
        .map(|piece| match piece {
            Piece::Other(raw) => raw.as_str(),
            Piece::Lesson(piece) => piece.raw.as_str(),
        })
        .collect();
    assert_eq!(raw, text);
    let [
        Piece::Other(heading),
        Piece::Lesson(lesson),
        Piece::Other(blank),
        Piece::Other(prose),
    ] = pieces.as_slice()
    else {
        panic!("heading, lesson, blank line, prose: {pieces:?}");
    };
    assert_eq!(
        (heading.as_str(), blank.as_str(), prose.as_str()),
        ("# heading\r\n", "\u{2028}", "prose")
    );
    assert_eq!(lesson.extras, ["  Note: mine"]);
    assert_eq!(lesson.lesson.agent, "x");
    assert_eq!(parse(text).lessons, std::slice::from_ref(&lesson.lesson));
}

#[test]
fn state_words_round_trip() {
    for state in [
        State::Instinct,
        State::Pattern,
        State::Rule,
        State::Untestable,
        State::Killed,
        State::Archived,
    ] {
        assert_eq!(State::from_word(state.as_str()), Some(state));
    }
    assert_eq!(State::from_word("rule"), None);
}
