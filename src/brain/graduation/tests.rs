//! The sweep against 0.6.0's measured sessions and the spec's moves, one case at a time.

mod properties;

use std::collections::BTreeMap;

use super::*;
use crate::brain::confidence::{Salt, apply};
use crate::brain::lessons;

const MEASURED: &str = include_str!("../../../tests/data/graduation-0.6.0.txt");

/// The salt of the measured brains: 64 `a`s.
fn measured_thresholds() -> Thresholds {
    Thresholds::salted(&Salt::from_file_text(&"a".repeat(64)).expect("64 characters"))
}

fn parse(text: &str) -> Vec<Lesson> {
    let parsed = lessons::parse(text);
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    parsed.lessons
}

/// The first sweep of session `s` over these lessons, at the unsalted thresholds.
fn first_sweep(text: &str) -> Sweep {
    sweep(
        &parse(text),
        &session("s"),
        &SweptSessions::new(),
        Thresholds::UNSALTED,
    )
}

fn session(id: &str) -> SessionEvidence {
    SessionEvidence {
        id: id.to_owned(),
        number: 1,
        session_type: SessionType::Full,
        corrected: BTreeMap::new(),
        fired: BTreeSet::new(),
    }
}

/// The measured rows of one scenario: (session, category, state, confidence, fires, idle,
/// description after `#`).
fn measured(scenario: &str) -> Vec<Vec<String>> {
    MEASURED
        .lines()
        .filter(|line| line.starts_with(&format!("{scenario} ")))
        .map(|line| {
            let (fields, description) = line.split_once("  # ").unwrap_or((line, ""));
            let mut row: Vec<String> = fields.split(' ').skip(1).map(str::to_owned).collect();
            row.push(description.to_owned());
            row
        })
        .collect()
}

fn state_word(lesson: Option<&Lesson>) -> &'static str {
    lesson.map_or("DELETED", |lesson| lesson.state.as_str())
}

/// One end-session over lessons either side of the thresholds 0.6.0 derives from the salt:
/// the same lessons move, in one sweep, as under 0.6.0.
#[test]
fn salted_thresholds_decide_as_in_0_6_0() {
    let text = "\
[2026-01-01] [INSTINCT:0.57] TONE: Keep greetings short in client emails
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0
[2026-01-01] [INSTINCT:0.58] TONE: Sign off with the first name only
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0
[2026-01-01] [PATTERN:0.87] CODE: Prefer iterators over index loops
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0
[2026-01-01] [PATTERN:0.88] CODE: Name errors after what failed
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0
[2026-01-01] [PATTERN:0.57] DOCS: Link the runbook in incident notes
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0
";
    let out = sweep(
        &parse(text),
        &session("s"),
        &SweptSessions::new(),
        measured_thresholds(),
    );
    let rows = measured("thresholds");
    assert_eq!(rows.len(), 5);
    for row in rows {
        let lesson = out
            .lessons
            .iter()
            .find(|l| l.description == row[6])
            .expect("kept");
        assert_eq!(lesson.state.as_str(), row[2], "{}", row[6]);
        assert_eq!(format!("{:.2}", lesson.confidence), row[3]);
        assert_eq!(lesson.sessions_since_fire.to_string(), row[5]);
    }
    let expected = Counters {
        promotions: 2,
        demotions: 1,
        graduated: 1,
        kills: 0,
        archived: 0,
    };
    assert_eq!(out.counters, expected);
    // With the nominal thresholds the 0.58 INSTINCT and the 0.88 PATTERN stay where they are.
    let nominal = first_sweep(text);
    assert_eq!(nominal.counters.promotions, 0);
}

/// A lesson created by a correction and reinforced by one major correction per session
/// becomes a PATTERN and then a RULE in the same sessions as under 0.6.0. The correction
/// side is modelled as 0.6.0 runs it: a new lesson at 0.60, a matched lesson's fire count
/// raised once by the match and once more by the reinforcing evidence.
#[test]
fn a_reinforced_lesson_graduates_in_the_sessions_0_6_0_graduates_it() {
    let thresholds = measured_thresholds();
    let mut swept = SweptSessions::new();
    let mut lessons: Vec<Lesson> = Vec::new();
    for row in measured("fresh") {
        let id = format!("session-{}", row[0]);
        if lessons.is_empty() {
            lessons = parse(
                "[2026-01-01] [INSTINCT:0.60] CONTENT: Always link the runbook in incident summaries\n",
            );
        } else {
            lessons[0].fire_count += 1;
        }
        apply(&mut lessons[0], &Evidence::Reinforcing(Severity::Major));
        let mut evidence = session(&id);
        evidence
            .corrected
            .insert("CONTENT".to_owned(), Severity::Major);
        evidence
            .fired
            .insert(rule_id(&lessons[0].category, &lessons[0].description));
        let out = sweep(&lessons, &evidence, &swept, thresholds);
        swept.insert(id);
        lessons = out.lessons;
        let lesson = &lessons[0];
        assert_eq!(lesson.state.as_str(), row[2], "session {}", row[0]);
        assert_eq!(
            format!("{:.2}", lesson.confidence),
            row[3],
            "session {}",
            row[0]
        );
        assert_eq!(lesson.fire_count.to_string(), row[4], "session {}", row[0]);
        // 0.6.0 counts the idle sessions up although the lesson fires every session; here
        // a lesson that fired starts again from zero (§13 #4).
        assert_eq!(lesson.sessions_since_fire, 0);
        assert!(row[5].parse::<u64>().expect("number") > 0);
    }
}

/// The lesson of 0.6.0's measured `repeated` scenario: a PATTERN six sessions idle.
const IDLE_PATTERN: &str = "[2026-01-01] [PATTERN:0.80] TONE: Never open client emails with small talk\n  \
                            Fire count: 9 | Sessions since fire: 6 | Misfires: 0\n";

/// §13 #4: the Stop hook calls `/end-session` after every turn. 0.6.0 aged the lesson on each
/// call and deleted it after the seventh; here the session ages it once.
#[test]
fn repeated_end_session_of_one_session_ages_once() {
    let mut lessons = parse(IDLE_PATTERN);
    let mut swept = SweptSessions::new();
    let rows = measured("repeated");
    assert_eq!(rows.len(), 7);
    for (call, row) in rows.iter().enumerate() {
        let out = sweep(
            &lessons,
            &session("one-session"),
            &swept,
            measured_thresholds(),
        );
        swept.insert("one-session");
        lessons = out.lessons;
        assert_eq!(state_word(lessons.first()), "PATTERN", "call {}", call + 1);
        assert_eq!(lessons[0].sessions_since_fire, 7, "call {}", call + 1);
        assert_eq!(out.outcome == Outcome::Swept, call == 0);
        // What 0.6.0 did on the same call.
        let expected = if call == 0 {
            "PATTERN"
        } else if call < 6 {
            "UNTESTABLE"
        } else {
            "DELETED"
        };
        assert_eq!(row[2], expected, "call {}", call + 1);
    }
}

/// §13 #4 and #13: across distinct sessions the same idle lesson becomes UNTESTABLE and then
/// KILLED on the same calls as 0.6.0, but it is handed to the archive instead of vanishing.
#[test]
fn an_idle_lesson_is_archived_not_deleted() {
    let mut lessons = parse(IDLE_PATTERN);
    let mut swept = SweptSessions::new();
    for (call, row) in measured("repeated").iter().enumerate() {
        let id = format!("s{call}");
        let out = sweep(&lessons, &session(&id), &swept, measured_thresholds());
        swept.insert(id);
        lessons = out.lessons;
        if row[2] == "DELETED" {
            assert!(lessons.is_empty());
            assert_eq!(out.archived.len(), 1);
            assert_eq!(out.archived[0].state, State::Killed);
            assert!(
                out.archived[0].kill_reason.contains("13 idle sessions"),
                "{}",
                out.archived[0].kill_reason
            );
            assert_eq!(out.counters.archived, 1);
            assert_eq!(out.transitions[0].why, Reason::UntestableExpired(13));
        } else {
            assert_eq!(state_word(lessons.first()), row[2], "call {}", call + 1);
            assert!(out.archived.is_empty());
        }
    }
}

/// §13 #4: a lesson that fired in the session (its id injected by `/apply-rules`) starts
/// counting its idle sessions again; one that did not counts on.
#[test]
fn firing_resets_the_idle_count() {
    let text = "\
[2026-01-01] [PATTERN:0.80] TONE: Never open client emails with small talk
  Fire count: 9 | Sessions since fire: 7 | Misfires: 0
[2026-01-01] [PATTERN:0.80] TONE: Sign off with the first name only
  Fire count: 9 | Sessions since fire: 7 | Misfires: 0
";
    let lessons = parse(text);
    let mut evidence = session("s");
    evidence
        .fired
        .insert(rule_id("TONE", "Never open client emails with small talk"));
    let out = sweep(
        &lessons,
        &evidence,
        &SweptSessions::new(),
        Thresholds::UNSALTED,
    );
    assert_eq!(out.lessons[0].sessions_since_fire, 0);
    assert_eq!(out.lessons[0].state, State::Pattern);
    assert_eq!(out.lessons[1].sessions_since_fire, 8);
    assert_eq!(out.lessons[1].state, State::Untestable);
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(out.transitions[0].why, Reason::Idle(8));
    assert_eq!(out.counters.kills, 1);
}

/// §13 #5: survival is granted once per session, at the sweep, and only to lessons whose
/// category the session did not correct (weighted by the other categories' severities).
#[test]
fn survival_is_granted_once_per_session() {
    let text = "\
[2026-01-01] [INSTINCT:0.60] TONE: Keep greetings short
[2026-01-01] [INSTINCT:0.60] CODE: Prefer iterators over index loops
";
    let mut evidence = session("s");
    evidence
        .corrected
        .insert("CODE".to_owned(), Severity::Major);
    let mut swept = SweptSessions::new();
    let out = sweep(&parse(text), &evidence, &swept, Thresholds::UNSALTED);
    // 0.60 + 0.14 × 1.0 (the major correction's survival weight).
    assert_eq!(out.lessons[0].confidence, 0.74);
    assert_eq!(out.lessons[1].confidence, 0.60);
    swept.insert("s");
    let again = sweep(&out.lessons, &evidence, &swept, Thresholds::UNSALTED);
    assert_eq!(again.lessons[0].confidence, 0.74);
}

/// §13 #5: a lesson pending approval never changes tier, however confident or idle.
#[test]
fn pending_approval_blocks_every_move() {
    let text = "\
[2026-01-01] [INSTINCT:0.95] TONE: Keep greetings short
  Fire count: 5 | Sessions since fire: 0 | Misfires: 0
  Pending approval: yes
[2026-01-01] [PATTERN:0.40] CODE: Prefer iterators
  Fire count: 5 | Sessions since fire: 20 | Misfires: 0
  Pending approval: yes
";
    let out = first_sweep(text);
    assert_eq!(out.lessons[0].state, State::Instinct);
    assert_eq!(out.lessons[1].state, State::Pattern);
    assert!(out.transitions.is_empty());
    // Without the flag both would move.
    let moved = first_sweep(&text.replace("  Pending approval: yes\n", ""));
    assert_eq!(moved.transitions.len(), 2);
}

#[test]
fn a_one_off_lesson_is_never_promoted() {
    let text = "[2026-01-01] [INSTINCT:0.95] TONE: Keep greetings short\n  \
                    Fire count: 5 | Sessions since fire: 0 | Misfires: 0\n  \
                    Scope: {\"correction_scope\": \"one_off\"}\n";
    let out = first_sweep(text);
    assert_eq!(out.lessons[0].state, State::Instinct);
    let domain = text.replace("one_off", "domain");
    let out = first_sweep(&domain);
    assert_eq!(out.lessons[0].state, State::Pattern);
}

/// The spec's other moves (§8.3), one row each: (header and counters, state after, reason).
#[test]
fn the_moves_of_the_spec() {
    let cases = [
        (
            "[INSTINCT:0.00] A: x\n  Fire count: 2 | Sessions since fire: 0 | Misfires: 0",
            State::Killed,
            Some(Reason::ZeroConfidence),
        ),
        (
            "[PATTERN:0.00] A: x\n  Fire count: 2 | Sessions since fire: 0 | Misfires: 0",
            State::Killed,
            Some(Reason::ZeroConfidence),
        ),
        // A RULE is never killed or demoted by confidence.
        (
            "[RULE:0.00] A: x\n  Fire count: 2 | Sessions since fire: 0 | Misfires: 0",
            State::Rule,
            None,
        ),
        (
            "[RULE:0.10] A: x\n  Fire count: 2 | Sessions since fire: 30 | Misfires: 0",
            State::Rule,
            None,
        ),
        // A RULE that never fired goes idle like the others.
        (
            "[RULE:0.95] A: x\n  Fire count: 0 | Sessions since fire: 7 | Misfires: 0",
            State::Untestable,
            Some(Reason::Idle(8)),
        ),
        // A never-fired lesson goes idle before its zero confidence kills it, as in 0.6.0.
        (
            "[INSTINCT:0.00] A: x\n  Fire count: 0 | Sessions since fire: 7 | Misfires: 0",
            State::Untestable,
            Some(Reason::Idle(8)),
        ),
        (
            "[UNTESTABLE:0.50] A: x\n  Fire count: 0 | Sessions since fire: 11 | Misfires: 0",
            State::Untestable,
            None,
        ),
        (
            "[UNTESTABLE:0.50] A: x\n  Fire count: 0 | Sessions since fire: 12 | Misfires: 0",
            State::Killed,
            Some(Reason::UntestableExpired(13)),
        ),
        // Two steps' worth of confidence still moves one step.
        (
            "[INSTINCT:0.99] A: x\n  Fire count: 9 | Sessions since fire: 0 | Misfires: 0",
            State::Pattern,
            Some(Reason::Promoted),
        ),
        // Not enough fires.
        (
            "[INSTINCT:0.99] A: x\n  Fire count: 2 | Sessions since fire: 0 | Misfires: 0",
            State::Instinct,
            None,
        ),
        (
            "[PATTERN:0.99] A: x\n  Fire count: 2 | Sessions since fire: 0 | Misfires: 0",
            State::Pattern,
            None,
        ),
        (
            "[PATTERN:0.59] A: x\n  Fire count: 9 | Sessions since fire: 0 | Misfires: 0",
            State::Instinct,
            Some(Reason::Demoted),
        ),
    ];
    for (lesson, state, why) in cases {
        let text = format!("[2026-01-01] {lesson}\n");
        let out = first_sweep(&text);
        let after = out
            .lessons
            .first()
            .or(out.archived.first())
            .expect("accounted for");
        assert_eq!(after.state, state, "{lesson}");
        assert_eq!(out.transitions.first().map(|t| t.why), why, "{lesson}");
    }
}

/// The session type limits which lessons age (§6.10 step 3).
#[test]
fn only_testable_categories_age() {
    let text = "[2026-01-01] [INSTINCT:0.60] TONE: Keep greetings short\n\
                    [2026-01-01] [INSTINCT:0.60] PROCESS: Run the tests first\n";
    let mut evidence = session("s");
    evidence.session_type = SessionType::from_label("systems");
    let out = sweep(
        &parse(text),
        &evidence,
        &SweptSessions::new(),
        Thresholds::UNSALTED,
    );
    assert_eq!(out.lessons[0].sessions_since_fire, 0);
    assert_eq!(out.lessons[1].sessions_since_fire, 1);
    assert_eq!(SessionType::from_label("anything"), SessionType::Full);
    assert!(SessionType::Sales.tests("TONE") && !SessionType::Sales.tests("CODE"));
}

/// A KILLED lesson already in the file goes to the archive; an ARCHIVED one stays put.
#[test]
fn killed_lessons_already_in_the_file_go_to_the_archive() {
    let text = "[2026-01-01] [KILLED:0.00] TONE: Old one\n  Kill reason: disproved\n\
                    [2026-01-01] [ARCHIVED:0.50] TONE: Retired one\n";
    let out = first_sweep(text);
    assert_eq!(out.archived.len(), 1);
    assert_eq!(out.archived[0].kill_reason, "disproved");
    assert_eq!(out.lessons.len(), 1);
    assert_eq!(out.lessons[0].state, State::Archived);
    assert!(out.transitions.is_empty());
}

/// §13 #6: no text is rewritten, whatever moves.
#[test]
fn a_promotion_keeps_the_text() {
    let text = "[2026-01-01] [PATTERN:0.95] TONE: never   open with small talk \n  \
                    Fire count: 5 | Sessions since fire: 0 | Misfires: 0\n";
    let before = parse(text);
    let out = sweep(
        &before,
        &session("s"),
        &SweptSessions::new(),
        Thresholds::UNSALTED,
    );
    assert_eq!(out.lessons[0].state, State::Rule);
    assert_eq!(out.lessons[0].description, before[0].description);
    assert_eq!(
        out.transitions[0].lesson_id,
        rule_id("TONE", &before[0].description)
    );
}

/// §13 #14: SESSION_END names the session that ended, and counts what the sweep did.
#[test]
fn session_end_names_the_ended_session() {
    use crate::brain::pyjson::{self, Ascii};

    let text = "\
[2026-01-01] [PATTERN:0.95] TONE: Keep greetings short
  Fire count: 5 | Sessions since fire: 0 | Misfires: 0
[2026-01-01] [INSTINCT:0.70] CODE: Prefer iterators
  Fire count: 5 | Sessions since fire: 0 | Misfires: 0
[2026-01-01] [KILLED:0.00] CODE: Old one
";
    let mut evidence = session("s");
    evidence.number = 7;
    let out = sweep(
        &parse(text),
        &evidence,
        &SweptSessions::new(),
        Thresholds::UNSALTED,
    );
    let data = pyjson::to_string(&out.session_end(&evidence), Ascii::Escape).expect("text");
    assert_eq!(
        data,
        "{\"session\": 7, \"total_lessons\": 3, \"promotions\": 2, \"demotions\": 0, \
             \"graduated_rules\": 1}"
    );
}
