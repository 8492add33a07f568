//! The CLI, run as a binary: drain, status, queue, exit codes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use gradata::store::{ClaimFrom, InstanceLock, Options, RowId, Settlement, Store};

use crate::support::{self, FakeIngest, Reply};

/// The key every test drain authenticates with.
const KEY: &str = "gk_test_0123456789";

/// How long a test waits for the fake server to see requests.
const WAIT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Creates a store in `dir` with `n` pending rows and closes it; returns their event ids.
fn prepare(dir: &Path, n: usize) -> Vec<String> {
    let store = support::open_store(dir);
    let ids = runtime().block_on(support::fill(&store, n));
    drop(store);
    ids
}

/// `support::gradata` with an empty config file named explicitly, so no host configuration is
/// read; `GRADATA_CONFIG=""` (no config file, see `empty_gradata_config_means_no_config_file`)
/// would do the same.
fn gradata(dir: &Path) -> Command {
    let mut command = support::gradata(dir);
    command.env("GRADATA_CONFIG", "/dev/null");
    command
}

/// `gradata drain --json` with the test key, posting to `url`.
fn drain(dir: &Path, url: &str) -> Command {
    let mut command = gradata(dir);
    command
        .env("GRADATA_API_KEY", KEY)
        .arg("--ingest-url")
        .arg(url)
        .args(["drain", "--json"]);
    command
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {stdout:?}"))
}

fn dir_listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn header<'a>(received: &'a support::Received, name: &str) -> Option<&'a str> {
    received
        .headers
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// How many times the server received each idempotency key.
fn posts_per_event(server: &FakeIngest) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for received in server.received() {
        *counts
            .entry(received.idempotency_key().unwrap())
            .or_insert(0) += 1;
    }
    counts
}

fn synced_ids(dir: &Path) -> HashSet<String> {
    support::rows(dir)
        .into_iter()
        .filter(|row| row.synced_at.is_some())
        .map(|row| row.event_id.unwrap())
        .collect()
}

/// `drain --json` posts every row once, with the contract headers and the stored body verbatim.
#[test]
fn drain_delivers_every_row_verbatim() {
    let (_guard, dir) = support::temp_dir();
    let ids = prepare(&dir, 20);
    let server = FakeIngest::replying(Reply::ok());

    let (output, stdout, stderr) = support::run(&mut drain(&dir, &server.url("/ingest")));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["delivered"], 20, "{report}");
    assert_eq!(report["reason"], "done", "{report}");
    assert_eq!(report["remaining"], 0, "{report}");

    let payloads: HashMap<String, String> = support::rows(&dir)
        .into_iter()
        .map(|row| (row.event_id.unwrap(), row.payload_json))
        .collect();
    let received = server.received();
    assert_eq!(received.len(), 20);
    let bearer = format!("Bearer {KEY}");
    for request in &received {
        assert_eq!(request.path, "/ingest");
        assert_eq!(header(request, "authorization"), Some(bearer.as_str()));
        assert_eq!(header(request, "content-type"), Some("application/json"));
        let agent = header(request, "user-agent").unwrap_or_default();
        assert!(agent.starts_with("gradata/"), "user-agent {agent:?}");
        let key = request.idempotency_key().unwrap();
        assert_eq!(
            request.body.as_ref(),
            payloads[&key].as_bytes(),
            "body of {key}"
        );
    }
    let keys: HashSet<String> = posts_per_event(&server).into_keys().collect();
    assert_eq!(keys, ids.into_iter().collect::<HashSet<_>>());
    assert!(
        support::rows(&dir)
            .iter()
            .all(|row| row.synced_at.is_some())
    );
}

/// `--max-rows` stops the drain at the row budget and reports what is left.
#[test]
fn drain_stops_at_the_row_budget() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 25);
    let server = FakeIngest::replying(Reply::ok());

    let (output, stdout, stderr) =
        support::run(drain(&dir, &server.url("/ingest")).args(["--max-rows", "10"]));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["delivered"], 10, "{report}");
    assert_eq!(report["reason"], "row_budget", "{report}");
    assert_eq!(report["remaining"], 15, "{report}");
    assert_eq!(server.count(), 10);
    assert_eq!(synced_ids(&dir).len(), 10);
}

/// Without an API key, `drain` sends nothing, exits 1 and says where it looked for a key.
#[test]
fn drain_without_a_key_is_disabled_and_says_why() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 5);
    let server = FakeIngest::replying(Reply::ok());

    let mut command = gradata(&dir);
    command
        .arg("--ingest-url")
        .arg(server.url("/ingest"))
        .args(["drain", "--json"]);
    let (output, stdout, stderr) = support::run(&mut command);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["reason"], "disabled", "{report}");
    assert_eq!(report["delivered"], 0, "{report}");
    let detail = report["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("GRADATA_API_KEY is unset"), "{detail:?}");
    assert_eq!(server.count(), 0);
    for row in support::rows(&dir) {
        assert_eq!(
            (row.synced_at, row.dead_at, row.attempts),
            (None, None, Some(0))
        );
    }
}

/// `drain` on a directory without a database succeeds as `no_database` and creates nothing.
#[test]
fn drain_without_a_database_creates_nothing() {
    let (_guard, dir) = support::temp_dir();
    let server = FakeIngest::replying(Reply::ok());

    let (output, stdout, stderr) = support::run(&mut drain(&dir, &server.url("/ingest")));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(json(&stdout)["reason"], "no_database", "{stdout}");
    assert_eq!(dir_listing(&dir), BTreeSet::new());
    assert_eq!(server.count(), 0);
}

/// The API key never shows in the output of `drain`, `status` or `queue list`, even at trace level.
#[test]
fn the_api_key_never_appears_in_output() {
    const SECRET: &str = "SECRET123";
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 5);
    let refusing = FakeIngest::replying(Reply::status(401).body(r#"{"error":"bad key"}"#));
    let accepting = FakeIngest::replying(Reply::ok());
    let with_key = |args: &[&str]| {
        let mut command = gradata(&dir);
        command
            .env("GRADATA_API_KEY", format!("gk_live_{SECRET}"))
            .env("GRADATA_LOG", "trace")
            .args(args);
        command
    };
    let check = |what: &str, command: &mut Command| -> (Option<i32>, String) {
        let (output, stdout, stderr) = support::run(command);
        assert!(!stdout.contains(SECRET), "{what}: key on stdout:\n{stdout}");
        assert!(!stderr.contains(SECRET), "{what}: key on stderr:\n{stderr}");
        (output.status.code(), stdout)
    };

    let refused_url = refusing.url("/ingest");
    let (code, stdout) = check(
        "drain (401)",
        &mut with_key(&["--ingest-url", &refused_url, "drain", "--json"]),
    );
    assert_eq!(code, Some(1));
    assert_eq!(json(&stdout)["reason"], "auth_failed", "{stdout}");
    let sent = refusing.received();
    assert!(!sent.is_empty());
    assert_eq!(
        header(&sent[0], "authorization"),
        Some(format!("Bearer gk_live_{SECRET}").as_str()),
        "the key was really in use"
    );

    let accepted_url = accepting.url("/ingest");
    let (code, stdout) = check(
        "drain (200)",
        &mut with_key(&["--ingest-url", &accepted_url, "drain"]),
    );
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(accepting.count(), 5);

    for args in [
        &["status", "--json"][..],
        &["status"][..],
        &["queue", "list", "--state", "synced"][..],
        &["queue", "list", "--state", "synced", "--json"][..],
    ] {
        let (code, _) = check(&args.join(" "), &mut with_key(args));
        assert_eq!(code, Some(0), "{args:?}");
    }
}

/// Leaves `dir` with 5 pending, 3 dead and 2 synced rows.
fn mixed_queue(dir: &Path) {
    let store = support::open_store(dir);
    runtime().block_on(async {
        support::fill(&store, 10).await;
        store
            .claim_batch(10, ClaimFrom::After(RowId(0)), Duration::from_secs(60))
            .await
            .unwrap();
        let settlements = (1..=10)
            .map(|id| match id {
                1 | 2 => Settlement::Synced {
                    id: RowId(id),
                    status: 200,
                },
                3..=5 => Settlement::Dead {
                    id: RowId(id),
                    status: 422,
                    error: "http 422".to_owned(),
                },
                _ => Settlement::Release {
                    id: RowId(id),
                    status: None,
                    error: None,
                },
            })
            .collect();
        store.settle(settlements).await.unwrap();
    });
}

fn status_json(dir: &Path) -> serde_json::Value {
    let (output, stdout, stderr) = support::run(gradata(dir).args(["status", "--json"]));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    json(&stdout)
}

/// `status --json` reports the queue's counts and the oldest pending age.
#[test]
fn status_reports_the_queue() {
    let (_guard, dir) = support::temp_dir();
    mixed_queue(&dir);
    let status = status_json(&dir);
    assert_eq!(status["database_exists"], true, "{status}");
    let queue = &status["queue"];
    assert_eq!(queue["pending"], 5, "{status}");
    assert_eq!(queue["dead"], 3, "{status}");
    assert_eq!(queue["synced"], 2, "{status}");
    assert!(queue["oldest_pending_age_seconds"].is_number(), "{status}");
}

/// `status` follows rows another program writes after the service (the Python SDK inserting with
/// the original columns, a row delivered by hand): the counts it reads are kept by the database's
/// triggers, not by the service's memory. On a database an older gradata migrated, without those
/// triggers, it counts the rows instead, still without writing anything.
#[test]
fn status_counts_follow_other_writers_and_older_migrations() {
    let (_guard, dir) = support::temp_dir();
    mixed_queue(&dir);
    let conn = rusqlite::Connection::open(dir.join(gradata::store::DATABASE_FILE)).unwrap();
    conn.execute_batch(
        "INSERT INTO sync_queue (payload_json, kind, enqueued_at) VALUES ('{}', 'lesson', 1.0);
         UPDATE sync_queue SET synced_at = 2.0 WHERE id = 6;",
    )
    .unwrap();
    let counts = |status: &serde_json::Value| {
        let queue = &status["queue"];
        (
            queue["pending"].clone(),
            queue["dead"].clone(),
            queue["synced"].clone(),
        )
    };
    let expected = (5.into(), 3.into(), 3.into());
    assert_eq!(counts(&status_json(&dir)), expected);
    conn.execute_batch(
        "DROP TRIGGER gradata_queue_counts_insert;
         DROP TRIGGER gradata_queue_counts_update;
         DROP TRIGGER gradata_queue_counts_delete;
         DROP TABLE gradata_queue_counts;",
    )
    .unwrap();
    assert_eq!(counts(&status_json(&dir)), expected);
    let counts_tables: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'gradata_queue_counts%'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(counts_tables, 0, "status migrated the database");
}

/// A time no row can have (`enqueued_at = 1e300`, written by another program) does not crash
/// `status`: the oldest pending row simply has no age yet.
#[test]
fn status_survives_an_impossible_time() {
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 2);
    rusqlite::Connection::open(dir.join(gradata::store::DATABASE_FILE))
        .unwrap()
        .execute_batch("UPDATE sync_queue SET enqueued_at = 1e300, next_attempt_at = 1e300")
        .unwrap();
    let status = status_json(&dir);
    assert_eq!(status["queue"]["pending"], 2, "{status}");
    assert_eq!(
        status["queue"]["oldest_pending_age_seconds"], 0.0,
        "{status}"
    );
    let (output, stdout, stderr) = support::run(gradata(&dir).arg("status"));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
}

/// `status` on a directory without a database succeeds, says so, and creates nothing.
#[test]
fn status_without_a_database() {
    let (_guard, dir) = support::temp_dir();
    let status = status_json(&dir);
    assert_eq!(status["database_exists"], false, "{status}");
    assert_eq!(dir_listing(&dir), BTreeSet::new());
}

/// `command` as a user who may not read `dir`: `dir` is made unreadable, and when the tests run as
/// root (who reads everything) the command runs as `nobody`.
fn without_access(dir: &Path, mut command: Command) -> Command {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o000)).unwrap();
    if nix::unistd::geteuid().is_root() {
        command.uid(65534).gid(65534);
    }
    command
}

/// A data directory this user may not read is an error naming the cause (exit 1), not an empty or
/// missing queue: `status` does not say "not created yet" and `drain` does not report success.
#[test]
fn an_unreadable_data_directory_is_an_error_not_an_empty_queue() {
    use std::os::unix::fs::PermissionsExt;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 3);
    let database = dir.join(gradata::store::DATABASE_FILE);
    let mut status = gradata(&dir);
    status.arg("status");
    let drain_command = drain(&dir, "http://127.0.0.1:9/ingest");
    let outcomes = [
        support::run(&mut without_access(&dir, status)),
        support::run(&mut without_access(&dir, drain_command)),
    ];
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (output, stdout, stderr) in outcomes {
        assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(
            stderr.contains(&format!("{}: Permission denied", database.display())),
            "{stderr}"
        );
        assert!(!stdout.contains("not created yet"), "{stdout}");
    }
    assert_eq!(support::rows(&dir).len(), 3);
}

/// A store that cannot be opened says which file and what to do: a database this user cannot
/// write, one another process keeps locked, a data directory that is a regular file.
#[test]
fn open_errors_name_the_database_and_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let (_guard, dir) = support::temp_dir();
    prepare(&dir, 1);
    let database = dir.join(gradata::store::DATABASE_FILE);
    let expect_failure = |command: &mut Command, needles: &[&str]| {
        let (output, stdout, stderr) = support::run(command);
        assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
        }
    };
    let database_name = database.display().to_string();

    // Read-only: the file is root's, readable by all, and the command runs as nobody; or the file
    // is made read-only.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut read_only = drain(&dir, "http://127.0.0.1:9/ingest");
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
        read_only.uid(65534).gid(65534);
    } else {
        std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    expect_failure(
        &mut read_only,
        &[&database_name, "readonly", "this user cannot write"],
    );
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();

    // Not even readable: another user's private database (as root, nobody's view of root's file).
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut unreadable = drain(&dir, "http://127.0.0.1:9/ingest");
        unreadable.uid(65534).gid(65534);
        expect_failure(
            &mut unreadable,
            &[
                &database_name,
                "unable to open",
                "check that this user may read",
            ],
        );
    }

    // Locked by another connection for longer than the busy timeout.
    let holder = rusqlite::Connection::open(&database).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut busy = drain(&dir, "http://127.0.0.1:9/ingest");
    busy.env("GRADATA_STORE_BUSY_TIMEOUT_SECS", "0.1");
    expect_failure(&mut busy, &[&database_name, "locked", "another process"]);
    drop(holder);

    // A regular file where the data directory should be.
    let file = dir.join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let mut not_a_dir = drain(&file, "http://127.0.0.1:9/ingest");
    expect_failure(
        &mut not_a_dir,
        &[
            &format!("{}: not a directory", file.display()),
            "--data-dir",
        ],
    );
}

/// `status` on a database the original daemon made, which gradata has not migrated yet, counts it
/// from the original columns and changes nothing: no column added, no switch to WAL, no file
/// created beside it (the original daemon may still be writing to it).
#[test]
fn status_reads_an_unmigrated_database_without_migrating_it() {
    let (_guard, dir) = support::temp_dir();
    let payloads: Vec<String> = (0..4).map(support::original_payload).collect();
    support::original_db(&dir, &payloads);
    let database = dir.join(gradata::store::DATABASE_FILE);
    let conn = rusqlite::Connection::open(&database).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE; UPDATE sync_queue SET synced_at = 1.0 WHERE id = 1",
    )
    .unwrap();
    drop(conn);
    let listing = dir_listing(&dir);
    let bytes = std::fs::read(&database).unwrap();

    let status = status_json(&dir);
    assert_eq!(status["database_state"], "not_migrated", "{status}");
    assert_eq!(status["queue"]["pending"], 3, "{status}");
    assert_eq!(status["queue"]["synced"], 1, "{status}");
    assert_eq!(status["queue"]["dead"], 0, "{status}");
    let (output, stdout, stderr) = support::run(gradata(&dir).arg("status"));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("not migrated yet"), "{stdout}");
    assert!(stdout.contains("pending:       3"), "{stdout}");

    assert_eq!(dir_listing(&dir), listing);
    assert!(
        std::fs::read(&database).unwrap() == bytes,
        "the database changed"
    );
}

/// `status` on a database that exists but holds no queue says that, not "not created yet".
#[test]
fn status_on_a_database_without_the_queue_table() {
    let (_guard, dir) = support::temp_dir();
    rusqlite::Connection::open(dir.join(gradata::store::DATABASE_FILE))
        .unwrap()
        .execute_batch("CREATE TABLE other (x)")
        .unwrap();
    let status = status_json(&dir);
    assert_eq!(status["database_exists"], true, "{status}");
    assert_eq!(status["database_state"], "no_queue_table", "{status}");
    let (output, stdout, stderr) = support::run(gradata(&dir).arg("status"));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("has no sync_queue table"), "{stdout}");
    assert!(!stdout.contains("not created yet"), "{stdout}");
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `status` writes nothing to the database and needs no lock, even beside a running service.
#[test]
fn status_reads_without_writing_or_locking() {
    let (_guard, dir) = support::temp_dir();
    mixed_queue(&dir);
    let db = dir.join(gradata::store::DATABASE_FILE);
    let wal = dir.join(format!("{}-wal", gradata::store::DATABASE_FILE));
    let rows = support::rows(&dir);

    let bytes = std::fs::read(&db).unwrap();
    let wal_len = file_len(&wal);
    status_json(&dir);
    assert!(
        std::fs::read(&db).unwrap() == bytes,
        "status changed system.db"
    );
    assert_eq!(file_len(&wal), wal_len, "status wrote to the WAL");

    // The service holds the instance lock; status does not need it.
    let service = Store::open(&Options {
        instance_lock: InstanceLock::Exclusive,
        ..Options::new(&dir)
    })
    .unwrap();
    let bytes = std::fs::read(&db).unwrap();
    let wal_len = file_len(&wal);
    let status = status_json(&dir);
    assert_eq!(status["queue"]["pending"], 5, "{status}");
    assert!(
        std::fs::read(&db).unwrap() == bytes,
        "status changed system.db"
    );
    assert_eq!(file_len(&wal), wal_len, "status wrote to the WAL");
    drop(service);
    assert_eq!(support::rows(&dir), rows);
}

/// `queue list --state dead` lists the dead rows and `queue retry` makes them pending again.
#[test]
fn queue_lists_and_retries_dead_rows() {
    let (_guard, dir) = support::temp_dir();
    let ids = prepare(&dir, 12);
    let rejected: HashSet<String> = ids.iter().step_by(3).cloned().collect();
    assert_eq!(rejected.len(), 4);
    let plan_rejected = rejected.clone();
    let server = FakeIngest::with_plan(move |request, _| {
        if plan_rejected.contains(&request.idempotency_key().unwrap()) {
            Reply::status(422).body(r#"{"error":"schema"}"#)
        } else {
            Reply::ok()
        }
    });
    let (output, stdout, stderr) = support::run(&mut drain(&dir, &server.url("/ingest")));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["delivered"], 8, "{report}");
    assert_eq!(report["dead"], 4, "{report}");

    let dead_rows: HashMap<i64, String> = support::rows(&dir)
        .into_iter()
        .filter(|row| row.dead_at.is_some())
        .map(|row| (row.id, row.event_id.unwrap()))
        .collect();
    assert_eq!(
        dead_rows.values().cloned().collect::<HashSet<_>>(),
        rejected
    );

    let (output, stdout, stderr) =
        support::run(gradata(&dir).args(["queue", "list", "--state", "dead", "--json"]));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let listed = json(&stdout);
    let listed = listed.as_array().unwrap();
    let listed_ids: HashMap<i64, String> = listed
        .iter()
        .map(|entry| {
            assert_eq!(entry["state"], "dead", "{entry}");
            assert_eq!(entry["last_status"], 422, "{entry}");
            (
                entry["id"].as_i64().unwrap(),
                entry["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed_ids, dead_rows);

    let (output, stdout, stderr) =
        support::run(gradata(&dir).args(["queue", "retry", "--all-dead"]));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("4 rows queued for retry"), "{stdout}");
    for row in support::rows(&dir) {
        if dead_rows.contains_key(&row.id) {
            assert_eq!((row.dead_at, row.synced_at), (None, None), "{row:?}");
        } else {
            assert!(row.synced_at.is_some(), "{row:?}");
        }
    }

    let (output, stdout, stderr) = support::run(gradata(&dir).args(["queue", "retry", "12345"]));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("0 rows queued for retry"), "{stdout}");
}

/// Runs `command` and expects exit code 78 with every one of `needles` on stderr.
fn expect_config_error(command: &mut Command, needles: &[&str]) {
    let (output, stdout, stderr) = support::run(command);
    assert_eq!(output.status.code(), Some(78), "{stdout}\n{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{needle:?} not in stderr: {stderr}"
        );
    }
}

/// `GRADATA_CONFIG=""` means "no config file", as the configuration loader documents and tests.
#[test]
fn empty_gradata_config_means_no_config_file() {
    let (_guard, dir) = support::temp_dir();
    let (output, stdout, stderr) = support::run(support::gradata(&dir).args(["status", "--json"]));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(json(&stdout)["database_exists"], false, "{stdout}");
}

/// An unknown key in the config file exits 78 and names the file and the key.
#[test]
fn unknown_config_key_exits_78_naming_file_and_key() {
    let (_guard, dir) = support::temp_dir();
    let config = dir.join("gradata.toml");
    std::fs::write(&config, "[sync]\nconcurency = 4\n").unwrap();
    expect_config_error(
        gradata(&dir).arg("--config").arg(&config).arg("status"),
        &[config.to_str().unwrap(), "concurency"],
    );
}

/// A malformed environment variable exits 78 and names the variable.
#[test]
fn bad_environment_value_exits_78_naming_the_variable() {
    let (_guard, dir) = support::temp_dir();
    expect_config_error(
        gradata(&dir)
            .env("GRADATA_SYNC_CONCURRENCY", "abc")
            .arg("status"),
        &["GRADATA_SYNC_CONCURRENCY"],
    );
}

/// A `GRADATA_*` variable that no option reads is not silently ignored: a warning names it and
/// the known variable it resembles.
#[test]
fn unknown_environment_variable_is_named_with_a_suggestion() {
    let (_guard, dir) = support::temp_dir();
    let (output, stdout, stderr) = support::run(
        gradata(&dir)
            .env("GRADATA_INGEST_URL", "https://ingest.example.com/v1")
            .args(["--log-format", "text", "status"]),
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.contains("GRADATA_INGEST_URL"))
        .unwrap_or_else(|| panic!("no warning naming the variable: {stderr}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("GRADATA_CLOUD_INGEST_URL"), "{line}");
}

/// `--max-seconds` out of range (negative, not a number, or past what a duration holds) is an
/// error that says so, not a crash; a huge but representable budget just drains.
#[test]
fn drain_max_seconds_out_of_range_is_an_error_not_a_crash() {
    let (_guard, dir) = support::temp_dir();
    for bad in ["-1", "NaN", "inf", "1e30"] {
        let (output, _, stderr) =
            support::run(gradata(&dir).args(["drain", &format!("--max-seconds={bad}")]));
        assert_eq!(output.status.code(), Some(1), "{bad}: {stderr}");
        assert!(stderr.contains("--max-seconds must be"), "{bad}: {stderr}");
        assert!(!stderr.contains("panicked"), "{bad}: {stderr}");
    }
    let (output, _, stderr) = support::run(gradata(&dir).args(["drain", "--max-seconds=1e15"]));
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(output.status.code(), Some(101), "{stderr}");
}

/// A plain-http ingest URL to a remote host exits 78 and explains the loopback rule.
#[test]
fn remote_http_ingest_url_exits_78() {
    let (_guard, dir) = support::temp_dir();
    expect_config_error(
        gradata(&dir).env("GRADATA_API_KEY", KEY).args([
            "--ingest-url",
            "http://ingest.example.com/v1",
            "drain",
        ]),
        &["sync.ingest_url", "--ingest-url", "loopback"],
    );
}

/// An `--api-key-file` that does not exist exits 78 and names the file.
#[test]
fn missing_api_key_file_exits_78() {
    let (_guard, dir) = support::temp_dir();
    let missing = dir.join("missing-key");
    expect_config_error(
        gradata(&dir)
            .arg("--api-key-file")
            .arg(&missing)
            .arg("drain"),
        &[missing.to_str().unwrap()],
    );
}

/// A key file that is not one line of visible ASCII (here a key and a comment) is a configuration
/// error naming the file, found before anything is bound or created: exit 78, which the unit's
/// `RestartPreventExitStatus=` keeps from restarting in a loop. The key is not printed.
#[test]
fn two_line_api_key_file_exits_78_before_serving() {
    let (_guard, dir) = support::temp_dir();
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, format!("{KEY}\n# rotated last week\n")).unwrap();
    let data_dir = dir.join("data");
    let port = support::daemon::free_port();
    let (output, stdout, stderr) = support::run(
        gradata(&data_dir)
            .arg("--api-key-file")
            .arg(&key_file)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")]),
    );
    assert_eq!(output.status.code(), Some(78), "{stdout}\n{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for needle in [
        key_file.to_str().unwrap(),
        "sync.api_key",
        "--api-key-file",
        "one line",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle:?} not in stderr: {stderr}"
        );
    }
    assert!(!stderr.contains(KEY), "the key leaked: {stderr}");
    assert!(!data_dir.exists(), "the data directory was created");
}

/// Two drains at once on one data directory post every row exactly once between them.
#[test]
fn concurrent_drains_post_each_row_once() {
    let (_guard, dir) = support::temp_dir();
    let ids = prepare(&dir, 300);
    let server = FakeIngest::gated(&["/a", "/b"], |_, _| {
        Reply::ok().delay(Duration::from_millis(2))
    });
    let children: Vec<_> = ["/a", "/b"]
        .into_iter()
        .map(|path| {
            drain(&dir, &server.url(path))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut delivered = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
        delivered.push(json(&stdout)["delivered"].as_u64().unwrap());
    }

    assert!(!server.gate_timed_out(), "the two drains did not overlap");
    let posts = posts_per_event(&server);
    let twice: Vec<_> = posts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "posted more than once: {twice:?}");
    assert_eq!(
        posts.into_keys().collect::<HashSet<_>>(),
        ids.iter().cloned().collect::<HashSet<_>>()
    );
    assert_eq!(delivered.iter().sum::<u64>(), 300, "{delivered:?}");
    assert!(delivered.iter().all(|n| *n > 0), "{delivered:?}");
    assert_eq!(synced_ids(&dir).len(), 300);
}

/// A drain killed with SIGKILL loses no row and marks none synced without delivery; the next
/// drain recovers its leases and finishes the job.
#[test]
fn sigkill_mid_drain_loses_nothing() {
    let (_guard, dir) = support::temp_dir();
    let ids: HashSet<String> = prepare(&dir, 600).into_iter().collect();
    let server = FakeIngest::replying(Reply::ok().delay(Duration::from_millis(20)));

    let mut child = drain(&dir, &server.url("/ingest"))
        .env("GRADATA_SYNC_CONCURRENCY", "4")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(server.wait_for(60, WAIT), "the drain never got going");
    child.kill().unwrap();
    child.wait().unwrap();

    let received: HashSet<String> = posts_per_event(&server).into_keys().collect();
    let rows = support::rows(&dir);
    assert_eq!(rows.len(), 600);
    let mut pending = 0;
    for row in &rows {
        assert_eq!(row.dead_at, None, "{row:?}");
        match row.synced_at {
            Some(_) => assert!(
                received.contains(row.event_id.as_ref().unwrap()),
                "row marked synced but never delivered: {row:?}"
            ),
            None => pending += 1,
        }
    }
    assert!(pending > 0, "the drain finished before it was killed");

    let (output, stdout, stderr) = support::run(&mut drain(&dir, &server.url("/ingest")));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let report = json(&stdout);
    assert_eq!(report["remaining"], 0, "{report}");
    assert_eq!(synced_ids(&dir), ids);
    let received: HashSet<String> = posts_per_event(&server).into_keys().collect();
    assert_eq!(received, ids);
}
