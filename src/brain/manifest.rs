//! `brain.manifest.json`: a description of the brain, with the fifteen top-level keys of
//! 0.6.0's manifest (brain spec §6.11), filled with facts read from this brain: `lessons.md`,
//! the `events` table, the tables of `system.db`, the recall index.
//!
//! 0.6.0 fills many keys from its SDK's configuration and heuristics that gradata has no
//! counterpart for (a composite quality score, a random counterfactual, CARL rule files, an
//! embedding model, Python bootstrap commands). Those keys are kept, so a reader finds every
//! section, and hold `null` (or an empty list or object): gradata does not know them and does not
//! make them up. `docs/compatibility.md` lists each difference.
//!
//! Keys come in a fixed order (the structs' field order; maps sorted), so two manifests of the
//! same brain differ only in `generated_at`. Pure but for [`write()`], the `*.md` counts of
//! `memory_composition` and the database read of `facts`; knows nothing of HTTP. The `proof`
//! section is judged in `proof`.

mod facts;
mod proof;

pub use facts::{DatabaseFacts, MAX_TAG_VALUES, TagFacts};

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::atomic;
use super::graduation::convergence;
use super::lessons::{Lesson, State};
use super::lessons_write::SaveError;
use proof::Proof;

/// The manifest's file name, in the brain directory.
pub const MANIFEST_FILE: &str = "brain.manifest.json";

/// The manifest format 0.6.0 writes, whose sections this one keeps.
pub const SCHEMA_VERSION: &str = "1.0.0";

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
