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
mod tests {
    use super::*;
    use crate::brain::lessons_file::{self, LESSONS_FILE, LessonsFile};
    use proptest::prelude::*;

    /// A file in the layout the Python SDK 0.6.0 wrote after a `/correct` (its own lesson text
    /// replaced by ours): every optional line, JSON as `json.dumps` writes it.
    const SDK_WRITTEN: &str = r#"[2026-04-02] [RULE:1.00] TONE: Never open client emails with small talk
  Root cause: user deleted greeting paragraphs
  Fire count: 12 | Sessions since fire: 2 | Misfires: 0
  Corrections: 41,57
  Metadata: {"what": "", "why": "", "who": "", "when_created": "", "when_validated": "", "where_scope": "", "how_enforced": "injected", "utility_score": 0.5, "safety_score": 0.5}

[2026-04-09] [PATTERN:0.84] CODE: Prefer explicit error types over strings
  Fire count: 4 | Sessions since fire: 1 | Misfires: 1
  Agent: rev
  Kill reason: kr
  Pending approval: yes
  Parent meta-rule: M1
  Memory links: a,b
  Scope: {"task_type":"code"}
  Domain scores: {"python": 0.7}
  Beta params: {"alpha": 3.0, "beta": 2.0}
  Path: src/x.py
  Secondary categories: STYLE,TONE
  Climb: {"count": 2, "last_session": 9, "level": 1}
  Metadata: {"what": "w\u00e9", "why": "", "who": "", "when_created": "", "when_validated": "", "where_scope": "", "how_enforced": "injected", "utility_score": 0.7, "safety_score": 0.5}

[2026-04-20] [INSTINCT:0.65] DOCS: Link the runbook in incident summaries
  Fire count: 0 | Sessions since fire: 1 | Misfires: 0
  Metadata: {"what": "", "why": "", "who": "", "when_created": "", "when_validated": "", "where_scope": "", "how_enforced": "injected", "utility_score": 0.5, "safety_score": 0.5}

[2026-12-07] [INSTINCT:0.74] CONTENT: Drop the greeting — from review requests
  Fire count: 1 | Sessions since fire: 1 | Misfires: 0
  Corrections: 1
  Scope: {"correction_scope": "domain"}
  Beta params: {"alpha": 2.0, "beta": 1.0}
  Metadata: {"what": "", "why": "", "who": "", "when_created": "", "when_validated": "", "where_scope": "", "how_enforced": "injected", "utility_score": 0.5, "safety_score": 0.5}
"#;

    const HAND_WRITTEN: &str = "# Team brain: lessons\r\n\
        Prose a person wrote.\r\n\
        [2026-04-02] [RULE:0.94] TONE: Never open client emails with small talk\r\n  \
        Root cause: user deleted greeting paragraphs\r\n  \
        Corrections: 41, 57\r\n  \
        Note: keep this one\r\n  \
        Fire count: 12 | Sessions since fire: 1 | Misfires: 0\r\n\
        \r\n\
        [2026-04-09] [KILLED] CODE: Prefer strings\n\
        \n\
        ## Later\n\
        [2026-04-20] [INSTINCT] DOCS: Link the runbook   in incident summaries";

    fn without_line_numbers(lessons: impl IntoIterator<Item = Lesson>) -> Vec<Lesson> {
        lessons
            .into_iter()
            .map(|mut lesson| {
                lesson.line = 0;
                lesson
            })
            .collect()
    }

    fn lessons_of(text: &str) -> Vec<Lesson> {
        without_line_numbers(lessons::parse(text).lessons)
    }

    #[test]
    fn the_serialiser_writes_the_sdk_layout_byte_for_byte() {
        let (document, problems) = Document::parse(SDK_WRITTEN);
        assert_eq!(problems, []);
        let rendered = document.render_as(Layout::Serialise).unwrap().0;
        assert_eq!(rendered.text, SDK_WRITTEN);
        assert_eq!(rendered.retired, []);
    }

    #[test]
    fn an_unchanged_file_is_written_back_byte_for_byte() {
        let text = HAND_WRITTEN.replace("[KILLED]", "[PATTERN]");
        let (document, _) = Document::parse(&text);
        let rendered = document.render().unwrap();
        assert_eq!(rendered.text, text);
        assert_eq!(rendered.retired, []);
    }

    #[test]
    fn a_changed_lesson_is_rewritten_in_place_and_the_rest_kept() {
        let (mut document, _) = Document::parse(HAND_WRITTEN);
        for lesson in document.lessons_mut() {
            if lesson.category == "TONE" {
                lesson.fire_count += 1;
            }
        }
        let rendered = document.render().unwrap();
        let expected = "# Team brain: lessons\r\n\
            Prose a person wrote.\r\n\
            [2026-04-02] [RULE:0.94] TONE: Never open client emails with small talk\n  \
            Root cause: user deleted greeting paragraphs\n  \
            Fire count: 13 | Sessions since fire: 1 | Misfires: 0\n  \
            Corrections: 41,57\n  \
            Metadata: {\"what\": \"\", \"why\": \"\", \"who\": \"\", \"when_created\": \"\", \"when_validated\": \"\", \"where_scope\": \"\", \"how_enforced\": \"injected\", \"utility_score\": 0.5, \"safety_score\": 0.5}\n  \
            Note: keep this one\n\
            \r\n\
            ## Later\n\
            [2026-04-20] [INSTINCT] DOCS: Link the runbook   in incident summaries";
        assert_eq!(rendered.text, expected);
        let [killed] = rendered.retired.as_slice() else {
            panic!("one retired lesson: {:?}", rendered.retired);
        };
        assert_eq!(
            (killed.category.as_str(), killed.state),
            ("CODE", State::Killed)
        );
        let mut expected_lessons = lessons_of(HAND_WRITTEN);
        expected_lessons.remove(1);
        expected_lessons[0].fire_count = 13;
        assert_eq!(lessons_of(&rendered.text), expected_lessons);
    }

    #[test]
    fn a_new_lesson_goes_after_a_blank_line_and_a_missing_line_break_is_added() {
        let (mut document, _) = Document::parse("[2026-04-20] [INSTINCT] DOCS: Last");
        let mut lesson = Lesson::with_defaults("2026-05-01", State::Instinct, "code", "New one");
        lesson.corrections = vec!["12".into()];
        document.push(lesson);
        let text = document.render().unwrap().text;
        assert!(
            text.starts_with(
                "[2026-04-20] [INSTINCT] DOCS: Last\n\n[2026-05-01] [INSTINCT:0.50] CODE: New one\n  Corrections: 12\n  Metadata: "
            ),
            "{text}"
        );
        assert_eq!(lessons_of(&text).len(), 2);

        let mut empty = Document::default();
        empty.push(Lesson::with_defaults(
            "2026-05-01",
            State::Rule,
            "C",
            "Only",
        ));
        assert!(
            empty
                .render()
                .unwrap()
                .text
                .starts_with("[2026-05-01] [RULE:0.90] C: Only\n")
        );
    }

    #[test]
    fn a_new_or_changed_description_is_one_line_and_capped_and_an_old_one_is_kept() {
        let long_old = format!("[2026-04-02] [RULE] C: {}\n", "word ".repeat(100).trim());
        let (mut document, _) = Document::parse(&long_old);
        document.push(Lesson::with_defaults(
            "2026-05-01",
            State::Instinct,
            "CODE",
            "Use pathlib\n    for paths\r\nRoot cause: a diff",
        ));
        for lesson in document.lessons_mut() {
            lesson.fire_count = 1;
        }
        let read = lessons_of(&document.render().unwrap().text);
        assert_eq!(read.len(), 2);
        assert_eq!(
            read[0].description,
            "word ".repeat(100).trim(),
            "kept as it was"
        );
        assert_eq!(
            read[1].description,
            "Use pathlib for paths Root cause - a diff"
        );

        let cut = clean_description(&"abcd ".repeat(100));
        assert_eq!(
            cut.chars().count(),
            DESCRIPTION_CAP - 5,
            "cut at a space: {cut}"
        );
        assert!(cut.ends_with("abcd…"), "{cut}");
        let unbroken = clean_description(&"x".repeat(1000));
        assert_eq!(unbroken.chars().count(), DESCRIPTION_CAP);
        for text in [cut, unbroken, "a\u{2028}b".to_owned()] {
            assert_eq!(clean_description(&text), text.replace('\u{2028}', " "));
        }
    }

    #[test]
    fn a_lesson_that_would_not_read_back_is_refused() {
        type Spoil = fn(&mut Lesson);
        let cases: [(&str, Spoil); 7] = [
            ("date", |lesson| lesson.date = "2026-5-1".into()),
            ("category", |lesson| lesson.category = "A B".into()),
            ("description", |lesson| lesson.description = " \n ".into()),
            ("confidence", |lesson| lesson.confidence = f64::NAN),
            ("corrections", |lesson| {
                lesson.corrections = vec!["1,2".into()]
            }),
            ("domain scores", |lesson| {
                lesson.domain_scores = "[1]".into()
            }),
            ("beta", |lesson| lesson.beta.alpha = f64::INFINITY),
        ];
        for (name, spoil) in cases {
            let mut lesson = Lesson::with_defaults("2026-05-01", State::Rule, "C", "ok");
            spoil(&mut lesson);
            let mut document = Document::default();
            document.push(lesson);
            let err = document.render().unwrap_err();
            assert!(err.reason.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn removing_a_lesson_between_a_carriage_return_and_a_line_feed_keeps_the_lines_apart() {
        let text =
            "[2026-04-02] [RULE] A: a\r[2026-04-02] [KILLED] B: b\n\n  Parent meta-rule: X\n";
        let (document, _) = Document::parse(text);
        let rendered = document.render().unwrap();
        assert_eq!(
            rendered.text,
            "[2026-04-02] [RULE] A: a\r\n\n  Parent meta-rule: X\n"
        );
        let [kept] = lessons_of(&rendered.text).try_into().unwrap();
        assert_eq!(
            kept.parent_meta_rule, "",
            "the orphan line joined the lesson"
        );
    }

    #[test]
    fn counters_mentioned_in_a_later_field_are_written_last() {
        let mut lesson = Lesson::with_defaults("2026-05-01", State::Rule, "C", "d");
        lesson.path = "Fire count: 9 | Sessions since fire: 9 | Misfires: 9".into();
        lesson.fire_count = 2;
        let block = block(&lesson).unwrap();
        assert!(
            block.ends_with("  Fire count: 2 | Sessions since fire: 0 | Misfires: 0\n"),
            "{block}"
        );
        assert_eq!(lessons_of(&block), [lesson]);
    }

    /// Lines a `lessons.md` may hold: headers (valid and not), continuation lines of every
    /// field (valid, malformed, unknown), headings, prose and blank lines.
    fn line() -> impl Strategy<Value = String> {
        let header = (
            prop::sample::select(vec!["RULE", "pattern", "INSTINCT", "UNTESTABLE", "MAYBE"]),
            prop::sample::select(vec!["", ":0.5", ":0.925", ":1.", ":0.9.1", ":7"]),
            "[A-Za-z][A-Za-z_/]{0,6}",
            "[ -~]{1,30}",
        )
            .prop_map(|(state, confidence, category, description)| {
                format!("[2026-04-02] [{state}{confidence}] {category}: {description}")
            });
        let field = prop::sample::select(vec![
            "Root cause: ",
            "Agent: ",
            "Kill reason: ",
            "Corrections: ",
            "Pending approval: ",
            "Parent meta-rule: ",
            "Memory links: ",
            "Scope: ",
            "Path: ",
            "Secondary categories: ",
            "Note: ",
            "",
        ]);
        let continuation =
            (field, "[ -~]{0,20}").prop_map(|(name, value)| format!("  {name}{value}"));
        let json = prop::sample::select(vec![
            r#"  Beta params: {"alpha": 2.5, "beta": 1}"#,
            r#"  Beta params: {"alpha": 2"#,
            r#"  Domain scores: {"py": 0.5}"#,
            r#"  Domain scores: {}"#,
            r#"  Climb: {"count": 1, "last_session": 3, "level": 2}"#,
            r#"  Metadata: {"what": "w\u00e9", "utility_score": 0.333, "how_enforced": ""}"#,
            "  Fire count: 3 | Sessions since fire: 2 | Misfires: 1",
            "  Pending approval: yes",
            "",
            "# heading",
            "\tindented by a tab",
        ])
        .prop_map(str::to_owned);
        prop_oneof![2 => header, 3 => continuation, 2 => json, 1 => "[ -~]{0,20}"]
    }

    fn file() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(
                (
                    line(),
                    prop::sample::select(vec!["\n", "\n", "\r\n", "\r", "\u{2028}"]),
                ),
                0..24,
            ),
            any::<bool>(),
        )
            .prop_map(|(lines, last_break)| {
                let mut text: String = lines
                    .into_iter()
                    .map(|(line, end)| format!("{line}{end}"))
                    .collect();
                if !last_break {
                    text.pop();
                }
                text
            })
    }

    proptest! {
        #[test]
        fn an_unchanged_file_is_written_back_byte_for_byte_for_any_text(text in file()) {
            let (document, _) = Document::parse(&text);
            let rendered = document.render().unwrap();
            prop_assert_eq!(rendered.text, text);
        }

        #[test]
        fn parse_write_parse_is_lossless(text in file()) {
            let (document, _) = Document::parse(&text);
            // Every lesson written anew, the hardest case for the serialiser.
            let written = document.render_as(Layout::Serialise).unwrap().0.text;
            let (again, _) = Document::parse(&written);
            prop_assert_eq!(
                without_line_numbers(again.lessons().cloned()),
                without_line_numbers(document.lessons().cloned())
            );
            // The lines that are no lesson's survive, in order (a last one may gain a line break).
            let other = |document: &Document| -> Vec<String> {
                document.other_lines().map(|line| pytext::strip(line).to_owned()).collect()
            };
            prop_assert_eq!(other(&again), other(&document));
            // What the writer wrote, it writes back byte for byte.
            prop_assert_eq!(again.render().unwrap().text, written.clone());
            prop_assert_eq!(again.render_as(Layout::Serialise).unwrap().0.text, written);
        }

        #[test]
        fn a_clean_description_is_one_capped_line_that_reads_back_as_it_is(
            text in "(\\PC|[\n\r\t\u{2028}\u{85}\u{1c}]|Root cause:| ){0,400}",
        ) {
            let clean = clean_description(&text);
            prop_assert_eq!(clean_description(&clean), clean.clone());
            prop_assert!(clean.chars().count() <= DESCRIPTION_CAP);
            prop_assert_eq!(pytext::splitlines(&clean).len(), usize::from(!clean.is_empty()));
            if !clean.is_empty() {
                let lesson = Lesson::with_defaults("2026-05-01", State::Rule, "C", &clean);
                prop_assert_eq!(lessons_of(&block(&lesson).unwrap()), [lesson]);
            }
        }

        #[test]
        fn a_retired_lesson_leaves_the_file_only_into_the_returned_list(
            text in file(),
            kill in prop::collection::vec(any::<bool>(), 24),
        ) {
            let (mut document, _) = Document::parse(&text);
            for (lesson, kill) in document.lessons_mut().zip(&kill) {
                if *kill {
                    lesson.state = State::Killed;
                }
            }
            let before = without_line_numbers(document.lessons().cloned());
            let rendered = document.render().unwrap();
            let mut after = lessons_of(&rendered.text);
            after.extend(without_line_numbers(rendered.retired.iter().cloned()));
            let key = |lesson: &Lesson| format!("{lesson:?}");
            let mut before_keys: Vec<String> = before.iter().map(key).collect();
            let mut after_keys: Vec<String> = after.iter().map(key).collect();
            before_keys.sort();
            after_keys.sort();
            prop_assert_eq!(after_keys, before_keys);
            prop_assert!(lessons_of(&rendered.text).iter().all(|lesson| !is_retired(lesson.state)));
        }
    }

    /// One change a writer makes between two saves.
    #[derive(Debug, Clone)]
    enum Step {
        /// The lesson at this index (modulo the count) reinforced: one more fire, a correction
        /// id, optionally a longer description and another state.
        Reinforce {
            at: usize,
            description: Option<String>,
            state: Option<State>,
        },
        /// A new lesson at the end.
        Add(String),
        /// The lesson at this index killed (it leaves for the archive).
        Kill(usize),
        /// Several changes in one save, as a batch of corrections makes them (the same lesson
        /// may be reinforced more than once).
        Several(Vec<Step>),
    }

    /// One correction's change: a lesson reinforced or added.
    fn learning_step() -> impl Strategy<Value = Step> {
        let description = "[A-Za-z][a-z ]{0,60}";
        let state = prop::sample::select(vec![State::Instinct, State::Pattern, State::Rule]);
        prop_oneof![
            2 => (any::<usize>(), prop::option::of(description), prop::option::of(state))
                .prop_map(|(at, description, state)| Step::Reinforce { at, description, state }),
            1 => description.prop_map(Step::Add),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => learning_step(),
            1 => any::<usize>().prop_map(Step::Kill),
            3 => prop::collection::vec(learning_step(), 2..8).prop_map(Step::Several),
        ]
    }

    /// Makes `step`'s change to `document`.
    fn take_step(document: &mut Document, step: &Step, id: usize) {
        let count = document.lessons().count();
        let fire = |lesson: &mut Lesson| {
            lesson.fire_count += 1;
            lesson.corrections.push(id.to_string());
        };
        match step {
            Step::Several(steps) => {
                for step in steps {
                    take_step(document, step, id);
                }
            }
            Step::Add(description) => document.push(Lesson::with_defaults(
                "2026-05-01",
                State::Instinct,
                "CODE",
                &clean_description(description),
            )),
            _ if count == 0 => {}
            Step::Reinforce {
                at,
                description,
                state,
            } => {
                let lesson = document.lesson_mut(at % count).unwrap();
                fire(lesson);
                if let Some(description) = description {
                    lesson.description = clean_description(description);
                }
                if let Some(state) = state {
                    lesson.state = *state;
                }
            }
            Step::Kill(at) => document.lesson_mut(at % count).unwrap().state = State::Killed,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The cached document is always the parse of the file as written, line numbers and
        /// raw texts included, whatever the file and the changes; a read of an unchanged file
        /// is served from it, and every write lands in the file.
        #[test]
        fn the_cached_document_is_the_parse_of_the_file_written(
            text in file(),
            steps in prop::collection::vec(step(), 1..6),
        ) {
            let dir = brain_with(&text);
            let path = dir.path().join(LESSONS_FILE);
            let cache = DocumentCache::default();
            for (id, step) in steps.iter().enumerate() {
                let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
                let mut document = lock.read_cached(&path, &cache).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                prop_assert_eq!(&document, &Document::parse(&String::from_utf8_lossy(&bytes)).0);
                take_step(&mut document, step, id);
                let expected = document.render().unwrap();
                // A lesson the generator wrote may not be writable once changed; then nothing is.
                if lock.save_cached(&path, document, "2026-05-01T10:00:00Z", &cache).is_err() {
                    prop_assert_eq!(std::fs::read(&path).unwrap(), bytes);
                    continue;
                }
                let written = std::fs::read_to_string(&path).unwrap();
                prop_assert_eq!(&written, &expected.text);
                let last = cache.last.lock().unwrap();
                match (&*last, step) {
                    (Some(known), _) => {
                        prop_assert_eq!(&known.bytes, written.as_bytes());
                        prop_assert_eq!(&known.document, &Document::parse(&written).0);
                    }
                    (None, Step::Kill(_)) => {}
                    (None, _) => prop_assert!(false, "a save without a retired lesson left no cache"),
                }
            }
        }
    }

    #[test]
    fn a_file_changed_by_another_writer_is_parsed_again_even_with_the_same_size_and_times() {
        let text = "[2026-04-02] [RULE:0.90] CODE: Use pathlib\n";
        let dir = brain_with(text);
        let path = dir.path().join(LESSONS_FILE);
        let cache = DocumentCache::default();
        let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
        let mut document = lock.read_cached(&path, &cache).unwrap();
        document.lesson_mut(0).unwrap().fire_count = 3;
        lock.save_cached(&path, document, "now", &cache).unwrap();
        drop(lock);
        assert!(cache.last.lock().unwrap().is_some());

        // The Python SDK rewrites the file in place: same inode, same size; the times are set
        // back to the ones our write left, as a write within one clock tick would.
        let ours = std::fs::read_to_string(&path).unwrap();
        let theirs = ours.replace("pathlib", "PATHLIB");
        assert_eq!(theirs.len(), ours.len());
        let times = std::fs::metadata(&path).unwrap();
        std::fs::write(&path, &theirs).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(
                std::fs::FileTimes::new()
                    .set_accessed(times.accessed().unwrap())
                    .set_modified(times.modified().unwrap()),
            )
            .unwrap();

        let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
        let document = lock.read_cached(&path, &cache).unwrap();
        assert_eq!(document, Document::parse(&theirs).0);
        assert_eq!(
            document.lessons().next().unwrap().description,
            "Use PATHLIB"
        );
    }

    fn brain_with(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LESSONS_FILE), text).unwrap();
        dir
    }

    #[test]
    fn save_moves_retired_lessons_to_the_archive_and_replaces_the_file() {
        let dir = brain_with(HAND_WRITTEN);
        let path = dir.path().join(LESSONS_FILE);
        let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
        let (document, _) = lock.read(&path).unwrap();
        let retired = lock.save(&path, &document, "2026-05-01T10:00:00Z").unwrap();
        drop(lock);

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("Prefer strings"), "{text}");
        assert!(text.starts_with("# Team brain: lessons\r\n"), "{text}");
        let archive = std::fs::read_to_string(dir.path().join(archive::ARCHIVE_FILE)).unwrap();
        assert!(
            archive.contains("## Retired 2026-05-01T10:00:00Z\n"),
            "{archive}"
        );
        assert_eq!(lessons_of(&archive), without_line_numbers(retired.clone()));
        assert_eq!(retired.len(), 1);
        assert_eq!(retired[0].description, "Prefer strings");
    }

    #[test]
    fn a_refused_save_changes_nothing() {
        let dir = brain_with(HAND_WRITTEN);
        let path = dir.path().join(LESSONS_FILE);
        let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
        let (mut document, _) = lock.read(&path).unwrap();
        document.push(Lesson::with_defaults("someday", State::Rule, "C", "d"));
        let err = lock.save(&path, &document, "now").unwrap_err();
        assert!(matches!(err, SaveError::Invalid(_)), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), HAND_WRITTEN);
        assert!(!dir.path().join(archive::ARCHIVE_FILE).exists());
    }

    #[test]
    fn the_write_lock_keeps_readers_and_other_writers_out() {
        let dir = brain_with("[2026-04-02] [RULE] C: d\n");
        let reader = LessonsFile::new(dir.path(), None, lessons::parse)
            .with_lock_timeout(Duration::from_millis(50));
        let lock = WriteLock::acquire(dir.path(), Duration::from_secs(1)).unwrap();
        let err = reader.get().unwrap_err();
        assert!(
            matches!(err, lessons_file::Error::LockTimeout { .. }),
            "{err}"
        );
        let err = WriteLock::acquire(dir.path(), Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, SaveError::LockTimeout { .. }), "{err}");
        drop(lock);
        assert_eq!(reader.get().unwrap().lessons.len(), 1);
        WriteLock::acquire(dir.path(), Duration::from_millis(50)).unwrap();
    }

    /// The text the torn-read test writes: one version of a large file, every line naming it.
    fn version(number: usize) -> String {
        format!("  version {number:06}\n").repeat(20_000)
    }

    fn keep(text: &str) -> String {
        text.to_owned()
    }

    #[test]
    fn a_reader_under_the_shared_lock_never_sees_a_torn_file() {
        let dir = brain_with(&version(0));
        let brain = dir.path().to_path_buf();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let done = std::sync::Arc::clone(&done);
            let brain = brain.clone();
            std::thread::spawn(move || {
                let file = LessonsFile::new(&brain, None, keep);
                let mut reads = 0;
                let mut last = 0;
                // At least one read after the writer is done, so the last version is seen.
                loop {
                    let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                    let text = file.get().unwrap();
                    let number: usize = text[10..16].parse().unwrap();
                    assert_eq!(*text, version(number), "a torn read");
                    assert!(number >= last, "versions go forward");
                    last = number;
                    reads += 1;
                    if finished {
                        return (reads, last);
                    }
                }
            })
        };
        // Without the lock too: the rename alone keeps a reader from a torn file, where a
        // rewrite in place (as the SDK does) would not.
        let unlocked_reader = {
            let done = std::sync::Arc::clone(&done);
            let path = brain.join(LESSONS_FILE);
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let number: usize = text.get(10..16).unwrap_or("torn").parse().unwrap_or(0);
                    assert_eq!(text, version(number), "a torn read without the lock");
                }
            })
        };
        let path = brain.join(LESSONS_FILE);
        for number in 1..=60 {
            let lock = WriteLock::acquire(&brain, Duration::from_secs(5)).unwrap();
            atomic::replace(&path, version(number).as_bytes()).unwrap();
            drop(lock);
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let (reads, last) = reader.join().unwrap();
        unlocked_reader.join().unwrap();
        assert_eq!(last, 60);
        assert!(reads >= 1);
    }
}
