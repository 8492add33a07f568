//! A crash in the middle of the brain's writes: the service is killed (SIGKILL) during a burst of
//! concurrent `/correct` and `/end-session` calls, at a different moment each round, restarted on
//! the same brain, and the brain must hold together: every LESSON_CHANGE event's lesson is in
//! `lessons.md` or the archive, every lesson's correction ids are CORRECTION events, every
//! answered correction is learned, the files parse, no temporary file is left, and
//! `events.jsonl` has a line for every `events` row. And a brain left as the worst crash leaves
//! it (between each pair of writes) is repaired when the service starts.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use gradata::brain::lessons::{self, Lesson};
use gradata::brain::rule_id::rule_id;
use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support;
use crate::support::daemon::{Daemon, Spec, request_bytes, send_raw};

/// A salt of 64 `a`s, so that graduation thresholds are known.
const SALT: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A lesson the first sweep promotes, two it kills (idle past the grace: they move to the
/// archive), and one it only ages.
const LESSONS: &str = "# Team brain: lessons
[2026-04-20] [INSTINCT:0.95] TONE: Never open client emails with small talk
  Fire count: 3 | Sessions since fire: 0 | Misfires: 0

[2026-04-01] [UNTESTABLE:0.40] CODE: Prefer tabs in every Makefile recipe
  Fire count: 0 | Sessions since fire: 13 | Misfires: 0
  Corrections: 1

[2026-04-02] [UNTESTABLE:0.40] DOCS: Spell out acronyms on first use
  Fire count: 0 | Sessions since fire: 14 | Misfires: 0

[2026-04-21] [INSTINCT:0.40] CONTENT: Link the runbook in incident summaries
  Fire count: 1 | Sessions since fire: 0 | Misfires: 0
";

/// Concurrent clients of a burst.
const CLIENTS: usize = 6;
/// Calls each client makes at most.
const CALLS: usize = 12;

/// One call a client makes: a correction carrying `marker` in its texts, or the end of a
/// session.
#[derive(Debug, Clone)]
enum Call {
    Correct { marker: String, body: Value },
    EndSession { body: Value },
}

/// The calls of client `client` in round `round`: deterministic, mixed so that some
/// corrections create lessons and some reinforce a lesson others created, and each client ends
/// its sessions now and then.
fn calls(round: usize, client: usize) -> Vec<Call> {
    (0..CALLS)
        .map(|k| {
            let session = format!("r{round}c{client}s{}", k / 4);
            if k % 4 == 3 {
                return Call::EndSession {
                    body: json!({"session_id": session, "session_type": "full"}),
                };
            }
            let marker = format!("mark{round}q{client}z{k}");
            let body = match (client + k + round) % 3 {
                // The same explicit instruction from many clients: one lesson, reinforced.
                0 => json!({
                    "old_string": format!("{marker} ship whenever."),
                    "new_string": format!("Rule: Send release notes every Friday morning\n{marker} ship it."),
                    "file_path": "notes/release.md",
                    "session_id": session,
                }),
                1 => json!({
                    "old_string": format!("import os\npath = os.path.join(a, b)  # {marker}"),
                    "new_string": format!("Rule: Use pathlib for every path in {marker}\npath = Path(a) / b  # {marker}"),
                    "file_path": "src/app.py",
                    "session_id": session,
                }),
                _ => json!({
                    "old_string": format!("Hi team, hope you are all well! {marker} The deploy is done."),
                    "new_string": format!("{marker} The deploy is done."),
                    "file_path": "mail/update.txt",
                    "session_id": session,
                }),
            };
            Call::Correct { marker, body }
        })
        .collect()
}

/// A call answered 2xx before the kill.
#[derive(Debug)]
struct Answered {
    /// The correction's marker; `None` for `/end-session`.
    marker: Option<String>,
    answer: Value,
}

/// One call on a new connection; `None` once the service is gone.
fn post(addr: SocketAddr, path: &str, body: &Value) -> Option<(u16, Value)> {
    let raw = request_bytes(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    );
    let response = send_raw(addr, &raw).ok()?;
    let status = response.status;
    Some((status, response.json()))
}

/// When a round kills the service.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// As soon as this many calls were answered.
    AfterAnswers(usize),
    /// After this many answers, as soon as a `lessons.md` write is seen in progress (its
    /// temporary file exists): the kill then falls inside a save, between a correction's events.
    DuringLessonsWrite(usize),
}

/// Whether `dir` holds a temporary file of an atomic replace in progress.
fn write_in_progress(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let name = entry.unwrap().file_name();
        gradata::brain::atomic::temp_file_target(&name.to_string_lossy()) == Some("lessons.md")
    })
}

/// Runs a burst of round `round` on the brain in `dir` and kills the service (SIGKILL) at
/// `moment`; returns every 2xx answer received, before or after that moment (the service wrote
/// all it answered before it died).
fn burst_and_kill(daemon: &mut Daemon, dir: &Path, round: usize, moment: Moment) -> Vec<Answered> {
    let addr = daemon.addr();
    let (sender, answers) = mpsc::channel::<Answered>();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for call in calls(round, client) {
                    let (path, body, marker) = match call {
                        Call::Correct { marker, body } => ("/correct", body, Some(marker)),
                        Call::EndSession { body } => ("/end-session", body, None),
                    };
                    let Some((status, answer)) = post(addr, path, &body) else {
                        return;
                    };
                    assert!(
                        (200..300).contains(&status),
                        "{path} {body}: {status} {answer}"
                    );
                    if sender.send(Answered { marker, answer }).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(sender);
    let (after, in_a_write) = match moment {
        Moment::AfterAnswers(n) => (n, false),
        Moment::DuringLessonsWrite(n) => (n, true),
    };
    let mut received = Vec::new();
    while received.len() < after {
        match answers.recv_timeout(Duration::from_secs(30)) {
            Ok(answered) => received.push(answered),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no answer for 30 s"),
        }
    }
    if in_a_write {
        // Watch the directory without pausing: a save lasts a few fsyncs.
        loop {
            if write_in_progress(dir) {
                break;
            }
            match answers.try_recv() {
                Ok(answered) => received.push(answered),
                Err(mpsc::TryRecvError::Empty) => std::thread::yield_now(),
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
    }
    daemon.signal("KILL");
    assert!(
        daemon.wait(Duration::from_secs(10)).is_some(),
        "still running after SIGKILL"
    );
    for client in clients {
        client.join().unwrap();
    }
    received.extend(answers.try_iter());
    received
}

/// The `events` rows: (id, type, data).
fn events(dir: &Path) -> Vec<(i64, String, Value)> {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let mut statement = conn
        .prepare("SELECT id, type, data_json FROM events ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| {
            let data: String = row.get(2)?;
            Ok((
                row.get(0)?,
                row.get(1)?,
                serde_json::from_str(&data).unwrap(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The lessons of a file, which must parse without a problem (a missing file has none).
fn lessons_in(path: &Path) -> Vec<Lesson> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => panic!("{}: {err}", path.display()),
    };
    let parsed = lessons::parse(&text);
    assert_eq!(parsed.problems, [], "{}:\n{text}", path.display());
    parsed.lessons
}

/// (ts, type, source) of each `events` row, counted.
fn event_keys_in_table(dir: &Path) -> HashMap<(String, String, String), usize> {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let mut statement = conn.prepare("SELECT ts, type, source FROM events").unwrap();
    let mut keys = HashMap::new();
    for key in statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
    {
        *keys.entry(key.unwrap()).or_default() += 1;
    }
    keys
}

/// (ts, type, source) of each `events.jsonl` line, counted.
fn event_keys_in_jsonl(dir: &Path) -> HashMap<(String, String, String), usize> {
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default();
    let mut keys = HashMap::new();
    for line in text.lines() {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("events.jsonl line {line:?}: {err}"));
        let field = |name: &str| event[name].as_str().unwrap().to_owned();
        *keys
            .entry((field("ts"), field("type"), field("source")))
            .or_default() += 1;
    }
    keys
}

/// Checks the brain in `dir` after a crash and a restart; `answered` are the calls answered
/// before the crash. Returns how many answered corrections there were.
fn check_brain(dir: &Path, answered: &[Answered]) -> usize {
    let current = lessons_in(&dir.join("lessons.md"));
    let archived = lessons_in(&dir.join("lessons-archive.md"));
    let known: BTreeSet<String> = current
        .iter()
        .chain(&archived)
        .map(|lesson| rule_id(&lesson.category, &lesson.description))
        .collect();
    for lesson in &current {
        assert!(
            !archived.iter().any(|old| old.category == lesson.category
                && old.description == lesson.description
                && old.date == lesson.date
                && old.corrections == lesson.corrections),
            "{:?} is in both lessons.md and the archive",
            lesson.description
        );
    }
    let events = events(dir);
    let corrections: BTreeSet<String> = events
        .iter()
        .filter(|(_, kind, _)| kind == "CORRECTION")
        .map(|(id, _, _)| id.to_string())
        .collect();

    for (id, kind, data) in &events {
        if kind == "LESSON_CHANGE" {
            let lesson = data["lesson_id"].as_str().unwrap();
            assert!(
                known.contains(lesson),
                "LESSON_CHANGE {id} ({data}) names a lesson in neither lessons.md nor the archive"
            );
        }
    }
    for lesson in current.iter().chain(&archived) {
        // The seeded lessons' ids were never events of this brain.
        if lesson.date.starts_with("2026-04") {
            continue;
        }
        for id in &lesson.corrections {
            assert!(
                corrections.contains(id),
                "lesson {:?} records correction {id}, which is no CORRECTION event",
                lesson.description
            );
        }
    }
    let mut answered_corrections = 0;
    for call in answered {
        let Some(marker) = &call.marker else { continue };
        answered_corrections += 1;
        let (id, _, _) = events
            .iter()
            .find(|(_, kind, data)| {
                kind == "CORRECTION" && data["final_text"].as_str().unwrap().contains(marker)
            })
            .unwrap_or_else(|| panic!("the answered correction {marker} has no CORRECTION event"));
        let id = id.to_string();
        let lesson = current
            .iter()
            .find(|lesson| lesson.corrections.contains(&id))
            .unwrap_or_else(|| {
                panic!(
                    "the answered correction {marker} (event {id}, answer {}) is in no lesson of \
                     lessons.md",
                    call.answer
                )
            });
        // Its state may have moved since: a later sweep of the burst may have promoted it.
        assert!(
            call.answer["lesson_state"].is_string(),
            "{marker}: {} (lesson {:?})",
            call.answer,
            lesson.description
        );
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            gradata::brain::atomic::temp_file_target(&name).is_none(),
            "a temporary file is left: {name}"
        );
    }
    assert_eq!(
        event_keys_in_jsonl(dir),
        event_keys_in_table(dir),
        "events.jsonl and the events table differ"
    );
    answered_corrections
}

fn fresh_brain() -> (tempfile::TempDir, PathBuf) {
    let (guard, dir) = support::temp_dir();
    std::fs::write(dir.join("lessons.md"), LESSONS).unwrap();
    std::fs::write(dir.join(".brain_salt"), SALT).unwrap();
    (guard, dir)
}

#[test]
fn a_brain_killed_in_a_burst_of_corrections_holds_together_after_a_restart() {
    // Each round kills at a different moment: after a different number of answers, from the
    // first to most of them, and half of the rounds inside a write of lessons.md.
    let moments = [
        Moment::AfterAnswers(1),
        Moment::DuringLessonsWrite(0),
        Moment::AfterAnswers(9),
        Moment::DuringLessonsWrite(5),
        Moment::AfterAnswers(22),
        Moment::DuringLessonsWrite(14),
        Moment::AfterAnswers(38),
        Moment::DuringLessonsWrite(30),
        Moment::AfterAnswers(50),
        Moment::DuringLessonsWrite(45),
    ];
    let mut answered_total = 0;
    let mut cut_writes = 0;
    for (round, &moment) in moments.iter().enumerate() {
        let (_guard, dir) = fresh_brain();
        let mut spec = Spec::new(&dir);
        if matches!(moment, Moment::DuringLessonsWrite(_)) {
            // A save takes a few fsyncs, less than a millisecond on a fast disk: held open for
            // a while before its rename, it is sure to be cut by the kill that follows the
            // sight of its temporary file.
            spec = spec.env(gradata::brain::atomic::PAUSE_BEFORE_RENAME_HOOK, "50");
        }
        let mut daemon = spec.spawn();
        daemon.expect_ready();
        let answered = burst_and_kill(&mut daemon, &dir, round, moment);
        if write_in_progress(&dir) {
            cut_writes += 1;
        }

        let restarted = Spec::new(&dir).spawn();
        restarted.expect_ready();
        answered_total += check_brain(&dir, &answered);
        // The service answers again on the repaired brain, and its answer is written.
        let (status, answer) = post(
            restarted.addr(),
            "/correct",
            &json!({
                "old_string": "after the crash",
                "new_string": "Rule: Say what the crash repaired\nafter the crash",
                "file_path": "notes/after.md",
            }),
        )
        .unwrap();
        assert_eq!(status, 200, "round {round}: {answer}");
        check_brain(&dir, &[]);
    }
    assert!(
        answered_total > 0,
        "no correction was answered in any round"
    );
    assert!(cut_writes > 0, "no kill fell inside a write of lessons.md");
}

#[test]
fn a_brain_left_between_two_writes_is_repaired_when_the_service_starts() {
    let (_guard, dir) = fresh_brain();
    let mut daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    // A sweep that retires the two idle lessons, and corrections, written in full.
    for (k, call) in calls(0, 0).into_iter().take(4).enumerate() {
        let (path, body) = match call {
            Call::Correct { body, .. } => ("/correct", body),
            Call::EndSession { body } => ("/end-session", body),
        };
        let (status, answer) = post(daemon.addr(), path, &body).unwrap();
        assert_eq!(status, 200, "call {k}: {answer}");
    }
    daemon.sigterm();
    assert_eq!(daemon.exit_code(Duration::from_secs(10)), 0);
    let archived = lessons_in(&dir.join("lessons-archive.md"));
    assert_eq!(archived.len(), 2, "the sweep retired the idle lessons");

    // What a crash at the worst moments leaves: the archive appended but lessons.md not yet
    // replaced (the retired lessons back in it as they were), a temporary file of the write cut
    // short, and the events.jsonl lines of the last two events not appended.
    let lessons_path = dir.join("lessons.md");
    let text = std::fs::read_to_string(&lessons_path).unwrap();
    let before_sweep: String = LESSONS
        .split("\n\n")
        .filter(|block| block.contains("UNTESTABLE"))
        .map(|block| format!("\n{}\n", block.trim_end()))
        .collect();
    let swept = lessons_in(&lessons_path).len();
    std::fs::write(&lessons_path, format!("{text}{before_sweep}")).unwrap();
    assert_eq!(lessons_in(&lessons_path).len(), swept + 2);
    std::fs::write(dir.join(".lessons.md.99999.0.tmp"), "half a file").unwrap();
    let jsonl = dir.join("events.jsonl");
    let full = std::fs::read_to_string(&jsonl).unwrap();
    let kept: Vec<&str> = full.lines().collect();
    assert!(kept.len() > 2);
    let cut = kept[..kept.len() - 2].join("\n") + "\n";
    std::fs::write(&jsonl, &cut).unwrap();

    let restarted = Spec::new(&dir).spawn();
    restarted.expect_ready();
    let current = lessons_in(&lessons_path);
    for gone in &archived {
        assert!(
            !current.iter().any(|l| l.description == gone.description),
            "{:?} is still in lessons.md:\n{}",
            gone.description,
            std::fs::read_to_string(&lessons_path).unwrap()
        );
    }
    assert_eq!(
        lessons_in(&dir.join("lessons-archive.md")).len(),
        2,
        "nothing archived twice"
    );
    assert!(!dir.join(".lessons.md.99999.0.tmp").exists());
    assert_eq!(std::fs::read_to_string(&jsonl).unwrap(), full);
    check_brain(&dir, &[]);
    let log = restarted.stderr();
    for said in [
        "removed a temporary file",
        "completed an interrupted move",
        "restored events.jsonl lines",
    ] {
        assert!(log.contains(said), "the log does not say {said:?}:\n{log}");
    }
}
