//! Text helpers of the archetype rules: sentences, words and phrases, register, and the
//! shaping of a sentence into an instruction. They know nothing of archetypes.

use super::vocabulary::{
    ACTION_VERBS, CASUAL_MARKERS, COMMENT_MARKERS, FORMAL_MARKERS, LEAD_INS, LIST_ITEM,
    SENTENCE_END, TOPIC_WORDS, is_stop_word,
};
use crate::brain::pytext;

/// The text's sentences: cut at line breaks and sentence ends, stripped, list markers removed,
/// empty ones dropped.
pub(super) fn sentences(text: &str) -> Vec<String> {
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
pub(super) fn sentence_key(sentence: &str) -> String {
    words(&sentence.to_lowercase()).join(" ")
}

/// The words of lower-cased `text`: runs of letters, digits, `_` and `'`.
pub(super) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '\''))
        .map(|word| word.trim_matches('\''))
        .filter(|word| !word.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether the word sequence `phrase` occurs in `words`.
pub(super) fn has_phrase(words: &[String], phrase: &str) -> bool {
    let parts: Vec<&str> = phrase.split(' ').collect();
    words
        .windows(parts.len())
        .any(|window| window.iter().zip(&parts).all(|(word, part)| word == part))
}

/// The register of lower-cased text: casual markers count up, formal ones down.
pub(super) fn register(text: &str) -> i64 {
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
pub(super) fn imperative(sentence: &str) -> String {
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
pub(super) fn strip_prefix_ascii_case<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Whether `instruction` reads as one: it starts with an action verb, or it is capitalised and
/// has at least three words.
pub(super) fn actionable(instruction: &str) -> bool {
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
pub(super) fn topic(sentence: &str) -> String {
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

/// The topic of the first of `sentences` that has one.
pub(super) fn first_topic(sentences: &[String]) -> Option<String> {
    sentences
        .iter()
        .map(|sentence| topic(sentence))
        .find(|topic| !topic.is_empty())
}

/// The first line of `text`, stripped.
pub(super) fn first_line(text: &str) -> &str {
    pytext::splitlines(pytext::strip(text))
        .into_iter()
        .next()
        .map_or("", pytext::strip)
}

/// `text` with its first character upper-cased.
pub(super) fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `text` with its first character lower-cased, unless the first word looks like a name or an
/// acronym (a second capital letter in it).
pub(super) fn lower_first(text: &str) -> String {
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
pub(super) fn first_unique<'w>(words: impl Iterator<Item = &'w &'w str>) -> Vec<&'w str> {
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
pub(super) fn count_f64(n: usize) -> f64 {
    n as f64
}
