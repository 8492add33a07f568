//! The `lessons.md` reader, and the lesson model it reads into (in `model`, re-exported here).
//!
//! `lessons.md` is shared with the Python SDK, which writes it; this module reads it the way the
//! SDK does (brain spec §3.2): lines as Python's `splitlines` cuts them, each stripped and tried
//! against the header grammar `[DATE] [STATE(:CONF)?] CATEGORY: DESCRIPTION`, followed by a block
//! of continuation lines indented by two spaces. Every field the SDK keeps is kept here, so a
//! writer can put a lesson back as it found it.
//!
//! One deliberate difference: the SDK fails the whole file on one malformed value (a confidence
//! such as `0.9.1`). Here that lesson is still read, with the value's default, and a [`Problem`]
//! names the line and what was wrong, for the caller to log. [`parse`] never fails.
//!
//! [`parse_pieces`] reads the same way and also keeps what the lessons are not: every other line
//! and each lesson's raw text, so that the writer (`lessons_write`) can put back what it did not
//! change, byte for byte.
//!
//! Pure: no file access and no locking here (the caller reads the file under `.lessons.lock`).
//!
//! Known gap: Python's `\w` and `\d` and Rust's differ on rare characters (`²` is a word
//! character in Python only; a confidence written in non-ASCII digits, which Python's `float`
//! accepts, is reported as a problem here).

mod model;

pub use model::{BetaParams, Climb, Lesson, Metadata, RULE_TTL_SESSIONS, State};

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use super::pytext;

/// Something in the file that could not be read as written. The lesson it belongs to is still
/// read, with the default for that value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong, lowercase, naming the value.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// What [`parse`] read: the lessons in file order, and what it had to skip.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// In file order.
    pub lessons: Vec<Lesson>,
    /// In line order.
    pub problems: Vec<Problem>,
}

/// Python's `\s` also matches the separators `\x1c`–`\x1f`, which Rust's `\s` does not.
macro_rules! py_space {
    () => {
        r"[\s\x1c-\x1f]"
    };
}

/// The header grammar of §3.2, anchored at the start of the stripped line. The category is lazy
/// so that it ends at the first `:` followed by whitespace.
static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^\[(\d{4}-\d{2}-\d{2})\]",
        py_space!(),
        r"+\[(\w+)(?::([\d.]*))?\]",
        py_space!(),
        r"+(\w[\w/]*?):",
        py_space!(),
        r"+(.+)"
    ))
    .expect("the header pattern is a valid regex")
});

/// The counters line, found anywhere in a continuation line.
static COUNTERS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"Fire count:",
        py_space!(),
        r"*(\d+)",
        py_space!(),
        r"*\|",
        py_space!(),
        r"*Sessions since fire:",
        py_space!(),
        r"*(\d+)",
        py_space!(),
        r"*\|",
        py_space!(),
        r"*Misfires:",
        py_space!(),
        r"*(\d+)"
    ))
    .expect("the counters pattern is a valid regex")
});

/// The marker that ends a header's description (§3.2).
pub(crate) const ROOT_CAUSE: &str = "Root cause:";

/// Whether `text` holds the counters, which the reader takes from any continuation line.
pub(crate) fn mentions_counters(text: &str) -> bool {
    COUNTERS.is_match(text)
}

/// Reads `lessons.md` text. Never fails: see the module doc.
pub fn parse(text: &str) -> Parsed {
    let (pieces, problems) = parse_pieces(text);
    let lessons = pieces
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Lesson(piece) => Some(piece.lesson),
            Piece::Other(_) => None,
        })
        .collect();
    Parsed { lessons, problems }
}

/// One stretch of `lessons.md` as the reader cut it. Concatenated in order, the pieces' raw texts
/// give back the file byte for byte, so a writer can keep what it did not change.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// A line that belongs to no lesson (a heading, prose, a blank line, a line the grammar
    /// rejects), with its line break as written.
    Other(String),
    /// A lesson: its header and continuation lines.
    Lesson(Box<LessonPiece>),
}

/// A lesson with the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct LessonPiece {
    /// What the lines say.
    pub lesson: Lesson,
    /// The header and continuation lines with their line breaks, exactly as written.
    pub raw: String,
    /// The continuation lines the reader took nothing from (no known field prefix and no
    /// counters), without their line breaks, in order: notes a person added, fields of a later
    /// SDK. A writer that rewrites the lesson keeps them at the end of its block.
    pub extras: Vec<String>,
}

/// Reads `lessons.md` text into [`Piece`]s, the lessons as [`parse`] reads them. Never fails.
pub fn parse_pieces(text: &str) -> (Vec<Piece>, Vec<Problem>) {
    let mut pieces = Vec::new();
    let mut problems = Vec::new();
    let lines = pytext::splitlines(text);
    // Each line's raw text runs from its start to the next line's start, so that it keeps its
    // own line break (`\n`, `\r\n`, U+2028, ...). `splitlines` gives slices of `text`.
    let starts: Vec<usize> = lines
        .iter()
        .map(|line| line.as_ptr() as usize - text.as_ptr() as usize)
        .collect();
    let raw = |from: usize, to: usize| {
        let end = starts.get(to).copied().unwrap_or(text.len());
        text[starts[from]..end].to_owned()
    };
    let mut at = 0;
    while at < lines.len() {
        let first = at;
        at += 1;
        let Some(mut lesson) = read_header(pytext::strip(lines[first]), first + 1, &mut problems)
        else {
            pieces.push(Piece::Other(raw(first, at)));
            continue;
        };
        let mut extras = Vec::new();
        // The block is the raw lines that start with two spaces; it ends at the first that does
        // not (a blank line, a tab-indented line, a header).
        while at < lines.len() && lines[at].starts_with("  ") {
            if !read_continuation(&mut lesson, lines[at], at + 1, &mut problems) {
                extras.push(lines[at].to_owned());
            }
            at += 1;
        }
        pieces.push(Piece::Lesson(Box::new(LessonPiece {
            lesson,
            raw: raw(first, at),
            extras,
        })));
    }
    (pieces, problems)
}

fn read_header(line: &str, line_no: usize, problems: &mut Vec<Problem>) -> Option<Lesson> {
    let caps = HEADER.captures(line)?;
    let group = |index: usize| caps.get(index).map_or("", |m| m.as_str());
    let problem = |message: String| Problem {
        line: line_no,
        message,
    };

    let word = group(2).to_uppercase();
    let state = State::from_word(&word).unwrap_or_else(|| {
        problems.push(problem(format!("unknown state {word:?}, read as INSTINCT")));
        State::Instinct
    });
    let mut lesson = Lesson::new(line_no, group(1), state, group(4).to_uppercase());

    let written = group(3);
    if !written.is_empty() {
        match written.parse::<f64>() {
            Ok(confidence) => lesson.confidence = confidence,
            Err(_) => problems.push(problem(format!(
                "confidence {written:?} is not a number, read as {}",
                state.default_confidence()
            ))),
        }
    }
    lesson.confidence = pytext::round(lesson.confidence.clamp(0.0, 1.0), 2);

    let text = group(5);
    match text.split_once(ROOT_CAUSE) {
        Some((description, root_cause)) => {
            lesson.description = pytext::strip(description).to_owned();
            lesson.root_cause = pytext::strip(root_cause).to_owned();
        }
        None => lesson.description = pytext::strip(text).to_owned(),
    }
    Some(lesson)
}

/// Reads one continuation line into `lesson`. Returns whether the line is one the reader
/// recognises (a known field prefix, or the counters anywhere in it), whether or not its value
/// could be used.
fn read_continuation(
    lesson: &mut Lesson,
    raw: &str,
    line_no: usize,
    problems: &mut Vec<Problem>,
) -> bool {
    let line = pytext::strip(raw);
    let mut problem = |message: String| {
        problems.push(Problem {
            line: line_no,
            message,
        })
    };

    let mut recognised = false;
    if let Some(caps) = COUNTERS.captures(line) {
        recognised = true;
        let counters = [1, 2, 3].map(|index| caps[index].parse::<u64>());
        match counters {
            [Ok(fires), Ok(idle), Ok(misfires)] => {
                lesson.fire_count = fires;
                lesson.sessions_since_fire = idle;
                lesson.misfires = misfires;
            }
            _ => problem(format!(
                "counters out of range or not ASCII digits: {line:?}"
            )),
        }
    }

    let field = |prefix: &str| line.strip_prefix(prefix).map(pytext::strip);
    if let Some(value) = field(ROOT_CAUSE) {
        if lesson.root_cause.is_empty() {
            lesson.root_cause = value.to_owned();
        }
    } else if let Some(value) = field("Agent:") {
        lesson.agent = value.to_owned();
    } else if let Some(value) = field("Kill reason:") {
        lesson.kill_reason = value.to_owned();
    } else if let Some(value) = field("Corrections:") {
        lesson.corrections = comma_list(value);
    } else if let Some(value) = field("Pending approval:") {
        lesson.pending_approval = value.to_lowercase() == "yes";
    } else if let Some(value) = field("Parent meta-rule:") {
        lesson.parent_meta_rule = value.to_owned();
    } else if let Some(value) = field("Memory links:") {
        lesson.memory_links = comma_list(value);
    } else if let Some(value) = field("Scope:") {
        lesson.scope = value.to_owned();
    } else if let Some(value) = field("Beta params:") {
        match json_object(value, "beta params") {
            Ok(fields) => match read_beta(&fields) {
                Ok(beta) => lesson.beta = beta,
                Err(message) => problem(message),
            },
            Err(message) => problem(message),
        }
    } else if let Some(value) = field("Domain scores:") {
        match json_object(value, "domain scores") {
            Ok(fields) if fields.is_empty() => lesson.domain_scores.clear(),
            Ok(_) => lesson.domain_scores = value.to_owned(),
            Err(message) => problem(message),
        }
    } else if let Some(value) = field("Path:") {
        lesson.path = value.to_owned();
    } else if let Some(value) = field("Secondary categories:") {
        lesson.secondary_categories = comma_list(value);
    } else if let Some(value) = field("Climb:") {
        match json_object(value, "climb").and_then(|fields| read_climb(&fields)) {
            Ok(climb) => lesson.climb = climb,
            Err(message) => problem(message),
        }
    } else if let Some(value) = field("Metadata:") {
        match json_object(value, "metadata").and_then(|fields| read_metadata(&fields)) {
            Ok(metadata) => lesson.metadata = metadata,
            Err(message) => problem(message),
        }
    } else {
        return recognised;
    }
    true
}

/// A comma list as the SDK keeps it: items stripped, empty items dropped.
fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(pytext::strip)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

fn json_object(value: &str, what: &str) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_str(value) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(format!("{what} is not a JSON object: {value:?}")),
        Err(err) => Err(format!("{what} is not valid JSON ({err}): {value:?}")),
    }
}

fn number(fields: &serde_json::Map<String, Value>, key: &str, default: f64) -> Result<f64, String> {
    match fields.get(key) {
        None => Ok(default),
        Some(value) => value
            .as_f64()
            .ok_or_else(|| format!("{key} is not a number: {value}")),
    }
}

fn read_beta(fields: &serde_json::Map<String, Value>) -> Result<BetaParams, String> {
    Ok(BetaParams {
        alpha: number(fields, "alpha", 1.0)?,
        beta: number(fields, "beta", 1.0)?,
    })
}

fn read_climb(fields: &serde_json::Map<String, Value>) -> Result<Climb, String> {
    let integer = |key: &str| match fields.get(key) {
        None => Ok(0),
        Some(value) => value
            .as_i64()
            .ok_or_else(|| format!("climb {key} is not an integer: {value}")),
    };
    Ok(Climb {
        count: integer("count")?,
        last_session: integer("last_session")?,
        level: integer("level")?,
    })
}

fn read_metadata(fields: &serde_json::Map<String, Value>) -> Result<Metadata, String> {
    let defaults = Metadata::default();
    let text = |key: &str, default: &str| match fields.get(key) {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(value) => Err(format!("metadata {key} is not a string: {value}")),
    };
    let score = |key: &str| {
        number(fields, key, 0.5)
            .map(|score| pytext::round(score.clamp(0.0, 1.0), 2))
            .map_err(|message| format!("metadata {message}"))
    };
    Ok(Metadata {
        what: text("what", &defaults.what)?,
        why: text("why", &defaults.why)?,
        who: text("who", &defaults.who)?,
        when_created: text("when_created", &defaults.when_created)?,
        when_validated: text("when_validated", &defaults.when_validated)?,
        where_scope: text("where_scope", &defaults.where_scope)?,
        how_enforced: text("how_enforced", &defaults.how_enforced)?,
        utility_score: score("utility_score")?,
        safety_score: score("safety_score")?,
    })
}

#[cfg(test)]
mod tests;
