//! The manifest's `proof` section: whether the corrections per session are shown to fall,
//! judged from the brain's [`Convergence`] against the thresholds below. Pure.

use serde::Serialize;

use crate::brain::graduation::convergence::{self, Convergence, Trend};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(super) struct Proof {
    proven: bool,
    confidence_level: &'static str,
    evidence: Evidence,
    summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Evidence {
    convergence_trend: Trend,
    p_value: f64,
    changepoints: Vec<i64>,
    /// 0.6.0's effort ratio rests on an efficiency estimate gradata does not make.
    effort_ratio: Option<f64>,
    /// RULE lessons in `lessons.md`.
    rule_count: u64,
    correction_count: u64,
    sessions: u64,
    categories_converged: Vec<String>,
    strongest_category: Option<String>,
    edit_distance_trend: convergence::EditTrend,
}

/// Fewer sessions with corrections, or fewer corrections, prove nothing.
const PROOF_MIN_SESSIONS: u64 = 3;
/// See [`PROOF_MIN_SESSIONS`].
const PROOF_MIN_CORRECTIONS: u64 = 5;
/// The p-value below which a falling correction count is taken as shown.
const PROOF_P_VALUE: f64 = 0.05;

impl Proof {
    pub(super) fn of(convergence: &Convergence, rule_count: u64) -> Proof {
        let categories_converged = convergence
            .by_category
            .iter()
            .filter(|(_, category)| category.trend == Trend::Converged)
            .map(|(name, _)| name.clone())
            .collect();
        let strongest_category = convergence
            .by_category
            .iter()
            .filter(|(_, category)| category.trend == Trend::Converging && category.p_value < 1.0)
            .min_by(|a, b| a.1.p_value.total_cmp(&b.1.p_value))
            .map(|(name, _)| name.clone());
        let sessions = convergence.total_sessions;
        let corrections = convergence.total_corrections;
        let (proven, confidence_level, summary) = if sessions < PROOF_MIN_SESSIONS
            || corrections < PROOF_MIN_CORRECTIONS
        {
            (
                false,
                "insufficient",
                format!(
                    "not enough evidence: {sessions} sessions and {corrections} corrections \
                         (at least {PROOF_MIN_SESSIONS} and {PROOF_MIN_CORRECTIONS} needed)"
                ),
            )
        } else if convergence.trend == Trend::Converging && convergence.p_value < PROOF_P_VALUE {
            (
                true,
                "strong",
                format!(
                    "corrections per session fall over {sessions} sessions (p = {:.4}); \
                         {rule_count} rules",
                    convergence.p_value
                ),
            )
        } else {
            (
                false,
                "not_shown",
                format!(
                    "no significant fall in corrections per session over {sessions} sessions \
                         (p = {:.4})",
                    convergence.p_value
                ),
            )
        };
        Proof {
            proven,
            confidence_level,
            evidence: Evidence {
                convergence_trend: convergence.trend,
                p_value: convergence.p_value,
                changepoints: convergence.changepoints.clone(),
                effort_ratio: None,
                rule_count,
                correction_count: corrections,
                sessions,
                categories_converged,
                strongest_category,
                edit_distance_trend: convergence.edit_distance_trend,
            },
            summary,
        }
    }
}
