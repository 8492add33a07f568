//! `/end-session` over HTTP, as the plugin calls it: the graduation sweep once per session id,
//! one tier step per session, nothing in `lessons.md` lost, bad input refused.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support;
use crate::support::brain::Brain;
use crate::support::daemon::{Spec, post_bytes, post_json};

/// A salt of 64 `a`s: PATTERN needs 0.5746… and RULE 0.8733… (brain spec §8.4).
const SALT: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A brain whose INSTINCT qualifies for PATTERN and, one session later, for RULE; and one that
/// has never fired, which only ages.
const LESSONS: &str = "# Team brain: lessons
[2026-04-20] [INSTINCT:0.95] TONE: Never open client emails with small talk
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0

[2026-04-21] [INSTINCT:0.40] DOCS: Link the runbook in incident summaries
  Fire count: 0 | Sessions since fire: 0 | Misfires: 0
";

impl Brain {
    /// A brain of `lessons` with a fixed salt, so that graduation thresholds are known.
    fn salted(lessons: &str) -> Brain {
        Brain::serve(&[("lessons.md", lessons), (".brain_salt", SALT)])
    }

    fn restart(&mut self) {
        self.daemon.sigterm();
        assert_eq!(self.daemon.exit_code(Duration::from_secs(10)), 0);
        self.daemon = Spec::new(&self.dir).spawn();
        self.daemon.expect_ready();
    }

    fn lessons(&self) -> String {
        std::fs::read_to_string(self.dir.join("lessons.md")).unwrap()
    }

    /// One assistant turn of Claude Code with the plugin: the prompt hook injects the rules, the
    /// feedback hook scans the user's message, and the Stop hook ends the "session".
    fn turn(&self, session_id: &str, prompt: &str) -> Value {
        self.ok(
            "/apply-rules",
            json!({"prompt": prompt, "session_id": session_id}),
        );
        self.ok(
            "/detect",
            json!({"user_message": prompt, "session_id": session_id}),
        );
        self.ok(
            "/end-session",
            json!({"session_id": session_id, "session_type": "full"}),
        )
    }

    /// The tier `/apply-rules` serves the lesson of `category` at, if it serves it.
    fn served_tier(&self, category: &str) -> Option<String> {
        let answer = self.ok("/apply-rules", json!({"prompt": "write an email"}));
        answer["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["category"] == category)
            .map(|rule| rule["tier"].as_str().unwrap().to_owned())
    }
}

/// The `events` rows of `types`: (session, type, data).
fn events(dir: &Path, kind: &str) -> Vec<(i64, Value)> {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let mut statement = conn
        .prepare("SELECT session, data_json FROM events WHERE type = ?1 ORDER BY id")
        .unwrap();
    statement
        .query_map([kind], |row| {
            let data: String = row.get(1)?;
            Ok((row.get(0)?, serde_json::from_str(&data).unwrap()))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The header line of the lesson of `category`.
fn header<'a>(lessons: &'a str, category: &str) -> &'a str {
    lessons
        .lines()
        .find(|line| line.contains(&format!("] {category}: ")))
        .unwrap_or_else(|| panic!("no {category} lesson in:\n{lessons}"))
}

/// The confidence in the header of the lesson of `category`.
fn confidence(lessons: &str, category: &str) -> f64 {
    let line = header(lessons, category);
    let start = line.find(':').unwrap() + 1;
    let end = line[start..].find(']').unwrap() + start;
    line[start..end].parse().unwrap()
}

fn idle(lessons: &str, category: &str) -> String {
    let mut lines = lessons
        .lines()
        .skip_while(|line| !line.contains(&format!("] {category}: ")));
    lines.next();
    lines
        .find(|line| line.contains("Sessions since fire:"))
        .unwrap()
        .split('|')
        .find(|part| part.contains("Sessions since fire"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Claude Code runs the Stop hook after every assistant turn: a conversation of six turns posts
/// `/end-session` six times with one session id. The lessons age and graduate once, and a restart
/// does not forget that the session was swept.
#[test]
fn end_session_after_every_turn_sweeps_the_session_once() {
    let mut brain = Brain::salted(LESSONS);
    let prompts = [
        "draft a reply to the client about the delay",
        "make it shorter",
        "no, don't open with small talk",
        "now the incident summary for yesterday",
        "add the timeline",
        "thanks, that's it",
    ];
    let answers: Vec<Value> = prompts.iter().map(|p| brain.turn("conv-1", p)).collect();
    assert_eq!(answers[0]["lessons_graduated"], 1, "{}", answers[0]);
    for answer in &answers[1..] {
        assert_eq!(answer["lessons_graduated"], 0, "{answer}");
    }
    for answer in &answers {
        assert_eq!(answer["meta_rules_synthesized"], 0);
        assert_eq!(answer["cross_project_candidates"], json!([]));
        assert_eq!(answer["corrections_captured"], 0);
        assert_eq!(answer["instructions_extracted"], 0);
        assert_eq!(answer["convergence"]["trend"], "insufficient_data");
    }
    let lessons = brain.lessons();
    // One step (INSTINCT -> PATTERN), though 0.95 also clears the RULE threshold: a sweep per
    // turn would have made it a RULE on the second call.
    assert!(
        header(&lessons, "TONE").contains("[PATTERN:0.95]"),
        "{lessons}"
    );
    // Aged once, not six times.
    assert_eq!(
        idle(&lessons, "DOCS"),
        "Sessions since fire: 1",
        "{lessons}"
    );
    let ends = events(&brain.dir, "SESSION_END");
    assert_eq!(ends.len(), 1, "{ends:?}");
    let (number, data) = &ends[0];
    assert_eq!(data["session_id"], "conv-1");
    assert_eq!(data["session"], *number);
    assert_eq!(data["promotions"], 1);
    assert_eq!(data["graduated_rules"], 0);
    assert_eq!(data["total_lessons"], 2);
    let changes = events(&brain.dir, "LESSON_CHANGE");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].1["action"], "promoted");
    assert_eq!(changes[0].1["from_state"], "INSTINCT");
    assert_eq!(changes[0].1["to_state"], "PATTERN");

    // The Stop hook of the same conversation after a restart of the service.
    brain.restart();
    let answer = brain.turn("conv-1", "one more thing");
    assert_eq!(answer["lessons_graduated"], 0, "{answer}");
    assert_eq!(brain.lessons(), lessons, "a swept session was swept again");
    assert_eq!(events(&brain.dir, "SESSION_END").len(), 1);
}

/// A qualifying INSTINCT graduates one step per session: PATTERN after the first, RULE after the
/// second, and `/apply-rules` serves it at each tier in turn.
#[test]
fn a_lesson_graduates_one_step_per_session_and_is_served_at_its_tier() {
    let brain = Brain::salted(LESSONS);
    assert_eq!(brain.served_tier("TONE"), None, "an INSTINCT is not served");
    let first = brain.ok("/end-session", json!({"session_id": "a"}));
    assert_eq!(first["lessons_graduated"], 1, "{first}");
    assert!(header(&brain.lessons(), "TONE").contains("[PATTERN:"));
    assert_eq!(brain.served_tier("TONE").as_deref(), Some("PATTERN"));
    let second = brain.ok("/end-session", json!({"session_id": "b"}));
    assert_eq!(second["lessons_graduated"], 1, "{second}");
    assert!(header(&brain.lessons(), "TONE").contains("[RULE:"));
    assert_eq!(brain.served_tier("TONE").as_deref(), Some("RULE"));
    let ends = events(&brain.dir, "SESSION_END");
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[1].1["graduated_rules"], 1);
    assert_ne!(ends[0].0, ends[1].0, "two sessions, two numbers");
    // A session without an id cannot be told from the next turn's call: it sweeps nothing.
    let before = brain.lessons();
    let anonymous = brain.ok("/end-session", json!({}));
    assert_eq!(anonymous["lessons_graduated"], 0);
    assert_eq!(brain.lessons(), before);
}

/// Headings, prose and unknown lines stay where they were; a lesson the sweep kills, and one
/// that was already KILLED, move to the archive instead of vanishing.
#[test]
fn the_sweep_keeps_unknown_lines_and_archives_killed_lessons() {
    let lessons = "# My lessons
Prose a person wrote.

[2026-04-20] [PATTERN:0.70] CODE: Prefer pathlib over os.path for file handling
  Fire count: 4 | Sessions since fire: 0 | Misfires: 0
  Note: keep this line

## Old
[2026-04-01] [UNTESTABLE:0.50] DOCS: Write the changelog in French
  Fire count: 0 | Sessions since fire: 12 | Misfires: 0
  Kill reason: idle

[2026-04-02] [KILLED:0.10] STYLE: Use exclamation marks for emphasis
";
    let brain = Brain::salted(lessons);
    brain.ok("/end-session", json!({"session_id": "s"}));
    let after = brain.lessons();
    for kept in [
        "# My lessons",
        "Prose a person wrote.",
        "  Note: keep this line",
        "## Old",
    ] {
        assert!(
            after.lines().any(|line| line == kept),
            "{kept} lost:\n{after}"
        );
    }
    assert!(header(&after, "CODE").contains("[PATTERN:0.70]"), "{after}");
    assert!(
        !after.contains("French") && !after.contains("exclamation"),
        "{after}"
    );
    let archive = std::fs::read_to_string(brain.dir.join("lessons-archive.md")).unwrap();
    assert!(
        archive.contains("DOCS: Write the changelog in French"),
        "{archive}"
    );
    assert!(
        archive.contains("STYLE: Use exclamation marks"),
        "{archive}"
    );
    let changes = events(&brain.dir, "LESSON_CHANGE");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].1["action"], "killed");
    assert_eq!(changes[0].1["from_state"], "UNTESTABLE");
}

/// Bad input gets a JSON 400 and changes nothing: no sweep, no event.
#[test]
fn bad_input_to_end_session_gets_a_json_400_and_changes_nothing() {
    let brain = Brain::salted(LESSONS);
    for body in [
        json!({"session_id": 5}),
        json!({"session_id": "s", "session_type": ["full"]}),
        json!(["s"]),
    ] {
        let (status, answer) = brain.post("/end-session", body.clone());
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    let response = post_bytes(brain.daemon.addr(), "/end-session", &[], b"{not json");
    assert_eq!(response.status, 400);
    assert!(response.json()["error"].is_string());
    assert_eq!(brain.lessons(), LESSONS);
    assert!(events(&brain.dir, "SESSION_END").is_empty());
}

/// The session's evidence comes from the brain's event log: its CORRECTION events (as `/correct`
/// records them) are counted, their categories decide which lessons survived the session, and
/// the convergence covers them; the lessons of a corrected category get no survival bonus.
#[test]
fn the_session_s_corrections_are_counted_and_reward_the_lessons_that_held() {
    let brain = Brain::salted(LESSONS);
    // A new session in an empty log is session 1.
    brain.ok(
        "/detect",
        json!({"user_message": "hello", "session_id": "c"}),
    );
    let conn = Connection::open(brain.dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let rows = [
        (
            1,
            "CORRECTION",
            json!({"category": "TONE", "severity": "major", "edit_distance": 0.4}),
        ),
        (
            1,
            "CORRECTION",
            json!({"category": "tone", "severity": "minor", "edit_distance": 0.2}),
        ),
        (
            1,
            "LESSON_CHANGE",
            json!({"action": "created", "lesson_category": "TONE"}),
        ),
        (
            7,
            "CORRECTION",
            json!({"category": "DOCS", "severity": "major"}),
        ),
    ];
    for (session, kind, data) in rows {
        conn.execute(
            "INSERT INTO events (ts, session, type, source, data_json, tags_json) \
             VALUES ('2026-12-07T10:00:00+00:00', ?1, ?2, 'brain.correct', ?3, '[]')",
            rusqlite::params![session, kind, data.to_string()],
        )
        .unwrap();
    }
    let answer = brain.ok("/end-session", json!({"session_id": "c"}));
    assert_eq!(answer["corrections_captured"], 2, "{answer}");
    assert_eq!(answer["instructions_extracted"], 1, "{answer}");
    assert_eq!(answer["convergence"]["total_corrections"], 3, "{answer}");
    assert_eq!(answer["convergence"]["sessions"], json!([1, 7]), "{answer}");
    let lessons = brain.lessons();
    // TONE was corrected in the session: no bonus. DOCS held while TONE was corrected: bonus.
    assert_eq!(confidence(&lessons, "TONE"), 0.95, "{lessons}");
    assert!(confidence(&lessons, "DOCS") > 0.40, "{lessons}");
    assert_eq!(events(&brain.dir, "SESSION_END")[0].0, 1);
}

/// Stop hooks of one conversation that overlap (a slow turn, a retry) still sweep it once.
#[test]
fn concurrent_calls_for_one_session_sweep_it_once() {
    let brain = Brain::salted(LESSONS);
    let addr = brain.daemon.addr();
    let graduated: u64 = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(move || {
                    let response = post_json(addr, "/end-session", &json!({"session_id": "x"}));
                    assert_eq!(response.status, 200);
                    response.json()["lessons_graduated"].as_u64().unwrap()
                })
            })
            .collect();
        calls.into_iter().map(|call| call.join().unwrap()).sum()
    });
    assert_eq!(graduated, 1);
    assert_eq!(events(&brain.dir, "SESSION_END").len(), 1);
    let lessons = brain.lessons();
    assert!(header(&lessons, "TONE").contains("[PATTERN:"), "{lessons}");
    assert_eq!(
        idle(&lessons, "DOCS"),
        "Sessions since fire: 1",
        "{lessons}"
    );
}

/// Lessons read from outside the brain (`$BRAIN_LESSONS_PATH`) are served but never written:
/// `/end-session` refuses with an error naming the variable, and the file stays as it was (the
/// Python daemon rewrote it where it found it).
#[test]
fn lessons_outside_the_brain_are_never_written() {
    let (_guard, dir) = support::temp_dir();
    let (_outside_guard, outside) = support::temp_dir();
    let lessons = outside.join("lessons.md");
    std::fs::write(&lessons, LESSONS).unwrap();
    let daemon = Spec::new(&dir).env("BRAIN_LESSONS_PATH", &lessons).spawn();
    daemon.expect_ready();
    let served = post_json(daemon.addr(), "/apply-rules", &json!({}));
    assert_eq!(served.status, 200);
    // A correction is captured (its event is the brain's) but teaches the outside file nothing.
    let corrected = post_json(
        daemon.addr(),
        "/correct",
        &json!({
            "old_string": "We might maybe ship it on Friday.",
            "new_string": "We ship it on Friday.",
            "file_path": "notes/plan.md",
            "session_id": "s1",
        }),
    );
    assert_eq!(corrected.status, 200, "{:?}", corrected.json());
    let answer = corrected.json();
    assert_eq!(answer["captured"], true, "{answer}");
    assert_eq!(answer["lesson_created"], false, "{answer}");
    assert_eq!(answer["lesson_state"], Value::Null, "{answer}");
    let recorded: i64 = Connection::open(dir.join("system.db"))
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM events WHERE type = 'CORRECTION'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(recorded, 1);
    let response = post_json(daemon.addr(), "/end-session", &json!({"session_id": "s1"}));
    assert_eq!(response.status, 500, "{:?}", response.json());
    let error = response.json()["error"].as_str().unwrap().to_owned();
    assert!(error.contains("BRAIN_LESSONS_PATH"), "{error}");
    assert_eq!(std::fs::read_to_string(&lessons).unwrap(), LESSONS);
    assert!(!dir.join("lessons.md").exists());
}

/// What a user sees: ten corrections of the same kind over three sessions (each ended by the
/// plugin's Stop hook, twice, as Claude Code calls it after every turn) make a lesson that
/// `/apply-rules` then injects as a RULE; `lessons.md` before and after is printed for the record.
#[test]
fn ten_corrections_over_three_sessions_become_an_injected_rule() {
    let (_guard, dir) = support::temp_dir();
    let before = "# My brain\n";
    std::fs::write(dir.join("lessons.md"), before).unwrap();
    std::fs::write(dir.join(".brain_salt"), SALT).unwrap();
    let daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    let post = |path: &str, body: Value| {
        let response = post_json(daemon.addr(), path, &body);
        assert_eq!(response.status, 200, "{path}: {:?}", response.json());
        response.json()
    };
    let mut n = 0;
    for (session, corrections) in [("s1", 4), ("s2", 3), ("s3", 3)] {
        post(
            "/apply-rules",
            json!({"prompt": "write the release notes", "session_id": session}),
        );
        for _ in 0..corrections {
            n += 1;
            post(
                "/correct",
                json!({
                    "old_string": format!("Release {n} is out!!! Enjoy the new stuff!!!"),
                    "new_string": format!("Rule: Never use exclamation marks in release notes\nRelease {n} is out."),
                    "file_path": "notes/release.md",
                    "session_id": session,
                }),
            );
        }
        for _turn in 0..2 {
            post("/end-session", json!({"session_id": session}));
        }
    }
    let after = std::fs::read_to_string(dir.join("lessons.md")).unwrap();
    println!("lessons.md before:\n{before}\nlessons.md after:\n{after}");
    let applied = post("/apply-rules", json!({"prompt": "", "session_id": "s4"}));
    let rules = applied["rules"].as_array().unwrap();
    assert!(
        rules.iter().any(|rule| rule["tier"] == "RULE"
            && rule["instruction"]
                .as_str()
                .is_some_and(|text| text.to_lowercase().contains("exclamation"))),
        "{applied}\n{after}"
    );
    assert!(after.starts_with("# My brain\n"), "{after}");
}
