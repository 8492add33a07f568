//! Redaction of secrets and personal data from the texts of a correction, before the brain stores
//! them or the outbox queues them: each secret becomes `[REDACTED_<KIND>]` and the caller learns
//! which kinds were found.
//!
//! The kinds the Python SDK 0.6.0 redacts keep its labels (`OPENAI_KEY`, `GITHUB_TOKEN`,
//! `SLACK_TOKEN`, `AWS_KEY`, `GOOGLE_KEY`, `GITLAB_TOKEN`, `CC`, `SSN`, `PHONE`, `EMAIL`), so a
//! brain's events read the same whichever program wrote them. Beyond those, private key blocks,
//! passwords in connection strings, JWTs, bearer tokens and secrets assigned in config lines and
//! code (`PASSWORD=…`, `"api_key": "…"`) are redacted too: the SDK let them through.
//!
//! The `regex` crate has no look-around. Where a secret is recognised by what surrounds it (the
//! key of `password = "…"`, the `user:` of a URL), the pattern matches the context too and only
//! its capture group named `secret` is replaced; where a match must not touch a neighbouring digit
//! or letter (phone numbers), each candidate is checked against the characters beside it and,
//! when refused, the search resumes one character further on.
//!
//! Pure functions, no I/O. What is redacted where (the brain's files, the outbox payload) is the
//! caller's decision.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// A kind of secret or personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A PEM or PGP private key block (`-----BEGIN … PRIVATE KEY-----`).
    PrivateKey,
    /// The password in a URL's user information (`postgres://user:…@host`).
    ConnectionPassword,
    /// A JSON Web Token (three base64url parts, the first two JSON objects).
    Jwt,
    /// The token after `Bearer` (an `Authorization` header).
    BearerToken,
    /// An OpenAI-style `sk-…` key.
    OpenAiKey,
    /// A GitHub token (`ghp_…`, `gho_…`, `github_pat_…`).
    GithubToken,
    /// A Slack token (`xoxb-…`).
    SlackToken,
    /// An AWS access key id (`AKIA…`, `ASIA…`).
    AwsKey,
    /// A Google API key (`AIza…`).
    GoogleKey,
    /// A GitLab personal access token (`glpat-…`).
    GitlabToken,
    /// The value assigned to a key named like a secret (`password`, `token`, `api_key`, …).
    Secret,
    /// A card number written as four groups of four digits.
    CardNumber,
    /// A US social security number (`123-45-6789`).
    Ssn,
    /// A North American phone number.
    Phone,
    /// An e-mail address.
    Email,
}

/// A text with its secrets replaced, and the kinds that were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redacted {
    /// The text, each secret replaced by `[REDACTED_<label>]`.
    pub text: String,
    /// The kinds replaced at least once; empty when the text is unchanged.
    pub found: BTreeSet<Kind>,
}

impl Kind {
    /// The label in the placeholder `[REDACTED_<label>]`.
    pub fn label(self) -> &'static str {
        match self {
            Kind::PrivateKey => "PRIVATE_KEY",
            Kind::ConnectionPassword => "CONNECTION_PASSWORD",
            Kind::Jwt => "JWT",
            Kind::BearerToken => "BEARER_TOKEN",
            Kind::OpenAiKey => "OPENAI_KEY",
            Kind::GithubToken => "GITHUB_TOKEN",
            Kind::SlackToken => "SLACK_TOKEN",
            Kind::AwsKey => "AWS_KEY",
            Kind::GoogleKey => "GOOGLE_KEY",
            Kind::GitlabToken => "GITLAB_TOKEN",
            Kind::Secret => "SECRET",
            Kind::CardNumber => "CC",
            Kind::Ssn => "SSN",
            Kind::Phone => "PHONE",
            Kind::Email => "EMAIL",
        }
    }

    /// What replaces a secret of this kind.
    pub fn placeholder(self) -> String {
        format!("{PLACEHOLDER_PREFIX}{}]", self.label())
    }
}

/// `text` with every secret and piece of personal data replaced by its placeholder.
pub fn redact(text: &str) -> Redacted {
    let mut found = BTreeSet::new();
    let mut current = text.to_owned();
    for rule in RULES.iter() {
        if let Some(replaced) = rule.apply(&current) {
            current = replaced;
            found.insert(rule.kind);
        }
    }
    Redacted {
        text: current,
        found,
    }
}

/// How every placeholder starts: a value that already starts so is not redacted again.
const PLACEHOLDER_PREFIX: &str = "[REDACTED_";

/// Key names that hold secrets, as the end of a longer key (`db_password`, `AWS_SECRET_ACCESS_KEY`,
/// `githubToken`): the key must end with one of them, so `max_tokens` or `author` do not count.
const SECRET_KEY: &str = r"(?i:[a-z0-9_.-]*?(?:password|passwd|pwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials?|auth))";

/// Values of a `key: value` line that name a type or a placeholder, not a secret
/// (`password: str` in a Python class, `token: null` in YAML).
const NOT_SECRETS: [&str; 16] = [
    "str",
    "string",
    "bytes",
    "int",
    "bool",
    "none",
    "null",
    "nil",
    "true",
    "false",
    "any",
    "object",
    "text",
    "secretstr",
    "optional",
    "required",
];

/// One way a secret shows, and how it is replaced.
struct Rule {
    kind: Kind,
    /// Matches the secret; when it has a group named `secret`, only that group is replaced.
    pattern: Regex,
    /// Whether a match is a secret after all, given the text and the match.
    accept: fn(&str, &Captures<'_>) -> bool,
}

impl Rule {
    fn new(kind: Kind, pattern: &str, accept: fn(&str, &Captures<'_>) -> bool) -> Rule {
        let pattern = Regex::new(pattern).expect("the redaction patterns are valid regexes");
        Rule {
            kind,
            pattern,
            accept,
        }
    }

    /// `text` with this rule's secrets replaced, or `None` when it has none.
    fn apply(&self, text: &str) -> Option<String> {
        let mut out = String::new();
        let (mut copied, mut at, mut replaced) = (0, 0, false);
        while at <= text.len() {
            let Some(captures) = self.pattern.captures_at(text, at) else {
                break;
            };
            let whole = captures.get(0).map_or(at..at, |m| m.range());
            if !(self.accept)(text, &captures) {
                // Refused here: a match may still start one character further on.
                at = next_boundary(text, whole.start);
                continue;
            }
            let secret = captures.name("secret").map_or(whole.clone(), |m| m.range());
            out.push_str(&text[copied..secret.start]);
            out.push_str(&self.kind.placeholder());
            copied = secret.end;
            replaced = true;
            at = whole.end.max(next_boundary(text, whole.start));
        }
        if !replaced {
            return None;
        }
        out.push_str(&text[copied..]);
        Some(out)
    }
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let always: fn(&str, &Captures<'_>) -> bool = |_, _| true;
    vec![
        // First the secrets that span or contain what later rules look for: a key block holds
        // base64 that could look like a token, a URL's password sits before an `@`.
        Rule::new(
            Kind::PrivateKey,
            // An edit may hold the start of a block and not its end: redact to the end then.
            r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            always,
        ),
        Rule::new(
            Kind::ConnectionPassword,
            r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:(?P<secret>[^\s/]+)@",
            |_, captures| !is_placeholder(captures),
        ),
        Rule::new(
            Kind::Jwt,
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
            always,
        ),
        Rule::new(
            Kind::BearerToken,
            r"(?i:\bbearer)[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)",
            |_, captures| !is_placeholder(captures),
        ),
        Rule::new(Kind::OpenAiKey, r"\bsk-[A-Za-z0-9_-]{20,}", always),
        Rule::new(
            Kind::GithubToken,
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
            always,
        ),
        Rule::new(Kind::SlackToken, r"\bxox[abposr]-[A-Za-z0-9-]{10,}", always),
        Rule::new(Kind::AwsKey, r"\b(?:AKIA|ASIA)[A-Z0-9]{16}", always),
        Rule::new(Kind::GoogleKey, r"\bAIza[A-Za-z0-9_-]{35}", always),
        Rule::new(Kind::GitlabToken, r"\bglpat-[A-Za-z0-9_-]{20,}", always),
        // A quoted value anywhere: `"api_key": "…"`, `password = '…'`, `token := "…"`.
        Rule::new(
            Kind::Secret,
            &format!(r#"{SECRET_KEY}["']?[ \t]*(?::=|=>|[:=])[ \t]*"(?P<secret>[^"\n]+)""#),
            |_, captures| !is_placeholder(captures),
        ),
        Rule::new(
            Kind::Secret,
            &format!(r#"{SECRET_KEY}["']?[ \t]*(?::=|=>|[:=])[ \t]*'(?P<secret>[^'\n]+)'"#),
            |_, captures| !is_placeholder(captures),
        ),
        // An unquoted value that is a whole line's: `.env`, ini, properties, YAML.
        Rule::new(
            Kind::Secret,
            &format!(
                r#"(?m)^[ \t]*(?:export[ \t]+)?(?P<key>{SECRET_KEY})(?P<separator>[ \t]*[:=][ \t]*)(?P<secret>[^\s#"']+)[ \t]*(?:[ \t]#.*)?\r?$"#
            ),
            is_config_value,
        ),
        Rule::new(Kind::CardNumber, r"\b\d{4}(?:[ -]\d{4}){3}\b", always),
        Rule::new(Kind::Ssn, r"\b\d{3}-\d{2}-\d{4}\b", always),
        Rule::new(
            Kind::Phone,
            r"(?:\+?1[-. ]?)?(?:\(\d{3}\)[-. ]?|\d{3}[-. ]?)\d{3}[-. ]?\d{4}",
            stands_alone,
        ),
        Rule::new(
            Kind::Email,
            r"\b[\p{L}\p{N}._%+-]+@[\p{L}\p{N}-]+(?:\.[\p{L}\p{N}-]+)*\.\p{L}{2,}\b",
            // `git@github.com:owner/repo` is an SSH remote, not somebody's address.
            |_, captures| !captures[0].starts_with("git@"),
        ),
    ]
});

/// Whether the match's secret is already a placeholder (an earlier rule redacted it).
fn is_placeholder(captures: &Captures<'_>) -> bool {
    captures
        .name("secret")
        .is_some_and(|m| m.as_str().starts_with(PLACEHOLDER_PREFIX))
}

/// Whether an unquoted `key = value` or `key: value` line holds a literal secret, not code or a
/// reference: `password = read_password()`, `token: String,`, `PASSWORD=${DB_PASSWORD}` and
/// `password: str` are left alone.
fn is_config_value(_: &str, captures: &Captures<'_>) -> bool {
    let (Some(key), Some(separator), Some(value)) = (
        captures.name("key"),
        captures.name("separator"),
        captures.name("secret"),
    ) else {
        return false;
    };
    let value = value.as_str();
    if is_placeholder(captures)
        || value.starts_with(['$', '<', '*', '&', '{', '%'])
        || value.contains(['(', ')', '[', ']', ',', ';'])
        || NOT_SECRETS.contains(&value.to_ascii_lowercase().as_str())
    {
        return false;
    }
    // `password = value` with spaces around `=` is an assignment in most languages; config files
    // write it so with upper-case keys (`SECRET_KEY = …`) or without the spaces.
    let spaced_equals =
        separator.as_str().contains('=') && separator.as_str().trim() != separator.as_str();
    let upper_key = !key.as_str().chars().any(|c| c.is_ascii_lowercase());
    !spaced_equals || upper_key
}

/// Whether a phone number match stands on its own: not part of a longer number, a word, a
/// version or an address (`v1.555.123.4567`, `12.345.678.9012`, a hash with ten digits in a row).
fn stands_alone(text: &str, captures: &Captures<'_>) -> bool {
    let Some(whole) = captures.get(0) else {
        return false;
    };
    let Range { start, end } = whole.range();
    let before = text[..start].chars().next_back();
    let after = text[end..].chars().next();
    let joins = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    // A separator that continues a number: `1.` before or `.5` after.
    let continues_before = matches!(before, Some('.' | '-'))
        && text[..start]
            .chars()
            .rev()
            .nth(1)
            .is_some_and(|c| c.is_ascii_digit());
    let continues_after = matches!(after, Some('.' | '-'))
        && text[end..]
            .chars()
            .nth(1)
            .is_some_and(|c| c.is_ascii_digit());
    !(joins(before) || joins(after) || continues_before || continues_after)
}

/// The byte offset of the character after the one at `at` (or the end).
fn next_boundary(text: &str, at: usize) -> usize {
    text[at..]
        .chars()
        .next()
        .map_or(text.len() + 1, |c| at + c.len_utf8())
}

#[cfg(test)]
mod tests;
