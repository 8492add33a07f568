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
mod tests {
    use super::*;

    fn check(input: &str, expected: &str, kinds: &[Kind]) {
        let redacted = redact(input);
        assert_eq!(redacted.text, expected, "{input:?}");
        assert_eq!(
            redacted.found,
            kinds.iter().copied().collect::<BTreeSet<_>>(),
            "{input:?}"
        );
    }

    #[test]
    fn vendor_keys_and_tokens_are_replaced() {
        for (input, expected, kind) in [
            (
                "OPENAI_API_KEY is sk-proj-4fT9xQ2mLp8vR1sK7wY3zA6bN0cD5eH in the docs",
                "OPENAI_API_KEY is [REDACTED_OPENAI_KEY] in the docs",
                Kind::OpenAiKey,
            ),
            (
                "client = Anthropic(api_key=sk-ant-api03-Xy7Qw2Er5Ty8Ui1Op4As6Df9Gh)",
                "client = Anthropic(api_key=[REDACTED_OPENAI_KEY])",
                Kind::OpenAiKey,
            ),
            (
                "git clone https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r",
                "git clone https://[REDACTED_GITHUB_TOKEN]@github.com/o/r",
                Kind::GithubToken,
            ),
            (
                "token github_pat_11ABCDEFG0a1b2c3d4e5f6g7h8i9j0kLmNoPqRsTuV used",
                "token [REDACTED_GITHUB_TOKEN] used",
                Kind::GithubToken,
            ),
            (
                "SLACK: xoxb-2048-1234567890-AbCdEfGhIjKlMnOp",
                "SLACK: [REDACTED_SLACK_TOKEN]",
                Kind::SlackToken,
            ),
            (
                "aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE",
                "aws configure set aws_access_key_id [REDACTED_AWS_KEY]",
                Kind::AwsKey,
            ),
            (
                "maps.js?key=AIzaSyDdI0hCZtE6vySjMm-WEfRq3CPzqKqqsHI&v=3",
                "maps.js?key=[REDACTED_GOOGLE_KEY]&v=3",
                Kind::GoogleKey,
            ),
            (
                "export GITLAB=glpat-xYz12AbC34dEf56GhI78",
                "export GITLAB=[REDACTED_GITLAB_TOKEN]",
                Kind::GitlabToken,
            ),
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.SflKxwRJSMeKKF2QT4fwpM",
                "Authorization: Bearer [REDACTED_JWT]",
                Kind::Jwt,
            ),
            (
                "curl -H 'Authorization: bearer 8f14e45fceea167a5a36dedd4bea2543' api",
                "curl -H 'Authorization: bearer [REDACTED_BEARER_TOKEN]' api",
                Kind::BearerToken,
            ),
        ] {
            check(input, expected, &[kind]);
        }
    }

    #[test]
    fn private_key_blocks_are_replaced_whole_even_when_cut_off() {
        let pem = "key = \"\"\"\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\naFDrBz9vFqU4yVkzSGCZbQ4YF3kJQ==\n-----END RSA PRIVATE KEY-----\n\"\"\"";
        check(
            pem,
            "key = \"\"\"\n[REDACTED_PRIVATE_KEY]\n\"\"\"",
            &[Kind::PrivateKey],
        );
        check(
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
            "[REDACTED_PRIVATE_KEY]",
            &[Kind::PrivateKey],
        );
        check(
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nlQOYBF\n-----END PGP PRIVATE KEY BLOCK-----",
            "[REDACTED_PRIVATE_KEY]",
            &[Kind::PrivateKey],
        );
        // A public key or a certificate is not a secret.
        let public = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----";
        check(public, public, &[]);
    }

    #[test]
    fn passwords_in_config_lines_and_connection_strings_are_replaced() {
        for (input, expected, kinds) in [
            (
                "DB_HOST=db.internal\nDB_PASSWORD=s3cr3t-Pa55\nDEBUG=false\n",
                "DB_HOST=db.internal\nDB_PASSWORD=[REDACTED_SECRET]\nDEBUG=false\n",
                &[Kind::Secret][..],
            ),
            (
                "export STRIPE_SECRET=rk_live_51H8abc\r\n",
                "export STRIPE_SECRET=[REDACTED_SECRET]\r\n",
                &[Kind::Secret],
            ),
            (
                "PASSWORD=\"correct horse battery staple\"",
                "PASSWORD=\"[REDACTED_SECRET]\"",
                &[Kind::Secret],
            ),
            (
                "database:\n  user: app\n  password: hunter2  # rotated monthly\n",
                "database:\n  user: app\n  password: [REDACTED_SECRET]  # rotated monthly\n",
                &[Kind::Secret],
            ),
            (
                "{\"api_key\": \"9b1deb4d3b7d4bad9bdd2b0d7b3dcb6d\", \"region\": \"eu\"}",
                "{\"api_key\": \"[REDACTED_SECRET]\", \"region\": \"eu\"}",
                &[Kind::Secret],
            ),
            (
                "[client]\npassword = 'p@ss:word'\n",
                "[client]\npassword = '[REDACTED_SECRET]'\n",
                &[Kind::Secret],
            ),
            (
                "AWS_SECRET_ACCESS_KEY = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "AWS_SECRET_ACCESS_KEY = [REDACTED_SECRET]",
                &[Kind::Secret],
            ),
            (
                "const githubToken = \"abc123def456\";",
                "const githubToken = \"[REDACTED_SECRET]\";",
                &[Kind::Secret],
            ),
            (
                "db.password=changeit",
                "db.password=[REDACTED_SECRET]",
                &[Kind::Secret],
            ),
            (
                "DATABASE_URL=postgres://app:Xk9%40pw@db.internal:5432/app",
                "DATABASE_URL=postgres://app:[REDACTED_CONNECTION_PASSWORD]@db.internal:5432/app",
                &[Kind::ConnectionPassword],
            ),
            (
                "redis://:topsecret@cache:6379/0 and mongodb+srv://u:p@ss@cluster0.example.net/db",
                "redis://:[REDACTED_CONNECTION_PASSWORD]@cache:6379/0 and mongodb+srv://u:[REDACTED_CONNECTION_PASSWORD]@cluster0.example.net/db",
                &[Kind::ConnectionPassword],
            ),
            // A value an earlier rule redacted is not counted again as a plain secret.
            (
                "OPENAI_API_KEY=sk-abcdefghijklmnopqrstuvwxyz012345",
                "OPENAI_API_KEY=[REDACTED_OPENAI_KEY]",
                &[Kind::OpenAiKey],
            ),
        ] {
            check(input, expected, kinds);
        }
    }

    #[test]
    fn personal_data_is_replaced() {
        for (input, expected, kind) in [
            (
                "Write to jane.doe+billing@mail.example.co.uk today",
                "Write to [REDACTED_EMAIL] today",
                Kind::Email,
            ),
            (
                "Call (555) 123-4567.",
                "Call [REDACTED_PHONE].",
                Kind::Phone,
            ),
            ("Call 555-123-4567", "Call [REDACTED_PHONE]", Kind::Phone),
            ("tel: +1 555 123 4567", "tel: [REDACTED_PHONE]", Kind::Phone),
            ("1-555-123-4567,", "[REDACTED_PHONE],", Kind::Phone),
            ("id=5551234567", "id=[REDACTED_PHONE]", Kind::Phone),
            ("SSN 123-45-6789", "SSN [REDACTED_SSN]", Kind::Ssn),
            (
                "card 4111 1111 1111 1111 exp 12/29",
                "card [REDACTED_CC] exp 12/29",
                Kind::CardNumber,
            ),
            (
                "card 5500-0000-0000-0004",
                "card [REDACTED_CC]",
                Kind::CardNumber,
            ),
        ] {
            check(input, expected, &[kind]);
        }
        check(
            "Ask bob@example.com or 555.123.4567; SSN 078-05-1120.",
            "Ask [REDACTED_EMAIL] or [REDACTED_PHONE]; SSN [REDACTED_SSN].",
            &[Kind::Email, Kind::Phone, Kind::Ssn],
        );
    }

    #[test]
    fn ordinary_code_and_text_are_left_alone() {
        for text in [
            "def login(username: str, password: str) -> bool:\n    return check(username, password)\n",
            "class Settings:\n    password: str\n    token: Optional[str] = None\n",
            "struct Config {\n    password: String,\n    api_token: Option<String>,\n}\n",
            "interface Login { password: string; remember: boolean }",
            "password = request.form[\"password\"]\nif password == confirm:\n    save(password)\n",
            "    token = next_token()\n    password = new_password\n",
            "DB_PASSWORD=${DB_PASSWORD}\nAPI_TOKEN=<your token here>\n",
            "max_tokens: 1024\nauthor: Jane\ntemperature: 0.2\n",
            "<input type=\"password\" name=\"password\" placeholder=\"Password\">",
            "let tokens = tokenize(text);\nlet secret_count = 3;\n",
            "log::info!(\"token: {}\", token.kind());",
            "Released 2024-01-15 as v1.2.3 on port 8080 at 192.168.100.200",
            "timestamp 1700000000123, order 123456789012345, sha 3e4f1a2b5551234567c9d8",
            "version 12.345.678.9012 and build 2.555.123.4567",
            "git@github.com:Gradata/gradata-daemon.git",
            "@app.route(\"/login\", methods=[\"POST\"])",
            "https://example.com:8443/path?q=a@b and http://host/x@y",
            "The risk-assessment framework is documented in the task-management guide.",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
            "",
        ] {
            check(text, text, &[]);
        }
    }

    /// The SDK refuses a phone number only next to another digit; here it must stand alone.
    /// Each pair: the input, then what the SDK 0.6.0 stored for it (not what we give).
    #[test]
    fn phone_numbers_glued_to_words_or_numbers_are_left_alone_unlike_the_sdk() {
        for (input, sdk) in [
            ("x555-123-4567 end", "x[REDACTED_PHONE] end"),
            ("a5551234567 end", "a[REDACTED_PHONE] end"),
            ("v1.555.123.4567 end", "v[REDACTED_PHONE] end"),
            ("v 12.345.678.9012 end", "v 12.[REDACTED_PHONE] end"),
        ] {
            assert_ne!(redact(input).text, sdk);
            check(input, input, &[]);
        }
        // Where the number stands alone both redact it the same way.
        check(
            "id=5551234567 end",
            "id=[REDACTED_PHONE] end",
            &[Kind::Phone],
        );
    }

    #[test]
    fn every_kind_has_its_own_label() {
        let kinds = [
            Kind::PrivateKey,
            Kind::ConnectionPassword,
            Kind::Jwt,
            Kind::BearerToken,
            Kind::OpenAiKey,
            Kind::GithubToken,
            Kind::SlackToken,
            Kind::AwsKey,
            Kind::GoogleKey,
            Kind::GitlabToken,
            Kind::Secret,
            Kind::CardNumber,
            Kind::Ssn,
            Kind::Phone,
            Kind::Email,
        ];
        let labels: BTreeSet<_> = kinds.iter().map(|kind| kind.label()).collect();
        assert_eq!(labels.len(), kinds.len());
        assert_eq!(Kind::CardNumber.placeholder(), "[REDACTED_CC]");
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let text = "PASSWORD=hunter2\nmail a@b.io, key sk-abcdefghijklmnopqrstuvwxyz0123\n\
                    postgres://u:pw@h/db 555-123-4567";
        let once = redact(text);
        assert_eq!(once.found.len(), 5, "{once:?}");
        let twice = redact(&once.text);
        assert_eq!(twice.text, once.text);
        assert!(twice.found.is_empty(), "{twice:?}");
    }

    #[test]
    fn large_texts_full_of_near_misses_are_redacted_in_bounded_time() {
        // /correct takes up to 100,000 characters; every one of these is a candidate that a
        // rule refuses or that the next search starts over.
        let started = std::time::Instant::now();
        for text in [
            "7".repeat(100_000),
            "555-123-45670".repeat(8_000),
            "a@".repeat(50_000),
            "password=x(\n".repeat(8_000),
            "-----BEGIN RSA PRIVATE KEY-----".repeat(3_000),
        ] {
            let redacted = redact(&text);
            assert!(redacted.text.len() <= text.len(), "{:?}", redacted.found);
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn multibyte_text_around_secrets_is_kept() {
        check(
            "Café ☕ 555-123-4567 für José: josé@example.com",
            "Café ☕ [REDACTED_PHONE] für José: [REDACTED_EMAIL]",
            &[Kind::Phone, Kind::Email],
        );
    }
}
