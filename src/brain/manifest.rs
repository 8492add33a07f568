//! `brain.manifest.json`: a description of the brain, in the fifteen sections 0.6.0's manifest
//! has (brain spec §6.11), filled with facts read from this brain: `lessons.md`, the `events`
//! table, the tables of `system.db`, the recall index.
//!
//! 0.6.0 fills many keys from its SDK's configuration and heuristics that gradata has no
//! counterpart for (a composite quality score, a random counterfactual, CARL rule files, an
//! embedding model, Python bootstrap commands). Those keys are kept, so a reader finds every
//! section, and hold `null` (or an empty list or object): gradata does not know them and does not
//! make them up. `docs/compatibility.md` lists each difference.
//!
//! Keys come in a fixed order (the structs' field order; maps sorted), so two manifests of the
//! same brain differ only in `generated_at`. Pure but for [`write()`]; knows nothing of HTTP.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::Connection;
use serde::Serialize;

use super::atomic;
use super::graduation::convergence::{self, Convergence, Trend};
use super::lessons::{Lesson, State};
use super::lessons_write::SaveError;

/// The manifest's file name, in the brain directory.
pub const MANIFEST_FILE: &str = "brain.manifest.json";

/// The manifest format 0.6.0 writes, whose sections this one keeps.
pub const SCHEMA_VERSION: &str = "1.0.0";

/// The most values listed per tag name (a brain can have thousands of distinct tag values).
pub const MAX_TAG_VALUES: usize = 100;

/// The sessions `quality.correction_rate` looks at (the most recent ones with two events or
/// more, as 0.6.0 counts them).
const RATE_SESSIONS: u32 = 10;

/// The subdirectories of the brain whose `*.md` files 0.6.0's `memory_composition` counts, per
/// memory kind.
const EPISODIC_DIRS: [&str; 4] = ["sessions", "metrics", "pipeline", "demos"];
/// See [`EPISODIC_DIRS`].
const SEMANTIC_DIRS: [&str; 4] = ["prospects", "personas", "competitors", "objections"];
/// See [`EPISODIC_DIRS`].
const PROCEDURAL_DIRS: [&str; 3] = ["emails", "messages", "templates"];
/// See [`EPISODIC_DIRS`].
const STRATEGIC_DIRS: [&str; 2] = ["learnings", "vault"];

/// What this service can do for a brain, as `sdk_capabilities` and the agent card list them.
const CAPABILITIES: [&str; 10] = [
    "apply_rules",
    "brain_recall",
    "checkpoint",
    "correct",
    "detect",
    "end_session",
    "enforce_rules",
    "log_event",
    "maintain",
    "tag_delta",
];

/// Why the manifest could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// `lessons.md` could not be read.
    #[error("cannot read the lessons for the manifest")]
    Lessons(#[source] SaveError),
    /// The database could not be opened.
    #[error(transparent)]
    Open(#[from] super::index::Error),
    /// A query of the database failed.
    #[error("cannot read the brain's database for the manifest")]
    Query(#[source] rusqlite::Error),
    /// The JSON could not be produced.
    #[error("cannot encode the manifest")]
    Encode(#[source] serde_json::Error),
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] atomic::Error),
}

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
            fts5: super::recall::fts5_compiled_in(conn)?,
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
        facts.corrections = super::end_session::all_corrections(conn)?;
        Ok(facts)
    }

    fn total_events(&self) -> u64 {
        self.events_by_type.values().sum()
    }
}

/// Everything a manifest is built from.
#[derive(Debug)]
pub struct Sources<'a> {
    /// The brain directory (for `memory_composition`).
    pub brain_dir: &'a Path,
    /// The `lessons.md` the routes use.
    pub lessons_path: &'a Path,
    /// Its lessons, in file order.
    pub lessons: &'a [Lesson],
    /// The database's facts.
    pub database: &'a DatabaseFacts,
    /// When the manifest is built.
    pub generated_at: jiff::Timestamp,
}

/// The manifest, its sections in 0.6.0's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    schema_version: &'static str,
    metadata: Metadata,
    quality: Quality,
    memory_composition: MemoryComposition,
    database: Database,
    rag: Rag,
    behavioral_contract: BehavioralContract,
    tag_taxonomy: BTreeMap<String, TagFacts>,
    paths: Paths,
    api_requirements: BTreeMap<String, ()>,
    bootstrap: [(); 0],
    compatibility: Compatibility,
    sdk_capabilities: SdkCapabilities,
    agent_card: AgentCard,
    proof: Proof,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Metadata {
    /// 0.6.0 reads it from an SDK `VERSION.md`; gradata keeps no brain version.
    brain_version: Option<String>,
    /// 0.6.0's configured domain; gradata has none.
    domain: Option<String>,
    /// 0.6.0's maturity label from `VERSION.md`; gradata has none.
    maturity_phase: Option<String>,
    /// The highest session number in the event log.
    sessions_trained: i64,
    generated_at: String,
    /// What wrote the file.
    generator: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Quality {
    /// CORRECTION over OUTPUT events in the recent sessions; `null` without OUTPUT events.
    correction_rate: Option<f64>,
    /// RULE lessons in `lessons.md`.
    lessons_graduated: u64,
    /// INSTINCT and PATTERN lessons in `lessons.md`.
    lessons_active: u64,
    first_draft_acceptance: Option<f64>,
    compound_score: Option<f64>,
    categories_extinct: Option<Vec<String>>,
    /// Lessons per state as the file writes it, every state listed.
    lesson_distribution: LessonDistribution,
    correction_rate_trend: Option<f64>,
    severity_ratio: Option<f64>,
    transfer_score: Option<f64>,
    density_trend_length: Option<u64>,
    score_confidence: Option<f64>,
    temporal_provenance: Option<f64>,
    difficulty_weight: Option<f64>,
    outcome_correlation: Option<f64>,
    counterfactual: Option<f64>,
    /// Every CORRECTION event.
    corrections_total: u64,
    /// Them per severity.
    corrections_by_severity: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
#[serde(rename_all = "UPPERCASE")]
struct LessonDistribution {
    instinct: u64,
    pattern: u64,
    rule: u64,
    untestable: u64,
    killed: u64,
    archived: u64,
}

impl LessonDistribution {
    fn of(lessons: &[Lesson]) -> LessonDistribution {
        let mut counts = LessonDistribution::default();
        for lesson in lessons {
            let count = match lesson.state {
                State::Instinct => &mut counts.instinct,
                State::Pattern => &mut counts.pattern,
                State::Rule => &mut counts.rule,
                State::Untestable => &mut counts.untestable,
                State::Killed => &mut counts.killed,
                State::Archived => &mut counts.archived,
            };
            *count += 1;
        }
        counts
    }
}

/// `*.md` files per memory kind, in 0.6.0's order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct MemoryComposition {
    episodic: u64,
    semantic: u64,
    procedural: u64,
    strategic: u64,
}

impl MemoryComposition {
    fn of(brain_dir: &Path) -> MemoryComposition {
        MemoryComposition {
            episodic: markdown_files(brain_dir, &EPISODIC_DIRS),
            semantic: markdown_files(brain_dir, &SEMANTIC_DIRS),
            procedural: markdown_files(brain_dir, &PROCEDURAL_DIRS),
            strategic: markdown_files(brain_dir, &STRATEGIC_DIRS),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Database {
    engine: &'static str,
    path: &'static str,
    tables: Vec<String>,
    event_types: u64,
    total_events: u64,
    events_by_type: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Rag {
    /// gradata embeds nothing.
    active: bool,
    provider: Option<String>,
    model: Option<String>,
    dimensions: Option<u64>,
    /// Rows of the full-text index (0.6.0 counts embeddings, a table gradata never fills).
    chunks_indexed: u64,
    fts5_enabled: bool,
}

/// 0.6.0 counts CARL rule files of its working directory; gradata has none, so nothing is
/// known.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct BehavioralContract {
    safety_rules: Option<u64>,
    global_rules: Option<u64>,
    domain_rules: Option<u64>,
    total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Paths {
    brain_dir: &'static str,
    domain_dir: Option<String>,
    working_dir: Option<String>,
    /// `lessons.md`, under `$BRAIN_DIR` when it lies there.
    lessons: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Compatibility {
    python: Option<String>,
    search: &'static str,
    platform: &'static str,
    /// The brain format this service reads and writes.
    brain_format: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct SdkCapabilities {
    total: usize,
    available: usize,
    modules: BTreeMap<&'static str, Capability>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Capability {
    available: bool,
    source: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct AgentCard {
    name: &'static str,
    description: &'static str,
    version: &'static str,
    /// gradata speaks no agent protocol.
    protocol: Option<String>,
    capabilities: BTreeMap<&'static str, bool>,
    quality_summary: QualitySummary,
    input_schema: Option<()>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct QualitySummary {
    maturity: Option<String>,
    sessions: i64,
    correction_rate: Option<f64>,
    first_draft_acceptance: Option<f64>,
    lessons_active: u64,
    lessons_graduated: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Proof {
    proven: bool,
    confidence_level: &'static str,
    evidence: Evidence,
    summary: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Evidence {
    convergence_trend: Trend,
    p_value: f64,
    changepoints: Vec<i64>,
    /// 0.6.0's effort ratio rests on an efficiency estimate gradata does not make.
    effort_ratio: Option<f64>,
    /// RULE lessons in `lessons.md`.
    rule_count: u64,
    correction_count: u64,
    sessions: u64,
    categories_converged: Vec<String>,
    strongest_category: Option<String>,
    edit_distance_trend: convergence::EditTrend,
}

/// Fewer sessions with corrections, or fewer corrections, prove nothing.
const PROOF_MIN_SESSIONS: u64 = 3;
/// See [`PROOF_MIN_SESSIONS`].
const PROOF_MIN_CORRECTIONS: u64 = 5;
/// The p-value below which a falling correction count is taken as shown.
const PROOF_P_VALUE: f64 = 0.05;

impl Proof {
    fn of(convergence: &Convergence, rule_count: u64) -> Proof {
        let categories_converged = convergence
            .by_category
            .iter()
            .filter(|(_, category)| category.trend == Trend::Converged)
            .map(|(name, _)| name.clone())
            .collect();
        let strongest_category = convergence
            .by_category
            .iter()
            .filter(|(_, category)| category.trend == Trend::Converging && category.p_value < 1.0)
            .min_by(|a, b| a.1.p_value.total_cmp(&b.1.p_value))
            .map(|(name, _)| name.clone());
        let sessions = convergence.total_sessions;
        let corrections = convergence.total_corrections;
        let (proven, confidence_level, summary) = if sessions < PROOF_MIN_SESSIONS
            || corrections < PROOF_MIN_CORRECTIONS
        {
            (
                false,
                "insufficient",
                format!(
                    "not enough evidence: {sessions} sessions and {corrections} corrections \
                         (at least {PROOF_MIN_SESSIONS} and {PROOF_MIN_CORRECTIONS} needed)"
                ),
            )
        } else if convergence.trend == Trend::Converging && convergence.p_value < PROOF_P_VALUE {
            (
                true,
                "strong",
                format!(
                    "corrections per session fall over {sessions} sessions (p = {:.4}); \
                         {rule_count} rules",
                    convergence.p_value
                ),
            )
        } else {
            (
                false,
                "not_shown",
                format!(
                    "no significant fall in corrections per session over {sessions} sessions \
                         (p = {:.4})",
                    convergence.p_value
                ),
            )
        };
        Proof {
            proven,
            confidence_level,
            evidence: Evidence {
                convergence_trend: convergence.trend,
                p_value: convergence.p_value,
                changepoints: convergence.changepoints.clone(),
                effort_ratio: None,
                rule_count,
                correction_count: corrections,
                sessions,
                categories_converged,
                strongest_category,
                edit_distance_trend: convergence.edit_distance_trend,
            },
            summary,
        }
    }
}

impl Manifest {
    /// The manifest of the brain `sources` describe.
    pub fn build(sources: &Sources<'_>) -> Manifest {
        let db = sources.database;
        let distribution = LessonDistribution::of(sources.lessons);
        let lessons_active = distribution.instinct + distribution.pattern;
        let lessons_graduated = distribution.rule;
        let correction_rate = (db.recent_outputs > 0).then(|| {
            let rate = db.recent_corrections as f64 / db.recent_outputs as f64;
            (rate * 1000.0).round() / 1000.0
        });
        let corrections_total = db.events_by_type.get("CORRECTION").copied().unwrap_or(0);
        let convergence = convergence::convergence(&db.corrections);
        let capabilities: BTreeMap<&'static str, Capability> = CAPABILITIES
            .iter()
            .map(|&name| {
                (
                    name,
                    Capability {
                        available: true,
                        source: "gradata",
                    },
                )
            })
            .collect();
        let lessons = match sources.lessons_path.strip_prefix(sources.brain_dir) {
            Ok(inside) => format!("$BRAIN_DIR/{}", inside.display()),
            Err(_) => sources.lessons_path.display().to_string(),
        };
        Manifest {
            schema_version: SCHEMA_VERSION,
            metadata: Metadata {
                brain_version: None,
                domain: None,
                maturity_phase: None,
                sessions_trained: db.max_session,
                generated_at: sources.generated_at.to_string(),
                generator: format!("gradata {}", env!("CARGO_PKG_VERSION")),
            },
            quality: Quality {
                correction_rate,
                lessons_graduated,
                lessons_active,
                first_draft_acceptance: None,
                compound_score: None,
                categories_extinct: None,
                lesson_distribution: distribution,
                correction_rate_trend: None,
                severity_ratio: None,
                transfer_score: None,
                density_trend_length: None,
                score_confidence: None,
                temporal_provenance: None,
                difficulty_weight: None,
                outcome_correlation: None,
                counterfactual: None,
                corrections_total,
                corrections_by_severity: db.corrections_by_severity.clone(),
            },
            memory_composition: MemoryComposition::of(sources.brain_dir),
            database: Database {
                engine: "sqlite",
                path: "system.db",
                tables: db.tables.clone(),
                event_types: db.events_by_type.len() as u64,
                total_events: db.total_events(),
                events_by_type: db.events_by_type.clone(),
            },
            rag: Rag {
                active: false,
                provider: None,
                model: None,
                dimensions: None,
                chunks_indexed: db.indexed_rows,
                fts5_enabled: db.fts5,
            },
            behavioral_contract: BehavioralContract {
                safety_rules: None,
                global_rules: None,
                domain_rules: None,
                total: None,
            },
            tag_taxonomy: db.tags.clone(),
            paths: Paths {
                brain_dir: "$BRAIN_DIR",
                domain_dir: None,
                working_dir: None,
                lessons,
            },
            api_requirements: BTreeMap::new(),
            bootstrap: [],
            compatibility: Compatibility {
                python: None,
                search: if db.fts5 { "FTS5" } else { "none" },
                platform: "linux",
                brain_format: "gradata 0.6.0",
            },
            sdk_capabilities: SdkCapabilities {
                total: capabilities.len(),
                available: capabilities.values().filter(|c| c.available).count(),
                modules: capabilities.clone(),
            },
            agent_card: AgentCard {
                name: "gradata",
                description: "A brain of behavioural lessons learned from the user's corrections",
                version: env!("CARGO_PKG_VERSION"),
                protocol: None,
                capabilities: capabilities.keys().map(|&name| (name, true)).collect(),
                quality_summary: QualitySummary {
                    maturity: None,
                    sessions: db.max_session,
                    correction_rate,
                    first_draft_acceptance: None,
                    lessons_active,
                    lessons_graduated,
                },
                input_schema: None,
            },
            proof: Proof::of(&convergence, lessons_graduated),
        }
    }
}

/// The regular `*.md` files directly in the subdirectories `dirs` of `brain_dir` (a missing or
/// unreadable one counts none).
fn markdown_files(brain_dir: &Path, dirs: &[&str]) -> u64 {
    dirs.iter()
        .filter_map(|dir| std::fs::read_dir(brain_dir.join(dir)).ok())
        .flat_map(|entries| entries.filter_map(Result::ok))
        .filter(|entry| {
            entry.path().extension().is_some_and(|ext| ext == "md")
                && entry.file_type().is_ok_and(|t| t.is_file())
        })
        .count() as u64
}

/// Writes `manifest` to `<brain_dir>/brain.manifest.json` atomically (pretty-printed, with a
/// final newline).
pub fn write(brain_dir: &Path, manifest: &Manifest) -> Result<(), ManifestError> {
    let mut text = serde_json::to_vec_pretty(manifest).map_err(ManifestError::Encode)?;
    text.push(b'\n');
    atomic::replace(&brain_dir.join(MANIFEST_FILE), &text)?;
    Ok(())
}

#[cfg(test)]
mod tests;
