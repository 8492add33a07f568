//! Properties of every sweep: no lesson is lost, a lesson moves at most one step, and a
//! second sweep of one session changes nothing.

use proptest::prelude::*;

use super::*;

fn any_lesson() -> impl Strategy<Value = Lesson> {
    let states = prop::sample::select(vec![
        "INSTINCT",
        "PATTERN",
        "RULE",
        "UNTESTABLE",
        "KILLED",
        "ARCHIVED",
    ]);
    let categories = prop::sample::select(vec!["CODE", "TONE", "PROCESS", "DRAFTING"]);
    (
        states,
        0u32..=100,
        categories,
        0u32..40,
        0u64..8,
        0u64..20,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(state, confidence, category, text, fires, idle, pending, one_off)| {
                let mut header = format!(
                    "[2026-01-01] [{state}:{:.2}] {category}: Lesson number {text}\n  \
                     Fire count: {fires} | Sessions since fire: {idle} | Misfires: 0\n",
                    f64::from(confidence) / 100.0
                );
                if pending {
                    header.push_str("  Pending approval: yes\n");
                }
                if one_off {
                    header.push_str("  Scope: {\"correction_scope\": \"one_off\"}\n");
                }
                lessons::parse(&header).lessons.remove(0)
            },
        )
}

fn any_session() -> impl Strategy<Value = SessionEvidence> {
    let severities = prop::sample::select(vec![
        Severity::Trivial,
        Severity::Minor,
        Severity::Moderate,
        Severity::Major,
        Severity::Rewrite,
    ]);
    let categories = prop::sample::select(vec!["CODE", "TONE", "PROCESS", "DRAFTING"]);
    let types = prop::sample::select(vec!["full", "systems", "sales"]);
    (
        prop::collection::btree_map(categories.prop_map(str::to_owned), severities, 0..3),
        prop::collection::btree_set(0u32..40, 0..10),
        types,
    )
        .prop_map(|(corrected, fired, kind)| SessionEvidence {
            id: "s".to_owned(),
            number: 1,
            session_type: SessionType::from_label(kind),
            corrected,
            // Only some ids match a lesson: those of category CODE.
            fired: fired
                .into_iter()
                .map(|n| rule_id("CODE", &format!("Lesson number {n}")))
                .collect(),
        })
}

/// The tier order; a legal move changes it by one, or leaves the ladder.
fn rank(state: State) -> i32 {
    match state {
        State::Instinct => 0,
        State::Pattern => 1,
        State::Rule => 2,
        State::Untestable | State::Killed | State::Archived => 10,
    }
}

proptest! {
    #[test]
    fn a_sweep_keeps_every_promise(
        lessons in prop::collection::vec(any_lesson(), 0..12),
        evidence in any_session(),
        salted in any::<bool>(),
    ) {
        let thresholds = if salted { measured_thresholds() } else { Thresholds::UNSALTED };
        // The line number tells the lessons apart below.
        let lessons: Vec<Lesson> = lessons
            .into_iter()
            .enumerate()
            .map(|(line, lesson)| Lesson { line, ..lesson })
            .collect();
        let out = sweep(&lessons, &evidence, &SweptSessions::new(), thresholds);

        // No lesson disappears: every one is kept or archived, in order, and only KILLED
        // ones are archived.
        prop_assert_eq!(out.lessons.len() + out.archived.len(), lessons.len());
        prop_assert!(out.archived.iter().all(|l| l.state == State::Killed));
        let mut kept = out.lessons.iter();
        let mut archived = out.archived.iter();
        for before in &lessons {
            let next = if kept.clone().next().is_some_and(|l| l.line == before.line) {
                kept.next()
            } else {
                archived.next()
            };
            let after = next.expect("accounted for");
            prop_assert_eq!(after.line, before.line);
            prop_assert_eq!(&after.description, &before.description);
            // Confidence stays in [0, 1].
            prop_assert!((0.0..=1.0).contains(&after.confidence));
            // At most one step per lesson.
            if after.state != before.state {
                let (from, to) = (rank(before.state), rank(after.state));
                prop_assert!((from - to).abs() == 1 || to == 10, "{:?} -> {:?}", before.state, after.state);
                prop_assert!(!before.pending_approval);
            }
        }
        prop_assert!(out.transitions.iter().all(|t| t.from != t.to));
        let moved = lessons.iter().filter(|l| !matches!(l.state, State::Killed | State::Archived)).count();
        prop_assert!(out.transitions.len() <= moved);
        let counted = out.counters.promotions + out.counters.demotions + out.counters.kills;
        prop_assert_eq!(counted, out.transitions.len() as u64);

        // A second sweep of the same session changes nothing.
        let mut swept = SweptSessions::new();
        swept.insert(evidence.id.clone());
        let again = sweep(&out.lessons, &evidence, &swept, thresholds);
        prop_assert_eq!(&again.lessons, &out.lessons);
        prop_assert!(again.archived.is_empty() && again.transitions.is_empty());
        prop_assert_eq!(again.counters, Counters::default());
        prop_assert_eq!(again.outcome, Outcome::AlreadySwept);
    }
}
