mod cache;
mod lock;

use super::*;
use crate::brain::lessons_file::LESSONS_FILE;
use crate::brain::test_support::without_line_numbers;
use proptest::prelude::*;

/// A file in the layout the Python SDK 0.6.0 wrote after a `/correct` (its own lesson text
/// replaced by ours): every optional line, JSON as `json.dumps` writes it.
const SDK_WRITTEN: &str = r#"[2026-04-02] [RULE:1.00] TONE: Never open client emails with small talk
  Root cause: user deleted greeting paragraphs
  Fire count: 12 | Sessions since fire: 2 | Misfires: 0
  Corrections: 41,57
  Metadata: {"what": "", "why": "", "who": "", "when_created": "", "when_validated": "", "where_scope": "", "how_enforced": "injected", "utility_score": 0.5, "safety_score": 0.5}

[2026-04-09] [PATTERN:0.84] CODE: Prefer explicit error types over strings
  Fire count: 4 | Sessions since fire: 1 | Misfires: 1
  Agent: rev
  Kill reason: kr
  Pending approval: yes
  Parent meta-rule: M1
  Memory links: a,b
  Scope: {"task_type":"code"}
  Domain scores: {"python": 0.7}
  Beta params: {"alpha": 3.0, "beta": 2.0}
  Path: src/x.py
  Secondary categories: STYLE,TONE
  Climb: {"count": 2, "last_session": 9, "level": 1}
  Metadata: {"what": "w\u00e9", "why": "", "who": "", "when_created": "", "when_validated": "", "where_scope": "", "how_enforced": "injected", "utility_score": 0.7, "safety_score": 0.5}

[2026-04-20] [INSTINCT:0.65] DOCS: Link the runbook in incident summaries
  Fire count: 0 | Sessions since fire: 1 | Misfires: 0
  Metadata: {"what": "", "why": "", "who": "", "when_created": "", "when_validated": "", "where_scope": "", "how_enforced": "injected", "utility_score": 0.5, "safety_score": 0.5}

[2026-12-07] [INSTINCT:0.74] CONTENT: Drop the greeting — from review requests
  Fire count: 1 | Sessions since fire: 1 | Misfires: 0
  Corrections: 1
  Scope: {"correction_scope": "domain"}
  Beta params: {"alpha": 2.0, "beta": 1.0}
  Metadata: {"what": "", "why": "", "who": "", "when_created": "", "when_validated": "", "where_scope": "", "how_enforced": "injected", "utility_score": 0.5, "safety_score": 0.5}
"#;

const HAND_WRITTEN: &str = "# Team brain: lessons\r\n\
        Prose a person wrote.\r\n\
        [2026-04-02] [RULE:0.94] TONE: Never open client emails with small talk\r\n  \
        Root cause: user deleted greeting paragraphs\r\n  \
        Corrections: 41, 57\r\n  \
        Note: keep this one\r\n  \
        Fire count: 12 | Sessions since fire: 1 | Misfires: 0\r\n\
        \r\n\
        [2026-04-09] [KILLED] CODE: Prefer strings\n\
        \n\
        ## Later\n\
        [2026-04-20] [INSTINCT] DOCS: Link the runbook   in incident summaries";

fn lessons_of(text: &str) -> Vec<Lesson> {
    without_line_numbers(lessons::parse(text).lessons)
}

#[test]
fn the_serialiser_writes_the_sdk_layout_byte_for_byte() {
    let (document, problems) = Document::parse(SDK_WRITTEN);
    assert_eq!(problems, []);
    let rendered = document.render_as(Layout::Serialise).unwrap().0;
    assert_eq!(rendered.text, SDK_WRITTEN);
    assert_eq!(rendered.retired, []);
}

#[test]
fn an_unchanged_file_is_written_back_byte_for_byte() {
    let text = HAND_WRITTEN.replace("[KILLED]", "[PATTERN]");
    let (document, _) = Document::parse(&text);
    let rendered = document.render().unwrap();
    assert_eq!(rendered.text, text);
    assert_eq!(rendered.retired, []);
}

#[test]
fn a_changed_lesson_is_rewritten_in_place_and_the_rest_kept() {
    let (mut document, _) = Document::parse(HAND_WRITTEN);
    for lesson in document.lessons_mut() {
        if lesson.category == "TONE" {
            lesson.fire_count += 1;
        }
    }
    let rendered = document.render().unwrap();
    let expected = "# Team brain: lessons\r\n\
            Prose a person wrote.\r\n\
            [2026-04-02] [RULE:0.94] TONE: Never open client emails with small talk\n  \
            Root cause: user deleted greeting paragraphs\n  \
            Fire count: 13 | Sessions since fire: 1 | Misfires: 0\n  \
            Corrections: 41,57\n  \
            Metadata: {\"what\": \"\", \"why\": \"\", \"who\": \"\", \"when_created\": \"\", \"when_validated\": \"\", \"where_scope\": \"\", \"how_enforced\": \"injected\", \"utility_score\": 0.5, \"safety_score\": 0.5}\n  \
            Note: keep this one\n\
            \r\n\
            ## Later\n\
            [2026-04-20] [INSTINCT] DOCS: Link the runbook   in incident summaries";
    assert_eq!(rendered.text, expected);
    let [killed] = rendered.retired.as_slice() else {
        panic!("one retired lesson: {:?}", rendered.retired);
    };
    assert_eq!(
        (killed.category.as_str(), killed.state),
        ("CODE", State::Killed)
    );
    let mut expected_lessons = lessons_of(HAND_WRITTEN);
    expected_lessons.remove(1);
    expected_lessons[0].fire_count = 13;
    assert_eq!(lessons_of(&rendered.text), expected_lessons);
}

#[test]
fn a_new_lesson_goes_after_a_blank_line_and_a_missing_line_break_is_added() {
    let (mut document, _) = Document::parse("[2026-04-20] [INSTINCT] DOCS: Last");
    let mut lesson = Lesson::with_defaults("2026-05-01", State::Instinct, "code", "New one");
    lesson.corrections = vec!["12".into()];
    document.push(lesson);
    let text = document.render().unwrap().text;
    assert!(
            text.starts_with(
                "[2026-04-20] [INSTINCT] DOCS: Last\n\n[2026-05-01] [INSTINCT:0.50] CODE: New one\n  Corrections: 12\n  Metadata: "
            ),
            "{text}"
        );
    assert_eq!(lessons_of(&text).len(), 2);

    let mut empty = Document::default();
    empty.push(Lesson::with_defaults(
        "2026-05-01",
        State::Rule,
        "C",
        "Only",
    ));
    assert!(
        empty
            .render()
            .unwrap()
            .text
            .starts_with("[2026-05-01] [RULE:0.90] C: Only\n")
    );
}

#[test]
fn a_new_or_changed_description_is_one_line_and_capped_and_an_old_one_is_kept() {
    let long_old = format!("[2026-04-02] [RULE] C: {}\n", "word ".repeat(100).trim());
    let (mut document, _) = Document::parse(&long_old);
    document.push(Lesson::with_defaults(
        "2026-05-01",
        State::Instinct,
        "CODE",
        "Use pathlib\n    for paths\r\nRoot cause: a diff",
    ));
    for lesson in document.lessons_mut() {
        lesson.fire_count = 1;
    }
    let read = lessons_of(&document.render().unwrap().text);
    assert_eq!(read.len(), 2);
    assert_eq!(
        read[0].description,
        "word ".repeat(100).trim(),
        "kept as it was"
    );
    assert_eq!(
        read[1].description,
        "Use pathlib for paths Root cause - a diff"
    );

    let cut = clean_description(&"abcd ".repeat(100));
    assert_eq!(
        cut.chars().count(),
        DESCRIPTION_CAP - 5,
        "cut at a space: {cut}"
    );
    assert!(cut.ends_with("abcd…"), "{cut}");
    let unbroken = clean_description(&"x".repeat(1000));
    assert_eq!(unbroken.chars().count(), DESCRIPTION_CAP);
    for text in [cut, unbroken, "a\u{2028}b".to_owned()] {
        assert_eq!(clean_description(&text), text.replace('\u{2028}', " "));
    }
}

#[test]
fn a_lesson_that_would_not_read_back_is_refused() {
    type Spoil = fn(&mut Lesson);
    let cases: [(&str, Spoil); 7] = [
        ("date", |lesson| lesson.date = "2026-5-1".into()),
        ("category", |lesson| lesson.category = "A B".into()),
        ("description", |lesson| lesson.description = " \n ".into()),
        ("confidence", |lesson| lesson.confidence = f64::NAN),
        ("corrections", |lesson| {
            lesson.corrections = vec!["1,2".into()]
        }),
        ("domain scores", |lesson| {
            lesson.domain_scores = "[1]".into()
        }),
        ("beta", |lesson| lesson.beta.alpha = f64::INFINITY),
    ];
    for (name, spoil) in cases {
        let mut lesson = Lesson::with_defaults("2026-05-01", State::Rule, "C", "ok");
        spoil(&mut lesson);
        let mut document = Document::default();
        document.push(lesson);
        let err = document.render().unwrap_err();
        assert!(err.reason.contains(name), "{name}: {err}");
    }
}

#[test]
fn removing_a_lesson_between_a_carriage_return_and_a_line_feed_keeps_the_lines_apart() {
    let text = "[2026-04-02] [RULE] A: a\r[2026-04-02] [KILLED] B: b\n\n  Parent meta-rule: X\n";
    let (document, _) = Document::parse(text);
    let rendered = document.render().unwrap();
    assert_eq!(
        rendered.text,
        "[2026-04-02] [RULE] A: a\r\n\n  Parent meta-rule: X\n"
    );
    let [kept] = lessons_of(&rendered.text).try_into().unwrap();
    assert_eq!(
        kept.parent_meta_rule, "",
        "the orphan line joined the lesson"
    );
}

#[test]
fn counters_mentioned_in_a_later_field_are_written_last() {
    let mut lesson = Lesson::with_defaults("2026-05-01", State::Rule, "C", "d");
    lesson.path = "Fire count: 9 | Sessions since fire: 9 | Misfires: 9".into();
    lesson.fire_count = 2;
    let block = block(&lesson).unwrap();
    assert!(
        block.ends_with("  Fire count: 2 | Sessions since fire: 0 | Misfires: 0\n"),
        "{block}"
    );
    assert_eq!(lessons_of(&block), [lesson]);
}

/// Lines a `lessons.md` may hold: headers (valid and not), continuation lines of every
/// field (valid, malformed, unknown), headings, prose and blank lines.
fn line() -> impl Strategy<Value = String> {
    let header = (
        prop::sample::select(vec!["RULE", "pattern", "INSTINCT", "UNTESTABLE", "MAYBE"]),
        prop::sample::select(vec!["", ":0.5", ":0.925", ":1.", ":0.9.1", ":7"]),
        "[A-Za-z][A-Za-z_/]{0,6}",
        "[ -~]{1,30}",
    )
        .prop_map(|(state, confidence, category, description)| {
            format!("[2026-04-02] [{state}{confidence}] {category}: {description}")
        });
    let field = prop::sample::select(vec![
        "Root cause: ",
        "Agent: ",
        "Kill reason: ",
        "Corrections: ",
        "Pending approval: ",
        "Parent meta-rule: ",
        "Memory links: ",
        "Scope: ",
        "Path: ",
        "Secondary categories: ",
        "Note: ",
        "",
    ]);
    let continuation = (field, "[ -~]{0,20}").prop_map(|(name, value)| format!("  {name}{value}"));
    let json = prop::sample::select(vec![
        r#"  Beta params: {"alpha": 2.5, "beta": 1}"#,
        r#"  Beta params: {"alpha": 2"#,
        r#"  Domain scores: {"py": 0.5}"#,
        r#"  Domain scores: {}"#,
        r#"  Climb: {"count": 1, "last_session": 3, "level": 2}"#,
        r#"  Metadata: {"what": "w\u00e9", "utility_score": 0.333, "how_enforced": ""}"#,
        "  Fire count: 3 | Sessions since fire: 2 | Misfires: 1",
        "  Pending approval: yes",
        "",
        "# heading",
        "\tindented by a tab",
    ])
    .prop_map(str::to_owned);
    prop_oneof![2 => header, 3 => continuation, 2 => json, 1 => "[ -~]{0,20}"]
}

fn file() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(
            (
                line(),
                prop::sample::select(vec!["\n", "\n", "\r\n", "\r", "\u{2028}"]),
            ),
            0..24,
        ),
        any::<bool>(),
    )
        .prop_map(|(lines, last_break)| {
            let mut text: String = lines
                .into_iter()
                .map(|(line, end)| format!("{line}{end}"))
                .collect();
            if !last_break {
                text.pop();
            }
            text
        })
}

proptest! {
    #[test]
    fn an_unchanged_file_is_written_back_byte_for_byte_for_any_text(text in file()) {
        let (document, _) = Document::parse(&text);
        let rendered = document.render().unwrap();
        prop_assert_eq!(rendered.text, text);
    }

    #[test]
    fn parse_write_parse_is_lossless(text in file()) {
        let (document, _) = Document::parse(&text);
        // Every lesson written anew, the hardest case for the serialiser.
        let written = document.render_as(Layout::Serialise).unwrap().0.text;
        let (again, _) = Document::parse(&written);
        prop_assert_eq!(
            without_line_numbers(again.lessons().cloned()),
            without_line_numbers(document.lessons().cloned())
        );
        // The lines that are no lesson's survive, in order (a last one may gain a line break).
        let other = |document: &Document| -> Vec<String> {
            document.other_lines().map(|line| pytext::strip(line).to_owned()).collect()
        };
        prop_assert_eq!(other(&again), other(&document));
        // What the writer wrote, it writes back byte for byte.
        prop_assert_eq!(again.render().unwrap().text, written.clone());
        prop_assert_eq!(again.render_as(Layout::Serialise).unwrap().0.text, written);
    }

    #[test]
    fn a_clean_description_is_one_capped_line_that_reads_back_as_it_is(
        text in "(\\PC|[\n\r\t\u{2028}\u{85}\u{1c}]|Root cause:| ){0,400}",
    ) {
        let clean = clean_description(&text);
        prop_assert_eq!(clean_description(&clean), clean.clone());
        prop_assert!(clean.chars().count() <= DESCRIPTION_CAP);
        prop_assert_eq!(pytext::splitlines(&clean).len(), usize::from(!clean.is_empty()));
        if !clean.is_empty() {
            let lesson = Lesson::with_defaults("2026-05-01", State::Rule, "C", &clean);
            prop_assert_eq!(lessons_of(&block(&lesson).unwrap()), [lesson]);
        }
    }

    #[test]
    fn a_retired_lesson_leaves_the_file_only_into_the_returned_list(
        text in file(),
        kill in prop::collection::vec(any::<bool>(), 24),
    ) {
        let (mut document, _) = Document::parse(&text);
        for (lesson, kill) in document.lessons_mut().zip(&kill) {
            if *kill {
                lesson.state = State::Killed;
            }
        }
        let before = without_line_numbers(document.lessons().cloned());
        let rendered = document.render().unwrap();
        let mut after = lessons_of(&rendered.text);
        after.extend(without_line_numbers(rendered.retired.iter().cloned()));
        let key = |lesson: &Lesson| format!("{lesson:?}");
        let mut before_keys: Vec<String> = before.iter().map(key).collect();
        let mut after_keys: Vec<String> = after.iter().map(key).collect();
        before_keys.sort();
        after_keys.sort();
        prop_assert_eq!(after_keys, before_keys);
        prop_assert!(lessons_of(&rendered.text).iter().all(|lesson| !is_retired(lesson.state)));
    }
}

fn brain_with(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(LESSONS_FILE), text).unwrap();
    dir
}
