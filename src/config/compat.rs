//! The environment of the Python Gradata daemon and the Gradata plugin, read as gradata's own
//! settings where they mean one (docs/compatibility.md, "Environment"), and the list of those
//! that gradata accepts without acting on them, each with the reason.
//!
//! A variable honoured here is the environment layer of the setting it maps to: it beats the
//! config file, and gradata's own variable for that setting beats it. It knows nothing of what a
//! valid value is beyond what the mapping needs; `validate` checks the result.

use std::collections::BTreeMap;

use super::layers::insert;
use super::{DASHBOARD_LISTEN, Environment, Error, Source, non_empty};

/// Host the plugin calls when `GRADATA_DAEMON_HOST` is unset.
const PLUGIN_HOST: &str = "127.0.0.1";
/// Port the plugin calls when `GRADATA_DAEMON_PORT` is unset.
const PLUGIN_PORT: &str = "7342";

/// Variables of the Python daemon, its SDK and the plugin that gradata accepts without a warning
/// and does not act on, with the reason (the man page and docs/compatibility.md list them).
pub const IGNORED_VARIABLES: [(&str, &str); 17] = [
    (
        "GRADATA_DAEMON_IDLE_TIMEOUT",
        "the service does not exit when idle; systemd socket activation starts it on demand",
    ),
    (
        "GRADATA_TELEMETRY",
        "the plugin's opt-in; gradata sends no telemetry",
    ),
    (
        "GRADATA_SYNC_TICK_SEC",
        "the sync worker wakes on every write and on its retry timers, not on a tick",
    ),
    (
        "GRADATA_CLOUD_API_URL",
        "POST /sync drains the outbox to the ingest URL (GRADATA_CLOUD_INGEST_URL)",
    ),
    (
        "GRADATA_ENDPOINT",
        "the session-end cloud sync it configures is not done; events go through the outbox",
    ),
    (
        "GRADATA_CLOUD_API_BASE",
        "the session-end cloud sync it configures is not done; events go through the outbox",
    ),
    (
        "GRADATA_CONFIG_DIR",
        "the Python daemon did not read it either; gradata's config is GRADATA_CONFIG",
    ),
    (
        "GRADATA_HOOK_DAEMON_PORT",
        "the port of the SDK's separate hook daemon, which gradata does not replace",
    ),
    (
        "GRADATA_ENCRYPTION_KEY",
        "encrypted brains are not supported; their system.db does not open",
    ),
    (
        "GRADATA_PLATFORM_SOURCE",
        "the platform_source of brain events (read by the brain's event writer, not the configuration)",
    ),
    (
        "GRADATA_MCP_SERVER",
        "the platform_source of brain events (read by the brain's event writer, not the configuration)",
    ),
    (
        "GRADATA_LLM_PROVIDER",
        "the LLM fallback of /correct is not done",
    ),
    (
        "GRADATA_LLM_BASE_URL",
        "the LLM fallback of /correct is not done",
    ),
    (
        "GRADATA_LLM_MODEL",
        "the LLM fallback of /correct is not done",
    ),
    (
        "GRADATA_LLM_AUTH",
        "the LLM fallback of /correct is not done",
    ),
    (
        "GRADATA_API_URL",
        "the embedding calls of /correct and /end-session are not done",
    ),
    (
        "GRADATA_FORCE_SYSTEM_PIP",
        "read by the plugin's installer only",
    ),
];

/// Puts the honoured variables of the original into `merged`, recording where each value came
/// from in `sources`. Called after gradata's own variables were applied, so each mapping first
/// checks that gradata's own variable for the setting is unset.
pub(super) fn apply(
    env: &Environment,
    merged: &mut toml::Table,
    sources: &mut BTreeMap<String, Source>,
) -> Result<(), Error> {
    if let Some(listen) = plugin_listen(env)? {
        let (addresses, origin) = listen;
        insert(
            merged,
            "api.listen",
            toml::Value::Array(addresses.into_iter().map(toml::Value::String).collect()),
        );
        sources.insert("api.listen".to_owned(), Source::Env(origin));
    }
    if non_empty(env, "GRADATA_DATA_DIR").is_none() {
        if let Some(dir) = non_empty(env, "GRADATA_BRAIN_DIR") {
            insert(merged, "data_dir", toml::Value::String(dir.clone()));
            sources.insert("data_dir".to_owned(), Source::Env("GRADATA_BRAIN_DIR"));
        }
    }
    // The SDK's switch: `1` (only `1`) turns off everything it would send to the cloud. gradata
    // reads it as its kill switch: events stay in the outbox, nothing is sent.
    if non_empty(env, "GRADATA_DISABLE_WRITE_THROUGH").is_some_and(|value| value.trim() == "1") {
        insert(merged, "sync.enabled", toml::Value::Boolean(false));
        sources.insert(
            "sync.enabled".to_owned(),
            Source::Env("GRADATA_DISABLE_WRITE_THROUGH"),
        );
    }
    Ok(())
}

/// The listen addresses the plugin's `GRADATA_DAEMON_HOST` and `GRADATA_DAEMON_PORT` ask for:
/// the address the plugin will call, then the dashboard's, unless `GRADATA_LISTEN` names the
/// addresses itself or neither variable is set. Returns the variable to blame for a bad value.
fn plugin_listen(env: &Environment) -> Result<Option<(Vec<String>, &'static str)>, Error> {
    let host = non_empty(env, "GRADATA_DAEMON_HOST");
    let port = non_empty(env, "GRADATA_DAEMON_PORT");
    if non_empty(env, "GRADATA_LISTEN").is_some() || (host.is_none() && port.is_none()) {
        return Ok(None);
    }
    let origin = if port.is_some() {
        "GRADATA_DAEMON_PORT"
    } else {
        "GRADATA_DAEMON_HOST"
    };
    let port_text = port.map_or(PLUGIN_PORT, |port| port.trim());
    let port: u16 = port_text
        .parse()
        .ok()
        .filter(|&port| port != 0)
        .ok_or_else(|| Error::Invalid {
            key: "api.listen".to_owned(),
            origin: Source::Env("GRADATA_DAEMON_PORT"),
            message: format!("expected a port number from 1 to 65535, got {port_text:?}"),
        })?;
    let host = host.map_or(PLUGIN_HOST, |host| host.trim());
    // The plugin connects by name; the service binds an address, and "localhost" is the one name
    // with a meaning everywhere. Anything else must be an IP address.
    let ip: std::net::IpAddr = if host.eq_ignore_ascii_case("localhost") {
        std::net::Ipv4Addr::LOCALHOST.into()
    } else {
        host.parse().map_err(|_| Error::Invalid {
            key: "api.listen".to_owned(),
            origin: Source::Env("GRADATA_DAEMON_HOST"),
            message: format!(
                "expected an IP address or localhost, got {host:?}; to listen on a name, set GRADATA_LISTEN"
            ),
        })?
    };
    let plugin = std::net::SocketAddr::new(ip, port).to_string();
    let mut addresses = vec![plugin];
    if addresses[0] != DASHBOARD_LISTEN {
        addresses.push(DASHBOARD_LISTEN.to_owned());
    }
    Ok(Some((addresses, origin)))
}

/// `filter` with the Python SDK's level names (`GRADATA_LOG=WARNING`) made tracing's: `EnvFilter`
/// would read `WARNING` as a module name and let nothing else through.
pub(super) fn log_filter(filter: String) -> String {
    match filter.trim().to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" | "fatal" => "error".to_owned(),
        "notset" => "trace".to_owned(),
        _ => filter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_plugin_variables_move_its_listener() {
        for (pairs, expected) in [
            (&[][..], None),
            (
                &[("GRADATA_DAEMON_PORT", "9000")][..],
                Some(vec!["127.0.0.1:9000", "127.0.0.1:8765"]),
            ),
            (
                &[("GRADATA_DAEMON_HOST", "localhost")][..],
                Some(vec!["127.0.0.1:7342", "127.0.0.1:8765"]),
            ),
            (
                &[
                    ("GRADATA_DAEMON_HOST", "::1"),
                    ("GRADATA_DAEMON_PORT", "8000"),
                ][..],
                Some(vec!["[::1]:8000", "127.0.0.1:8765"]),
            ),
            // The plugin pointed at the dashboard's port: one listener, not two on one address.
            (
                &[("GRADATA_DAEMON_PORT", "8765")][..],
                Some(vec!["127.0.0.1:8765"]),
            ),
            // gradata's own variable wins.
            (
                &[
                    ("GRADATA_DAEMON_PORT", "9000"),
                    ("GRADATA_LISTEN", "127.0.0.1:1"),
                ][..],
                None,
            ),
        ] {
            let got = plugin_listen(&env(pairs))
                .unwrap()
                .map(|(addresses, _)| addresses);
            let expected = expected.map(|list| list.iter().map(|s| s.to_string()).collect());
            assert_eq!(got, expected, "{pairs:?}");
        }
        for (pairs, blamed) in [
            (&[("GRADATA_DAEMON_PORT", "0")][..], "GRADATA_DAEMON_PORT"),
            (
                &[("GRADATA_DAEMON_PORT", "70000")][..],
                "GRADATA_DAEMON_PORT",
            ),
            (&[("GRADATA_DAEMON_PORT", "x")][..], "GRADATA_DAEMON_PORT"),
            (
                &[("GRADATA_DAEMON_HOST", "my.host")][..],
                "GRADATA_DAEMON_HOST",
            ),
        ] {
            let err = plugin_listen(&env(pairs)).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("environment variable {blamed}: api.listen")),
                "{err}"
            );
        }
    }

    #[test]
    fn python_level_names_become_tracing_levels() {
        for (given, expected) in [
            ("WARNING", "warn"),
            ("warning", "warn"),
            ("CRITICAL", "error"),
            ("DEBUG", "DEBUG"),
            ("info,gradata::sync=debug", "info,gradata::sync=debug"),
        ] {
            assert_eq!(log_filter(given.to_owned()), expected, "{given}");
        }
    }
}
