use std::time::Duration;

use super::batch::*;
use super::side_tables::*;
use super::*;

#[test]
fn an_index_row_is_searchable_and_the_tables_are_created_once() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("system.db");
    let mut connection = None;
    for text in [
        "CODE: Use pathlib - from pathlib import Path",
        "TONE: Be direct - no",
    ] {
        index_correction(
            &mut connection,
            &database,
            &IndexRow {
                text: text.to_owned(),
                embed_date: "2026-12-07".to_owned(),
            },
        )
        .unwrap();
    }
    let connection = Connection::open(&database).unwrap();
    let found: Vec<String> = connection
        .prepare("SELECT text FROM brain_fts WHERE brain_fts MATCH 'pathlib'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(found, ["CODE: Use pathlib - from pathlib import Path"]);
}

fn job(category: &str, instruction: &str, id: &str) -> LessonJob {
    LessonJob {
        category: category.to_owned(),
        severity: "moderate",
        instruction: instruction.to_owned(),
        correction_id: id.to_owned(),
        session: Some(1),
        date: "2026-12-07".to_owned(),
        approval_required: false,
    }
}

fn brain_with_lessons(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(super::super::lessons_file::LESSONS_FILE);
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn lessons_in(path: &std::path::Path) -> Vec<Lesson> {
    let parsed = super::super::lessons::parse(&std::fs::read_to_string(path).unwrap());
    assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
    parsed.lessons
}

fn lessons_file(
    dir: &std::path::Path,
    path: &std::path::Path,
    cache: Arc<DocumentCache>,
) -> LessonsFile {
    LessonsFile {
        dir: dir.to_path_buf(),
        path: path.to_path_buf(),
        cache,
        terms: Arc::new(Mutex::new(TermsMemo::default())),
    }
}

#[test]
fn a_batch_learns_in_order_and_a_repeat_reinforces_the_lesson_the_first_created() {
    let (dir, path) = brain_with_lessons("# Lessons\n");
    let lessons = lessons_file(dir.path(), &path, Arc::new(DocumentCache::default()));
    let jobs = [
        job("CODE", "Use pathlib for every file path", "11"),
        job("TONE", "Keep status updates to three sentences", "12"),
        job("CODE", "Use pathlib for every file path", "13"),
    ];
    let learnt = learn_batch(&lessons, &jobs).unwrap();
    let created: Vec<bool> = learnt.iter().map(|l| l.created).collect();
    assert_eq!(created, [true, true, false]);
    assert_eq!(learnt[2].lesson.description, learnt[0].lesson.description);
    assert_eq!(learnt[2].lesson.corrections, ["11", "13"]);
    assert_eq!(learnt[2].lesson.fire_count, learnt[0].lesson.fire_count + 1);
    // The file holds the lessons in arrival order, the reinforced one as the third left it.
    let saved = lessons_in(&path);
    let ids: Vec<&[String]> = saved.iter().map(|l| l.corrections.as_slice()).collect();
    assert_eq!(ids, [&["11", "13"][..], &["12"][..]]);
    assert_eq!(saved[0].confidence, learnt[2].lesson.confidence);
    assert!(saved[0].confidence > learnt[0].lesson.confidence);
}

#[tokio::test(flavor = "current_thread")]
async fn a_failed_save_fails_every_member_of_its_batch_and_learns_none() {
    let dir = tempfile::tempdir().unwrap();
    // lessons.md in a directory that is not there yet: read as empty, never saved.
    let lessons_dir = dir.path().join("gone");
    let path = lessons_dir.join(super::super::lessons_file::LESSONS_FILE);
    let cache = Arc::new(DocumentCache::default());
    let commit: Arc<GroupCommit<LessonJob, Result<Learnt, Arc<SaveError>>>> =
        Arc::new(GroupCommit::new(MAX_BATCH));
    let held = commit.turn().await;
    let mut members = Vec::new();
    for n in 0..3 {
        let commit = Arc::clone(&commit);
        let lessons = lessons_file(dir.path(), &path, Arc::clone(&cache));
        let job = job("CODE", "Use pathlib for every file path", &n.to_string());
        members.push(tokio::spawn(async move {
            let write = move |jobs| write_lessons(lessons.clone(), jobs);
            commit.submit(job, write).await
        }));
        tokio::task::yield_now().await;
    }
    drop(held);
    let mut errors = Vec::new();
    for member in members {
        errors.push(member.await.unwrap().unwrap().unwrap_err());
    }
    assert!(matches!(*errors[0], SaveError::Replace(_)), "{}", errors[0]);
    assert!(
        errors.iter().all(|err| Arc::ptr_eq(err, &errors[0])),
        "one write, one error"
    );

    // Nothing of the failed batch is kept: the next correction creates the lesson afresh.
    std::fs::create_dir(&lessons_dir).unwrap();
    let learnt = learn_batch(
        &lessons_file(dir.path(), &path, cache),
        &[job("CODE", "Use pathlib for every file path", "9")],
    )
    .unwrap();
    assert!(learnt[0].created);
    assert_eq!(lessons_in(&path)[0].corrections, ["9"]);
}

#[test]
fn a_busy_lock_is_tried_again_every_millisecond_for_five_seconds() {
    assert_eq!(busy_pause(0), Some(Duration::from_millis(1)));
    // SQLite's own schedule would pause 100 ms by now.
    assert_eq!(busy_pause(20), Some(Duration::from_millis(1)));
    assert_eq!(busy_pause(4_999), Some(Duration::from_millis(1)));
    assert_eq!(busy_pause(5_000), None);
}

#[test]
fn an_index_insert_waits_for_a_lock_another_connection_holds() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("system.db");
    let mut connection = None;
    index_correction(&mut connection, &database, &row("CODE: first - a")).unwrap();
    let holder = Connection::open(&database).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (started, waiting) = std::sync::mpsc::channel();
    let inserter = std::thread::spawn(move || {
        started.send(()).unwrap();
        index_correction(&mut connection, &database, &row("CODE: second - b"))
    });
    waiting.recv().unwrap();
    // Busy or not yet started, the insert cannot have committed while the lock is held.
    holder.execute_batch("COMMIT").unwrap();
    inserter.join().unwrap().unwrap();
}

fn row(text: &str) -> IndexRow {
    IndexRow {
        text: text.to_owned(),
        embed_date: "2026-12-07".to_owned(),
    }
}

#[test]
fn an_index_insert_leaves_a_long_wal_to_the_checkpointer() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("system.db");
    // Another writer, as the store's, that does not checkpoint and stays open (a last
    // connection closing would checkpoint), leaves some 1,500 pages in the WAL.
    let other = Connection::open(&database).unwrap();
    other.pragma_update(None, "journal_mode", "wal").unwrap();
    other.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    other
        .execute_batch("CREATE TABLE bulk(b BLOB); INSERT INTO bulk VALUES (zeroblob(6000000));")
        .unwrap();
    let main_file = || std::fs::metadata(&database).unwrap().len();
    let before = main_file();

    let mut connection = None;
    index_correction(&mut connection, &database, &row("CODE: Use pathlib - x")).unwrap();
    // SQLite's default would have copied the WAL into the database file in this commit.
    assert_eq!(main_file(), before);
    drop(other);
}

#[test]
fn the_index_connection_leaves_durability_to_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let connection = open_index(&dir.path().join("system.db")).unwrap();
    let synchronous: i64 = connection
        .query_row("PRAGMA synchronous", [], |row| row.get(0))
        .unwrap();
    // 1 is NORMAL: no fsync per commit (the default, FULL, is 2).
    assert_eq!(synchronous, 1);
}

#[test]
fn the_index_connection_is_opened_again_after_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("system.db");
    let mut connection = None;
    index_correction(&mut connection, &database, &row("CODE: first - a")).unwrap();
    // The index dropped behind the open connection's back.
    Connection::open(&database)
        .unwrap()
        .execute_batch("DROP TABLE brain_fts; DROP TABLE brain_fts_content;")
        .unwrap();
    let mut failed = connection;
    assert!(index_correction(&mut failed, &database, &row("CODE: second - b")).is_err());
    // What the caller does after a failure: a new connection, which creates the tables.
    let mut connection = None;
    index_correction(&mut connection, &database, &row("CODE: third - c")).unwrap();
    let count: i64 = Connection::open(&database)
        .unwrap()
        .query_row("SELECT count(*) FROM brain_fts_content", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 1);
}

#[test]
fn stored_texts_are_redacted_and_the_severity_is_measured_on_the_edit() {
    let key = "sk-proj-4f9Qe7Lz2Rk8Vt1Xw3Yb6Nc0Md5Pa9Hs";
    let prepared = prepare(Correction {
        old: "client = OpenAI()".to_owned(),
        new: format!("client = OpenAI(api_key=\"{key}\")"),
        file_path: "src/app.py".to_owned(),
        session_id: String::new(),
        category: "CODE".to_owned(),
    });
    assert!(!prepared.new.contains(key), "{}", prepared.new);
    assert!(!prepared.instruction.text.contains(key));
    assert_eq!(
        prepared.measure,
        severity::measure(
            "client = OpenAI()",
            &format!("client = OpenAI(api_key=\"{key}\")")
        )
    );
    let (data, _) = correction_event(&prepared, "CODE", "raw-python");
    let text = format!("{data:?}");
    assert!(!text.contains(key), "{text}");
    assert!(!prepared.redacted_kinds.is_empty());
}
