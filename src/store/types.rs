//! The values that cross the store's boundary: what goes in, what comes out, what a settlement says.

use std::fmt;
use std::time::{Duration, SystemTime};

/// Primary key of a `sync_queue` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct RowId(pub i64);

impl fmt::Display for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The identity of an event, used by the cloud to deduplicate. Printable ASCII, 1 to 128 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EventId(String);

/// Longest accepted `event_id`: a ULID is 26, a UUID 36; 128 leaves room for prefixed schemes.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// Why a string is not a valid [`EventId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEventId {
    /// Empty string.
    #[error("event_id is empty")]
    Empty,
    /// Longer than [`MAX_EVENT_ID_LEN`].
    #[error("event_id is longer than {MAX_EVENT_ID_LEN} bytes")]
    TooLong,
    /// Contains a character outside printable ASCII (space included: ids travel in headers).
    #[error("event_id must be printable ASCII without spaces")]
    NotPrintable,
}

impl EventId {
    /// Validates a client-supplied id.
    pub fn parse(id: &str) -> Result<EventId, InvalidEventId> {
        if id.is_empty() {
            Err(InvalidEventId::Empty)
        } else if id.len() > MAX_EVENT_ID_LEN {
            Err(InvalidEventId::TooLong)
        } else if !id.bytes().all(|b| b.is_ascii_graphic()) {
            Err(InvalidEventId::NotPrintable)
        } else {
            Ok(EventId(id.to_owned()))
        }
    }

    /// A fresh ULID: sortable by creation time and unique without coordination.
    pub fn generate() -> EventId {
        EventId(ulid::Ulid::new().to_string())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind column, constrained by the original DDL's CHECK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A correction of an agent's output.
    Correction,
    /// A lesson learned.
    Lesson,
    /// Any other event.
    Event,
}

impl Kind {
    /// The value stored in the `kind` column (and the payload key of the event's data).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Correction => "correction",
            Kind::Lesson => "lesson",
            Kind::Event => "event",
        }
    }

    /// Parses the `kind` column; `None` for anything else.
    pub fn parse(kind: &str) -> Option<Kind> {
        match kind {
            "correction" => Some(Kind::Correction),
            "lesson" => Some(Kind::Lesson),
            "event" => Some(Kind::Event),
            _ => None,
        }
    }
}

/// An event to commit. The payload is what will be POSTed, verbatim (DESIGN §4):
/// `{"brain_id": …, "event_id": …, "<kind>": {…}}`.
#[derive(Debug, Clone)]
pub struct NewEvent {
    event_id: EventId,
    kind: Kind,
    payload_json: String,
}

impl NewEvent {
    /// Builds the payload from its parts.
    pub fn new(
        brain_id: &str,
        event_id: EventId,
        kind: Kind,
        data: &impl serde::Serialize,
    ) -> NewEvent {
        // Written straight from the borrowed parts: building a JSON object would deep-copy `data`
        // on every event. The keys come out sorted, as serde_json prints the object
        // `{"brain_id", "event_id", "<kind>"}` (its maps are sorted), so payloads are the same as
        // they always were.
        let mut fields: [(&str, Field<'_, _>); 3] = [
            ("brain_id", Field::Text(brain_id)),
            ("event_id", Field::Text(event_id.as_str())),
            (kind.as_str(), Field::Data(data)),
        ];
        fields.sort_by_key(|(key, _)| *key);
        let mut payload = Vec::with_capacity(256);
        payload.push(b'{');
        for (n, (key, value)) in fields.iter().enumerate() {
            if n > 0 {
                payload.push(b',');
            }
            payload.push(b'"');
            payload.extend_from_slice(key.as_bytes());
            payload.extend_from_slice(b"\":");
            // Writing JSON into a Vec fails only for a value whose `Serialize` fails, which a
            // JSON value, a string or a plain struct never does; such a field would be `null`.
            let start = payload.len();
            if value.write(&mut payload).is_err() {
                payload.truncate(start);
                payload.extend_from_slice(b"null");
            }
        }
        payload.push(b'}');
        NewEvent {
            payload_json: String::from_utf8(payload)
                // serde_json writes UTF-8 only, and the keys are `&str`: this never replaces.
                .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned()),
            event_id,
            kind,
        }
    }

    /// The event's id.
    pub fn event_id(&self) -> &EventId {
        &self.event_id
    }

    /// The event's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The payload that will be posted.
    pub fn payload_json(&self) -> &str {
        &self.payload_json
    }
}

/// One value of the payload object.
enum Field<'a, T> {
    Text(&'a str),
    Data(&'a T),
}

impl<T: serde::Serialize> Field<'_, T> {
    fn write(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Field::Text(text) => serde_json::to_writer(out, text),
            Field::Data(data) => serde_json::to_writer(out, data),
        }
    }
}

/// What happened to one enqueued event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// A new row.
    Inserted(RowId),
    /// A row with this `event_id` already existed; nothing was written.
    Duplicate(RowId),
}

/// Primary key of a row of the brain's `events` table (the id the Python SDK returns for an event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct EventRowId(pub i64);

impl fmt::Display for EventRowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A row of the brain's `events` table, its columns as text already (the brain formats them as
/// the Python SDK does; the store only inserts them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrainEventRow {
    /// `ts`: ISO 8601 UTC.
    pub ts: String,
    /// `session`.
    pub session: i64,
    /// `type`.
    pub event_type: String,
    /// `source`.
    pub source: String,
    /// `data_json`: a JSON object.
    pub data_json: String,
    /// `tags_json`: a JSON array of strings.
    pub tags_json: String,
    /// `valid_from`.
    pub valid_from: String,
    /// `valid_until`; `None` is NULL.
    pub valid_until: Option<String>,
}

/// An outbox row to commit with a brain event, and the queue limit it must fit in.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    /// The event for the cloud.
    pub event: NewEvent,
    /// The queue limit; `None` for none. When the event does not fit, it is skipped and the
    /// brain event still commits.
    pub limit: Option<QueueLimit>,
}

/// What became of the outbox half of [`crate::store::Store::record_brain_event`].
#[derive(Debug)]
pub enum OutboxOutcome {
    /// No outbox row was asked for.
    NotAsked,
    /// Committed as a new pending row.
    Queued(RowId),
    /// A row with this `event_id` was already there; nothing was written.
    Duplicate(RowId),
    /// The queue was at its limit; nothing was written to it.
    SkippedQueueFull,
    /// The insert failed (and was rolled back alone); the brain event committed all the same.
    Failed(super::Error),
}

/// The answer of [`crate::store::Store::record_brain_event`], given once the transaction is
/// durable.
#[derive(Debug)]
pub struct RecordedEvent {
    /// The `events` row.
    pub row: EventRowId,
    /// The outbox row's fate.
    pub outbox: OutboxOutcome,
}

/// Which pending rows a claim may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimFrom {
    /// Rows whose backoff timer has expired (the background worker).
    Due,
    /// Every pending row with an id above this one, whatever its timer says. Explicit drains walk
    /// the queue once with this cursor, so a row that fails during a drain is not retried in it.
    After(RowId),
}

/// A leased row, ready to be posted.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    /// Row id.
    pub id: RowId,
    /// The `event_id` column; `None` for rows the original daemon wrote without one.
    pub event_id: Option<String>,
    /// The body to post, exactly as stored.
    pub payload_json: String,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// The outcome of one delivery attempt, as the store records it.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// Delivered (2xx).
    Synced {
        /// Row id.
        id: RowId,
        /// HTTP status.
        status: u16,
    },
    /// Not delivered; try again at `next_attempt_at`. Counts an attempt.
    Retry {
        /// Row id.
        id: RowId,
        /// HTTP status, if a response came.
        status: Option<u16>,
        /// What went wrong, for operators.
        error: String,
        /// When the row becomes due again.
        next_attempt_at: SystemTime,
    },
    /// Rejected for good; kept as dead until retried by hand. Counts an attempt.
    Dead {
        /// Row id.
        id: RowId,
        /// HTTP status.
        status: u16,
        /// The status and a preview of the response body.
        error: String,
    },
    /// Not attempted, or attempted while the sync is paused (401, 404…): released unchanged but
    /// for the last error. Does not count an attempt.
    Release {
        /// Row id.
        id: RowId,
        /// HTTP status, if a response came.
        status: Option<u16>,
        /// What went wrong, if anything.
        error: Option<String>,
    },
}

impl Settlement {
    /// The row this settlement is about.
    pub fn id(&self) -> RowId {
        match self {
            Settlement::Synced { id, .. }
            | Settlement::Retry { id, .. }
            | Settlement::Dead { id, .. }
            | Settlement::Release { id, .. } => *id,
        }
    }
}

/// Which rows `retry` makes pending again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrySelector {
    /// Every dead row.
    AllDead,
    /// These rows, if dead or pending (a pending row becomes due now).
    Ids(Vec<RowId>),
}

/// A row's state (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowState {
    /// Waiting to be delivered.
    Pending,
    /// Rejected by the server; kept for inspection and manual retry.
    Dead,
    /// Delivered.
    Synced,
}

impl RowState {
    /// The SQL condition selecting rows in this state. Invariant: the only definition of the states.
    pub(crate) fn sql_condition(self) -> &'static str {
        match self {
            RowState::Pending => "synced_at IS NULL AND dead_at IS NULL",
            RowState::Dead => "dead_at IS NOT NULL AND synced_at IS NULL",
            RowState::Synced => "synced_at IS NOT NULL",
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RowState::Pending => "pending",
            RowState::Dead => "dead",
            RowState::Synced => "synced",
        }
    }
}

/// Clamps a lease so a bogus configuration cannot produce a lease in the past.
pub(crate) fn lease_until(now: SystemTime, lease: Duration) -> SystemTime {
    now + lease.max(Duration::from_secs(1))
}

/// The most the outbox may hold pending (`store.max_pending_rows`, `store.max_pending_bytes`).
/// Checked by the writer inside the transaction that would cross it, so concurrent writers can
/// never overshoot it together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimit {
    /// Pending rows.
    pub max_rows: u64,
    /// Pending payload bytes.
    pub max_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_id_validation() {
        for (input, expected) in [
            ("01HZX", Ok(())),
            ("", Err(InvalidEventId::Empty)),
            ("a b", Err(InvalidEventId::NotPrintable)),
            ("é", Err(InvalidEventId::NotPrintable)),
            ("a\n", Err(InvalidEventId::NotPrintable)),
        ] {
            assert_eq!(EventId::parse(input).map(|_| ()), expected, "{input:?}");
        }
        assert_eq!(
            EventId::parse(&"x".repeat(129)),
            Err(InvalidEventId::TooLong)
        );
        assert!(EventId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn payload_has_the_contract_shape() {
        let event = NewEvent::new(
            "brain-1",
            EventId::parse("E1").unwrap(),
            Kind::Lesson,
            &serde_json::json!({"x": 1}),
        );
        let payload: serde_json::Value = serde_json::from_str(event.payload_json()).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({"brain_id": "brain-1", "event_id": "E1", "lesson": {"x": 1}})
        );
    }

    #[test]
    fn payload_bytes_are_those_of_the_json_object() {
        let data =
            serde_json::json!({"z": "\"quoted\" é\n", "a": [1, 2.5, null], "m": {"k": true}});
        for kind in [Kind::Correction, Kind::Lesson, Kind::Event] {
            let event = NewEvent::new("br\"ain", EventId::parse("E\\1").unwrap(), kind, &data);
            let mut object = serde_json::Map::new();
            object.insert("brain_id".to_owned(), "br\"ain".into());
            object.insert("event_id".to_owned(), "E\\1".into());
            object.insert(kind.as_str().to_owned(), data.clone());
            assert_eq!(
                event.payload_json(),
                serde_json::Value::Object(object).to_string(),
                "{kind:?}"
            );
        }
    }
}
