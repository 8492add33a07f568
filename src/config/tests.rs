//! Loading the configuration from each layer, and the errors bad values get.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::sync::ApiKey;

fn env(pairs: &[(&str, &str)]) -> Environment {
    let mut env: Environment = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.entry("HOME".to_owned())
        .or_insert_with(|| "/home/test".to_owned());
    // Point away from /etc so the host's files never leak into a test.
    env.entry("GRADATA_SYNC_API_KEY_FILE".to_owned())
        .or_insert_with(|| "/nonexistent/api-key".to_owned());
    env
}

fn flags_with_config(path: &Path) -> Flags {
    Flags {
        config: Some(path.to_path_buf()),
        ..Flags::default()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

mod compat;
mod options;

#[test]
fn an_empty_gradata_config_reads_no_file_at_all() {
    let env_with = |value: &str| env(&[("GRADATA_CONFIG", value)]);
    assert_eq!(super::config_file(&Flags::default(), &env_with("")), None);
    assert_eq!(
        super::config_file(&Flags::default(), &env_with("/x.toml")),
        Some((PathBuf::from("/x.toml"), true))
    );
    assert_eq!(
        super::config_file(&Flags::default(), &env(&[])),
        Some((PathBuf::from(DEFAULT_CONFIG_FILE), false))
    );
}

#[test]
fn defaults_without_any_file() {
    let config = Config::load(&Flags::default(), &env(&[("GRADATA_CONFIG", "")])).unwrap();
    assert_eq!(
        config.data_dir,
        PathBuf::from("/home/test/.local/state/gradata")
    );
    assert_eq!(config.api.listen, ["127.0.0.1:7342", "127.0.0.1:8765"]);
    assert_eq!(config.store.synchronous, store::Synchronous::Full);
    assert_eq!(
        config.sync.engine.ingest_url.as_str(),
        sync::DEFAULT_INGEST_URL
    );
    assert_eq!(
        config.drain.budget,
        Budget {
            max_rows: 3200,
            max_time: Duration::from_secs(30)
        }
    );
    assert!(config.sync.engine.api_key.is_none());
}

/// `api.listen` is a list; a single string (config files written before it was one) is a list of
/// one, and `GRADATA_LISTEN` splits on commas.
#[test]
fn listen_takes_a_list_or_one_address() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[api]\nlisten = \"127.0.0.1:9000\"\n",
            vec!["127.0.0.1:9000"],
        ),
        (
            "[api]\nlisten = [\"127.0.0.1:9000\", \"/run/g.sock\"]\n",
            vec!["127.0.0.1:9000", "/run/g.sock"],
        ),
    ] {
        let file = write(dir.path(), "g.toml", text);
        let config = Config::load(&flags_with_config(&file), &env(&[])).unwrap();
        assert_eq!(config.api.listen, expected, "{text}");
    }
    let file = write(dir.path(), "g.toml", "[api]\nlisten = 9000\n");
    let err = Config::load(&flags_with_config(&file), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("api.listen") && err.contains("an address or a list of addresses"),
        "{err}"
    );
    let config = Config::load(
        &Flags::default(),
        &env(&[
            ("GRADATA_CONFIG", ""),
            ("GRADATA_LISTEN", "127.0.0.1:9000, 127.0.0.1:9001"),
        ]),
    )
    .unwrap();
    assert_eq!(config.api.listen, ["127.0.0.1:9000", "127.0.0.1:9001"]);
}

#[test]
fn precedence_is_defaults_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "g.toml",
        "data_dir = \"/from/file\"\n[sync]\nbatch_size = 10\nconcurrency = 2\ningest_url = \"https://file.example/ingest\"\n",
    );
    let env = env(&[
        ("GRADATA_DATA_DIR", "/from/env"),
        ("GRADATA_SYNC_BATCH_SIZE", "20"),
    ]);
    let config = Config::load(&flags_with_config(&file), &env).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/from/env"));
    assert_eq!(config.sync.engine.batch_size, 20);
    assert_eq!(config.sync.engine.concurrency, 2);
    assert_eq!(
        config.sync.engine.ingest_url.as_str(),
        "https://file.example/ingest"
    );
    let flags = Flags {
        data_dir: Some("/from/flag".into()),
        ingest_url: Some("http://127.0.0.1:9/x".into()),
        ..flags_with_config(&file)
    };
    let config = Config::load(&flags, &env).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
    assert_eq!(
        config.sync.engine.ingest_url.as_str(),
        "http://127.0.0.1:9/x"
    );
}

#[test]
fn data_dir_falls_back_through_systemd_and_xdg() {
    let load = |pairs: &[(&str, &str)]| {
        Config::load(&Flags::default(), &env(pairs))
            .unwrap()
            .data_dir
    };
    assert_eq!(
        load(&[
            ("GRADATA_CONFIG", ""),
            ("STATE_DIRECTORY", "/var/lib/gradata:/var/lib/other")
        ]),
        PathBuf::from("/var/lib/gradata")
    );
    assert_eq!(
        load(&[("GRADATA_CONFIG", ""), ("XDG_STATE_HOME", "/x")]),
        PathBuf::from("/x/gradata")
    );
}

/// An empty `GRADATA_*` value means the same as an unset one, for every option: not the current
/// directory, not "sync off", not "log nothing", not an error.
#[test]
fn empty_environment_values_are_unset() {
    let base = [
        ("GRADATA_CONFIG", ""),
        ("STATE_DIRECTORY", "/var/lib/gradata"),
    ];
    let defaults = Config::load(&Flags::default(), &env(&base)).unwrap();
    for (key, variable) in option_keys() {
        if variable == "GRADATA_SYNC_API_KEY_FILE" {
            continue; // `env` points it away from /etc; unset, it would read the host's key
        }
        for blank in ["", " "] {
            let mut pairs = base.to_vec();
            pairs.push((variable, blank));
            let config = Config::load(&Flags::default(), &env(&pairs))
                .unwrap_or_else(|err| panic!("{variable}={blank:?}: {err}"));
            assert_eq!(
                format!("{config:?}"),
                format!("{defaults:?}"),
                "{variable}={blank:?} ({key}) is not the same as unset"
            );
        }
    }
    for (variable, blank) in [
        ("GRADATA_CLOUD_SYNC_DISABLE", ""),
        ("RUST_LOG", ""),
        ("GRADATA_API_KEY_FILE", ""),
        ("GRADATA_API_KEY_FILE", " "),
    ] {
        let mut pairs = base.to_vec();
        pairs.push((variable, blank));
        let config = Config::load(&Flags::default(), &env(&pairs)).unwrap();
        assert_eq!(format!("{config:?}"), format!("{defaults:?}"), "{variable}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "empty-dir.toml", "data_dir = \"\"\n");
    let config = Config::load(&flags_with_config(&file), &env(&base[1..])).unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/gradata"));
}

#[test]
fn errors_name_the_key_and_where_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = write(dir.path(), "unknown.toml", "[sync]\nbatchsize = 3\n");
    let message = Config::load(&flags_with_config(&unknown), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("unknown.toml") && message.contains("batchsize"),
        "{message}"
    );

    let wrong_type = write(dir.path(), "type.toml", "[sync]\nconcurrency = \"many\"\n");
    let message = Config::load(&flags_with_config(&wrong_type), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("type.toml") && message.contains("concurrency"),
        "{message}"
    );

    let range = write(dir.path(), "range.toml", "[sync]\nconcurrency = 0\n");
    let message = Config::load(&flags_with_config(&range), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("range.toml") && message.contains("sync.concurrency"),
        "{message}"
    );

    let message = Config::load(
        &Flags::default(),
        &env(&[("GRADATA_CONFIG", ""), ("GRADATA_SYNC_BATCH_SIZE", "lots")]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("GRADATA_SYNC_BATCH_SIZE") && message.contains("sync.batch_size"),
        "{message}"
    );

    let message = Config::load(
        &Flags::default(),
        &env(&[
            ("GRADATA_CONFIG", ""),
            ("GRADATA_CLOUD_INGEST_URL", "http://example.com/ingest"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        message.contains("GRADATA_CLOUD_INGEST_URL") && message.contains("loopback"),
        "{message}"
    );

    // Room for bodies in memory smaller than one body of the largest size: none would be read.
    let room = write(
        dir.path(),
        "room.toml",
        "[api]\nmax_body_bytes = 65536\nmax_buffered_body_bytes = 32768\n",
    );
    let message = Config::load(&flags_with_config(&room), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("room.toml")
            && message.contains("api.max_buffered_body_bytes")
            && message.contains("at least api.max_body_bytes (65536)"),
        "{message}"
    );

    let missing = Config::load(&flags_with_config(&dir.path().join("nope.toml")), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.toml"), "{missing}");
}

#[test]
fn api_key_resolution_order_and_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    write(&creds, CREDENTIAL_NAME, "from-credential\n");
    let file_key = write(dir.path(), "file-key", "from-flag-file");
    let conf_key = write(dir.path(), "conf-key", "from-config");
    let base = [
        ("GRADATA_CONFIG", ""),
        ("GRADATA_SYNC_API_KEY_FILE", conf_key.to_str().unwrap()),
    ];
    let key_of = |flags: &Flags, extra: &[(&str, &str)]| {
        let mut pairs = base.to_vec();
        pairs.extend_from_slice(extra);
        Config::load(flags, &env(&pairs)).unwrap().sync.engine
    };
    let creds_dir = creds.to_str().unwrap();
    let flags = Flags {
        api_key_file: Some(file_key.clone()),
        ..Flags::default()
    };
    let all = [
        ("GRADATA_API_KEY", "from-env"),
        ("CREDENTIALS_DIRECTORY", creds_dir),
    ];
    assert_eq!(key_of(&flags, &all).api_key, ApiKey::new("from-flag-file"));
    assert_eq!(
        key_of(&Flags::default(), &all).api_key,
        ApiKey::new("from-env")
    );
    assert_eq!(
        key_of(&Flags::default(), &all[1..]).api_key,
        ApiKey::new("from-credential")
    );
    let settings = key_of(&Flags::default(), &[]);
    assert_eq!(settings.api_key, ApiKey::new("from-config"));
    let config = Config::load(&flags, &env(&base)).unwrap();
    assert!(
        !format!("{config:?}").contains("from-flag-file"),
        "the key leaked into Debug"
    );

    let none = Config::load(&Flags::default(), &env(&[("GRADATA_CONFIG", "")]))
        .unwrap()
        .sync
        .engine;
    assert!(none.api_key.is_none());
    assert!(
        none.disabled_reason()
            .unwrap()
            .contains("GRADATA_API_KEY is unset")
    );

    let missing = Flags {
        api_key_file: Some(dir.path().join("typo")),
        ..Flags::default()
    };
    assert!(
        Config::load(&missing, &env(&base))
            .unwrap_err()
            .to_string()
            .contains("typo")
    );
}

#[test]
fn kill_switch_disables_sync() {
    let config = Config::load(
        &Flags::default(),
        &env(&[
            ("GRADATA_CONFIG", ""),
            ("GRADATA_API_KEY", "k"),
            ("GRADATA_CLOUD_SYNC_DISABLE", "1"),
        ]),
    )
    .unwrap();
    assert!(!config.sync.engine.enabled);
    assert!(config.sync.engine.disabled_reason().is_some());
}

#[test]
fn unknown_variables_are_listed_with_the_closest_known_one() {
    let found = unknown_variables(&env(&[
        ("GRADATA_INGEST_URL", "https://example.com"),
        ("GRADATA_DATADIR", "/x"),
        ("GRADATA_LOG_LEVEL", "debug"),
        ("GRADATA_WHATEVER", "1"),
        ("GRADATA_SYNC_BATCH_SIZE", "10"),
        ("GRADATA_CONFIG", ""),
        ("GRADATA_API_KEY", "k"),
        ("GRADATA_TEST_STALL_WORKER_AFTER_SECS", "1"),
    ]));
    let found: Vec<(&str, Option<&str>)> = found
        .iter()
        .map(|unknown| (unknown.name.as_str(), unknown.suggestion))
        .collect();
    assert_eq!(
        found,
        [
            ("GRADATA_DATADIR", Some("GRADATA_DATA_DIR")),
            ("GRADATA_INGEST_URL", Some("GRADATA_CLOUD_INGEST_URL")),
            ("GRADATA_LOG_LEVEL", Some("GRADATA_LOG")),
            ("GRADATA_WHATEVER", None),
        ]
    );
}

/// Every error of a bad file is one line, key first (systemd keeps the first line of `STATUS=`).
#[test]
fn file_errors_are_one_line_with_the_key_first() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "[sync]\nbatch_size = \"x\"\n",
            "sync.batch_size: invalid type: string \"x\", expected u64",
        ),
        (
            "[sync]\nconcurency = 4\n",
            "sync.concurency: unknown field `concurency`, expected one of",
        ),
        ("colour = 1\n", "colour: unknown field `colour`"),
        ("[sync]\nbatch_size = = 3\n", "line 2, column 14: "),
        (
            "[api]\nlisten = 1\n",
            "api.listen: invalid type: integer `1`, expected an address or a list of addresses",
        ),
    ] {
        let file = write(dir.path(), "bad.toml", text);
        let message = Config::load(&flags_with_config(&file), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            !message.contains('\n'),
            "{text:?} gave several lines: {message}"
        );
        let expected = format!("{}: {expected}", file.display());
        assert!(message.starts_with(&expected), "{text:?}: {message}");
    }
}

/// A user's instance (`XDG_RUNTIME_DIR` set) reads the SDK's key file, `$GRADATA_HOME/key` or
/// `~/.gradata/key`, after every other source; the system service (no `XDG_RUNTIME_DIR`) never
/// does.
#[test]
fn a_users_instance_reads_the_sdks_key_file_last() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".gradata")).unwrap();
    write(&home.join(".gradata"), "key", "gk_live_home\n");
    let gradata_home = dir.path().join("gradata-home");
    std::fs::create_dir(&gradata_home).unwrap();
    write(&gradata_home, "key", "gk_live_gradata_home\n");
    let home = home.to_str().unwrap();
    let load = |extra: &[(&str, &str)]| {
        let mut pairs = vec![("GRADATA_CONFIG", ""), ("HOME", home)];
        pairs.extend_from_slice(extra);
        Config::load(&Flags::default(), &env(&pairs))
            .unwrap()
            .sync
            .engine
    };
    let user = [("XDG_RUNTIME_DIR", "/run/user/1000")];
    let found = load(&user);
    assert_eq!(found.api_key, ApiKey::new("gk_live_home"));
    assert!(
        found.api_key_source.contains(".gradata/key"),
        "{}",
        found.api_key_source
    );

    let system = load(&[]);
    assert_eq!(system.api_key, None);
    assert!(
        system.api_key_source.contains("XDG_RUNTIME_DIR unset"),
        "{}",
        system.api_key_source
    );

    let relocated = load(&[
        ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ("GRADATA_HOME", gradata_home.to_str().unwrap()),
    ]);
    assert_eq!(relocated.api_key, ApiKey::new("gk_live_gradata_home"));

    let from_env = load(&[
        ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ("GRADATA_API_KEY", "from-env"),
    ]);
    assert_eq!(from_env.api_key, ApiKey::new("from-env"));

    // A bad key in it is an error naming the file, as for every key file.
    write(&gradata_home, "key", "gk_live\n# comment\n");
    let err = Config::load(
        &Flags::default(),
        &env(&[
            ("GRADATA_CONFIG", ""),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ("GRADATA_HOME", gradata_home.to_str().unwrap()),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("gradata-home/key") && err.contains("more than one line"),
        "{err}"
    );
}
