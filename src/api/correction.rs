//! What `POST /correct` derives from an edit: the `severity` of the change (how much of the text
//! changed). The file's `category` is the brain's (`brain::category::Category`).
//!
//! Pure functions, no I/O, so the thresholds are tested directly.
//!
//! Severity is the normalised edit distance `1 - similarity`, where similarity is the share of the
//! characters a diff keeps, `2 × kept / (old + new)`, counted in characters. A character diff of two
//! large texts with many scattered edits is quadratic, so large texts are compared the way `git`
//! does: by lines first, then each changed run of lines by words, and only small changed runs by
//! characters. The whole computation has a deadline, so a pathological 1 MiB pair cannot stall a
//! request; past it the remaining runs count as changed, so the severity can only be overstated:
//!
//! | distance | severity |
//! |---|---|
//! | ≤ 0.02 | `trivial` (a typo, whitespace) |
//! | ≤ 0.10 | `minor` (a word or two) |
//! | ≤ 0.30 | `moderate` (a phrase, a line) |
//! | ≤ 0.60 | `major` (most of a paragraph) |
//! | > 0.60 | `rewrite` |
//!
//! The scale is the brain's one type for the cloud's scale (`brain::severity::CloudSeverity`); only
//! this classification of it is defined here. It is not the SDK's measure in `brain::severity`
//! (a Ratcliff/Obershelp ratio or a compression distance, with exclusive bounds at other values),
//! which gives the brain's own events their severity.

use std::ops::Range;
use std::time::{Duration, Instant};

/// How much an edit changed, on the cloud's scale.
pub use crate::brain::severity::CloudSeverity as Severity;

/// Longest a severity computation may spend on the diff.
const DIFF_DEADLINE: Duration = Duration::from_millis(50);

// The type is the brain's; its classification of this module's diff belongs beside the diff.
impl Severity {
    /// The severity of changing `old` into `new`.
    pub fn of(old: &str, new: &str) -> Severity {
        Severity::from_distance(distance(old, new))
    }

    /// The severity for a normalised distance in `[0, 1]`.
    pub fn from_distance(distance: f64) -> Severity {
        match distance {
            d if d <= 0.02 => Severity::Trivial,
            d if d <= 0.10 => Severity::Minor,
            d if d <= 0.30 => Severity::Moderate,
            d if d <= 0.60 => Severity::Major,
            _ => Severity::Rewrite,
        }
    }
}

/// Normalised edit distance in `[0, 1]`: 0 identical, 1 nothing in common.
pub fn distance(old: &str, new: &str) -> f64 {
    distance_by(old, new, Instant::now() + DIFF_DEADLINE)
}

/// [`distance`], with the diff's work stopped at `deadline`.
fn distance_by(old: &str, new: &str, deadline: Instant) -> f64 {
    if old == new {
        return 0.0;
    }
    let total = old.chars().count() + new.chars().count();
    let kept = kept_chars(old, new, Level::Lines, deadline);
    let similarity = (2 * kept) as f64 / total as f64;
    (1.0 - similarity).clamp(0.0, 1.0)
}

/// Largest changed run, in bytes of both sides together, that is diffed by characters.
/// Myers' diff costs (old + new) × edits; at this size even a run changed throughout stays under
/// a few milliseconds.
const CHAR_DIFF_LIMIT: usize = 16 * 1024;

/// The unit a run of text is compared in; each changed run is compared again one level finer.
#[derive(Debug, Clone, Copy)]
enum Level {
    Lines,
    Words,
    Chars,
}

/// The characters a diff of `old` and `new` keeps, comparing at `level` and below.
fn kept_chars(old: &str, new: &str, level: Level, deadline: Instant) -> usize {
    let prefix = common_prefix_len(old, new);
    let suffix = common_suffix_len(&old[prefix..], &new[prefix..]);
    let (old_end, new_end) = (old.len() - suffix, new.len() - suffix);
    let around = old[..prefix].chars().count() + old[old_end..].chars().count();
    around
        + kept_in_middle(
            &old[prefix..old_end],
            &new[prefix..new_end],
            level,
            deadline,
        )
}

/// The characters kept between two texts that share no prefix or suffix.
fn kept_in_middle(old: &str, new: &str, level: Level, deadline: Instant) -> usize {
    if old.is_empty() || new.is_empty() {
        return 0;
    }
    let mut config = similar::TextDiff::configure();
    config.deadline(deadline);
    let small = old.len() + new.len() <= CHAR_DIFF_LIMIT;
    if !small && !matches!(level, Level::Chars) {
        // Patience anchors on the tokens both sides have exactly once (most lines, identifiers),
        // so a large file edited in many places splits into short runs before Myers' search,
        // which is quadratic in the edits, runs on each.
        config.algorithm(similar::Algorithm::Patience);
    }
    let (diff, finer) = match level {
        _ if small => (config.diff_chars(old, new), None),
        Level::Lines => (config.diff_lines(old, new), Some(Level::Words)),
        Level::Words => (config.diff_words(old, new), Some(Level::Chars)),
        Level::Chars => (config.diff_chars(old, new), None),
    };
    let old_runs = Runs::new(old, diff.iter_old_slices());
    let new_runs = Runs::new(new, diff.iter_new_slices());
    let mut kept = 0;
    // A changed run is everything between two equal ops: Myers reports a replaced stretch as
    // deletes and inserts that may interleave.
    let mut changed: Option<(Range<usize>, Range<usize>)> = None;
    for op in diff.ops() {
        let (tag, old_range, new_range) = op.as_tag_tuple();
        if tag == similar::DiffTag::Equal {
            if let (Some((old_changed, new_changed)), Some(finer)) = (changed.take(), finer) {
                kept += kept_chars(
                    old_runs.text(old_changed),
                    new_runs.text(new_changed),
                    finer,
                    deadline,
                );
            }
            kept += old_runs.text(old_range).chars().count();
        } else {
            let run = changed.get_or_insert((
                old_range.start..old_range.start,
                new_range.start..new_range.start,
            ));
            run.0.end = old_range.end;
            run.1.end = new_range.end;
        }
    }
    if let (Some((old_changed, new_changed)), Some(finer)) = (changed, finer) {
        kept += kept_chars(
            old_runs.text(old_changed),
            new_runs.text(new_changed),
            finer,
            deadline,
        );
    }
    kept
}

/// A text cut into the diff's tokens, to find the text of a range of tokens.
struct Runs<'a> {
    text: &'a str,
    /// Byte offset of each token's start, and of the text's end.
    starts: Vec<usize>,
}

impl<'a> Runs<'a> {
    /// The tokens cover the text end to end, in order.
    fn new<'t>(text: &'a str, tokens: impl Iterator<Item = &'t str>) -> Runs<'a> {
        let mut starts = vec![0];
        let mut end = 0;
        for token in tokens {
            end += token.len();
            starts.push(end);
        }
        Runs { text, starts }
    }

    /// The text of the tokens in `range`.
    fn text(&self, range: Range<usize>) -> &'a str {
        &self.text[self.starts[range.start]..self.starts[range.end]]
    }
}

/// Length in bytes of the longest common prefix that ends on a character boundary.
fn common_prefix_len(old: &str, new: &str) -> usize {
    let mut len = old
        .bytes()
        .zip(new.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    // Equal bytes before `len` make it a boundary in both texts or in neither.
    while !old.is_char_boundary(len) {
        len -= 1;
    }
    len
}

/// Length in bytes of the longest common suffix that starts on a character boundary.
fn common_suffix_len(old: &str, new: &str) -> usize {
    let mut len = old
        .bytes()
        .rev()
        .zip(new.bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    while !old.is_char_boundary(old.len() - len) {
        len -= 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_grows_with_the_change() {
        let base = "The quick brown fox jumps over the lazy dog near the river bank today.";
        for (new, expected) in [
            (
                "The quick brown fox jumps over the lazy dog near the river bank today!",
                Severity::Trivial,
            ),
            (
                "The quick brown cat jumps over the lazy dog near the river bank today.",
                Severity::Minor,
            ),
            (
                "The quick brown cat leaps over a sleepy dog near the river bank today.",
                Severity::Moderate,
            ),
            (
                "A slow red cat walks under the lazy dog near the old bridge tonight.",
                Severity::Major,
            ),
            ("Completely different sentence.", Severity::Rewrite),
            ("", Severity::Rewrite),
        ] {
            assert_eq!(
                Severity::of(base, new),
                expected,
                "{new:?} (distance {})",
                distance(base, new)
            );
        }
        assert_eq!(Severity::of(base, base), Severity::Trivial);
    }

    #[test]
    fn thresholds_are_inclusive_upper_bounds() {
        for (d, expected) in [
            (0.0, Severity::Trivial),
            (0.02, Severity::Trivial),
            (0.021, Severity::Minor),
            (0.10, Severity::Minor),
            (0.30, Severity::Moderate),
            (0.60, Severity::Major),
            (0.61, Severity::Rewrite),
            (1.0, Severity::Rewrite),
        ] {
            assert_eq!(Severity::from_distance(d), expected, "{d}");
        }
    }

    /// A file of `lines` lines of code-like text, about 45 characters each.
    fn source_file(lines: usize, edited: impl Fn(usize) -> bool) -> String {
        (0..lines)
            .map(|i| {
                let call = if edited(i) { "evaluate" } else { "compute" };
                format!(
                    "    let value_{i} = {call}(input_{}, {});\n",
                    i % 97,
                    i * 7 % 13
                )
            })
            .collect()
    }

    /// The exact character-diff similarity of two texts, compared line by line: what the
    /// distance of a large file with line-aligned edits should come to.
    fn distance_line_by_line(old: &str, new: &str) -> f64 {
        let (mut kept, mut total) = (0.0, 0.0);
        for (old, new) in old.lines().zip(new.lines()) {
            let chars = (old.chars().count() + new.chars().count()) as f64;
            kept += (1.0 - distance(old, new)) * chars;
            total += chars;
        }
        1.0 - kept / total
    }

    #[test]
    fn scattered_edits_in_a_large_file_are_measured_as_in_a_small_one() {
        let old = source_file(3_000, |_| false);
        assert!(old.len() > 100_000);
        for (every, expected) in [
            (40, Severity::Trivial),
            (3, Severity::Minor),
            (1, Severity::Moderate),
        ] {
            let new = source_file(3_000, |i| i % every == 0);
            let exact = distance_line_by_line(&old, &new);
            // The shipped deadline is sized for a release build; this checks the method.
            let measured = distance_by(&old, &new, Instant::now() + Duration::from_secs(600));
            assert!(
                (measured - exact).abs() < 0.005,
                "every {every}th line: {measured} against {exact}"
            );
            assert_eq!(
                Severity::from_distance(measured),
                expected,
                "every {every}th line"
            );
        }
    }

    #[test]
    fn texts_that_differ_inside_a_character_are_cut_on_boundaries() {
        for (old, new) in [
            ("é", "ê"),
            ("aé", "aê"),
            ("éa", "êa"),
            ("日本語", "日本"),
            ("x日", "y日"),
        ] {
            let d = distance(old, new);
            assert!((0.0..=1.0).contains(&d), "{old:?} → {new:?}: {d}");
        }
        assert_eq!(distance("héllo wörld", "héllo wörld"), 0.0);
        assert_eq!(
            Severity::of("日本語のテキスト", "日本語のテキスト!"),
            Severity::Minor
        );
    }

    #[test]
    fn random_texts_measure_within_bounds_at_every_level() {
        // Pieces that stress the cuts: multi-byte characters, each kind of line end, whitespace
        // runs. Lengths cross the character-diff limit so the line and word levels run too.
        let pieces = [
            "é", "日本", "a", "bc", " ", "  ", "\t", "\n", "\r\n", "\r", "x\u{301}", "🙂",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % bound as u64).unwrap()
        };
        for round in 0..60 {
            let len = [10, 300, 6_000][round % 3];
            let old: String = (0..len).map(|_| pieces[next(pieces.len())]).collect();
            let mut new = old.clone();
            for _ in 0..next(20) {
                let at = next(new.len() + 1);
                if new.is_char_boundary(at) {
                    new.insert_str(at, pieces[next(pieces.len())]);
                }
            }
            let far = Instant::now() + Duration::from_secs(600);
            let d = distance_by(&old, &new, far);
            assert!((0.0..=1.0).contains(&d), "round {round}: {d}");
            assert_eq!(d == 0.0, old == new, "round {round}: {d}");
            assert!(
                (distance_by(&new, &old, far) - d).abs() < 0.05,
                "round {round}: not symmetric"
            );
        }
    }

    #[test]
    fn a_huge_edit_is_bounded_in_time() {
        let old = "a".repeat(500_000);
        let new = "b".repeat(500_000);
        let started = Instant::now();
        assert_eq!(Severity::of(&old, &new), Severity::Rewrite);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}
