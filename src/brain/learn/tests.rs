use super::super::lessons::parse;
use super::*;

const BRAIN: &str = "\
[2026-03-05] [RULE:0.92] CODE: Always add type hints to public Python functions
  Fire count: 7 | Sessions since fire: 2 | Misfires: 1

[2026-03-09] [PATTERN:0.70] CONTENT: Keep release notes short and factual
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0

[2026-03-10] [KILLED:0.00] CONTENT: Never mention the weather in reports

[2026-03-11] [INSTINCT:0.60] CONTENT: Keep summaries brief
";

fn lessons() -> Vec<Lesson> {
    let parsed = parse(BRAIN);
    assert_eq!(parsed.problems, [], "the fixture parses cleanly");
    parsed.lessons
}

fn correction<'a>(category: &'a str, instruction: &'a str) -> Correction<'a> {
    Correction {
        category,
        severity: "major",
        instruction,
        correction_id: "42",
        session: Some(3),
        date: "2026-04-01",
        approval_required: false,
    }
}

/// A decision as (created?, index reinforced).
type Decision = (bool, Option<usize>);

fn decision(category: &str, instruction: &str) -> Decision {
    match learn(&lessons(), &correction(category, instruction)) {
        Learned::Created(_) => (true, None),
        Learned::Reinforced { index, .. } => (false, Some(index)),
    }
}

#[test]
fn decisions_by_category_and_similarity() {
    let table: &[(&str, &str, Decision)] = &[
        // Type hints and annotations are one group; "methods" and "functions" another.
        (
            "CODE",
            "Add type annotations to public Python methods",
            (false, Some(0)),
        ),
        // The same words in another category never match.
        (
            "CONFIG",
            "Add type annotations to public Python methods",
            (true, None),
        ),
        ("CODE", "Use tabs for indentation", (true, None)),
        // Two lessons share "keep" and "brief/short": the first of the highest wins.
        ("CONTENT", "Keep it short", (false, Some(3))),
        ("CONTENT", "Keep release notes concise", (false, Some(1))),
        // KILLED lessons are matched, as in 0.6.0.
        ("CONTENT", "Never mention the weather", (false, Some(2))),
        // A category with no lesson at all.
        ("GENERAL", "Keep it short", (true, None)),
    ];
    for (category, instruction, expected) in table {
        assert_eq!(
            decision(category, instruction),
            *expected,
            "{category}: {instruction}"
        );
    }
}

#[test]
fn thresholds_per_category() {
    let table = [
        ("ACCURACY", 0.60),
        ("factual", 0.60),
        ("CORRECTNESS", 0.55),
        ("PROCESS", 0.50),
        ("DRAFTING", 0.35),
        ("TONE", 0.30),
        ("STYLE", 0.30),
        ("FORMATTING", 0.30),
        ("CODE", 0.35),
    ];
    for (category, expected) in table {
        assert_eq!(threshold(category), expected, "{category}");
    }
    // Just under and at the threshold: 0.5 reinforces a PROCESS lesson, 0.49 does not.
    let lesson = parse("[2026-01-01] [INSTINCT:0.60] PROCESS: alpha beta\n").lessons;
    let at = learn(&lesson, &correction("PROCESS", "alpha gamma"));
    assert!(matches!(at, Learned::Reinforced { .. }), "{at:?}");
    let under = learn(&lesson, &correction("PROCESS", "alpha gamma delta"));
    assert!(matches!(under, Learned::Created(_)), "{under:?}");
}

#[test]
fn similarity_ignores_case_stop_words_short_words_and_maps_synonyms() {
    assert_eq!(
        similarity("Keep it SHORT", "keep the text concise"),
        similarity("keep short", "keep concise text")
    );
    assert!((similarity("Keep it short", "keep concise") - 1.0).abs() < 1e-12);
    assert_eq!(similarity("it is a", "the of"), 0.0);
    assert_eq!(
        similarity("go do it", "go do it"),
        0.0,
        "words under three letters"
    );
    let half = similarity("alpha beta", "alpha gamma");
    assert!((half - 0.5).abs() < 1e-12, "{half}");
}

#[test]
fn a_new_lesson_is_an_instinct_with_the_correction_id() {
    let Learned::Created(lesson) = learn(&lessons(), &correction("GENERAL", "Cite\nsources"))
    else {
        panic!("a lesson in an empty category is created");
    };
    assert_eq!(lesson.state, State::Instinct);
    assert_eq!(lesson.confidence, INITIAL_CONFIDENCE);
    assert_eq!(lesson.category, "GENERAL");
    assert_eq!(lesson.description, "Cite sources", "one line");
    assert_eq!(lesson.date, "2026-04-01");
    assert_eq!(lesson.corrections, ["42"]);
    assert_eq!(lesson.scope, CORRECTION_SCOPE);
    assert!(!lesson.pending_approval);
    let mut review = correction("GENERAL", "Cite sources");
    review.approval_required = true;
    let Learned::Created(pending) = learn(&lessons(), &review) else {
        panic!("created");
    };
    assert!(pending.pending_approval);
    assert_eq!(pending.confidence, 0.0);
}

#[test]
fn regression_13_6_a_rule_keeps_its_text_other_lessons_take_a_longer_one() {
    let longer = "Always add type hints and docstrings to every public Python function";
    // 0.6.0 rewrote the RULE with the longer instruction (changing its rule id); here
    // the text stays and the instruction is kept as evidence.
    let mut all = lessons();
    let learned = learn(&all, &correction("CODE", longer));
    let Learned::Reinforced { index: 0, evidence } = &learned else {
        panic!("the RULE is reinforced: {learned:?}");
    };
    assert_eq!(evidence.new_description, None);
    assert_eq!(evidence.instruction, longer);
    learned.apply(&mut all);
    assert_eq!(
        all[0].description,
        "Always add type hints to public Python functions"
    );
    assert_eq!(all[0].corrections, ["42"]);
    assert_eq!(all[0].fire_count, 8);
    // A PATTERN takes the longer text, as in 0.6.0.
    let longer_note = "Keep release notes short, factual and free of marketing words";
    let learned = learn(&all, &correction("CONTENT", longer_note));
    let Learned::Reinforced { index: 1, evidence } = &learned else {
        panic!("the PATTERN is reinforced: {learned:?}");
    };
    assert_eq!(evidence.new_description.as_deref(), Some(longer_note));
    learned.apply(&mut all);
    assert_eq!(all[1].description, longer_note);
    // A shorter instruction never replaces.
    let learned = learn(&all, &correction("CONTENT", "Keep release notes short"));
    assert!(matches!(
        &learned,
        Learned::Reinforced { index: 1, evidence } if evidence.new_description.is_none()
    ));
}

#[test]
fn apply_appends_a_created_lesson() {
    let mut all = lessons();
    let learned = learn(
        &all,
        &correction("FRONTEND", "Use rem units for font sizes"),
    );
    learned.apply(&mut all);
    assert_eq!(all.len(), 5);
    assert_eq!(all[4].description, "Use rem units for font sizes");
    assert_eq!(all[4].category, "FRONTEND");
}

/// The similarity as first written, over sorted maps: the reference the faster one must equal
/// to the last bit.
fn reference_similarity(a: &str, b: &str) -> f64 {
    use std::collections::BTreeMap;
    type Counts = (BTreeMap<&'static str, f64>, BTreeMap<String, f64>);
    fn of(text: &str) -> Counts {
        let mut counts: Counts = (BTreeMap::new(), BTreeMap::new());
        for word in text
            .to_lowercase()
            .split(|c: char| !c.is_ascii_lowercase())
            .filter(|word| word.len() >= 3)
        {
            if instruction::is_stop_word(word) {
                continue;
            }
            match synonym_of(word) {
                Some(head) => *counts.0.entry(head).or_default() += 1.0,
                None => *counts.1.entry(word.to_owned()).or_default() += 1.0,
            }
        }
        counts
    }
    fn dot<K: Ord>(a: &BTreeMap<K, f64>, b: &BTreeMap<K, f64>) -> f64 {
        a.iter()
            .filter_map(|(term, n)| b.get(term).map(|m| n * m))
            .sum()
    }
    fn norm(c: &Counts) -> f64 {
        c.0.values().chain(c.1.values()).map(|n| n * n).sum()
    }
    let (x, y) = (of(a), of(b));
    let dot = dot(&x.0, &y.0) + dot(&x.1, &y.1);
    let norm = (norm(&x) * norm(&y)).sqrt();
    if norm == 0.0 { 0.0 } else { dot / norm }
}

proptest::proptest! {
    #[test]
    fn similarity_equals_the_sorted_map_reference(
        a in "(([A-Za-z]{1,9}|use|the|tone|hedge|hedging|errors|Écrire|ßtraße|test)[ ,.'!-]{0,2}){0,14}",
        b in "(([A-Za-z]{1,9}|use|the|tone|casual|hedges|failure|naïve|test)[ ,.'!-]{0,2}){0,14}",
    ) {
        proptest::prop_assert_eq!(similarity(&a, &b).to_bits(), reference_similarity(&a, &b).to_bits());
        proptest::prop_assert_eq!(similarity(&a, &a).to_bits(), reference_similarity(&a, &a).to_bits());
    }
}

/// A sequence of corrections learned one after another into `lessons`, with `memo` kept across
/// them as a batch keeps it: the decisions and the lessons they leave.
fn learn_sequence(memo: &mut TermsMemo) -> (Vec<Learned>, Vec<Lesson>) {
    let mut lessons = lessons();
    let instructions = [
        ("CONTENT", "Keep release notes short"),
        ("CODE", "Add type annotations to public Python methods"),
        ("CONTENT", "Keep the summaries brief and factual"),
        ("CONTENT", "Never mention the weather"),
        ("CODE", "Use tabs for indentation"),
        ("CODE", "Use tabs for indentation in Makefiles"),
        (
            "CONTENT",
            "Keep release notes short and factual, with dates",
        ),
    ];
    let mut decisions = Vec::new();
    for (category, instruction) in instructions {
        let learned = learn_among(&lessons, &correction(category, instruction), memo);
        learned.apply(&mut lessons);
        decisions.push(learned);
    }
    (decisions, lessons)
}

#[test]
fn kept_terms_decide_as_fresh_ones_also_when_the_memo_fills_and_empties() {
    let fresh: Vec<(Vec<Learned>, Vec<Lesson>)> = (0..7)
        .map(|_| learn_sequence(&mut TermsMemo::with_limit(0)))
        .collect();
    let mut kept = TermsMemo::default();
    assert_eq!(learn_sequence(&mut kept), fresh[0]);
    assert!(!kept.is_empty(), "the lessons matched are kept");
    // Again with everything known: the same decisions, from the kept terms.
    let known = kept.len();
    assert_eq!(learn_sequence(&mut kept), fresh[0]);
    assert!(kept.len() >= known);
    // A memo smaller than the lessons of a category empties itself and stays bounded.
    let mut small = TermsMemo::with_limit(2);
    assert_eq!(learn_sequence(&mut small), fresh[0]);
    assert!(small.len() <= 2);
}
