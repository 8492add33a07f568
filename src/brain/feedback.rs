//! Implicit feedback in a user's message (`POST /detect`): phrases such as "are you sure" or
//! "you forgot" that say the assistant got something wrong without the user correcting it. The
//! scan gives the [`Signal`]s in scan order, and [`FeedbackEvent`] the `IMPLICIT_FEEDBACK`
//! event the route records when there is at least one.
//!
//! Matching is Python 0.6.0's: on the lower-cased message, a marker counts where the characters
//! on both sides of it are absent or not letters in Python's `str.isalpha` sense (general
//! category L*, which is narrower than Rust's `char::is_alphabetic`). One deliberate difference:
//! 0.6.0 tried only a marker's first occurrence, so "unmake sure, but make sure" found nothing;
//! here every occurrence is tried and the marker counts once if any of them stands alone.
//!
//! Pure: no I/O, no event writing, no mode classification.

use serde::Serialize;
use unicode_general_category::{GeneralCategory, get_general_category};

/// What kind of implicit feedback a marker signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignalKind {
    /// The user pushes back on what was done ("that's wrong").
    Pushback,
    /// The user repeats an instruction ("make sure", "like i said").
    Reminder,
    /// Something was left out ("you forgot", "what about").
    Gap,
    /// The user doubts a claim ("is that right").
    Challenge,
}

impl SignalKind {
    /// The name used in responses, event data and `signal:<name>` tags.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::Pushback => "pushback",
            SignalKind::Reminder => "reminder",
            SignalKind::Gap => "gap",
            SignalKind::Challenge => "challenge",
        }
    }
}

/// One marker found in a message, serialised as the route's `{"type", "marker"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Signal {
    /// What the marker signals.
    #[serde(rename = "type")]
    pub kind: SignalKind,
    /// The marker as listed (lower case, ASCII apostrophes).
    pub marker: &'static str,
}

/// The `type` of the event recorded when feedback is found.
pub const EVENT_TYPE: &str = "IMPLICIT_FEEDBACK";

/// The `source` of the event recorded when feedback is found.
pub const EVENT_SOURCE: &str = "brain.detect_implicit_feedback";

/// The `data` and `tags` of the `IMPLICIT_FEEDBACK` event. `data` serialises with 0.6.0's keys
/// in its order: `signals`, `markers`, `snippet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackEvent {
    /// The event's `data`.
    pub data: FeedbackEventData,
    /// `signal:<type>` per signal, in scan order, duplicates kept.
    pub tags: Vec<String>,
}

/// The `data` object of an `IMPLICIT_FEEDBACK` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedbackEventData {
    /// Each signal's type, in scan order.
    pub signals: Vec<&'static str>,
    /// Each signal's marker, aligned with `signals`.
    pub markers: Vec<&'static str>,
    /// The message as sent (not lower-cased), cut to its first [`SNIPPET_CHARS`] code points.
    pub snippet: String,
}

/// How many code points of the message the event keeps.
pub const SNIPPET_CHARS: usize = 200;

/// The markers per kind, in scan order. Apostrophes are ASCII, so curly quotes never match.
const MARKERS: [(SignalKind, &[&str]); 4] = [
    (
        SignalKind::Pushback,
        &[
            "are you sure",
            "that's wrong",
            "that's not right",
            "not accurate",
            "no, not that",
            "no don't",
            "stop doing",
            "why did you",
            "why didn't you",
        ],
    ),
    (
        SignalKind::Reminder,
        &[
            "make sure",
            "don't forget",
            "remember to",
            "you should always",
            "i already told",
            "i just said",
            "as i mentioned",
            "like i said",
        ],
    ),
    (
        SignalKind::Gap,
        &[
            "what about",
            "you forgot",
            "you missed",
            "you skipped",
            "you ignored",
            "you dropped",
            "did you check",
            "did you verify",
        ],
    ),
    (
        SignalKind::Challenge,
        &[
            "are we sure",
            "is that right",
            "is that correct",
            "won't that",
            "won't people",
            "i feel like",
        ],
    ),
];

/// The feedback markers in `message`, in scan order (kind by kind, marker by marker); each
/// marker at most once.
pub fn scan(message: &str) -> Vec<Signal> {
    let text = message.to_lowercase();
    MARKERS
        .iter()
        .flat_map(|&(kind, markers)| markers.iter().map(move |&marker| (kind, marker)))
        .filter(|&(_, marker)| stands_alone_somewhere(&text, marker))
        .map(|(kind, marker)| Signal { kind, marker })
        .collect()
}

impl FeedbackEvent {
    /// The event for `signals` found in `message`, or `None` when there are none (nothing is
    /// recorded then).
    pub fn for_signals(message: &str, signals: &[Signal]) -> Option<FeedbackEvent> {
        if signals.is_empty() {
            return None;
        }
        Some(FeedbackEvent {
            data: FeedbackEventData {
                signals: signals.iter().map(|s| s.kind.as_str()).collect(),
                markers: signals.iter().map(|s| s.marker).collect(),
                snippet: message.chars().take(SNIPPET_CHARS).collect(),
            },
            tags: signals
                .iter()
                .map(|s| format!("signal:{}", s.kind.as_str()))
                .collect(),
        })
    }
}

/// Whether some occurrence of `marker` in `text` has no letter right before or right after it.
/// Occurrences may overlap, so the search restarts one character after each start.
fn stands_alone_somewhere(text: &str, marker: &str) -> bool {
    let mut from = 0;
    while let Some(found) = text[from..].find(marker) {
        let at = from + found;
        let end = at + marker.len();
        let before = text[..at].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(is_python_alpha) && !after.is_some_and(is_python_alpha) {
            return true;
        }
        // Markers are non-empty, so a next character exists at `at`.
        from = at + text[at..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

/// Python's `str.isalpha` for one character: a letter of general category L*. Letter numbers
/// (`Ⅻ`) and combining marks, which Rust counts as alphabetic, are not.
fn is_python_alpha(c: char) -> bool {
    matches!(
        get_general_category(c),
        GeneralCategory::UppercaseLetter
            | GeneralCategory::LowercaseLetter
            | GeneralCategory::TitlecaseLetter
            | GeneralCategory::ModifierLetter
            | GeneralCategory::OtherLetter
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(message: &str, expected: &[(SignalKind, &str)]) {
        let found: Vec<(SignalKind, &str)> =
            scan(message).iter().map(|s| (s.kind, s.marker)).collect();
        assert_eq!(found, expected, "{message:?}");
    }

    #[test]
    fn markers_are_found_in_scan_order_whatever_their_place_in_the_message() {
        use SignalKind::*;
        check(
            "You forgot X. Are you sure? That's wrong; make sure to test",
            &[
                (Pushback, "are you sure"),
                (Pushback, "that's wrong"),
                (Reminder, "make sure"),
                (Gap, "you forgot"),
            ],
        );
        check(
            "I feel like IS THAT RIGHT",
            &[(Challenge, "is that right"), (Challenge, "i feel like")],
        );
        check(
            "no, not that. no don't",
            &[(Pushback, "no, not that"), (Pushback, "no don't")],
        );
        check("", &[]);
        check("thanks, looks good", &[]);
        // Curly apostrophes are not the listed markers.
        check("that\u{2019}s wrong", &[]);
    }

    #[test]
    fn a_marker_inside_a_word_does_not_count() {
        use SignalKind::*;
        check("not inaccurate", &[]);
        check("remake sure", &[]);
        check("what aboutness", &[]);
        check("éwhat about", &[]);
        // Digits, punctuation and line ends are boundaries.
        check("1what about?", &[(Gap, "what about")]);
        check("(you missed)\n", &[(Gap, "you missed")]);
    }

    #[test]
    fn every_occurrence_is_tried_not_only_the_first() {
        // 0.6.0 saw only "unmake sure", failed the boundary and stopped.
        check(
            "unmake sure it runs, and make sure it passes",
            &[(SignalKind::Reminder, "make sure")],
        );
        check(
            "what aboutness... what about tests?",
            &[(SignalKind::Gap, "what about")],
        );
        // Found twice, counted once.
        check(
            "make sure. make sure.",
            &[(SignalKind::Reminder, "make sure")],
        );
    }

    #[test]
    fn the_boundary_uses_python_letters_not_rust_alphabetic() {
        // U+216B (Roman numeral twelve, Nl) and U+0345 (combining mark, Mn) are alphabetic in
        // Rust but `isalpha()` is false for them in Python.
        check("\u{216b}make sure", &[(SignalKind::Reminder, "make sure")]);
        check("make sure\u{345}", &[(SignalKind::Reminder, "make sure")]);
        // A modifier letter (Lm) and a CJK ideograph (Lo) are letters in Python.
        check("\u{2b0}make sure", &[]);
        check("make sure\u{4e00}", &[]);
    }

    #[test]
    fn the_event_lists_signals_markers_and_a_snippet_of_the_original_message() {
        let message = format!("ARE YOU SURE? You forgot {}", "é".repeat(300));
        let signals = scan(&message);
        let event = FeedbackEvent::for_signals(&message, &signals).expect("two signals");
        assert_eq!(event.data.signals, ["pushback", "gap"]);
        assert_eq!(event.data.markers, ["are you sure", "you forgot"]);
        assert_eq!(event.data.snippet.chars().count(), 200);
        assert!(event.data.snippet.starts_with("ARE YOU SURE? You forgot é"));
        assert_eq!(event.tags, ["signal:pushback", "signal:gap"]);
        let json = serde_json::to_string(&event.data).expect("plain data");
        assert!(
            json.starts_with(r#"{"signals":["pushback","gap"],"markers":["are you sure","you forgot"],"snippet":"ARE"#),
            "{json}"
        );
        assert_eq!(
            serde_json::to_string(&signals[0]).expect("plain data"),
            r#"{"type":"pushback","marker":"are you sure"}"#
        );
    }

    #[test]
    fn duplicate_kinds_keep_one_tag_each() {
        let message = "are you sure? that's wrong";
        let event = FeedbackEvent::for_signals(message, &scan(message)).expect("two signals");
        assert_eq!(event.tags, ["signal:pushback", "signal:pushback"]);
        assert_eq!(event.data.snippet, message);
    }

    #[test]
    fn no_signals_means_no_event() {
        assert_eq!(FeedbackEvent::for_signals("fine", &[]), None);
    }
}
