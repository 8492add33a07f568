//! `/maintain` over HTTP, as the plugin's Stop hook calls it: the manifest written from the
//! brain's real lessons and events, the recall index rebuilt from the CORRECTION events, the
//! patterns task an honest no-op, and bad input refused with nothing changed.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support::brain::Brain;
use crate::support::daemon::post_bytes;

const LESSONS: &str = "# Team brain: lessons
[2026-04-20] [RULE:0.95] CODE: Never use print for logging
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0

[2026-04-20] [PATTERN:0.70] TONE: Skip the small talk
  Fire count: 1 | Sessions since fire: 0 | Misfires: 0

[2026-04-21] [INSTINCT:0.40] DOCS: Link the runbook in incident summaries
  Fire count: 0 | Sessions since fire: 0 | Misfires: 0
";

impl Brain {
    fn with_maintain_lessons() -> Brain {
        Brain::serve(&[("lessons.md", LESSONS)])
    }

    fn correct(&self, old: &str, new: &str, file_path: &str) {
        self.ok(
            "/correct",
            json!({"old_string": old, "new_string": new, "file_path": file_path,
                "session_id": "s1"}),
        );
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join("brain.manifest.json")
    }

    fn recalled(&self, preview: &str) -> String {
        let answer = self.ok("/brain-recall", json!({"content_preview": preview}));
        answer["context"].as_str().unwrap().to_owned()
    }

    fn database(&self) -> Connection {
        Connection::open(self.dir.join(gradata::store::DATABASE_FILE)).unwrap()
    }
}

fn index_rows(conn: &Connection) -> Vec<(i64, String, String)> {
    let mut statement = conn
        .prepare("SELECT id, text, embed_date FROM brain_fts_content ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// States counted from the headers of `lessons.md` as the test reads them.
fn states_in(lessons: &Path) -> Vec<(String, u64)> {
    let text = std::fs::read_to_string(lessons).unwrap();
    let mut counts: Vec<(String, u64)> = ["INSTINCT", "PATTERN", "RULE"]
        .iter()
        .map(|state| {
            let tag = format!("] [{state}:");
            let n = text.lines().filter(|line| line.contains(&tag)).count() as u64;
            ((*state).to_owned(), n)
        })
        .collect();
    counts.sort();
    counts
}

#[test]
fn the_manifest_describes_the_brain_after_real_corrections() {
    let brain = Brain::with_maintain_lessons();
    brain.correct(
        "import os\nos.path.join(a, b)",
        "from pathlib import Path\nPath(a) / b",
        "src/app.py",
    );
    brain.correct(
        "Hello there! I hope you are well.",
        "Status: done.",
        "docs/note.md",
    );
    assert!(!brain.manifest_path().exists());

    // What the Stop hook sends after every turn.
    let answer = brain.ok("/maintain", json!({"tasks": ["manifest", "patterns"]}));
    assert_eq!(answer["completed"], json!(["manifest", "patterns"]));
    assert_eq!(answer["failed"], json!([]));
    assert!(answer["duration_ms"].is_u64(), "{answer}");
    let keys: Vec<&str> = answer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["completed", "duration_ms", "failed"]);

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(brain.manifest_path()).unwrap()).unwrap();
    let distribution = &manifest["quality"]["lesson_distribution"];
    for (state, count) in states_in(&brain.dir.join("lessons.md")) {
        assert_eq!(distribution[&state], count, "{state}: {distribution}");
    }
    assert_eq!(
        manifest["quality"]["lessons_active"],
        distribution["INSTINCT"].as_u64().unwrap() + distribution["PATTERN"].as_u64().unwrap()
    );
    assert_eq!(
        manifest["quality"]["lessons_graduated"],
        distribution["RULE"]
    );

    let conn = brain.database();
    let events: u64 = conn
        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
        .unwrap();
    let corrections: u64 = conn
        .query_row(
            "SELECT count(*) FROM events WHERE type = 'CORRECTION'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(corrections, 2);
    assert_eq!(manifest["database"]["total_events"], events);
    assert_eq!(manifest["database"]["events_by_type"]["CORRECTION"], 2);
    assert_eq!(manifest["quality"]["corrections_total"], 2);
    assert_eq!(manifest["proof"]["evidence"]["correction_count"], 2);
    assert_eq!(manifest["rag"]["chunks_indexed"], index_rows(&conn).len());
    let tables = manifest["database"]["tables"].as_array().unwrap();
    assert!(tables.contains(&json!("events")), "{tables:?}");
    assert!(tables.contains(&json!("brain_fts_content")), "{tables:?}");
    let categories = &manifest["tag_taxonomy"]["category"]["values"];
    assert!(
        categories.as_array().unwrap().contains(&json!("CODE")),
        "{categories}"
    );

    // The file is replaced, never left half-written: no temporary file stays behind.
    let leftovers: Vec<String> = std::fs::read_dir(&brain.dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("manifest") && name != "brain.manifest.json")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // An empty body runs the default task, the manifest.
    std::fs::remove_file(brain.manifest_path()).unwrap();
    let response = post_bytes(brain.daemon.addr(), "/maintain", &[], b"");
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["completed"], json!(["manifest"]));
    assert!(brain.manifest_path().exists());
}

#[test]
fn fts_rebuild_restores_what_recall_lost_and_is_idempotent() {
    let brain = Brain::with_maintain_lessons();
    brain.correct(
        "x = os.path.join(a, b)",
        "x = pathlib.Path(a) / b",
        "src/app.py",
    );
    brain.correct("Dear team, kindly note", "Team: note", "docs/mail.md");
    assert!(brain.recalled("pathlib").contains("pathlib"));
    let before = index_rows(&brain.database());
    assert_eq!(before.len(), 2, "{before:?}");

    // Lose every row.
    brain
        .database()
        .execute_batch(
            "DELETE FROM brain_fts_content; INSERT INTO brain_fts(brain_fts) VALUES ('rebuild');",
        )
        .unwrap();
    assert_eq!(brain.recalled("pathlib"), "");

    let answer = brain.ok("/maintain", json!({"tasks": ["fts_rebuild"]}));
    assert_eq!(answer["completed"], json!(["fts_rebuild"]), "{answer}");
    let rebuilt = index_rows(&brain.database());
    let texts = |rows: &[(i64, String, String)]| -> Vec<(String, String)> {
        rows.iter()
            .map(|(_, text, date)| (text.clone(), date.clone()))
            .collect()
    };
    assert_eq!(
        texts(&rebuilt),
        texts(&before),
        "the rows /correct wrote, again"
    );
    assert!(brain.recalled("pathlib").contains("pathlib"));

    // Twice: the same rows with the same ids.
    brain.ok("/maintain", json!({"tasks": ["fts_rebuild"]}));
    assert_eq!(index_rows(&brain.database()), rebuilt);

    // A missing index is created.
    brain
        .database()
        .execute_batch("DROP TABLE brain_fts; DROP TABLE brain_fts_content;")
        .unwrap();
    brain.ok("/maintain", json!({"tasks": ["fts_rebuild"]}));
    assert_eq!(texts(&index_rows(&brain.database())), texts(&before));
    assert!(brain.recalled("pathlib").contains("pathlib"));
}

#[test]
fn tasks_run_in_order_and_unknown_ones_fail() {
    let brain = Brain::with_maintain_lessons();
    let answer = brain.ok(
        "/maintain",
        json!({"tasks": ["patterns", "bogus", "fts_rebuild", "manifest", "patterns"]}),
    );
    assert_eq!(
        answer["completed"],
        json!(["patterns", "fts_rebuild", "manifest", "patterns"])
    );
    assert_eq!(answer["failed"], json!(["bogus"]));
    // `patterns` writes nothing: the brain holds only what the other tasks wrote.
    let mut names: Vec<String> = std::fs::read_dir(&brain.dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.to_lowercase().contains("skill") || name.contains("pattern"))
        .collect();
    names.sort();
    assert!(names.is_empty(), "{names:?}");

    let answer = brain.ok("/maintain", json!({"tasks": []}));
    assert_eq!(answer["completed"], json!([]));
    assert_eq!(answer["failed"], json!([]));
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let brain = Brain::with_maintain_lessons();
    let too_many = vec!["manifest"; gradata::brain::maintain::MAX_TASKS + 1];
    let bodies: Vec<Vec<u8>> = vec![
        b"[\"manifest\"]".to_vec(),
        b"\"manifest\"".to_vec(),
        b"{\"tasks\": ".to_vec(),
        json!({"tasks": "manifest"}).to_string().into_bytes(),
        json!({"tasks": ["manifest", 7]}).to_string().into_bytes(),
        json!({"tasks": {"manifest": true}})
            .to_string()
            .into_bytes(),
        json!({"tasks": too_many}).to_string().into_bytes(),
    ];
    for body in bodies {
        let response = post_bytes(brain.daemon.addr(), "/maintain", &[], &body);
        let shown = String::from_utf8_lossy(&body);
        assert_eq!(response.status, 400, "{shown}: {}", response.body);
        assert!(
            response.json()["error"].is_string(),
            "{shown}: {}",
            response.body
        );
        assert!(
            !brain.manifest_path().exists(),
            "{shown} wrote the manifest"
        );
    }
    assert_eq!(
        std::fs::read_to_string(brain.dir.join("lessons.md")).unwrap(),
        LESSONS
    );
    let (status, _) = brain.post("/maintain", json!({"tasks": ["manifest"]}));
    assert_eq!(status, 200);
    assert!(brain.manifest_path().exists());
}

#[test]
fn the_tasks_wait_for_the_lessons_lock_and_a_timeout_changes_nothing() {
    use nix::fcntl::{Flock, FlockArg};

    let brain = Brain::with_maintain_lessons();
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(brain.dir.join(".lessons.lock"))
        .unwrap();
    // Another writer of `lessons.md` (the Python SDK, say) holds the lock throughout.
    let held = Flock::lock(lock, FlockArg::LockExclusiveNonblock).unwrap();
    let (status, answer) = brain.post("/maintain", json!({"tasks": ["manifest"]}));
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["code"], "lessons_locked", "{answer}");
    assert!(!brain.manifest_path().exists());

    drop(held);
    brain.ok("/maintain", json!({"tasks": ["manifest"]}));
    assert!(brain.manifest_path().exists());
}
