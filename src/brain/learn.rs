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

use super::instruction::{self, MAX_INSTRUCTION_CHARS};
use super::lessons::{Lesson, State};

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
    learn_among(lessons, correction, &mut TermsMemo::default())
}

/// [`learn`] over any sequence of lessons in file order (the indices of [`Learned`] count in
/// it), so that a caller holding them elsewhere need not copy them; `memo` keeps the lessons'
/// terms for the next correction.
pub fn learn_among<'a>(
    lessons: impl IntoIterator<Item = &'a Lesson>,
    correction: &Correction<'_>,
    memo: &mut TermsMemo,
) -> Learned {
    let instruction = instruction::one_line(correction.instruction, MAX_INSTRUCTION_CHARS);
    match best_of(lessons, correction.category, &instruction, memo) {
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

/// The first lesson of `category` most similar to `instruction`, when there is one.
pub fn best_match(lessons: &[Lesson], category: &str, instruction: &str) -> Option<Match> {
    best_of(lessons, category, instruction, &mut TermsMemo::default()).map(|(found, _)| found)
}

/// [`best_match`] over any sequence, with the lesson that matched.
fn best_of<'a>(
    lessons: impl IntoIterator<Item = &'a Lesson>,
    category: &str,
    instruction: &str,
    memo: &mut TermsMemo,
) -> Option<(Match, &'a Lesson)> {
    let wanted = category.to_uppercase();
    let terms = Terms::of(instruction);
    let mut best: Option<(Match, &Lesson)> = None;
    for (index, lesson) in lessons.into_iter().enumerate() {
        if lesson.category != wanted {
            continue;
        }
        let similarity = memo.similarity(&terms, &lesson.description);
        if best.is_none_or(|(found, _)| similarity > found.similarity) {
            best = Some((Match { index, similarity }, lesson));
        }
    }
    best
}

/// The terms of the lesson descriptions matched so far: a correction is compared with every
/// lesson of its category, and tokenising them all again for each correction was most of the
/// cost of learning on a large brain. A description's terms depend on its text alone, so a
/// kept copy gives the same similarity to the last bit. Bounded: emptied when full.
#[derive(Debug)]
pub struct TermsMemo {
    terms: std::collections::HashMap<String, Terms>,
    limit: usize,
}

impl Default for TermsMemo {
    fn default() -> TermsMemo {
        TermsMemo::with_limit(TERMS_MEMO_LIMIT)
    }
}

/// How many descriptions a [`TermsMemo`] keeps: a few times the lessons of a large brain.
pub const TERMS_MEMO_LIMIT: usize = 65_536;

impl TermsMemo {
    /// A memo that keeps at most `limit` descriptions.
    pub fn with_limit(limit: usize) -> TermsMemo {
        TermsMemo {
            terms: std::collections::HashMap::new(),
            limit,
        }
    }

    /// How many descriptions it keeps now.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether it keeps none.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    fn similarity(&mut self, terms: &Terms, description: &str) -> f64 {
        if let Some(known) = self.terms.get(description) {
            return terms.cosine(known);
        }
        let known = Terms::of(description);
        let similarity = terms.cosine(&known);
        if self.terms.len() >= self.limit {
            self.terms.clear();
        }
        self.terms.insert(description.to_owned(), known);
        similarity
    }
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
    let category = correction.category.to_uppercase();
    Lesson {
        // A lesson awaiting approval must not be injected: 0.6.0 gives it no confidence.
        confidence: if correction.approval_required {
            0.0
        } else {
            INITIAL_CONFIDENCE
        },
        description: instruction,
        corrections: vec![correction.correction_id.to_owned()],
        pending_approval: correction.approval_required,
        scope: CORRECTION_SCOPE.to_owned(),
        ..Lesson::with_defaults(correction.date, State::Instinct, &category, "")
    }
}

/// Groups of words that mean the same for matching, each mapped to its first word. The last two
/// merge opposites on purpose: "avoid hedging" and "be direct" are one lesson, and so are the two
/// registers of tone.
// One group a line, so that the table reads as one.
#[rustfmt::skip]
const SYNONYMS: &[&[&str]] = &[
    &["concise", "brief", "short", "shorter", "succinct", "terse", "tighter"],
    &["detail", "details", "detailed", "elaborate", "expand", "thorough"],
    &["verify", "check", "confirm", "validate", "double"],
    &["avoid", "skip", "omit", "exclude", "drop"],
    &["include", "add", "mention"],
    &["test", "tests", "testing", "tested"],
    &["error", "errors", "exception", "exceptions", "failure", "failures"],
    &["type", "types", "typed", "typing", "hint", "hints", "annotation", "annotations"],
    &["list", "lists", "bullet", "bullets", "bulleted"],
    &["email", "emails", "mail", "message", "messages"],
    &["docs", "doc", "documentation", "readme", "document"],
    &["function", "functions", "method", "methods"],
    &["hedge", "hedging", "hedges", "direct", "assertive", "confident"],
    &["tone", "casual", "formal", "register", "informal"],
];

/// The term counts of a text: lower-cased runs of at least three ASCII letters, stop words
/// removed, synonyms mapped to their group's first word. Each list is sorted by term, so that a
/// dot product or a norm adds its terms in the same order as sorted maps would (the similarity
/// must be the same to the last bit: a threshold decides on it). Terms that are no synonym are
/// ranges of `lower`: a lesson is matched often, and allocating per word was most of its cost.
#[derive(Debug)]
struct Terms {
    lower: String,
    canonical: Vec<(&'static str, f64)>,
    other: Vec<(usize, usize, f64)>,
}

impl Terms {
    fn of(text: &str) -> Terms {
        let lower = text.to_lowercase();
        let mut canonical: Vec<&'static str> = Vec::new();
        let mut words: Vec<(usize, usize)> = Vec::new();
        let mut start = None;
        for (at, c) in lower
            .char_indices()
            .chain(std::iter::once((lower.len(), ' ')))
        {
            match (c.is_ascii_lowercase(), start) {
                (true, None) => start = Some(at),
                (false, Some(from)) => {
                    start = None;
                    let word = &lower[from..at];
                    if word.len() < 3 || instruction::is_stop_word(word) {
                        continue;
                    }
                    match synonym_of(word) {
                        Some(head) => canonical.push(head),
                        None => words.push((from, at)),
                    }
                }
                _ => {}
            }
        }
        canonical.sort_unstable();
        words.sort_unstable_by(|a, b| lower[a.0..a.1].cmp(&lower[b.0..b.1]));
        let canonical = counted(canonical, |a, b| a == b).collect();
        let other = counted(words, |a, b| lower[a.0..a.1] == lower[b.0..b.1])
            .map(|((from, to), n)| (from, to, n))
            .collect();
        Terms {
            lower,
            canonical,
            other,
        }
    }

    fn word(&self, (from, to): (usize, usize)) -> &str {
        &self.lower[from..to]
    }

    fn cosine(&self, other: &Terms) -> f64 {
        let canonical = dot(&self.canonical, &other.canonical, |theirs, ours| {
            theirs.0.cmp(ours.0)
        });
        let words = dot(&self.other, &other.other, |theirs, ours| {
            other
                .word((theirs.0, theirs.1))
                .cmp(self.word((ours.0, ours.1)))
        });
        let dot = canonical + words;
        let norm = (self.norm_squared() * other.norm_squared()).sqrt();
        if norm == 0.0 { 0.0 } else { dot / norm }
    }

    fn norm_squared(&self) -> f64 {
        self.canonical
            .iter()
            .map(|(_, n)| n)
            .chain(self.other.iter().map(|(_, _, n)| n))
            .map(|n| n * n)
            .sum()
    }
}

/// Runs of equal items of a sorted list, each once with how many times it occurs.
fn counted<T: Copy>(
    sorted: Vec<T>,
    equal: impl Fn(&T, &T) -> bool,
) -> impl Iterator<Item = (T, f64)> {
    let mut runs: Vec<(T, f64)> = Vec::new();
    for item in sorted {
        match runs.last_mut() {
            Some((last, n)) if equal(last, &item) => *n += 1.0,
            _ => runs.push((item, 1.0)),
        }
    }
    runs.into_iter()
}

/// The sum over `a`'s terms, in order, of their count times the same term's in `b` (both sorted;
/// `order` compares a term of `b` with one of `a`).
fn dot<T: HasCount>(a: &[T], b: &[T], order: impl Fn(&T, &T) -> std::cmp::Ordering) -> f64 {
    // As `Iterator::sum` of `f64` starts: an empty sum is -0.0.
    let mut sum = -0.0;
    let mut rest = b;
    for term in a {
        while let Some((first, tail)) = rest.split_first() {
            match order(first, term) {
                std::cmp::Ordering::Less => rest = tail,
                std::cmp::Ordering::Equal => {
                    sum += term.count() * first.count();
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
    }
    sum
}

/// A term with its count.
trait HasCount {
    fn count(&self) -> f64;
}

impl HasCount for (&'static str, f64) {
    fn count(&self) -> f64 {
        self.1
    }
}

impl HasCount for (usize, usize, f64) {
    fn count(&self) -> f64 {
        self.2
    }
}

/// The head word of the synonym group `word` belongs to.
fn synonym_of(word: &str) -> Option<&'static str> {
    SYNONYMS
        .iter()
        .find(|group| group.contains(&word))
        .map(|group| group[0])
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod differential;
