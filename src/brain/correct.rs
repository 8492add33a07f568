//! `/correct`'s learning: one correction becomes a CORRECTION event, a new or reinforced lesson
//! in `lessons.md`, a row of the full-text index `/brain-recall` searches, and the attribution
//! 0.6.0 reports (misfired rules, additions, conflicts). The pure decisions are the modules
//! beside this one (`redact`, `severity`, `instruction`, `learn`, `confidence`, `attribution`);
//! this file orders the writes. It knows nothing of HTTP: the API builds the outbox row and maps
//! the [`Corrected`] answer onto its response.
//!
//! Everything stored is redacted first: the texts, the file path, the instruction (extracted
//! from the redacted texts). The severity is measured on the texts as the user edited them, as
//! 0.6.0 measures it and as the outbox's cloud severity is measured; a number reveals no secret.
//!
//! The order of the writes, so that after a crash at any moment every lesson's correction id
//! exists as an event and every LESSON_CHANGE event is reflected in `lessons.md`:
//!
//! 1. the CORRECTION event, with the outbox row for the cloud in the same transaction
//!    (`Brain::record`); its `events` row id is the correction id the lesson records;
//! 2. the `observation_dedup` sighting (`dedup`): a correction seen within the window skips
//!    3 and 4, teaching nothing (0.6.0 skips the same steps);
//! 3. `lessons.md`, under `.lessons.lock`: read, learn, confidence, atomic save, group
//!    committed (below);
//! 4. the LESSON_CHANGE event (created or reinforced), only once the file is saved, and
//!    RULE_FAILURE when a confident RULE of the category did not prevent the correction (both
//!    handed to the store's writer at once, so they share a commit);
//! 5. the `pending_approvals` row of a new lesson held for review (below), when the SDK created
//!    that table.
//!
//! The full-text index row needs only step 1, and is written while 3 to 5 run. A failure to
//! write it or the review row is logged: the correction stands.
//!
//! A crash after 1 or 2 leaves a CORRECTION that taught nothing (it is still recalled once the
//! index is rebuilt from CORRECTION events); a crash after 3 leaves a lesson change without its
//! LESSON_CHANGE event, never the reverse.
//!
//! Group commit (`group_commit`): the corrections that reach step 3 while `lessons.md` is being
//! written queue up, and the next write takes all of them (at most [`MAX_BATCH`]), in arrival
//! order, into one document under one hold of the lock: each learns against the document as the
//! ones before it left it (a second correction of a kind reinforces the lesson the first
//! created), then the file is saved once, with the same safety, before any of them goes on to
//! step 4. Each has recorded its CORRECTION before it queued and records its own events after
//! the save, so the order above holds for every member of a batch. A failed save fails every
//! member with the same error, and none of them is learned.
//!
//! Review: a correction whose texts hold an adversarial phrase (`adversarial`) requires review:
//! its new lesson waits for approval (confidence 0.0, `Pending approval: yes`), and its
//! CORRECTION event says so (`requires_review`, `adversarial_hits`, two tags), as in 0.6.0.
//!
//! Confidence: only the lesson the correction created or reinforced receives the evidence (0.6.0
//! applied it to every lesson, spec §13 #5); a reinforced lesson's session age starts again
//! (§13 #4). A lesson waiting for approval keeps its confidence. Misfires and conflicts are
//! reported, never applied (§13 #9).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;

use super::adversarial;
use super::attribution::{Attribution, Edit, Trackers};
use super::events::Logged;
use super::group_commit::{Abandoned, GroupCommit};
use super::handle::{Brain, Error as BrainError};
use super::instruction::{self, Instruction};
use super::learn::TermsMemo;
use super::lessons::Lesson;
use super::lessons_write::{DocumentCache, SaveError};
use super::recall;
use super::redact::redact;
use super::severity::{self, Measure};
use crate::store::OutboxEntry;

/// The most code points both texts may hold together (0.6.0's limit).
pub const MAX_CORRECTION_CHARS: usize = 100_000;

/// The most characters of each text the CORRECTION event keeps.
pub const EVENT_TEXT_CHARS: usize = 2_000;

/// The most characters of the final text an index row keeps.
pub const INDEX_TEXT_CHARS: usize = 500;

/// The event types and sources this module records.
pub const CORRECTION_EVENT: &str = "CORRECTION";
/// See [`CORRECTION_EVENT`].
pub const LESSON_CHANGE_EVENT: &str = "LESSON_CHANGE";
/// The source of both events.
pub const SOURCE: &str = "brain.correct";
/// Recorded when a correction lands in a category a confident RULE governs: the rule did not
/// prevent it (0.6.0's self-healing detection; nothing is healed).
pub const RULE_FAILURE_EVENT: &str = "RULE_FAILURE";
/// See [`RULE_FAILURE_EVENT`].
pub const RULE_FAILURE_SOURCE: &str = "brain.correct:self_healing";
/// The confidence from which a RULE counts as failed by a correction of its category.
pub const RULE_FAILURE_CONFIDENCE: f64 = 0.80;

/// The most corrections one `lessons.md` write takes, so that a write stays short however
/// many corrections wait.
pub const MAX_BATCH: usize = 64;

/// Why a correction was not learned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The correction is refused as it is; nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The event log failed.
    #[error(transparent)]
    Brain(#[from] BrainError),
    /// `lessons.md` could not be read or written; shared by every correction of the write.
    #[error("learning from the correction failed")]
    Lessons(#[source] Arc<SaveError>),
    /// The `lessons.md` write that held the correction ended without an answer for it (it
    /// panicked, or the runtime is shutting down).
    #[error("the lessons.md write that held the correction did not finish")]
    Unwritten(#[source] Abandoned),
    /// A blocking task did not finish (the runtime is shutting down).
    #[error("the correction's work did not finish")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// One correction as the client sent it (unredacted).
#[derive(Debug, Clone)]
pub struct Correction {
    /// The text before the edit.
    pub old: String,
    /// The text after it.
    pub new: String,
    /// The file edited, or empty.
    pub file_path: String,
    /// The client's session id, or empty.
    pub session_id: String,
    /// Upper-case category (`Category::of` the path).
    pub category: String,
}

/// What one correction did.
#[derive(Debug)]
pub struct Corrected {
    /// The brain's measures of the edit.
    pub measure: Measure,
    /// The instruction extracted (one line, from the redacted texts).
    pub instruction: Instruction,
    /// Whether a new lesson was created (else one was reinforced, or none for a duplicate).
    pub lesson_created: bool,
    /// The created or reinforced lesson, as saved; `None` when the correction was a duplicate
    /// observation (it taught nothing new).
    pub lesson: Option<Lesson>,
    /// Misfires, additions and conflicts, as 0.6.0 reports them.
    pub attribution: Attribution,
    /// The CORRECTION event and the fate of its outbox row.
    pub logged: Logged,
}

/// The learning state a [`Brain`] keeps between corrections: the attribution trackers (bounded,
/// in memory only, as in 0.6.0), where the index rows go, and `lessons.md` as last written, so
/// that the next correction parses it only if someone else changed it.
#[derive(Debug)]
pub struct Learning {
    trackers: Mutex<Trackers>,
    database: PathBuf,
    document: Arc<DocumentCache>,
    /// The terms of the lessons matched so far, for the next batch's matching.
    terms: Arc<Mutex<TermsMemo>>,
    /// The index's connection, once a correction opened it.
    index: Arc<Mutex<Option<Connection>>>,
    /// This service's writers of `lessons.md`: the corrections, in batches, and the other
    /// writers on its turn, before `.lessons.lock`, in the order they come (the file lock is
    /// tried and retried after a pause, so under load a writer that just arrived could take it
    /// again and again before one that has waited for long).
    writes: GroupCommit<LessonJob, Result<Learnt, Arc<SaveError>>>,
}

impl Learning {
    /// Fresh trackers; index rows go to the database at `database`.
    pub fn new(database: PathBuf) -> Learning {
        Learning {
            trackers: Mutex::new(Trackers::default()),
            database,
            document: Arc::new(DocumentCache::default()),
            terms: Arc::new(Mutex::new(TermsMemo::default())),
            index: Arc::new(Mutex::new(None)),
            writes: GroupCommit::new(MAX_BATCH),
        }
    }

    /// The database the index rows go to (the brain's `system.db`).
    pub(super) fn database(&self) -> &std::path::Path {
        &self.database
    }

    /// Waits for this service's writers of `lessons.md` that came before (first come, first
    /// served); hold the guard while taking and holding `.lessons.lock`.
    pub(super) async fn writer_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.writes.turn().await
    }

    /// `lessons.md` as this brain last wrote it, for every writer of the file to share.
    pub(super) fn document_cache(&self) -> Arc<DocumentCache> {
        Arc::clone(&self.document)
    }
}

/// What the blocking part hands back.
struct Prepared {
    old: String,
    new: String,
    file_path: String,
    redacted_kinds: Vec<&'static str>,
    measure: Measure,
    instruction: Instruction,
    /// The adversarial phrases of the texts: any makes the correction need review.
    adversarial_hits: Vec<&'static str>,
}

impl Prepared {
    /// Whether a person must approve what the correction teaches (§6.9 step 5).
    fn requires_review(&self) -> bool {
        !self.adversarial_hits.is_empty()
    }
}

impl Brain {
    /// Learns from `correction` (see the module doc for what is written, in which order).
    /// `outbox` is queued for the cloud in the CORRECTION event's transaction; its payload is
    /// the caller's, and must already be redacted. An `Error::Invalid` wrote nothing.
    pub async fn correct(
        &self,
        correction: Correction,
        outbox: Option<OutboxEntry>,
    ) -> Result<Corrected, Error> {
        let chars = correction.old.chars().count() + correction.new.chars().count();
        if chars > MAX_CORRECTION_CHARS {
            return Err(Error::Invalid(format!(
                "the correction holds {chars} characters; at most {MAX_CORRECTION_CHARS} are learned"
            )));
        }
        if correction.old == correction.new {
            return Err(Error::Invalid("the correction changes nothing".to_owned()));
        }
        let category = correction.category.to_uppercase();
        let session_id = correction.session_id.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(correction))
            .await
            .map_err(Error::Interrupted)?;

        // Attribution first: it needs only the session's fired rules and the redacted texts, and
        // it counts in memory only.
        let fired = self.sessions.fired(&session_id);
        let attributed = {
            let mut trackers = self
                .learning
                .trackers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            trackers.attribute(
                fired.as_deref().unwrap_or(&[]),
                &Edit {
                    category: &category,
                    file_path: &prepared.file_path,
                    old: &prepared.old,
                    new: &prepared.new,
                    session_id: &session_id,
                },
            )
        };
        if fired.is_some() {
            self.sessions.set_fired(&session_id, attributed.untested);
        }

        let session = self.sessions.number(&session_id);
        let (data, tags) = correction_event(&prepared, &category, self.platform.platform_source());
        let logged = self
            .record(CORRECTION_EVENT, SOURCE, session, data, tags, outbox)
            .await?;
        let correction_id = logged.row.0.to_string();

        // §6.9 step 7: the same correction seen again within the window is one observation;
        // it creates and reinforces nothing.
        let duplicate = self.seen_before(&category, &prepared, session).await?;
        // The index row needs only the committed CORRECTION, so it is written while the lesson
        // is learned, off the path every correction of a batch waits on.
        let (learnt, indexed) = tokio::join!(
            self.learn_unless_duplicate(duplicate, &category, &prepared, session, &correction_id),
            self.index(&category, &prepared),
        );
        indexed?;
        let (lesson_created, lesson) = learnt?;

        Ok(Corrected {
            measure: prepared.measure,
            instruction: prepared.instruction,
            lesson_created,
            lesson,
            attribution: attributed.attribution,
            logged,
        })
    }

    /// Learns the lesson of a correction that is not a duplicate, when `lessons.md` is the
    /// brain's own; answers whether a lesson was created, and the lesson, if any was learned.
    async fn learn_unless_duplicate(
        &self,
        duplicate: bool,
        category: &str,
        prepared: &Prepared,
        session: i64,
        correction_id: &str,
    ) -> Result<(bool, Option<Lesson>), Error> {
        if duplicate {
            return Ok((false, None));
        }
        if let Some(path) = self.lessons_outside_brain() {
            tracing::warn!(
                path = %path.display(),
                "correction recorded but not learned: the lessons are read from outside the brain \
                 directory ($BRAIN_LESSONS_PATH), and gradata writes only inside it"
            );
            return Ok((false, None));
        }
        match self
            .learn_lesson(category, prepared, session, correction_id)
            .await
        {
            Ok((created, lesson)) => Ok((created, Some(lesson))),
            // The CORRECTION event is committed and queued: the correction is captured. A 5xx
            // now would make a client send it again; the answer says nothing was learned, the
            // journal says why.
            Err(Error::Lessons(err)) => {
                tracing::error!(
                    error = %crate::logging::Causes(&*err),
                    "correction recorded but not learned: lessons.md could not be updated"
                );
                Ok((false, None))
            }
            Err(err) => Err(err),
        }
    }

    /// Creates or reinforces the correction's lesson under the lock, then records its events
    /// (see the module doc for the order); answers whether it was created, and the lesson.
    async fn learn_lesson(
        &self,
        category: &str,
        prepared: &Prepared,
        session: i64,
        correction_id: &str,
    ) -> Result<(bool, Lesson), Error> {
        let category = category.to_owned();
        let correction_id = correction_id.to_owned();
        let job = LessonJob {
            category: category.clone(),
            severity: prepared.measure.severity.as_str(),
            instruction: prepared.instruction.text.clone(),
            correction_id: correction_id.clone(),
            session: (session > 0).then_some(session),
            date: recall::local_today().to_string(),
            approval_required: prepared.requires_review(),
        };
        let dir = self.dir.clone();
        let path = self.lessons.path();
        let cache = self.learning.document_cache();
        let terms = Arc::clone(&self.learning.terms);
        let write = move |jobs| {
            let lessons = LessonsFile {
                dir: dir.clone(),
                path: path.clone(),
                cache: Arc::clone(&cache),
                terms: Arc::clone(&terms),
            };
            write_lessons(lessons, jobs)
        };
        let Learnt {
            created: lesson_created,
            lesson,
            failed_rule,
        } = self
            .learning
            .writes
            .submit(job, write)
            .await
            .map_err(Error::Unwritten)?
            .map_err(Error::Lessons)?;

        // Both events go to the store's writer at once, so that they share its next commit.
        let (data, tags) = lesson_change_event(lesson_created, &lesson, &correction_id);
        let lesson_change = self.record(LESSON_CHANGE_EVENT, SOURCE, session, data, tags, None);
        let rule_failure = async {
            let Some(rule) = &failed_rule else {
                return Ok(());
            };
            let (data, tags) = rule_failure_event(rule, &category, prepared, &correction_id);
            self.record(
                RULE_FAILURE_EVENT,
                RULE_FAILURE_SOURCE,
                session,
                data,
                tags,
                None,
            )
            .await
            .map(drop)
        };
        tokio::try_join!(lesson_change, rule_failure)?;

        if lesson_created && prepared.requires_review() {
            let database = self.learning.database.clone();
            let review = ReviewRow {
                category: lesson.category.clone(),
                description: lesson.description.chars().take(500).collect(),
                draft: prepared.old.chars().take(EVENT_TEXT_CHARS).collect(),
                fin: prepared.new.chars().take(EVENT_TEXT_CHARS).collect(),
                severity: prepared.measure.severity.as_str(),
                correction_id: correction_id.clone(),
                created: recall::local_today().to_string(),
            };
            // The lesson already waits for approval in lessons.md; the row only lists it for
            // the SDK's review tools, so a failure is logged, not answered.
            match tokio::task::spawn_blocking(move || queue_for_review(&database, &review)).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => tracing::error!(
                    error = %crate::logging::Causes(&err),
                    "a lesson waiting for approval could not be listed in pending_approvals"
                ),
                Err(err) => return Err(Error::Interrupted(err)),
            }
        }
        Ok((lesson_created, lesson))
    }
}

/// The heavy, pure part: the measures on the texts as edited, then everything redacted, then
/// the instruction from the redacted texts.
fn prepare(correction: Correction) -> Prepared {
    let measure = severity::measure(&correction.old, &correction.new);
    let old = redact(&correction.old);
    let new = redact(&correction.new);
    let file_path = redact(&correction.file_path);
    let mut kinds: Vec<&'static str> = old
        .found
        .iter()
        .chain(&new.found)
        .chain(&file_path.found)
        .map(|kind| kind.label())
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let instruction = instruction::extract(&old.text, &new.text);
    let adversarial_hits = adversarial::scan_correction(&correction.old, &correction.new);
    Prepared {
        adversarial_hits,
        old: old.text,
        new: new.text,
        file_path: file_path.text,
        redacted_kinds: kinds,
        measure,
        instruction,
    }
}

mod batch;
mod events;
mod side_tables;

use batch::{Learnt, LessonJob, LessonsFile, write_lessons};
use events::{correction_event, lesson_change_event, rule_failure_event};
use side_tables::{ReviewRow, queue_for_review};

#[cfg(test)]
mod tests;
