//! Captures `tracing` records emitted on the current thread, with their fields.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// One captured record.
#[derive(Debug, Clone)]
pub struct Record {
    pub level: tracing::Level,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

/// The records captured so far.
#[derive(Debug, Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<Record>>>);

impl Captured {
    pub fn records(&self) -> Vec<Record> {
        self.0.lock().unwrap().clone()
    }

    /// Records whose message starts with `prefix`.
    pub fn with_message(&self, prefix: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.message.starts_with(prefix))
            .collect()
    }
}

struct CaptureLayer(Captured);

#[derive(Default)]
struct Fields {
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().to_owned(), text);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .insert(field.name().to_owned(), value.to_owned());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.0.lock().unwrap().push(Record {
            level: *event.metadata().level(),
            message: fields.message,
            fields: fields.fields,
        });
    }
}

/// Captures every record emitted on this thread until the guard is dropped.
pub fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(CaptureLayer(captured.clone()));
    let guard = tracing::subscriber::set_default(subscriber);
    // A callsite first reached on another test's thread while this subscriber was being
    // registered can keep the interest it computed without it, and then skip this thread's
    // records: recompute every callsite's interest now that this subscriber is in place.
    tracing::callsite::rebuild_interest_cache();
    (captured, guard)
}
