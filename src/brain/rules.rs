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
mod tests {
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
            // The reference: every eligible lesson, Python's stable sort on the four keys.
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
            all.sort_by(|a, b| {
                let (x, y) = (a.candidate, b.candidate);
                y.priority()
                    .cmp(&x.priority())
                    .then(y.difficulty.total_cmp(&x.difficulty))
                    .then(b.relevance.total_cmp(&a.relevance))
                    .then(y.confidence.total_cmp(&x.confidence))
            });
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
}
