use super::*;
use crate::brain::lessons;
use rusqlite::Connection;

const LESSONS: &str = "# Team brain
[2026-12-01] [RULE:0.95] CODE: Never use print for logging
[2026-12-01] [RULE:0.91] TONE: Be direct
[2026-12-01] [PATTERN:0.70] TONE: Skip filler
[2026-12-02] [INSTINCT:0.40] CODE: Prefer pathlib
[2026-12-02] [INSTINCT:0.35] CONFIG: Keep secrets out of config files
[2026-12-02] [INSTINCT:0.30] DOCS: Link the runbook
[2026-12-03] [UNTESTABLE:0.20] DOCS: Old habit
";

/// A `system.db` with the events: per session, `(type, severity, tags)`.
fn database(events: &[(i64, &str, &str, &[&str])]) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("system.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, \
             session INTEGER, type TEXT NOT NULL, source TEXT, data_json TEXT, tags_json TEXT);
             CREATE TABLE brain_fts_content(id INTEGER PRIMARY KEY AUTOINCREMENT, source, \
             file_type, text, embed_date);
             INSERT INTO brain_fts_content(source, file_type, text, embed_date) \
               VALUES ('corrections', 'correction', 'CODE: x - y', '2026-12-01');",
    )
    .unwrap();
    for (session, kind, severity, tags) in events {
        let data = serde_json::json!({"severity": severity, "category": "CODE",
                "edit_distance": 0.5});
        let tags = serde_json::json!(tags);
        conn.execute(
            "INSERT INTO events(ts, session, type, data_json, tags_json) \
                 VALUES ('2026-12-01T00:00:00+00:00', ?1, ?2, ?3, ?4)",
            (session, kind, data.to_string(), tags.to_string()),
        )
        .unwrap();
    }
    (dir, conn)
}

fn build(dir: &Path, lessons_text: &str, facts: &DatabaseFacts) -> serde_json::Value {
    let lessons = lessons::parse(lessons_text).lessons;
    let manifest = Manifest::build(&Sources {
        brain_dir: dir,
        lessons_path: &dir.join("lessons.md"),
        lessons: &lessons,
        database: facts,
        generated_at: "2026-12-07T10:00:00Z".parse().unwrap(),
    });
    write(dir, &manifest).unwrap();
    serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap()
}

#[test]
fn every_section_reports_the_brain_it_was_built_from() {
    let events: Vec<(i64, &str, &str, &[&str])> = vec![
        (
            1,
            "CORRECTION",
            "minor",
            &["category:CODE", "severity:minor"],
        ),
        (
            1,
            "CORRECTION",
            "major",
            &["category:TONE", "severity:major"],
        ),
        (1, "OUTPUT", "", &["category:CODE"]),
        (1, "OUTPUT", "", &[]),
        (1, "OUTPUT", "", &[]),
        (1, "OUTPUT", "", &[]),
        (2, "CORRECTION", "minor", &["category:CODE", "provenance"]),
        (2, "LESSON_CHANGE", "", &["provenance"]),
    ];
    let (dir, conn) = database(&events);
    std::fs::create_dir(dir.path().join("learnings")).unwrap();
    std::fs::write(dir.path().join("learnings/a.md"), "x").unwrap();
    std::fs::write(dir.path().join("learnings/b.txt"), "x").unwrap();
    let facts = DatabaseFacts::read(&conn).unwrap();
    let manifest = build(dir.path(), LESSONS, &facts);

    let keys: Vec<&str> = manifest
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "schema_version",
        "metadata",
        "quality",
        "memory_composition",
        "database",
        "rag",
        "behavioral_contract",
        "tag_taxonomy",
        "paths",
        "api_requirements",
        "bootstrap",
        "compatibility",
        "sdk_capabilities",
        "agent_card",
        "proof",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "serde_json sorts keys when read back");

    assert_eq!(manifest["schema_version"], "1.0.0");
    assert_eq!(manifest["metadata"]["sessions_trained"], 2);
    assert_eq!(manifest["metadata"]["generated_at"], "2026-12-07T10:00:00Z");
    assert!(manifest["metadata"]["maturity_phase"].is_null());

    let quality = &manifest["quality"];
    assert_eq!(
        quality["lesson_distribution"],
        serde_json::json!({"INSTINCT": 3, "PATTERN": 1, "RULE": 2, "UNTESTABLE": 1,
                "KILLED": 0, "ARCHIVED": 0})
    );
    assert_eq!(quality["lessons_active"], 4);
    assert_eq!(quality["lessons_graduated"], 2);
    // Three corrections over four outputs in sessions 1 and 2 (both have two events or more).
    assert_eq!(quality["correction_rate"], 0.75);
    assert_eq!(quality["corrections_total"], 3);
    assert_eq!(
        quality["corrections_by_severity"],
        serde_json::json!({"major": 1, "minor": 2})
    );
    assert!(quality["compound_score"].is_null());

    assert_eq!(
        manifest["memory_composition"],
        serde_json::json!({"episodic": 0, "semantic": 0, "procedural": 0, "strategic": 1})
    );
    let database = &manifest["database"];
    assert_eq!(
        database["tables"],
        serde_json::json!(["brain_fts_content", "events", "sqlite_sequence"])
    );
    assert_eq!(database["total_events"], 8);
    assert_eq!(database["event_types"], 3);
    assert_eq!(
        database["events_by_type"],
        serde_json::json!({"CORRECTION": 3, "LESSON_CHANGE": 1, "OUTPUT": 4})
    );
    assert_eq!(manifest["rag"]["chunks_indexed"], 1);
    assert_eq!(manifest["rag"]["active"], false);
    assert!(manifest["behavioral_contract"]["total"].is_null());
    assert_eq!(
        manifest["tag_taxonomy"],
        serde_json::json!({
            "category": {"events": 4, "values": ["CODE", "TONE"], "values_truncated": false},
            "provenance": {"events": 2, "values": [], "values_truncated": false},
            "severity": {"events": 2, "values": ["major", "minor"], "values_truncated": false},
        })
    );
    assert_eq!(manifest["paths"]["lessons"], "$BRAIN_DIR/lessons.md");
    assert_eq!(manifest["api_requirements"], serde_json::json!({}));
    assert_eq!(manifest["bootstrap"], serde_json::json!([]));
    assert_eq!(manifest["sdk_capabilities"]["total"], CAPABILITIES.len());
    assert_eq!(
        manifest["agent_card"]["quality_summary"]["lessons_active"],
        4
    );
    assert_eq!(manifest["agent_card"]["quality_summary"]["sessions"], 2);

    let proof = &manifest["proof"];
    assert_eq!(proof["proven"], false);
    assert_eq!(proof["confidence_level"], "insufficient");
    assert_eq!(proof["evidence"]["correction_count"], 3);
    assert_eq!(proof["evidence"]["sessions"], 2);
    assert_eq!(proof["evidence"]["rule_count"], 2);
    assert_eq!(proof["evidence"]["convergence_trend"], "insufficient_data");
}

#[test]
fn the_file_keeps_the_sections_in_order_and_a_rebuild_differs_only_in_its_date() {
    let (dir, conn) = database(&[(1, "CORRECTION", "minor", &["category:CODE"])]);
    let facts = DatabaseFacts::read(&conn).unwrap();
    let lessons = lessons::parse(LESSONS).lessons;
    let text = |at: &str| {
        let manifest = Manifest::build(&Sources {
            brain_dir: dir.path(),
            lessons_path: &dir.path().join("lessons.md"),
            lessons: &lessons,
            database: &facts,
            generated_at: at.parse().unwrap(),
        });
        write(dir.path(), &manifest).unwrap();
        std::fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap()
    };
    let first = text("2026-12-07T10:00:00Z");
    let second = text("2026-12-07T11:00:00Z");
    assert_eq!(
        first.replace("2026-12-07T10:00:00Z", "T"),
        second.replace("2026-12-07T11:00:00Z", "T")
    );
    let order: Vec<usize> = [
        "\"schema_version\"",
        "\"metadata\"",
        "\"quality\"",
        "\"memory_composition\"",
        "\"database\"",
        "\"rag\"",
        "\"behavioral_contract\"",
        "\"tag_taxonomy\"",
        "\"paths\"",
        "\"api_requirements\"",
        "\"bootstrap\"",
        "\"compatibility\"",
        "\"sdk_capabilities\"",
        "\"agent_card\"",
        "\"proof\"",
    ]
    .iter()
    .map(|key| first.find(&format!("\n  {key}")).unwrap())
    .collect();
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{order:?}");
}

#[test]
fn a_fresh_database_reports_empty_facts() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(dir.path().join("system.db")).unwrap();
    let facts = DatabaseFacts::read(&conn).unwrap();
    assert_eq!(facts.total_events(), 0);
    assert_eq!(facts.max_session, 0);
    let manifest = build(dir.path(), "", &facts);
    assert_eq!(manifest["quality"]["lessons_active"], 0);
    assert!(manifest["quality"]["correction_rate"].is_null());
    assert_eq!(manifest["database"]["tables"], serde_json::json!([]));
}
