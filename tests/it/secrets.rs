//! The cloud API key and the local API token never leave the process except where they belong (the
//! key in the ingest request's `Authorization` header): not in logs at any level, in either stderr
//! format, not in error messages, `/health`, `/metrics`, `Debug` output, nor in the output of
//! `status` and `queue list`. Each check also proves the secret was in use, so that a passing test
//! does not merely mean the secret was never loaded.
//!
//! Proxy credentials are not checked: the service has no proxy setting yet. When one arrives, its
//! user and password belong in [`secrets`] and the daemon test.

use std::process::Command;
use std::time::Duration;

use gradata::config::{Config, Environment, Flags};

use crate::support::daemon::{Daemon, Spec};
use crate::support::http::{self, get, post_bytes};
use crate::support::{self, FakeIngest, Reply, gradata};

/// The cloud API key, distinctive enough that no other text holds it by chance.
const KEY: &str = "gd-secret-KEY-7f3a9c41e2b8d605";
/// The local API token, as distinctive.
const TOKEN: &str = "gd-secret-TOKEN-c9e4a17b3f0d5286";
const WAIT: Duration = Duration::from_secs(20);

/// Every form in which a secret would be recognisable: itself, its distinctive tail (what a
/// "last characters" hint would show), and its base64 (what a Basic header or a dump would show).
fn forms(secret: &str) -> Vec<String> {
    let tail = &secret[secret.len() - 8..];
    vec![
        secret.to_owned(),
        tail.to_owned(),
        base64(secret.as_bytes(), b'+', b'/'),
        base64(secret.as_bytes(), b'-', b'_'),
        base64(format!("Bearer {secret}").as_bytes(), b'+', b'/'),
    ]
}

/// Every recognisable form of the key and of the token.
fn secrets() -> Vec<String> {
    forms(KEY).into_iter().chain(forms(TOKEN)).collect()
}

/// Asserts `text` is not empty (so that the check is not vacuous) and holds no secret.
fn assert_clean(what: &str, text: &str) {
    assert!(!text.trim().is_empty(), "{what}: nothing to check");
    assert_absent(what, text);
}

/// Asserts `text`, possibly empty, holds no secret.
fn assert_absent(what: &str, text: &str) {
    for secret in secrets() {
        assert!(!text.contains(&secret), "{what} leaks {secret:?}:\n{text}");
    }
}

/// Base64 without padding, with `c62` and `c63` as the last two digits (standard or URL-safe).
fn base64(bytes: &[u8], c62: u8, c63: u8) -> String {
    let mut digits: Vec<u8> = (b'A'..=b'Z')
        .chain(b'a'..=b'z')
        .chain(b'0'..=b'9')
        .collect();
    digits.extend([c62, c63]);
    let bits: Vec<bool> = bytes
        .iter()
        .flat_map(|byte| (0..8).rev().map(move |i| byte >> i & 1 == 1))
        .collect();
    bits.chunks(6)
        .map(|chunk| {
            let value = (0..6).fold(0, |acc, i| {
                acc << 1 | usize::from(chunk.get(i) == Some(&true))
            });
            char::from(digits[value])
        })
        .collect()
}

/// A data directory with the key and token in files of their own (the files outside it).
struct Secrets {
    _guard: tempfile::TempDir,
    data: std::path::PathBuf,
    key_file: std::path::PathBuf,
    token_file: std::path::PathBuf,
}

impl Secrets {
    fn new() -> Secrets {
        let (guard, root) = support::temp_dir();
        let data = root.join("data");
        std::fs::create_dir(&data).unwrap();
        let key_file = root.join("api-key");
        std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
        let token_file = root.join("api-token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        Secrets {
            _guard: guard,
            data,
            key_file,
            token_file,
        }
    }

    /// `gradata` with both secrets configured and every log record on.
    fn command(&self, ingest_url: &str, args: &[&str]) -> Command {
        let mut command = gradata(&self.data);
        command
            .env("GRADATA_LOG", "trace")
            .env("GRADATA_API_TOKEN_FILE", &self.token_file)
            .arg("--api-key-file")
            .arg(&self.key_file)
            .arg("--ingest-url")
            .arg(ingest_url)
            .args(args);
        command
    }
}

/// The key was really sent: the ingest saw it as the bearer.
fn assert_key_sent(ingest: &FakeIngest) {
    let received = ingest.received();
    assert!(!received.is_empty(), "nothing reached the ingest");
    let bearer = format!("Bearer {KEY}");
    for request in &received {
        assert_eq!(
            request
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap()),
            Some(bearer.as_str()),
            "the key was not in use"
        );
    }
}

/// The running service, in text and in JSON logs at trace level: the key earns a 401 from the
/// ingest, the token is checked (refused when wrong, accepted when right), the configuration is
/// reloaded; neither secret shows in its log, its refusals, `/health` or `/metrics`.
#[test]
fn the_service_never_shows_a_secret() {
    for json in [false, true] {
        let secrets = Secrets::new();
        let ingest = FakeIngest::replying(Reply::status(401).body(r#"{"error":"bad key"}"#));
        let mut spec = Spec::new(&secrets.data)
            .env("GRADATA_LOG", "trace")
            .env("GRADATA_API_TOKEN_FILE", &secrets.token_file)
            .env("GRADATA_CLOUD_INGEST_URL", ingest.url("/ingest"))
            .global_arg("--api-key-file")
            .global_arg(&secrets.key_file);
        if json {
            spec = spec.json_logs();
        }
        let mut daemon = spec.spawn();
        daemon.expect_ready();
        exercise(&daemon, &ingest, json);

        daemon.sighup();
        daemon.wait_for_log("configuration reloaded", WAIT);
        daemon.sigterm();
        assert_eq!(daemon.exit_code(WAIT), 0, "{}", daemon.stderr());
        let stderr = daemon.stderr();
        let trace = if json { r#""level":"TRACE""# } else { "TRACE" };
        assert!(stderr.contains(trace), "not logging at trace:\n{stderr}");
        assert!(
            stderr.contains("401"),
            "the refusal was not logged:\n{stderr}"
        );
        assert_clean(if json { "JSON log" } else { "text log" }, &stderr);

        // What the service left in the outbox, through the commands an operator runs.
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["queue", "list"],
            &["queue", "list", "--json"],
            &["queue", "list", "--state", "pending"],
        ] {
            let (output, stdout, stderr) =
                support::run(&mut secrets.command(&ingest.url("/ingest"), args));
            assert!(output.status.success(), "{args:?}: {stdout}\n{stderr}");
            assert_clean(&format!("{args:?} stdout"), &stdout);
            assert_absent(&format!("{args:?} stderr"), &stderr);
        }
    }
}

/// Posts events (refused without the token, taken with it), waits for the ingest's 401, reads
/// `/health` and `/metrics`; checks every answer.
fn exercise(daemon: &Daemon, ingest: &FakeIngest, json: bool) {
    let addr = daemon.addr();
    let event = br#"{"kind":"event","data":{"n":1}}"#;
    let wrong = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let refused = post_bytes(addr, "/v1/events", &[("Authorization", &wrong)], event);
    assert_eq!(refused.status, 401, "{refused:?}");
    assert_clean("a refusal of a wrong token", &format!("{refused:?}"));

    let bearer = format!("Bearer {TOKEN}");
    let taken = post_bytes(addr, "/v1/events", &[("Authorization", &bearer)], event);
    assert_eq!(taken.status / 100, 2, "the token was not in use: {taken:?}");
    assert_clean("an accepted event", &format!("{taken:?}"));
    let sync = http::request(addr, "POST", "/sync", &[("Authorization", &bearer)], b"");
    assert_clean("POST /sync", &format!("{sync:?}"));

    assert!(
        ingest.wait_for(1, WAIT),
        "the event never reached the ingest"
    );
    assert_key_sent(ingest);
    let state = if json { "auth_failed" } else { "401" };
    daemon.wait_for_log(state, WAIT);

    let health = get(addr, "/health");
    assert_eq!(health.status, 200, "{health:?}");
    assert_clean("/health", &format!("{health:?}"));
    let metrics = get(addr, "/metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    assert!(metrics.body.contains("gradata_"), "{metrics:?}");
    assert_clean("/metrics", &format!("{metrics:?}"));
}

/// `drain` against an ingest that refuses the key, in text and JSON: the error names the refusal,
/// never the key.
#[test]
fn a_refused_key_is_reported_without_the_key() {
    let secrets = Secrets::new();
    support::daemon::prepare(&secrets.data, 3);
    let ingest = FakeIngest::replying(Reply::status(401).body(r#"{"error":"bad key"}"#));
    for args in [&["drain"][..], &["drain", "--json"]] {
        let (output, stdout, stderr) =
            support::run(&mut secrets.command(&ingest.url("/ingest"), args));
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {stdout}\n{stderr}"
        );
        assert!(
            format!("{stdout}{stderr}").contains("401"),
            "{args:?}: the refusal is not reported:\n{stdout}\n{stderr}"
        );
        assert_clean(&format!("{args:?} output"), &format!("{stdout}\n{stderr}"));
    }
    assert_key_sent(&ingest);
}

/// A key or token the configuration refuses: the message says what is wrong and where, never the
/// value (nor any part of it).
#[test]
fn a_refused_secret_is_reported_without_the_secret() {
    let secrets = Secrets::new();
    let config_file = secrets.data.join("gradata.toml");
    let refused = |what: &str, reason: &str, mut command: Command| {
        let (output, stdout, stderr) = support::run(&mut command);
        assert_eq!(output.status.code(), Some(78), "{what}: {stdout}\n{stderr}");
        assert!(
            stderr.contains(reason),
            "{what}: not refused for {reason:?}:\n{stderr}"
        );
        assert_clean(&format!("{what}: stderr"), &stderr);
        assert_absent(&format!("{what}: stdout"), &stdout);
    };
    let with_key_file = |content: String| {
        std::fs::write(&secrets.key_file, content).unwrap();
        secrets.command("http://127.0.0.1:9/ingest", &["status"])
    };
    let with_config = |content: String| {
        std::fs::write(&config_file, content).unwrap();
        let mut command = gradata(&secrets.data);
        command.arg("--config").arg(&config_file).arg("status");
        command
    };
    let more_than_one_line = "more than one line";
    let not_a_key = "spaces, control or non-ASCII";
    refused(
        "a key file of two lines",
        more_than_one_line,
        with_key_file(format!("{KEY}\n{TOKEN}\n")),
    );
    refused(
        "a key with a space",
        not_a_key,
        with_key_file(format!("{KEY} {TOKEN}\n")),
    );
    refused(
        "a key with non-ASCII",
        not_a_key,
        with_key_file(format!("{KEY}é{TOKEN}\n")),
    );
    let mut in_env = gradata(&secrets.data);
    in_env
        .env("GRADATA_API_KEY", format!("{KEY} {TOKEN}"))
        .env("GRADATA_LOG", "trace")
        .arg("status");
    refused("a key variable with a space", not_a_key, in_env);
    refused(
        "a key written into the config file",
        "api_key",
        with_config(format!("[sync]\napi_key = \"{KEY}\"\n")),
    );
    refused(
        "a token written into the config file",
        "token",
        with_config(format!("[api]\ntoken = \"{TOKEN}\"\n")),
    );
    refused(
        "a key in the config file, unquoted",
        "gradata.toml",
        with_config(format!("[sync]\napi_key_file = {KEY}\n")),
    );
}

/// `Debug` of the loaded configuration, and of the secrets' own types, shows neither secret.
#[test]
fn debug_output_redacts_both_secrets() {
    let secrets = Secrets::new();
    let env: Environment = [
        (
            "GRADATA_API_TOKEN_FILE",
            secrets.token_file.to_str().unwrap(),
        ),
        ("GRADATA_CONFIG", ""),
        ("HOME", secrets.data.to_str().unwrap()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    let flags = Flags {
        data_dir: Some(secrets.data.clone()),
        api_key_file: Some(secrets.key_file.clone()),
        ..Flags::default()
    };
    let config = Config::load(&flags, &env).unwrap();
    assert!(
        config.sync.engine.api_key.is_some(),
        "the key was not loaded"
    );
    assert!(config.api.token.is_some(), "the token was not loaded");
    assert_clean("Config {:?}", &format!("{config:?}"));
    assert_clean("Config {:#?}", &format!("{config:#?}"));
    assert_clean("SyncConfig", &format!("{:?}", config.sync));
    assert_clean("ApiKey", &format!("{:?}", gradata::sync::ApiKey::new(KEY)));
    assert_clean(
        "LocalToken",
        &format!("{:?}", gradata::api::guard::LocalToken::new(TOKEN)),
    );
    assert!(format!("{config:?}").contains("redacted"), "{config:?}");
}

/// The needles themselves: if `forms` found nothing, a leak would go unseen.
#[test]
fn the_forms_of_a_secret_are_what_a_leak_would_show() {
    assert_eq!(base64(b"s3cret-Token", b'+', b'/'), "czNjcmV0LVRva2Vu");
    assert!(forms(KEY).contains(&"e2b8d605".to_owned()));
    let leaky = format!("key={}", base64(KEY.as_bytes(), b'-', b'_'));
    assert!(secrets().iter().any(|secret| leaky.contains(secret)));
}
