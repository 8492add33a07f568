//! The brain's event log: the `events` table of `system.db` and `<brain>/events.jsonl`, written as
//! the Python SDK 0.6.0 writes them, so that the SDK and the
//! plugin's tools read gradata's events as their own.
//!
//! [`BrainEvent`] is one event, built purely ([`BrainEvent::new`]): the timestamp in Python's
//! `isoformat`, `data` with `platform_source` added when absent (from a [`PlatformEnv`] snapshot,
//! never read from the process here), and the tags enriched by event type ([`enrich_tags`]).
//! [`EventLog`] records it: the `events` row commits through the store's writer, in the same
//! transaction as the outbox row a route may send with it; then the line is appended to
//! `events.jsonl`.
//!
//! **Order of the two writes, and why.** The row commits first; the JSONL line is appended only
//! once the row is durable. A failed commit is then reported as "not logged" with nothing written
//! anywhere, so a client that retries does not leave a duplicate line behind. A failed append is
//! logged and does not undo the committed row: 0.6.0 too keeps an event when either of its two
//! writes succeeds, and the database row is the durable record (the JSONL is a portable copy,
//! appended without an fsync).
//!
//! It knows nothing of HTTP or of what the routes put in `data`.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use nix::fcntl::{Flock, FlockArg};

use super::pyjson::{self, Ascii, Object, Value};
use crate::store::{self, BrainEventRow, OutboxEntry, OutboxOutcome, Store};

/// File name of the JSONL copy of the event log, in the brain directory.
pub const EVENTS_JSONL: &str = "events.jsonl";

/// `platform_source` when no environment variable names one.
pub const DEFAULT_PLATFORM_SOURCE: &str = "raw-python";

/// The environment variable that names the platform outright.
const PLATFORM_SOURCE_ENV: &str = "GRADATA_PLATFORM_SOURCE";

/// Environment variables that reveal the platform, in the order they are tried, and the name each
/// gives.
const PLATFORM_MARKERS: [(&str, &str); 9] = [
    ("CLAUDECODE", "claude-code"),
    ("CLAUDE_CODE", "claude-code"),
    ("CURSOR", "cursor"),
    ("CURSOR_TRACE_ID", "cursor"),
    ("WINDSURF", "windsurf"),
    ("WINDSURF_SESSION_ID", "windsurf"),
    ("GRADATA_MCP_SERVER", "mcp-server"),
    ("ANTHROPIC_API_KEY", "anthropic-sdk"),
    ("OPENAI_API_KEY", "openai-sdk"),
];

/// The platform the events say they come from, decided once from an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformEnv {
    platform_source: String,
}

impl PlatformEnv {
    /// Decides from `lookup`, which answers an environment variable's value: a non-empty
    /// `$GRADATA_PLATFORM_SOURCE`, else the first marker variable set to a non-empty value, else
    /// `raw-python`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> PlatformEnv {
        let set = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let platform_source = set(PLATFORM_SOURCE_ENV)
            .or_else(|| {
                PLATFORM_MARKERS
                    .iter()
                    .find(|(name, _)| set(name).is_some())
                    .map(|(_, platform)| (*platform).to_owned())
            })
            .unwrap_or_else(|| DEFAULT_PLATFORM_SOURCE.to_owned());
        PlatformEnv { platform_source }
    }

    /// Decides from this process's environment (read once, here).
    pub fn from_process() -> PlatformEnv {
        PlatformEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// The `platform_source` value.
    pub fn platform_source(&self) -> &str {
        &self.platform_source
    }
}

/// One event of the brain's log.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BrainEvent {
    /// UTC time, as Python's `datetime.isoformat()` writes it.
    pub ts: String,
    /// The session number; 0 when the route has none.
    pub session: i64,
    /// The event type (`CHECKPOINT`, `IMPLICIT_FEEDBACK`, …).
    #[serde(rename = "type")]
    pub event_type: String,
    /// What emitted it (`plugin.hook`, …).
    pub source: String,
    /// The payload, keys in insertion order.
    pub data: Object,
    /// The tags, enrichment included.
    pub tags: Vec<String>,
    /// Equal to `ts`.
    pub valid_from: String,
    /// Always `None` (JSON `null`) for a new event.
    pub valid_until: Option<String>,
}

impl BrainEvent {
    /// The event as 0.6.0 builds it: `data` gets `platform_source` when it has none, and `tags`
    /// are enriched for the event type ([`enrich_tags`]).
    pub fn new(
        at: SystemTime,
        session: i64,
        event_type: &str,
        source: &str,
        mut data: Object,
        tags: Vec<String>,
        platform: &PlatformEnv,
    ) -> BrainEvent {
        if !data.contains_key("platform_source") {
            data.insert(
                "platform_source".to_owned(),
                Value::from(platform.platform_source()),
            );
        }
        let tags = enrich_tags(event_type, &data, tags);
        let ts = python_utc_isoformat(at);
        BrainEvent {
            valid_from: ts.clone(),
            ts,
            session,
            event_type: event_type.to_owned(),
            source: source.to_owned(),
            data,
            tags,
            valid_until: None,
        }
    }

    /// The line for `events.jsonl`, newline included: the keys in 0.6.0's order, characters
    /// beyond ASCII as they are.
    pub fn jsonl_line(&self) -> String {
        let mut line = to_python_json(self, Ascii::Keep);
        line.push('\n');
        line
    }

    /// The row for the `events` table: `data_json` and `tags_json` with ASCII escapes, as 0.6.0
    /// writes them there.
    pub fn row(&self) -> BrainEventRow {
        BrainEventRow {
            ts: self.ts.clone(),
            session: self.session,
            event_type: self.event_type.clone(),
            source: self.source.clone(),
            data_json: to_python_json(&self.data, Ascii::Escape),
            tags_json: to_python_json(&self.tags, Ascii::Escape),
            valid_from: self.valid_from.clone(),
            valid_until: self.valid_until.clone(),
        }
    }
}

/// JSON of values that always serialize (strings, numbers, ordered objects).
fn to_python_json<T: serde::Serialize + ?Sized>(value: &T, ascii: Ascii) -> String {
    // Serializing a string, an ordered value or a plain struct of them cannot fail.
    pyjson::to_string(value, ascii).unwrap_or_default()
}

/// UTC time as Python's `datetime.now(UTC).isoformat()` writes it:
/// `2026-04-02T10:00:00.123456+00:00`, without the fraction when the microsecond is 0.
pub fn python_utc_isoformat(at: SystemTime) -> String {
    let micros = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.subsec_micros());
    let text = if micros == 0 {
        humantime::format_rfc3339_seconds(at).to_string()
    } else {
        humantime::format_rfc3339_micros(at).to_string()
    };
    match text.strip_suffix('Z') {
        Some(rest) => format!("{rest}+00:00"),
        None => text,
    }
}

/// The cognitive-load class of each correction category, as 0.6.0 tags corrections.
const COGNITIVE_LOAD: [(&str, &str); 18] = [
    ("FACTUAL", "intrinsic"),
    ("CONTENT", "intrinsic"),
    ("DATA_INTEGRITY", "intrinsic"),
    ("ENTITIES", "intrinsic"),
    ("CONTEXT", "intrinsic"),
    ("STYLE", "extraneous"),
    ("TONE", "extraneous"),
    ("COMMUNICATION", "extraneous"),
    ("PRESENTATION", "extraneous"),
    ("COST", "extraneous"),
    ("PROCESS", "germane"),
    ("DRAFTING", "germane"),
    ("ACCURACY", "germane"),
    ("THOROUGHNESS", "germane"),
    ("ARCHITECTURE", "germane"),
    ("CONSTRAINT", "germane"),
    ("STRATEGY", "germane"),
    ("POSITIONING", "germane"),
];

/// Output types the SDK files under a canonical name; others are kept as given.
const OUTPUT_ALIASES: [(&str, &str); 9] = [
    ("email_draft", "email"),
    ("email_reply", "email"),
    ("follow_up", "email"),
    ("call_script", "cold_call_script"),
    ("call_prep", "cold_call_script"),
    ("demo_prep", "cheat_sheet"),
    ("meeting_prep", "cheat_sheet"),
    ("linkedin_dm", "linkedin_message"),
    ("linkedin_connect", "linkedin_message"),
];

/// The channel an activity type of a `DELTA_TAG` event implies; other activities imply none.
const ACTIVITY_CHANNELS: [(&str, &str); 6] = [
    ("email_sent", "email"),
    ("email_received", "email"),
    ("call", "phone"),
    ("meeting", "meeting"),
    ("demo", "demo"),
    ("linkedin", "linkedin"),
];

/// Appends to the caller's `tags` what 0.6.0 derives from the event's type and data, each only
/// when no tag with that prefix (the text before the first `:`) is there yet:
/// - `CORRECTION`: `category:<data.category>`, and `cognitive_load:<class>` when the category
///   (upper-cased) has one (intrinsic, extraneous or germane);
/// - `OUTPUT`: `output:<data.output_type>`, a few aliases mapped to their canonical name;
/// - `DELTA_TAG`: `prospect:<data.prospect>`, and `channel:<c>` when `data.activity_type` implies
///   one.
///
/// A value that Python finds false (absent, empty, 0, null) adds nothing.
pub fn enrich_tags(event_type: &str, data: &Object, mut tags: Vec<String>) -> Vec<String> {
    let has_prefix = |tags: &[String], prefix: &str| {
        tags.iter().any(|tag| {
            tag.split_once(':')
                .is_some_and(|(existing, _)| existing == prefix)
        })
    };
    let field = |key: &str| data.get(key).filter(|value| !value.is_falsy());
    match event_type {
        "CORRECTION" => {
            let category = field("category");
            if let Some(category) = category {
                if !has_prefix(&tags, "category") {
                    tags.push(format!("category:{}", python_str(category)));
                }
            }
            let load = category
                .and_then(Value::as_str)
                .map(str::to_uppercase)
                .and_then(|category| lookup(&COGNITIVE_LOAD, &category));
            if let Some(load) = load {
                if !has_prefix(&tags, "cognitive_load") {
                    tags.push(format!("cognitive_load:{load}"));
                }
            }
        }
        "OUTPUT" => {
            if let Some(output) = field("output_type") {
                if !has_prefix(&tags, "output") {
                    let name = python_str(output);
                    let name = lookup(&OUTPUT_ALIASES, &name).map_or(name, str::to_owned);
                    tags.push(format!("output:{name}"));
                }
            }
        }
        "DELTA_TAG" => {
            if let Some(prospect) = field("prospect") {
                if !has_prefix(&tags, "prospect") {
                    tags.push(format!("prospect:{}", python_str(prospect)));
                }
            }
            let channel = data
                .get("activity_type")
                .and_then(Value::as_str)
                .and_then(|activity| lookup(&ACTIVITY_CHANNELS, activity));
            if let Some(channel) = channel {
                if !has_prefix(&tags, "channel") {
                    tags.push(format!("channel:{channel}"));
                }
            }
        }
        _ => {}
    }
    tags
}

fn lookup(table: &[(&str, &'static str)], key: &str) -> Option<&'static str> {
    table
        .iter()
        .find(|(name, _)| *name == key)
        .map(|(_, value)| *value)
}

/// A value as Python's `str()` prints it inside a tag, for the scalars a tag is made of; arrays
/// and objects (which no client sends there) are printed as JSON, not as Python's repr.
fn python_str(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Null => "None".to_owned(),
        Value::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() => pyjson::float_repr(float),
            _ => number.to_string(),
        },
        Value::Array(_) | Value::Object(_) => value.to_string(),
    }
}

/// What became of a recorded event.
#[derive(Debug)]
pub struct Logged {
    /// The `events` row.
    pub row: store::EventRowId,
    /// The outbox row's fate.
    pub outbox: OutboxOutcome,
    /// Whether the line reached `events.jsonl` (a failure is logged; the row stands).
    pub jsonl_appended: bool,
}

/// Records brain events: the row through the store's writer, then the JSONL line. Cheap to
/// clone; clones share the append lock.
#[derive(Debug, Clone)]
pub struct EventLog {
    store: Store,
    jsonl_path: PathBuf,
    /// Serializes this process's appends, so that lines never interleave and each is one
    /// `write`. Held only inside the blocking task that appends, never across an `.await`.
    append: Arc<Mutex<()>>,
}

impl EventLog {
    /// The log of the brain in `brain_dir`, whose database `store` has open.
    pub fn new(store: Store, brain_dir: &Path) -> EventLog {
        EventLog {
            store,
            jsonl_path: brain_dir.join(EVENTS_JSONL),
            append: Arc::new(Mutex::new(())),
        }
    }

    /// Commits `event` (and `outbox`, in the same transaction; see
    /// [`Store::record_brain_event`]), then appends its line to `events.jsonl`. An error means
    /// nothing was written.
    pub async fn record(
        &self,
        event: &BrainEvent,
        outbox: Option<OutboxEntry>,
    ) -> Result<Logged, store::Error> {
        let recorded = self.store.record_brain_event(event.row(), outbox).await?;
        let line = event.jsonl_line();
        let path = self.jsonl_path.clone();
        let lock = Arc::clone(&self.append);
        let appended = tokio::task::spawn_blocking(move || {
            let _one_writer = lock.lock().unwrap_or_else(PoisonError::into_inner);
            append_line(&path, &line)
        })
        .await;
        let jsonl_appended = match appended {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                tracing::error!(
                    path = %self.jsonl_path.display(),
                    error = %err,
                    row = recorded.row.0,
                    "could not append the event to the JSONL log; the database row stands"
                );
                false
            }
            Err(err) => {
                tracing::error!(error = %err, "the JSONL append did not finish");
                false
            }
        };
        Ok(Logged {
            row: recorded.row,
            outbox: recorded.outbox,
            jsonl_appended,
        })
    }
}

/// Appends one line with one `write` on an `O_APPEND` descriptor, under an exclusive `flock` of
/// the file, which the Python SDK takes around its own appends.
fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(crate::store::PRIVATE_FILE_MODE)
        .open(path)?;
    let mut file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| std::io::Error::from(errno))?;
    file.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests;
