//! The mode classifier of `/apply-rules` and `/detect` (brain spec §5.3): which kind of work a
//! prompt is about (code, email, config, documentation, or plain chat), and how sure that is.
//!
//! Each mode has a list of patterns; a mode scores how many of its patterns match anywhere in
//! the text; the highest score wins, ties going to the mode listed first; the confidence is the
//! score over 30 % of the mode's pattern count, capped at 1 and rounded to 4 places. The patterns
//! are written here from the measured behaviour of 0.6.0 (whole words, a few case-sensitive).
//!
//! Pure, and the patterns are compiled once per process.

use std::sync::LazyLock;

use regex::RegexSet;

use super::pytext;

/// The kind of work a prompt is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Programming.
    Code,
    /// Writing email.
    Email,
    /// Configuration and deployment.
    Config,
    /// Documentation.
    Documentation,
    /// None of the others.
    Chat,
}

impl Mode {
    /// The name the routes answer (`mode_detected`, `mode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Code => "code",
            Mode::Email => "email",
            Mode::Config => "config",
            Mode::Documentation => "documentation",
            Mode::Chat => "chat",
        }
    }
}

/// A classification: the mode and a confidence in [0, 1], rounded to 4 places.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModeGuess {
    /// The winning mode, [`Mode::Chat`] when no pattern matched.
    pub mode: Mode,
    /// 0.0 for chat.
    pub confidence: f64,
}

/// Python's `\s` also matches the separators `\x1c`–`\x1f`, which Rust's `\s` does not.
const SPACE: &str = r"[\s\x1c-\x1f]";

/// The patterns per mode, in tie-break order. `(?i)` marks the case-insensitive ones; the others
/// match only as written (`README`, `TypeError`, `bug`).
fn mode_patterns() -> [(Mode, Vec<String>); 4] {
    let words = |words: &[&str]| -> Vec<String> {
        words
            .iter()
            .map(|word| format!(r"(?i)\b{word}\b"))
            .collect()
    };
    let mut code = words(&[
        "implement",
        "fix",
        "refactor",
        "debug",
        "test",
        "function",
        "class",
        "method",
    ]);
    code.extend([
        r"(?i)\.(py|js|ts|tsx|jsx|rs|go|java|rb)\b".to_owned(),
        r"(?i)\b(src|lib)/".to_owned(),
        r"\b(TypeError|ValueError|KeyError|bug)\b".to_owned(),
        r"(?i)\b(API|endpoint|REST)\b".to_owned(),
    ]);
    let email = vec![
        r"(?i)\bemail\b".to_owned(),
        format!(r"(?i)\bfollow(?:{SPACE}|-)?up\b"),
        r"(?i)\bdraft\b.*\bemail\b".to_owned(),
        r"(?i)\bprospect\b".to_owned(),
        format!(r"(?i)\bsubject{SPACE}+line\b"),
        r"(?i)\breply\b".to_owned(),
        r"(?i)\boutreach\b".to_owned(),
    ];
    let mut config = words(&["config", "settings", "environment"]);
    config.extend([
        r"(?i)\.env\b".to_owned(),
        r"(?i)\.(yaml|yml|toml)\b".to_owned(),
        r"(?i)\bdocker\b".to_owned(),
        r"(?i)\bkubernetes\b".to_owned(),
        r"(?i)\bCI/?CD\b".to_owned(),
    ]);
    let mut documentation = vec![r"\bREADME\b".to_owned()];
    documentation.extend(words(&[
        "docs",
        "explain",
        "document",
        "architecture",
        "guide",
        "tutorial",
    ]));
    [
        (Mode::Code, code),
        (Mode::Email, email),
        (Mode::Config, config),
        (Mode::Documentation, documentation),
    ]
}

/// One set per mode: a set answers which of its patterns match in one pass over the text.
static MODES: LazyLock<Vec<(Mode, RegexSet)>> = LazyLock::new(|| {
    mode_patterns()
        .into_iter()
        .map(|(mode, patterns)| {
            let set = RegexSet::new(&patterns).expect("the mode patterns are valid regexes");
            (mode, set)
        })
        .collect()
});

/// The mode of `text` (a prompt or a user message).
pub fn classify(text: &str) -> ModeGuess {
    let chat = ModeGuess {
        mode: Mode::Chat,
        confidence: 0.0,
    };
    if pytext::strip(text).is_empty() {
        return chat;
    }
    let mut best: Option<(Mode, usize, usize)> = None;
    for (mode, set) in MODES.iter() {
        let score = set.matches(text).iter().count();
        // Strictly greater: a tie keeps the mode listed first.
        if score > 0 && best.is_none_or(|(_, best_score, _)| score > best_score) {
            best = Some((*mode, score, set.len()));
        }
    }
    let Some((mode, score, n_patterns)) = best else {
        return chat;
    };
    // Python computes count / (n * 0.3) in floats; the same operations give the same value
    // (both counts are below 20, exact in an f64).
    let confidence = (score as f64 / (n_patterns as f64 * 0.3)).min(1.0);
    ModeGuess {
        mode,
        confidence: pytext::round(confidence, 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_confidences_are_those_of_0_6_0() {
        // Every row was answered by 0.6.0's /apply-rules for the same prompt.
        let cases = [
            ("fix the bug", Mode::Code, 0.5556),
            (
                "Write a Python function that loads the YAML config",
                Mode::Code,
                0.2778,
            ),
            ("draft a follow-up email to the prospect", Mode::Email, 1.0),
            ("check src/main.rs and the .py file", Mode::Code, 0.5556),
            ("explain the docs", Mode::Documentation, 0.9524),
            ("ci/cd pipeline", Mode::Config, 0.4167),
            ("use docker", Mode::Config, 0.4167),
            ("config docker", Mode::Config, 0.8333),
            ("config settings environment", Mode::Config, 1.0),
            ("kubernetes.yaml", Mode::Config, 0.8333),
            ("email reply", Mode::Email, 0.9524),
            ("draft an email", Mode::Email, 0.9524),
            ("drafting email", Mode::Email, 0.4762),
            ("Explain the README", Mode::Documentation, 0.9524),
            (
                "fix implement refactor debug test function class method a.py src/ bug API",
                Mode::Code,
                1.0,
            ),
            // Ties go to the mode listed first.
            ("email config", Mode::Email, 0.4762),
            ("guide email", Mode::Email, 0.4762),
            ("email\u{1f}fix", Mode::Code, 0.2778),
            // One pattern counts once however often it matches, and alternatives share one.
            ("fix fix fix", Mode::Code, 0.2778),
            ("a.py b.js", Mode::Code, 0.2778),
            ("TypeError bug", Mode::Code, 0.2778),
            ("API endpoint", Mode::Code, 0.2778),
            ("a.yaml a.toml", Mode::Config, 0.4167),
            ("x.env a.yaml", Mode::Config, 0.8333),
            // Separators and punctuation.
            ("follow\tup", Mode::Email, 0.4762),
            ("follow\u{1f}up", Mode::Email, 0.4762),
            ("subject   line", Mode::Email, 0.4762),
            ("the .env.local", Mode::Config, 0.4167),
            ("docker-compose", Mode::Config, 0.4167),
            ("test-case", Mode::Code, 0.2778),
            ("x.PY", Mode::Code, 0.2778),
            ("Api", Mode::Code, 0.2778),
            ("CICD", Mode::Config, 0.4167),
        ];
        for (text, mode, confidence) in cases {
            assert_eq!(classify(text), ModeGuess { mode, confidence }, "{text:?}");
        }
    }

    #[test]
    fn words_only_count_whole_and_some_only_as_written() {
        // Each of these was chat for 0.6.0.
        let chat = [
            "",
            "   ",
            "implementation of configuration",
            "fixes",
            "tests",
            "mylib/x",
            "typeerror",
            "Bug",
            "BUG",
            "restful",
            "emails",
            "follow_up",
            "follow  up",
            "draft emails",
            "readme",
            "documentation",
            "x.pyfoo",
            "a.yamlx",
            ".envrc",
            "CI / CD",
            "CI/CDs",
            "api_key",
            "fix2",
            "\u{e9}fix",
            "r\u{e9}ply",
        ];
        for text in chat {
            let guess = classify(text);
            assert_eq!(
                guess,
                ModeGuess {
                    mode: Mode::Chat,
                    confidence: 0.0
                },
                "{text:?}"
            );
        }
        assert_eq!(
            classify("draft\nemail").confidence,
            0.4762,
            "draft…email is one line"
        );
    }

    #[test]
    fn pattern_counts_give_the_spec_divisors() {
        let counts: Vec<(Mode, usize)> =
            MODES.iter().map(|(mode, set)| (*mode, set.len())).collect();
        assert_eq!(
            counts,
            [
                (Mode::Code, 12),
                (Mode::Email, 7),
                (Mode::Config, 8),
                (Mode::Documentation, 7)
            ]
        );
    }
}
