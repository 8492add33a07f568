//! SIGHUP: what a reload may change while serving (the sync engine, the API's settings, the header
//! deadline of new connections, the retention of synced rows, the log filter) and which changed
//! keys only a restart applies. A rejected configuration leaves the running one in force.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{Reload, brain_id};
use crate::api;
use crate::config::{self, Config};
use crate::store::Store;
use crate::sync::{self, Engine, Status};

/// Where a reload puts what it built. The daemon holds both senders; the worker and the routes
/// hold the receivers.
pub(super) struct Swaps<'a> {
    pub(super) engines: &'a watch::Sender<Engine>,
    pub(super) api_settings: &'a watch::Sender<Arc<api::Settings>>,
    /// Read by the server for each new connection.
    pub(super) header_timeout: &'a watch::Sender<Duration>,
    /// Read by the retention task at each purge.
    pub(super) retention: &'a watch::Sender<Duration>,
}

/// Builds and validates the new configuration, then swaps the sync engine and the API's settings
/// (token, hosts, origins, limits, `brain_id`), the header deadline of new connections and the
/// retention of synced rows; on any error keeps the old configuration in force
/// and says why. A changed `log.filter` replaces the running one. Every changed key that only a
/// restart applies is named in a warning.
pub(super) async fn apply(
    current: Config,
    reload: &Reload,
    swaps: Swaps<'_>,
    store: &Store,
    status: &Status,
) -> Config {
    let rejected = |err: &dyn std::fmt::Display| {
        tracing::error!(error = %err, "configuration reload rejected; the running configuration stays in force");
    };
    let new = match reload() {
        Ok(new) => new,
        Err(err) => {
            rejected(&err);
            return current;
        }
    };
    let old_engine = swaps.engines.borrow().clone();
    let concurrency = if new.sync.engine.max_concurrency == current.sync.engine.max_concurrency {
        old_engine.concurrency().clone()
    } else {
        sync::Concurrency::new(new.sync.engine.concurrency, new.sync.engine.max_concurrency)
    };
    let policy = sync::RetryPolicy::new(new.sync.engine.backoff_base, new.sync.engine.backoff_cap);
    let engine = match Engine::with_parts(
        store.clone(),
        new.sync.engine.clone(),
        status.clone(),
        old_engine.metrics().clone(),
        concurrency,
        policy,
    ) {
        Ok(engine) => engine,
        Err(err) => {
            rejected(&err);
            return current;
        }
    };
    // The data directory is not reloaded, so a derived brain id is the one read at start.
    let brain_id = match brain_id(&Config {
        data_dir: current.data_dir.clone(),
        ..new.clone()
    })
    .await
    {
        Ok(id) => id,
        Err(err) => {
            rejected(&err);
            return current;
        }
    };
    // Which keys only a restart applies is declared with each option.
    for key in config::changes_needing_restart(&current, &new) {
        tracing::warn!(
            key,
            "changed setting not applied: it takes effect only at the next restart"
        );
    }
    swaps.engines.send_replace(engine);
    swaps.header_timeout.send_replace(new.api.header_timeout);
    swaps.retention.send_replace(new.store.synced_retention);
    let running_room = Arc::clone(&swaps.api_settings.borrow().body_room);
    swaps
        .api_settings
        .send_replace(Arc::new(api_settings(&new, brain_id, Some(running_room))));

    match new.sync.engine.disabled_reason() {
        Some(reason) => {
            tracing::warn!(reason = %reason, "configuration reloaded; cloud sync is disabled")
        }
        None => {
            tracing::info!(key_source = %new.sync.engine.api_key_source, "configuration reloaded")
        }
    }
    // Last, so that the records above still pass the filter the operator had when asking.
    if new.log.filter != current.log.filter {
        if let Err(err) = crate::logging::set_filter(&new.log.filter) {
            tracing::warn!(error = %err, "log filter not replaced; the old one stays in force");
        }
    }
    new
}

/// The API's reloadable settings, from the configuration and the resolved `brain_id`. The body
/// room in force is kept when its size did not change, so that the shares requests hold in it
/// still count; a new size takes a new room (requests in flight finish in the old one).
pub(super) fn api_settings(
    config: &Config,
    brain_id: String,
    running_room: Option<Arc<api::BodyRoom>>,
) -> api::Settings {
    let body_room = running_room
        .filter(|room| room.bytes() == config.api.max_buffered_body_bytes)
        .unwrap_or_else(|| Arc::new(api::BodyRoom::new(config.api.max_buffered_body_bytes)));
    api::Settings {
        brain_id,
        limits: api_limits(config),
        guards: api::Guards {
            allowed_hosts: config.api.allowed_hosts.clone(),
            cors_origins: config.api.cors_origins.clone(),
            token: config.api.token.clone(),
        },
        body_room,
    }
}

fn api_limits(config: &Config) -> api::Limits {
    api::Limits {
        body: api::BodyLimits {
            max_bytes: config.api.max_body_bytes,
            timeout: config.api.body_timeout,
        },
        max_events_per_request: config.api.max_events_per_request,
        max_pending_rows: config.pending_row_limit(),
        max_pending_bytes: config.store.max_pending_bytes,
        degraded_after: config.api.degraded_after,
        manual_drain: config.drain.budget,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(pairs: &[(&str, &str)]) -> Config {
        let mut env: crate::config::Environment = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (name, value) in [
            ("GRADATA_CONFIG", ""),
            ("GRADATA_DATA_DIR", "/nonexistent/data"),
            ("GRADATA_SYNC_API_KEY_FILE", "/nonexistent/api-key"),
        ] {
            env.insert(name.to_owned(), value.to_owned());
        }
        Config::load(&crate::config::Flags::default(), &env).unwrap()
    }

    /// A reload keeps the body room in force, with the shares requests hold in it, unless its
    /// size changed.
    #[test]
    fn a_reload_keeps_the_body_room_unless_its_size_changed() {
        let config = config_with(&[]);
        let first = api_settings(&config, "b".to_owned(), None);
        assert_eq!(first.body_room.bytes(), 64 << 20);
        let same = api_settings(&config, "b".to_owned(), Some(Arc::clone(&first.body_room)));
        assert!(Arc::ptr_eq(&first.body_room, &same.body_room));
        let larger = config_with(&[("GRADATA_API_MAX_BUFFERED_BODY_BYTES", "134217728")]);
        let resized = api_settings(&larger, "b".to_owned(), Some(Arc::clone(&first.body_room)));
        assert!(!Arc::ptr_eq(&first.body_room, &resized.body_room));
        assert_eq!(resized.body_room.bytes(), 128 << 20);
    }
}
