//! The options' declarations against the file's shape, the shipped example config and the docs,
//! and the old names of renamed options.

use std::time::Duration;

use super::super::*;
use super::{env, flags_with_config, write};

#[test]
fn every_option_is_declared_once_and_matches_the_file_shape() {
    let defaults = toml::Table::try_from(RawConfig::default()).unwrap();
    let mut from_struct = BTreeMap::new();
    record_sources(&defaults, "", &Source::Default, &mut from_struct);
    let mut declared: Vec<&str> = OPTIONS
        .iter()
        .map(|o| o.key)
        .filter(|k| *k != "data_dir")
        .collect();
    declared.sort_unstable();
    let from_struct: Vec<&str> = from_struct.keys().map(String::as_str).collect();
    assert_eq!(declared, from_struct);
    let mut envs: Vec<&str> = OPTIONS.iter().map(|o| o.env).collect();
    envs.sort_unstable();
    envs.dedup();
    assert_eq!(
        envs.len(),
        OPTIONS.len(),
        "an environment variable is declared twice"
    );
}

/// The example shipped as /etc/gradata/gradata.toml sets every option to its default and names
/// every environment variable, so installing it changes nothing and documents everything.
#[test]
fn shipped_example_config_is_every_option_at_its_default() {
    let example = include_str!("../../../packaging/gradata.toml");
    let parsed: RawConfig = toml::from_str(example).unwrap();
    assert_eq!(
        toml::Table::try_from(&parsed).unwrap(),
        toml::Table::try_from(RawConfig::default()).unwrap()
    );
    for (key, env) in option_keys() {
        let name = key.rsplit('.').next().unwrap();
        assert!(
            example.contains(&format!("{name} =")),
            "{key} is missing from the example"
        );
        assert!(
            example.contains(env),
            "{env} is not mentioned in the example"
        );
    }
}

/// The shipped example is the text generated from the options' declarations, so an option added,
/// removed or renamed there changes it. To refresh it after changing a declaration:
/// `cargo run -- generate config > packaging/gradata.toml`.
#[test]
fn shipped_example_config_is_generated_from_the_declarations() {
    let shipped = include_str!("../../../packaging/gradata.toml");
    assert!(
        shipped == options::example(),
        "packaging/gradata.toml differs from the declarations; run \
         `cargo run -- generate config > packaging/gradata.toml`"
    );
    for option in OPTIONS {
        let last = option.doc.last().copied().unwrap_or_default();
        assert!(
            last.contains(&format!("Env: {}", option.env))
                || option.doc.concat().contains(option.env),
            "the documentation of {} does not name {}",
            option.key,
            option.env
        );
    }
}

/// Every `group.key` the docs name in backquotes is a declared option (or an old name of one, where
/// the docs tell of the renaming): a removed option cannot linger there.
#[test]
fn the_docs_name_only_declared_options() {
    let docs = [
        ("README.md", include_str!("../../../README.md")),
        (
            "docs/operations.md",
            include_str!("../../../docs/operations.md"),
        ),
        ("docs/api.md", include_str!("../../../docs/api.md")),
        (
            "docs/compatibility.md",
            include_str!("../../../docs/compatibility.md"),
        ),
        (
            "docs/ARCHITECTURE.md",
            include_str!("../../../docs/ARCHITECTURE.md"),
        ),
    ];
    let groups: Vec<&str> = OPTIONS
        .iter()
        .filter_map(|option| option.key.split_once('.').map(|(group, _)| group))
        .collect();
    let mut named = 0;
    for (file, text) in docs {
        for quoted in text.split('`').skip(1).step_by(2) {
            let Some((group, name)) = quoted.split_once('.') else {
                continue;
            };
            let is_key = groups.contains(&group)
                && !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
            // Files (`api.rs`, `store.md`) have the same shape; no option is named like them.
            if !is_key || matches!(name, "rs" | "md" | "toml") {
                continue;
            }
            named += 1;
            assert!(
                OPTIONS.iter().any(|option| option.key == quoted)
                    || ALIASES.iter().any(|alias| alias.old_key == quoted),
                "{file} names `{quoted}`, which is not an option nor an old name of one"
            );
        }
    }
    assert!(named > 20, "only {named} options found in the docs");
}

/// The drain bounds' old keys and variables still load, with the same values; in one file the old
/// key beside the new one is an error, and in the environment the new variable wins and the old
/// one is reported as ignored.
#[test]
fn the_drain_bounds_old_names_are_still_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let budgets = |config: &Config| (config.drain.budget, config.drain.shutdown);
    let expected = (
        Budget {
            max_rows: 77,
            max_time: Duration::from_secs(12),
        },
        Budget {
            max_rows: 77,
            max_time: Duration::from_secs(3),
        },
    );
    let old_file = write(
        dir.path(),
        "old.toml",
        "[sync]\nbatch_size = 20\nstartup_drain_max_rows = 77\nstartup_drain_max_secs = 12.0\n\
         shutdown_drain_max_secs = 3.0\n",
    );
    let new_file = write(
        dir.path(),
        "new.toml",
        "[sync]\nbatch_size = 20\n[drain]\nmax_rows = 77\nmax_secs = 12.0\nshutdown_max_secs = 3.0\n",
    );
    let old = Config::load(&flags_with_config(&old_file), &env(&[])).unwrap();
    let new = Config::load(&flags_with_config(&new_file), &env(&[])).unwrap();
    assert_eq!(budgets(&old), expected);
    assert_eq!(budgets(&new), expected);
    assert_eq!(old.sync.engine.batch_size, 20);

    let old_env = [
        ("GRADATA_CONFIG", ""),
        ("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", "77"),
        ("GRADATA_SYNC_STARTUP_DRAIN_MAX_SECS", "12"),
        ("GRADATA_SYNC_SHUTDOWN_DRAIN_MAX_SECS", "3"),
    ];
    let config = Config::load(&Flags::default(), &env(&old_env)).unwrap();
    assert_eq!(budgets(&config), expected);
    assert_eq!(unknown_variables(&env(&old_env)), []);
    // An old variable is the option's environment layer: above the file, whatever the file calls it.
    let config = Config::load(
        &flags_with_config(&new_file),
        &env(&[("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", "5")]),
    )
    .unwrap();
    assert_eq!(config.drain.budget.max_rows, 5);
    let config = Config::load(
        &flags_with_config(&old_file),
        &env(&[("GRADATA_DRAIN_MAX_ROWS", "6")]),
    )
    .unwrap();
    assert_eq!(config.drain.budget.max_rows, 6);
    // A bad value under the old variable is named as given.
    let err = Config::load(
        &Flags::default(),
        &env(&[
            ("GRADATA_CONFIG", ""),
            ("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", "many"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(
            "environment variable GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS: drain.max_rows: expected"
        ),
        "{err}"
    );

    // Both variables: the new one wins and the old one is named as ignored.
    let both = [
        ("GRADATA_CONFIG", ""),
        ("GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS", "77"),
        ("GRADATA_DRAIN_MAX_ROWS", "88"),
    ];
    let config = Config::load(&Flags::default(), &env(&both)).unwrap();
    assert_eq!(config.drain.budget.max_rows, 88);
    assert_eq!(
        unknown_variables(&env(&both)),
        [UnknownVariable {
            name: "GRADATA_SYNC_STARTUP_DRAIN_MAX_ROWS".to_owned(),
            suggestion: Some("GRADATA_DRAIN_MAX_ROWS"),
        }]
    );

    // Both keys in one file: an error naming both, whatever their values.
    let both_file = write(
        dir.path(),
        "both.toml",
        "[sync]\nstartup_drain_max_rows = 77\n[drain]\nmax_rows = 77\n",
    );
    let err = Config::load(&flags_with_config(&both_file), &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "both.toml: sync.startup_drain_max_rows: given beside drain.max_rows, its new name; keep only drain.max_rows"
        ),
        "{err}"
    );
}

/// The keys a reload leaves for a restart are those declared `restart`, and `data_dir`; a changed
/// `live` option is not among them.
#[test]
fn only_the_options_declared_restart_wait_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let load = |pairs: &[(&str, &str)]| {
        let mut pairs = pairs.to_vec();
        pairs.push(("GRADATA_CONFIG", ""));
        Config::load(&Flags::default(), &env(&pairs)).unwrap()
    };
    let data_dir = dir.path().display().to_string();
    let running = load(&[("GRADATA_DATA_DIR", &data_dir)]);
    let other_dir = dir.path().join("other").display().to_string();
    let new = load(&[
        ("GRADATA_DATA_DIR", &other_dir),
        ("GRADATA_LOG_FORMAT", "json"),
        ("GRADATA_LOG", "debug"),
        ("GRADATA_LISTEN", "127.0.0.1:9999"),
        ("GRADATA_STORE_SYNCHRONOUS", "normal"),
        ("GRADATA_STORE_BUSY_TIMEOUT_SECS", "9"),
        ("GRADATA_SYNC_BATCH_SIZE", "7"),
        ("GRADATA_API_MAX_BODY_BYTES", "4096"),
    ]);
    assert_eq!(
        changes_needing_restart(&running, &new),
        [
            "data_dir",
            "log.format",
            "api.listen",
            "store.synchronous",
            "store.busy_timeout_secs"
        ]
    );
    let same_dir = load(&[
        ("GRADATA_DATA_DIR", &data_dir),
        ("GRADATA_LOG", "debug"),
        ("GRADATA_SYNC_BATCH_SIZE", "7"),
    ]);
    assert!(changes_needing_restart(&running, &same_dir).is_empty());
}
