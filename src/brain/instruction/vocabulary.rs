//! The word lists, patterns and thresholds the archetype rules of `instruction` read: this
//! module's own vocabulary (only the decisions follow 0.6.0). Data only, no rules.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

/// Whether `word` (lower-case) carries no topic: the English stop words of the `stop-words`
/// crate (NLTK's list), shared with the lesson matching of `learn`.
pub(crate) fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(word)
}

/// What an empty instruction becomes.
pub(super) const FALLBACK_INSTRUCTION: &str = "Follow the corrected version";

/// Prefixes with which a final text states its rule outright (matched case-insensitively).
pub(super) const EXPLICIT_PREFIXES: &[&str] = &["user corrected:", "correction:", "rule:", "fix:"];

/// Words and phrases that soften a statement. Sorted, so the instruction lists them in a fixed
/// order.
pub(super) const HEDGES: &[&str] = &[
    "arguably",
    "could",
    "i believe",
    "i guess",
    "i think",
    "it seems",
    "just",
    "kind of",
    "maybe",
    "might",
    "perhaps",
    "possibly",
    "probably",
    "somewhat",
    "sort of",
];

/// How many hedges an instruction names.
pub(super) const MAX_NAMED_HEDGES: usize = 3;

/// Words that turn a sentence into a constraint, sorted: the first new one decides.
pub(super) const CONSTRAINTS: &[&str] = &[
    "always",
    "do not",
    "don't",
    "mandatory",
    "must",
    "never",
    "prohibited",
    "required",
];

/// Verbs an instruction may start with.
pub(super) const ACTION_VERBS: &[&str] = &[
    "add",
    "always",
    "ask",
    "avoid",
    "call",
    "check",
    "cite",
    "confirm",
    "document",
    "don't",
    "double-check",
    "ensure",
    "explain",
    "follow",
    "handle",
    "include",
    "keep",
    "link",
    "list",
    "log",
    "mention",
    "never",
    "prefer",
    "present",
    "put",
    "remove",
    "replace",
    "return",
    "run",
    "state",
    "test",
    "update",
    "use",
    "validate",
    "verify",
    "write",
];

/// Lead-ins stripped to make a sentence imperative ("you should run" → "run").
pub(super) const LEAD_INS: &[&str] = &[
    "be sure to ",
    "make sure that ",
    "make sure to ",
    "make sure you ",
    "please ",
    "remember to ",
    "we should ",
    "you need to ",
    "you should ",
];

/// Comment markers a rule written in code starts with (`# Always …`, `// Never …`): not part of
/// the rule, so not part of the instruction. Longest first, so `/**` goes before `/*` and `*`.
pub(super) const COMMENT_MARKERS: &[&str] =
    &["<!--", "/**", "///", "//", "/*", "--", "#", "*", ";"];

/// Markers of a formal register.
pub(super) const FORMAL_MARKERS: &[&str] = &[
    "accordingly",
    "dear",
    "furthermore",
    "kindly",
    "pursuant",
    "regards",
    "respectfully",
    "sincerely",
    "therefore",
];

/// Markers of a casual register.
pub(super) const CASUAL_MARKERS: &[&str] = &[
    "asap", "awesome", "btw", "cool", "gonna", "hey", "hi", "lol", "thanks", "wanna", "yeah",
];

/// How many register markers must move (added casual ones and removed formal ones, or the
/// reverse) to call a change of tone: one greeting dropped from a shortened text is a cut, not a
/// new register (as measured on 0.6.0, which then asks for brevity).
pub(super) const MIN_REGISTER_SHIFT: i64 = 2;

/// Below this length ratio (final ÷ draft, in characters) the correction asks for brevity.
pub(super) const CONCISE_RATIO: f64 = 0.65;

/// Above this length ratio the correction asks for more detail.
pub(super) const DETAIL_RATIO: f64 = 1.5;

/// How many words of a sentence name a topic.
pub(super) const TOPIC_WORDS: usize = 6;

/// At most this many words swapped each way make a word swap.
pub(super) const MAX_SWAPPED_WORDS: usize = 3;

pub(super) static STOP_WORDS: LazyLock<BTreeSet<&'static str>> =
    LazyLock::new(|| stop_words::get("en").iter().copied().collect());

/// Amounts, ISO dates, percentages, links and numbers of three or more digits: the facts whose
/// change asks for verification.
pub(super) static FACTS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$[\d,.]+|\d{4}-\d{2}-\d{2}|\d+%|https?://\S+|\b\d{3,}\b")
        .expect("the facts pattern is valid")
});

/// A list item: a bullet or a number followed by `.` or `)`.
pub(super) static LIST_ITEM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:[-*+•]|\d+[.)])\s+").expect("the list pattern is valid"));

/// A sentence end: `.`, `!` or `?` followed by whitespace.
pub(super) static SENTENCE_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[.!?]+\s+").expect("the sentence pattern is valid"));
