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
//! The index row is written on a connection of its own, on the blocking pool (with a busy
//! handler, as any second writer of a WAL database: it tries again every millisecond, where
//! SQLite's own pauses grow to 100 ms), not through the store's writer: the index is
//! the brain's, shared with the Python SDK, and its tables are created here, exactly as the SDK
//! creates them, when missing. The connection is kept for the next correction (opening one and
//! creating the tables again cost more than the insert) and dropped after a failure. It never
//! checkpoints the WAL itself: SQLite's default would have it copy the WAL into the database
//! inside a correction whenever the WAL is past 1,000 pages, which the store's checkpointer does
//! off every request's path. The searches stay read-only. The dedup sighting (step 2) goes
//! through the same connection, so that this service's two writers of the brain's own tables
//! never wait on each other's lock.
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
use std::time::Duration;

use rusqlite::Connection;

use super::adversarial;
use super::attribution::{Attribution, Edit, Trackers};
use super::confidence::{self, Evidence};
use super::dedup;
use super::events::Logged;
use super::group_commit::{Abandoned, GroupCommit};
use super::handle::{Brain, Error as BrainError};
use super::instruction::{self, Instruction};
use super::learn::{self, Learned, TermsMemo};
use super::lessons::{Lesson, State};
use super::lessons_file::DEFAULT_LOCK_TIMEOUT;
use super::lessons_write::{Document, DocumentCache, SaveError, WriteLock};
use super::pyjson::{Object, Value};
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

/// How long the index insert waits for another writer of the database.
const INDEX_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The index tables, as the Python SDK creates them (brain spec §2).
const CREATE_INDEX: &str = "CREATE TABLE IF NOT EXISTS brain_fts_content(\
        id INTEGER PRIMARY KEY AUTOINCREMENT, source, file_type, text, embed_date);
    CREATE VIRTUAL TABLE IF NOT EXISTS brain_fts USING fts5(source, file_type, text, embed_date, \
        content='brain_fts_content', content_rowid='id', tokenize='porter unicode61');";

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

    /// Writes the correction's row of the full-text index. The correction and its lesson stand
    /// without it: a failure is logged, not answered as an error the client would retry (and
    /// learn twice from).
    async fn index(&self, category: &str, prepared: &Prepared) -> Result<(), Error> {
        let row = index_text(category, prepared);
        let database = self.learning.database.clone();
        let connection = Arc::clone(&self.learning.index);
        let indexed = tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            let indexed = index_correction(&mut connection, &database, &row);
            if indexed.is_err() {
                *connection = None;
            }
            indexed
        });
        match indexed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                tracing::error!(
                    error = %crate::logging::Causes(&err),
                    "a correction was learned but could not be indexed for recall"
                );
                Ok(())
            }
            Err(err) => Err(Error::Interrupted(err)),
        }
    }

    /// Records the sighting of this correction in `observation_dedup` and answers whether it
    /// was seen within the window before (brain spec §6.9 step 7). A failure to read or write
    /// the table is logged and counts as a first sighting, as in 0.6.0: the dedup must not stop
    /// a correction from being learned.
    async fn seen_before(
        &self,
        category: &str,
        prepared: &Prepared,
        session: i64,
    ) -> Result<bool, Error> {
        let database = self.learning.database.clone();
        let connection = Arc::clone(&self.learning.index);
        let fingerprint = dedup::fingerprint(category, &prepared.old, &prepared.new);
        let category = category.to_owned();
        let now = super::events::python_utc_isoformat(std::time::SystemTime::now());
        // On the index's connection: one of this service's side writes at a time, so that they
        // do not wait on each other's locks (see `open_index`).
        let sighting = tokio::task::spawn_blocking(move || {
            let mut kept = connection.lock().unwrap_or_else(PoisonError::into_inner);
            let connection = match &mut *kept {
                Some(open) => open,
                None => kept.insert(open_index(&database)?),
            };
            let sighting = dedup::sight(
                connection,
                &fingerprint,
                &category,
                (session > 0).then_some(session),
                &now,
            );
            if sighting.is_err() {
                *kept = None;
            }
            sighting
        })
        .await
        .map_err(Error::Interrupted)?;
        Ok(match sighting {
            Ok(sighting) => sighting.duplicate,
            Err(err) => {
                tracing::error!(
                    error = %crate::logging::Causes(&err),
                    "the correction's observation could not be checked for a duplicate"
                );
                false
            }
        })
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

/// One correction's part in a batched `lessons.md` write: what [`learn::Correction`] needs,
/// owned.
#[derive(Debug, Clone)]
struct LessonJob {
    category: String,
    severity: &'static str,
    instruction: String,
    correction_id: String,
    session: Option<i64>,
    date: String,
    approval_required: bool,
}

impl LessonJob {
    fn correction(&self) -> learn::Correction<'_> {
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
struct LessonsFile {
    dir: PathBuf,
    path: PathBuf,
    cache: Arc<DocumentCache>,
    terms: Arc<Mutex<TermsMemo>>,
}

/// What one correction of a batch did to `lessons.md`.
#[derive(Debug, Clone)]
struct Learnt {
    /// Whether it created its lesson (else it reinforced one).
    created: bool,
    /// That lesson, as saved.
    lesson: Lesson,
    /// The first RULE of the correction's category at [`RULE_FAILURE_CONFIDENCE`] or more once
    /// it was learned, if any.
    failed_rule: Option<Lesson>,
}

/// Reads `lessons.md` under the lock, learns from each of `jobs` in order against the document
/// as the ones before it left it, and saves the file once. Answers what each job did, in the
/// same order; on an error none of them is saved (and the cache holds no changed copy).
fn learn_batch(lessons: &LessonsFile, jobs: &[LessonJob]) -> Result<Vec<Learnt>, SaveError> {
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
async fn write_lessons(
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
fn learn_into(
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
fn give_evidence(lesson: &mut Lesson, evidence: &Evidence) {
    if lesson.pending_approval {
        return;
    }
    let fires = lesson.fire_count;
    confidence::apply(lesson, evidence);
    lesson.fire_count = fires;
}

/// The CORRECTION event's data and tags (brain spec §6.9 step 6; the classifier's summary is
/// the extracted instruction).
fn correction_event(prepared: &Prepared, category: &str, platform: &str) -> (Object, Vec<String>) {
    let severity = prepared.measure.severity;
    let major = severity.is_major_edit();
    let text = |s: &str| Value::from(s.chars().take(EVENT_TEXT_CHARS).collect::<String>());
    let mut scope = Object::new();
    scope.insert("correction_scope".to_owned(), Value::from("domain"));
    let mut data = Object::new();
    data.insert("draft_text".to_owned(), text(&prepared.old));
    data.insert("final_text".to_owned(), text(&prepared.new));
    data.insert(
        "edit_distance".to_owned(),
        Value::from(prepared.measure.edit_distance),
    );
    data.insert("severity".to_owned(), Value::from(severity.as_str()));
    data.insert("outcome".to_owned(), Value::from(severity.as_str()));
    data.insert("major_edit".to_owned(), Value::from(major));
    data.insert("category".to_owned(), Value::from(category));
    data.insert(
        "summary".to_owned(),
        Value::from(prepared.instruction.text.as_str()),
    );
    data.insert(
        "instruction".to_owned(),
        Value::from(prepared.instruction.text.as_str()),
    );
    data.insert(
        "file_path".to_owned(),
        Value::from(prepared.file_path.as_str()),
    );
    data.insert(
        "lines_added".to_owned(),
        Value::from(line_count(&prepared.new) as u64),
    );
    data.insert(
        "lines_removed".to_owned(),
        Value::from(line_count(&prepared.old) as u64),
    );
    data.insert("correction_scope".to_owned(), Value::from("domain"));
    data.insert("source_kind".to_owned(), Value::from("user_edit"));
    data.insert(
        "requires_review".to_owned(),
        Value::from(prepared.requires_review()),
    );
    data.insert(
        "adversarial_hits".to_owned(),
        Value::from(
            prepared
                .adversarial_hits
                .iter()
                .map(|&hit| Value::from(hit))
                .collect::<Vec<_>>(),
        ),
    );
    data.insert(
        "redacted".to_owned(),
        Value::from(
            prepared
                .redacted_kinds
                .iter()
                .map(|&kind| Value::from(kind))
                .collect::<Vec<_>>(),
        ),
    );
    data.insert("scope".to_owned(), Value::from(scope));
    data.insert("platform_source".to_owned(), Value::from(platform));
    let mut tags = vec![
        format!("category:{category}"),
        format!("severity:{}", severity.as_str()),
    ];
    if major {
        tags.push("major_edit:true".to_owned());
    }
    if prepared.requires_review() {
        tags.push("requires_review:true".to_owned());
    }
    tags.push("source_kind:user_edit".to_owned());
    if !prepared.adversarial_hits.is_empty() {
        tags.push("adversarial_phrase:true".to_owned());
    }
    (data, tags)
}

/// Lines of a text, as the event's line counts give them (the whole old text is removed and
/// the whole new one added: a coarse count, the line diff is not kept).
fn line_count(text: &str) -> usize {
    super::pytext::splitlines(text).len()
}

/// The LESSON_CHANGE event for the lesson the correction created or reinforced.
fn lesson_change_event(
    created: bool,
    lesson: &Lesson,
    correction_id: &str,
) -> (Object, Vec<String>) {
    let mut data = Object::new();
    data.insert(
        "action".to_owned(),
        Value::from(if created { "created" } else { "reinforced" }),
    );
    // The lesson's id in full: the description below is cut, and `/end-session` counts the
    // lessons reinforced in a session by this id.
    data.insert(
        "lesson_id".to_owned(),
        Value::from(super::rule_id::rule_id(
            &lesson.category,
            &lesson.description,
        )),
    );
    data.insert(
        "lesson_category".to_owned(),
        Value::from(lesson.category.as_str()),
    );
    data.insert(
        "lesson_description".to_owned(),
        Value::from(lesson.description.chars().take(200).collect::<String>()),
    );
    data.insert(
        "lesson_state".to_owned(),
        Value::from(lesson.state.as_str()),
    );
    data.insert("confidence".to_owned(), Value::from(lesson.confidence));
    data.insert("fire_count".to_owned(), Value::from(lesson.fire_count));
    data.insert(
        "source_correction_id".to_owned(),
        Value::from(correction_id),
    );
    if created {
        data.insert(
            "initial_confidence".to_owned(),
            Value::from(learn::INITIAL_CONFIDENCE),
        );
    }
    let tags = vec![
        format!("category:{}", lesson.category),
        "provenance".to_owned(),
    ];
    (data, tags)
}

/// The RULE_FAILURE event for `rule`, which the correction of `category` got past.
fn rule_failure_event(
    rule: &Lesson,
    category: &str,
    prepared: &Prepared,
    correction_id: &str,
) -> (Object, Vec<String>) {
    let mut data = Object::new();
    data.insert(
        "failed_rule_category".to_owned(),
        Value::from(rule.category.as_str()),
    );
    data.insert(
        "failed_rule_description".to_owned(),
        Value::from(rule.description.as_str()),
    );
    data.insert(
        "failed_rule_confidence".to_owned(),
        Value::from(rule.confidence),
    );
    data.insert(
        "failed_rule_fire_count".to_owned(),
        Value::from(rule.fire_count),
    );
    data.insert(
        "correction_description".to_owned(),
        Value::from(prepared.instruction.text.as_str()),
    );
    data.insert("correction_event_id".to_owned(), Value::from(correction_id));
    data.insert(
        "correction_severity".to_owned(),
        Value::from(prepared.measure.severity.as_str()),
    );
    let tags = vec![format!("category:{category}"), "self_healing".to_owned()];
    (data, tags)
}

/// One row of the recall index.
#[derive(Debug, Clone)]
struct IndexRow {
    text: String,
    embed_date: String,
}

/// The index row of a correction: `"<CATEGORY>: <summary> - <final text>"` (§6.8).
fn index_text(category: &str, prepared: &Prepared) -> IndexRow {
    let summary = if prepared.instruction.text.is_empty() {
        prepared.measure.severity.as_str()
    } else {
        prepared.instruction.text.as_str()
    };
    let final_text: String = prepared.new.chars().take(INDEX_TEXT_CHARS).collect();
    IndexRow {
        text: format!("{category}: {summary} - {final_text}"),
        embed_date: recall::local_today().to_string(),
    }
}

/// A new lesson waiting for approval, as the SDK's `pending_approvals` table lists it.
#[derive(Debug, Clone)]
struct ReviewRow {
    category: String,
    description: String,
    draft: String,
    fin: String,
    severity: &'static str,
    correction_id: String,
    created: String,
}

/// Lists `row` in the `pending_approvals` table of the database at `database` when the SDK has
/// created that table (gradata does not create it); answers whether it was listed.
fn queue_for_review(database: &std::path::Path, row: &ReviewRow) -> rusqlite::Result<bool> {
    let connection = Connection::open(database)?;
    connection.busy_timeout(INDEX_BUSY_TIMEOUT)?;
    let exists: i64 = connection.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'pending_approvals'",
        [],
        |found| found.get(0),
    )?;
    if exists == 0 {
        return Ok(false);
    }
    connection.execute(
        "INSERT INTO pending_approvals (lesson_category, lesson_description, draft_text, \
         final_text, severity, correction_event_id, agent_type, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', ?7)",
        (
            &row.category,
            &row.description,
            &row.draft,
            &row.fin,
            row.severity,
            &row.correction_id,
            &row.created,
        ),
    )?;
    Ok(true)
}

/// The pages SQLite lets the index's connection leave in the WAL: none, checkpoints are the
/// store's checkpointer's (see the module doc).
const INDEX_AUTOCHECKPOINT_PAGES: u32 = 0;

/// How long the index's connection pauses between two tries of a write lock another connection
/// holds. SQLite's own schedule grows to 100 ms a try, far longer than the store's writer holds
/// the lock: under concurrent corrections its sleeps, not the writes, made the slowest answers.
const INDEX_BUSY_PAUSE: Duration = Duration::from_millis(1);

/// The index connection's busy handler: tries again after [`busy_pause`]'s pause, or gives up.
fn retry_soon(tries: i32) -> bool {
    match busy_pause(tries) {
        Some(pause) => {
            std::thread::sleep(pause);
            true
        }
        None => false,
    }
}

/// The pause before the next try of a busy lock after `tries` tries: [`INDEX_BUSY_PAUSE`], until
/// about [`INDEX_BUSY_TIMEOUT`] has been spent waiting (`None`: give up).
fn busy_pause(tries: i32) -> Option<Duration> {
    let pauses = u32::try_from(tries).unwrap_or(0);
    (INDEX_BUSY_PAUSE.saturating_mul(pauses) < INDEX_BUSY_TIMEOUT).then_some(INDEX_BUSY_PAUSE)
}

/// How the index's connection commits: without an fsync of its own (WAL `NORMAL`). What it
/// writes is derived: the index rows are rebuilt from the CORRECTION events by `/maintain
/// fts_rebuild`, and a lost dedup sighting only lets a repeated edit teach once more. A crash of
/// the service loses none of it; a power cut may lose the last few, which the next commit of
/// the store's writer, fsynced, would otherwise have carried. The events themselves, and
/// `lessons.md`, are fsynced before `/correct` answers.
const INDEX_SYNCHRONOUS: &str = "NORMAL";

/// Opens the index's connection to the database at `database`, creating the tables if missing.
/// It also records the dedup sightings: this service's two writers of the brain's own tables
/// share it, one at a time.
fn open_index(database: &std::path::Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open(database)?;
    connection.busy_handler(Some(retry_soon))?;
    connection.pragma_update(None, "wal_autocheckpoint", INDEX_AUTOCHECKPOINT_PAGES)?;
    connection.pragma_update(None, "synchronous", INDEX_SYNCHRONOUS)?;
    connection.execute_batch(CREATE_INDEX)?;
    Ok(connection)
}

/// Inserts `row` in the index of the database at `database`, on `connection`, opened first if
/// `None`. The tables are created when the connection is opened: a brain whose index was
/// dropped behind our back gets an error here, then a new connection that creates them again.
fn index_correction(
    connection: &mut Option<Connection>,
    database: &std::path::Path,
    row: &IndexRow,
) -> rusqlite::Result<()> {
    let connection = match connection {
        Some(open) => open,
        None => connection.insert(open_index(database)?),
    };
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    transaction.execute(
        "INSERT INTO brain_fts_content(source, file_type, text, embed_date) \
         VALUES ('corrections', 'correction', ?1, ?2)",
        (&row.text, &row.embed_date),
    )?;
    let id = transaction.last_insert_rowid();
    transaction.execute(
        "INSERT INTO brain_fts(rowid, source, file_type, text, embed_date) \
         VALUES (?1, 'corrections', 'correction', ?2, ?3)",
        (id, &row.text, &row.embed_date),
    )?;
    transaction.commit()
}

#[cfg(test)]
mod tests;
