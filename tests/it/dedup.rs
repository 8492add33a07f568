//! Observation dedup over HTTP (brain spec §6.9 step 7): the same correction posted again within
//! the session window is one observation. It is logged as a CORRECTION, but it creates and
//! reinforces nothing: no LESSON_CHANGE, the lesson unchanged, and the answer says so
//! (`lesson_created: false`, `lesson_state: null`).

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support;
use crate::support::daemon::{Spec, post_json};

fn count(conn: &Connection, kind: &str) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM events WHERE type = ?1",
        [kind],
        |row| row.get(0),
    )
    .unwrap()
}

#[test]
fn the_same_correction_twice_in_a_session_teaches_once() {
    let (_guard, dir) = support::temp_dir();
    let daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    let correction = json!({
        "old_string": "Ship whenever.",
        "new_string": "Rule: Send release notes every Friday morning\nShip it.",
        "file_path": "notes/release.md",
        "session_id": "s1",
    });
    let post = |body: &Value| {
        let response = post_json(daemon.addr(), "/correct", body);
        assert_eq!(response.status, 200, "{}", response.json());
        response.json()
    };

    let first = post(&correction);
    assert_eq!(first["lesson_created"], true, "{first}");
    assert_eq!(first["lesson_state"], "INSTINCT", "{first}");
    let lessons_before = std::fs::read_to_string(dir.join("lessons.md")).unwrap();

    // The same edit again, its case and runs of whitespace aside.
    let mut again = correction.clone();
    again["old_string"] = json!("ship   WHENEVER.");
    let second = post(&again);
    assert_eq!(second["captured"], true, "{second}");
    assert_eq!(second["lesson_created"], false, "{second}");
    assert_eq!(second["lesson_state"], Value::Null, "{second}");
    assert_eq!(
        std::fs::read_to_string(dir.join("lessons.md")).unwrap(),
        lessons_before,
        "a duplicate changed lessons.md"
    );

    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    assert_eq!(count(&conn, "CORRECTION"), 2);
    assert_eq!(count(&conn, "LESSON_CHANGE"), 1, "the duplicate reinforced");
    let (seen, last): (i64, i64) = conn
        .query_row(
            "SELECT seen_count, last_session FROM observation_dedup",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(seen, 2);
    assert!(last > 0);

    // A different correction of the same lesson still reinforces it.
    let mut other = correction.clone();
    other["old_string"] = json!("Ship on Mondays.");
    let third = post(&other);
    assert_eq!(third["lesson_created"], false, "{third}");
    assert_eq!(third["lesson_state"], "INSTINCT", "{third}");
    assert_eq!(count(&conn, "LESSON_CHANGE"), 2);
}
