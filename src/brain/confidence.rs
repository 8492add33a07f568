//! The confidence engine: how one piece of evidence moves a lesson's confidence, and the
//! thresholds a lesson must reach to graduate (brain spec §8.1, §8.2, §8.4).
//!
//! The formulas, constants and rounding are 0.6.0's, so that a brain's lessons move by the same
//! amounts here as under the Python daemon: every stored confidence is clamped to [0, 1] and
//! rounded to two places as Python's `round` does ([`pytext::round`]). The thresholds are jittered
//! by ±5 % with the brain's `.brain_salt`, exactly as 0.6.0 does, so one brain graduates at the
//! same confidence under both.
//!
//! What evidence a session holds, which lesson it concerns, and when tiers move are decided
//! elsewhere (`/correct` finds the lesson; [`super::graduation`] sweeps at the end of a session).
//! This module never changes a lesson's state, text or session counters, and does no I/O: the
//! caller reads the salt file and hands its text to [`Salt::from_file_text`].
//!
//! Left out on purpose: 0.6.0's "machine mode" (softer weights after more than 25 corrections in
//! one call) and its poisoning and contradiction-streak guards, none of which the daemon can reach
//! because it passes one correction per call; and the opt-in Beta lower-bound gate.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How much a correction changed, as the engine weighs it: the cloud's five steps, which a
/// label on the brain's scale (`/correct`'s `as-is` … `discarded`) also names.
pub use super::severity::CloudSeverity as Severity;

use super::lessons::{Lesson, State};
use super::pytext;

/// The confidence of a newly created lesson.
pub const INITIAL_CONFIDENCE: f64 = 0.60;
/// The unsalted confidence an INSTINCT needs to become a PATTERN (and a PATTERN needs to stay one).
pub const PATTERN_THRESHOLD: f64 = 0.60;
/// The unsalted confidence a PATTERN needs to become a RULE.
pub const RULE_THRESHOLD: f64 = 0.90;
/// Reinforcements an INSTINCT needs before it may become a PATTERN.
pub const MIN_FIRES_FOR_PATTERN: u64 = 3;
/// Reinforcements a PATTERN needs before it may become a RULE (0.6.0 documents 5 but checks 3).
pub const MIN_FIRES_FOR_RULE: u64 = 3;
/// What a misfire takes off.
pub const MISFIRE_PENALTY: f64 = 0.15;
/// The base of the penalty for a correction that goes against a lesson.
pub const CONTRADICTION_BASE: f64 = 0.17;
/// The base of the bonus for a correction that agrees with a lesson, or a lesson that survived.
pub const ACCEPTANCE_BASE: f64 = 0.20;
/// The extra factor on a penalty when the correction clearly contradicts the lesson.
pub const CONTRADICTION_ACCELERATION: f64 = 1.5;
/// The extra factor on a contradiction penalty when the lesson is a RULE: rules have more to lose.
pub const RULE_OVERRIDE: f64 = 1.2;
/// No single correction takes more than this off.
pub const MAX_STEP_PENALTY: f64 = 0.20;
/// No session moves a lesson's confidence by more than this, either way.
pub const MAX_SESSION_DELTA: f64 = 0.30;
/// Sessions without firing after which an unproven lesson is UNTESTABLE (0.6.0's kill limit for
/// a brain of maturity "INFANT", the only one its daemon uses).
pub const IDLE_LIMIT: u64 = 8;
/// Further idle sessions after which an UNTESTABLE lesson is KILLED.
pub const UNTESTABLE_GRACE: u64 = 5;

// The type is the one scale of `severity`; how the engine weighs each step belongs here, beside
// the formulas that use the weights.
impl Severity {
    /// The severity a label names, on either scale (the correction classifier's `as-is` and
    /// `discarded` are the engine's trivial and rewrite); an unknown label weighs as moderate, as
    /// in 0.6.0.
    pub fn from_label(label: &str) -> Severity {
        Severity::from_name(label).unwrap_or(Severity::Moderate)
    }

    /// The factor on a reinforcement bonus or a penalty.
    pub fn weight(self) -> f64 {
        match self {
            Severity::Trivial => 0.20,
            Severity::Minor => 0.50,
            Severity::Moderate => 0.80,
            Severity::Major => 1.00,
            Severity::Rewrite => 1.30,
        }
    }

    /// The factor on the survival bonus of lessons whose category was not corrected.
    pub fn survival_weight(self) -> f64 {
        match self {
            Severity::Trivial => 0.30,
            Severity::Minor => 0.60,
            Severity::Moderate => 0.80,
            Severity::Major => 1.00,
            Severity::Rewrite => 1.20,
        }
    }

    /// The further factor on a clear contradiction: a heavy edit against a lesson says more.
    pub fn contradiction_boost(self) -> f64 {
        match self {
            Severity::Trivial => 0.8,
            Severity::Minor => 0.9,
            Severity::Moderate => 1.0,
            Severity::Major => 1.65,
            Severity::Rewrite => 1.8,
        }
    }
}

/// One piece of evidence about one lesson.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// A correction in the lesson's category that says the same thing.
    Reinforcing(Severity),
    /// A correction in the lesson's category that clearly says the opposite.
    Contradicting(Severity),
    /// A correction in the lesson's category whose direction could not be told: penalised, but
    /// without the contradiction's acceleration (0.6.0 treats it so).
    Unclear(Severity),
    /// The lesson was applied and the user corrected what it produced.
    Misfire,
    /// The session had corrections, none in the lesson's category: the lesson held. The
    /// severities are those of the other categories' corrections (one per category); with none
    /// given the bonus is unweighted.
    Survived(Vec<Severity>),
}

/// The graduation thresholds of one brain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// The confidence an INSTINCT needs to become a PATTERN; below it a PATTERN falls back.
    pub pattern: f64,
    /// The confidence a PATTERN needs to become a RULE.
    pub rule: f64,
}

/// A brain's salt: the text of `.brain_salt`, which keys the threshold jitter.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt(String);

impl Thresholds {
    /// The nominal thresholds, for a brain without a salt.
    pub const UNSALTED: Thresholds = Thresholds {
        pattern: PATTERN_THRESHOLD,
        rule: RULE_THRESHOLD,
    };

    /// The thresholds of a brain with this salt: each base moved by up to ±5 % of itself, by an
    /// amount drawn from HMAC-SHA256(salt, tier name) (§8.4). The same salt gives the same
    /// thresholds as 0.6.0, bit for bit.
    pub fn salted(salt: &Salt) -> Thresholds {
        Thresholds {
            pattern: jitter(PATTERN_THRESHOLD, salt, "PATTERN"),
            rule: jitter(RULE_THRESHOLD, salt, "RULE"),
        }
    }
}

impl Salt {
    /// The salt in the text of a `.brain_salt` file: the text without surrounding whitespace,
    /// which 0.6.0 accepts only when it is 64 characters long (it does not check they are hex).
    /// `None` when it is not: 0.6.0 then replaces the file with a new salt ([`Salt::generate`]).
    pub fn from_file_text(text: &str) -> Option<Salt> {
        let salt = pytext::strip(text);
        (salt.chars().count() == 64).then(|| Salt(salt.to_owned()))
    }

    /// A new random salt: 32 random bytes as 64 lowercase hex digits, as 0.6.0 makes them.
    pub fn generate(rng: &mut impl rand::RngCore) -> Salt {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Salt(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
    }

    /// The text to store in `.brain_salt`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Salt {
    /// The salt keys the thresholds a brain's lessons must reach, so it is not printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(..)")
    }
}

/// `x` clamped to [0, 1] and rounded to two places as Python does: the form every stored
/// confidence takes.
pub fn settle(x: f64) -> f64 {
    pytext::round(x.clamp(0.0, 1.0), 2)
}

/// The bonus a lesson of this confidence earns before the severity weight: smaller the surer it
/// already is. Rounded to four places, as 0.6.0 rounds it.
pub fn bonus(confidence: f64) -> f64 {
    pytext::round(ACCEPTANCE_BASE * (1.0 - confidence * 0.5), 4)
}

/// The penalty a lesson of this confidence takes before the severity weight: larger the surer it
/// was. Rounded to four places, as 0.6.0 rounds it.
pub fn penalty(confidence: f64) -> f64 {
    pytext::round(
        CONTRADICTION_BASE * (0.5 + confidence * confidence * 0.8),
        4,
    )
}

/// Applies one piece of evidence to the lesson, as 0.6.0's `update_confidence` does for one
/// lesson and one correction: the confidence, the Beta counts, `fire_count` (reinforcement only)
/// and `misfires` (misfire only). The per-session cap is the caller's ([`cap_session_delta`]),
/// since only it knows where the session started.
///
/// Invariant: the confidence stays in [0, 1], rounded to two places.
pub fn apply(lesson: &mut Lesson, evidence: &Evidence) {
    match evidence {
        Evidence::Reinforcing(severity) => {
            lesson.beta.alpha += 1.0;
            let before = lesson.confidence;
            lesson.confidence = settle(before + bonus(before) * severity.weight());
            // The blend can only hold the gain back to where the lesson stood, never below.
            lesson.confidence = blended(lesson).clamp(0.0, 1.0).max(before);
            lesson.fire_count += 1;
        }
        Evidence::Contradicting(severity) | Evidence::Unclear(severity) => {
            lesson.beta.beta += 1.0;
            let before = lesson.confidence;
            let mut amount = penalty(before) * severity.weight();
            if matches!(evidence, Evidence::Contradicting(_)) {
                // 0.6.0 multiplies by a streak factor too, but its streak never outlives one
                // call, so that factor is always 1.
                amount *= CONTRADICTION_ACCELERATION * severity.contradiction_boost();
                if lesson.state == State::Rule {
                    amount *= RULE_OVERRIDE;
                }
            }
            let amount = amount.min(MAX_STEP_PENALTY);
            lesson.confidence = settle(before - amount);
            // The blend can only hold the loss back to where the lesson stood, never above.
            lesson.confidence = blended(lesson).clamp(0.0, 1.0).min(before);
        }
        Evidence::Misfire => {
            lesson.confidence = settle(lesson.confidence - MISFIRE_PENALTY);
            lesson.misfires += 1;
        }
        Evidence::Survived(others) => {
            let weight = if others.is_empty() {
                1.0
            } else {
                // Summed in order, as Python's `sum` does, so the float is the same.
                let total: f64 = others.iter().map(|s| s.survival_weight()).sum();
                total / others.len() as f64
            };
            lesson.confidence = settle(lesson.confidence + bonus(lesson.confidence) * weight);
        }
    }
}

/// `after` held within [`MAX_SESSION_DELTA`] of `before`, the confidence at the start of the
/// session (§8.2). Unchanged when already within; otherwise the bound, rounded to two places.
pub fn cap_session_delta(before: f64, after: f64) -> f64 {
    let low = (before - MAX_SESSION_DELTA).max(0.0);
    let high = (before + MAX_SESSION_DELTA).min(1.0);
    let capped = after.clamp(low, high);
    if capped == after {
        after
    } else {
        pytext::round(capped, 2)
    }
}

/// The lesson's confidence blended with the mean of its Beta posterior, weighted by how much
/// evidence the Beta counts hold: none below 5 observations, 0.7 from 20 (§8.1).
fn blended(lesson: &Lesson) -> f64 {
    let alpha = lesson.beta.alpha;
    // Python's `int()` truncates toward zero; the counts are small and non-negative in practice.
    let observations = (alpha + lesson.beta.beta - 2.0).trunc();
    let weight = if observations < 5.0 {
        return lesson.confidence;
    } else if observations >= 20.0 {
        0.7
    } else {
        0.7 * (observations - 5.0) / 15.0
    };
    let successes = (alpha - 1.0).trunc().max(0.0);
    let trials = observations.max(0.0);
    let posterior_alpha = 1.0 + successes;
    let posterior_beta = 1.0 + trials - successes;
    let mean = posterior_alpha / (posterior_alpha + posterior_beta);
    pytext::round(weight * mean + (1.0 - weight) * lesson.confidence, 2)
}

/// `base` moved by up to ±5 % of itself by the first four bytes of HMAC-SHA256(salt, tier).
fn jitter(base: f64, salt: &Salt, tier: &str) -> f64 {
    let mut mac = match Hmac::<Sha256>::new_from_slice(salt.0.as_bytes()) {
        Ok(mac) => mac,
        // HMAC takes a key of any length; this arm cannot be reached.
        Err(_) => return base,
    };
    mac.update(tier.as_bytes());
    let digest = mac.finalize().into_bytes();
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    let fraction = f64::from(first) / f64::from(u32::MAX);
    base + (fraction * 0.10 - 0.05) * base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brain::lessons;

    fn lesson(state: &str, confidence: f64, alpha: f64, beta: f64) -> Lesson {
        let text = format!(
            "[2026-01-01] [{state}:{confidence:.2}] CODE: Use explicit error types always\n  \
             Fire count: 4 | Sessions since fire: 1 | Misfires: 0\n  \
             Beta params: {{\"alpha\": {alpha:?}, \"beta\": {beta:?}}}\n"
        );
        let mut parsed = lessons::parse(&text);
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        parsed.lessons.remove(0)
    }

    fn evidence(kind: &str, label: &str) -> Evidence {
        let severity = Severity::from_label(label);
        match kind {
            "REINFORCING" => Evidence::Reinforcing(severity),
            "CONTRADICTING" => Evidence::Contradicting(severity),
            "UNKNOWN" => Evidence::Unclear(severity),
            "MISFIRE" => Evidence::Misfire,
            // The measurement corrected two other categories: one at this label, one major.
            "SURVIVED" => Evidence::Survived(vec![severity, Severity::Major]),
            other => panic!("unknown evidence {other}"),
        }
    }

    /// Every row measured on 0.6.0: one lesson, one piece of evidence, then the session cap.
    #[test]
    fn one_piece_of_evidence_moves_confidence_as_0_6_0_does() {
        let table = include_str!("../../tests/data/confidence-0.6.0.txt");
        let mut rows = 0;
        for row in table.lines().filter(|line| !line.starts_with('#')) {
            let (input, output) = row.split_once(" | ").expect("row has a bar");
            let input: Vec<&str> = input.split(' ').collect();
            let output: Vec<f64> = output
                .split(' ')
                .map(|v| v.parse().expect("number"))
                .collect();
            let number = |text: &str| -> f64 { text.parse().expect("number") };
            let mut subject = lesson(
                input[0],
                number(input[1]),
                number(input[2]),
                number(input[3]),
            );
            let before = subject.confidence;
            apply(&mut subject, &evidence(input[4], input[5]));
            subject.confidence = cap_session_delta(before, subject.confidence);
            let got = [
                subject.confidence,
                subject.beta.alpha,
                subject.beta.beta,
                subject.fire_count as f64,
                subject.misfires as f64,
            ];
            assert_eq!(got.as_slice(), output.as_slice(), "{row}");
            rows += 1;
        }
        assert_eq!(rows, 2160);
    }

    /// Thresholds computed by 0.6.0 for these salts, bit for bit (the first is the spec's example).
    #[test]
    fn salted_thresholds_match_0_6_0() {
        let cases = [
            ("a", 0.5746153384085314, 0.8733623751132662),
            ("0", 0.6196655329711888, 0.9253143072804237),
            ("0123456789abcdef", 0.6017006320161048, 0.8869384496803252),
            ("f", 0.5722774262498779, 0.8889939787900062),
            ("deadbeef", 0.5957309746103666, 0.9285259811495259),
        ];
        for (unit, pattern, rule) in cases {
            let text = unit.repeat(64 / unit.len());
            let salt = Salt::from_file_text(&format!("{text}\n")).expect("64 characters");
            let thresholds = Thresholds::salted(&salt);
            assert_eq!(thresholds, Thresholds { pattern, rule }, "{text}");
        }
    }

    #[test]
    fn a_salt_file_must_hold_64_characters() {
        assert!(Salt::from_file_text(&"a".repeat(63)).is_none());
        assert!(Salt::from_file_text(&"a".repeat(65)).is_none());
        assert!(Salt::from_file_text("").is_none());
        let salt = Salt::from_file_text(&format!("  {}\r\n", "b".repeat(64))).expect("stripped");
        assert_eq!(salt.as_str(), "b".repeat(64));
        assert_eq!(format!("{salt:?}"), "Salt(..)");
    }

    #[test]
    fn a_generated_salt_is_64_hex_digits_and_reads_back() {
        let mut rng = rand::rngs::mock::StepRng::new(0x0123_4567_89ab_cdef, 1);
        let salt = Salt::generate(&mut rng);
        assert_eq!(salt.as_str().len(), 64);
        assert!(
            salt.as_str()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(Salt::from_file_text(salt.as_str()), Some(salt));
    }

    /// Values 0.6.0 returns for its bonus and penalty curves.
    #[test]
    fn bonus_and_penalty_curves() {
        let cases = [
            (0.0, 0.2, 0.085),
            (0.3, 0.17, 0.0972),
            (0.6, 0.14, 0.134),
            (0.74, 0.126, 0.1595),
            (0.9, 0.11, 0.1952),
            (1.0, 0.1, 0.221),
        ];
        for (confidence, expected_bonus, expected_penalty) in cases {
            assert_eq!(bonus(confidence), expected_bonus, "{confidence}");
            assert_eq!(penalty(confidence), expected_penalty, "{confidence}");
        }
    }

    #[test]
    fn severity_labels_normalise_as_0_6_0_does() {
        let cases = [
            ("as-is", Severity::Trivial),
            ("trivial", Severity::Trivial),
            ("minor", Severity::Minor),
            ("moderate", Severity::Moderate),
            ("major", Severity::Major),
            ("discarded", Severity::Rewrite),
            ("rewrite", Severity::Rewrite),
            ("unknown", Severity::Moderate),
            ("MAJOR", Severity::Moderate),
        ];
        for (label, severity) in cases {
            assert_eq!(Severity::from_label(label), severity, "{label}");
        }
    }

    #[test]
    fn the_session_cap_holds_a_lesson_within_0_30() {
        assert_eq!(cap_session_delta(0.5, 0.9), 0.8);
        assert_eq!(cap_session_delta(0.5, 0.1), 0.2);
        assert_eq!(cap_session_delta(0.5, 0.7), 0.7);
        assert_eq!(cap_session_delta(0.9, 1.0), 1.0);
        assert_eq!(cap_session_delta(0.1, 0.0), 0.0);
        // A rounded bound: 0.6 + 0.3 is 0.8999999999999999 in binary.
        assert_eq!(cap_session_delta(0.6, 1.0), 0.9);
    }

    proptest::proptest! {
        /// Whatever the evidence, however often, the confidence stays in [0, 1] with two places.
        #[test]
        fn confidence_stays_in_the_unit_interval(
            start in 0.0f64..=1.0,
            alpha in 1.0f64..40.0,
            beta in 1.0f64..40.0,
            rule in proptest::bool::ANY,
            steps in proptest::collection::vec((0usize..5, 0usize..5), 1..40),
        ) {
            let mut subject = lesson(if rule { "RULE" } else { "PATTERN" }, start, alpha, beta);
            let severities = [
                Severity::Trivial, Severity::Minor, Severity::Moderate, Severity::Major,
                Severity::Rewrite,
            ];
            for (kind, severity) in steps {
                let severity = severities[severity];
                let evidence = match kind {
                    0 => Evidence::Reinforcing(severity),
                    1 => Evidence::Contradicting(severity),
                    2 => Evidence::Unclear(severity),
                    3 => Evidence::Misfire,
                    _ => Evidence::Survived(vec![severity]),
                };
                apply(&mut subject, &evidence);
                let confidence = subject.confidence;
                proptest::prop_assert!((0.0..=1.0).contains(&confidence), "{confidence}");
                proptest::prop_assert_eq!(confidence, pytext::round(confidence, 2));
            }
        }
    }
}
