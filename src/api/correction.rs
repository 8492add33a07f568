//! What `POST /correct` derives from an edit: the `category` of the file (the original daemon's
//! extension table) and the `severity` of the change (how much of the text changed).
//!
//! Pure functions, no I/O, so the thresholds are tested directly.
//!
//! Severity is the normalised edit distance `1 - similarity`, where similarity is the ratio of the
//! characters a diff keeps (`similar`'s Myers diff, bounded by a deadline so a pathological 1 MiB
//! pair cannot stall a request; past the deadline the diff is coarser, never wrong in kind):
//!
//! | distance | severity |
//! |---|---|
//! | ≤ 0.02 | `trivial` (a typo, whitespace) |
//! | ≤ 0.10 | `minor` (a word or two) |
//! | ≤ 0.30 | `moderate` (a phrase, a line) |
//! | ≤ 0.60 | `major` (most of a paragraph) |
//! | > 0.60 | `rewrite` |

use std::time::{Duration, Instant};

/// Longest a severity computation may spend on the diff.
const DIFF_DEADLINE: Duration = Duration::from_millis(50);

/// The original daemon's file categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Category {
    /// Source code.
    Code,
    /// Prose and documentation.
    Content,
    /// Configuration files.
    Config,
    /// Web front-end files.
    Frontend,
    /// Anything else.
    General,
}

impl Category {
    /// The category of `file_path`, by extension (case-insensitive).
    pub fn of(file_path: &str) -> Category {
        let extension = std::path::Path::new(file_path)
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match extension.as_str() {
            "py" | "js" | "ts" | "tsx" | "jsx" | "rs" | "go" | "java" | "rb" | "c" | "cpp"
            | "h" | "cs" | "swift" | "kt" => Category::Code,
            "md" | "txt" | "rst" => Category::Content,
            "json" | "yaml" | "yml" | "toml" | "ini" | "env" => Category::Config,
            "html" | "css" | "scss" | "vue" | "svelte" => Category::Frontend,
            _ => Category::General,
        }
    }

    /// The upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Code => "CODE",
            Category::Content => "CONTENT",
            Category::Config => "CONFIG",
            Category::Frontend => "FRONTEND",
            Category::General => "GENERAL",
        }
    }
}

/// How much an edit changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Distance ≤ 0.02.
    Trivial,
    /// Distance ≤ 0.10.
    Minor,
    /// Distance ≤ 0.30.
    Moderate,
    /// Distance ≤ 0.60.
    Major,
    /// Distance > 0.60.
    Rewrite,
}

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

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Trivial => "trivial",
            Severity::Minor => "minor",
            Severity::Moderate => "moderate",
            Severity::Major => "major",
            Severity::Rewrite => "rewrite",
        }
    }
}

/// Normalised edit distance in `[0, 1]`: 0 identical, 1 nothing in common.
pub fn distance(old: &str, new: &str) -> f64 {
    if old == new {
        return 0.0;
    }
    if old.is_empty() || new.is_empty() {
        return 1.0;
    }
    let diff = similar::TextDiff::configure()
        .deadline(Instant::now() + DIFF_DEADLINE)
        .diff_chars(old, new);
    (1.0 - f64::from(diff.ratio())).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_follow_the_original_table() {
        for (path, category) in [
            ("src/main.rs", Category::Code),
            ("a/b/App.TSX", Category::Code),
            ("notes.md", Category::Content),
            ("config/app.yaml", Category::Config),
            (".env", Category::General),
            ("prod.env", Category::Config),
            ("site.scss", Category::Frontend),
            ("Makefile", Category::General),
            ("", Category::General),
        ] {
            assert_eq!(Category::of(path), category, "{path:?}");
        }
    }

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
