//! Instruction extraction: the one-line instruction a lesson gets from a correction (brain spec
//! §6.9, pipeline step 8), found by rules over the draft and the final text. No model, no
//! embeddings, no network: the same pair always gives the same instruction.
//!
//! [`extract`] tries the archetypes of the spec in its order (an explicit `Rule:` line, dropped
//! hedges, a new constraint, a new step, a tone shift, a length change, a reordering, changed
//! facts, list versus prose, an omission, a small word swap, an added sentence) and keeps the
//! first that applies. The word lists and sentence templates are this module's own; only the
//! decisions follow 0.6.0. Two fixes (spec §13): where 0.6.0 picks words in hash order, the
//! choice here is sorted, so it is reproducible; and the result is always one line of at most
//! [`MAX_INSTRUCTION_CHARS`] characters, since a line break in it would corrupt `lessons.md`.
//!
//! Not here: the convergence gate (a converged category keeps the classifier's description: the
//! caller's choice), severity, redaction (the texts come in already redacted), and the
//! keyword-template table and language-model fallback of 0.6.0, which are dropped (§14).

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

use super::pytext;

/// The longest instruction, in characters. A lesson's description is one line of `lessons.md`
/// and the text `/apply-rules` injects: a sentence, not a file.
pub const MAX_INSTRUCTION_CHARS: usize = 200;

/// Which rule gave the instruction, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archetype {
    /// The final text states the rule itself (`Rule: …`, `Fix: …`).
    Explicit,
    /// Hedging words the draft had are gone.
    DropHedges,
    /// A constraint word (always, never, must, …) is new.
    Constraint,
    /// A new sentence that starts with an action verb.
    NewStep,
    /// The text became more casual or more formal.
    Tone,
    /// The final is much shorter.
    Concise,
    /// The final is much longer.
    MoreDetail,
    /// The same words in another order.
    Reorder,
    /// Numbers, dates, amounts or links changed.
    Facts,
    /// A list became prose or prose a list.
    ListOrProse,
    /// Sentences were removed and none added.
    Omit,
    /// A few words were swapped for others.
    WordSwap,
    /// Some sentence was added.
    AddedSentence,
    /// Nothing more specific applied.
    Fallback,
}

/// An extracted instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// One line, trimmed, at most [`MAX_INSTRUCTION_CHARS`] characters, never empty.
    pub text: String,
    /// The rule that gave it.
    pub archetype: Archetype,
}

/// The instruction a correction from `draft` to `final_text` teaches. Both texts are the
/// redacted ones; either may be empty, not both (the caller rejects a no-op correction first).
pub fn extract(draft: &str, final_text: &str) -> Instruction {
    let pair = Pair::new(draft, final_text);
    let (archetype, text) = pair.archetype();
    Instruction {
        text: one_line(&text, MAX_INSTRUCTION_CHARS),
        archetype,
    }
}

/// `text` on one line: every run of whitespace (line breaks included) becomes one space, the
/// ends are trimmed, and the text is cut to `max_chars` characters at a word boundary when there
/// is one in its second half. An empty result becomes a generic instruction, so a lesson never
/// gets an empty description.
pub fn one_line(text: &str, max_chars: usize) -> String {
    let collapsed = pytext::split_whitespace(text).collect::<Vec<_>>().join(" ");
    let mut line = if collapsed.chars().count() <= max_chars {
        collapsed
    } else {
        let cut: String = collapsed.chars().take(max_chars).collect();
        match cut.rfind(' ') {
            Some(at) if cut[..at].chars().count() >= max_chars / 2 => cut[..at].to_owned(),
            _ => cut,
        }
    };
    let trimmed_len = line.trim_end().len();
    line.truncate(trimmed_len);
    if line.is_empty() {
        FALLBACK_INSTRUCTION.to_owned()
    } else {
        line
    }
}

/// Whether `word` (lower-case) carries no topic: the English stop words of the `stop-words`
/// crate (NLTK's list), shared with the lesson matching of `learn`.
pub(crate) fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.contains(word)
}

/// What an empty instruction becomes.
const FALLBACK_INSTRUCTION: &str = "Follow the corrected version";

/// Prefixes with which a final text states its rule outright (matched case-insensitively).
const EXPLICIT_PREFIXES: &[&str] = &["user corrected:", "correction:", "rule:", "fix:"];

/// Words and phrases that soften a statement. Sorted, so the instruction lists them in a fixed
/// order.
const HEDGES: &[&str] = &[
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
const MAX_NAMED_HEDGES: usize = 3;

/// Words that turn a sentence into a constraint, sorted: the first new one decides.
const CONSTRAINTS: &[&str] = &[
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
const ACTION_VERBS: &[&str] = &[
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
const LEAD_INS: &[&str] = &[
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
const COMMENT_MARKERS: &[&str] = &["<!--", "/**", "///", "//", "/*", "--", "#", "*", ";"];

/// Markers of a formal register.
const FORMAL_MARKERS: &[&str] = &[
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
const CASUAL_MARKERS: &[&str] = &[
    "asap", "awesome", "btw", "cool", "gonna", "hey", "hi", "lol", "thanks", "wanna", "yeah",
];

/// How many register markers must move (added casual ones and removed formal ones, or the
/// reverse) to call a change of tone: one greeting dropped from a shortened text is a cut, not a
/// new register (as measured on 0.6.0, which then asks for brevity).
const MIN_REGISTER_SHIFT: i64 = 2;

/// Below this length ratio (final ÷ draft, in characters) the correction asks for brevity.
const CONCISE_RATIO: f64 = 0.65;

/// Above this length ratio the correction asks for more detail.
const DETAIL_RATIO: f64 = 1.5;

/// How many words of a sentence name a topic.
const TOPIC_WORDS: usize = 6;

/// At most this many words swapped each way make a word swap.
const MAX_SWAPPED_WORDS: usize = 3;

static STOP_WORDS: LazyLock<BTreeSet<&'static str>> =
    LazyLock::new(|| stop_words::get("en").iter().copied().collect());

/// Amounts, ISO dates, percentages, links and numbers of three or more digits: the facts whose
/// change asks for verification.
static FACTS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$[\d,.]+|\d{4}-\d{2}-\d{2}|\d+%|https?://\S+|\b\d{3,}\b")
        .expect("the facts pattern is valid")
});

/// A list item: a bullet or a number followed by `.` or `)`.
static LIST_ITEM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*(?:[-*+•]|\d+[.)])\s+").expect("the list pattern is valid"));

/// A sentence end: `.`, `!` or `?` followed by whitespace.
static SENTENCE_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[.!?]+\s+").expect("the sentence pattern is valid"));

/// One archetype's test: its instruction text when it applies.
type Rule<'a> = fn(&Pair<'a>) -> Option<String>;

/// The correction being read, with what the rules share.
struct Pair<'a> {
    draft: &'a str,
    final_text: &'a str,
    draft_lower: String,
    final_lower: String,
    /// Sentences of the final that the draft does not have, in order.
    added: Vec<String>,
    /// Sentences of the draft that the final does not have, in order.
    removed: Vec<String>,
}

impl<'a> Pair<'a> {
    fn new(draft: &'a str, final_text: &'a str) -> Pair<'a> {
        let draft_sentences = sentences(draft);
        let final_sentences = sentences(final_text);
        let draft_keys: BTreeSet<String> =
            draft_sentences.iter().map(|s| sentence_key(s)).collect();
        let final_keys: BTreeSet<String> =
            final_sentences.iter().map(|s| sentence_key(s)).collect();
        let added = final_sentences
            .iter()
            .filter(|s| !draft_keys.contains(&sentence_key(s)))
            .cloned()
            .collect();
        let removed = draft_sentences
            .iter()
            .filter(|s| !final_keys.contains(&sentence_key(s)))
            .cloned()
            .collect();
        Pair {
            draft,
            final_text,
            draft_lower: draft.to_lowercase(),
            final_lower: final_text.to_lowercase(),
            added,
            removed,
        }
    }

    /// The first archetype that applies, with its (not yet one-lined) text.
    fn archetype(&self) -> (Archetype, String) {
        let rules: [(Archetype, Rule<'a>); 13] = [
            (Archetype::Explicit, Pair::explicit),
            (Archetype::DropHedges, Pair::drop_hedges),
            (Archetype::Constraint, Pair::constraint),
            (Archetype::NewStep, Pair::new_step),
            (Archetype::Tone, Pair::tone),
            (Archetype::Concise, Pair::concise),
            (Archetype::MoreDetail, Pair::more_detail),
            (Archetype::Reorder, Pair::reorder),
            (Archetype::Facts, Pair::facts),
            (Archetype::ListOrProse, Pair::list_or_prose),
            (Archetype::Omit, Pair::omit),
            (Archetype::WordSwap, Pair::word_swap),
            (Archetype::AddedSentence, Pair::added_sentence),
        ];
        rules
            .iter()
            .find_map(|(archetype, rule)| rule(self).map(|text| (*archetype, text)))
            .unwrap_or_else(|| (Archetype::Fallback, self.fallback()))
    }

    fn explicit(&self) -> Option<String> {
        let stripped = pytext::strip(self.final_text);
        let rest = EXPLICIT_PREFIXES
            .iter()
            .find_map(|prefix| strip_prefix_ascii_case(stripped, prefix))?;
        let rest = first_line(rest);
        actionable(&capitalise(rest)).then(|| capitalise(rest))
    }

    fn drop_hedges(&self) -> Option<String> {
        let draft_words = words(&self.draft_lower);
        let final_words = words(&self.final_lower);
        let dropped: Vec<&str> = HEDGES
            .iter()
            .copied()
            .filter(|hedge| has_phrase(&draft_words, hedge) && !has_phrase(&final_words, hedge))
            .take(MAX_NAMED_HEDGES)
            .collect();
        if dropped.is_empty() {
            return None;
        }
        let quoted: Vec<String> = dropped.iter().map(|hedge| format!("'{hedge}'")).collect();
        Some(format!("Avoid hedging words such as {}", quoted.join(", ")))
    }

    fn constraint(&self) -> Option<String> {
        let draft_words = words(&self.draft_lower);
        let final_words = words(&self.final_lower);
        let word = CONSTRAINTS
            .iter()
            .find(|word| has_phrase(&final_words, word) && !has_phrase(&draft_words, word))?;
        let sentence = self
            .added
            .iter()
            .find(|sentence| has_phrase(&words(&sentence.to_lowercase()), word))?;
        let instruction = imperative(sentence);
        actionable(&instruction).then_some(instruction)
    }

    fn new_step(&self) -> Option<String> {
        self.added.iter().find_map(|sentence| {
            let step = imperative(sentence);
            let first = words(&step.to_lowercase()).into_iter().next()?;
            (first != "always" && ACTION_VERBS.contains(&first.as_str()))
                .then(|| format!("Always {}", lower_first(&step)))
        })
    }

    fn tone(&self) -> Option<String> {
        let shift = register(&self.final_lower) - register(&self.draft_lower);
        if shift >= MIN_REGISTER_SHIFT {
            Some("Write in a casual tone".to_owned())
        } else if shift <= -MIN_REGISTER_SHIFT {
            Some("Write in a formal tone".to_owned())
        } else {
            None
        }
    }

    fn concise(&self) -> Option<String> {
        let ratio = self.length_ratio()?;
        // The cut text is deliberately not named: it is often the very wording of a rule the
        // user removed, and naming it would make the lesson reinforce that rule.
        (ratio < CONCISE_RATIO).then(|| {
            let percent = ((1.0 - ratio) * 100.0).round();
            format!("Keep it concise: the draft was about {percent}% too long")
        })
    }

    fn more_detail(&self) -> Option<String> {
        let longer = match self.length_ratio() {
            Some(ratio) => ratio > DETAIL_RATIO,
            None => true,
        };
        if !longer {
            return None;
        }
        let topic = self
            .added
            .iter()
            .map(|sentence| topic(sentence))
            .find(|topic| !topic.is_empty())?;
        Some(format!("Include more detail about {topic}"))
    }

    fn reorder(&self) -> Option<String> {
        let mut draft_words = words(&self.draft_lower);
        let mut final_words = words(&self.final_lower);
        draft_words.sort();
        final_words.sort();
        (!draft_words.is_empty() && draft_words == final_words)
            .then(|| "Present information in a more logical order".to_owned())
    }

    fn facts(&self) -> Option<String> {
        let found = |text: &str| -> BTreeSet<String> {
            FACTS
                .find_iter(text)
                .map(|m| m.as_str().to_owned())
                .collect()
        };
        (found(self.draft) != found(self.final_text))
            .then(|| "Verify facts, numbers, and dates before including them".to_owned())
    }

    fn list_or_prose(&self) -> Option<String> {
        let items = |text: &str| {
            pytext::splitlines(text)
                .into_iter()
                .filter(|line| LIST_ITEM.is_match(line))
                .count()
        };
        match (items(self.draft), items(self.final_text)) {
            (0, n) if n > 0 => Some("Use a list instead of prose".to_owned()),
            (n, 0) if n > 0 => Some("Use prose instead of a list".to_owned()),
            _ => None,
        }
    }

    fn omit(&self) -> Option<String> {
        if !self.added.is_empty() {
            return None;
        }
        let topic = self
            .removed
            .iter()
            .map(|sentence| topic(sentence))
            .find(|topic| !topic.is_empty())?;
        Some(format!("Don't include {topic}"))
    }

    fn word_swap(&self) -> Option<String> {
        let draft_words: Vec<&str> = pytext::split_whitespace(self.draft).collect();
        let final_words: Vec<&str> = pytext::split_whitespace(self.final_text).collect();
        let removed = first_unique(draft_words.iter().filter(|w| !final_words.contains(w)));
        let added = first_unique(final_words.iter().filter(|w| !draft_words.contains(w)));
        let swapped = (1..=MAX_SWAPPED_WORDS).contains(&removed.len())
            && (1..=MAX_SWAPPED_WORDS).contains(&added.len());
        swapped.then(|| {
            format!(
                "Use '{}' instead of '{}'",
                added.join(" "),
                removed.join(" ")
            )
        })
    }

    fn added_sentence(&self) -> Option<String> {
        let sentence = self.added.first()?;
        let step = imperative(sentence);
        let first = words(&step.to_lowercase()).into_iter().next();
        if first.as_deref() == Some("always") {
            Some(step)
        } else {
            Some(format!("Always {}", lower_first(&step)))
        }
    }

    fn fallback(&self) -> String {
        let start: Vec<&str> = pytext::split_whitespace(self.final_text)
            .take(TOPIC_WORDS)
            .collect();
        if start.is_empty() {
            FALLBACK_INSTRUCTION.to_owned()
        } else {
            format!("{FALLBACK_INSTRUCTION}: {}", start.join(" "))
        }
    }

    /// Final length ÷ draft length in characters; `None` for an empty draft.
    fn length_ratio(&self) -> Option<f64> {
        let draft_len = self.draft.chars().count();
        (draft_len > 0).then(|| count_f64(self.final_text.chars().count()) / count_f64(draft_len))
    }
}

/// The text's sentences: cut at line breaks and sentence ends, stripped, list markers removed,
/// empty ones dropped.
fn sentences(text: &str) -> Vec<String> {
    pytext::splitlines(text)
        .into_iter()
        .flat_map(|line| {
            SENTENCE_END
                .split(line)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|sentence| {
            let without_marker = LIST_ITEM.replace(&sentence, "");
            pytext::strip(&without_marker)
                .trim_end_matches(['.', '!', '?'])
                .to_owned()
        })
        .filter(|sentence| !sentence.is_empty())
        .collect()
}

/// What makes two sentences the same: their lower-cased words.
fn sentence_key(sentence: &str) -> String {
    words(&sentence.to_lowercase()).join(" ")
}

/// The words of lower-cased `text`: runs of letters, digits, `_` and `'`.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\''))
        .map(|word| word.trim_matches('\''))
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether the word sequence `phrase` occurs in `words`.
fn has_phrase(words: &[String], phrase: &str) -> bool {
    let parts: Vec<&str> = phrase.split(' ').collect();
    words
        .windows(parts.len())
        .any(|window| window.iter().zip(&parts).all(|(word, part)| word == part))
}

/// The register of lower-cased text: casual markers count up, formal ones down.
fn register(text: &str) -> i64 {
    let text_words = words(text);
    let count = |markers: &[&str]| {
        let n = text_words
            .iter()
            .filter(|word| markers.contains(&word.as_str()))
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    };
    count(CASUAL_MARKERS) - count(FORMAL_MARKERS)
}

/// `sentence` as an instruction: its comment marker and lead-in ("you should", "please", …)
/// removed, the first letter capitalised.
fn imperative(sentence: &str) -> String {
    let mut text = pytext::strip(sentence);
    while let Some(rest) = COMMENT_MARKERS
        .iter()
        .find_map(|marker| text.strip_prefix(marker))
    {
        text = pytext::strip(rest);
    }
    while let Some(rest) = LEAD_INS
        .iter()
        .find_map(|lead_in| strip_prefix_ascii_case(text, lead_in))
    {
        text = rest;
    }
    capitalise(text)
}

/// `text` after `prefix` (ASCII, lower-case) when it starts with it in any ASCII case. Compared
/// on the original bytes, not on a lower-cased copy, whose lengths can differ (the Kelvin sign
/// lower-cases to a one-byte `k`).
fn strip_prefix_ascii_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Whether `instruction` reads as one: it starts with an action verb, or it is capitalised and
/// has at least three words.
fn actionable(instruction: &str) -> bool {
    let lower = instruction.to_lowercase();
    let instruction_words = words(&lower);
    let Some(first) = instruction_words.first() else {
        return false;
    };
    ACTION_VERBS.contains(&first.as_str())
        || (instruction.chars().next().is_some_and(char::is_uppercase)
            && instruction_words.len() >= 3)
}

/// The first few words of `sentence` after its leading stop words, or "" when it has none.
fn topic(sentence: &str) -> String {
    pytext::split_whitespace(sentence)
        .skip_while(|word| {
            let lower = word.to_lowercase();
            let bare = lower.trim_matches(|c: char| !c.is_alphanumeric());
            bare.is_empty() || is_stop_word(bare)
        })
        .take(TOPIC_WORDS)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first line of `text`, stripped.
fn first_line(text: &str) -> &str {
    pytext::splitlines(pytext::strip(text))
        .into_iter()
        .next()
        .map_or("", pytext::strip)
}

/// `text` with its first character upper-cased.
fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `text` with its first character lower-cased, unless the first word looks like a name or an
/// acronym (a second capital letter in it).
fn lower_first(text: &str) -> String {
    let first_word = text.split(' ').next().unwrap_or("");
    if first_word.chars().skip(1).any(char::is_uppercase) {
        return text.to_owned();
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The distinct words of `words`, in their first order.
fn first_unique<'w>(words: impl Iterator<Item = &'w &'w str>) -> Vec<&'w str> {
    let mut seen = Vec::new();
    for word in words {
        if !seen.contains(word) {
            seen.push(*word);
        }
    }
    seen
}

/// A character count as f64; counts of text stay far below 2^53.
#[expect(
    clippy::cast_precision_loss,
    reason = "character counts of a correction (at most 100,000) are exact in f64"
)]
fn count_f64(n: usize) -> f64 {
    n as f64
}

#[cfg(test)]
mod tests;
