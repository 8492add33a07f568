//! What `/correct` reports about the rules and habits behind a correction (brain spec §6.9
//! daemon steps 5–7, §7): which rules fired in the session were misfired, whether the edit was an
//! addition and whether the same kind of addition keeps coming back, and whether the correction
//! took back the wording of a fired rule again and again (a conflict). As in 0.6.0 (§13 #9) all
//! of it is reported, never applied to a lesson's confidence.
//!
//! [`Trackers`] holds the two daemon-level counters ([`AdditionTracker`], [`ConflictTracker`]),
//! both bounded, in memory only (lost on restart, as in 0.6.0); the caller keeps one behind a
//! lock. [`Trackers::attribute`] answers an [`Attribution`] with 0.6.0's response fields and the
//! fired rules that stay untested. The file kinds come from our own patterns over the added text
//! for every language (0.6.0 parses Python with its own parser; §14 allows the pattern path).
//!
//! Not here: the session state (the caller passes the fired rules of `sessions` and stores the
//! untested ones back), lessons, events, HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::rules::FiredRule;

/// How many added characters make an edit an addition.
pub const MIN_ADDED_CHARS: usize = 10;

/// Occurrences of one kind of addition that make it a habit.
pub const ADDITION_THRESHOLD: u64 = 3;

/// Occurrences that make it a habit when they come from at least
/// [`ADDITION_CROSS_SESSIONS`] sessions.
pub const ADDITION_CROSS_SESSION_THRESHOLD: u64 = 2;

/// See [`ADDITION_CROSS_SESSION_THRESHOLD`].
pub const ADDITION_CROSS_SESSIONS: usize = 2;

/// The share of a fired rule's tokens a correction must remove to conflict with it.
pub const CONFLICT_OVERLAP: f64 = 0.3;

/// How many kinds of addition, and how many rules with conflicts, are remembered by default.
/// Either is a handful per workstation; the bound only stops a pathological client.
pub const DEFAULT_TRACKER_CAPACITY: usize = 1024;

/// What `/correct` reports, with 0.6.0's response keys in its order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribution {
    /// Fired rules of the correction's category, in firing order.
    pub misfired_rules: Vec<String>,
    /// Always empty, as in 0.6.0 (nothing ever accepts a rule on this path).
    pub accepted_rules: Vec<String>,
    /// The edit only added text.
    pub addition_detected: bool,
    /// The addition became a habit with this correction.
    pub addition_lesson: Option<AdditionLesson>,
    /// The first misfired rule whose wording was removed often enough to act on.
    pub correction_conflict: Option<CorrectionConflict>,
}

/// A habit of adding the same kind of thing to one kind of file. Reported, not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdditionLesson {
    /// `Always include <kind> in <language> files`.
    pub description: String,
    /// The language, lower-case (`python`, `markdown`, …).
    pub category: String,
    /// Always `addition_pattern`.
    pub detection: &'static str,
    /// `<LANGUAGE>:<kind>`.
    pub fingerprint: String,
}

/// A fired rule whose wording corrections keep removing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CorrectionConflict {
    /// The rule's id.
    pub rule_id: String,
    /// What the count suggests.
    pub action: ConflictAction,
    /// How many corrections removed its wording.
    pub conflict_count: u64,
}

/// What a conflict count suggests doing with the rule (never done here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictAction {
    /// The second conflict.
    Demote,
    /// The third and later.
    Kill,
}

/// One correction, as attribution sees it. Texts are the redacted ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit<'a> {
    /// The correction's upper-case category (§5.1).
    pub category: &'a str,
    /// The edited file, possibly empty.
    pub file_path: &'a str,
    /// The text before.
    pub old: &'a str,
    /// The text after.
    pub new: &'a str,
    /// The client's session id, possibly empty (it counts as one session, as in 0.6.0).
    pub session_id: &'a str,
}

/// The answer of [`Trackers::attribute`].
#[derive(Debug, Clone, PartialEq)]
pub struct Attributed {
    /// The response fields.
    pub attribution: Attribution,
    /// The fired rules of other categories: the session's fired list from now on.
    pub untested: Vec<FiredRule>,
}

/// The kind of addition: a language and what was added.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fingerprint {
    /// `python`, `markdown`, the bare suffix for other files, `unknown` without one.
    pub language: String,
    /// `import`, `list_item`, …, or `other`.
    pub kind: &'static str,
}

/// Both daemon-level trackers of `/correct`.
#[derive(Debug, Clone)]
pub struct Trackers {
    /// Kinds of addition seen.
    pub additions: AdditionTracker,
    /// Conflicts per rule.
    pub conflicts: ConflictTracker,
}

/// Counts additions per [`Fingerprint`] until one becomes a habit.
#[derive(Debug, Clone)]
pub struct AdditionTracker {
    entries: BTreeMap<Fingerprint, AdditionCount>,
    capacity: usize,
    clock: u64,
}

/// Counts conflicts per rule id.
#[derive(Debug, Clone)]
pub struct ConflictTracker {
    entries: BTreeMap<String, ConflictCount>,
    capacity: usize,
    clock: u64,
}

#[derive(Debug, Clone)]
struct AdditionCount {
    count: u64,
    /// At most [`ADDITION_CROSS_SESSIONS`] ids are ever held: reaching that many fires.
    sessions: BTreeSet<String>,
    last_used: u64,
}

#[derive(Debug, Clone)]
struct ConflictCount {
    count: u64,
    last_used: u64,
}

impl Trackers {
    /// Empty trackers, each remembering at most `capacity` keys (at least one).
    pub fn new(capacity: usize) -> Trackers {
        Trackers {
            additions: AdditionTracker::new(capacity),
            conflicts: ConflictTracker::new(capacity),
        }
    }

    /// Attributes `edit` given the rules fired in its session (in firing order), counting it in
    /// the trackers.
    pub fn attribute(&mut self, fired: &[FiredRule], edit: &Edit<'_>) -> Attributed {
        let (misfired, untested) = split_misfired(fired, edit.category);
        let addition_detected = is_addition(edit.old, edit.new);
        let addition_lesson = if addition_detected {
            self.additions.record(
                fingerprint(edit.file_path, edit.old, edit.new),
                edit.session_id,
            )
        } else {
            None
        };
        let correction_conflict = self.conflicts.record(&misfired, edit.old, edit.new);
        Attributed {
            attribution: Attribution {
                misfired_rules: misfired.iter().map(|rule| rule.rule_id.clone()).collect(),
                accepted_rules: Vec::new(),
                addition_detected,
                addition_lesson,
                correction_conflict,
            },
            untested,
        }
    }
}

impl Default for Trackers {
    fn default() -> Self {
        Trackers::new(DEFAULT_TRACKER_CAPACITY)
    }
}

impl AdditionTracker {
    /// An empty tracker of at most `capacity` fingerprints (at least one).
    pub fn new(capacity: usize) -> AdditionTracker {
        AdditionTracker {
            entries: BTreeMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Counts one addition of `fingerprint` in `session_id`. When that makes a habit (the
    /// third time, or the second across two sessions) the count starts again and the habit is
    /// answered.
    pub fn record(&mut self, fingerprint: Fingerprint, session_id: &str) -> Option<AdditionLesson> {
        self.clock += 1;
        if !self.entries.contains_key(&fingerprint) && self.entries.len() >= self.capacity {
            evict_oldest(&mut self.entries, |entry| entry.last_used);
        }
        let entry = self
            .entries
            .entry(fingerprint.clone())
            .or_insert_with(|| AdditionCount {
                count: 0,
                sessions: BTreeSet::new(),
                last_used: 0,
            });
        entry.count += 1;
        entry.sessions.insert(session_id.to_owned());
        entry.last_used = self.clock;
        let habit = entry.count >= ADDITION_THRESHOLD
            || (entry.count >= ADDITION_CROSS_SESSION_THRESHOLD
                && entry.sessions.len() >= ADDITION_CROSS_SESSIONS);
        if !habit {
            return None;
        }
        self.entries.remove(&fingerprint);
        Some(AdditionLesson {
            description: format!(
                "Always include {} in {} files",
                fingerprint.kind, fingerprint.language
            ),
            fingerprint: format!(
                "{}:{}",
                fingerprint.language.to_uppercase(),
                fingerprint.kind
            ),
            category: fingerprint.language,
            detection: "addition_pattern",
        })
    }

    /// How many fingerprints are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl ConflictTracker {
    /// An empty tracker of at most `capacity` rules (at least one).
    pub fn new(capacity: usize) -> ConflictTracker {
        ConflictTracker {
            entries: BTreeMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Counts a conflict for every misfired rule whose tokens the edit removed (at least
    /// [`CONFLICT_OVERLAP`] of them) and answers the first whose count suggests an action.
    pub fn record(
        &mut self,
        misfired: &[FiredRule],
        old: &str,
        new: &str,
    ) -> Option<CorrectionConflict> {
        if misfired.is_empty() {
            return None;
        }
        let new_tokens = super::rules::tokens(new);
        let removed: BTreeSet<String> = super::rules::tokens(old)
            .into_iter()
            .filter(|token| !new_tokens.contains(token))
            .collect();
        let mut first = None;
        for rule in misfired {
            if rule.tokens.is_empty() {
                continue;
            }
            let shared = rule.tokens.intersection(&removed).count();
            if ratio(shared, rule.tokens.len()) < CONFLICT_OVERLAP {
                continue;
            }
            let count = self.bump(&rule.rule_id);
            let action = match count {
                0 | 1 => None,
                2 => Some(ConflictAction::Demote),
                _ => Some(ConflictAction::Kill),
            };
            if let (None, Some(action)) = (&first, action) {
                first = Some(CorrectionConflict {
                    rule_id: rule.rule_id.clone(),
                    action,
                    conflict_count: count,
                });
            }
        }
        first
    }

    /// How many conflicts `rule_id` has had.
    pub fn count(&self, rule_id: &str) -> u64 {
        self.entries.get(rule_id).map_or(0, |entry| entry.count)
    }

    /// How many rules are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn bump(&mut self, rule_id: &str) -> u64 {
        self.clock += 1;
        if !self.entries.contains_key(rule_id) && self.entries.len() >= self.capacity {
            evict_oldest(&mut self.entries, |entry| entry.last_used);
        }
        let entry = self
            .entries
            .entry(rule_id.to_owned())
            .or_insert(ConflictCount {
                count: 0,
                last_used: 0,
            });
        entry.count += 1;
        entry.last_used = self.clock;
        entry.count
    }
}

/// Splits the fired rules into those of `category` (misfired: the correction shows they did not
/// prevent it) and the others (untested), each in firing order. A rule's category is its id up
/// to the first `:`.
pub fn split_misfired(fired: &[FiredRule], category: &str) -> (Vec<FiredRule>, Vec<FiredRule>) {
    fired.iter().cloned().partition(|rule| {
        rule.rule_id
            .split_once(':')
            .is_some_and(|(prefix, _)| prefix == category)
    })
}

/// Whether the edit only added text: at least [`MIN_ADDED_CHARS`] characters, to an empty text
/// or around the old one kept in order (the old text is a subsequence of the new).
pub fn is_addition(old: &str, new: &str) -> bool {
    let old_len = old.chars().count();
    let new_len = new.chars().count();
    if old.is_empty() {
        return new_len >= MIN_ADDED_CHARS;
    }
    !new.is_empty() && new_len >= old_len + MIN_ADDED_CHARS && is_subsequence(old, new)
}

/// The kind of addition from `old` to `new` in `file_path`.
pub fn fingerprint(file_path: &str, old: &str, new: &str) -> Fingerprint {
    let suffix = Path::new(file_path)
        .extension()
        .and_then(|suffix| suffix.to_str())
        .map(str::to_lowercase)
        .filter(|suffix| !suffix.is_empty());
    let Some(suffix) = suffix else {
        return Fingerprint {
            language: "unknown".to_owned(),
            kind: "other",
        };
    };
    let added = if !old.is_empty() && new.contains(old) {
        new.replacen(old, "", 1)
    } else {
        new.to_owned()
    };
    let language = language_of(&suffix);
    let patterns: &[(&'static str, Regex)] = match suffix.as_str() {
        "py" | "pyi" => &PYTHON_KINDS,
        "md" | "txt" | "rst" => &TEXT_KINDS,
        _ => &CODE_KINDS,
    };
    let kind = patterns
        .iter()
        .find(|(_, pattern)| pattern.is_match(&added))
        .map_or("other", |(kind, _)| kind);
    Fingerprint { language, kind }
}

/// The language name of a lower-case file suffix: the usual name, or the suffix itself.
fn language_of(suffix: &str) -> String {
    let name = match suffix {
        "py" | "pyi" => "python",
        "js" | "jsx" | "mjs" => "javascript",
        "ts" | "tsx" => "typescript",
        "rs" => "rust",
        "go" => "go",
        "java" => "java",
        "rb" => "ruby",
        "c" | "h" => "c",
        "cpp" => "cpp",
        "cs" => "csharp",
        "swift" => "swift",
        "kt" => "kotlin",
        "md" => "markdown",
        "txt" => "text",
        "rst" => "restructuredtext",
        other => other,
    };
    name.to_owned()
}

fn kinds(table: &[(&'static str, &str)]) -> Vec<(&'static str, Regex)> {
    table
        .iter()
        .map(|(kind, pattern)| {
            (
                *kind,
                Regex::new(pattern).expect("the addition kind patterns are valid"),
            )
        })
        .collect()
}

/// Kinds of Python additions, first match wins: what a reviewer most often asks to add.
static PYTHON_KINDS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    kinds(&[
        ("import", r"(?m)^\s*(?:import\s+\w|from\s+\S+\s+import\s)"),
        (
            "return_type",
            r"(?m)^\s*(?:async\s+)?def\s+\w+\s*\(.*\)\s*->",
        ),
        (
            "type_annotation",
            r"(?m)^\s*[A-Za-z_][\w.]*\s*:\s*[A-Za-z_][\w\[\], .|]*(?:=.*)?$",
        ),
        ("docstring", r#"(?s)""".*?"""|'''.*?'''"#),
        ("assertion", r"(?m)^\s*assert\b"),
        ("decorator", r"(?m)^\s*@\w"),
    ])
});

/// Kinds of prose additions.
static TEXT_KINDS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    kinds(&[
        ("link", r"\[[^\]\n]+\]\([^)\n]+\)"),
        ("emphasis", r"\*\*[^*\n]+\*\*"),
        ("list_item", r"(?m)^\s*[-*+]\s"),
        ("heading", r"(?m)^#{1,6}\s"),
        ("code_block", r"```"),
    ])
});

/// Kinds of additions to other code and files.
static CODE_KINDS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    kinds(&[
        (
            "import",
            r"(?m)^\s*(?:import\s|use\s+\w|#include\s|.*\brequire\s*\()",
        ),
        (
            "type_annotation",
            r"\b\w+\s*:\s*[A-Za-z_][\w<>\[\], |]*\s*[=;,)]",
        ),
        ("comment", r"(?m)^\s*(?://|/\*|#\s)"),
        (
            "error_handling",
            r"\btry\s*\{|\bcatch\s*\(|\bexcept\s|\brescue\b",
        ),
        (
            "logging",
            r"console\.(?:log|warn|error)|\blogger\.|\blog\.|\bprint(?:ln)?!?\(",
        ),
    ])
});

/// Whether `needle`'s characters occur in `haystack` in order (a greedy scan).
fn is_subsequence(needle: &str, haystack: &str) -> bool {
    let mut rest = haystack.chars();
    needle.chars().all(|wanted| rest.any(|c| c == wanted))
}

/// Removes the entry used longest ago.
fn evict_oldest<K: Ord + Clone, V>(entries: &mut BTreeMap<K, V>, last_used: impl Fn(&V) -> u64) {
    let oldest = entries
        .iter()
        .min_by_key(|(_, entry)| last_used(entry))
        .map(|(key, _)| key.clone());
    if let Some(key) = oldest {
        entries.remove(&key);
    }
}

/// `part ÷ whole` for token counts.
#[expect(
    clippy::cast_precision_loss,
    reason = "token counts of one rule are far below 2^53"
)]
fn ratio(part: usize, whole: usize) -> f64 {
    part as f64 / whole as f64
}

#[cfg(test)]
mod tests;
