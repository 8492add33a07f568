//! Concurrent `POST /correct` calls share their `lessons.md` writes (group commit): every call
//! is answered and learned exactly once, the file parses, and the file is written fewer times
//! than there are corrections.

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use gradata::brain::lessons;
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support;
use crate::support::daemon::{Spec, log_field, post_json};

/// Clients that correct at the same moment, one correction each.
const CLIENTS: usize = 32;

/// The log line each `lessons.md` write of corrections leaves at debug level.
const SAVED: &str = "lessons.md saved";

/// Correction `n`: distinct texts (no two are one observation), over a few categories, so that
/// some create lessons and some reinforce one another's within a write.
fn correction(n: usize, marker: &str) -> Value {
    let (file, rule) = match n % 4 {
        0 => ("src/app.py", "Use pathlib for every file path".to_owned()),
        1 => (
            "notes/release.md",
            "Send release notes every Friday morning".to_owned(),
        ),
        2 => (
            "docs/guide.md",
            format!("Spell out acronym number {n} on first use"),
        ),
        _ => (
            "emails/client.txt",
            "Never open client emails with small talk".to_owned(),
        ),
    };
    json!({
        "old_string": format!("draft {marker} as it was"),
        "new_string": format!("Rule: {rule}\nfinal {marker} as edited"),
        "file_path": file,
        "session_id": format!("session-{}", n % 3),
    })
}

#[test]
fn concurrent_corrections_are_each_learned_once_in_fewer_writes() {
    let (_guard, dir) = support::temp_dir();
    std::fs::write(dir.join("lessons.md"), "# Team brain: lessons\n").unwrap();
    let daemon = Spec::new(&dir)
        .env("GRADATA_LOG", "info,gradata::brain::correct=debug")
        .spawn();
    daemon.expect_ready();
    let addr = daemon.addr();

    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                let marker = format!("groupmark{n:02}q");
                let body = correction(n, &marker);
                start.wait();
                let response = post_json(addr, "/correct", &body);
                (marker, response.status, response.json())
            })
        })
        .collect();
    let mut markers = Vec::new();
    for client in clients {
        let (marker, status, body) = client.join().unwrap();
        assert!((200..300).contains(&status), "{marker}: {status} {body}");
        markers.push(marker);
    }

    // Each correction's CORRECTION event, found by its marker.
    let conn = Connection::open(dir.join("system.db")).unwrap();
    let events: Vec<(i64, String, Value)> = conn
        .prepare("SELECT id, type, data_json FROM events ORDER BY id")
        .unwrap()
        .query_map([], |row| {
            let data: String = row.get(2)?;
            Ok((
                row.get(0)?,
                row.get(1)?,
                serde_json::from_str(&data).unwrap(),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut ids: HashMap<&str, String> = HashMap::new();
    for (id, kind, data) in &events {
        if kind != "CORRECTION" {
            continue;
        }
        let text = data["final_text"].as_str().unwrap();
        let marker = markers
            .iter()
            .find(|marker| text.contains(marker.as_str()))
            .unwrap_or_else(|| panic!("a CORRECTION of no client: {text}"));
        assert!(
            ids.insert(marker, id.to_string()).is_none(),
            "{marker} twice"
        );
    }
    assert_eq!(ids.len(), CLIENTS);

    // lessons.md parses clean and holds every correction id exactly once.
    let text = std::fs::read_to_string(dir.join("lessons.md")).unwrap();
    let parsed = lessons::parse(&text);
    assert!(parsed.problems.is_empty(), "{:?}\n{text}", parsed.problems);
    for (marker, id) in &ids {
        let found = parsed
            .lessons
            .iter()
            .flat_map(|lesson| &lesson.corrections)
            .filter(|&c| c == id)
            .count();
        assert_eq!(
            found, 1,
            "{marker}'s correction {id} in lessons.md:\n{text}"
        );
        // Its LESSON_CHANGE came after its CORRECTION, and only once.
        let changes: Vec<i64> = events
            .iter()
            .filter(|(_, kind, data)| {
                kind == "LESSON_CHANGE" && data["source_correction_id"].as_str() == Some(id)
            })
            .map(|(row, ..)| *row)
            .collect();
        assert_eq!(changes.len(), 1, "{marker}: {changes:?}");
        assert!(changes[0] > id.parse::<i64>().unwrap());
    }

    // Fewer writes than corrections, and every correction in one of them.
    let stderr = daemon.stderr();
    let writes: Vec<usize> = stderr
        .lines()
        .filter(|line| line.contains(SAVED))
        .map(|line| log_field(line, "corrections").unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        writes.iter().sum::<usize>(),
        CLIENTS,
        "{writes:?}\n{stderr}"
    );
    assert!(
        writes.len() < CLIENTS,
        "one write per correction: {writes:?}"
    );
}
