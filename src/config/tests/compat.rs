//! The Python daemon's and the plugin's variables: those gradata honours act as their setting's
//! environment layer, those it ignores are not reported as unknown.

use super::super::*;
use super::{env, flags_with_config, write};

/// The variables of the Python daemon and the plugin that gradata honours act as the environment
/// layer of their setting: above the file, below gradata's own variable.
#[test]
fn the_originals_variables_map_to_settings() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "g.toml",
        "data_dir = \"/from/file\"\n[api]\nlisten = \"127.0.0.1:1\"\n",
    );
    let load = |pairs: &[(&str, &str)]| Config::load(&flags_with_config(&file), &env(pairs));
    let config = load(&[
        ("GRADATA_BRAIN_DIR", "/home/dev/.gradata/brain"),
        ("GRADATA_DAEMON_PORT", "9000"),
        ("GRADATA_API_KEY", "k"),
        ("GRADATA_DISABLE_WRITE_THROUGH", "1"),
    ])
    .unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/home/dev/.gradata/brain"));
    assert_eq!(config.api.listen, ["127.0.0.1:9000", "127.0.0.1:8765"]);
    assert!(!config.sync.engine.enabled);
    assert!(config.sync.engine.disabled_reason().is_some());

    let config = load(&[
        ("GRADATA_BRAIN_DIR", "/home/dev/.gradata/brain"),
        ("GRADATA_DATA_DIR", "/from/env"),
        ("GRADATA_DISABLE_WRITE_THROUGH", "0"),
        ("GRADATA_API_KEY", "k"),
    ])
    .unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/from/env"));
    assert_eq!(config.api.listen, ["127.0.0.1:1"]);
    assert!(config.sync.engine.enabled);

    // A host beyond loopback needs the token, and the error names the plugin's variable.
    let err = load(&[("GRADATA_DAEMON_HOST", "0.0.0.0")])
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("environment variable GRADATA_DAEMON_HOST: api.listen: 0.0.0.0:7342"),
        "{err}"
    );
    // The SDK's level names work in GRADATA_LOG.
    let config = load(&[("GRADATA_LOG", "WARNING")]).unwrap();
    assert_eq!(config.log.filter, "warn");
}

/// Every variable of the original that gradata ignores is accepted without a warning.
#[test]
fn the_originals_ignored_variables_are_not_unknown() {
    let pairs: Vec<(&str, &str)> = IGNORED_VARIABLES
        .iter()
        .map(|(name, _)| (*name, "1"))
        .chain(OTHER_VARIABLES.iter().map(|name| (*name, "1")))
        .collect();
    assert_eq!(unknown_variables(&env(&pairs)), []);
    assert_eq!(
        unknown_variables(&env(&[("GRADATA_TELEMETRI", "1")])),
        [UnknownVariable {
            name: "GRADATA_TELEMETRI".to_owned(),
            suggestion: None,
        }]
    );
}
