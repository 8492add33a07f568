//! [`DatabaseFacts`]: what the manifest says of a brain's `system.db` (tables, events per type
//! and severity, tags, the recall index, the corrections for the convergence), read in one go.
//! SQL only: how the facts are laid out in the manifest is the parent module's.

use std::collections::BTreeMap;

use rusqlite::Connection;
use serde::Serialize;

use crate::brain::graduation::convergence;

/// The most values listed per tag name (a brain can have thousands of distinct tag values).
pub const MAX_TAG_VALUES: usize = 100;

/// The sessions `quality.correction_rate` looks at (the most recent ones with two events or
/// more, as 0.6.0 counts them).
const RATE_SESSIONS: u32 = 10;

/// What the database says, read in one go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatabaseFacts {
    /// Every table, sorted by name.
    pub tables: Vec<String>,
    /// Events per type, by type.
    pub events_by_type: BTreeMap<String, u64>,
    /// The highest integer session number of an event (0 if none).
    pub max_session: i64,
    /// Corrections and outputs in the recent sessions 0.6.0's correction rate looks at.
    pub recent_corrections: u64,
    /// See [`DatabaseFacts::recent_corrections`].
    pub recent_outputs: u64,
    /// CORRECTION events per `data.severity` (`unknown` when missing).
    pub corrections_by_severity: BTreeMap<String, u64>,
    /// Tag names (the part before `:`, or the whole tag) with their distinct values, and how
    /// many events carry the name.
    pub tags: BTreeMap<String, TagFacts>,
    /// Rows of the recall index's content table.
    pub indexed_rows: u64,
    /// Whether this SQLite has FTS5.
    pub fts5: bool,
    /// Every CORRECTION event's share of the convergence.
    pub corrections: Vec<convergence::Correction>,
}

/// One tag name's use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TagFacts {
    /// Events carrying a tag of this name.
    pub events: u64,
    /// Its distinct values, sorted, at most [`MAX_TAG_VALUES`].
    pub values: Vec<String>,
    /// Whether more distinct values exist than are listed.
    pub values_truncated: bool,
}

impl DatabaseFacts {
    /// Reads the facts from `conn` (a brain's `system.db`); tables that do not exist count as
    /// empty.
    pub fn read(conn: &Connection) -> rusqlite::Result<DatabaseFacts> {
        let mut facts = DatabaseFacts {
            fts5: crate::brain::recall::fts5_compiled_in(conn)?,
            ..DatabaseFacts::default()
        };
        {
            let mut rows =
                conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
            facts.tables = rows
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?;
        }
        if facts.tables.iter().any(|t| t == "brain_fts_content") {
            facts.indexed_rows =
                conn.query_row("SELECT count(*) FROM brain_fts_content", [], |row| {
                    row.get(0)
                })?;
        }
        if !facts.tables.iter().any(|t| t == "events") {
            return Ok(facts);
        }
        {
            let mut rows = conn.prepare(
                "SELECT coalesce(CAST(type AS TEXT), ''), count(*) FROM events GROUP BY 1",
            )?;
            facts.events_by_type = rows
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
        }
        facts.max_session = conn
            .query_row(
                "SELECT max(session) FROM events WHERE typeof(session) = 'integer'",
                [],
                |row| row.get::<_, Option<i64>>(0),
            )?
            .unwrap_or(0);
        let (corrections, outputs) = conn.query_row(
            "WITH recent AS (SELECT session FROM events WHERE typeof(session) = 'integer' \
               GROUP BY session HAVING count(*) >= 2 ORDER BY session DESC LIMIT ?1) \
             SELECT coalesce(sum(type = 'CORRECTION'), 0), coalesce(sum(type = 'OUTPUT'), 0) \
             FROM events WHERE session IN (SELECT session FROM recent)",
            [RATE_SESSIONS],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        facts.recent_corrections = corrections;
        facts.recent_outputs = outputs;
        {
            let mut rows = conn.prepare(
                "SELECT CASE WHEN json_valid(data_json) \
                   AND json_type(data_json, '$.severity') = 'text' \
                   THEN json_extract(data_json, '$.severity') ELSE 'unknown' END, count(*) \
                 FROM events WHERE type = 'CORRECTION' GROUP BY 1",
            )?;
            facts.corrections_by_severity = rows
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
        }
        {
            let mut rows = conn.prepare(
                "SELECT tag.value, count(DISTINCT events.id) FROM events, json_each(\
                   CASE WHEN json_valid(events.tags_json) \
                     AND json_type(events.tags_json) = 'array' \
                   THEN events.tags_json ELSE '[]' END) AS tag \
                 WHERE tag.type = 'text' GROUP BY tag.value ORDER BY tag.value",
            )?;
            let found = rows.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get(1)?)))?;
            for tag in found {
                let (tag, events): (String, u64) = tag?;
                let (name, value) = match tag.split_once(':') {
                    Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                    None => (tag, None),
                };
                let facts = facts.tags.entry(name).or_default();
                facts.events += events;
                if let Some(value) = value {
                    if facts.values.len() < MAX_TAG_VALUES {
                        facts.values.push(value);
                    } else {
                        facts.values_truncated = true;
                    }
                }
            }
        }
        facts.corrections = crate::brain::end_session::all_corrections(conn)?;
        Ok(facts)
    }

    pub(super) fn total_events(&self) -> u64 {
        self.events_by_type.values().sum()
    }
}
