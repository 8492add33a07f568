//! Whether the user's corrections are dying down (brain spec §9): the `convergence` object of the
//! `/end-session` response, computed from the CORRECTION events as 0.6.0 computes it.
//!
//! Pure: the caller selects the events (type CORRECTION, an integer session above 0) and hands
//! over what each one says; the result serializes, field for field and in 0.6.0's key order,
//! into the response.

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

#[cfg(test)]
mod tests;
