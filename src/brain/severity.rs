//! How much a correction changed: the brain's severity scale (`as-is` … `discarded`), the two
//! measures it is computed from, and its mapping to the cloud's scale (`trivial` … `rewrite`).
//!
//! The two scales have the same five steps and are two types because they are written in two
//! places under different names: [`Severity`] is what the SDK writes in a brain's events and tags,
//! [`CloudSeverity`] what the outbox sends and the one scale every other part of the daemon
//! uses (`api::correction` classifies its own diff on it; `confidence` weighs it).
//!
//! The measures are the ones the Python SDK 0.6.0 records in its CORRECTION events, so a brain
//! classifies an edit the same way whichever program wrote it:
//!
//! - the **edit distance**, `1 − ratio` of a Ratcliff/Obershelp match of the two texts' characters
//!   (the longest common block, then recursively the longest blocks left and right of it; the ratio
//!   is twice the matched characters over both lengths). An LCS or Myers diff (the `similar` crate)
//!   matches more characters than this and so gives smaller distances, hence the port below;
//! - the **normalised compression distance** of the UTF-8 texts under zlib at level 9,
//!   `(C(ab) − min(C(a), C(b))) ÷ max(C(a), C(b))`. The zlib library itself (not `miniz_oxide`,
//!   whose streams differ in length) is linked so the compressed lengths are the SDK's.
//!
//! An edit of fewer than 200 characters (both sides together) is classified by its edit distance,
//! a longer one by its compression distance. Both are rounded to 6 decimals first, as the SDK does.
//!
//! Pure functions, no I/O: what the brain stores and what the outbox sends are the caller's.

use flate2::Compression;
use flate2::write::ZlibEncoder;
use std::collections::HashMap;
use std::hash::Hash;

/// Edits of at least this many characters (both sides together, in code points) are classified by
/// their compression distance, shorter ones by their edit distance.
pub const COMPRESSION_MIN_CHARS: usize = 200;

/// Largest edit (both sides together, in code points) whose edit distance is computed exactly.
/// Ratcliff/Obershelp costs about (draft × final ÷ alphabet) per block found, which at this size
/// stays around a millisecond; above it the class comes from the compression distance anyway,
/// and the edit distance, only reported, is estimated (see [`edit_distance`]).
pub const EXACT_DISTANCE_MAX_CHARS: usize = 4_000;

/// The brain's severity of a correction, as the SDK names it in its events and tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Score below 0.02: kept as drafted, give or take a character.
    AsIs,
    /// Score below 0.10.
    Minor,
    /// Score below 0.30.
    Moderate,
    /// Score below 0.80.
    Major,
    /// Score 0.80 or more: the draft was thrown away.
    Discarded,
}

/// The cloud's severity scale, the one the outbox payload of a correction carries. The route's
/// own classification of an edit (`api::correction`) and the confidence engine's weights
/// (`confidence`) are defined beside the code that uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudSeverity {
    /// The brain's `as-is`.
    Trivial,
    /// The brain's `minor`.
    Minor,
    /// The brain's `moderate`.
    Moderate,
    /// The brain's `major`.
    Major,
    /// The brain's `discarded`.
    Rewrite,
}

/// The measures of one correction and the severity they give.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    /// `1 − ratio` of the Ratcliff/Obershelp match of the characters, rounded to 6 decimals: the
    /// CORRECTION event's `edit_distance`.
    pub edit_distance: f64,
    /// What the severity was read from: the compression distance for edits of at least
    /// [`COMPRESSION_MIN_CHARS`] characters, else `edit_distance`.
    pub score: f64,
    /// The class of `score`.
    pub severity: Severity,
}

impl Severity {
    /// The class of a score in `[0, 1]`; each bound is exclusive.
    pub fn from_score(score: f64) -> Severity {
        match score {
            s if s < 0.02 => Severity::AsIs,
            s if s < 0.10 => Severity::Minor,
            s if s < 0.30 => Severity::Moderate,
            s if s < 0.80 => Severity::Major,
            _ => Severity::Discarded,
        }
    }

    /// The SDK's name: `as-is`, `minor`, `moderate`, `major` or `discarded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::AsIs => "as-is",
            Severity::Minor => "minor",
            Severity::Moderate => "moderate",
            Severity::Major => "major",
            Severity::Discarded => "discarded",
        }
    }

    /// The severity the SDK names `name`, if any.
    pub fn from_name(name: &str) -> Option<Severity> {
        [
            Severity::AsIs,
            Severity::Minor,
            Severity::Moderate,
            Severity::Major,
            Severity::Discarded,
        ]
        .into_iter()
        .find(|severity| severity.as_str() == name)
    }

    /// The same class on the cloud's scale. The two scales have the same five steps; only the
    /// ends are named differently (the SDK's confidence engine maps them the same way).
    pub fn cloud(self) -> CloudSeverity {
        match self {
            Severity::AsIs => CloudSeverity::Trivial,
            Severity::Minor => CloudSeverity::Minor,
            Severity::Moderate => CloudSeverity::Moderate,
            Severity::Major => CloudSeverity::Major,
            Severity::Discarded => CloudSeverity::Rewrite,
        }
    }

    /// Whether the SDK counts the edit as a major one (`major_edit` in its events).
    pub fn is_major_edit(self) -> bool {
        self >= Severity::Major
    }
}

impl CloudSeverity {
    const ALL: [CloudSeverity; 5] = [
        CloudSeverity::Trivial,
        CloudSeverity::Minor,
        CloudSeverity::Moderate,
        CloudSeverity::Major,
        CloudSeverity::Rewrite,
    ];

    /// The class a name on either scale gives: the cloud's own, or the brain's (`as-is` is
    /// `trivial`, `discarded` is `rewrite`).
    pub fn from_name(name: &str) -> Option<CloudSeverity> {
        Severity::from_name(name).map(Severity::cloud).or_else(|| {
            CloudSeverity::ALL
                .into_iter()
                .find(|severity| severity.as_str() == name)
        })
    }

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudSeverity::Trivial => "trivial",
            CloudSeverity::Minor => "minor",
            CloudSeverity::Moderate => "moderate",
            CloudSeverity::Major => "major",
            CloudSeverity::Rewrite => "rewrite",
        }
    }
}

/// Measures the correction of `draft` into `final_text` and classifies it.
pub fn measure(draft: &str, final_text: &str) -> Measure {
    let edit_distance = edit_distance(draft, final_text);
    let chars = draft.chars().count() + final_text.chars().count();
    let score = if chars >= COMPRESSION_MIN_CHARS {
        compression_distance(draft, final_text)
    } else {
        edit_distance
    };
    Measure {
        edit_distance,
        score,
        severity: Severity::from_score(score),
    }
}

/// `1 − ratio` of the Ratcliff/Obershelp match of the two texts' characters, rounded to 6
/// decimals: 0 for equal texts, 1 when nothing matches (or one side is empty).
///
/// Exact up to [`EXACT_DISTANCE_MAX_CHARS`] characters, unless the match needs more than
/// [`MATCH_WORK`] steps (texts built to defeat it, such as `aaaa…` against `axax…`): then the
/// blocks found so far count and the distance is overstated. Under [`COMPRESSION_MIN_CHARS`],
/// where the distance decides the class, a match never needs that many. Above the exact limit,
/// such edits are classed by their compression distance, so this one is only reported and is
/// estimated: the unchanged head and tail lines, the rest matched by lines, then by characters
/// inside small unmatched stretches.
pub fn edit_distance(draft: &str, final_text: &str) -> f64 {
    let draft_chars: Vec<char> = draft.chars().collect();
    let final_chars: Vec<char> = final_text.chars().collect();
    let total = draft_chars.len() + final_chars.len();
    if total == 0 {
        return 0.0;
    }
    let matched = if total <= EXACT_DISTANCE_MAX_CHARS {
        let mut budget = MATCH_WORK;
        matched_len(&matching_blocks(&draft_chars, &final_chars, &mut budget))
    } else {
        estimated_matches(draft, final_text)
    };
    round6(1.0 - (2 * matched) as f64 / total as f64)
}

/// The normalised compression distance of the two texts' UTF-8 bytes under zlib at level 9,
/// rounded to 6 decimals; 1 when either side is empty.
///
/// zlib looks back at most 32 KiB, so past that size the second text cannot be found in the
/// first and even a one-character edit scores near 1: the SDK classes any edit of a text that
/// large as `discarded`, and so does this, for the brains to graduate the same way.
pub fn compression_distance(draft: &str, final_text: &str) -> f64 {
    if draft.is_empty() || final_text.is_empty() {
        return 1.0;
    }
    let draft_len = compressed_len(&[draft.as_bytes()]);
    let final_len = compressed_len(&[final_text.as_bytes()]);
    let both_len = compressed_len(&[draft.as_bytes(), final_text.as_bytes()]);
    let (smaller, larger) = (draft_len.min(final_len), draft_len.max(final_len));
    // Compressing the two together can come out shorter than the smaller one alone (zlib's
    // framing is shared); the SDK keeps that negative numerator, and so do we.
    round6((both_len as f64 - smaller as f64) / larger as f64)
}

/// Ratcliff/Obershelp similarity of two sequences: twice the number of elements in the matching
/// blocks over the total length, 1 for two empty sequences.
///
/// Unbounded: a search costs up to `a × b` steps and there can be as many searches as blocks.
pub fn matching_ratio<T: Eq + Hash>(a: &[T], b: &[T]) -> f64 {
    let total = a.len() + b.len();
    if total == 0 {
        return 1.0;
    }
    let mut unlimited = usize::MAX;
    let matched = matched_len(&matching_blocks(a, b, &mut unlimited));
    (2 * matched) as f64 / total as f64
}

/// Most steps (elements of `b` visited) one edit distance may take: a few milliseconds, whatever
/// the texts. Under [`COMPRESSION_MIN_CHARS`] characters a match takes at most
/// 100 × 100 steps per search and 201 searches, about 2 million, so it is always exact there.
pub const MATCH_WORK: usize = 5_000_000;

/// About how many characters a Ratcliff/Obershelp match of two large texts keeps: the lines
/// both texts start and end with count as kept, the rest is matched by lines, then the characters
/// of each pair of unmatched stretches between matched lines, when both together are small enough
/// to match exactly. Matching stops when [`MATCH_WORK`] runs out; what is left counts as
/// unmatched, so a cut-short estimate can only overstate the distance.
fn estimated_matches(draft: &str, final_text: &str) -> usize {
    let mut draft_lines: Vec<&str> = draft.split_inclusive('\n').collect();
    let mut final_lines: Vec<&str> = final_text.split_inclusive('\n').collect();
    let chars = |lines: &[&str]| lines.iter().map(|line| line.chars().count()).sum::<usize>();
    // The usual large edit changes a few lines of a file: cutting the unchanged head and tail
    // first keeps a file of one repeated line from costing the square of its length.
    let head = draft_lines
        .iter()
        .zip(&final_lines)
        .take_while(|(a, b)| a == b)
        .count();
    let tail = draft_lines[head..]
        .iter()
        .rev()
        .zip(final_lines[head..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let mut matched = chars(&draft_lines[..head]) + chars(&draft_lines[draft_lines.len() - tail..]);
    draft_lines.truncate(draft_lines.len() - tail);
    final_lines.truncate(final_lines.len() - tail);
    let (draft_lines, final_lines) = (&draft_lines[head..], &final_lines[head..]);
    let mut budget = MATCH_WORK;
    let mut blocks = matching_blocks(draft_lines, final_lines, &mut budget);
    blocks.sort_by_key(|block| block.a);
    let end = Block {
        a: draft_lines.len(),
        b: final_lines.len(),
        len: 0,
    };
    let (mut draft_at, mut final_at) = (0, 0);
    for block in blocks.iter().chain([&end]) {
        // Blocks never cross, so the ones sorted by their place in the draft are in order in
        // the final text too.
        let draft_gap: Vec<char> = draft_lines[draft_at..block.a].concat().chars().collect();
        let final_gap: Vec<char> = final_lines[final_at..block.b].concat().chars().collect();
        if draft_gap.len() + final_gap.len() <= EXACT_DISTANCE_MAX_CHARS {
            matched += matched_len(&matching_blocks(&draft_gap, &final_gap, &mut budget));
        }
        matched += chars(&draft_lines[block.a..block.a + block.len]);
        (draft_at, final_at) = (block.a + block.len, block.b + block.len);
    }
    matched
}

/// The Ratcliff/Obershelp matching blocks of two sequences, in no particular order, as the
/// gestalt pattern matching algorithm describes them: the longest common contiguous block (of
/// several, the one that starts first in `a`, then first in `b`), then the same again in the
/// parts left of it and right of it, until no block is left. No element is treated as junk.
///
/// Each search spends `budget` (elements of `b` visited); when it runs out the blocks found so
/// far are returned.
fn matching_blocks<T: Eq + Hash>(a: &[T], b: &[T], budget: &mut usize) -> Vec<Block> {
    let matcher = BlockMatcher::new(a, b);
    let mut blocks = Vec::new();
    let mut pending = vec![(0, a.len(), 0, b.len())];
    while let Some((a_lo, a_hi, b_lo, b_hi)) = pending.pop() {
        let Some(block) = matcher.longest_block(a_lo, a_hi, b_lo, b_hi, budget) else {
            break;
        };
        if block.len == 0 {
            continue;
        }
        blocks.push(block);
        if a_lo < block.a && b_lo < block.b {
            pending.push((a_lo, block.a, b_lo, block.b));
        }
        if block.a + block.len < a_hi && block.b + block.len < b_hi {
            pending.push((block.a + block.len, a_hi, block.b + block.len, b_hi));
        }
    }
    blocks
}

/// How many elements of each side the blocks cover.
fn matched_len(blocks: &[Block]) -> usize {
    blocks.iter().map(|block| block.len).sum()
}

/// A common contiguous block: `a[a..a + len] == b[b..b + len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    a: usize,
    b: usize,
    len: usize,
}

/// Finds longest common blocks of two sequences, indexing `b` once for every search.
struct BlockMatcher<'s, T> {
    a: &'s [T],
    /// Every position of each element of `b`, ascending.
    positions_in_b: HashMap<&'s T, Vec<usize>>,
    b_len: usize,
}

impl<'s, T: Eq + Hash> BlockMatcher<'s, T> {
    fn new(a: &'s [T], b: &'s [T]) -> BlockMatcher<'s, T> {
        let mut positions_in_b: HashMap<&T, Vec<usize>> = HashMap::new();
        for (j, element) in b.iter().enumerate() {
            positions_in_b.entry(element).or_default().push(j);
        }
        BlockMatcher {
            a,
            positions_in_b,
            b_len: b.len(),
        }
    }

    /// The longest block within `a[a_lo..a_hi]` and `b[b_lo..b_hi]`; of equal ones, the first in
    /// `a`, then the first in `b`. Length 0 when the ranges share nothing; `None` when `budget`
    /// (elements of `b` visited) ran out first.
    fn longest_block(
        &self,
        a_lo: usize,
        a_hi: usize,
        b_lo: usize,
        b_hi: usize,
        budget: &mut usize,
    ) -> Option<Block> {
        let mut best = Block {
            a: a_lo,
            b: b_lo,
            len: 0,
        };
        // run_ending[j + 1]: length of the common run ending at the previous `a` element and at
        // b[j]. Only the touched entries are reset, so a search costs the matches it visits,
        // not the length of `b`.
        let mut previous = vec![0usize; self.b_len + 1];
        let mut current = vec![0usize; self.b_len + 1];
        let mut previous_touched: Vec<usize> = Vec::new();
        let mut current_touched: Vec<usize> = Vec::new();
        for i in a_lo..a_hi {
            let Some(positions) = self.positions_in_b.get(&self.a[i]) else {
                for &j in &previous_touched {
                    previous[j] = 0;
                }
                previous_touched.clear();
                continue;
            };
            let start = positions.partition_point(|&j| j < b_lo);
            for &j in &positions[start..] {
                if j >= b_hi {
                    break;
                }
                *budget = budget.checked_sub(1)?;
                let len = previous[j] + 1;
                current[j + 1] = len;
                current_touched.push(j + 1);
                // Strictly longer only: an equal run found later starts later in `a` or, on the
                // same `a` element, later in `b`.
                if len > best.len {
                    best = Block {
                        a: i + 1 - len,
                        b: j + 1 - len,
                        len,
                    };
                }
            }
            for &j in &previous_touched {
                previous[j] = 0;
            }
            std::mem::swap(&mut previous, &mut current);
            std::mem::swap(&mut previous_touched, &mut current_touched);
            current_touched.clear();
        }
        Some(best)
    }
}

/// Length of the zlib stream (header, deflate data at level 9, checksum) of the concatenated parts.
fn compressed_len(parts: &[&[u8]]) -> usize {
    use std::io::Write as _;
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::new(9));
    for part in parts {
        encoder
            .write_all(part)
            .expect("writing to an in-memory zlib stream cannot fail");
    }
    encoder
        .finish()
        .expect("finishing an in-memory zlib stream cannot fail")
        .len()
}

/// `x` rounded to 6 decimals, half to even on its exact binary value, as Python's `round(x, 6)`:
/// Rust's fixed-precision formatting rounds the same way, and parsing it back is exact.
fn round6(x: f64) -> f64 {
    format!("{x:.6}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests;
