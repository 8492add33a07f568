//! The service's Prometheus metrics, all named `gradata_…`, rendered by `GET /metrics`.
//!
//! Counters are recorded where things happen (the drain engine counts deliveries, the API counts
//! requests and accepted events); queue gauges are read from the store at scrape time, so they are
//! exact, not sampled. [`Metrics`] is a cheap-clone handle: the daemon creates the registry and
//! hands it to those who record (the API's state and each sync engine, across reloads).
//!
//! A leaf: it names no other module of the crate; the store's counts come in as a
//! [`QueueReading`] at each scrape.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What happened to one delivery attempt.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(
    non_camel_case_types,
    reason = "label values are snake_case in the exposition"
)]
pub enum Outcome {
    /// 2xx.
    delivered,
    /// Transient failure, retried later.
    retried,
    /// Rejected for good, moved to dead.
    dead,
    /// 429 or 503 with `Retry-After`.
    throttled,
    /// 401/403 or a wrong URL: row kept, sending paused.
    refused,
}

impl Outcome {
    /// Every outcome, so each counter is exposed (at 0) from the first scrape on.
    const ALL: [Outcome; 5] = [
        Outcome::delivered,
        Outcome::retried,
        Outcome::dead,
        Outcome::throttled,
        Outcome::refused,
    ];
}

/// The event kinds the outbox accepts (its `kind` column's CHECK constraint).
const KINDS: [&str; 3] = ["correction", "lesson", "event"];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    trigger: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The registry and every metric in it.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    deliveries: Family<OutcomeLabels, Counter>,
    events_accepted: Family<KindLabels, Counter>,
    drain_seconds: Family<TriggerLabels, Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    queue_rows: Family<StateLabels, Gauge>,
    queue_pending_bytes: Gauge,
    oldest_pending_age: Gauge<f64, AtomicU64>,
    sync_state: Family<StateLabels, Gauge>,
    http_body_bytes_held: Gauge,
    http_body_room_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gradata");
        let deliveries = Family::<OutcomeLabels, Counter>::default();
        let events_accepted = Family::<KindLabels, Counter>::default();
        let drain_seconds = Family::<TriggerLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.001, 4.0, 10))) as fn() -> Histogram,
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        let queue_rows = Family::<StateLabels, Gauge>::default();
        let queue_pending_bytes = Gauge::default();
        let oldest_pending_age = Gauge::<f64, AtomicU64>::default();
        let sync_state = Family::<StateLabels, Gauge>::default();
        let http_body_bytes_held = Gauge::default();
        let http_body_room_bytes = Gauge::default();
        registry.register(
            "http_body_bytes_held",
            "Bytes of request bodies held in memory now (whole KiB)",
            http_body_bytes_held.clone(),
        );
        registry.register(
            "http_body_room_bytes",
            "Most bytes of request bodies held in memory at once (api.max_buffered_body_bytes)",
            http_body_room_bytes.clone(),
        );
        registry.register(
            "deliveries",
            "Delivery attempts by outcome",
            deliveries.clone(),
        );
        registry.register(
            "events_accepted",
            "Events committed to the outbox, by kind",
            events_accepted.clone(),
        );
        registry.register(
            "drain_duration_seconds",
            "Duration of drains, by trigger",
            drain_seconds.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "queue_rows",
            "Rows in the outbox by state",
            queue_rows.clone(),
        );
        registry.register(
            "queue_pending_bytes",
            "Payload bytes of pending rows",
            queue_pending_bytes.clone(),
        );
        registry.register(
            "queue_oldest_pending_age_seconds",
            "Age of the oldest pending row (0 when none)",
            oldest_pending_age.clone(),
        );
        registry.register(
            "sync_state",
            "1 for the current sync state",
            sync_state.clone(),
        );
        // A counter that has never been incremented would otherwise be absent, and `rate()` or an
        // alert on it sees "no data" instead of 0 (e.g. deliveries while sync is disabled).
        for outcome in Outcome::ALL {
            drop(deliveries.get_or_create(&OutcomeLabels { outcome }));
        }
        for kind in KINDS {
            drop(events_accepted.get_or_create(&KindLabels {
                kind: kind.to_owned(),
            }));
        }
        Metrics {
            inner: Arc::new(Inner {
                registry,
                deliveries,
                events_accepted,
                drain_seconds,
                http_requests,
                queue_rows,
                queue_pending_bytes,
                oldest_pending_age,
                sync_state,
                http_body_bytes_held,
                http_body_room_bytes,
            }),
        }
    }

    /// Counts one delivery attempt.
    pub fn delivery(&self, outcome: Outcome) {
        self.inner
            .deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts accepted events of a kind.
    pub fn events_accepted(&self, kind: &str, count: u64) {
        self.inner
            .events_accepted
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc_by(count);
    }

    /// Records how long a drain took.
    pub fn drain_finished(&self, trigger: &str, elapsed: Duration) {
        self.inner
            .drain_seconds
            .get_or_create(&TriggerLabels {
                trigger: trigger.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one HTTP request.
    pub fn http_request(&self, route: &str, status: u16) {
        self.inner
            .http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status,
            })
            .inc();
    }

    /// Sets the body room's gauges: the bytes requests hold in it now, and its size.
    pub fn body_room(&self, held: usize, room: usize) {
        let bytes = |n: usize| gauge(u64::try_from(n).unwrap_or(u64::MAX));
        self.inner.http_body_bytes_held.set(bytes(held));
        self.inner.http_body_room_bytes.set(bytes(room));
    }

    /// Renders the exposition text, after setting the gauges from a fresh reading.
    pub fn render(&self, queue: &QueueReading, sync_state: &str, all_states: &[&str]) -> String {
        let inner = &self.inner;
        for (state, rows) in [
            ("pending", queue.pending),
            ("dead", queue.dead),
            ("synced", queue.synced),
        ] {
            inner
                .queue_rows
                .get_or_create(&StateLabels {
                    state: state.to_owned(),
                })
                .set(gauge(rows));
        }
        inner.queue_pending_bytes.set(gauge(queue.pending_bytes));
        inner.oldest_pending_age.set(
            queue
                .oldest_pending_age
                .map_or(0.0, |age| age.as_secs_f64()),
        );
        for state in all_states {
            let value = i64::from(*state == sync_state);
            inner
                .sync_state
                .get_or_create(&StateLabels {
                    state: (*state).to_owned(),
                })
                .set(value);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &inner.registry).is_err() {
            // Writing to a String cannot fail; keep the scrape valid regardless.
            let _ = writeln!(text, "# EOF");
        }
        text
    }
}

/// The queue figures a scrape reports.
#[derive(Debug, Clone, Default)]
pub struct QueueReading {
    /// Pending rows.
    pub pending: u64,
    /// Dead rows.
    pub dead: u64,
    /// Synced rows not yet purged.
    pub synced: u64,
    /// Payload bytes of pending rows.
    pub pending_bytes: u64,
    /// Age of the oldest pending row.
    pub oldest_pending_age: Option<Duration>,
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prefixed_metrics_with_labels() {
        let metrics = Metrics::new();
        metrics.delivery(Outcome::delivered);
        metrics.delivery(Outcome::delivered);
        metrics.events_accepted("correction", 3);
        metrics.http_request("/v1/events", 202);
        metrics.drain_finished("startup", Duration::from_millis(20));
        let queue = QueueReading {
            pending: 4,
            dead: 1,
            synced: 9,
            pending_bytes: 400,
            oldest_pending_age: Some(Duration::from_secs(7)),
        };
        metrics.body_room(3072, 65536);
        let text = metrics.render(&queue, "idle", &["idle", "sending"]);
        for line in [
            "gradata_deliveries_total{outcome=\"delivered\"} 2",
            "gradata_events_accepted_total{kind=\"correction\"} 3",
            "gradata_http_requests_total{route=\"/v1/events\",status=\"202\"} 1",
            "gradata_queue_rows{state=\"pending\"} 4",
            "gradata_queue_rows{state=\"dead\"} 1",
            "gradata_queue_oldest_pending_age_seconds 7.0",
            "gradata_sync_state{state=\"idle\"} 1",
            "gradata_sync_state{state=\"sending\"} 0",
            "gradata_drain_duration_seconds_count{trigger=\"startup\"} 1",
            "gradata_http_body_bytes_held 3072",
            "gradata_http_body_room_bytes 65536",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn counters_are_exposed_at_zero_before_anything_happens() {
        let text = Metrics::new().render(&QueueReading::default(), "disabled", &["disabled"]);
        for outcome in ["delivered", "retried", "dead", "throttled", "refused"] {
            let line = format!("gradata_deliveries_total{{outcome=\"{outcome}\"}} 0");
            assert!(text.contains(&line), "missing {line:?} in:\n{text}");
        }
        for kind in ["correction", "lesson", "event"] {
            let line = format!("gradata_events_accepted_total{{kind=\"{kind}\"}} 0");
            assert!(text.contains(&line), "missing {line:?} in:\n{text}");
        }
    }
}
