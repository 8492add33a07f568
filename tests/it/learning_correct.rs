//! `POST /correct` learns: a correction creates an INSTINCT lesson in `lessons.md` or reinforces
//! the one it repeats, never rewrites a RULE's text, lands in the brain's log with its outbox
//! row, and is found by `/brain-recall` afterwards. Bad input writes nothing.

use std::io::Write as _;
use std::path::Path;

use gradata::brain::lessons::{self, Lesson, State};
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support::brain::Brain;
use crate::support::daemon::post_bytes;

/// A brain with a heading, a line the grammar does not know, and one RULE.
const LESSONS: &str = "# Team brain: lessons
A note a person wrote, kept as is.

[2026-04-03] [RULE:0.95] CODE: Always use pathlib for file handling
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0
";

impl Brain {
    /// A brain holding [`LESSONS`], served.
    fn with_team_lessons() -> Brain {
        Brain::serve(&[("lessons.md", LESSONS)])
    }

    fn lessons_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("lessons.md")).unwrap()
    }

    fn parsed_lessons(&self) -> Vec<Lesson> {
        let parsed = lessons::parse(&self.lessons_text());
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        parsed.lessons
    }

    fn system_db(&self) -> Connection {
        Connection::open(self.dir.join("system.db")).unwrap()
    }

    fn count(&self, sql: &str) -> i64 {
        self.system_db()
            .query_row(sql, [], |row| row.get(0))
            .unwrap()
    }
}

fn in_category<'a>(lessons: &'a [Lesson], category: &str) -> Vec<&'a Lesson> {
    lessons.iter().filter(|l| l.category == category).collect()
}

fn jsonl_types(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line).unwrap();
            value["type"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn a_correction_creates_an_instinct_and_a_similar_one_reinforces_it() {
    let brain = Brain::with_team_lessons();
    let first = brain.ok(
        "/correct",
        json!({
            "old_string": "Hey team, maybe we could possibly ship it friday.",
            "new_string": "Rule: Send release notes every Friday morning\nShip it Friday.",
            "file_path": "notes/release.md",
            "session_id": "s1",
        }),
    );
    assert_eq!(first["captured"], true, "{first}");
    assert_eq!(first["lesson_created"], true, "{first}");
    assert_eq!(first["lesson_state"], "INSTINCT", "{first}");
    assert_eq!(first["category"], "CONTENT", "{first}");
    let instruction = first["instruction_extracted"].as_str().unwrap();
    assert!(instruction.contains("release notes"), "{first}");
    // The brain's scale, not the cloud's.
    assert!(
        ["as-is", "minor", "moderate", "major", "discarded"]
            .contains(&first["severity"].as_str().unwrap()),
        "{first}"
    );
    for key in [
        "misfired_rules",
        "accepted_rules",
        "addition_detected",
        "addition_lesson",
        "correction_conflict",
        "event_id",
        "queued",
    ] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }

    let text = brain.lessons_text();
    assert!(text.starts_with("# Team brain: lessons\n"), "{text}");
    assert!(
        text.contains("A note a person wrote, kept as is."),
        "{text}"
    );
    let lessons = brain.parsed_lessons();
    let content = in_category(&lessons, "CONTENT");
    assert_eq!(content.len(), 1, "{text}");
    assert_eq!(content[0].state, State::Instinct);
    assert_eq!(content[0].description, instruction);
    assert_eq!(content[0].corrections.len(), 1, "{text}");
    let confidence = content[0].confidence;

    let second = brain.ok("/correct", json!({
        "old_string": "Ship whenever.",
        "new_string": "Rule: Send release notes every Friday morning\nShip whenever it is ready.",
        "file_path": "notes/other.md",
        "session_id": "s1",
    }));
    assert_eq!(second["lesson_created"], false, "{second}");
    assert_eq!(second["lesson_state"], "INSTINCT", "{second}");
    let lessons = brain.parsed_lessons();
    let content = in_category(&lessons, "CONTENT");
    assert_eq!(
        content.len(),
        1,
        "a duplicate lesson: {}",
        brain.lessons_text()
    );
    assert!(
        content[0].confidence > confidence,
        "{} then {}",
        confidence,
        content[0].confidence
    );
    assert_eq!(content[0].corrections.len(), 2);
    assert_eq!(content[0].fire_count, 1);
}

#[test]
fn a_rules_text_is_never_rewritten() {
    let brain = Brain::with_team_lessons();
    let longer = "Always use pathlib for file handling in every module of this project";
    let answer = brain.ok(
        "/correct",
        json!({
            "old_string": "import os\npath = os.path.join(a, b)",
            "new_string": format!("Rule: {longer}\npath = Path(a) / b"),
            "file_path": "src/app.py",
        }),
    );
    assert_eq!(answer["category"], "CODE", "{answer}");
    assert_eq!(answer["lesson_created"], false, "{answer}");
    assert_eq!(answer["lesson_state"], "RULE", "{answer}");
    let lessons = brain.parsed_lessons();
    let code = in_category(&lessons, "CODE");
    assert_eq!(code.len(), 1, "{}", brain.lessons_text());
    assert_eq!(code[0].description, "Always use pathlib for file handling");
    assert_eq!(code[0].state, State::Rule);
    assert!(!brain.lessons_text().contains(longer));
    // The confident RULE did not prevent the correction: said, never healed.
    let data: String = brain
        .system_db()
        .query_row(
            "SELECT data_json FROM events WHERE type = 'RULE_FAILURE'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(
        data["failed_rule_description"], "Always use pathlib for file handling",
        "{data}"
    );
}

#[test]
fn the_correction_event_lands_in_the_log_and_the_outbox_and_recall_finds_it() {
    let brain = Brain::with_team_lessons();
    let answer = brain.ok(
        "/correct",
        json!({
            "old_string": "Use the legacy flux capacitor.",
            "new_string": "Rule: Prefer the quantum flux capacitor everywhere",
            "file_path": "docs/design.md",
            "session_id": "s9",
            "event_id": "learning-1",
        }),
    );
    assert_eq!(answer["event_id"], "learning-1", "{answer}");
    assert_eq!(answer["queued"], true, "{answer}");

    let (data, session): (String, i64) = brain
        .system_db()
        .query_row(
            "SELECT data_json, session FROM events WHERE type = 'CORRECTION'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["category"], "CONTENT", "{data}");
    assert_eq!(data["severity"], answer["severity"], "{data}");
    assert_eq!(data["summary"], answer["instruction_extracted"], "{data}");
    assert!(data["edit_distance"].as_f64().unwrap() > 0.0, "{data}");
    assert!(session > 0);
    assert_eq!(
        brain.count("SELECT COUNT(*) FROM events WHERE type = 'LESSON_CHANGE'"),
        1
    );
    assert_eq!(
        brain.count("SELECT COUNT(*) FROM sync_queue WHERE event_id = 'learning-1'"),
        1
    );
    let types = jsonl_types(&brain.dir);
    assert_eq!(types, ["CORRECTION", "LESSON_CHANGE"]);

    let lessons = brain.parsed_lessons();
    let row: i64 = brain.count("SELECT id FROM events WHERE type = 'CORRECTION'");
    assert_eq!(
        in_category(&lessons, "CONTENT")[0].corrections,
        [row.to_string()]
    );

    let recalled = brain.ok(
        "/brain-recall",
        json!({"content_preview": "quantum capacitor"}),
    );
    let context = recalled["context"].as_str().unwrap();
    assert!(context.contains("quantum flux capacitor"), "{recalled}");
    assert!(context.contains("'source': 'corrections'"), "{recalled}");
}

#[test]
fn bad_input_is_a_json_400_and_writes_nothing() {
    let brain = Brain::with_team_lessons();
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "a missing field",
            json!({"old_string": "a"}).to_string().into_bytes(),
        ),
        ("malformed", b"{\"old_string\": \"a\",".to_vec()),
        (
            "a number for a text",
            json!({"old_string": 5, "new_string": "b"})
                .to_string()
                .into_bytes(),
        ),
        (
            "bad event id",
            json!({"old_string": "a", "new_string": "b", "event_id": "not valid!"})
                .to_string()
                .into_bytes(),
        ),
    ];
    for (name, body) in cases {
        let response = post_bytes(brain.daemon.addr(), "/correct", &[], &body);
        assert_eq!(response.status, 400, "{name}: {response:?}");
        assert!(
            response.json()["error"].is_string(),
            "{name}: {:?}",
            response.json()
        );
    }
    assert_eq!(brain.lessons_text(), LESSONS);
    assert_eq!(brain.count("SELECT COUNT(*) FROM events"), 0);
    assert_eq!(brain.count("SELECT COUNT(*) FROM sync_queue"), 0);
    assert!(jsonl_types(&brain.dir).is_empty());
}

/// An edit too large to learn from (more than 100,000 characters, 0.6.0's limit) is still
/// queued for the cloud, but the brain learns nothing and logs nothing.
#[test]
fn an_edit_too_large_to_learn_is_queued_but_not_learned() {
    let brain = Brain::with_team_lessons();
    let answer = brain.ok(
        "/correct",
        json!({
            "old_string": "a".repeat(100_001),
            "new_string": "Rule: Never paste whole files",
            "event_id": "too-large",
        }),
    );
    assert_eq!(answer["captured"], true, "{answer}");
    assert_eq!(answer["lesson_created"], false, "{answer}");
    assert_eq!(answer["lesson_state"], Value::Null, "{answer}");
    assert_eq!(answer["severity"], "discarded", "{answer}");
    assert_eq!(brain.lessons_text(), LESSONS);
    assert_eq!(brain.count("SELECT COUNT(*) FROM events"), 0);
    assert_eq!(
        brain.count("SELECT COUNT(*) FROM sync_queue WHERE event_id = 'too-large'"),
        1
    );
}

#[test]
fn a_correction_after_another_writer_changed_the_file_learns_on_the_changed_file() {
    let brain = Brain::with_team_lessons();
    let body = json!({
        "old_string": "Hey team, maybe we could possibly ship it friday.",
        "new_string": "Rule: Send release notes every Friday morning\nShip it Friday.",
        "file_path": "notes/release.md",
        "session_id": "s1",
    });
    assert_eq!(brain.ok("/correct", body)["lesson_created"], true);

    // The Python SDK rewrites lessons.md in place (same inode) between two corrections: here it
    // adds a lesson and a line of its own.
    let path = brain.dir.join("lessons.md");
    let theirs = format!(
        "{}\nWritten by the SDK.\n\n[2026-04-05] [PATTERN:0.70] TONE: Keep replies short\n",
        brain.lessons_text()
    );
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap()
        .write_all(theirs.as_bytes())
        .unwrap();

    // Another edit teaching the same rule (the same edit again would be a duplicate observation).
    let second = brain.ok(
        "/correct",
        json!({
            "old_string": "Hi all, we might perhaps release on friday.",
            "new_string": "Rule: Send release notes every Friday morning\nRelease Friday.",
            "file_path": "notes/release.md",
            "session_id": "s1",
        }),
    );
    assert_eq!(second["lesson_created"], false, "{second}");
    let text = brain.lessons_text();
    assert!(text.contains("\nWritten by the SDK.\n"), "{text}");
    let lessons = brain.parsed_lessons();
    assert_eq!(in_category(&lessons, "TONE").len(), 1, "{text}");
    let content = in_category(&lessons, "CONTENT");
    assert_eq!(content.len(), 1, "{text}");
    assert_eq!(content[0].corrections.len(), 2, "{text}");
}

/// A correction whose CORRECTION event is committed but whose lesson cannot be saved is
/// captured, not failed: a 5xx would make the client send it again. The answer says nothing was
/// learned, and the next correction learns once the file can be written.
#[test]
fn a_correction_that_cannot_be_learned_is_still_captured() {
    let brain = Brain::with_team_lessons();
    let path = brain.dir.join("lessons.md");
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let body = |n: u32| {
        json!({
            "old_string": format!("Hey team, maybe we could possibly ship release {n} friday."),
            "new_string": format!("Rule: Send release notes every Friday morning\nShip release {n} Friday."),
            "file_path": "notes/release.md",
            "session_id": "s1",
        })
    };
    let first = brain.ok("/correct", body(1));
    assert_eq!(first["captured"], true, "{first}");
    assert_eq!(first["queued"], true, "{first}");
    assert_eq!(first["lesson_created"], false, "{first}");
    assert_eq!(first["lesson_state"], Value::Null, "{first}");
    assert_eq!(
        brain.count("SELECT COUNT(*) FROM events WHERE type = 'CORRECTION'"),
        1
    );
    assert_eq!(
        brain.count("SELECT COUNT(*) FROM events WHERE type = 'LESSON_CHANGE'"),
        0
    );
    assert!(
        brain
            .daemon
            .stderr()
            .contains("correction recorded but not learned"),
        "{}",
        brain.daemon.stderr()
    );

    std::fs::remove_dir(&path).unwrap();
    std::fs::write(&path, LESSONS).unwrap();
    let second = brain.ok("/correct", body(2));
    assert_eq!(second["lesson_created"], true, "{second}");
    let content = in_category(&brain.parsed_lessons(), "CONTENT").len();
    assert_eq!(content, 1, "{}", brain.lessons_text());
}
