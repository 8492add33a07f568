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

use jiff::civil::Date;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OptionalExtension};
use serde::Serialize;

use super::pyrepr::PyValue;
use super::pytext;
use super::recall_live::{LiveIndex, Snapshot};

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

/// The search error a caller cannot treat as "nothing found": the database could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot search the brain index")]
pub struct SearchError(#[source] rusqlite::Error);

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

/// One row of the FTS index as the search returns it. Text columns that hold NULL or an empty
/// string read as `None`, as 0.6.0's `or` defaults treat them; a non-text value reads as its
/// text form.
#[derive(Debug, Clone, PartialEq)]
pub struct FtsRow {
    /// The content row's id.
    pub rowid: i64,
    /// Where the text came from (`corrections` for rows added by corrections).
    pub source: Option<String>,
    /// The kind of text (`correction`).
    pub file_type: Option<String>,
    /// The indexed text.
    pub text: Option<String>,
    /// The local date the row was indexed, `YYYY-MM-DD`.
    pub embed_date: Option<String>,
    /// FTS5's bm25 rank (negative; lower is better); `None` when SQLite gives NULL.
    pub rank: Option<f64>,
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

/// The best [`TOP_K`] rows of the brain index for `match_expression`, best rank first.
///
/// Read-only. A brain without a `brain_fts` table, and an expression FTS5 rejects, find
/// nothing (0.6.0 answers no rows for any query error); only a failure to read the database
/// (busy, I/O, corruption) is an error.
pub fn search(connection: &Connection, match_expression: &str) -> Result<Vec<FtsRow>, SearchError> {
    match query_index(connection, match_expression) {
        Ok(rows) => Ok(rows),
        // SQLITE_ERROR is SQLite's code for a statement that cannot run as written: a missing
        // table, a MATCH on a table that is not FTS5, an FTS5 syntax error.
        Err(error) if is_statement_error(&error) => Ok(Vec::new()),
        Err(error) => Err(SearchError(error)),
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

/// The same rows as [`search`] of the `OR` of `words`, ranked on the in-memory copy of the
/// index kept by `index`; `connection` reads the best rows' content. Falls back to SQLite's own
/// search where the copy cannot answer exactly: an index of another layout, a word with a NUL
/// (FTS5 reads its query only up to one), a content row missing.
pub fn search_words(
    index: &LiveIndex,
    connection: &Connection,
    words: &[&str],
) -> Result<Vec<FtsRow>, SearchError> {
    if words.is_empty() {
        // `""`, an empty phrase, matches nothing.
        return Ok(Vec::new());
    }
    let sql = || search(connection, &phrases_expression(words));
    if words.iter().any(|word| word.contains('\0')) {
        return sql();
    }
    let ranker = match index.snapshot().map_err(SearchError)? {
        Snapshot::NoIndex => return Ok(Vec::new()),
        Snapshot::Sql => return sql(),
        Snapshot::Memory(ranker) => ranker,
    };
    let tokens = index.tokens(words).map_err(SearchError)?;
    let phrases: Vec<&[Box<str>]> = tokens.iter().map(|tokens| &tokens[..]).collect();
    let mut rows = Vec::with_capacity(TOP_K);
    for (rowid, rank) in ranker.top(&phrases, TOP_K) {
        match content_row(connection, rowid, rank) {
            Ok(Some(row)) => rows.push(row),
            // The content table lost the row after the copy was made, or never had it: what
            // FTS5 does then is SQLite's to say.
            Ok(None) => return sql(),
            Err(error) if is_statement_error(&error) => return sql(),
            Err(error) => return Err(SearchError(error)),
        }
    }
    Ok(rows)
}

/// The content of row `rowid` as FTS5 reads it for an external-content table.
fn content_row(connection: &Connection, rowid: i64, rank: f64) -> rusqlite::Result<Option<FtsRow>> {
    let mut statement = connection.prepare_cached(
        "SELECT id, source, file_type, text, embed_date FROM brain_fts_content WHERE id = ?1",
    )?;
    statement
        .query_row([rowid], |row| {
            Ok(FtsRow {
                rowid: row.get(0)?,
                source: text_column(row, 1)?,
                file_type: text_column(row, 2)?,
                text: text_column(row, 3)?,
                embed_date: text_column(row, 4)?,
                rank: Some(rank),
            })
        })
        .optional()
}

/// Whether the SQLite library behind `connection` has FTS5 compiled in (`PRAGMA
/// compile_options` lists `ENABLE_FTS5`): without it every recall finds nothing, so the daemon
/// checks once at startup and says so.
pub fn fts5_compiled_in(connection: &Connection) -> rusqlite::Result<bool> {
    let mut statement = connection.prepare("PRAGMA compile_options")?;
    let options = statement.query_map([], |row| row.get::<_, String>(0))?;
    for option in options {
        if option? == "ENABLE_FTS5" {
            return Ok(true);
        }
    }
    Ok(false)
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

/// Whether `error` is SQLite's SQLITE_ERROR, whether it came while preparing the statement
/// (`SqlInputError`, which carries the offending offset) or while stepping it.
fn is_statement_error(error: &rusqlite::Error) -> bool {
    match error {
        rusqlite::Error::SqliteFailure(error, _) | rusqlite::Error::SqlInputError { error, .. } => {
            error.code == ErrorCode::Unknown
        }
        _ => false,
    }
}

/// Reads the text column `index` of an FTS row; NULL and `""` are `None`.
fn text_column(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<Option<String>> {
    let text = match row.get_ref(index)? {
        ValueRef::Null => return Ok(None),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(x) => x.to_string(),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
            String::from_utf8_lossy(bytes).into_owned()
        }
    };
    Ok((!text.is_empty()).then_some(text))
}

/// Runs the FTS query.
fn query_index(connection: &Connection, match_expression: &str) -> rusqlite::Result<Vec<FtsRow>> {
    let mut statement = connection.prepare_cached(
        "SELECT rowid, source, file_type, text, embed_date, rank FROM brain_fts \
         WHERE brain_fts MATCH ?1 ORDER BY rank LIMIT ?2",
    )?;
    let limit = i64::try_from(TOP_K).expect("TOP_K is a small constant");
    let rows = statement.query_map(rusqlite::params![match_expression, limit], |row| {
        Ok(FtsRow {
            rowid: row.get(0)?,
            source: text_column(row, 1)?,
            file_type: text_column(row, 2)?,
            text: text_column(row, 3)?,
            embed_date: text_column(row, 4)?,
            rank: row.get(5)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> Date {
        text.parse().expect("a test date")
    }

    #[test]
    fn the_query_is_the_stem_and_the_first_200_code_points_of_the_preview() {
        let long = "é".repeat(300);
        let cut = "é".repeat(200);
        let cases = [
            ("src/Main.rs", "fix it", Some("Main fix it".to_owned())),
            ("a.tar.gz", "", Some("a.tar ".to_owned())),
            (".env", "x", Some(".env x".to_owned())),
            ("x.", "x", Some("x. x".to_owned())), // Python keeps a trailing dot in the stem
            ("x.py/..", "x", Some(".. x".to_owned())),
            ("..env", "", Some(". ".to_owned())),
            ("dir/", "", Some("dir ".to_owned())),
            ("", &long, Some(cut.clone())),
            ("f.md", &long, Some(format!("f {cut}"))),
            ("", "", None),
            ("", " \n\u{1f}", None), // blank by Python's strip
            ("/", "", None),
        ];
        for (path, preview, expected) in cases {
            assert_eq!(query(path, preview), expected, "{path:?} {preview:?}");
        }
    }

    #[test]
    fn the_retrieval_mode_follows_0_6_0s_rules() {
        use RetrievalMode::*;
        // Expected modes are what 0.6.0's classifier answers for the same text.
        let cases = [
            ("\"", Keyword),
            ("\"a b c\"", Keyword),
            ("'x y z'", Keyword),
            ("Main fix the thing", Hybrid),
            ("main Fix", Hybrid),
            ("API is down now", Hybrid),
            ("AB yy", Keyword), // all upper case is no proper noun
            ("Aǅ yy", Hybrid),  // a title-case letter makes a word not all upper case
            ("É tu", Keyword),  // one code point is too short
            ("Éa tu", Hybrid),
            ("X", Keyword),
            ("two words", Keyword),
            ("What does it do", Hybrid), // capitalised: a proper noun first
            ("WHAT does it do", Semantic),
            ("how do linters treat tests", Semantic),
            ("three plain words", Hybrid),
        ];
        for (query, mode) in cases {
            assert_eq!(RetrievalMode::of(query), mode, "{query:?}");
        }
    }

    #[test]
    fn the_match_expression_quotes_every_word() {
        let cases = [
            ("linter", "\"linter\""),
            ("a b", "\"a\" OR \"b\""),
            ("\"'quoted words'\"", "\"quoted\" OR \"words\""),
            (
                "say \"hi\" NEAR(x)",
                "\"say\" OR \"\"\"hi\"\"\" OR \"NEAR(x)\"",
            ),
            ("\"\"", "\"\""),
            ("   ", "\"\""),
        ];
        for (query, expression) in cases {
            assert_eq!(match_expression(query), expression, "{query:?}");
        }
    }

    #[test]
    fn recency_falls_with_age_against_the_given_day() {
        let today = day("2026-12-07");
        let cases = [
            ("2026-12-07", 1.0),
            ("2026-12-08", 1.0), // the future
            ("2026-12-06", 0.992),
            ("2026-11-07", 1.0 - 30.0 * 0.008),
            ("2026-10-08", 0.52), // 60 days
            ("2026-10-07", 0.5),  // 61 days
            ("2020-01-01", 0.5),
            ("2026-12-7", 1.0),  // Python's %m and %d take one digit...
            ("2026-12- 7", 1.0), // ...and a space-padded day
            ("", 1.0),           // no date: no recency
            ("unknown", 1.0),
            ("garbage", 0.5),
            ("2026-02-30", 0.5),
            ("2026-00-05", 0.5),
            ("0000-01-01", 0.5),
            ("2026-12-07 ", 0.5),
            ("26-12-07", 0.5),
            ("2026-12-007", 0.5),
        ];
        for (date, weight) in cases {
            assert_eq!(recency_weight(date, today), weight, "{date:?}");
        }
    }

    #[test]
    fn memory_types_follow_source_words_then_file_type() {
        let cases = [
            ("correction", "corrections", "semantic"),
            ("session", "corrections", "episodic"),
            ("template", "x", "procedural"),
            ("session", "Notes\\Gap-Analysis.md", "strategic"),
            ("general", "team/protocol.md", "procedural"),
            ("general", "loop-state.json", "episodic"),
            ("unheard-of", "", "semantic"),
        ];
        for (file_type, source, expected) in cases {
            assert_eq!(
                memory_type(file_type, source),
                expected,
                "{file_type} {source}"
            );
        }
    }

    #[test]
    fn a_hit_without_rank_prints_an_integer_zero_and_scores_zero() {
        let row = FtsRow {
            rowid: 7,
            source: None,
            file_type: None,
            text: Some("x".repeat(600)),
            embed_date: None,
            rank: None,
        };
        let recall = rank(vec![row], RetrievalMode::Hybrid, day("2026-12-07"));
        let hit = &recall.hits[0];
        assert_eq!(hit.fts_rank, None);
        assert_eq!(hit.score, 0.0);
        assert_eq!(hit.confidence, Confidence::BelowThreshold);
        assert_eq!(hit.text.len(), 500);
        assert_eq!(
            recall.context(),
            format!(
                "{{'rowid': 7, 'source': '', 'file_type': 'general', 'text': '{}', \
                 'embed_date': '', 'fts_rank': 0, 'retrieval_mode': 'hybrid', 'raw_score': 0, \
                 'score': 0.0, 'confidence': 'below_threshold', 'recency_weight': 1.0, \
                 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': '', \
                 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}}",
                "x".repeat(500)
            )
        );
    }

    #[test]
    fn confidence_labels_use_the_capped_score() {
        let cases = [
            (2.0, Confidence::High),
            (0.65, Confidence::High),
            (0.6499, Confidence::Medium),
            (0.5, Confidence::Medium),
            (0.35, Confidence::Low),
            (0.3499, Confidence::BelowThreshold),
            (0.0, Confidence::BelowThreshold),
        ];
        for (score, confidence) in cases {
            assert_eq!(
                Confidence::of(score, RetrievalMode::Semantic),
                confidence,
                "{score}"
            );
            assert_eq!(
                Confidence::of(score, RetrievalMode::Keyword),
                Confidence::KeywordMatch
            );
        }
    }

    /// A brain index laid out as the Python SDK creates it, with rows as its corrections (and
    /// its other indexers) add them.
    /// A database file with its live index.
    struct TestDb {
        _dir: tempfile::TempDir,
        connection: Connection,
        live: LiveIndex,
    }

    impl std::ops::Deref for TestDb {
        type Target = Connection;
        fn deref(&self) -> &Connection {
            &self.connection
        }
    }

    impl TestDb {
        fn empty() -> TestDb {
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().join("system.db");
            let connection = Connection::open(&path).expect("database file");
            TestDb {
                _dir: dir,
                connection,
                live: LiveIndex::new(path),
            }
        }
    }

    /// [`recall`] on the live index, checked against the same recall through SQLite's search.
    fn recall_on(
        db: &TestDb,
        file_path: &str,
        content_preview: &str,
        today: Date,
    ) -> Result<Recall, SearchError> {
        let recalled = recall(&db.live, db, file_path, content_preview, today)?;
        let through_sql = match query(file_path, content_preview) {
            Some(query) => {
                let rows = search(db, &match_expression(&query))?;
                rank(rows, RetrievalMode::of(&query), today)
            }
            None => Recall::default(),
        };
        assert_eq!(recalled, through_sql, "the live index and SQLite differ");
        Ok(recalled)
    }

    fn brain_index() -> TestDb {
        let connection = TestDb::empty();
        connection
            .execute_batch(
                "CREATE TABLE brain_fts_content(id INTEGER PRIMARY KEY AUTOINCREMENT, \
                     source, file_type, text, embed_date);
                 CREATE VIRTUAL TABLE brain_fts USING fts5(source, file_type, text, embed_date, \
                     content='brain_fts_content', content_rowid='id', tokenize='porter unicode61');",
            )
            .expect("FTS5 is compiled in");
        let rows: [(&str, Option<&str>, &str, &str); 6] = [
            (
                "corrections",
                Some("correction"),
                "CODE: Content change (cut: unwrap; added: expect) - use expect with a message, not unwrap",
                "2020-01-01",
            ),
            (
                "corrections",
                Some("correction"),
                "CONTENT: minor - the linter's warnings are errors in CI",
                "2999-01-01",
            ),
            (
                "corrections",
                None,
                "CONFIG: major - linters run before tests; \"quoted\" and it's",
                "garbage",
            ),
            (
                "notes/gap-analysis.md",
                Some("session"),
                "linter linter linter notes",
                "unknown",
            ),
            (
                "corrections",
                Some("correction"),
                "GENERAL: moderate - linting config\ttab é",
                "2020-01-01",
            ),
            (
                "corrections",
                Some("correction"),
                "CODE: unrelated text about dashes",
                "2020-01-01",
            ),
        ];
        for (source, file_type, text, embed_date) in rows {
            connection
                .execute(
                    "INSERT INTO brain_fts_content (source, file_type, text, embed_date) \
                     VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![source, file_type, text, embed_date],
                )
                .expect("content row");
            connection
                .execute(
                    "INSERT INTO brain_fts (rowid, source, file_type, text, embed_date) \
                     VALUES (last_insert_rowid(), ?1, ?2, ?3, ?4)",
                    rusqlite::params![source, file_type, text, embed_date],
                )
                .expect("index row");
        }
        connection
    }

    /// The `context` 0.6.0 printed for the same rows and requests (CPython 3.11, SQLite 3.40).
    const LINTER_CONTEXT: &str = "\
{'rowid': 4, 'source': 'notes/gap-analysis.md', 'file_type': 'session', 'text': 'linter linter linter notes', 'embed_date': 'unknown', 'fts_rank': 1.649464459591042e-06, 'retrieval_mode': 'keyword', 'raw_score': 1.649464459591042e-06, 'score': 0.0, 'confidence': 'keyword_match', 'recency_weight': 1.0, 'memory_weight': 1.0, 'memory_type': 'strategic', 'modified': 'unknown', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}
{'rowid': 3, 'source': 'corrections', 'file_type': 'general', 'text': 'CONFIG: major - linters run before tests; \"quoted\" and it\\'s', 'embed_date': 'garbage', 'fts_rank': 1.027289266221953e-06, 'retrieval_mode': 'keyword', 'raw_score': 1.027289266221953e-06, 'score': 0.0, 'confidence': 'keyword_match', 'recency_weight': 0.5, 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': 'garbage', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}
{'rowid': 2, 'source': 'corrections', 'file_type': 'correction', 'text': \"CONTENT: minor - the linter's warnings are errors in CI\", 'embed_date': '2999-01-01', 'fts_rank': 9.353948094975152e-07, 'retrieval_mode': 'keyword', 'raw_score': 9.353948094975152e-07, 'score': 0.0, 'confidence': 'keyword_match', 'recency_weight': 1.0, 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': '2999-01-01', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}";

    /// Hybrid mode: re-sorted by score, so row 2 (recent) comes before row 3 (better rank,
    /// unreadable date).
    const HYBRID_CONTEXT: &str = "\
{'rowid': 2, 'source': 'corrections', 'file_type': 'correction', 'text': \"CONTENT: minor - the linter's warnings are errors in CI\", 'embed_date': '2999-01-01', 'fts_rank': 1.2153434948186979, 'retrieval_mode': 'hybrid', 'raw_score': 1.2153434948186979, 'score': 1.2153, 'confidence': 'high', 'recency_weight': 1.0, 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': '2999-01-01', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}
{'rowid': 3, 'source': 'corrections', 'file_type': 'general', 'text': 'CONFIG: major - linters run before tests; \"quoted\" and it\\'s', 'embed_date': 'garbage', 'fts_rank': 1.3347404906711116, 'retrieval_mode': 'hybrid', 'raw_score': 1.3347404906711116, 'score': 0.6674, 'confidence': 'high', 'recency_weight': 0.5, 'memory_weight': 1.0, 'memory_type': 'semantic', 'modified': 'garbage', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}
{'rowid': 4, 'source': 'notes/gap-analysis.md', 'file_type': 'session', 'text': 'linter linter linter notes', 'embed_date': 'unknown', 'fts_rank': 1.649464459591042e-06, 'retrieval_mode': 'hybrid', 'raw_score': 1.649464459591042e-06, 'score': 0.0, 'confidence': 'below_threshold', 'recency_weight': 1.0, 'memory_weight': 1.0, 'memory_type': 'strategic', 'modified': 'unknown', 'session_num': -1, 'outcome': 'none', 'outcome_result': '', 'collection': 'fts5'}";

    #[test]
    fn recall_prints_what_0_6_0_prints_for_the_same_index() {
        let connection = brain_index();
        let today = day("2026-12-07");
        let keyword = recall_on(&connection, "", "linter", today).expect("readable index");
        assert!(
            matches!(connection.live.snapshot(), Ok(Snapshot::Memory(_))),
            "the search did not run on the in-memory copy"
        );
        assert_eq!(keyword.context(), LINTER_CONTEXT);
        let hybrid =
            recall_on(&connection, "", "Linter errors tests", today).expect("readable index");
        assert_eq!(hybrid.context(), HYBRID_CONTEXT);
        // With a path, the stem leads the query: "linter" alone matches the same three rows,
        // and two words with no capital are still keyword mode.
        let with_path =
            recall_on(&connection, "docs/linter.md", "", today).expect("readable index");
        assert_eq!(with_path.context(), LINTER_CONTEXT);
    }

    #[test]
    fn recall_gives_structured_hits_beside_the_text() {
        let connection = brain_index();
        let recalled = recall_on(
            &connection,
            "",
            "unwrap expect message CI",
            day("2026-12-07"),
        )
        .expect("readable index");
        let ids: Vec<i64> = recalled.hits.iter().map(|hit| hit.rowid).collect();
        assert_eq!(ids, [1, 2]);
        let first = serde_json::to_value(&recalled.hits[0]).expect("plain data");
        assert_eq!(first["score"], 2.1167);
        assert_eq!(first["recency_weight"], 0.5);
        assert_eq!(first["confidence"], "high");
        assert_eq!(first["retrieval_mode"], "hybrid");
        assert_eq!(first["fts_rank"], 4.233471219630308);
        assert_eq!(first["memory_type"], "semantic");
    }

    #[test]
    fn at_most_five_rows_are_recalled() {
        let connection = brain_index();
        for n in 0..10 {
            connection
                .execute(
                    "INSERT INTO brain_fts_content (source, file_type, text, embed_date) \
                     VALUES ('corrections', 'correction', ?1, '2020-01-01')",
                    [format!("many {n}")],
                )
                .expect("content row");
            connection
                .execute(
                    "INSERT INTO brain_fts (rowid, source, file_type, text, embed_date) \
                     SELECT id, source, file_type, text, embed_date FROM brain_fts_content \
                     WHERE id = last_insert_rowid()",
                    [],
                )
                .expect("index row");
        }
        let recalled =
            recall_on(&connection, "", "many", day("2026-12-07")).expect("readable index");
        assert_eq!(recalled.hits.len(), TOP_K);
        assert_eq!(recalled.context().lines().count(), TOP_K);
    }

    #[test]
    fn a_brain_without_an_index_recalls_nothing_and_creates_nothing() {
        let connection = TestDb::empty();
        let recalled =
            recall_on(&connection, "a.rs", "linter", day("2026-12-07")).expect("no index");
        assert_eq!(recalled, Recall::default());
        assert_eq!(recalled.context(), "");
        let n_tables: i64 = connection
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .expect("schema readable");
        assert_eq!(n_tables, 0);
        // A table of that name that is not FTS5 cannot be matched: nothing found either.
        connection
            .execute_batch("CREATE TABLE brain_fts(x)")
            .expect("plain table");
        assert_eq!(search(&connection, "\"linter\"").expect("no match"), []);
    }

    #[test]
    fn the_bundled_sqlite_has_fts5() {
        let connection = Connection::open_in_memory().expect("in-memory database");
        assert!(fts5_compiled_in(&connection).expect("compile options readable"));
    }

    #[test]
    fn a_blank_query_searches_nothing_and_an_empty_expression_matches_nothing() {
        let connection = brain_index();
        assert_eq!(
            recall_on(&connection, "", "   ", day("2026-12-07")).expect("no query"),
            Recall::default()
        );
        assert_eq!(search(&connection, "\"\"").expect("readable index"), []);
    }

    #[test]
    fn a_database_that_cannot_be_read_is_an_error() {
        let directory = tempfile::tempdir().expect("temporary directory");
        let path = directory.path().join("system.db");
        std::fs::write(&path, vec![b'x'; 4096]).expect("a file that is no database");
        let connection = Connection::open(&path).expect("opening is lazy");
        assert!(search(&connection, "\"linter\"").is_err());
    }
}
