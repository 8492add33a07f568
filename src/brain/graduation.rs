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

/// Whether the user's corrections are dying down (brain spec §9): the `convergence` object of the
/// `/end-session` response, computed from the CORRECTION events as 0.6.0 computes it.
///
/// Pure: the caller selects the events (type CORRECTION, an integer session above 0) and hands
/// over what each one says; the result serializes, field for field and in 0.6.0's key order,
/// into the response.
pub mod convergence {
    use std::collections::BTreeMap;

    use indexmap::IndexMap;
    use serde::Serialize;

    use crate::brain::pytext;

    /// What one CORRECTION event contributes.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Correction {
        /// The event's session number (above 0).
        pub session: i64,
        /// Its `data.category`, if it is a string.
        pub category: Option<String>,
        /// Its `data.edit_distance`, if it is a number.
        pub edit_distance: Option<f64>,
    }

    /// The trend of the corrections per session.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Trend {
        /// Significantly fewer corrections over time.
        Converging,
        /// Significantly more.
        Diverging,
        /// No trend, and the counts vary little (population coefficient of variation below 0.5).
        Converged,
        /// No trend, and the counts vary a lot.
        NoSignal,
        /// Fewer than 3 sessions.
        InsufficientData,
    }

    /// The trend of the mean edit distance per session.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum EditTrend {
        /// Edits are getting smaller.
        Improving,
        /// Edits are getting larger.
        Worsening,
        /// No significant trend.
        Stable,
        /// Fewer than 3 sessions with an edit distance.
        InsufficientData,
    }

    /// One category's share of the corrections.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    pub struct CategoryConvergence {
        /// Its corrections in each of [`Convergence::sessions`], 0 where it had none.
        pub corrections_per_session: Vec<u64>,
        /// Its trend.
        pub trend: Trend,
        /// Its Mann–Kendall p-value, rounded to 4 places.
        pub p_value: f64,
    }

    /// The `convergence` object, its fields in 0.6.0's order.
    #[derive(Debug, Clone, PartialEq, Serialize)]
    pub struct Convergence {
        /// The sessions with corrections, ascending.
        pub sessions: Vec<i64>,
        /// The corrections in each.
        pub corrections_per_session: Vec<u64>,
        /// Their trend.
        pub trend: Trend,
        /// The Mann–Kendall p-value, rounded to 4 places (1.0 below 3 sessions).
        pub p_value: f64,
        /// The sessions where the count shifted abruptly (CUSUM).
        pub changepoints: Vec<i64>,
        /// Per upper-cased category (`UNKNOWN` without one), in order of first appearance.
        pub by_category: IndexMap<String, CategoryConvergence>,
        /// All corrections.
        pub total_corrections: u64,
        /// All sessions with corrections.
        pub total_sessions: u64,
        /// The mean edit distance of each session that has one, rounded to 4 places.
        pub edit_distance_per_session: Vec<f64>,
        /// Their trend.
        pub edit_distance_trend: EditTrend,
    }

    /// The convergence of these corrections, in any order.
    pub fn convergence(corrections: &[Correction]) -> Convergence {
        let mut per_session: BTreeMap<i64, u64> = BTreeMap::new();
        let mut edits: BTreeMap<i64, (f64, u64)> = BTreeMap::new();
        for correction in corrections {
            *per_session.entry(correction.session).or_default() += 1;
            if let Some(distance) = correction.edit_distance {
                let entry = edits.entry(correction.session).or_default();
                entry.0 += distance;
                entry.1 += 1;
            }
        }
        let sessions: Vec<i64> = per_session.keys().copied().collect();
        let counts: Vec<u64> = per_session.values().copied().collect();
        let (trend, p_value) = classify(&counts);

        // 0.6.0 groups by session and raw category (no category first, then in byte order)
        // and keeps the upper-cased categories in the order that yields.
        let mut ordered: Vec<(i64, Option<&str>)> = corrections
            .iter()
            .map(|c| (c.session, c.category.as_deref()))
            .collect();
        ordered.sort();
        let mut by_session: IndexMap<String, BTreeMap<i64, u64>> = IndexMap::new();
        for (session, category) in ordered {
            let key = match category {
                Some(category) if !category.is_empty() => category.to_uppercase(),
                _ => "UNKNOWN".to_owned(),
            };
            *by_session
                .entry(key)
                .or_default()
                .entry(session)
                .or_default() += 1;
        }
        let by_category = by_session
            .into_iter()
            .map(|(category, counts_by_session)| {
                let counts: Vec<u64> = sessions
                    .iter()
                    .map(|s| counts_by_session.get(s).copied().unwrap_or(0))
                    .collect();
                let (trend, p_value) = classify(&counts);
                let entry = CategoryConvergence {
                    corrections_per_session: counts,
                    trend,
                    p_value,
                };
                (category, entry)
            })
            .collect();

        let means: Vec<f64> = edits.values().map(|(sum, n)| sum / *n as f64).collect();
        let edit_distance_trend = if means.len() < 3 {
            EditTrend::InsufficientData
        } else {
            match mann_kendall(&means) {
                (Some(Direction::Down), _) => EditTrend::Improving,
                (Some(Direction::Up), _) => EditTrend::Worsening,
                (None, _) => EditTrend::Stable,
            }
        };
        let as_floats: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        let changepoints = cusum(&as_floats)
            .into_iter()
            .filter_map(|i| sessions.get(i).copied())
            .collect();
        Convergence {
            total_corrections: counts.iter().sum(),
            total_sessions: sessions.len() as u64,
            sessions,
            corrections_per_session: counts,
            trend,
            p_value,
            changepoints,
            by_category,
            edit_distance_per_session: means.iter().map(|&m| pytext::round(m, 4)).collect(),
            edit_distance_trend,
        }
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Direction {
        Down,
        Up,
    }

    /// The trend and rounded p-value of a series of counts.
    fn classify(counts: &[u64]) -> (Trend, f64) {
        let values: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        if values.len() < 3 {
            return (Trend::InsufficientData, 1.0);
        }
        let (direction, p_value) = mann_kendall(&values);
        let trend = match direction {
            Some(Direction::Down) => Trend::Converging,
            Some(Direction::Up) => Trend::Diverging,
            None => {
                let n = values.len() as f64;
                let mean = values.iter().sum::<f64>() / n;
                let variation = if mean > 0.0 {
                    (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt() / mean
                } else {
                    0.0
                };
                if variation < 0.5 {
                    Trend::Converged
                } else {
                    Trend::NoSignal
                }
            }
        };
        (trend, pytext::round(p_value, 4))
    }

    /// The Mann–Kendall test over the last 50 values: a direction when p < 0.05 (taken from
    /// the sign of the Theil–Sen slope), and the unrounded p-value.
    fn mann_kendall(values: &[f64]) -> (Option<Direction>, f64) {
        let values = &values[values.len().saturating_sub(50)..];
        let n = values.len();
        if n < 2 {
            return (None, 1.0);
        }
        let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
        let mut s = 0i64;
        for i in 0..n {
            for j in i + 1..n {
                let difference = values[j] - values[i];
                slopes.push(difference / (j - i) as f64);
                s += match difference.partial_cmp(&0.0) {
                    Some(std::cmp::Ordering::Greater) => 1,
                    Some(std::cmp::Ordering::Less) => -1,
                    _ => 0,
                };
            }
        }
        slopes.sort_by(f64::total_cmp);
        let middle = slopes.len() / 2;
        let slope = if slopes.len() % 2 == 0 {
            (slopes[middle - 1] + slopes[middle]) / 2.0
        } else {
            slopes[middle]
        };
        let count = n as f64;
        let mut variance = count * (count - 1.0) * (2.0 * count + 5.0) / 18.0;
        let mut ties: BTreeMap<u64, u64> = BTreeMap::new();
        for value in values {
            *ties.entry(value.to_bits()).or_default() += 1;
        }
        for &tied in ties.values().filter(|&&t| t > 1) {
            let t = tied as f64;
            variance -= t * (t - 1.0) * (2.0 * t + 5.0) / 18.0;
        }
        if variance <= 0.0 {
            return (None, 1.0);
        }
        // Continuity correction: S moves one step toward zero.
        let z = match s.signum() {
            1 => (s - 1) as f64 / variance.sqrt(),
            -1 => (s + 1) as f64 / variance.sqrt(),
            _ => 0.0,
        };
        let p_value = 2.0 * (1.0 - 0.5 * (1.0 + libm::erf(z.abs() / std::f64::consts::SQRT_2)));
        let direction = (p_value < 0.05).then_some(if slope < 0.0 {
            Direction::Down
        } else {
            Direction::Up
        });
        (direction, p_value)
    }

    /// The indexes where a CUSUM over successive differences (drift 0.5 σ, limit 1 σ, σ the
    /// population standard deviation) crosses its limit; both sums restart after each.
    fn cusum(values: &[f64]) -> Vec<usize> {
        let n = values.len();
        if n < 3 {
            return Vec::new();
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let variance = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        if variance == 0.0 {
            return Vec::new();
        }
        let sigma = variance.sqrt();
        let (mut up, mut down) = (0.0f64, 0.0f64);
        let mut points = Vec::new();
        for i in 1..n {
            let difference = values[i] - values[i - 1];
            up = (up + difference - 0.5 * sigma).max(0.0);
            down = (down - difference - 0.5 * sigma).max(0.0);
            if up > sigma || down > sigma {
                points.push(i);
                up = 0.0;
                down = 0.0;
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::brain::confidence::{Salt, apply};
    use crate::brain::lessons;

    const MEASURED: &str = include_str!("../../tests/data/graduation-0.6.0.txt");

    /// The salt of the measured brains: 64 `a`s.
    fn measured_thresholds() -> Thresholds {
        Thresholds::salted(&Salt::from_file_text(&"a".repeat(64)).expect("64 characters"))
    }

    fn parse(text: &str) -> Vec<Lesson> {
        let parsed = lessons::parse(text);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        parsed.lessons
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
        let nominal = sweep(
            &parse(text),
            &session("s"),
            &SweptSessions::new(),
            Thresholds::UNSALTED,
        );
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

    /// §13 #4: the Stop hook calls `/end-session` after every turn. 0.6.0 aged the lesson on each
    /// call and deleted it after the seventh; here the session ages it once.
    #[test]
    fn repeated_end_session_of_one_session_ages_once() {
        let text = "[2026-01-01] [PATTERN:0.80] TONE: Never open client emails with small talk\n  \
                    Fire count: 9 | Sessions since fire: 6 | Misfires: 0\n";
        let mut lessons = parse(text);
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
        let text = "[2026-01-01] [PATTERN:0.80] TONE: Never open client emails with small talk\n  \
                    Fire count: 9 | Sessions since fire: 6 | Misfires: 0\n";
        let mut lessons = parse(text);
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
        let out = sweep(
            &parse(text),
            &session("s"),
            &SweptSessions::new(),
            Thresholds::UNSALTED,
        );
        assert_eq!(out.lessons[0].state, State::Instinct);
        assert_eq!(out.lessons[1].state, State::Pattern);
        assert!(out.transitions.is_empty());
        // Without the flag both would move.
        let moved = sweep(
            &parse(&text.replace("  Pending approval: yes\n", "")),
            &session("s"),
            &SweptSessions::new(),
            Thresholds::UNSALTED,
        );
        assert_eq!(moved.transitions.len(), 2);
    }

    #[test]
    fn a_one_off_lesson_is_never_promoted() {
        let text = "[2026-01-01] [INSTINCT:0.95] TONE: Keep greetings short\n  \
                    Fire count: 5 | Sessions since fire: 0 | Misfires: 0\n  \
                    Scope: {\"correction_scope\": \"one_off\"}\n";
        let out = sweep(
            &parse(text),
            &session("s"),
            &SweptSessions::new(),
            Thresholds::UNSALTED,
        );
        assert_eq!(out.lessons[0].state, State::Instinct);
        let domain = text.replace("one_off", "domain");
        let out = sweep(
            &parse(&domain),
            &session("s"),
            &SweptSessions::new(),
            Thresholds::UNSALTED,
        );
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
            let out = sweep(
                &parse(&text),
                &session("s"),
                &SweptSessions::new(),
                Thresholds::UNSALTED,
            );
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
        let out = sweep(
            &parse(text),
            &session("s"),
            &SweptSessions::new(),
            Thresholds::UNSALTED,
        );
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

    /// Convergence (§9) over CORRECTION events measured on 0.6.0 (its `brain_convergence` over a
    /// `system.db` holding them): the same object, to the byte of its JSON text.
    #[test]
    fn convergence_matches_0_6_0() {
        use crate::brain::pyjson::{self, Ascii};
        use convergence::{Correction, convergence};

        let table = include_str!("../../tests/data/convergence-0.6.0.jsonl");
        let mut cases = 0;
        for line in table.lines() {
            let case: serde_json::Value = serde_json::from_str(line).expect("json line");
            let rows: Vec<Correction> = case["rows"]
                .as_array()
                .expect("rows")
                .iter()
                .map(|row| Correction {
                    session: row[0].as_i64().expect("session"),
                    category: row[1].as_str().map(str::to_owned),
                    edit_distance: row[2].as_f64(),
                })
                .collect();
            // Read again, keeping the key order 0.6.0 wrote.
            let ordered = pyjson::from_str(line).expect("json line");
            let expected = &ordered.as_object().expect("object")["convergence"];
            let expected = pyjson::to_string(expected, Ascii::Escape).expect("text");
            let got = pyjson::to_string(&convergence(&rows), Ascii::Escape).expect("text");
            assert_eq!(got, expected, "{} rows", rows.len());
            cases += 1;
        }
        assert_eq!(cases, 13);
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
}
