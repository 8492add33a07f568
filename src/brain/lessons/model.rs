//! The lesson model: [`Lesson`] with every field the Python SDK keeps, its [`State`] on the
//! graduation ladder, and the records a lesson carries ([`BetaParams`], [`Climb`],
//! [`Metadata`]) with the SDK's defaults. Plain data: reading and writing `lessons.md` are
//! `lessons` and `lessons_write`.

use std::fmt;

use serde_json::Value;

/// A lesson's place in the graduation ladder, as the header's state word names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Newly learned, not yet applied.
    Instinct,
    /// Seen often enough to be applied below the rules.
    Pattern,
    /// Graduated: applied first.
    Rule,
    /// Idle too long to be tested.
    Untestable,
    /// Disproved; the SDK drops it on the next write.
    Killed,
    /// Retired; the SDK drops it on the next write.
    Archived,
}

impl State {
    /// The state for a header's state word (already upper-cased), if it is one of the six.
    pub fn from_word(word: &str) -> Option<State> {
        match word {
            "INSTINCT" => Some(State::Instinct),
            "PATTERN" => Some(State::Pattern),
            "RULE" => Some(State::Rule),
            "UNTESTABLE" => Some(State::Untestable),
            "KILLED" => Some(State::Killed),
            "ARCHIVED" => Some(State::Archived),
            _ => None,
        }
    }

    /// The word `lessons.md` and the routes use for this state.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Instinct => "INSTINCT",
            State::Pattern => "PATTERN",
            State::Rule => "RULE",
            State::Untestable => "UNTESTABLE",
            State::Killed => "KILLED",
            State::Archived => "ARCHIVED",
        }
    }

    /// The confidence a header without one gets (§3.2).
    pub fn default_confidence(self) -> f64 {
        match self {
            State::Rule => 0.90,
            State::Pattern => 0.70,
            State::Untestable | State::Killed => 0.0,
            State::Instinct | State::Archived => 0.50,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many sessions a RULE may go without firing before it counts as a PATTERN (§6.2 step 3).
pub const RULE_TTL_SESSIONS: u64 = 50;

/// The Beta distribution kept per lesson (`Beta params:`), 1.0 each when absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BetaParams {
    /// Successes plus one.
    pub alpha: f64,
    /// Failures plus one.
    pub beta: f64,
}

impl Default for BetaParams {
    fn default() -> Self {
        BetaParams {
            alpha: 1.0,
            beta: 1.0,
        }
    }
}

/// The escalation record kept per lesson (`Climb:`), zeros when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Climb {
    /// How many times the lesson climbed.
    pub count: i64,
    /// The session of the last climb.
    pub last_session: i64,
    /// The level reached.
    pub level: i64,
}

/// The descriptive record kept per lesson (`Metadata:`), with the SDK's defaults when absent.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    /// What the lesson is about.
    pub what: String,
    /// Why it was learned.
    pub why: String,
    /// Who it came from.
    pub who: String,
    /// When it was created.
    pub when_created: String,
    /// When it was last validated.
    pub when_validated: String,
    /// Where it applies.
    pub where_scope: String,
    /// How it is enforced: `"injected"` unless the file says otherwise.
    pub how_enforced: String,
    /// Usefulness in [0, 1], rounded to 2 places.
    pub utility_score: f64,
    /// Safety in [0, 1], rounded to 2 places.
    pub safety_score: f64,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            what: String::new(),
            why: String::new(),
            who: String::new(),
            when_created: String::new(),
            when_validated: String::new(),
            where_scope: String::new(),
            how_enforced: "injected".to_owned(),
            utility_score: 0.5,
            safety_score: 0.5,
        }
    }
}

/// One lesson of `lessons.md`. Text fields are empty when the file does not set them, as the
/// SDK keeps them (it writes an optional line only when its value is non-empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Lesson {
    /// The 1-based line number of the header, for messages.
    pub line: usize,
    /// `YYYY-MM-DD` as written.
    pub date: String,
    /// The state the file says; see [`Lesson::effective_state`] for the one the routes use.
    pub state: State,
    /// In [0, 1], rounded to 2 places as Python's `round` does.
    pub confidence: f64,
    /// Upper-cased.
    pub category: String,
    /// The header's text, without a trailing `Root cause:` part.
    pub description: String,
    /// From the header's `Root cause:` part, or else the first `Root cause:` line.
    pub root_cause: String,
    /// How often the lesson was applied.
    pub fire_count: u64,
    /// Sessions since it was last applied.
    pub sessions_since_fire: u64,
    /// How often it was applied and then corrected.
    pub misfires: u64,
    /// `Agent:`.
    pub agent: String,
    /// `Kill reason:`.
    pub kill_reason: String,
    /// `Corrections:`: the ids of the correction events behind the lesson, as written.
    pub corrections: Vec<String>,
    /// `Pending approval: yes`.
    pub pending_approval: bool,
    /// `Parent meta-rule:`.
    pub parent_meta_rule: String,
    /// `Memory links:`.
    pub memory_links: Vec<String>,
    /// `Scope:`: the JSON text verbatim, as the SDK keeps it; read by [`Lesson::scope_fields`].
    pub scope: String,
    /// `Beta params:`.
    pub beta: BetaParams,
    /// `Domain scores:`: the JSON object's text verbatim, empty when absent, invalid or `{}`.
    pub domain_scores: String,
    /// `Path:`.
    pub path: String,
    /// `Secondary categories:`.
    pub secondary_categories: Vec<String>,
    /// `Climb:`.
    pub climb: Climb,
    /// `Metadata:`.
    pub metadata: Metadata,
}

impl Lesson {
    /// The state the routes act on: a RULE idle for [`RULE_TTL_SESSIONS`] sessions or more counts
    /// as a PATTERN. The file is not changed. (0.6.0 applies this view only in `/apply-rules`; it
    /// is applied everywhere here, brain spec §13 #19.)
    pub fn effective_state(&self) -> State {
        if self.state == State::Rule && self.sessions_since_fire >= RULE_TTL_SESSIONS {
            State::Pattern
        } else {
            self.state
        }
    }

    /// The `Scope:` JSON as an object, or `None` when there is no scope or it is not a JSON
    /// object (the SDK then treats the lesson as unscoped).
    pub fn scope_fields(&self) -> Option<serde_json::Map<String, Value>> {
        match serde_json::from_str(&self.scope) {
            Ok(Value::Object(fields)) => Some(fields),
            _ => None,
        }
    }

    /// A lesson not read from a file (its [`Lesson::line`] is 0), with every other field at the
    /// value a header without continuation lines gives: the state's default confidence, no
    /// counters, the default [`BetaParams`], [`Climb`] and [`Metadata`].
    pub fn with_defaults(date: &str, state: State, category: &str, description: &str) -> Lesson {
        let mut lesson = Lesson::new(0, date, state, category.to_owned());
        lesson.description = description.to_owned();
        lesson
    }

    pub(super) fn new(line: usize, date: &str, state: State, category: String) -> Lesson {
        Lesson {
            line,
            date: date.to_owned(),
            state,
            confidence: state.default_confidence(),
            category,
            description: String::new(),
            root_cause: String::new(),
            fire_count: 0,
            sessions_since_fire: 0,
            misfires: 0,
            agent: String::new(),
            kill_reason: String::new(),
            corrections: Vec::new(),
            pending_approval: false,
            parent_meta_rule: String::new(),
            memory_links: Vec::new(),
            scope: String::new(),
            beta: BetaParams::default(),
            domain_scores: String::new(),
            path: String::new(),
            secondary_categories: Vec::new(),
            climb: Climb::default(),
            metadata: Metadata::default(),
        }
    }
}
