//! [`Document::rebase`]: after a save, makes the document what a parse of the text written
//! would give, reading again only the changed lessons and their neighbours, so that the next
//! cached read needs no parse. It knows nothing of files or of the lock.

use super::{Document, Part, Rendered};
use crate::brain::pytext;

impl Document {
    /// Makes this document what [`Document::parse`] gives on `rendered`, its own render
    /// (`starts` from the same render), without parsing the whole text again: only the lessons
    /// that changed and the parts on either side of each are read again from the new text, and
    /// the line numbers after them are moved. Answers `false`, leaving the document as it was,
    /// when that is not enough: a lesson left the file, or a changed part follows a lesson added
    /// since the read with an unchanged part between them.
    pub(super) fn rebase(&mut self, rendered: &Rendered, starts: &[usize]) -> bool {
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
