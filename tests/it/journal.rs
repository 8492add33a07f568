//! Logging to the journal, against an emulated journald: the service runs in a private mount
//! namespace whose `/run/systemd/journal/socket` is a datagram socket this test owns, so the real
//! native-protocol records can be read and checked field by field. Needs root for the namespace.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{self, FakeIngest, Reply};

/// One journal record: field name to value (a field sent twice keeps the last value).
type Record = BTreeMap<String, String>;

/// Parses one datagram of the native journal protocol: `KEY=value\n` lines, or
/// `KEY\n<u64 little-endian length><bytes>\n` for values that may contain newlines.
fn parse_record(mut data: &[u8]) -> Record {
    let mut record = Record::new();
    while !data.is_empty() {
        let line_end = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
        let line = &data[..line_end];
        if let Some(eq) = line.iter().position(|b| *b == b'=') {
            let key = String::from_utf8_lossy(&line[..eq]).into_owned();
            record.insert(key, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            data = &data[(line_end + 1).min(data.len())..];
        } else {
            let key = String::from_utf8_lossy(line).into_owned();
            let rest = &data[line_end + 1..];
            let len = usize::try_from(u64::from_le_bytes(rest[..8].try_into().unwrap())).unwrap();
            record.insert(key, String::from_utf8_lossy(&rest[8..8 + len]).into_owned());
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    record
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// The startup record reaches the journal exactly once, at priority 6 (INFO), with its
/// MESSAGE_ID and its structured fields as journal fields.
#[test]
fn startup_record_reaches_the_journal_with_fields_and_priority() {
    if !is_root() {
        eprintln!("journal emulation needs root (a private mount namespace); not run");
        return;
    }
    let (_guard, dir) = support::temp_dir();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = support::open_store(&dir);
        support::fill(&store, 5).await;
    });
    let server = FakeIngest::replying(Reply::ok());
    let journal_path = dir.join("journal.sock");
    let journal = UnixDatagram::bind(&journal_path).unwrap();
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p /run/systemd/journal \
             && ln -s \"$0\" /run/systemd/journal/socket && exec \"$@\"",
        )
        .arg(&journal_path)
        .arg(env!("CARGO_BIN_EXE_gradata"))
        .args(["--data-dir"])
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &dir)
        .env("GRADATA_CONFIG", "")
        .env("GRADATA_API_KEY", "k")
        .env("GRADATA_CLOUD_INGEST_URL", server.url("/ingest"))
        .env("NOTIFY_SOCKET", &notify_path)
        // What systemd sets for a service: `auto` must pick the journal from it.
        .env("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no READY=1");
        let n = notify.recv(&mut buf).unwrap();
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "exit {status:?}; stderr: {stderr}");

    let mut records = Vec::new();
    while let Ok(n) = journal.recv(&mut buf) {
        if n > 0 {
            records.push(parse_record(&buf[..n]));
        }
    }
    let startup: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.get("MESSAGE")
                .is_some_and(|m| m.starts_with("sync queue drained at startup:"))
        })
        .collect();
    assert_eq!(startup.len(), 1, "records: {records:#?}\nstderr: {stderr}");
    let record = startup[0];
    assert_eq!(record["MESSAGE"], "sync queue drained at startup: 5 rows");
    assert_eq!(record["PRIORITY"], "6", "INFO must be priority 6");
    assert_eq!(
        record["MESSAGE_ID"],
        gradata::sync::STARTUP_DRAIN_MESSAGE_ID
    );
    assert_eq!(record["SYSLOG_IDENTIFIER"], "gradata");
    assert_eq!(record["DELIVERED"], "5");
    assert_eq!(record["REMAINING"], "0");
    assert_eq!(record["REASON"], "done");
    assert!(record.contains_key("ELAPSED_MS"));
    // Nothing went to stderr as text: the journal took the records.
    assert!(!stderr.contains("sync queue drained"), "{stderr}");
    // Warnings are priority 4, errors 3; nothing is logged at the crate default of 5 for INFO.
    assert!(
        records
            .iter()
            .all(|r| r.get("PRIORITY").is_some_and(|p| p != "5")),
        "{records:#?}"
    );
}
