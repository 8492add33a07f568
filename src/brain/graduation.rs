//! The end-of-session sweep (brain spec §6.10 steps 2–5, §8.2 aging, §8.3 `graduate`, with the
//! fixes of §13 #4, #5, #6, #13 and #14): given the lessons and what one session showed, it ages
//! the lessons once, grants the survival bonus once, and moves each lesson at most one step along
//! INSTINCT -> PATTERN -> RULE (or back, or out to UNTESTABLE and KILLED).
//!
//! A session is the client's session id. Claude Code runs the plugin's Stop hook after every
//! assistant turn, so `/end-session` arrives many times for one session id: [`sweep`] takes the
//! set of sessions already swept ([`SweptSessions`]) and is a no-op for one of them, so a lesson
//! ages once per session, not once per turn.
//!
//! What differs from 0.6.0, on purpose:
//! - Lessons age here only, once per session; a lesson that fired (its rule id was injected by
//!   `/apply-rules`) or was reinforced in the session starts counting again from zero (0.6.0 aged
//!   on every call and never reset, so every unproven lesson died within a few sessions).
//! - The survival bonus is granted here once per session, not on every correction.
//! - Tiers move here only, at most one step per lesson per session; `/correct` changes confidence
//!   but never a tier (0.6.0 also moved tiers inside each correction, ignoring pending approval).
//! - A lesson pending approval never changes tier.
//! - No text is rewritten (0.6.0 could reword a new RULE, changing its id); the RULE candidate's
//!   similarity and wording gates and the hook generator are not run.
//! - No lesson is dropped: KILLED lessons are handed back in [`Sweep::archived`] for the archive,
//!   and the others keep their order (0.6.0 regrouped them and dropped the KILLED ones).
//!
//! Pure: no file, clock or event log here. The caller reads the lessons and the session's evidence,
//! writes [`Sweep::lessons`] back, appends [`Sweep::archived`] to the archive, and turns
//! [`Sweep::transitions`] into LESSON_CHANGE events.

pub mod convergence;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use super::confidence::{
    self, Evidence, IDLE_LIMIT, MIN_FIRES_FOR_PATTERN, MIN_FIRES_FOR_RULE, Severity, Thresholds,
    UNTESTABLE_GRACE,
};
use super::lessons::{Lesson, State};
use super::rule_id::rule_id;

/// Which categories a session could test (§6.10 step 3): the request's `session_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    /// `full` or any unknown type: every category.
    Full,
    /// `systems`: ARCHITECTURE, PROCESS, TOOL, THOROUGHNESS and CONTEXT.
    Systems,
    /// `sales`: DRAFTING, LEADS, PRICING, DEMO_PREP, POSITIONING, COMMUNICATION, TONE, ACCURACY
    /// and DATA_INTEGRITY.
    Sales,
}

/// What one session showed, as the caller gathered it from the session's events and calls.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvidence {
    /// The client's session id (the plugin's `session_id`): the identity that makes a second
    /// sweep of the same session a no-op.
    pub id: String,
    /// The ended session's number, for SESSION_END (§13 #14: not the highest number in the log).
    pub number: i64,
    /// Which categories the session could test.
    pub session_type: SessionType,
    /// The categories corrected in the session (upper-cased), each with the severity of its
    /// correction (the caller picks one per category, as 0.6.0 keeps one).
    pub corrected: BTreeMap<String, Severity>,
    /// The rule ids of lessons that fired in the session: injected by `/apply-rules` or
    /// reinforced by `/correct`.
    pub fired: BTreeSet<String>,
}

/// The sessions already swept, by client session id. The caller keeps it (for example from the
/// SESSION_END events it wrote) and adds [`SessionEvidence::id`] after writing a sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweptSessions(HashSet<String>);

/// Why a lesson moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Confidence and fire count reached the next tier's threshold.
    Promoted,
    /// A PATTERN's confidence fell below the PATTERN threshold.
    Demoted,
    /// It went this many sessions without firing.
    Idle(u64),
    /// An UNTESTABLE lesson stayed idle this many sessions.
    UntestableExpired(u64),
    /// Penalties took its confidence to zero.
    ZeroConfidence,
}

/// One lesson's move in a sweep, for a LESSON_CHANGE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The lesson's rule id (the one format of `rule_id`).
    pub lesson_id: String,
    /// The state before the sweep.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why.
    pub why: Reason,
}

/// The counts a sweep reports (§6.10 step 5 and the response's sane counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Lessons that became PATTERN or RULE (the response's `lessons_graduated`).
    pub promotions: u64,
    /// PATTERNs that fell back to INSTINCT.
    pub demotions: u64,
    /// Lessons that became RULE (SESSION_END's `graduated_rules`).
    pub graduated: u64,
    /// Lessons that became UNTESTABLE or KILLED.
    pub kills: u64,
    /// Lessons moved out of `lessons.md` into the archive (newly or formerly KILLED).
    pub archived: u64,
}

/// Whether the sweep did anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The session was swept now.
    Swept,
    /// The session had been swept before: nothing changed.
    AlreadySwept,
}

/// What a sweep decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// The lessons that stay in `lessons.md`, in their original order.
    pub lessons: Vec<Lesson>,
    /// The KILLED lessons, for the archive, in their original order. Invariant:
    /// `lessons.len() + archived.len()` is the number of lessons given.
    pub archived: Vec<Lesson>,
    /// One entry per lesson that changed state, in lesson order.
    pub transitions: Vec<Transition>,
    /// The counts.
    pub counters: Counters,
    /// Whether it did anything.
    pub outcome: Outcome,
}

/// The data of the SESSION_END event of a sweep, in 0.6.0's key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SessionEnd {
    /// The ended session's number (§13 #14: 0.6.0 wrote the highest number in the log).
    pub session: i64,
    /// Every lesson the sweep was given, archived ones included (as 0.6.0 counts them).
    pub total_lessons: u64,
    /// Lessons that became PATTERN or RULE.
    pub promotions: u64,
    /// PATTERNs that fell back to INSTINCT.
    pub demotions: u64,
    /// Lessons that became RULE.
    pub graduated_rules: u64,
}

impl Sweep {
    /// The data of the SESSION_END event for this sweep of `session`. Only a sweep whose
    /// outcome is [`Outcome::Swept`] ends a session; a repeated call should not emit it again.
    pub fn session_end(&self, session: &SessionEvidence) -> SessionEnd {
        SessionEnd {
            session: session.number,
            total_lessons: (self.lessons.len() + self.archived.len()) as u64,
            promotions: self.counters.promotions,
            demotions: self.counters.demotions,
            graduated_rules: self.counters.graduated,
        }
    }
}

impl SessionType {
    /// The type a request's `session_type` names; unknown ones test everything, as in 0.6.0.
    pub fn from_label(label: &str) -> SessionType {
        match label {
            "systems" => SessionType::Systems,
            "sales" => SessionType::Sales,
            _ => SessionType::Full,
        }
    }

    /// Whether a lesson of this (upper-cased) category can be tested in this type of session.
    pub fn tests(self, category: &str) -> bool {
        match self {
            SessionType::Full => true,
            SessionType::Systems => matches!(
                category,
                "ARCHITECTURE" | "PROCESS" | "TOOL" | "THOROUGHNESS" | "CONTEXT"
            ),
            SessionType::Sales => matches!(
                category,
                "DRAFTING"
                    | "LEADS"
                    | "PRICING"
                    | "DEMO_PREP"
                    | "POSITIONING"
                    | "COMMUNICATION"
                    | "TONE"
                    | "ACCURACY"
                    | "DATA_INTEGRITY"
            ),
        }
    }
}

impl SweptSessions {
    /// No session swept yet.
    pub fn new() -> SweptSessions {
        SweptSessions::default()
    }

    /// Whether this session id was swept.
    pub fn contains(&self, session_id: &str) -> bool {
        self.0.contains(session_id)
    }

    /// Records that this session id was swept.
    pub fn insert(&mut self, session_id: impl Into<String>) {
        self.0.insert(session_id.into());
    }
}

impl<S: Into<String>> FromIterator<S> for SweptSessions {
    fn from_iter<I: IntoIterator<Item = S>>(ids: I) -> SweptSessions {
        SweptSessions(ids.into_iter().map(Into::into).collect())
    }
}

impl fmt::Display for Reason {
    /// The text written to a lesson's `Kill reason:` and to events.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Promoted => f.write_str("promoted"),
            Reason::Demoted => f.write_str("demoted"),
            Reason::Idle(sessions) => write!(
                f,
                "idle: {sessions} sessions without firing (limit {IDLE_LIMIT})"
            ),
            Reason::UntestableExpired(sessions) => write!(
                f,
                "untestable too long: {sessions} idle sessions (limit {})",
                IDLE_LIMIT + UNTESTABLE_GRACE
            ),
            Reason::ZeroConfidence => f.write_str("zero confidence: penalties took it to 0"),
        }
    }
}

/// Sweeps the lessons at the end of `session`. A no-op (the lessons as given, no transitions,
/// zero counters, [`Outcome::AlreadySwept`]) when `swept` holds the session's id.
///
/// Otherwise, for each lesson that is neither KILLED nor ARCHIVED, in order:
/// 1. if the session tests its category: the survival bonus when the session corrected other
///    categories but not this one (held within the session cap), then aging: the idle count
///    restarts when the lesson fired in the session and grows by one when it did not;
/// 2. at most one move, unless it is pending approval: an idle lesson (RULEs only when never
///    fired) becomes UNTESTABLE, an UNTESTABLE one idle too long and an INSTINCT or PATTERN at
///    zero confidence become KILLED, else a promotion when confidence and fire count allow it
///    (not for one-off lessons), else a PATTERN below the threshold falls back to INSTINCT.
///
/// KILLED lessons, new or old, leave [`Sweep::lessons`] for [`Sweep::archived`].
pub fn sweep(
    lessons: &[Lesson],
    session: &SessionEvidence,
    swept: &SweptSessions,
    thresholds: Thresholds,
) -> Sweep {
    if swept.contains(&session.id) {
        return Sweep {
            lessons: lessons.to_vec(),
            archived: Vec::new(),
            transitions: Vec::new(),
            counters: Counters::default(),
            outcome: Outcome::AlreadySwept,
        };
    }
    let mut kept = Vec::with_capacity(lessons.len());
    let mut archived = Vec::new();
    let mut transitions = Vec::new();
    let mut counters = Counters::default();
    for lesson in lessons {
        let mut lesson = lesson.clone();
        if !matches!(lesson.state, State::Killed | State::Archived) {
            let id = rule_id(&lesson.category, &lesson.description);
            if session.session_type.tests(&lesson.category) {
                survive(&mut lesson, session);
                if session.fired.contains(&id) {
                    lesson.sessions_since_fire = 0;
                } else {
                    lesson.sessions_since_fire += 1;
                }
            }
            if let Some((to, why)) = decide(&lesson, thresholds) {
                let from = lesson.state;
                lesson.state = to;
                if matches!(to, State::Untestable | State::Killed) {
                    lesson.kill_reason = why.to_string();
                }
                count(&mut counters, from, to);
                transitions.push(Transition {
                    lesson_id: id,
                    from,
                    to,
                    why,
                });
            }
        }
        if lesson.state == State::Killed {
            counters.archived += 1;
            archived.push(lesson);
        } else {
            kept.push(lesson);
        }
    }
    Sweep {
        lessons: kept,
        archived,
        transitions,
        counters,
        outcome: Outcome::Swept,
    }
}

/// The survival bonus, once per session: the session corrected other categories but not this
/// lesson's, so the lesson held (§8.2 "category survived", §13 #5).
fn survive(lesson: &mut Lesson, session: &SessionEvidence) {
    if session.corrected.is_empty() || session.corrected.contains_key(&lesson.category) {
        return;
    }
    let before = lesson.confidence;
    let others = session.corrected.values().copied().collect();
    confidence::apply(lesson, &Evidence::Survived(others));
    lesson.confidence = confidence::cap_session_delta(before, lesson.confidence);
}

/// The one move a lesson makes in this sweep, if any (§8.2's UNTESTABLE detection and §8.3).
fn decide(lesson: &Lesson, thresholds: Thresholds) -> Option<(State, Reason)> {
    if lesson.pending_approval {
        // Awaiting a person's review: no tier changes until then (§13 #5).
        return None;
    }
    let idle = lesson.sessions_since_fire;
    match lesson.state {
        State::Untestable => (idle >= IDLE_LIMIT + UNTESTABLE_GRACE)
            .then_some((State::Killed, Reason::UntestableExpired(idle))),
        State::Rule => {
            // RULEs are never demoted by confidence; only a RULE that never fired goes idle.
            (lesson.fire_count == 0 && idle >= IDLE_LIMIT)
                .then_some((State::Untestable, Reason::Idle(idle)))
        }
        // 0.6.0 checks a never-fired lesson's idleness before its confidence.
        State::Instinct | State::Pattern if lesson.fire_count == 0 && idle >= IDLE_LIMIT => {
            Some((State::Untestable, Reason::Idle(idle)))
        }
        State::Instinct | State::Pattern if lesson.confidence <= 0.0 => {
            Some((State::Killed, Reason::ZeroConfidence))
        }
        State::Instinct | State::Pattern if idle >= IDLE_LIMIT => {
            Some((State::Untestable, Reason::Idle(idle)))
        }
        State::Pattern => {
            if !is_one_off(lesson)
                && lesson.confidence >= thresholds.rule
                && lesson.fire_count >= MIN_FIRES_FOR_RULE
            {
                Some((State::Rule, Reason::Promoted))
            } else if lesson.confidence < thresholds.pattern {
                Some((State::Instinct, Reason::Demoted))
            } else {
                None
            }
        }
        State::Instinct => (!is_one_off(lesson)
            && lesson.confidence >= thresholds.pattern
            && lesson.fire_count >= MIN_FIRES_FOR_PATTERN)
            .then_some((State::Pattern, Reason::Promoted)),
        State::Killed | State::Archived => None,
    }
}

/// A lesson learned from a one-off correction (`Scope: {"correction_scope": "one_off"}`) is
/// never promoted.
fn is_one_off(lesson: &Lesson) -> bool {
    lesson.scope_fields().is_some_and(|scope| {
        scope.get("correction_scope").and_then(|v| v.as_str()) == Some("one_off")
    })
}

fn count(counters: &mut Counters, from: State, to: State) {
    match to {
        State::Pattern | State::Rule => counters.promotions += 1,
        State::Instinct if from == State::Pattern => counters.demotions += 1,
        State::Untestable | State::Killed => counters.kills += 1,
        _ => {}
    }
    if to == State::Rule {
        counters.graduated += 1;
    }
}

#[cfg(test)]
mod tests;
