//! Rule enforcement on a piece of content (`POST /enforce-rules`): 0.6.0's cheap heuristic,
//! kept as it is because the plugin's warnings depend on it (spec §13 #18). A rule whose
//! lower-cased description contains `never` (anywhere, so "whenever" counts too) is violated
//! when one of the words after it appears in the lower-cased content:
//!
//! - take the text after the first `never`, strip it, keep its first [`WINDOW_CHARS`] code points;
//! - its words (Python `str.split()`) longer than [`MIN_KEYWORD_CHARS`] code points are the
//!   keywords, punctuation kept (`emails;` must appear with its semicolon);
//! - a keyword matches as a substring of the content.
//!
//! The rules come from the caller as [`RuleText`]s, with their ids already made: this module
//! knows nothing of lessons.md or of how a rule id is formed. Pure: no I/O.

use serde::Serialize;

use super::pytext;

/// How many code points after `never` the keywords are taken from.
pub const WINDOW_CHARS: usize = 50;

/// A keyword is a word longer than this many code points.
pub const MIN_KEYWORD_CHARS: usize = 3;

/// One rule to enforce, as the caller gives it.
///
/// The caller passes the brain's RULE lessons in lessons.md order: those whose *effective* state
/// is RULE (the same stale-rule demotion `/apply-rules` applies, spec §13 #19), each with the
/// rule id in the `/apply-rules` form (`CATEGORY:` + 8 hex digits of SHA-256 of
/// `"CATEGORY:description"`, spec §13 #8), so a violation names the same rule the plugin saw
/// injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleText<'a> {
    /// The rule's id, reported as is.
    pub rule_id: &'a str,
    /// The lesson's description (without category or root cause).
    pub description: &'a str,
}

/// A rule the content breaks, serialised as the route's `{rule_id, description, severity}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The rule's id as the caller gave it.
    pub rule_id: String,
    /// The rule's description, as written.
    pub description: String,
    /// Always `"warn"`: the heuristic is too loose to block anything.
    pub severity: &'static str,
}

/// The route's answer, serialised with 0.6.0's keys in its order: `{"violations": [...],
/// "pass": bool}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enforcement {
    /// The violated rules, in the order they were given.
    pub violations: Vec<Violation>,
    /// Whether nothing was violated.
    pub pass: bool,
}

/// [`violations`] of `content` against `rules`, with the `pass` verdict.
pub fn enforce(content: &str, rules: &[RuleText<'_>]) -> Enforcement {
    let violations = violations(content, rules);
    Enforcement {
        pass: violations.is_empty(),
        violations,
    }
}

/// The rules of `rules` that `content` violates, in the order of `rules`. Empty content
/// violates nothing.
pub fn violations(content: &str, rules: &[RuleText<'_>]) -> Vec<Violation> {
    if content.is_empty() {
        return Vec::new();
    }
    let content = content.to_lowercase();
    rules
        .iter()
        .filter(|rule| is_violated(&content, rule.description))
        .map(|rule| Violation {
            rule_id: rule.rule_id.to_owned(),
            description: rule.description.to_owned(),
            severity: "warn",
        })
        .collect()
}

/// Whether `lowered_content` contains a keyword of the rule `description`.
fn is_violated(lowered_content: &str, description: &str) -> bool {
    keywords(description)
        .iter()
        .any(|keyword| lowered_content.contains(keyword.as_str()))
}

/// The keywords of a rule `description`, lower-cased: none without a `never`.
fn keywords(description: &str) -> Vec<String> {
    let description = description.to_lowercase();
    let Some((_, after_never)) = description.split_once("never") else {
        return Vec::new();
    };
    let window: String = pytext::strip(after_never)
        .chars()
        .take(WINDOW_CHARS)
        .collect();
    pytext::split_whitespace(&window)
        .filter(|word| word.chars().count() > MIN_KEYWORD_CHARS)
        .map(str::to_owned)
        .collect()
}

/// The same decision as [`enforce`], prepared once for a set of rules: every keyword of every
/// rule in one automaton, so that a request reads its content once however many rules the brain
/// has (a brain of 10,000 lessons has over a thousand RULEs; checking each keyword in turn read
/// the content thousands of times per request).
#[derive(Debug, Clone, Default)]
pub struct Enforcer {
    /// `(rule_id, description)`, in the caller's order.
    rules: Vec<(String, String)>,
    /// Every distinct keyword; `None` when no rule has one (or the automaton could not be
    /// built, and [`Enforcer::enforce`] checks rule by rule instead).
    keywords: Option<aho_corasick::AhoCorasick>,
    /// For each keyword of the automaton, the rules (indexes into `rules`) that have it.
    rules_of_keyword: Vec<Vec<usize>>,
}

impl Enforcer {
    /// Prepares `rules` (`(rule_id, description)`, in the order violations are reported).
    pub fn new(rules: Vec<(String, String)>) -> Enforcer {
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut rules_of_keyword: Vec<Vec<usize>> = Vec::new();
        for (rule, (_, description)) in rules.iter().enumerate() {
            for keyword in keywords(description) {
                let next = rules_of_keyword.len();
                let at = *index.entry(keyword).or_insert(next);
                if at == next {
                    rules_of_keyword.push(Vec::new());
                }
                if rules_of_keyword[at].last() != Some(&rule) {
                    rules_of_keyword[at].push(rule);
                }
            }
        }
        let mut patterns = vec![String::new(); rules_of_keyword.len()];
        for (keyword, at) in index {
            patterns[at] = keyword;
        }
        let keywords = if patterns.is_empty() {
            None
        } else {
            aho_corasick::AhoCorasick::new(&patterns)
                .inspect_err(|err| {
                    tracing::warn!(error = %err, "enforcement falls back to a rule-by-rule check");
                })
                .ok()
        };
        Enforcer {
            rules,
            keywords,
            rules_of_keyword,
        }
    }

    /// The rules `content` violates, with the `pass` verdict: what [`enforce`] answers.
    pub fn enforce(&self, content: &str) -> Enforcement {
        let Some(automaton) = self.keywords.as_ref().filter(|_| !content.is_empty()) else {
            let rules: Vec<RuleText<'_>> = self
                .rules
                .iter()
                .map(|(rule_id, description)| RuleText {
                    rule_id,
                    description,
                })
                .collect();
            return enforce(content, &rules);
        };
        let lowered = content.to_lowercase();
        let mut violated = vec![false; self.rules.len()];
        for found in automaton.find_overlapping_iter(&lowered) {
            for &rule in &self.rules_of_keyword[found.pattern().as_usize()] {
                violated[rule] = true;
            }
        }
        let violations: Vec<Violation> = self
            .rules
            .iter()
            .zip(violated)
            .filter(|(_, violated)| *violated)
            .map(|((rule_id, description), _)| Violation {
                rule_id: rule_id.clone(),
                description: description.clone(),
                severity: "warn",
            })
            .collect();
        Enforcement {
            pass: violations.is_empty(),
            violations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prepared automaton decides as the rule-by-rule check does, on rules that share
    /// keywords, overlap, carry punctuation or have none.
    #[test]
    fn the_prepared_enforcer_decides_as_the_rule_by_rule_check() {
        let descriptions = [
            "Never use em dashes in client emails; keep it plain",
            "Never wrap short answers in markdown headers",
            "Whenever possible, prefer markdown",
            "Never mention internal ticket numbers",
            "Always add type hints",
            "never",
            "Never paste tokens or secrets into logs",
            "Never say secret",
            "NEVER Ünïcode wörds here",
        ];
        let rules: Vec<(String, String)> = descriptions
            .iter()
            .enumerate()
            .map(|(n, d)| (format!("R:{n}"), (*d).to_owned()))
            .collect();
        let enforcer = Enforcer::new(rules.clone());
        let texts: Vec<RuleText<'_>> = rules
            .iter()
            .map(|(rule_id, description)| RuleText {
                rule_id,
                description,
            })
            .collect();
        let contents = [
            "",
            "plain text",
            "Use MARKDOWN headers and em dashes; emails; ok",
            "the ticket numbers and tokens in the secrets logs",
            "ÜNÏCODE WÖRDS",
            "keep it plain; client emails; markdownmarkdown",
        ];
        for content in contents {
            assert_eq!(
                enforcer.enforce(content),
                enforce(content, &texts),
                "{content:?}"
            );
        }
        assert_eq!(
            Enforcer::new(Vec::new()).enforce("anything"),
            enforce("anything", &[])
        );
    }

    fn violated(content: &str, description: &str) -> bool {
        let rules = [RuleText {
            rule_id: "R:1",
            description,
        }];
        !violations(content, &rules).is_empty()
    }

    #[test]
    fn the_never_heuristic_matches_as_0_6_0_does() {
        let cases = [
            // (content, description, violated)
            ("I use an em-dash", "Never use em dashes", false), // "dashes" is the only keyword...
            ("Some DASHES", "Never use em dashes", true),       // ...matched case-insensitively
            ("all emails", "Never cc emails; ok", false),       // punctuation kept: "emails;"
            ("all emails; ok", "Never cc emails; ok", true),
            ("a use b", "Never use it", false), // words of 3 code points or fewer are skipped
            ("a été b", "never été", false),    // 5 bytes but 3 code points: not a keyword
            ("a thém b", "never thém", true),   // 4 code points
            ("markdown", "Whenever possible, prefer markdown", true), // "never" inside a word
            ("nevertheless", "Always be brief", false), // no "never": never violated
            ("", "Never use markdown", false),  // empty content
            ("fancy", "never", false),          // nothing after never
        ];
        for (content, description, expected) in cases {
            assert_eq!(
                violated(content, description),
                expected,
                "{content:?} against {description:?}"
            );
        }
    }

    #[test]
    fn keywords_come_from_the_first_50_code_points_after_the_first_never() {
        // The word cut at the window's edge is a keyword in its cut form.
        let description = format!("Never {}abcdefgh", "x ".repeat(23)); // 46 chars, then "abcd"
        assert!(violated("zzabcdzz", &description));
        assert!(!violated("efgh", &description));
        // Only the text after the first `never` counts; a second `never` is just text.
        assert!(violated("shout", "never whisper, never shout"));
        assert!(!violated("before", "before never after"));
        assert!(violated("after", "before never after"));
        // Leading whitespace after `never` is stripped before the window is taken.
        let padded = format!("never{}keyword", " ".repeat(60));
        assert!(violated("keyword", &padded));
    }

    #[test]
    fn violations_come_in_rule_order_with_the_callers_ids() {
        let rules = [
            RuleText {
                rule_id: "TONE:ebfe3a9d",
                description: "Never use em dashes in client emails; use commas",
            },
            RuleText {
                rule_id: "CODE:00000000",
                description: "Always add tests",
            },
            RuleText {
                rule_id: "FORMAT:b8c910b5",
                description: "Never wrap short answers in markdown headers",
            },
        ];
        let found = violations("We use em dashes and markdown headers", &rules);
        assert_eq!(
            found,
            [
                Violation {
                    rule_id: "TONE:ebfe3a9d".into(),
                    description: "Never use em dashes in client emails; use commas".into(),
                    severity: "warn",
                },
                Violation {
                    rule_id: "FORMAT:b8c910b5".into(),
                    description: "Never wrap short answers in markdown headers".into(),
                    severity: "warn",
                },
            ]
        );
        assert_eq!(
            serde_json::to_string(&found[1]).expect("plain data"),
            r#"{"rule_id":"FORMAT:b8c910b5","description":"Never wrap short answers in markdown headers","severity":"warn"}"#
        );
        assert_eq!(
            serde_json::to_string(&enforce("no headers here", &rules[2..])).expect("plain data"),
            r#"{"violations":[{"rule_id":"FORMAT:b8c910b5","description":"Never wrap short answers in markdown headers","severity":"warn"}],"pass":false}"#
        );
        assert_eq!(
            serde_json::to_string(&enforce("", &rules)).expect("plain data"),
            r#"{"violations":[],"pass":true}"#
        );
        assert!(violations("", &rules).is_empty());
        assert!(violations("plain text", &rules).is_empty());
    }
}
