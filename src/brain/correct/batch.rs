//! A batch of corrections learned into `lessons.md` under one hold of `.lessons.lock` and
//! saved once (the group commit of the parent module's doc). Knows nothing of events or HTTP.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use super::RULE_FAILURE_CONFIDENCE;
use crate::brain::confidence::{self, Evidence};
use crate::brain::learn::{self, Learned, TermsMemo};
use crate::brain::lessons::{Lesson, State};
use crate::brain::lessons_file::DEFAULT_LOCK_TIMEOUT;
use crate::brain::lessons_write::{Document, DocumentCache, SaveError, WriteLock};

/// One correction's part in a batched `lessons.md` write: what [`learn::Correction`] needs,
/// owned.
#[derive(Debug, Clone)]
pub(super) struct LessonJob {
    pub(super) category: String,
    pub(super) severity: &'static str,
    pub(super) instruction: String,
    pub(super) correction_id: String,
    pub(super) session: Option<i64>,
    pub(super) date: String,
    pub(super) approval_required: bool,
}

impl LessonJob {
    pub(super) fn correction(&self) -> learn::Correction<'_> {
        learn::Correction {
            category: &self.category,
            severity: self.severity,
            instruction: &self.instruction,
            correction_id: &self.correction_id,
            session: self.session,
            date: &self.date,
            approval_required: self.approval_required,
        }
    }
}

/// Where a batch learns: the brain's `lessons.md`, as last written, and the lessons' terms.
#[derive(Debug, Clone)]
pub(super) struct LessonsFile {
    pub(super) dir: PathBuf,
    pub(super) path: PathBuf,
    pub(super) cache: Arc<DocumentCache>,
    pub(super) terms: Arc<Mutex<TermsMemo>>,
}

/// What one correction of a batch did to `lessons.md`.
#[derive(Debug, Clone)]
pub(super) struct Learnt {
    /// Whether it created its lesson (else it reinforced one).
    pub(super) created: bool,
    /// That lesson, as saved.
    pub(super) lesson: Lesson,
    /// The first RULE of the correction's category at [`RULE_FAILURE_CONFIDENCE`] or more once
    /// it was learned, if any.
    pub(super) failed_rule: Option<Lesson>,
}

/// Reads `lessons.md` under the lock, learns from each of `jobs` in order against the document
/// as the ones before it left it, and saves the file once. Answers what each job did, in the
/// same order; on an error none of them is saved (and the cache holds no changed copy).
pub(super) fn learn_batch(
    lessons: &LessonsFile,
    jobs: &[LessonJob],
) -> Result<Vec<Learnt>, SaveError> {
    let Some(last) = jobs.last() else {
        return Ok(Vec::new());
    };
    let lock = WriteLock::acquire(&lessons.dir, DEFAULT_LOCK_TIMEOUT)?;
    let mut document = lock.read_cached(&lessons.path, &lessons.cache)?;
    let learnt = {
        let mut terms = lessons.terms.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.iter()
            .map(|job| learn_into(&mut document, &job.correction(), &mut terms))
            .collect()
    };
    lock.save_cached(&lessons.path, document, &last.date, &lessons.cache)?;
    tracing::debug!(corrections = jobs.len(), "lessons.md saved");
    Ok(learnt)
}

/// One batched write of `lessons.md` (see [`learn_batch`]), on the blocking pool: one answer per
/// job, the same error for each when the write failed, none when it did not finish.
pub(super) async fn write_lessons(
    lessons: LessonsFile,
    jobs: Vec<LessonJob>,
) -> Vec<Result<Learnt, Arc<SaveError>>> {
    let count = jobs.len();
    match tokio::task::spawn_blocking(move || learn_batch(&lessons, &jobs)).await {
        Ok(Ok(learnt)) => learnt.into_iter().map(Ok).collect(),
        Ok(Err(err)) => {
            let err = Arc::new(err);
            (0..count).map(|_| Err(Arc::clone(&err))).collect()
        }
        Err(err) => {
            tracing::error!(error = %err, "a lessons.md write did not finish");
            Vec::new()
        }
    }
}

/// Learns from `correction` in `document`: creates or reinforces its lesson and applies the
/// confidence evidence to that lesson alone.
pub(super) fn learn_into(
    document: &mut Document,
    correction: &learn::Correction<'_>,
    terms: &mut TermsMemo,
) -> Learnt {
    let learned = learn::learn_among(document.lessons(), correction, terms);
    let evidence = Evidence::Reinforcing(confidence::Severity::from_label(correction.severity));
    let (created, lesson) = match learned {
        Learned::Created(lesson) => {
            let mut lesson = *lesson;
            give_evidence(&mut lesson, &evidence);
            document.push(lesson.clone());
            (true, lesson)
        }
        Learned::Reinforced {
            index,
            evidence: reinforcement,
        } => {
            let Some(target) = document.lesson_mut(index) else {
                unreachable!("learn decided on a lesson of this document")
            };
            reinforcement.reinforce(target);
            target.sessions_since_fire = 0;
            give_evidence(target, &evidence);
            (false, target.clone())
        }
    };
    // As this correction left them; the save changes no lesson.
    let failed_rule = document
        .lessons()
        .find(|l| {
            l.category == correction.category
                && l.state == State::Rule
                && l.confidence >= RULE_FAILURE_CONFIDENCE
        })
        .cloned();
    Learnt {
        created,
        lesson,
        failed_rule,
    }
}

/// Applies `evidence` to `lesson` unless it waits for approval. The reinforcement's fire was
/// counted by `Learned::apply` (a new lesson has none), so the engine's count is not added.
pub(super) fn give_evidence(lesson: &mut Lesson, evidence: &Evidence) {
    if lesson.pending_approval {
        return;
    }
    let fires = lesson.fire_count;
    confidence::apply(lesson, evidence);
    lesson.fire_count = fires;
}
