//! The brain routes as the plugin calls them, against a brain written the way the Python SDK
//! writes one. Expected values were measured on the Python daemon 0.6.0 with the same brain
//! (rule ids, relevance values, ranking, signals, tags, pending counts); where gradata answers
//! differently on purpose (docs/compatibility.md), the test says so.

use std::path::Path;

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::support;
use crate::support::brain::Brain;
use crate::support::daemon::{Spec, get_health, post_bytes, post_json};

/// A small brain: RULEs with and without fires, a RULE idle for 60 sessions (served as PATTERN),
/// a scoped RULE and PATTERN, an INSTINCT, a KILLED lesson and a heading that is not a lesson.
const LESSONS: &str = "# Team brain: lessons
[2026-04-02] [RULE:0.94] TONE: Never open client emails with small talk
  Root cause: user deleted greeting paragraphs
  Fire count: 12 | Sessions since fire: 1 | Misfires: 0

[2026-04-03] [RULE:0.91] CODE: Always add type hints to public Python functions
  Fire count: 3 | Sessions since fire: 0 | Misfires: 1

[2026-04-04] [RULE:0.90] FORMAT: Never wrap short answers in markdown headers

[2026-04-05] [RULE:0.88] CONFIG: Keep secrets out of YAML config files
  Scope: {\"task_type\": \"config\"}

[2026-04-06] [RULE:0.95] DOCS: Never mention internal ticket numbers in public docs
  Fire count: 2 | Sessions since fire: 60 | Misfires: 0

[2026-04-09] [PATTERN:0.71] CODE: Prefer pathlib over os.path for file handling
  Fire count: 4 | Sessions since fire: 0 | Misfires: 1
  Scope: {\"task_type\": \"code\"}

[2026-04-10] [PATTERN:0.65] ACCURACY: Cite the source of every figure you quote

[2026-04-20] [INSTINCT] DOCS: Link the runbook in incident summaries

[2026-04-21] [KILLED:0.10] STYLE: Use exclamation marks for emphasis
";

impl Brain {
    /// A service on a brain holding [`LESSONS`], ready.
    fn start() -> Brain {
        Brain::with_lessons(LESSONS)
    }

    fn with_lessons(lessons: &str) -> Brain {
        Brain::serve(&[("lessons.md", lessons)])
    }

    fn health(&self) -> Value {
        let (status, health) = get_health(self.daemon.addr());
        assert_eq!(status, 200, "{health}");
        health
    }

    /// The brain's `events` rows: (session, type, source, data).
    fn events(&self) -> Vec<(i64, String, String, Value)> {
        events_of(&self.dir)
    }

    /// The lines of `events.jsonl`.
    fn jsonl(&self) -> Vec<Value> {
        match std::fs::read_to_string(self.dir.join("events.jsonl")) {
            Ok(text) => text
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn events_of(dir: &Path) -> Vec<(i64, String, String, Value)> {
    let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let mut statement = conn
        .prepare("SELECT session, type, source, data_json FROM events ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| {
            let data: String = row.get(3)?;
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                serde_json::from_str(&data).unwrap(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn rule(rule_id: &str, tier: &str, instruction: &str, relevance: f64) -> Value {
    json!({
        "rule_id": rule_id,
        "tier": tier,
        "category": rule_id.split(':').next().unwrap(),
        "instruction": instruction,
        "relevance": relevance,
    })
}

const TONE: &str = "TONE: Never open client emails with small talk";
const HINTS: &str = "CODE: Always add type hints to public Python functions";
const FORMAT: &str = "FORMAT: Never wrap short answers in markdown headers";
const PATHLIB: &str = "CODE: Prefer pathlib over os.path for file handling";
const CITE: &str = "ACCURACY: Cite the source of every figure you quote";
const TICKETS: &str = "DOCS: Never mention internal ticket numbers in public docs";

/// The rules 0.6.0 injects for a coding prompt: RULEs before PATTERNs, never-fired and
/// often-missed rules first, the scoped CONFIG rule left out, the idle DOCS rule demoted, the two
/// CODE rules merged into one line of the RULE tier.
#[test]
fn apply_rules_selects_ranks_and_injects_as_the_original_does() {
    let brain = Brain::start();
    let answer = brain.ok(
        "/apply-rules",
        json!({
            "prompt": "Write a Python function that loads the YAML config",
            "session_id": "s1",
            "context": {"task_type": "code"},
        }),
    );
    let wildcard = 0.8800000000000001;
    assert_eq!(
        answer["rules"],
        json!([
            rule("FORMAT:b8c910b5", "RULE", FORMAT, wildcard),
            rule("CODE:d5aaa5cd", "RULE", HINTS, wildcard),
            rule("TONE:5caea4bf", "RULE", TONE, wildcard),
            rule("ACCURACY:c1b3d233", "PATTERN", CITE, wildcard),
            rule("CODE:92fdcee1", "PATTERN", PATHLIB, 1.1),
            rule("DOCS:8529cb12", "PATTERN", TICKETS, wildcard),
        ]),
        "{answer}"
    );
    assert_eq!(
        answer["fired_rule_ids"],
        json!([
            "FORMAT:b8c910b5",
            "CODE:d5aaa5cd",
            "TONE:5caea4bf",
            "ACCURACY:c1b3d233",
            "CODE:92fdcee1",
            "DOCS:8529cb12"
        ])
    );
    assert_eq!(answer["mode_detected"], "code");
    assert_eq!(answer["mode_confidence"], 0.2778);
    // 0.6.0 orders the lines inside a tier at random; gradata keeps the ranked order.
    assert_eq!(
        answer["injection_text"],
        "<brain-rules>\n\
         - FORMAT: Never wrap short answers in markdown headers\n\
         - CODE: Always add type hints to public Python functions. Prefer pathlib over os.path for file handling.\n\
         - TONE: Never open client emails with small talk\n\
         - ACCURACY: Cite the source of every figure you quote\n\
         - DOCS: Never mention internal ticket numbers in public docs\n\
         </brain-rules>"
    );
    // Read-only: the brain's files are as they were.
    assert_eq!(
        std::fs::read_to_string(brain.dir.join("lessons.md")).unwrap(),
        LESSONS
    );
    assert!(brain.events().is_empty());
}

/// The plugin's session start: an empty prompt, no context. The scoped lessons are left out.
#[test]
fn apply_rules_at_session_start_injects_the_unscoped_rules() {
    let brain = Brain::start();
    let answer = brain.ok("/apply-rules", json!({"prompt": "", "session_id": "s1"}));
    let ids: Vec<&str> = answer["fired_rule_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "FORMAT:b8c910b5",
            "CODE:d5aaa5cd",
            "TONE:5caea4bf",
            "ACCURACY:c1b3d233",
            "DOCS:8529cb12"
        ]
    );
    assert_eq!(answer["mode_detected"], "chat");
    assert_eq!(answer["mode_confidence"], 0.0);
}

/// An empty brain (no lessons.md at all) injects nothing and still classifies the prompt.
#[test]
fn apply_rules_on_an_empty_brain_injects_nothing() {
    let (_guard, dir) = support::temp_dir();
    let daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    let response = post_json(
        daemon.addr(),
        "/apply-rules",
        &json!({"prompt": "fix the bug"}),
    );
    assert_eq!(response.status, 200);
    assert_eq!(
        response.json(),
        json!({
            "rules": [],
            "injection_text": "",
            "mode_detected": "code",
            "mode_confidence": 0.5556,
            "fired_rule_ids": [],
        })
    );
}

/// A lessons.md rewritten while the service runs is served from the next call on, however
/// quickly it was rewritten and even at the same size.
#[test]
fn apply_rules_follows_lessons_md_as_it_changes() {
    let brain = Brain::with_lessons("[2026-04-02] [RULE:0.94] TONE: Keep it short\n");
    let first = brain.ok("/apply-rules", json!({}));
    assert_eq!(first["rules"][0]["instruction"], "TONE: Keep it short");
    std::fs::write(
        brain.dir.join("lessons.md"),
        "[2026-04-02] [RULE:0.94] TONE: Keep it brief\n",
    )
    .unwrap();
    let second = brain.ok("/apply-rules", json!({}));
    assert_eq!(second["rules"][0]["instruction"], "TONE: Keep it brief");
    std::fs::remove_file(brain.dir.join("lessons.md")).unwrap();
    let third = brain.ok("/apply-rules", json!({}));
    assert_eq!(third["rules"], json!([]));
}

/// Enforcement warns about the RULEs whose `never` words the content uses, with the one rule id
/// format of `/apply-rules`. The DOCS rule idle for 60 sessions is a PATTERN here too, so it is
/// not enforced (0.6.0 enforces it).
#[test]
fn enforce_rules_warns_with_the_apply_rules_ids() {
    let brain = Brain::start();
    let answer = brain.ok(
        "/enforce-rules",
        json!({
            "content": "Hello! Small talk first. ## Title\nuse markdown headers and mention internal ticket numbers",
            "file_path": "notes/a.md",
            "session_id": "s1",
        }),
    );
    assert_eq!(
        answer,
        json!({
            "violations": [
                {"rule_id": "TONE:5caea4bf", "description": "Never open client emails with small talk", "severity": "warn"},
                {"rule_id": "FORMAT:b8c910b5", "description": "Never wrap short answers in markdown headers", "severity": "warn"},
            ],
            "pass": false,
        })
    );
    assert_eq!(
        brain.ok("/enforce-rules", json!({"content": ""})),
        json!({"violations": [], "pass": true})
    );
}

/// `/health` carries the fields the plugin's status and doctor read: RULEs counted as served
/// (the idle one as a PATTERN), every lesson line counted, sessions seen, the service's version
/// and the brain directory.
#[test]
fn health_reports_the_brain() {
    let brain = Brain::start();
    let health = brain.health();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["rules_count"], 4, "{health}");
    assert_eq!(health["lessons_count"], 9, "{health}");
    assert_eq!(health["active_sessions"], 0, "{health}");
    assert_eq!(health["sdk_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        Path::new(health["brain_dir"].as_str().unwrap()),
        brain.dir.canonicalize().unwrap()
    );
    brain.ok("/detect", json!({"user_message": "ok", "session_id": "a"}));
    brain.ok("/detect", json!({"user_message": "ok", "session_id": "b"}));
    brain.ok("/detect", json!({"user_message": "ok", "session_id": "a"}));
    assert_eq!(brain.health()["active_sessions"], 2);
}

/// `/detect` finds the feedback phrases, answers with them, and logs one IMPLICIT_FEEDBACK event
/// under the session's number in both event logs; a message without any logs nothing.
#[test]
fn detect_logs_implicit_feedback_in_the_brain() {
    let brain = Brain::start();
    let message = "Are you sure? That is wrong, make sure you forgot nothing";
    let answer = brain.ok(
        "/detect",
        json!({"user_message": message, "session_id": "s2", "recent_fired_rules": ["TONE:5caea4bf"]}),
    );
    assert_eq!(
        answer,
        json!({
            "implicit_feedback": {
                "detected": true,
                "signals": [
                    {"type": "pushback", "marker": "are you sure"},
                    {"type": "reminder", "marker": "make sure"},
                    {"type": "gap", "marker": "you forgot"},
                ],
                "related_rules": ["TONE:5caea4bf"],
                "action_taken": "logged",
            },
            "mode": "chat",
            "mode_confidence": 0.0,
        })
    );
    let events = brain.events();
    assert_eq!(events.len(), 1, "{events:?}");
    let (session, kind, source, data) = &events[0];
    assert_eq!(*session, 1);
    assert_eq!(kind, "IMPLICIT_FEEDBACK");
    assert_eq!(source, "brain.detect_implicit_feedback");
    assert_eq!(data["signals"], json!(["pushback", "reminder", "gap"]));
    assert_eq!(
        data["markers"],
        json!(["are you sure", "make sure", "you forgot"])
    );
    assert_eq!(data["snippet"], message);
    let lines = brain.jsonl();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "IMPLICIT_FEEDBACK");
    assert_eq!(lines[0]["session"], 1);
    assert_eq!(
        lines[0]["tags"],
        json!(["signal:pushback", "signal:reminder", "signal:gap"])
    );

    let quiet = brain.ok(
        "/detect",
        json!({"user_message": "Looks good, ship it", "session_id": "s2"}),
    );
    assert_eq!(quiet["implicit_feedback"]["detected"], false);
    assert_eq!(quiet["implicit_feedback"]["action_taken"], Value::Null);
    assert_eq!(brain.events().len(), 1);
}

/// `/checkpoint` counts the lessons still learning (INSTINCT and PATTERN as written; the idle
/// RULE is not one) and logs a CHECKPOINT event in the brain and the outbox.
#[test]
fn checkpoint_counts_pending_lessons_and_logs_the_event() {
    let brain = Brain::start();
    let answer = brain.ok("/checkpoint", json!({"session_id": "s2", "reason": "auto"}));
    assert_eq!(answer["checkpointed"], true, "{answer}");
    assert_eq!(answer["pending_lessons"], 3);
    assert_eq!(answer["unsaved_corrections"], 0);
    let events = brain.events();
    assert_eq!(events.len(), 1);
    let (session, kind, source, data) = &events[0];
    assert_eq!(
        (*session, kind.as_str(), source.as_str()),
        (0, "CHECKPOINT", "plugin.pre_compact")
    );
    assert_eq!(data["session_id"], "s2");
    assert_eq!(data["reason"], "auto");
    assert_eq!(data["pending_lessons"], 3);
    assert_eq!(brain.jsonl().len(), 1);
    assert_eq!(support::rows(&brain.dir).len(), 1);
}

/// `/log-event` logs the upper-cased type under `plugin.hook` in both event logs and the outbox;
/// `data` that is not an object is refused with `logged: false`, and nothing is written.
#[test]
fn log_event_fills_the_brain_log_and_refuses_what_it_cannot_log() {
    let brain = Brain::start();
    let answer = brain.ok(
        "/log-event",
        json!({"event_type": "tool_use", "data": {"tool": "Edit", "file": "é.md"}}),
    );
    assert_eq!(answer["logged"], true, "{answer}");
    let events = brain.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1, "TOOL_USE");
    assert_eq!(events[0].2, "plugin.hook");
    assert_eq!(events[0].3["tool"], "Edit");
    assert_eq!(events[0].3["file"], "é.md");
    // The JSONL line keeps non-ASCII text as it is; the table escapes it, as the SDK does.
    let text = std::fs::read_to_string(brain.dir.join("events.jsonl")).unwrap();
    assert!(text.contains("\"file\": \"é.md\""), "{text}");
    assert_eq!(support::rows(&brain.dir).len(), 1);

    for bad in [
        json!({"event_type": "x", "data": [1, 2]}),
        json!({"event_type": 5}),
    ] {
        let (status, answer) = brain.post("/log-event", bad.clone());
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["logged"], false, "{answer}");
        assert!(answer["error"].as_str().is_some(), "{answer}");
    }
    assert_eq!(brain.events().len(), 1);
    assert_eq!(brain.jsonl().len(), 1);
    assert_eq!(support::rows(&brain.dir).len(), 1);
}

/// `/tag-delta` tags an edit as 0.6.0 does (the spec's examples).
#[test]
fn tag_delta_tags_edits() {
    let brain = Brain::start();
    let cases = [
        (
            json!({"file_path": "a.ts", "old_content": "x\n", "new_content": "x\nimport y\nassert z\nfix a\nq\n"}),
            json!({"tags": ["feature_addition", "dependency_change", "test_change", "bug_fix"], "category": "CODE"}),
        ),
        (
            json!({"file_path": "cfg/app.yaml", "old_content": "a\nb\nc\nd\n", "new_content": "a\n"}),
            json!({"tags": ["cleanup"], "category": "CONFIG"}),
        ),
        (
            json!({"file_path": "Makefile", "old_content": "x", "new_content": "y"}),
            json!({"tags": ["refactor"], "category": "GENERAL"}),
        ),
        (
            json!({"file_path": "new.md", "old_content": "", "new_content": "hello"}),
            json!({"tags": ["new_file"], "category": "CONTENT"}),
        ),
        (json!({}), json!({"tags": ["edit"], "category": "GENERAL"})),
    ];
    for (request, expected) in cases {
        assert_eq!(
            brain.ok("/tag-delta", request.clone()),
            expected,
            "{request}"
        );
    }
}

/// `/brain-recall` searches the brain's full-text index as the SDK wrote it and answers the top
/// hits as 0.6.0 prints them, plus the same hits as objects.
#[test]
fn brain_recall_searches_an_existing_index() {
    let (guard, dir) = support::temp_dir();
    std::fs::write(dir.join("lessons.md"), LESSONS).unwrap();
    let today = today();
    let rows = [
        "CODE: Content change (cut: read, open; added: str) - def load(path: Path) -> str:\n    return path.read_text()",
        "CONTENT: Tone formalized (formality shift: -2); Content change (cut: well, hope, bob) - The linter fails on config_loader.",
    ];
    {
        let conn = Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
        conn.execute_batch(
            "CREATE TABLE brain_fts_content (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                source TEXT, file_type TEXT, text TEXT, embed_date TEXT
            );
            CREATE VIRTUAL TABLE brain_fts USING fts5(
                source, file_type, text, embed_date,
                content='brain_fts_content', content_rowid='id',
                tokenize='porter unicode61'
            );",
        )
        .unwrap();
        for text in rows {
            conn.execute(
                "INSERT INTO brain_fts_content (source, file_type, text, embed_date)
                 VALUES ('corrections', 'correction', ?1, ?2)",
                (text, &today),
            )
            .unwrap();
            conn.execute(
                "INSERT INTO brain_fts (rowid, source, file_type, text, embed_date)
                 VALUES (last_insert_rowid(), 'corrections', 'correction', ?1, ?2)",
                (text, &today),
            )
            .unwrap();
        }
    }
    let rank: f64 = Connection::open(dir.join(gradata::store::DATABASE_FILE))
        .unwrap()
        .query_row(
            "SELECT rank FROM brain_fts WHERE brain_fts MATCH 'linter'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let daemon = Spec::new(&dir).spawn();
    daemon.expect_ready();
    let response = post_json(
        daemon.addr(),
        "/brain-recall",
        &json!({"content_preview": "linter", "session_id": "s1"}),
    );
    assert_eq!(response.status, 200);
    let answer = response.json();
    let expected = format!(
        "{{'rowid': 2, 'source': 'corrections', 'file_type': 'correction', 'text': '{text}', \
         'embed_date': '{today}', 'fts_rank': {rank}, 'retrieval_mode': 'keyword', \
         'raw_score': {rank}, 'score': 0.0, 'confidence': 'keyword_match', 'recency_weight': 1.0, \
         'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': '{today}', 'session_num': -1, \
         'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}}",
        text = rows[1],
        rank = python_float(rank.abs()),
    );
    assert_eq!(answer["context"], expected, "{answer}");
    assert_eq!(answer["relevant_rules"], json!([]));
    assert_eq!(answer["relevant_corrections"][0]["rowid"], 2, "{answer}");

    let hybrid = post_json(
        daemon.addr(),
        "/brain-recall",
        &json!({"file_path": "src/app/config_loader.py", "content_preview": "def load(path: Path) -> str: read the config"}),
    )
    .json();
    let lines: Vec<&str> = hybrid["context"].as_str().unwrap().lines().collect();
    assert!(lines.len() >= 2, "{hybrid}");
    assert!(lines[0].starts_with("{'rowid': 1, "), "{hybrid}");
    assert!(
        lines
            .iter()
            .all(|line| line.contains("'retrieval_mode': 'hybrid'"))
    );
    drop(guard);
}

/// A brain without a full-text index recalls nothing, and the search creates no table.
#[test]
fn brain_recall_without_an_index_recalls_nothing_and_creates_nothing() {
    let brain = Brain::start();
    let answer = brain.ok("/brain-recall", json!({"content_preview": "linter"}));
    assert_eq!(
        answer,
        json!({"context": "", "relevant_rules": [], "relevant_corrections": []})
    );
    let conn = Connection::open(brain.dir.join(gradata::store::DATABASE_FILE)).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'brain_fts%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(tables, 0);
}

/// Bad input gets a JSON 400 that names what is wrong, and changes nothing; 0.6.0 closed the
/// connection without an answer. An empty body reads as `{}`, as in 0.6.0.
#[test]
fn bad_input_to_brain_routes_gets_a_json_400_and_changes_nothing() {
    let brain = Brain::start();
    let cases = [
        ("/apply-rules", json!({"prompt": 5})),
        ("/apply-rules", json!({"context": "code"})),
        ("/apply-rules", json!([1])),
        (
            "/apply-rules",
            json!(["a prompt that would fill the first field"]),
        ),
        ("/tag-delta", json!(["a.py", "x", "y"])),
        ("/detect", json!({"user_message": ["a"]})),
        ("/enforce-rules", json!({"content": 1})),
        ("/tag-delta", json!({"old_content": {}})),
        ("/brain-recall", json!({"content_preview": 3})),
        ("/checkpoint", json!({"reason": 1})),
    ];
    for (path, body) in cases {
        let (status, answer) = brain.post(path, body.clone());
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path} {body}: {answer}"
        );
    }
    let response = post_bytes(brain.daemon.addr(), "/apply-rules", &[], b"{not json");
    assert_eq!(response.status, 400);
    for path in [
        "/apply-rules",
        "/detect",
        "/enforce-rules",
        "/tag-delta",
        "/checkpoint",
    ] {
        let response = post_bytes(brain.daemon.addr(), path, &[], b"");
        assert_eq!(response.status, 200, "{path}: {:?}", response.json());
    }
    // Only the empty-body checkpoint wrote anything.
    assert_eq!(brain.events().len(), 1);
    assert_eq!(brain.events()[0].1, "CHECKPOINT");
}

/// Today's local date as `YYYY-MM-DD`, as the SDK stamps index rows.
fn today() -> String {
    let output = std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// `x` as Python's `repr` prints a float below 1e-4: the shortest digits that read back as `x`,
/// in exponent form with a sign and at least two exponent digits (`9.9e-07`).
fn python_float(x: f64) -> String {
    assert!(
        x > 0.0 && x < 1e-4,
        "{x} is not in the range this helper prints"
    );
    let shortest = format!("{x:e}");
    let (digits, exponent) = shortest.split_once('e').unwrap();
    let exponent: i32 = exponent.parse().unwrap();
    format!("{digits}e-{:02}", -exponent)
}

/// Secrets stay on the host: an edit of a `.env` file and of a source file holding an API key
/// is captured, delivered to the cloud, and neither the ingest server nor any file of the brain
/// ever holds the secrets; the placeholders say what was there.
#[test]
fn secrets_in_a_correction_never_leave_the_host_nor_reach_the_outbox() {
    use crate::support::{FakeIngest, Reply};
    let secrets = [
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "sk-proj-4f9Qe7Lz2Rk8Vt1Xw3Yb6Nc0Md5Pa9Hs",
        "hunter2-but-longer",
    ];
    let server = FakeIngest::replying(Reply::ok());
    let (_guard, dir) = support::temp_dir();
    let daemon = Spec::new(&dir).syncing_to(&server.url("/ingest")).spawn();
    daemon.expect_ready();
    let edits = [
        (
            ".env",
            format!("AWS_ACCESS_KEY_ID={}\nDB_PASSWORD=old\n", secrets[0]),
            format!(
                "AWS_ACCESS_KEY_ID={}\nAWS_SECRET_ACCESS_KEY={}\nDB_PASSWORD={}\n",
                secrets[0], secrets[1], secrets[3]
            ),
        ),
        (
            "src/client.py",
            "client = OpenAI()\n".to_owned(),
            format!("client = OpenAI(api_key=\"{}\")\n", secrets[2]),
        ),
    ];
    for (file, old, new) in &edits {
        let response = post_json(
            daemon.addr(),
            "/correct",
            &json!({"old_string": old, "new_string": new, "file_path": file, "session_id": "s1"}),
        );
        assert_eq!(response.status, 200, "{:?}", response.json());
    }
    assert!(
        server.wait_for(2, support::daemon::PATIENCE),
        "the corrections were not delivered"
    );
    let delivered: Vec<String> = server
        .received()
        .iter()
        .map(|received| String::from_utf8_lossy(&received.body).into_owned())
        .collect();
    let all = delivered.join("\n");
    assert!(all.contains("[REDACTED_"), "nothing was redacted: {all}");
    for secret in secrets {
        assert!(
            !all.contains(secret),
            "{secret} reached the ingest server: {all}"
        );
    }
    drop(daemon);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{secret} is stored in {}",
                    path.display()
                );
            }
        }
    }
}
