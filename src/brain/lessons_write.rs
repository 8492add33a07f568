//! The `lessons.md` writer: a [`Document`] that keeps the file as it was read and puts it back
//! with the caller's changes, and [`WriteLock`], under which it is read and written safely.
//!
//! The document keeps everything the grammar does not use (headings, prose, blank lines, unknown
//! continuation lines) where it was, and each lesson's own text: a lesson the caller did not
//! change is written back byte for byte, whatever its layout, so an unchanged file is written
//! back as it was. A changed or new lesson is written in the Python SDK's layout (brain spec
//! §3.3), its unknown continuation lines kept at the end of its block. The 0.6.0 writer dropped
//! all of these on every write (spec §13 #13).
//!
//! KILLED and ARCHIVED lessons are not kept in `lessons.md` (the SDK skips them too) and not
//! dropped either: [`Document::render`] hands them back in [`Rendered::retired`], and
//! [`WriteLock::save`] appends them to `lessons-archive.md` (see `archive`) before it replaces
//! `lessons.md`.
//!
//! Descriptions (spec §13 #7): a changed or new description is collapsed to one line and capped
//! at [`DESCRIPTION_CAP`] characters by [`clean_description`], so text taken from a diff cannot
//! break the file. A description the file already holds is never rewritten (its rule id is made
//! from it).
//!
//! Every value is written so that the reader reads it back as it was, or the lesson is refused
//! with an [`InvalidLesson`] and nothing is written.
//!
//! Rewritten lessons come out as the SDK 0.6.0 writes them (measured: its serialiser on 400
//! generated files gave the same bytes as this one), with two differences in layout, not in
//! meaning: `Domain scores:` is kept as written where the SDK re-dumps it (`{"a":1}` against
//! `{"a": 1}`), and `Beta params:` integers are written as floats (`3.0`), the reader keeping
//! them as floats.
//!
//! The rendering is pure; the file work (lock, temporary file, rename, fsync) is in
//! [`WriteLock::save`] and `atomic`.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use regex::Regex;
use serde::Serialize;

use super::lessons::{self, Lesson, LessonPiece, Piece, Problem, State};
use super::lessons_file::LESSONS_LOCK;
use super::pyjson::{self, Ascii};
use super::pytext;
use super::{archive, atomic};

/// The most characters (Unicode scalar values) a new or changed description may have. A lesson
/// is one imperative sentence that `/apply-rules` injects into every prompt, so a longer text is
/// almost always a pasted diff or file; 300 keeps any sentence a person writes (the longest
/// lesson of the SDK's own examples is under 150) and bounds what one lesson costs a prompt.
pub const DESCRIPTION_CAP: usize = 300;

/// What a cut description ends with, so that a reader sees it was cut.
const ELLIPSIS: char = '…';

/// A lesson the writer refuses: written, it would not read back as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lesson {category}: {description:?}: {reason}")]
pub struct InvalidLesson {
    /// The lesson's category, as given.
    pub category: String,
    /// The lesson's description, as given.
    pub description: String,
    /// What is wrong, naming the field.
    pub reason: String,
}

/// Why [`WriteLock::save`] wrote nothing (or, for [`SaveError::Archive`], only the archive).
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// A lesson cannot be written; nothing was written.
    #[error(transparent)]
    Invalid(#[from] InvalidLesson),
    /// The lock file could not be opened or locked.
    #[error("{}: cannot take the lessons lock", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another writer held the lock longer than the caller would wait.
    #[error("{}: another writer held the lessons lock for more than {waited:?}", path.display())]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long the call waited.
        waited: Duration,
    },
    /// The lessons file could not be read.
    #[error("{}: cannot read the lessons", path.display())]
    Read {
        /// The lessons file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The retired lessons could not be appended to the archive; `lessons.md` was not changed.
    #[error(transparent)]
    Archive(#[from] archive::Error),
    /// `lessons.md` could not be replaced; it is as it was (the archive may already hold the
    /// retired lessons: a lesson is then in both, never in neither).
    #[error(transparent)]
    Replace(#[from] atomic::Error),
}

/// `lessons.md` as read, with the caller's changes: see the module doc.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// A line that is no lesson's, with its line break.
    Other(String),
    Lesson(Box<Entry>),
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    lesson: Lesson,
    /// What the file said, for a lesson read from it; `None` for one the caller added.
    original: Option<LessonPiece>,
    /// The caller was handed the lesson to change. An untouched lesson is its `original`, so
    /// the render copies its text without comparing the two (a comparison of every field of
    /// every lesson was most of a render).
    touched: bool,
}

/// What [`Document::render`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The new `lessons.md`.
    pub text: String,
    /// The KILLED and ARCHIVED lessons, in document order, which are not in `text`: they belong
    /// in the archive.
    pub retired: Vec<Lesson>,
}

/// Whether [`Document::render`] may copy an unchanged lesson's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Unchanged lessons as they were written (the writer's normal mode).
    KeepUnchanged,
    /// Every lesson in the SDK's layout (to test the serialiser on whole files).
    #[cfg(test)]
    Serialise,
}

impl Document {
    /// Reads `lessons.md` text; never fails (see [`lessons::parse`] for the problems).
    pub fn parse(text: &str) -> (Document, Vec<Problem>) {
        let (pieces, problems) = lessons::parse_pieces(text);
        let parts = pieces
            .into_iter()
            .map(|piece| match piece {
                Piece::Other(raw) => Part::Other(raw),
                Piece::Lesson(piece) => Part::Lesson(Box::new(Entry {
                    lesson: piece.lesson.clone(),
                    original: Some(*piece),
                    touched: false,
                })),
            })
            .collect();
        (Document { parts }, problems)
    }

    /// The lessons, in file order.
    pub fn lessons(&self) -> impl Iterator<Item = &Lesson> {
        self.parts.iter().filter_map(|part| match part {
            Part::Lesson(entry) => Some(&entry.lesson),
            Part::Other(_) => None,
        })
    }

    /// The lessons, in file order, to change in place. A lesson set to KILLED or ARCHIVED leaves
    /// the file on the next render (into [`Rendered::retired`]).
    pub fn lessons_mut(&mut self) -> impl Iterator<Item = &mut Lesson> {
        self.parts.iter_mut().filter_map(|part| match part {
            Part::Lesson(entry) => {
                entry.touched = true;
                Some(&mut entry.lesson)
            }
            Part::Other(_) => None,
        })
    }

    /// The lesson at `index` (in file order), to change in place; the others stay untouched,
    /// which keeps the next render and [`WriteLock::save_cached`] cheap.
    pub fn lesson_mut(&mut self, index: usize) -> Option<&mut Lesson> {
        self.parts
            .iter_mut()
            .filter_map(|part| match part {
                Part::Lesson(entry) => Some(entry),
                Part::Other(_) => None,
            })
            .nth(index)
            .map(|entry| {
                entry.touched = true;
                &mut entry.lesson
            })
    }

    /// The lines that belong to no lesson, in file order, each with its line break.
    pub fn other_lines(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Other(raw) => Some(raw.as_str()),
            Part::Lesson(_) => None,
        })
    }

    /// Adds a lesson at the end of the file, after a blank line.
    pub fn push(&mut self, lesson: Lesson) {
        self.parts.push(Part::Lesson(Box::new(Entry {
            lesson,
            original: None,
            touched: true,
        })));
    }

    /// The new `lessons.md` text and the lessons that leave it; see the module doc. Refuses the
    /// whole document if one lesson cannot be written.
    pub fn render(&self) -> Result<Rendered, InvalidLesson> {
        self.render_as(Layout::KeepUnchanged)
            .map(|(rendered, _)| rendered)
    }

    /// The render, and where each part's text starts in it (a part's text ends where the next
    /// one's starts; line breaks added to end the line before a rewritten lesson count as the
    /// lesson's).
    fn render_as(&self, layout: Layout) -> Result<(Rendered, Vec<usize>), InvalidLesson> {
        let kept = self.kept_parts();
        let mut text = String::with_capacity(self.raw_len());
        let mut retired = Vec::new();
        let mut starts = Vec::with_capacity(self.parts.len());
        for (index, part) in self.parts.iter().enumerate() {
            starts.push(text.len());
            match part {
                Part::Lesson(entry) if is_retired(entry.lesson.state) => {
                    retired.push(entry.lesson.clone());
                }
                _ if !kept[index] => {}
                Part::Other(raw) => append(&mut text, raw),
                Part::Lesson(entry) => match &entry.original {
                    Some(original)
                        if layout == Layout::KeepUnchanged
                            && (!entry.touched || original.lesson == entry.lesson) =>
                    {
                        append(&mut text, &original.raw);
                    }
                    _ => {
                        if entry.original.is_none() {
                            separate(&mut text);
                        } else {
                            end_line(&mut text);
                        }
                        serialise(&entry.lesson, entry.original.as_ref(), &mut text)?;
                    }
                },
            }
        }
        Ok((Rendered { text, retired }, starts))
    }

    /// The length of the text the parts were read from (a capacity hint).
    fn raw_len(&self) -> usize {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Other(raw) => raw.len(),
                Part::Lesson(entry) => entry.original.as_ref().map_or(0, |o| o.raw.len()),
            })
            .sum()
    }

    /// Whether the part at `index` is written differently from how it was read.
    fn is_dirty(&self, index: usize) -> bool {
        match &self.parts[index] {
            Part::Other(_) => false,
            Part::Lesson(entry) => match &entry.original {
                None => true,
                Some(original) => entry.touched && original.lesson != entry.lesson,
            },
        }
    }

    /// Makes this document what [`Document::parse`] gives on `rendered`, its own render
    /// (`starts` from the same render), without parsing the whole text again: only the lessons
    /// that changed and the parts on either side of each are read again from the new text, and
    /// the line numbers after them are moved. Answers `false`, leaving the document as it was,
    /// when that is not enough: a lesson left the file, or a changed part follows a lesson added
    /// since the read with an unchanged part between them.
    fn rebase(&mut self, rendered: &Rendered, starts: &[usize]) -> bool {
        if !rendered.retired.is_empty() {
            return false;
        }
        let windows = self.changed_windows();
        if windows.is_empty() {
            self.untouch();
            return true;
        }
        // Each window is read before any is replaced: the line counts below are the old text's.
        let mut fresh = Vec::with_capacity(windows.len());
        for &(first, last) in &windows {
            let Some(before) = self.lines_before(first) else {
                return false;
            };
            let from = starts[first];
            let to = starts.get(last + 1).copied().unwrap_or(rendered.text.len());
            let window = &rendered.text[from..to];
            let old_lines: usize = self.parts[first..=last]
                .iter()
                .map(|part| match part {
                    Part::Other(raw) => pytext::splitlines(raw).len(),
                    Part::Lesson(entry) => entry
                        .original
                        .as_ref()
                        .map_or(0, |original| pytext::splitlines(&original.raw).len()),
                })
                .sum();
            let (document, _problems) = Document::parse(window);
            fresh.push(Reread {
                first,
                last,
                before,
                old_lines,
                new_lines: pytext::splitlines(window).len(),
                parts: document.parts,
            });
        }
        // Rebuilt in order: a window's parts are numbered from its first line in the new text;
        // a part between windows moves by the lines the windows before it gained or lost.
        let old = std::mem::take(&mut self.parts);
        let mut parts = Vec::with_capacity(old.len());
        let (mut gained, mut lost) = (0, 0);
        let mut next = 0;
        let mut old = old.into_iter();
        for reread in fresh {
            for mut part in old.by_ref().take(reread.first - next) {
                move_lines(&mut part, |line| (line + gained).saturating_sub(lost));
                parts.push(part);
            }
            old.by_ref()
                .take(reread.last + 1 - reread.first)
                .for_each(drop);
            let start = (reread.before + gained).saturating_sub(lost);
            for mut part in reread.parts {
                move_lines(&mut part, |line| line + start);
                parts.push(part);
            }
            gained += reread.new_lines;
            lost += reread.old_lines;
            next = reread.last + 1;
        }
        for mut part in old {
            move_lines(&mut part, |line| (line + gained).saturating_sub(lost));
            parts.push(part);
        }
        self.parts = parts;
        self.untouch();
        true
    }

    /// The runs of parts to read again after a render, as `(first, last)` indices in order: each
    /// changed part with the part on either side of it, runs that meet or overlap joined. The
    /// parse is line by line and a part's extent depends only on the lines after it, so a window
    /// that starts where a part started and ends where one ended reads the same alone as in the
    /// whole text: the part before a changed one (its last line may have been ended for it)
    /// through the part after it, which is unchanged, as is the part after the window.
    fn changed_windows(&self) -> Vec<(usize, usize)> {
        let Some(last_part) = self.parts.len().checked_sub(1) else {
            return Vec::new();
        };
        let mut windows: Vec<(usize, usize)> = Vec::new();
        for changed in (0..self.parts.len()).filter(|&index| self.is_dirty(index)) {
            let first = changed.saturating_sub(1);
            let last = (changed + 1).min(last_part);
            match windows.last_mut() {
                Some((_, end)) if first <= *end + 1 => *end = last.max(*end),
                _ => windows.push((first, last)),
            }
        }
        windows
    }

    /// How many lines come before the part at `index`, for a document whose parts before it are
    /// all as read: counted from the nearest lesson before it, whose line number says where it
    /// starts (counting the whole text instead was most of a correction's work). `None` when a
    /// lesson before it was added since the read.
    fn lines_before(&self, index: usize) -> Option<usize> {
        let lines = |raw: &str| pytext::splitlines(raw).len();
        let mut after = 0;
        for part in self.parts[..index].iter().rev() {
            match part {
                Part::Other(raw) => after += lines(raw),
                Part::Lesson(entry) => match &entry.original {
                    Some(original) => {
                        return Some(original.lesson.line - 1 + lines(&original.raw) + after);
                    }
                    None => return None,
                },
            }
        }
        Some(after)
    }

    /// Marks every lesson as read (after a rebase, each is its `original`).
    fn untouch(&mut self) {
        for part in &mut self.parts {
            if let Part::Lesson(entry) = part {
                entry.touched = false;
            }
        }
    }

    /// Which parts stay in the file: all but the retired lessons and, for each, one blank line
    /// next to it (the one after it, else the one before), so that removing a lesson does not
    /// leave two blank lines behind. A blank line is kept when the line after it starts with two
    /// spaces: without it, that line would join the block of the lesson before.
    fn kept_parts(&self) -> Vec<bool> {
        let mut kept = vec![true; self.parts.len()];
        let is_blank = |index: usize| match self.parts.get(index) {
            Some(Part::Other(raw)) => pytext::strip(raw).is_empty(),
            _ => false,
        };
        let indented = |index: usize| match self.parts.get(index) {
            Some(Part::Other(raw)) => raw.starts_with("  "),
            Some(Part::Lesson(entry)) => entry
                .original
                .as_ref()
                .is_some_and(|original| original.raw.starts_with("  ")),
            None => false,
        };
        for (index, part) in self.parts.iter().enumerate() {
            let Part::Lesson(entry) = part else { continue };
            if !is_retired(entry.lesson.state) {
                continue;
            }
            kept[index] = false;
            if is_blank(index + 1) && kept[index + 1] && !indented(index + 2) {
                kept[index + 1] = false;
            } else if index > 0 && is_blank(index - 1) && kept[index - 1] {
                kept[index - 1] = false;
            }
        }
        kept
    }
}

/// A run of parts read again from a new render by [`Document::rebase`].
struct Reread {
    /// The first and last index of the run in the document as rendered.
    first: usize,
    last: usize,
    /// The lines before the run in the text the document was read from.
    before: usize,
    /// The run's lines in that text, and in the new one.
    old_lines: usize,
    new_lines: usize,
    /// The run as read from the new text, numbered from 1.
    parts: Vec<Part>,
}

/// Renumbers a lesson part (and the original it was read as) with `moved`.
fn move_lines(part: &mut Part, moved: impl Fn(usize) -> usize) {
    let Part::Lesson(entry) = part else { return };
    entry.lesson.line = moved(entry.lesson.line);
    if let Some(original) = &mut entry.original {
        original.lesson.line = moved(original.lesson.line);
    }
}

/// Whether a lesson in this state leaves `lessons.md` for the archive.
pub fn is_retired(state: State) -> bool {
    matches!(state, State::Killed | State::Archived)
}

/// `text` as a lesson description: every run of whitespace (line breaks included) one space, no
/// leading or trailing space, the header's `Root cause:` marker disarmed (`Root cause -`, else
/// the reader would cut the description there), and at most [`DESCRIPTION_CAP`] characters: a
/// longer text is cut at the last space before the cap when there is one in its second half,
/// and ends with `…`. Idempotent. Call it when setting a description, so that the lesson in
/// memory is the one in the file; [`Document::render`] applies it to every new or changed one.
pub fn clean_description(text: &str) -> String {
    let mut clean = pytext::split_whitespace(text)
        .collect::<Vec<_>>()
        .join(" ")
        .replace(lessons::ROOT_CAUSE, "Root cause -");
    if clean.chars().count() > DESCRIPTION_CAP {
        let keep = DESCRIPTION_CAP - 1;
        let cut = clean
            .char_indices()
            .nth(keep)
            .map_or(clean.len(), |(at, _)| at);
        let head = &clean[..cut];
        let head = match head.rfind(' ') {
            Some(space) if head[..space].chars().count() >= keep / 2 => &head[..space],
            _ => head,
        };
        let mut short = pytext::strip(head).to_owned();
        short.push(ELLIPSIS);
        clean = short;
    }
    clean
}

/// Appends `piece` to `text`. A `\r` ending `text` and a `\n` starting `piece` would read as one
/// line break: that happens only where a removed lesson stood between them, and the line after
/// would then join the line before (a blank line lost, or an indented line joining a lesson's
/// block), so the `\r` is made a `\r\n` first.
fn append(text: &mut String, piece: &str) {
    if text.ends_with('\r') && piece.starts_with('\n') {
        text.push('\n');
    }
    text.push_str(piece);
}

/// Ends the text's last line, if it has no line break, before a generated block.
fn end_line(text: &mut String) {
    // A line break alone is one empty line to `splitlines`; any other character is a line of its
    // own.
    let ends_line = text
        .chars()
        .next_back()
        .is_some_and(|last| pytext::splitlines(last.encode_utf8(&mut [0; 4])).first() == Some(&""));
    if !text.is_empty() && !ends_line {
        append(text, "\n");
    }
}

/// Ends the text's last line and adds a blank line, unless the text is empty or already ends
/// with a blank line: a new lesson starts after one, as the SDK separates its blocks.
fn separate(text: &mut String) {
    if text.is_empty() {
        return;
    }
    end_line(text);
    let ends_blank = pytext::splitlines(text)
        .last()
        .is_some_and(|line| pytext::strip(line).is_empty());
    if !ends_blank {
        append(text, "\n");
    }
}

static DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\d{4}-\d{2}-\d{2}$").expect("the date pattern is a valid regex")
});

static CATEGORY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\w[\w/]*$").expect("the category pattern is a valid regex"));

/// The `Metadata:` object in the SDK's key order.
#[derive(Serialize)]
struct MetadataJson<'a> {
    what: &'a str,
    why: &'a str,
    who: &'a str,
    when_created: &'a str,
    when_validated: &'a str,
    where_scope: &'a str,
    how_enforced: &'a str,
    utility_score: f64,
    safety_score: f64,
}

/// One lesson's block in the SDK's layout (spec §3.3), each line ending in `\n`, its description
/// cleaned ([`clean_description`]): what the archive holds of a retired lesson.
pub fn block(lesson: &Lesson) -> Result<String, InvalidLesson> {
    let mut out = String::new();
    serialise(lesson, None, &mut out)?;
    Ok(out)
}

/// Writes one lesson's block in the SDK's layout (spec §3.3), each line ending in `\n`, then the
/// unknown continuation lines of the `original` it was read from.
fn serialise(
    lesson: &Lesson,
    original: Option<&LessonPiece>,
    out: &mut String,
) -> Result<(), InvalidLesson> {
    let invalid = |reason: String| InvalidLesson {
        category: lesson.category.clone(),
        description: lesson.description.clone(),
        reason,
    };
    if !DATE.is_match(&lesson.date) {
        return Err(invalid(format!("date {:?} is not YYYY-MM-DD", lesson.date)));
    }
    let category = lesson.category.to_uppercase();
    if !CATEGORY.is_match(&category) {
        return Err(invalid(
            "category must be word characters and '/', starting with a word character".into(),
        ));
    }
    let description = match original {
        Some(original) if original.lesson.description == lesson.description => {
            lesson.description.clone()
        }
        _ => clean_description(&lesson.description),
    };
    if description.is_empty() {
        return Err(invalid("the description is empty".into()));
    }
    let confidence = finite(lesson.confidence, "confidence").map_err(&invalid)?;
    let confidence = pytext::round(confidence.clamp(0.0, 1.0), 2);

    let mut lines: Vec<String> = Vec::new();
    let field = |lines: &mut Vec<String>, name: &str, value: &str| {
        let value = one_line(value);
        if !value.is_empty() {
            lines.push(format!("{name}: {value}"));
        }
    };
    field(&mut lines, "Root cause", &lesson.root_cause);
    let counters_at = lines.len();
    field(&mut lines, "Agent", &lesson.agent);
    field(&mut lines, "Kill reason", &lesson.kill_reason);
    let corrections = comma_list(&lesson.corrections, "corrections").map_err(&invalid)?;
    field(&mut lines, "Corrections", &corrections);
    if lesson.pending_approval {
        field(&mut lines, "Pending approval", "yes");
    }
    field(&mut lines, "Parent meta-rule", &lesson.parent_meta_rule);
    let links = comma_list(&lesson.memory_links, "memory links").map_err(&invalid)?;
    field(&mut lines, "Memory links", &links);
    field(&mut lines, "Scope", &lesson.scope);
    let domain_scores = one_line(&lesson.domain_scores);
    if !domain_scores.is_empty() {
        match serde_json::from_str::<serde_json::Value>(&domain_scores) {
            Ok(serde_json::Value::Object(fields)) if !fields.is_empty() => {}
            _ => {
                return Err(invalid(
                    "domain scores must be a non-empty JSON object or nothing".into(),
                ));
            }
        }
    }
    field(&mut lines, "Domain scores", &domain_scores);
    let alpha = finite(lesson.beta.alpha, "beta alpha").map_err(&invalid)?;
    let beta = finite(lesson.beta.beta, "beta beta").map_err(&invalid)?;
    if alpha != 1.0 || beta != 1.0 {
        let json = format!(
            "{{\"alpha\": {}, \"beta\": {}}}",
            pyjson::float_repr(alpha),
            pyjson::float_repr(beta)
        );
        field(&mut lines, "Beta params", &json);
    }
    field(&mut lines, "Path", &lesson.path);
    let secondary =
        comma_list(&lesson.secondary_categories, "secondary categories").map_err(&invalid)?;
    field(&mut lines, "Secondary categories", &secondary);
    let climb = lesson.climb;
    if climb.count != 0 || climb.last_session != 0 || climb.level != 0 {
        let json = format!(
            "{{\"count\": {}, \"last_session\": {}, \"level\": {}}}",
            climb.count, climb.last_session, climb.level
        );
        field(&mut lines, "Climb", &json);
    }
    let metadata = &lesson.metadata;
    let score = |value: f64, name: &str| {
        finite(value, name).map(|value| pytext::round(value.clamp(0.0, 1.0), 2))
    };
    let json = pyjson::to_string(
        &MetadataJson {
            what: &metadata.what,
            why: &metadata.why,
            who: &metadata.who,
            when_created: &metadata.when_created,
            when_validated: &metadata.when_validated,
            where_scope: &metadata.where_scope,
            how_enforced: &metadata.how_enforced,
            utility_score: score(metadata.utility_score, "utility score").map_err(&invalid)?,
            safety_score: score(metadata.safety_score, "safety score").map_err(&invalid)?,
        },
        Ascii::Escape,
    )
    .map_err(|err| invalid(format!("metadata cannot be written as JSON: {err}")))?;
    // The SDK writes the metadata even when it holds only defaults.
    field(&mut lines, "Metadata", &json);

    // The reader takes the counters from any continuation line, the last one winning: if a value
    // written after the counters' place mentions them, the counters go last, so that they read
    // back as they are.
    let counters = format!(
        "Fire count: {} | Sessions since fire: {} | Misfires: {}",
        lesson.fire_count, lesson.sessions_since_fire, lesson.misfires
    );
    if lines[counters_at..]
        .iter()
        .any(|line| lessons::mentions_counters(line))
    {
        lines.push(counters);
    } else if lesson.fire_count != 0 || lesson.sessions_since_fire != 0 || lesson.misfires != 0 {
        lines.insert(counters_at, counters);
    }

    let _ = writeln!(
        out,
        "[{}] [{}:{confidence:.2}] {category}: {description}",
        lesson.date, lesson.state
    );
    for line in lines {
        let _ = writeln!(out, "  {line}");
    }
    if let Some(original) = original {
        for extra in &original.extras {
            let _ = writeln!(out, "{extra}");
        }
    }
    Ok(())
}

/// A value on one line: its lines joined by a space, stripped.
fn one_line(value: &str) -> String {
    pytext::splitlines(value)
        .into_iter()
        .map(pytext::strip)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A list as the SDK writes it (`a,b`): each item on one line, empty items dropped; an item
/// holding a comma would read back as two, so it is refused.
fn comma_list(items: &[String], name: &str) -> Result<String, String> {
    let items: Vec<String> = items
        .iter()
        .map(|item| one_line(item))
        .filter(|item| !item.is_empty())
        .collect();
    if let Some(item) = items.iter().find(|item| item.contains(',')) {
        return Err(format!("{name} item {item:?} holds a comma"));
    }
    Ok(items.join(","))
}

fn finite(value: f64, name: &str) -> Result<f64, String> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("{name} is not a finite number: {value}"))
    }
}

/// The `lessons.md` this process last read or wrote under the lock, parsed, so that the next
/// writer skips the parse when the file still holds exactly those bytes. Any other content (an
/// edit by the Python SDK or by hand, a file replaced behind our back) is parsed again: the
/// bytes are compared, not a timestamp, which a rewrite within one clock tick would leave the
/// same. Share one per brain; it is only used under the lock.
#[derive(Debug, Default)]
pub struct DocumentCache {
    last: std::sync::Mutex<Option<Known>>,
}

#[derive(Debug)]
struct Known {
    path: PathBuf,
    bytes: Vec<u8>,
    document: Document,
}

impl DocumentCache {
    /// The cached document if `path` held exactly `bytes` when it was cached (taken out: the
    /// caller changes it, and a failed save must not leave a changed copy behind).
    fn take(&self, path: &Path, bytes: &[u8]) -> Option<Document> {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match last.take() {
            Some(known) if known.path == path && known.bytes == bytes => Some(known.document),
            _ => None,
        }
    }

    fn put(&self, known: Option<Known>) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = known;
    }
}

/// The exclusive hold on `<brain>/.lessons.lock` that every `lessons.md` writer takes: the
/// Python SDK, this module, and (shared) the reader in `lessons_file`. Hold it across the read,
/// the change and [`WriteLock::save`], so that no other writer's change is lost in between.
/// Reading and saving are methods of the lock, so that neither happens without it. Dropping it
/// releases the lock.
#[derive(Debug)]
pub struct WriteLock {
    /// The brain whose lock this is; its archive receives the retired lessons.
    brain_dir: PathBuf,
    /// The open lock file; the kernel drops the lock when it is closed.
    _flock: Flock<File>,
}

/// The longest pause between two tries of the lock while another writer holds it.
const LONGEST_LOCK_PAUSE: Duration = Duration::from_millis(20);

impl WriteLock {
    /// Takes the lock of the brain in `brain_dir`, creating the lock file if missing, trying
    /// again with growing pauses while another process holds it, for at most `timeout`.
    pub fn acquire(brain_dir: &Path, timeout: Duration) -> Result<WriteLock, SaveError> {
        let path = brain_dir.join(LESSONS_LOCK);
        let lock_error = |source| SaveError::Lock {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(crate::store::PRIVATE_FILE_MODE)
            .open(&path)
            .map_err(lock_error)?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(flock) => {
                    return Ok(WriteLock {
                        brain_dir: brain_dir.to_path_buf(),
                        _flock: flock,
                    });
                }
                Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => file = back,
                Err((_, errno)) => return Err(lock_error(errno.into())),
            }
            let elapsed = started.elapsed();
            if elapsed >= timeout {
                return Err(SaveError::LockTimeout {
                    path,
                    waited: elapsed,
                });
            }
            std::thread::sleep(pause.min(timeout - elapsed));
            pause = (pause * 2).min(LONGEST_LOCK_PAUSE);
        }
    }

    /// Reads the lessons file at `path` (`lessons_file::resolve` says which) into a
    /// [`Document`]; a missing file is an empty document. Invalid UTF-8 is read as U+FFFD, as
    /// the reader does (such a file is then not written back byte for byte).
    pub fn read(&self, path: &Path) -> Result<(Document, Vec<Problem>), SaveError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Document::parse(&String::from_utf8_lossy(&bytes))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Document::parse("")),
            Err(source) => Err(SaveError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes `document` to the lessons file at `path`: renders it (an invalid lesson writes
    /// nothing), appends the retired lessons to `<brain>/lessons-archive.md` under a heading
    /// naming `retired_at`, then replaces `path` safely ([`atomic::replace`]: same directory,
    /// fsync, rename, directory fsync; mode and owner kept; a link written through). Returns
    /// the retired lessons.
    ///
    /// Invariant: the archive is written before `lessons.md`, so that after a crash at any
    /// moment every lesson is in one of the two files (in both if the crash fell between the
    /// two writes; a lesson found in both is the archived one).
    pub fn save(
        &self,
        path: &Path,
        document: &Document,
        retired_at: &str,
    ) -> Result<Vec<Lesson>, SaveError> {
        let rendered = document.render()?;
        archive::append(
            &self.brain_dir.join(archive::ARCHIVE_FILE),
            &rendered.retired,
            retired_at,
        )?;
        atomic::replace(path, rendered.text.as_bytes())?;
        Ok(rendered.retired)
    }

    /// [`WriteLock::read`], served from `cache` when the file holds the bytes cached (one read
    /// and one comparison instead of a parse). The problems of a cached document are not
    /// reported again.
    pub fn read_cached(&self, path: &Path, cache: &DocumentCache) -> Result<Document, SaveError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(SaveError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if let Some(document) = cache.take(path, &bytes) {
            return Ok(document);
        }
        let (document, problems) = Document::parse(&String::from_utf8_lossy(&bytes));
        for problem in &problems {
            tracing::debug!(line = problem.line, "lessons.md: {}", problem.message);
        }
        Ok(document)
    }

    /// [`WriteLock::save`], rendering once, and leaving in `cache` the document as the file now
    /// holds it (what [`Document::parse`] gives on the text written), so that the next
    /// [`WriteLock::read_cached`] of an unchanged file skips the parse. When the written
    /// document cannot be brought up to date cheaply (a lesson retired) the cache is emptied and
    /// the next read parses. Any number of changed and added lessons is brought up to date: a
    /// batch of corrections saves once.
    pub fn save_cached(
        &self,
        path: &Path,
        mut document: Document,
        retired_at: &str,
        cache: &DocumentCache,
    ) -> Result<Vec<Lesson>, SaveError> {
        cache.put(None);
        let (rendered, starts) = document.render_as(Layout::KeepUnchanged)?;
        archive::append(
            &self.brain_dir.join(archive::ARCHIVE_FILE),
            &rendered.retired,
            retired_at,
        )?;
        atomic::replace(path, rendered.text.as_bytes())?;
        if document.rebase(&rendered, &starts) {
            cache.put(Some(Known {
                path: path.to_path_buf(),
                bytes: rendered.text.into_bytes(),
                document,
            }));
        }
        Ok(rendered.retired)
    }
}

#[cfg(test)]
mod tests;
