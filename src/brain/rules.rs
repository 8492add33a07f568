//! What `/apply-rules` decides (brain spec §6.2): which lessons apply to a prompt, in which
//! order, and the `<brain-rules>` text the plugin injects.
//!
//! [`RuleBook`] is built once per read of `lessons.md` (it parses each lesson's scope and counts
//! the rules), so that a request only does arithmetic over the lessons and picks the best ten
//! without sorting them all; hashing, dedup and merge run over those ten only.
//!
//! The decision, step by step as 0.6.0 takes it:
//! - the TTL view: a RULE idle 50 sessions or more counts as a PATTERN
//!   ([`Lesson::effective_state`]);
//! - an empty `task_type` is guessed from the prompt's words, and then the query's `agent_type`
//!   is reset to `""` (a 0.6.0 quirk kept for compatibility: it drops the `"general"` default);
//! - with ten or more RULEs only RULEs are eligible, else RULEs and PATTERNs;
//! - relevance from the lesson's `Scope:` against the query, kept at 0.4 or more;
//! - a stable sort by (tier, difficulty, relevance, confidence), best first, capped at ten;
//! - the injection text: near-duplicates of the same category dropped, each category merged
//!   into one line, RULE lines before PATTERN lines.
//!
//! One deliberate difference: inside a tier, 0.6.0 orders the injection text's lines by a random
//! permutation drawn once per process. Here they keep the ranked order (a category's merged line
//! sits where the category first ranks), so the text is the same on every run.
//!
//! Pure: no file access, no session state (the caller keeps [`Applied::fired`]).

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde_json::Value;

use super::lessons::{Lesson, State};
use super::pytext;
use super::rule_id::rule_id;

/// At most this many rules are applied; with this many RULEs, PATTERNs are not eligible.
pub const MAX_RULES: usize = 10;

/// A lesson applies when its relevance reaches this.
pub const MIN_RELEVANCE: f64 = 0.4;

/// The `agent_type` a request without one has.
pub const DEFAULT_AGENT_TYPE: &str = "general";

/// Same-category rules sharing this share of words (of the shorter) are near-duplicates.
const DUPLICATE_OVERLAP: f64 = 0.85;

/// Every parsed lesson is a behavioural lesson, and those get this boost.
const BEHAVIOURAL_BOOST: f64 = 1.1;

/// The task types guessed from a prompt: the first group with a word found in the lower-cased
/// prompt (as a substring) wins.
const TASK_TYPE_WORDS: [(&str, &[&str]); 7] = [
    (
        "email",
        &[
            "email",
            "draft",
            "compose",
            "reply",
            "follow-up",
            "followup",
            "subject line",
        ],
    ),
    (
        "demo_prep",
        &["demo", "demo prep", "presentation", "deck", "slide"],
    ),
    (
        "code",
        &[
            "code",
            "implement",
            "refactor",
            "debug",
            "fix bug",
            "test",
            "function",
        ],
    ),
    (
        "prospecting",
        &["prospect", "lead", "enrich", "icp", "outreach", "campaign"],
    ),
    (
        "research",
        &["research", "analyze", "investigate", "compare", "evaluate"],
    ),
    ("call", &["call", "meeting", "agenda", "talking points"]),
    (
        "document",
        &["document", "readme", "spec", "guide", "report", "write up"],
    ),
];

/// What `/apply-rules` was asked.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The user's prompt.
    pub prompt: &'a str,
    /// `context.task_type`, `""` when absent.
    pub task_type: &'a str,
    /// `context.agent_type`, [`DEFAULT_AGENT_TYPE`] when absent.
    pub agent_type: &'a str,
}

/// One applied rule, as `/apply-rules` answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedRule {
    /// See [`rule_id`].
    pub rule_id: String,
    /// The effective state: [`State::Rule`] or [`State::Pattern`].
    pub tier: State,
    /// The lesson's category.
    pub category: String,
    /// `"CATEGORY: description"`.
    pub instruction: String,
    /// The value 0.6.0 computes, to the last bit (e.g. `0.8800000000000001`).
    pub relevance: f64,
}

/// A rule the session saw: kept by the caller for `/correct` (misfires and conflicts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredRule {
    /// See [`rule_id`].
    pub rule_id: String,
    /// The instruction's [`tokens`].
    pub tokens: BTreeSet<String>,
}

/// The decision for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// Best first, at most [`MAX_RULES`], unmerged.
    pub rules: Vec<AppliedRule>,
    /// The `<brain-rules>` block, or `""` when no rule applies.
    pub injection_text: String,
    /// The rules in the same order, with their token sets; `fired_rule_ids` are their ids.
    pub fired: Vec<FiredRule>,
}

/// The lessons of one `lessons.md`, prepared for [`RuleBook::apply`].
#[derive(Debug, Clone, Default)]
pub struct RuleBook {
    /// The RULEs and PATTERNs (effective states), in file order.
    candidates: Vec<Candidate>,
    /// How many lessons are effectively RULEs.
    n_rules: usize,
}

/// A lesson that may be applied, with what ranking needs computed once.
#[derive(Debug, Clone)]
struct Candidate {
    tier: State,
    category: String,
    description: String,
    confidence: f64,
    difficulty: f64,
    scope: Scope,
}

/// The lesson's scope as relevance reads it: how many known fields differ from their default,
/// and the two the query can match.
#[derive(Debug, Clone, Default)]
struct Scope {
    n_set: usize,
    task_type: ScopeValue,
    agent_type: ScopeValue,
}

/// One of the scope's fields the query can match.
#[derive(Debug, Clone, Default)]
enum ScopeValue {
    /// Absent or equal to its default (`""`).
    #[default]
    Unset,
    /// A non-empty string: matches a query with the same text.
    Text(String),
    /// Another JSON value: matches nothing; `truthy` as Python would test it.
    Other { truthy: bool },
}

/// The known scope fields and whether their default is a number (0) rather than text.
const SCOPE_FIELDS: [(&str, FieldDefault); 10] = [
    ("domain", FieldDefault::Text("")),
    ("task_type", FieldDefault::Text("")),
    ("audience", FieldDefault::Text("")),
    ("channel", FieldDefault::Text("")),
    ("stakes", FieldDefault::Text("normal")),
    ("agent_type", FieldDefault::Text("")),
    ("namespace", FieldDefault::Text("")),
    ("temporal_relevance", FieldDefault::Text("")),
    ("max_idle_sessions", FieldDefault::Zero),
    ("created_session", FieldDefault::Zero),
];

#[derive(Debug, Clone, Copy)]
enum FieldDefault {
    Text(&'static str),
    Zero,
}

impl FieldDefault {
    /// Whether `value` equals the default as Python's `==` says (`0 == 0.0 == False`).
    fn is(self, value: &Value) -> bool {
        match (self, value) {
            (FieldDefault::Text(text), Value::String(value)) => value == text,
            (FieldDefault::Zero, Value::Number(number)) => number.as_f64() == Some(0.0),
            (FieldDefault::Zero, Value::Bool(flag)) => !flag,
            _ => false,
        }
    }
}

impl Scope {
    fn of(lesson: &Lesson) -> Scope {
        let Some(fields) = lesson.scope_fields() else {
            return Scope::default();
        };
        let mut scope = Scope::default();
        for (key, default) in SCOPE_FIELDS {
            let Some(value) = fields.get(key) else {
                continue;
            };
            if default.is(value) {
                continue;
            }
            scope.n_set += 1;
            let field = match value {
                Value::String(text) => ScopeValue::Text(text.clone()),
                other => ScopeValue::Other {
                    truthy: python_truthy(other),
                },
            };
            match key {
                "task_type" => scope.task_type = field,
                "agent_type" => scope.agent_type = field,
                _ => {}
            }
        }
        scope
    }

    /// §6.2 step 6, in 0.6.0's operation order so the float is the same.
    fn relevance(&self, task_type: &str, agent_type: &str) -> f64 {
        let base = if self.n_set == 0 {
            1.0
        } else {
            // Only the task and agent fields can match: the query's other fields are at their
            // defaults, and a set field differs from its default.
            let matched = usize::from(self.task_type.matches(task_type))
                + usize::from(self.agent_type.matches(agent_type));
            count_f64_usize(matched) / count_f64_usize(self.n_set)
        };
        let weighted = if base <= 0.0 {
            0.0
        } else if self.task_type.truthy() && self.task_type.matches(task_type) {
            (base * 1.5).min(1.0)
        } else if !self.task_type.truthy() {
            base * 0.8
        } else {
            base
        };
        weighted * BEHAVIOURAL_BOOST
    }
}

impl ScopeValue {
    fn matches(&self, query: &str) -> bool {
        match self {
            ScopeValue::Unset => false,
            ScopeValue::Text(text) => text == query,
            ScopeValue::Other { .. } => false,
        }
    }

    fn truthy(&self) -> bool {
        match self {
            ScopeValue::Unset => false,
            ScopeValue::Text(_) => true,
            ScopeValue::Other { truthy } => *truthy,
        }
    }
}

fn python_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(flag) => *flag,
        Value::Number(number) => number.as_f64() != Some(0.0),
        Value::String(text) => !text.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
    }
}

/// A count as a float. Counts of lessons, words and fires are far below 2^52, so the value is
/// exact, as Python's int-to-float conversion is.
fn count_f64(count: u64) -> f64 {
    count as f64
}

fn count_f64_usize(count: usize) -> f64 {
    count as f64
}

impl Candidate {
    fn priority(&self) -> u8 {
        match self.tier {
            State::Rule => 2,
            _ => 1,
        }
    }
}

/// A candidate that passed eligibility and relevance for one request.
#[derive(Debug, Clone, Copy)]
struct Ranked<'a> {
    /// Position in file order: the tie-break that makes the sort stable.
    index: usize,
    candidate: &'a Candidate,
    relevance: f64,
}

/// Best first: higher tier, difficulty, relevance and confidence, then file order.
fn rank_order(a: &Ranked<'_>, b: &Ranked<'_>) -> Ordering {
    let (x, y) = (a.candidate, b.candidate);
    y.priority()
        .cmp(&x.priority())
        .then(y.difficulty.total_cmp(&x.difficulty))
        .then(b.relevance.total_cmp(&a.relevance))
        .then(y.confidence.total_cmp(&x.confidence))
        .then(a.index.cmp(&b.index))
}

impl RuleBook {
    /// Prepares `lessons` (in file order) for requests.
    pub fn new(lessons: &[Lesson]) -> RuleBook {
        let mut book = RuleBook::default();
        for lesson in lessons {
            let tier = lesson.effective_state();
            if tier == State::Rule {
                book.n_rules += 1;
            }
            if !matches!(tier, State::Rule | State::Pattern) {
                continue;
            }
            let attempts = lesson.fire_count.saturating_add(lesson.misfires);
            let difficulty = if attempts == 0 {
                0.5
            } else {
                count_f64(lesson.misfires) / count_f64(attempts)
            };
            book.candidates.push(Candidate {
                tier,
                category: lesson.category.clone(),
                description: lesson.description.clone(),
                confidence: lesson.confidence,
                difficulty,
                scope: Scope::of(lesson),
            });
        }
        book
    }

    /// How many lessons count as RULEs (after the TTL view).
    pub fn n_rules(&self) -> usize {
        self.n_rules
    }

    /// The decision for `request`.
    pub fn apply(&self, request: &Request<'_>) -> Applied {
        let (task_type, agent_type) = match guess_task_type(request) {
            Some(guessed) => (guessed, ""),
            None => (request.task_type, request.agent_type),
        };
        let rules_only = self.n_rules >= MAX_RULES;
        let mut ranked: Vec<Ranked<'_>> = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, candidate)| !rules_only || candidate.tier == State::Rule)
            .filter_map(|(index, candidate)| {
                let relevance = candidate.scope.relevance(task_type, agent_type);
                (relevance >= MIN_RELEVANCE).then_some(Ranked {
                    index,
                    candidate,
                    relevance,
                })
            })
            .collect();
        // The order is total (file order breaks ties), so picking the best ten and sorting them
        // gives what a stable sort of all of them would, without sorting thousands.
        if ranked.len() > MAX_RULES {
            ranked.select_nth_unstable_by(MAX_RULES - 1, rank_order);
            ranked.truncate(MAX_RULES);
        }
        ranked.sort_by(rank_order);

        let rules: Vec<AppliedRule> = ranked
            .iter()
            .map(|ranked| {
                let candidate = ranked.candidate;
                AppliedRule {
                    rule_id: rule_id(&candidate.category, &candidate.description),
                    tier: candidate.tier,
                    category: candidate.category.clone(),
                    instruction: format!("{}: {}", candidate.category, candidate.description),
                    relevance: ranked.relevance,
                }
            })
            .collect();
        let injection_text = injection_text(&ranked);
        let fired = rules
            .iter()
            .map(|rule| FiredRule {
                rule_id: rule.rule_id.clone(),
                tokens: tokens(&rule.instruction),
            })
            .collect();
        Applied {
            rules,
            injection_text,
            fired,
        }
    }
}

/// The task type guessed from the prompt when the request names none.
fn guess_task_type(request: &Request<'_>) -> Option<&'static str> {
    if request.prompt.is_empty() || !request.task_type.is_empty() {
        return None;
    }
    let prompt = request.prompt.to_lowercase();
    TASK_TYPE_WORDS
        .iter()
        .find(|(_, words)| words.iter().any(|word| prompt.contains(word)))
        .map(|(task_type, _)| *task_type)
}

/// One line of the injection text.
struct Entry<'a> {
    category: &'a str,
    tier: State,
    descriptions: Vec<&'a str>,
}

/// §6.2 step 9 over the ranked rules: dedup, merge per category, RULE lines then PATTERN
/// lines, each tier in ranked order.
fn injection_text(ranked: &[Ranked<'_>]) -> String {
    if ranked.is_empty() {
        return String::new();
    }
    let mut kept: Vec<(&Candidate, BTreeSet<String>)> = Vec::with_capacity(ranked.len());
    for ranked in ranked {
        let candidate = ranked.candidate;
        let words: BTreeSet<String> =
            pytext::split_whitespace(&candidate.description.to_lowercase())
                .map(str::to_owned)
                .collect();
        let duplicate = kept.iter().any(|(earlier, earlier_words)| {
            earlier.category == candidate.category && is_near_duplicate(earlier_words, &words)
        });
        if !duplicate {
            kept.push((candidate, words));
        }
    }

    let mut entries: Vec<Entry<'_>> = Vec::new();
    for (candidate, _) in &kept {
        match entries
            .iter_mut()
            .find(|entry| entry.category == candidate.category)
        {
            // Ranked order puts a category's RULEs before its PATTERNs, so the first member's
            // tier is the group's best. (Measured on 0.6.0: a RULE at 0.6 merged with a PATTERN
            // at 0.9 is a RULE line; the spec's "highest-confidence member" does not hold.)
            Some(entry) => entry.descriptions.push(&candidate.description),
            None => entries.push(Entry {
                category: &candidate.category,
                tier: candidate.tier,
                descriptions: vec![&candidate.description],
            }),
        }
    }

    let mut text = String::from("<brain-rules>");
    for tier in [State::Rule, State::Pattern] {
        for entry in entries.iter().filter(|entry| entry.tier == tier) {
            text.push_str("\n- ");
            text.push_str(entry.category);
            text.push_str(": ");
            match entry.descriptions.as_slice() {
                [single] => text.push_str(single),
                several => {
                    let trimmed: Vec<&str> = several
                        .iter()
                        .map(|description| description.trim_end_matches('.'))
                        .collect();
                    text.push_str(&trimmed.join(". "));
                    text.push('.');
                }
            }
        }
    }
    text.push_str("\n</brain-rules>");
    text
}

/// Whether two descriptions' word sets share [`DUPLICATE_OVERLAP`] of the smaller one. An empty
/// set duplicates nothing.
fn is_near_duplicate(a: &BTreeSet<String>, b: &BTreeSet<String>) -> bool {
    let smaller = a.len().min(b.len());
    if smaller == 0 {
        return false;
    }
    let shared = a.intersection(b).count();
    count_f64_usize(shared) / count_f64_usize(smaller) >= DUPLICATE_OVERLAP
}

/// The token set of §5.4, used to match an instruction against the words a correction removed:
/// the lower-cased text split on whitespace, each word without its non-word characters, empty
/// words dropped.
pub fn tokens(text: &str) -> BTreeSet<String> {
    pytext::split_whitespace(&text.to_lowercase())
        .map(|word| {
            word.chars()
                .filter(|c| c.is_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|word| !word.is_empty())
        .collect()
}

#[cfg(test)]
mod tests;
