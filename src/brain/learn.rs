//! What a correction does to the lessons (brain spec §6.9, pipeline step 9): reinforce the most
//! similar lesson of its category, or create a new INSTINCT lesson. [`learn`] decides and answers
//! a [`Learned`]; [`Learned::apply`] makes the textual change (a new lesson appended, or the
//! correction id recorded on the reinforced one).
//!
//! Matching follows 0.6.0: among the lessons of the same category, KILLED ones included, the
//! first with the highest similarity wins when it reaches the category's threshold
//! ([`threshold`]). Similarity is the cosine of term counts over words of three letters or more,
//! stop words removed and synonyms mapped to one word ([`similarity`]); the synonym groups are
//! this module's own. One fix (spec §13 #6): a RULE's text is never rewritten by a longer
//! instruction (0.6.0 did, which also changed its rule id); the instruction is kept as evidence
//! instead.
//!
//! Not here: confidence, fire counts beyond the one reinforcement, aging and tier moves (the
//! confidence engine, §8), the duplicate check of step 7 (it needs the event store), the events
//! and the file write. Pure: no I/O, no clock (the caller passes the date).

use std::collections::BTreeMap;

use super::instruction::{self, MAX_INSTRUCTION_CHARS};
use super::lessons::{BetaParams, Climb, Lesson, Metadata, State};

/// A new lesson's confidence.
pub const INITIAL_CONFIDENCE: f64 = 0.60;

/// The `Scope:` of a lesson learned from a correction, as 0.6.0 writes it.
pub const CORRECTION_SCOPE: &str = r#"{"correction_scope": "domain"}"#;

/// The similarity threshold of a category without its own.
pub const DEFAULT_THRESHOLD: f64 = 0.35;

/// One correction, as the lesson step sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correction<'a> {
    /// Upper-case category (`CODE`, `CONTENT`, …).
    pub category: &'a str,
    /// The brain's severity label (`as-is` … `discarded`), kept as evidence.
    pub severity: &'a str,
    /// The extracted instruction ([`instruction::extract`]).
    pub instruction: &'a str,
    /// The id of the CORRECTION event, recorded in the lesson's `Corrections:`.
    pub correction_id: &'a str,
    /// The session number, if the client named a session.
    pub session: Option<i64>,
    /// Today's local date, `YYYY-MM-DD`: a new lesson's date.
    pub date: &'a str,
    /// The correction needs review (an adversarial phrase): a new lesson waits for approval.
    pub approval_required: bool,
}

/// What a correction does to the lessons.
#[derive(Debug, Clone, PartialEq)]
pub enum Learned {
    /// A new INSTINCT lesson, to be appended.
    Created(Box<Lesson>),
    /// The lesson at `index` of the slice given to [`learn`] is reinforced.
    Reinforced {
        /// Its index.
        index: usize,
        /// What reinforced it.
        evidence: Evidence,
    },
}

/// The record of a reinforcement, for the caller's confidence update and events.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The CORRECTION event's id.
    pub correction_id: String,
    /// The correction's severity label.
    pub severity: String,
    /// The session, if any.
    pub session: Option<i64>,
    /// The similarity that matched, in [0, 1].
    pub similarity: f64,
    /// The instruction that reinforced the lesson.
    pub instruction: String,
    /// The text the lesson's description becomes: the instruction, when it is longer than the
    /// description and the lesson is not a RULE (0.6.0 rewrote RULEs too, §13 #6). `None`
    /// keeps the description.
    pub new_description: Option<String>,
}

/// A lesson that matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    /// Its index.
    pub index: usize,
    /// Its similarity to the instruction.
    pub similarity: f64,
}

/// Decides what `correction` does to `lessons` (in file order). See the module doc.
pub fn learn(lessons: &[Lesson], correction: &Correction<'_>) -> Learned {
    learn_among(lessons, correction)
}

/// [`learn`] over any sequence of lessons in file order (the indices of [`Learned`] count in
/// it), so that a caller holding them elsewhere need not copy them.
pub fn learn_among<'a>(
    lessons: impl IntoIterator<Item = &'a Lesson>,
    correction: &Correction<'_>,
) -> Learned {
    let instruction = instruction::one_line(correction.instruction, MAX_INSTRUCTION_CHARS);
    match best_of(lessons, correction.category, &instruction) {
        Some((found, lesson)) if found.similarity >= threshold(correction.category) => {
            let longer = instruction.chars().count() > lesson.description.chars().count();
            let new_description =
                (longer && lesson.state != State::Rule).then(|| instruction.clone());
            Learned::Reinforced {
                index: found.index,
                evidence: Evidence {
                    correction_id: correction.correction_id.to_owned(),
                    severity: correction.severity.to_owned(),
                    session: correction.session,
                    similarity: found.similarity,
                    instruction,
                    new_description,
                },
            }
        }
        _ => Learned::Created(Box::new(new_lesson(correction, instruction))),
    }
}

/// The most similar lesson of `category` (KILLED ones included, as in 0.6.0) to `instruction`:
/// the first of the highest similarity; `None` when the category has no lesson.
pub fn best_match(lessons: &[Lesson], category: &str, instruction: &str) -> Option<Match> {
    best_of(lessons, category, instruction).map(|(found, _)| found)
}

/// [`best_match`] over any sequence, with the lesson that matched.
fn best_of<'a>(
    lessons: impl IntoIterator<Item = &'a Lesson>,
    category: &str,
    instruction: &str,
) -> Option<(Match, &'a Lesson)> {
    let wanted = category.to_uppercase();
    let terms = Terms::of(instruction);
    let mut best: Option<(Match, &Lesson)> = None;
    for (index, lesson) in lessons.into_iter().enumerate() {
        if lesson.category != wanted {
            continue;
        }
        let similarity = terms.cosine(&Terms::of(&lesson.description));
        if best.is_none_or(|(found, _)| similarity > found.similarity) {
            best = Some((Match { index, similarity }, lesson));
        }
    }
    best
}

/// The similarity a lesson of `category` needs to be reinforced rather than joined by a new
/// one: stricter for facts, looser for style (0.6.0's values).
pub fn threshold(category: &str) -> f64 {
    match category.to_uppercase().as_str() {
        "ACCURACY" | "FACTUAL" => 0.60,
        "CORRECTNESS" => 0.55,
        "PROCESS" => 0.50,
        "DRAFTING" => 0.35,
        "TONE" | "STYLE" | "FORMATTING" => 0.30,
        _ => DEFAULT_THRESHOLD,
    }
}

/// How similar two texts are, in [0, 1]: the cosine of their term counts (see the module doc).
/// 0 when either has no term.
pub fn similarity(a: &str, b: &str) -> f64 {
    Terms::of(a).cosine(&Terms::of(b))
}

impl Learned {
    /// Makes the decision's change to `lessons`, the slice [`learn`] decided on: appends the
    /// new lesson, or records the correction on the reinforced one (its id in `Corrections:`,
    /// one more fire, the new description if any). Confidence and aging are left to the
    /// confidence engine.
    pub fn apply(&self, lessons: &mut Vec<Lesson>) {
        match self {
            Learned::Created(lesson) => lessons.push(lesson.as_ref().clone()),
            Learned::Reinforced { index, evidence } => {
                if let Some(lesson) = lessons.get_mut(*index) {
                    evidence.reinforce(lesson);
                }
            }
        }
    }
}

impl Evidence {
    /// Records this reinforcement on `lesson`, the one it matched (see [`Learned::apply`]).
    pub fn reinforce(&self, lesson: &mut Lesson) {
        lesson.fire_count = lesson.fire_count.saturating_add(1);
        lesson.corrections.push(self.correction_id.clone());
        if let Some(description) = &self.new_description {
            lesson.description.clone_from(description);
        }
    }
}

/// A new INSTINCT lesson for `correction`.
fn new_lesson(correction: &Correction<'_>, instruction: String) -> Lesson {
    Lesson {
        line: 0,
        date: correction.date.to_owned(),
        state: State::Instinct,
        // A lesson awaiting approval must not be injected: 0.6.0 gives it no confidence.
        confidence: if correction.approval_required {
            0.0
        } else {
            INITIAL_CONFIDENCE
        },
        category: correction.category.to_uppercase(),
        description: instruction,
        root_cause: String::new(),
        fire_count: 0,
        sessions_since_fire: 0,
        misfires: 0,
        agent: String::new(),
        kill_reason: String::new(),
        corrections: vec![correction.correction_id.to_owned()],
        pending_approval: correction.approval_required,
        parent_meta_rule: String::new(),
        memory_links: Vec::new(),
        scope: CORRECTION_SCOPE.to_owned(),
        beta: BetaParams::default(),
        domain_scores: String::new(),
        path: String::new(),
        secondary_categories: Vec::new(),
        climb: Climb::default(),
        metadata: Metadata::default(),
    }
}

/// Groups of words that mean the same for matching, each mapped to its first word. The last two
/// merge opposites on purpose: "avoid hedging" and "be direct" are one lesson, and so are the two
/// registers of tone.
const SYNONYMS: &[&[&str]] = &[
    &[
        "concise", "brief", "short", "shorter", "succinct", "terse", "tighter",
    ],
    &[
        "detail",
        "details",
        "detailed",
        "elaborate",
        "expand",
        "thorough",
    ],
    &["verify", "check", "confirm", "validate", "double"],
    &["avoid", "skip", "omit", "exclude", "drop"],
    &["include", "add", "mention"],
    &["test", "tests", "testing", "tested"],
    &[
        "error",
        "errors",
        "exception",
        "exceptions",
        "failure",
        "failures",
    ],
    &[
        "type",
        "types",
        "typed",
        "typing",
        "hint",
        "hints",
        "annotation",
        "annotations",
    ],
    &["list", "lists", "bullet", "bullets", "bulleted"],
    &["email", "emails", "mail", "message", "messages"],
    &["docs", "doc", "documentation", "readme", "document"],
    &["function", "functions", "method", "methods"],
    &[
        "hedge",
        "hedging",
        "hedges",
        "direct",
        "assertive",
        "confident",
    ],
    &["tone", "casual", "formal", "register", "informal"],
];

/// The term counts of a text: lower-cased runs of at least three ASCII letters, stop words
/// removed, synonyms mapped to their group's first word.
struct Terms(BTreeMap<&'static str, f64>, BTreeMap<String, f64>);

impl Terms {
    fn of(text: &str) -> Terms {
        let mut canonical: BTreeMap<&'static str, f64> = BTreeMap::new();
        let mut other: BTreeMap<String, f64> = BTreeMap::new();
        let lower = text.to_lowercase();
        for word in lower
            .split(|c: char| !c.is_ascii_lowercase())
            .filter(|word| word.len() >= 3)
        {
            if instruction::is_stop_word(word) {
                continue;
            }
            match synonym_of(word) {
                Some(head) => *canonical.entry(head).or_default() += 1.0,
                None => *other.entry(word.to_owned()).or_default() += 1.0,
            }
        }
        Terms(canonical, other)
    }

    fn cosine(&self, other: &Terms) -> f64 {
        let dot = dot(&self.0, &other.0) + dot(&self.1, &other.1);
        let norm = (self.norm_squared() * other.norm_squared()).sqrt();
        if norm == 0.0 { 0.0 } else { dot / norm }
    }

    fn norm_squared(&self) -> f64 {
        self.0.values().chain(self.1.values()).map(|n| n * n).sum()
    }
}

fn dot<K: Ord>(a: &BTreeMap<K, f64>, b: &BTreeMap<K, f64>) -> f64 {
    a.iter()
        .filter_map(|(term, n)| b.get(term).map(|m| n * m))
        .sum()
}

/// The head word of the synonym group `word` belongs to.
fn synonym_of(word: &str) -> Option<&'static str> {
    SYNONYMS
        .iter()
        .find(|group| group.contains(&word))
        .map(|group| group[0])
}

#[cfg(test)]
mod tests {
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
}

/// The decisions of 0.6.0 on recorded `/correct` sequences (see the fixture's `about`),
/// replayed through [`instruction::extract`], [`learn`] and the attribution trackers.
#[cfg(test)]
mod differential {
    use std::collections::HashMap;

    use serde::Deserialize;

    use super::super::attribution::{Edit, Trackers};
    use super::super::category::Category;
    use super::super::lessons::parse;
    use super::super::rules::{FiredRule, tokens};
    use super::*;

    const FIXTURE: &str = include_str!("testdata/correct_decisions_0_6_0.json");

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
                    addition_fingerprint: attribution
                        .addition_lesson
                        .map(|lesson| lesson.fingerprint),
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
}
