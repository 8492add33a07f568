//! The data and tags of the events a correction records (CORRECTION, LESSON_CHANGE,
//! RULE_FAILURE), as 0.6.0 shapes them. Pure: recording them is the parent's job.

use super::{EVENT_TEXT_CHARS, Prepared};
use crate::brain::lessons::Lesson;
use crate::brain::pyjson::{Object, Value};

/// The CORRECTION event's data and tags (brain spec §6.9 step 6; the classifier's summary is
/// the extracted instruction).
pub(super) fn correction_event(
    prepared: &Prepared,
    category: &str,
    platform: &str,
) -> (Object, Vec<String>) {
    let severity = prepared.measure.severity;
    let major = severity.is_major_edit();
    let text = |s: &str| Value::from(s.chars().take(EVENT_TEXT_CHARS).collect::<String>());
    let mut scope = Object::new();
    scope.insert("correction_scope".to_owned(), Value::from("domain"));
    let mut data = Object::new();
    data.insert("draft_text".to_owned(), text(&prepared.old));
    data.insert("final_text".to_owned(), text(&prepared.new));
    data.insert(
        "edit_distance".to_owned(),
        Value::from(prepared.measure.edit_distance),
    );
    data.insert("severity".to_owned(), Value::from(severity.as_str()));
    data.insert("outcome".to_owned(), Value::from(severity.as_str()));
    data.insert("major_edit".to_owned(), Value::from(major));
    data.insert("category".to_owned(), Value::from(category));
    data.insert(
        "summary".to_owned(),
        Value::from(prepared.instruction.text.as_str()),
    );
    data.insert(
        "instruction".to_owned(),
        Value::from(prepared.instruction.text.as_str()),
    );
    data.insert(
        "file_path".to_owned(),
        Value::from(prepared.file_path.as_str()),
    );
    data.insert(
        "lines_added".to_owned(),
        Value::from(line_count(&prepared.new) as u64),
    );
    data.insert(
        "lines_removed".to_owned(),
        Value::from(line_count(&prepared.old) as u64),
    );
    data.insert("correction_scope".to_owned(), Value::from("domain"));
    data.insert("source_kind".to_owned(), Value::from("user_edit"));
    data.insert(
        "requires_review".to_owned(),
        Value::from(prepared.requires_review()),
    );
    data.insert(
        "adversarial_hits".to_owned(),
        Value::from(
            prepared
                .adversarial_hits
                .iter()
                .map(|&hit| Value::from(hit))
                .collect::<Vec<_>>(),
        ),
    );
    data.insert(
        "redacted".to_owned(),
        Value::from(
            prepared
                .redacted_kinds
                .iter()
                .map(|&kind| Value::from(kind))
                .collect::<Vec<_>>(),
        ),
    );
    data.insert("scope".to_owned(), Value::from(scope));
    data.insert("platform_source".to_owned(), Value::from(platform));
    let mut tags = vec![
        format!("category:{category}"),
        format!("severity:{}", severity.as_str()),
    ];
    if major {
        tags.push("major_edit:true".to_owned());
    }
    if prepared.requires_review() {
        tags.push("requires_review:true".to_owned());
    }
    tags.push("source_kind:user_edit".to_owned());
    if !prepared.adversarial_hits.is_empty() {
        tags.push("adversarial_phrase:true".to_owned());
    }
    (data, tags)
}

/// Lines of a text, as the event's line counts give them (the whole old text is removed and
/// the whole new one added: a coarse count, the line diff is not kept).
pub(super) fn line_count(text: &str) -> usize {
    crate::brain::pytext::splitlines(text).len()
}

/// The LESSON_CHANGE event for the lesson the correction created or reinforced.
pub(super) fn lesson_change_event(
    created: bool,
    lesson: &Lesson,
    correction_id: &str,
) -> (Object, Vec<String>) {
    let mut data = Object::new();
    data.insert(
        "action".to_owned(),
        Value::from(if created { "created" } else { "reinforced" }),
    );
    // The lesson's id in full: the description below is cut, and `/end-session` counts the
    // lessons reinforced in a session by this id.
    data.insert(
        "lesson_id".to_owned(),
        Value::from(crate::brain::rule_id::rule_id(
            &lesson.category,
            &lesson.description,
        )),
    );
    data.insert(
        "lesson_category".to_owned(),
        Value::from(lesson.category.as_str()),
    );
    data.insert(
        "lesson_description".to_owned(),
        Value::from(lesson.description.chars().take(200).collect::<String>()),
    );
    data.insert(
        "lesson_state".to_owned(),
        Value::from(lesson.state.as_str()),
    );
    data.insert("confidence".to_owned(), Value::from(lesson.confidence));
    data.insert("fire_count".to_owned(), Value::from(lesson.fire_count));
    data.insert(
        "source_correction_id".to_owned(),
        Value::from(correction_id),
    );
    if created {
        data.insert(
            "initial_confidence".to_owned(),
            Value::from(crate::brain::learn::INITIAL_CONFIDENCE),
        );
    }
    let tags = vec![
        format!("category:{}", lesson.category),
        "provenance".to_owned(),
    ];
    (data, tags)
}

/// The RULE_FAILURE event for `rule`, which the correction of `category` got past.
pub(super) fn rule_failure_event(
    rule: &Lesson,
    category: &str,
    prepared: &Prepared,
    correction_id: &str,
) -> (Object, Vec<String>) {
    let mut data = Object::new();
    data.insert(
        "failed_rule_category".to_owned(),
        Value::from(rule.category.as_str()),
    );
    data.insert(
        "failed_rule_description".to_owned(),
        Value::from(rule.description.as_str()),
    );
    data.insert(
        "failed_rule_confidence".to_owned(),
        Value::from(rule.confidence),
    );
    data.insert(
        "failed_rule_fire_count".to_owned(),
        Value::from(rule.fire_count),
    );
    data.insert(
        "correction_description".to_owned(),
        Value::from(prepared.instruction.text.as_str()),
    );
    data.insert("correction_event_id".to_owned(), Value::from(correction_id));
    data.insert(
        "correction_severity".to_owned(),
        Value::from(prepared.measure.severity.as_str()),
    );
    let tags = vec![format!("category:{category}"), "self_healing".to_owned()];
    (data, tags)
}
