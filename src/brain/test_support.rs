//! Helpers the brain's unit tests share (compiled for tests only).

use super::lessons::Lesson;

/// The lessons with their line numbers zeroed: the same lessons read from different texts
/// compare equal.
pub(crate) fn without_line_numbers(lessons: impl IntoIterator<Item = Lesson>) -> Vec<Lesson> {
    lessons
        .into_iter()
        .map(|mut lesson| {
            lesson.line = 0;
            lesson
        })
        .collect()
}
