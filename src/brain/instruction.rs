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
//!
//! The rules are here; their word lists and thresholds are in `vocabulary`, the text helpers
//! they share (sentences, words, the shaping of an instruction) in `text`.

mod text;
mod vocabulary;

pub(crate) use vocabulary::is_stop_word;

use std::collections::BTreeSet;

use super::pytext;
use text::{
    actionable, capitalise, count_f64, first_line, first_topic, first_unique, has_phrase,
    imperative, lower_first, register, sentence_key, sentences, strip_prefix_ascii_case, words,
};
use vocabulary::{
    ACTION_VERBS, CONCISE_RATIO, CONSTRAINTS, DETAIL_RATIO, EXPLICIT_PREFIXES, FACTS,
    FALLBACK_INSTRUCTION, HEDGES, LIST_ITEM, MAX_NAMED_HEDGES, MAX_SWAPPED_WORDS,
    MIN_REGISTER_SHIFT, TOPIC_WORDS,
};

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
        let topic = first_topic(&self.added)?;
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
        let topic = first_topic(&self.removed)?;
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

#[cfg(test)]
mod tests;
