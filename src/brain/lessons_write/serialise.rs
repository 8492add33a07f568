//! One lesson's block in the Python SDK's layout (brain spec §3.3), refused with an
//! [`InvalidLesson`] when it would not read back as it is, and the rules a new or changed
//! description follows ([`clean_description`]). Pure: it knows nothing of files or of the rest
//! of the document.
//!
//! Rewritten lessons come out as the SDK 0.6.0 writes them (measured: its serialiser on 400
//! generated files gave the same bytes as this one), with two differences in layout, not in
//! meaning: `Domain scores:` is kept as written where the SDK re-dumps it (`{"a":1}` against
//! `{"a": 1}`), and `Beta params:` integers are written as floats (`3.0`), the reader keeping
//! them as floats.

use std::fmt::Write as _;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::InvalidLesson;
use crate::brain::lessons::{self, Lesson, LessonPiece};
use crate::brain::pyjson::{self, Ascii};
use crate::brain::pytext;

/// The most characters (Unicode scalar values) a new or changed description may have. A lesson
/// is one imperative sentence that `/apply-rules` injects into every prompt, so a longer text is
/// almost always a pasted diff or file; 300 keeps any sentence a person writes (the longest
/// lesson of the SDK's own examples is under 150) and bounds what one lesson costs a prompt.
pub const DESCRIPTION_CAP: usize = 300;

/// What a cut description ends with, so that a reader sees it was cut.
const ELLIPSIS: char = '…';

/// `text` as a lesson description: every run of whitespace (line breaks included) one space, no
/// leading or trailing space, the header's `Root cause:` marker disarmed (`Root cause -`, else
/// the reader would cut the description there), and at most [`DESCRIPTION_CAP`] characters: a
/// longer text is cut at the last space before the cap when there is one in its second half,
/// and ends with `…`. Idempotent. Call it when setting a description, so that the lesson in
/// memory is the one in the file; [`Document::render`](super::Document::render) applies it to
/// every new or changed one.
pub fn clean_description(text: &str) -> String {
    let mut clean = pytext::split_whitespace(text)
        .collect::<Vec<_>>()
        .join(" ")
        .replace(lessons::ROOT_CAUSE, "Root cause -");
    if clean.chars().count() > DESCRIPTION_CAP {
        let keep = DESCRIPTION_CAP - 1;
        let cut = clean
            .char_indices()
            .nth(keep)
            .map_or(clean.len(), |(at, _)| at);
        let head = &clean[..cut];
        let head = match head.rfind(' ') {
            Some(space) if head[..space].chars().count() >= keep / 2 => &head[..space],
            _ => head,
        };
        let mut short = pytext::strip(head).to_owned();
        short.push(ELLIPSIS);
        clean = short;
    }
    clean
}

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d{2}-\d{2}$").expect("the date pattern is a valid regex")
});

static CATEGORY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\w[\w/]*$").expect("the category pattern is a valid regex"));

/// The `Metadata:` object in the SDK's key order.
#[derive(Serialize)]
struct MetadataJson<'a> {
    what: &'a str,
    why: &'a str,
    who: &'a str,
    when_created: &'a str,
    when_validated: &'a str,
    where_scope: &'a str,
    how_enforced: &'a str,
    utility_score: f64,
    safety_score: f64,
}

/// One lesson's block in the SDK's layout (spec §3.3), each line ending in `\n`, its description
/// cleaned ([`clean_description`]): what the archive holds of a retired lesson.
pub fn block(lesson: &Lesson) -> Result<String, InvalidLesson> {
    let mut out = String::new();
    serialise(lesson, None, &mut out)?;
    Ok(out)
}

/// Writes one lesson's block in the SDK's layout (spec §3.3), each line ending in `\n`, then the
/// unknown continuation lines of the `original` it was read from.
pub(super) fn serialise(
    lesson: &Lesson,
    original: Option<&LessonPiece>,
    out: &mut String,
) -> Result<(), InvalidLesson> {
    let invalid = |reason: String| InvalidLesson {
        category: lesson.category.clone(),
        description: lesson.description.clone(),
        reason,
    };
    if !DATE.is_match(&lesson.date) {
        return Err(invalid(format!("date {:?} is not YYYY-MM-DD", lesson.date)));
    }
    let category = lesson.category.to_uppercase();
    if !CATEGORY.is_match(&category) {
        return Err(invalid(
            "category must be word characters and '/', starting with a word character".into(),
        ));
    }
    let description = match original {
        Some(original) if original.lesson.description == lesson.description => {
            lesson.description.clone()
        }
        _ => clean_description(&lesson.description),
    };
    if description.is_empty() {
        return Err(invalid("the description is empty".into()));
    }
    let confidence = finite(lesson.confidence, "confidence").map_err(&invalid)?;
    let confidence = pytext::round(confidence.clamp(0.0, 1.0), 2);

    let mut lines: Vec<String> = Vec::new();
    let field = |lines: &mut Vec<String>, name: &str, value: &str| {
        let value = one_line(value);
        if !value.is_empty() {
            lines.push(format!("{name}: {value}"));
        }
    };
    field(&mut lines, "Root cause", &lesson.root_cause);
    let counters_at = lines.len();
    field(&mut lines, "Agent", &lesson.agent);
    field(&mut lines, "Kill reason", &lesson.kill_reason);
    let corrections = comma_list(&lesson.corrections, "corrections").map_err(&invalid)?;
    field(&mut lines, "Corrections", &corrections);
    if lesson.pending_approval {
        field(&mut lines, "Pending approval", "yes");
    }
    field(&mut lines, "Parent meta-rule", &lesson.parent_meta_rule);
    let links = comma_list(&lesson.memory_links, "memory links").map_err(&invalid)?;
    field(&mut lines, "Memory links", &links);
    field(&mut lines, "Scope", &lesson.scope);
    let domain_scores = one_line(&lesson.domain_scores);
    if !domain_scores.is_empty() {
        match serde_json::from_str::<serde_json::Value>(&domain_scores) {
            Ok(serde_json::Value::Object(fields)) if !fields.is_empty() => {}
            _ => {
                return Err(invalid(
                    "domain scores must be a non-empty JSON object or nothing".into(),
                ));
            }
        }
    }
    field(&mut lines, "Domain scores", &domain_scores);
    let alpha = finite(lesson.beta.alpha, "beta alpha").map_err(&invalid)?;
    let beta = finite(lesson.beta.beta, "beta beta").map_err(&invalid)?;
    if alpha != 1.0 || beta != 1.0 {
        let json = format!(
            "{{\"alpha\": {}, \"beta\": {}}}",
            pyjson::float_repr(alpha),
            pyjson::float_repr(beta)
        );
        field(&mut lines, "Beta params", &json);
    }
    field(&mut lines, "Path", &lesson.path);
    let secondary =
        comma_list(&lesson.secondary_categories, "secondary categories").map_err(&invalid)?;
    field(&mut lines, "Secondary categories", &secondary);
    let climb = lesson.climb;
    if climb.count != 0 || climb.last_session != 0 || climb.level != 0 {
        let json = format!(
            "{{\"count\": {}, \"last_session\": {}, \"level\": {}}}",
            climb.count, climb.last_session, climb.level
        );
        field(&mut lines, "Climb", &json);
    }
    let metadata = &lesson.metadata;
    let score = |value: f64, name: &str| {
        finite(value, name).map(|value| pytext::round(value.clamp(0.0, 1.0), 2))
    };
    let json = pyjson::to_string(
        &MetadataJson {
            what: &metadata.what,
            why: &metadata.why,
            who: &metadata.who,
            when_created: &metadata.when_created,
            when_validated: &metadata.when_validated,
            where_scope: &metadata.where_scope,
            how_enforced: &metadata.how_enforced,
            utility_score: score(metadata.utility_score, "utility score").map_err(&invalid)?,
            safety_score: score(metadata.safety_score, "safety score").map_err(&invalid)?,
        },
        Ascii::Escape,
    )
    .map_err(|err| invalid(format!("metadata cannot be written as JSON: {err}")))?;
    // The SDK writes the metadata even when it holds only defaults.
    field(&mut lines, "Metadata", &json);

    // The reader takes the counters from any continuation line, the last one winning: if a value
    // written after the counters' place mentions them, the counters go last, so that they read
    // back as they are.
    let counters = format!(
        "Fire count: {} | Sessions since fire: {} | Misfires: {}",
        lesson.fire_count, lesson.sessions_since_fire, lesson.misfires
    );
    if lines[counters_at..]
        .iter()
        .any(|line| lessons::mentions_counters(line))
    {
        lines.push(counters);
    } else if lesson.fire_count != 0 || lesson.sessions_since_fire != 0 || lesson.misfires != 0 {
        lines.insert(counters_at, counters);
    }

    let _ = writeln!(
        out,
        "[{}] [{}:{confidence:.2}] {category}: {description}",
        lesson.date, lesson.state
    );
    for line in lines {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(original) = original {
        for extra in &original.extras {
            let _ = writeln!(out, "{extra}");
        }
    }
    Ok(())
}

/// A value on one line: its lines joined by a space, stripped.
fn one_line(value: &str) -> String {
    pytext::splitlines(value)
        .into_iter()
        .map(pytext::strip)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A list as the SDK writes it (`a,b`): each item on one line, empty items dropped; an item
/// holding a comma would read back as two, so it is refused.
fn comma_list(items: &[String], name: &str) -> Result<String, String> {
    let items: Vec<String> = items
        .iter()
        .map(|item| one_line(item))
        .filter(|item| !item.is_empty())
        .collect();
    if let Some(item) = items.iter().find(|item| item.contains(',')) {
        return Err(format!("{name} item {item:?} holds a comma"));
    }
    Ok(items.join(","))
}

fn finite(value: f64, name: &str) -> Result<f64, String> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{name} is not a finite number: {value}"))
    }
}
