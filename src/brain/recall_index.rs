//! An in-memory copy of the brain's FTS5 index (`brain_fts`) that ranks a recall query exactly
//! as SQLite's `ORDER BY rank` does, without SQLite's per-query cost.
//!
//! [`Ranker::load`] reads what FTS5's bm25 reads, from SQLite itself so that tokenizing stays
//! SQLite's: the postings (term, row, column, offset) through an `fts5vocab` `instance` table,
//! each row's length from `brain_fts_docsize` and the row count and token totals from the index's
//! averages record. [`Ranker::top`] then scores each query phrase as FTS5's `bm25()` does with
//! its defaults (k1 = 1.2, b = 0.75, every column weighing 1.0, an IDF never below 1e-6, the
//! row's length over all columns), in the same floating-point order, and returns the best rows
//! with FTS5's order of ties (lower rowid first).
//!
//! Knows nothing of the route, of how a query is made, or of when the index changed; it only
//! reads, and it handles only the table layout the SDK creates ([`is_supported_layout`]).

use std::collections::HashMap;

use rusqlite::Connection;

/// FTS5's bm25 `k1`.
const K1: f64 = 1.2;
/// FTS5's bm25 `b`.
const B: f64 = 0.75;
/// FTS5's floor for an IDF that would be zero or negative (a term in over half the rows).
const IDF_FLOOR: f64 = 1e-6;
/// The rowid of the FTS5 index's averages record (row count, then tokens per column).
pub const AVERAGES_ID: i64 = 1;
/// The rowid of the FTS5 index's structure record, rewritten on every change of the index.
pub const STRUCTURE_ID: i64 = 10;

/// The brain index's columns, in order.
const COLUMNS: [&str; 4] = ["source", "file_type", "text", "embed_date"];

/// The name of the temporary `fts5vocab` table the postings are read through.
const VOCAB_TABLE: &str = "gradata_brain_fts_instances";

/// Why the index could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// SQLite failed while reading it.
    #[error("cannot read the brain's full-text index")]
    Read(#[from] rusqlite::Error),
    /// A value of the index had an unexpected type (a term or column name that is no text).
    #[error("the brain's full-text index holds a value of an unexpected type")]
    Value(#[from] rusqlite::types::FromSqlError),
    /// Its records are not what FTS5 writes; only SQLite's own search can say what it finds.
    #[error("the brain's full-text index has a record this copy cannot read: {0}")]
    Malformed(&'static str),
}

/// One occurrence of a term: its row (an index into [`Ranker::rowids`]), column and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Instance {
    doc: u32,
    column: u32,
    offset: u32,
}

/// A term's postings.
#[derive(Debug, Default)]
struct Term {
    /// The rows holding it, ascending.
    docs: Vec<u32>,
    /// Per row of `docs`: bm25's term-frequency factor `f·(k1+1) / (f + k1·(1-b+b·D/avgdl))`.
    frequency_factor: Vec<f64>,
    /// Every occurrence, sorted; phrases of several tokens are matched on these.
    instances: Vec<Instance>,
}

/// The copy of one state of the index.
#[derive(Debug)]
pub struct Ranker {
    /// Row number -> rowid, ascending (so row order is rowid order, FTS5's order of ties).
    rowids: Vec<i64>,
    /// Per row: `k1·(1 - b + b·D/avgdl)`, D the row's tokens over all columns.
    length_norm: Vec<f64>,
    /// The row count of the averages record.
    n_rows: i64,
    terms: HashMap<Box<str>, Term>,
    n_instances: usize,
}

impl Ranker {
    /// Reads the index of `brain_fts` through `connection` (which may be read-only: only a
    /// temporary vocabulary table is created). Call it inside one read transaction so the
    /// pieces agree.
    pub fn load(connection: &Connection) -> Result<Ranker, LoadError> {
        let averages: Vec<u8> = connection.query_row(
            "SELECT block FROM brain_fts_data WHERE id = ?1",
            [AVERAGES_ID],
            |row| row.get(0),
        )?;
        let (n_rows, total_tokens) = decode_averages(&averages)?;

        let mut rowids = Vec::new();
        let mut lengths = Vec::new();
        let mut statement =
            connection.prepare("SELECT id, sz FROM brain_fts_docsize ORDER BY id")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            rowids.push(row.get::<_, i64>(0)?);
            lengths.push(decode_doc_size(
                row.get_ref(1)?.as_bytes_or_null()?.unwrap_or(&[]),
            )?);
        }
        // FTS5 divides in doubles; a row count of 0 (no rows) gives NaN there too, but then
        // nothing can match.
        let avgdl = total_tokens as f64 / n_rows as f64;
        let length_norm = lengths
            .iter()
            .map(|&tokens| K1 * ((1.0 - B) + (B * f64::from(tokens)) / avgdl))
            .collect::<Vec<f64>>();

        connection.execute_batch(&format!(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.{VOCAB_TABLE} \
             USING fts5vocab(main, brain_fts, instance)"
        ))?;
        let mut instances: HashMap<Box<str>, Vec<Instance>> = HashMap::new();
        let mut statement = connection.prepare(&format!(
            "SELECT term, doc, col, offset FROM temp.{VOCAB_TABLE}"
        ))?;
        let mut rows = statement.query([])?;
        let mut n_instances = 0;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(1)?;
            let doc = rowids
                .binary_search(&rowid)
                .map_err(|_| LoadError::Malformed("a posting of a row without a size"))?;
            let column_name = row.get_ref(2)?.as_str()?;
            let column = COLUMNS
                .iter()
                .position(|name| *name == column_name)
                .ok_or(LoadError::Malformed("a posting in an unknown column"))?;
            let offset: i64 = row.get(3)?;
            let instance = Instance {
                doc: u32::try_from(doc).map_err(|_| LoadError::Malformed("too many rows"))?,
                column: u32::try_from(column).map_err(|_| LoadError::Malformed("column"))?,
                offset: u32::try_from(offset).map_err(|_| LoadError::Malformed("an offset"))?,
            };
            let term = row.get_ref(0)?.as_str()?;
            match instances.get_mut(term) {
                Some(list) => list.push(instance),
                None => {
                    instances.insert(term.into(), vec![instance]);
                }
            }
            n_instances += 1;
        }

        let terms = instances
            .into_iter()
            .map(|(term, mut instances)| {
                instances.sort_unstable();
                instances.shrink_to_fit();
                let mut postings = Term::default();
                for run in instances.chunk_by(|a, b| a.doc == b.doc) {
                    let doc = run[0].doc;
                    postings.docs.push(doc);
                    postings
                        .frequency_factor
                        .push(frequency_factor(run.len(), length_norm[doc as usize]));
                }
                postings.instances = instances;
                (term, postings)
            })
            .collect();
        Ok(Ranker {
            rowids,
            length_norm,
            n_rows,
            terms,
            n_instances,
        })
    }

    /// How many rows the copy holds.
    pub fn n_rows(&self) -> usize {
        self.rowids.len()
    }

    /// How many term occurrences the copy holds (its size is about 28 bytes each).
    pub fn n_instances(&self) -> usize {
        self.n_instances
    }

    /// The best `k` rows for an OR of `phrases` (each the tokens of one quoted query word; a
    /// phrase of no tokens matches nothing), as `(rowid, bm25 rank)`, best (lowest) rank
    /// first, ties by rowid as FTS5 orders them.
    pub fn top(&self, phrases: &[&[Box<str>]], k: usize) -> Vec<(i64, f64)> {
        let mut score = vec![0.0_f64; self.rowids.len()];
        let mut matched = vec![false; self.rowids.len()];
        // FTS5 adds each phrase's part in phrase order (a phrase that is not in a row adds 0,
        // which changes nothing), so adding phrase by phrase gives the same sums.
        for tokens in phrases {
            match tokens {
                [] => {}
                [token] => {
                    let Some(term) = self.terms.get(token) else {
                        continue;
                    };
                    let idf = self.idf(term.docs.len());
                    for (&doc, &factor) in term.docs.iter().zip(&term.frequency_factor) {
                        score[doc as usize] += idf * factor;
                        matched[doc as usize] = true;
                    }
                }
                [first, rest @ ..] => {
                    let hits = self.phrase_hits(first, rest);
                    let idf = self.idf(hits.len());
                    for (doc, count) in hits {
                        let factor = frequency_factor(count, self.length_norm[doc as usize]);
                        score[doc as usize] += idf * factor;
                        matched[doc as usize] = true;
                    }
                }
            }
        }
        // Rows are in rowid order, so a later row replaces a kept one only when strictly better.
        let mut best: Vec<(f64, u32)> = Vec::with_capacity(k + 1);
        for (doc, (&sum, _)) in score
            .iter()
            .zip(&matched)
            .enumerate()
            .filter(|(_, (_, hit))| **hit)
        {
            let rank = -sum;
            if best.len() == k && best.last().is_none_or(|&(worst, _)| rank >= worst) {
                continue;
            }
            let at = best.partition_point(|&(kept, _)| kept <= rank);
            #[expect(clippy::cast_possible_truncation, reason = "load counts rows in u32")]
            best.insert(at, (rank, doc as u32));
            best.truncate(k);
        }
        best.into_iter()
            .map(|(rank, doc)| (self.rowids[doc as usize], rank))
            .collect()
    }

    /// FTS5's IDF for a phrase found in `n_hit` rows.
    fn idf(&self, n_hit: usize) -> f64 {
        let n_hit = i64::try_from(n_hit).unwrap_or(i64::MAX);
        let idf = (((self.n_rows - n_hit) as f64 + 0.5) / (n_hit as f64 + 0.5)).ln();
        if idf <= 0.0 { IDF_FLOOR } else { idf }
    }

    /// Rows where the tokens `first, rest…` follow each other in one column, with how many times.
    fn phrase_hits(&self, first: &str, rest: &[Box<str>]) -> Vec<(u32, usize)> {
        let Some(head) = self.terms.get(first) else {
            return Vec::new();
        };
        let mut tails = Vec::with_capacity(rest.len());
        for token in rest {
            match self.terms.get(token) {
                Some(term) => tails.push(&term.instances),
                None => return Vec::new(),
            }
        }
        let mut hits: Vec<(u32, usize)> = Vec::new();
        for start in &head.instances {
            let follows = tails.iter().zip(1_u32..).all(|(instances, step)| {
                let wanted = Instance {
                    offset: start.offset.saturating_add(step),
                    ..*start
                };
                instances.binary_search(&wanted).is_ok()
            });
            if follows {
                match hits.last_mut() {
                    Some((doc, count)) if *doc == start.doc => *count += 1,
                    _ => hits.push((start.doc, 1)),
                }
            }
        }
        hits
    }
}

/// bm25's term-frequency factor for `count` occurrences in a row of norm `length_norm`, in
/// FTS5's order of operations.
fn frequency_factor(count: usize, length_norm: f64) -> f64 {
    let frequency = count as f64;
    (frequency * (K1 + 1.0)) / (frequency + length_norm)
}

/// Whether `create_sql`, the `CREATE VIRTUAL TABLE` statement of `brain_fts`, is the layout the
/// SDK creates and this copy reproduces: FTS5 over the four columns, external content
/// `brain_fts_content` keyed by `id`, tokenizer `porter unicode61`, and no other option (a
/// `detail`, `prefix`, `columnsize` or another tokenizer would change what FTS5 finds).
pub fn is_supported_layout(create_sql: &str) -> bool {
    let lower = create_sql.to_lowercase();
    let Some(start) = lower.find("fts5(") else {
        return false;
    };
    let Some(end) = lower.rfind(')') else {
        return false;
    };
    if end < start || !lower[..start].trim_end().ends_with("using") {
        return false;
    }
    let mut columns = Vec::new();
    let mut options = Vec::new();
    for argument in split_arguments(&lower[start + 5..end]) {
        match argument.split_once('=') {
            Some((key, value)) => options.push((key.trim().to_owned(), unquote(value.trim()))),
            None => columns.push(unquote(argument.trim())),
        }
    }
    options.sort();
    let tokenizer: Vec<&str> = options
        .iter()
        .find(|(key, _)| key == "tokenize")
        .map(|(_, value)| value.split_whitespace().collect())
        .unwrap_or_default();
    columns == COLUMNS
        && tokenizer == ["porter", "unicode61"]
        && options.len() == 3
        && options[0] == ("content".to_owned(), "brain_fts_content".to_owned())
        && options[1] == ("content_rowid".to_owned(), "id".to_owned())
}

/// Splits FTS5's arguments at commas outside quotes.
fn split_arguments(text: &str) -> Vec<&str> {
    let mut arguments = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match (quote, c) {
            (Some(open), c) if c == open || (open == '[' && c == ']') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"' | '`' | '[') => quote = Some(c),
            (None, ',') => {
                arguments.push(&text[start..at]);
                start = at + 1;
            }
            (None, _) => {}
        }
    }
    arguments.push(&text[start..]);
    arguments
}

/// An argument without its quotes (doubled quotes inside read as one).
fn unquote(text: &str) -> String {
    let mut chars = text.chars();
    match (chars.next(), text.chars().last()) {
        (Some(open @ ('\'' | '"' | '`')), Some(close)) if close == open && text.len() >= 2 => {
            let inner = &text[1..text.len() - 1];
            inner.replace(&format!("{open}{open}"), &open.to_string())
        }
        (Some('['), Some(']')) => text[1..text.len() - 1].to_owned(),
        _ => text.to_owned(),
    }
}

/// SQLite's variable-length integer (the format FTS5 writes its records in): 7 bits a byte,
/// high bit set while more follow, a ninth byte giving all 8 bits. Returns the value and its
/// length.
fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (at, &byte) in bytes.iter().enumerate().take(9) {
        if at == 8 {
            return Some(((value << 8) | u64::from(byte), 9));
        }
        value = (value << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((value, at + 1));
        }
    }
    None
}

/// The averages record: the row count, then the tokens of each column (a short record leaves
/// the rest at 0, as FTS5 reads it). Returns the row count and the tokens over all columns.
fn decode_averages(block: &[u8]) -> Result<(i64, i64), LoadError> {
    let malformed = || LoadError::Malformed("the averages record");
    if block.is_empty() {
        return Ok((0, 0));
    }
    let (n_rows, mut at) = read_varint(block).ok_or_else(malformed)?;
    let mut total: i64 = 0;
    for _ in COLUMNS {
        if at >= block.len() {
            break;
        }
        let (tokens, length) = read_varint(&block[at..]).ok_or_else(malformed)?;
        at += length;
        // FTS5 reads the same bits as signed 64-bit counts.
        total = total.wrapping_add(tokens as i64);
    }
    Ok((n_rows as i64, total))
}

/// A row's size record: one count of tokens per column, nothing after. Returns their sum as
/// FTS5 sums it (a C `int`).
fn decode_doc_size(block: &[u8]) -> Result<i32, LoadError> {
    let mut at = 0;
    let mut total: i32 = 0;
    for _ in COLUMNS {
        let (tokens, length) = block
            .get(at..)
            .and_then(read_varint)
            .ok_or(LoadError::Malformed("a row's size record"))?;
        at += length;
        #[expect(
            clippy::cast_possible_truncation,
            reason = "FTS5 reads each count into a C int"
        )]
        let tokens = tokens as i32;
        total = total.wrapping_add(tokens);
    }
    if at == block.len() {
        Ok(total)
    } else {
        Err(LoadError::Malformed("a row's size record"))
    }
}
