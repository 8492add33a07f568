//! Recall of past corrections for a file being edited (`POST /brain-recall`): a full-text search
//! of the brain's FTS5 index (`brain_fts` in `system.db`, filled by corrections), ranked and
//! printed as 0.6.0 does.
//!
//! 1. [`query`] builds the search text from the file's stem and the first 200 code points of the
//!    content preview; a blank query searches nothing.
//! 2. [`RetrievalMode::of`] classifies the query (keyword, semantic or hybrid) by 0.6.0's
//!    heuristics; [`match_expression`] turns it into an FTS5 `MATCH` string of quoted words
//!    joined with `OR`.
//! 3. [`search`] runs it, best bm25 rank first, at most [`TOP_K`] rows. It only reads: unlike
//!    0.6.0, a search never creates the FTS tables, and a brain without them recalls nothing.
//! 4. [`rank`] scores each row: |bm25| × a recency weight of its `embed_date` against the local
//!    date (1.0 for a future date, falling 0.008 a day to 0.5 at 60 days), labels a confidence,
//!    and in non-keyword modes re-sorts by score (stable).
//! 5. [`Recall::context`] prints each hit as the Python repr of 0.6.0's result dict, one per
//!    line; [`Recall::hits`] are the same results as typed values for structured output.
//!
//! Nothing here knows HTTP or the route's response shape, and nothing writes to the database.
//! The reads of the index (step 3, by SQLite or by the in-memory copy) are in `fts`; this file
//! builds the query, and scores and prints what the reads return.

mod fts;

use jiff::civil::Date;
use rusqlite::Connection;
use serde::Serialize;

pub use fts::{FtsRow, SearchError, fts5_compiled_in, search, search_words};

use super::pyrepr::PyValue;
use super::pytext;
use super::recall_live::LiveIndex;

/// How many rows a search returns at most.
pub const TOP_K: usize = 5;

/// How many code points of the content preview go into the query.
pub const PREVIEW_CHARS: usize = 200;

/// How many code points of a row's text a hit keeps.
pub const TEXT_CHARS: usize = 500;

/// The recency weight never falls below this.
const RECENCY_FLOOR: f64 = 0.5;

/// Rows older than this many days get the floor weight.
const RECENCY_WINDOW_DAYS: i32 = 60;

/// How much weight a row loses per day of age.
const RECENCY_DECAY: f64 = 0.008;

/// The words that make a longer query a question (`semantic` mode).
const QUESTION_WORDS: [&str; 10] = [
    "what", "which", "how", "why", "when", "where", "who", "find", "show", "list",
];

/// How a query is matched, as 0.6.0 names it in each result. Every mode runs the same FTS5
/// search; the mode decides the confidence label and whether results are re-sorted by score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrievalMode {
    /// Quoted or short queries: FTS rank order, `keyword_match` confidence.
    Keyword,
    /// Longer questions ("how do we ...").
    Semantic,
    /// Everything else, including queries with proper nouns.
    Hybrid,
}

impl RetrievalMode {
    /// The mode of `query`, by 0.6.0's rules in order: quoted (`"…"` or `'…'`) is keyword; two
    /// or more words with a capitalised word (longer than one code point, not all upper case)
    /// is hybrid; up to two words is keyword; a first word that asks a question is semantic;
    /// anything else is hybrid.
    pub fn of(query: &str) -> RetrievalMode {
        let quoted = |mark: char| query.starts_with(mark) && query.ends_with(mark);
        if quoted('"') || quoted('\'') {
            return RetrievalMode::Keyword;
        }
        let words: Vec<&str> = pytext::split_whitespace(query).collect();
        if words.len() >= 2 && words.iter().any(|word| is_proper_noun(word)) {
            return RetrievalMode::Hybrid;
        }
        if words.len() <= 2 {
            return RetrievalMode::Keyword;
        }
        let first = words[0].to_lowercase();
        if QUESTION_WORDS.contains(&first.as_str()) {
            RetrievalMode::Semantic
        } else {
            RetrievalMode::Hybrid
        }
    }

    /// The name printed in results.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalMode::Keyword => "keyword",
            RetrievalMode::Semantic => "semantic",
            RetrievalMode::Hybrid => "hybrid",
        }
    }
}

/// How sure a hit is, from its score (or `keyword_match` in keyword mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Keyword mode: the words matched; no score threshold applies.
    KeywordMatch,
    /// Score at least 0.65.
    High,
    /// Score at least 0.50.
    Medium,
    /// Score at least 0.35.
    Low,
    /// Anything lower.
    BelowThreshold,
}

impl Confidence {
    /// The label for `score` in `mode`.
    fn of(score: f64, mode: RetrievalMode) -> Confidence {
        if mode == RetrievalMode::Keyword {
            return Confidence::KeywordMatch;
        }
        match score.min(1.0) {
            s if s >= 0.65 => Confidence::High,
            s if s >= 0.50 => Confidence::Medium,
            s if s >= 0.35 => Confidence::Low,
            _ => Confidence::BelowThreshold,
        }
    }

    /// The label as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::KeywordMatch => "keyword_match",
            Confidence::High => "high",
            Confidence::Medium => "medium",
            Confidence::Low => "low",
            Confidence::BelowThreshold => "below_threshold",
        }
    }
}

/// One recalled row, scored. Serialises as the structured form the route can return in
/// `relevant_corrections`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecallHit {
    /// The content row's id.
    pub rowid: i64,
    /// Where the text came from; `""` when unknown.
    pub source: String,
    /// The kind of text; `general` when unknown.
    pub file_type: String,
    /// The first [`TEXT_CHARS`] code points of the text.
    pub text: String,
    /// The indexing date as stored; `""` when unknown.
    pub embed_date: String,
    /// |bm25 rank|, `None` when the rank was 0 or NULL (0.6.0 prints an integer `0` then).
    pub fts_rank: Option<f64>,
    /// The query's mode.
    pub retrieval_mode: RetrievalMode,
    /// `fts_rank × recency_weight`, rounded to 4 places.
    pub score: f64,
    /// The confidence label.
    pub confidence: Confidence,
    /// The recency weight, rounded to 3 places.
    pub recency_weight: f64,
    /// 0.6.0's memory type for the row's source and file type.
    pub memory_type: &'static str,
}

/// The outcome of a recall: its hits, best first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recall {
    /// The hits, at most [`TOP_K`], in the order they are printed.
    pub hits: Vec<RecallHit>,
}

impl Recall {
    /// 0.6.0's `context` text: each hit's result dict as a Python repr, joined with `\n`; empty
    /// when nothing was recalled.
    pub fn context(&self) -> String {
        self.hits
            .iter()
            .map(|hit| hit.to_python_dict().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl RecallHit {
    /// The hit as 0.6.0's result dict, keys in its order.
    pub fn to_python_dict(&self) -> PyValue {
        let fts_rank = self.fts_rank.map_or(PyValue::Int(0), PyValue::Float);
        PyValue::Dict(vec![
            ("rowid".into(), PyValue::Int(self.rowid)),
            ("source".into(), self.source.as_str().into()),
            ("file_type".into(), self.file_type.as_str().into()),
            ("text".into(), self.text.as_str().into()),
            ("embed_date".into(), self.embed_date.as_str().into()),
            ("fts_rank".into(), fts_rank.clone()),
            ("retrieval_mode".into(), self.retrieval_mode.as_str().into()),
            ("raw_score".into(), fts_rank),
            ("score".into(), self.score.into()),
            ("confidence".into(), self.confidence.as_str().into()),
            ("recency_weight".into(), self.recency_weight.into()),
            // 0.6.0 weighs memory types only for a task, and the route names none.
            ("memory_weight".into(), 1.0.into()),
            ("memory_type".into(), self.memory_type.into()),
            ("modified".into(), self.embed_date.as_str().into()),
            ("session_num".into(), PyValue::Int(-1)),
            ("outcome".into(), "none".into()),
            ("outcome_result".into(), "".into()),
            ("collection".into(), "fts5".into()),
        ])
    }
}

/// The search text for a file and a preview of its content: `"<stem> <preview>"` when there is
/// a path, else the preview alone, the preview cut to [`PREVIEW_CHARS`] code points. `None`
/// when it is blank: nothing is searched then.
pub fn query(file_path: &str, content_preview: &str) -> Option<String> {
    let preview: String = content_preview.chars().take(PREVIEW_CHARS).collect();
    let query = if file_path.is_empty() {
        preview
    } else {
        format!("{} {preview}", python_stem(file_path))
    };
    (!pytext::strip(&query).is_empty()).then_some(query)
}

/// The FTS5 `MATCH` string for `query`: surrounding `"` then `'` marks stripped, each word
/// quoted (inner `"` doubled) so FTS5 syntax in it is taken literally, the words joined with
/// ` OR `; `""` (matching nothing) for no words.
pub fn match_expression(query: &str) -> String {
    phrases_expression(&query_words(query))
}

/// The words of `query` that become phrases: surrounding `"` then `'` marks stripped, cut at
/// whitespace.
pub fn query_words(query: &str) -> Vec<&str> {
    let cleaned = query.trim_matches('"').trim_matches('\'');
    pytext::split_whitespace(cleaned).collect()
}

/// The FTS5 `MATCH` string of `words`, each quoted, joined with ` OR `.
fn phrases_expression(words: &[&str]) -> String {
    let words: Vec<String> = words
        .iter()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect();
    if words.is_empty() {
        "\"\"".to_owned()
    } else {
        words.join(" OR ")
    }
}

/// Scores `rows` found for a query in `mode`, against the local date `today`: the hits in
/// printing order (FTS order in keyword mode, else by score, ties in FTS order).
pub fn rank(rows: Vec<FtsRow>, mode: RetrievalMode, today: Date) -> Recall {
    let mut hits: Vec<RecallHit> = rows
        .into_iter()
        .take(TOP_K)
        .map(|row| score_row(row, mode, today))
        .collect();
    if mode != RetrievalMode::Keyword {
        // `sort_by` is stable, so equal scores keep the FTS order, as Python's sort does.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    Recall { hits }
}

/// The whole recall for a request: query, mode, search and ranking. No query means no hits.
pub fn recall(
    index: &LiveIndex,
    connection: &Connection,
    file_path: &str,
    content_preview: &str,
    today: Date,
) -> Result<Recall, SearchError> {
    let Some(query) = query(file_path, content_preview) else {
        return Ok(Recall::default());
    };
    let mode = RetrievalMode::of(&query);
    let rows = search_words(index, connection, &query_words(&query))?;
    Ok(rank(rows, mode, today))
}

/// Today's date in the system's time zone, the date recency is measured against (0.6.0 uses
/// the local date both when indexing and when searching).
pub fn local_today() -> Date {
    jiff::Zoned::now().date()
}

/// The recency weight of a row indexed on `embed_date`, seen on `today`: no date or `unknown`
/// weighs 1.0, an unreadable date the floor.
fn recency_weight(embed_date: &str, today: Date) -> f64 {
    if embed_date.is_empty() || embed_date == "unknown" {
        return 1.0;
    }
    let Some(indexed) = parse_python_date(embed_date) else {
        return RECENCY_FLOOR;
    };
    let Ok(age) = indexed.until(today) else {
        return RECENCY_FLOOR;
    };
    let age_days = age.get_days();
    if age_days < 0 {
        1.0
    } else if age_days > RECENCY_WINDOW_DAYS {
        RECENCY_FLOOR
    } else {
        RECENCY_FLOOR.max(1.0 - f64::from(age_days) * RECENCY_DECAY)
    }
}

/// A date as Python's `strptime(text, "%Y-%m-%d")` reads it: a four-digit year, a month of one
/// or two digits, a day of one or two digits (or a space and a digit), and a real date.
/// Python also takes non-ASCII digits there; those read as unreadable here.
fn parse_python_date(text: &str) -> Option<Date> {
    let mut parts = text.splitn(3, '-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if year.len() != 4 || !is_digits(year) {
        return None;
    }
    if !(1..=2).contains(&month.len()) || !is_digits(month) || month == "0" || month == "00" {
        return None;
    }
    let day = day
        .strip_prefix(' ')
        .filter(|d| d.len() == 1)
        .unwrap_or(day);
    if !(1..=2).contains(&day.len()) || !is_digits(day) {
        return None;
    }
    let year: i16 = year.parse().ok()?;
    if year < 1 {
        return None;
    }
    Date::new(year, month.parse().ok()?, day.parse().ok()?).ok()
}

/// Scores one row.
fn score_row(row: FtsRow, mode: RetrievalMode, today: Date) -> RecallHit {
    let source = row.source.unwrap_or_default();
    let file_type = row.file_type.unwrap_or_else(|| "general".to_owned());
    let embed_date = row.embed_date.unwrap_or_default();
    let fts_rank = row.rank.filter(|&rank| rank != 0.0).map(f64::abs);
    let recency = recency_weight(&embed_date, today);
    let score = pytext::round(fts_rank.unwrap_or(0.0) * recency, 4);
    RecallHit {
        rowid: row.rowid,
        memory_type: memory_type(&file_type, &source),
        text: row
            .text
            .unwrap_or_default()
            .chars()
            .take(TEXT_CHARS)
            .collect(),
        source,
        file_type,
        embed_date,
        fts_rank,
        retrieval_mode: mode,
        score,
        confidence: Confidence::of(score, mode),
        recency_weight: pytext::round(recency, 3),
    }
}

/// 0.6.0's memory type of a row: by words in its source path first, then by its file type.
fn memory_type(file_type: &str, source: &str) -> &'static str {
    const BY_SOURCE: [(&str, &[&str]); 3] = [
        (
            "strategic",
            &[
                "competitive-intelligence",
                "competitor-adaptations",
                "gap-analysis",
                "sdk-north-star",
                "sdk-improvements",
                "sdk-v2-improvements",
                "forecasting",
                "competitive-audit",
            ],
        ),
        (
            "procedural",
            &[
                "follow-up-cadence",
                "prospecting-tools",
                "versioning-protocol",
                "patterns.md",
                "protocol.md",
            ],
        ),
        (
            "episodic",
            &[
                "judgment-calibration",
                "outcome-retrospectives",
                "calibration-audit",
                "outreach-analytics",
                "loop-state",
                "signals",
                "follow-up tracker",
                "experiment tracker",
            ],
        ),
    ];
    let source = source.to_lowercase().replace('\\', "/");
    for (memory_type, words) in BY_SOURCE {
        if words.iter().any(|word| source.contains(word)) {
            return memory_type;
        }
    }
    match file_type {
        "session" | "learning" | "metric" | "meeting" | "pipeline" | "message" => "episodic",
        "email_pattern" | "template" => "procedural",
        _ => "semantic",
    }
}

/// Whether `word` counts as a proper noun for the mode: longer than one code point, starting
/// with an upper-case letter, and not all upper case (Python's `str.isupper`: no lower-case or
/// title-case letter and at least one upper-case one).
fn is_proper_noun(word: &str) -> bool {
    let starts_upper = word.chars().next().is_some_and(char::is_uppercase);
    starts_upper && word.chars().nth(1).is_some() && !is_python_upper(word)
}

/// Python's `str.isupper`.
fn is_python_upper(word: &str) -> bool {
    let is_titlecase = |c: char| {
        unicode_general_category::get_general_category(c)
            == unicode_general_category::GeneralCategory::TitlecaseLetter
    };
    !word.chars().any(|c| c.is_lowercase() || is_titlecase(c))
        && word.chars().any(char::is_uppercase)
}

/// Python's `Path(p).stem` for a POSIX path: the last component (empty and `.` components
/// dropped, `..` kept) without its last suffix, where a suffix is a dot that is neither the
/// name's first nor its last character, and what follows it.
fn python_stem(path: &str) -> &str {
    let name = path
        .split('/')
        .rfind(|part| !part.is_empty() && *part != ".")
        .unwrap_or("");
    match name.rfind('.') {
        Some(dot) if dot > 0 && dot + 1 < name.len() => &name[..dot],
        _ => name,
    }
}

#[cfg(test)]
mod tests;
