//! Tags for one file edit (`POST /tag-delta`), as 0.6.0 gives them: what kind of change it is
//! (a new file, a deletion, mostly additions, mostly removals, a mix) and what the added lines
//! mention (imports, tests, fixes), plus the file's [`Category`].
//!
//! Lines are compared as sets, cut the way Python's `str.splitlines()` cuts them, so a line
//! moved or repeated is no change. Pure: no I/O.

use std::collections::HashSet;

use serde::Serialize;

use super::category::Category;
use super::pytext;

/// The route's answer: `{"tags": [...], "category": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TagDelta {
    /// The tags, in the order they are decided; never empty (`edit` when nothing else applies).
    pub tags: Vec<&'static str>,
    /// The file's category.
    pub category: Category,
}

/// One side's distinct lines must outnumber the other's more than this many times for the edit
/// to count as mostly additions or mostly removals.
const DOMINANCE: usize = 3;

/// The tags and category of changing `old` into `new` in `file_path`.
pub fn tag_delta(file_path: &str, old: &str, new: &str) -> TagDelta {
    TagDelta {
        tags: tags(old, new),
        category: Category::of(file_path),
    }
}

/// The tags of changing `old` into `new`.
fn tags(old: &str, new: &str) -> Vec<&'static str> {
    let mut tags = Vec::new();
    if old.is_empty() && !new.is_empty() {
        tags.push("new_file");
    } else if !old.is_empty() && new.is_empty() {
        tags.push("deleted");
    } else {
        let old_lines: HashSet<&str> = pytext::splitlines(old).into_iter().collect();
        let new_lines: HashSet<&str> = pytext::splitlines(new).into_iter().collect();
        let added: Vec<&str> = new_lines.difference(&old_lines).copied().collect();
        let n_removed = old_lines.difference(&new_lines).count();
        if added.len() > n_removed * DOMINANCE {
            tags.push("feature_addition");
        } else if n_removed > added.len() * DOMINANCE {
            tags.push("cleanup");
        } else if !added.is_empty() && n_removed > 0 {
            tags.push("refactor");
        }
        // 0.6.0 joins the added lines in set order; no keyword spans a line break, so the
        // order cannot change what is found.
        let added_text = added.join("\n");
        let added_lower = added_text.to_lowercase();
        if added_text.contains("import ") || added_text.contains("require(") {
            tags.push("dependency_change");
        }
        if added_lower.contains("test") || added_lower.contains("assert") {
            tags.push("test_change");
        }
        if added_lower.contains("fix") || added_lower.contains("bug") {
            tags.push("bug_fix");
        }
    }
    if tags.is_empty() {
        tags.push("edit");
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(old: &str, new: &str, expected: &[&str]) {
        assert_eq!(tags(old, new), expected, "{old:?} -> {new:?}");
    }

    #[test]
    fn the_kind_of_change_follows_the_line_sets() {
        check("", "import os\ntest", &["new_file"]); // no keyword tags for a new file
        check("a\nfix", "", &["deleted"]);
        check("", "", &["edit"]);
        check("same\n", "same\n", &["edit"]);
        check("a\nb", "b\na", &["edit"]); // order is no change
        check("a", "a\na\na", &["edit"]); // nor is repetition
        check("a", "a\nb\nc\nd", &["feature_addition"]); // 3 added, 0 removed
        check("a\nb", "c\nd\ne\nf\ng\nh\ni", &["feature_addition"]); // 7 > 3 × 2
        check("a\nb", "c\nd\ne\nf\ng\nh", &["refactor"]); // 6 is not > 3 × 2
        check("a\nb\nc\nd", "a", &["cleanup"]);
        check("x", "y", &["refactor"]);
        check("x\ny", "y\nz", &["refactor"]);
    }

    #[test]
    fn lines_are_cut_as_python_splitlines_cuts_them() {
        // `\r\n`, `\r` and U+2028 end lines: the same three lines either way.
        check("a\nb\nc", "a\r\nb\rc\u{2028}", &["edit"]);
        // A vertical tab ends a line for Python; Rust's `lines()` would see one changed line.
        check("a\nb", "a\u{0b}b", &["edit"]);
    }

    #[test]
    fn added_lines_are_searched_for_keywords() {
        check(
            "a",
            "a\nimport { x } from 'y'\nit('works')\nassert(x)\n// fix the bug",
            &[
                "feature_addition",
                "dependency_change",
                "test_change",
                "bug_fix",
            ],
        );
        check(
            "a",
            "const x = require('x')",
            &["refactor", "dependency_change"],
        );
        // `import ` is case-sensitive and needs its space; the others are not case-sensitive.
        check("a", "IMPORT x", &["refactor"]);
        check("a", "important", &["refactor"]);
        check("a", "TestCase", &["refactor", "test_change"]);
        check("a", "Prefix", &["refactor", "bug_fix"]);
        // Only added lines count: a removed test is not a test change.
        check("test\nfix\nimport x", "other", &["refactor"]);
        check("test", "test\nnew line", &["feature_addition"]);
    }

    #[test]
    fn the_answer_carries_the_category() {
        let delta = tag_delta("cfg/app.yaml", "a\nb\nc\nd", "a");
        assert_eq!(delta.tags, ["cleanup"]);
        assert_eq!(delta.category, Category::Config);
        assert_eq!(
            serde_json::to_string(&tag_delta("Makefile", "x", "y")).expect("plain data"),
            r#"{"tags":["refactor"],"category":"GENERAL"}"#
        );
    }
}
