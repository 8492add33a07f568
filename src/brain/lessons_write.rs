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
//! The rendering is pure; the file work (lock, temporary file, rename, fsync) is in
//! [`WriteLock::save`] and `atomic`. Parts: `serialise` (one lesson's block in the SDK's layout,
//! and the description rules), `rebase` (bringing a document up to date with its own render
//! without a new parse), `lock` (the lock, the read and the save, and the [`DocumentCache`]).

mod lock;
mod rebase;
mod serialise;

pub use lock::{DocumentCache, SaveError, WriteLock};
pub use serialise::{DESCRIPTION_CAP, block, clean_description};

use super::lessons::{self, Lesson, LessonPiece, Piece, Problem, State};
use super::pytext;
use serialise::serialise;

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

/// Whether a lesson in this state leaves `lessons.md` for the archive.
pub fn is_retired(state: State) -> bool {
    matches!(state, State::Killed | State::Archived)
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

#[cfg(test)]
mod tests;
