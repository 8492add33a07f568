use super::*;
use crate::brain::events::PlatformEnv;
use crate::brain::lessons_write::{self, Document};
use crate::brain::test_support::without_line_numbers;
use std::time::{Duration, SystemTime};

fn lesson(description: &str, corrections: &[&str]) -> Lesson {
    let mut lesson = Lesson::with_defaults("2026-12-01", State::Instinct, "TONE", description);
    lesson.corrections = corrections.iter().map(|&id| id.to_owned()).collect();
    lesson.confidence = 0.3;
    lesson
}

fn killed(mut lesson: Lesson) -> Lesson {
    lesson.state = State::Killed;
    lesson.confidence = 0.0;
    lesson.kill_reason = "zero confidence".to_owned();
    lesson
}

/// A brain whose save of `lessons` was cut after the archive append of `retired`: the
/// archive holds them and `lessons.md` still has them as they were.
fn crashed_between_archive_and_lessons(dir: &Path, lessons: &[Lesson], retired: &[Lesson]) {
    let mut document = Document::parse("# Lessons\n").0;
    for lesson in lessons {
        document.push(lesson.clone());
    }
    std::fs::write(
        dir.join("lessons.md"),
        document.render().unwrap().text.as_bytes(),
    )
    .unwrap();
    archive::append(&dir.join(ARCHIVE_FILE), retired, "2026-12-07T10:00:00Z").unwrap();
}

#[test]
fn a_lesson_in_both_files_leaves_lessons_md_and_is_not_archived_twice() {
    let dir = tempfile::tempdir().unwrap();
    let doomed = lesson("Never open with small talk", &["4", "9"]);
    let kept = lesson("Sign off with the first name", &["5"]);
    // Learned again after its namesake was retired: other correction ids, a lesson of its own.
    let relearned = lesson("Drop the greeting", &["12"]);
    let retired_namesake = killed(lesson("Drop the greeting", &["2"]));
    let mut hand_killed = lesson("Use the passive voice", &[]);
    hand_killed.state = State::Killed;
    crashed_between_archive_and_lessons(
        dir.path(),
        &[doomed.clone(), kept.clone(), relearned.clone()],
        &[killed(doomed.clone()), retired_namesake.clone()],
    );
    // A person marked this one KILLED by hand: the next write archives it.
    let path = dir.path().join("lessons.md");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}\n{}", lessons_write::block(&hand_killed).unwrap()),
    )
    .unwrap();

    let repaired = repair_lessons(dir.path(), &dir.path().join("lessons.md")).unwrap();

    assert_eq!(
        repaired.moves_completed,
        ["TONE: Never open with small talk"]
    );
    let text = std::fs::read_to_string(dir.path().join("lessons.md")).unwrap();
    let parsed = lessons::parse(&text);
    assert_eq!(parsed.problems, []);
    assert_eq!(without_line_numbers(parsed.lessons), [kept, relearned]);
    assert!(text.starts_with("# Lessons\n"), "{text}");
    let archive = std::fs::read_to_string(dir.path().join(ARCHIVE_FILE)).unwrap();
    let archived = without_line_numbers(lessons::parse(&archive).lessons);
    assert_eq!(
        archived,
        [killed(doomed), retired_namesake, hand_killed],
        "the interrupted move is not archived twice; a KILLED line of the file is archived"
    );

    let again = repair_lessons(dir.path(), &dir.path().join("lessons.md")).unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn leftover_temporary_files_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        ".lessons.md.4242.0.tmp",
        "..brain_salt.4242.3.tmp",
        ".events.jsonl.4242.0.tmp",
        "lessons.md",
        "notes.tmp",
    ];
    for name in names {
        std::fs::write(dir.path().join(name), "x").unwrap();
    }
    let repaired = repair_lessons(dir.path(), &dir.path().join("lessons.md")).unwrap();
    let mut removed: Vec<String> = repaired
        .temp_files
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        ["..brain_salt.4242.3.tmp", ".lessons.md.4242.0.tmp"]
    );
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".lessons.lock")
        .collect();
    left.sort();
    assert_eq!(
        left,
        [".events.jsonl.4242.0.tmp", "lessons.md", "notes.tmp"]
    );
}

#[test]
fn a_linked_lessons_file_has_its_leftovers_removed_beside_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("team.md");
    std::fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("lessons.md")).unwrap();
    let leftover = elsewhere.path().join(".team.md.77.1.tmp");
    std::fs::write(&leftover, "half").unwrap();
    let repaired = repair_lessons(dir.path(), &dir.path().join("lessons.md")).unwrap();
    assert_eq!(repaired.temp_files, std::slice::from_ref(&leftover));
    assert!(!leftover.exists());
}

fn event(seconds: u64, kind: &str) -> BrainEvent {
    let mut data = pyjson::Object::new();
    data.insert("note".to_owned(), Value::from("é, 0.1"));
    data.insert("confidence".to_owned(), Value::from(0.65));
    BrainEvent::new(
        SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_000_000_000_000 + seconds),
        3,
        kind,
        "brain.correct",
        data,
        vec!["provenance".to_owned()],
        &PlatformEnv::from_lookup(|_| None),
    )
}

fn stored(event: &BrainEvent) -> StoredRow {
    let row = event.row();
    StoredRow {
        key: EventKey {
            ts: row.ts,
            event_type: row.event_type,
            source: row.source,
        },
        session: Some(row.session),
        data_json: row.data_json,
        tags_json: row.tags_json,
        valid_from: row.valid_from,
        valid_until: row.valid_until,
    }
}

#[test]
fn a_row_without_its_line_gets_the_line_it_would_have_had() {
    let events = [
        event(1, "CORRECTION"),
        event(2, "LESSON_CHANGE"),
        event(3, "CORRECTION"),
        event(4, "LESSON_CHANGE"),
    ];
    // The appends of the second and fourth events were cut by the crash.
    let text = format!("{}{}", events[0].jsonl_line(), events[2].jsonl_line());
    let tail = Tail::of(&text, false);
    assert_eq!(tail.window_start.as_deref(), Some(events[0].ts.as_str()));
    assert!(!tail.ends_without_newline);
    let rows: Vec<StoredRow> = events.iter().map(stored).collect();
    let (lines, unrestorable) = missing_lines(&tail.seen, &rows);
    assert_eq!(unrestorable, 0);
    assert_eq!(lines, [events[1].jsonl_line(), events[3].jsonl_line()]);

    let whole: String = events.iter().map(BrainEvent::jsonl_line).collect();
    let (none, _) = missing_lines(&Tail::of(&whole, false).seen, &rows);
    assert_eq!(none, Vec::<String>::new());
}

#[test]
fn two_events_of_one_instant_are_counted_not_merged() {
    let twin = event(7, "CORRECTION");
    let rows = [stored(&twin), stored(&twin)];
    let tail = Tail::of(&twin.jsonl_line(), false);
    let (lines, _) = missing_lines(&tail.seen, &rows);
    assert_eq!(lines, [twin.jsonl_line()]);
}

#[test]
fn a_cut_tail_skips_its_partial_first_line_and_a_torn_last_line_is_closed() {
    let (a, b) = (event(1, "CORRECTION"), event(2, "CORRECTION"));
    let line_a = a.jsonl_line();
    let text = format!("{}{}{{\"ts\": \"torn", &line_a[10..], b.jsonl_line());
    let tail = Tail::of(&text, true);
    assert_eq!(tail.window_start.as_deref(), Some(b.ts.as_str()));
    assert_eq!(tail.seen.len(), 1);
    assert!(tail.ends_without_newline);
}

#[test]
fn rows_gradata_would_not_write_are_counted_not_invented() {
    let mut odd = stored(&event(1, "CORRECTION"));
    odd.session = None;
    let mut listed = stored(&event(2, "CORRECTION"));
    listed.data_json = "[1, 2]".to_owned();
    let (lines, unrestorable) = missing_lines(&HashMap::new(), &[odd, listed]);
    assert!(lines.is_empty());
    assert_eq!(unrestorable, 2);
}

#[test]
fn restored_lines_follow_a_torn_line_on_a_line_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(EVENTS_JSONL);
    std::fs::write(&path, "{\"ts\": \"torn").unwrap();
    let line = event(1, "CORRECTION").jsonl_line();
    let tail = read_tail(&path).unwrap();
    append_lines(
        &path,
        std::slice::from_ref(&line),
        tail.ends_without_newline,
    )
    .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{{\"ts\": \"torn\n{line}"));
}

#[test]
fn the_rows_of_the_window_are_read_and_a_brain_without_events_has_none() {
    let conn = Connection::open_in_memory().unwrap();
    assert!(rows_since(&conn, None).unwrap().is_empty());
    conn.execute_batch(
        "CREATE TABLE events (id INTEGER PRIMARY KEY, ts TEXT, session INTEGER, type TEXT, \
             source TEXT, data_json TEXT, tags_json TEXT, valid_from TEXT, valid_until TEXT);",
    )
    .unwrap();
    let events = [event(1, "CORRECTION"), event(2, "LESSON_CHANGE")];
    for event in &events {
        let row = event.row();
        conn.execute(
            "INSERT INTO events (ts, session, type, source, data_json, tags_json, valid_from, \
                 valid_until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                row.ts,
                row.session,
                row.event_type,
                row.source,
                row.data_json,
                row.tags_json,
                row.valid_from,
                row.valid_until
            ],
        )
        .unwrap();
    }
    let all = rows_since(&conn, None).unwrap();
    assert_eq!(all.len(), 2);
    let (lines, _) = missing_lines(&HashMap::new(), &all);
    assert_eq!(lines, [events[0].jsonl_line(), events[1].jsonl_line()]);
    let later = rows_since(&conn, Some(&events[1].ts)).unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].key.event_type, "LESSON_CHANGE");
}
