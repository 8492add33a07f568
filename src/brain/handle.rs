//! [`Brain`]: the one brain a service serves, as the routes share it. It owns the cached
//! `lessons.md`, the session state and the event log, and turns each route's decision (made by
//! the pure modules beside it) into what it reads and records. It knows nothing of HTTP: the API
//! maps requests onto its methods and their answers onto responses.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::enforce::{self, Enforcement, Enforcer};
use super::events::{BrainEvent, EventLog, Logged, PlatformEnv};
use super::feedback::{self, FeedbackEvent, Signal};
use super::index::{self, IndexReaders};
use super::lessons::{self, Lesson, State};
use super::lessons_file::{self, LessonsFile};
use super::pyjson::{Object, Value};
use super::recall::{self, Recall};
use super::recall_live::LiveIndex;
use super::rule_id::rule_id;
use super::rules::{self, Applied, RuleBook};
use super::sessions::{self, Sessions};
use crate::store::{self, OutboxEntry, Store};

/// What can keep a brain route from answering.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `lessons.md` could not be read.
    #[error(transparent)]
    Lessons(#[from] lessons_file::Error),
    /// The database (the event log, the full-text index) failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The full-text search failed for another reason than a query it cannot parse.
    #[error("searching the brain's full-text index failed")]
    Recall(#[source] recall::SearchError),
    /// The search could not run.
    #[error(transparent)]
    Index(#[from] index::Error),
}

/// `lessons.md` as the routes serve it: parsed, and prepared for each route, once per change of
/// the file.
#[derive(Debug, Default)]
pub struct Served {
    /// Every lesson line, in file order.
    pub lessons: Vec<Lesson>,
    /// `/apply-rules`'s prepared view.
    pub book: RuleBook,
    /// The lessons served as RULEs (after the idle-rule demotion), in file order, prepared for
    /// enforcement.
    enforcer: Enforcer,
    /// INSTINCT and PATTERN lessons as written: the lessons still learning.
    pub pending_lessons: usize,
}

impl Served {
    /// Parses `text`, logging each line it could not fully read (once per change of the file,
    /// since only a changed file is parsed).
    pub fn parse(text: &str) -> Served {
        let parsed = lessons::parse(text);
        for problem in &parsed.problems {
            tracing::warn!(line = problem.line, "lessons.md: {}", problem.message);
        }
        let lessons = parsed.lessons;
        let enforced: Vec<(String, String)> = lessons
            .iter()
            .filter(|lesson| lesson.effective_state() == State::Rule)
            .map(|lesson| {
                (
                    rule_id(&lesson.category, &lesson.description),
                    lesson.description.clone(),
                )
            })
            .collect();
        let pending_lessons = lessons
            .iter()
            .filter(|lesson| matches!(lesson.state, State::Instinct | State::Pattern))
            .count();
        Served {
            book: RuleBook::new(&lessons),
            enforcer: Enforcer::new(enforced),
            pending_lessons,
            lessons,
        }
    }

    /// Lessons served as RULEs.
    pub fn rules_count(&self) -> usize {
        self.book.n_rules()
    }
}

/// Search connections kept open: one per core of the machines gradata is sized for; more
/// searches at once open more, and close them after.
const SEARCH_CONNECTIONS: usize = 4;

/// The brain routes' shared state. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Brain {
    pub(super) dir: PathBuf,
    pub(super) lessons: Arc<LessonsFile<Served>>,
    pub(super) sessions: Sessions,
    pub(super) events: EventLog,
    pub(super) platform: PlatformEnv,
    pub(super) index: Arc<IndexReaders>,
    pub(super) live_index: Arc<LiveIndex>,
    pub(super) learning: super::correct::Learning,
}

impl Brain {
    /// The brain in `dir`, whose database `store` has open. Session numbers continue after the
    /// highest one in the brain's event log, as the Python daemon numbers them.
    pub async fn open(dir: &Path, store: Store, platform: PlatformEnv) -> Result<Brain, Error> {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        let max_session = store.max_event_session().await?;
        let index = Arc::new(IndexReaders::new(
            store.database_path().to_path_buf(),
            SEARCH_CONNECTIONS,
        ));
        if !index.run(recall::fts5_compiled_in).await?.unwrap_or(false) {
            tracing::warn!("this SQLite has no FTS5: /brain-recall will recall nothing");
        }
        let live_index = Arc::new(LiveIndex::new(store.database_path().to_path_buf()));
        let lessons = LessonsFile::new(&dir, lessons_file::override_from_env(), Served::parse);
        Ok(Brain {
            learning: super::correct::Learning::new(store.database_path().to_path_buf()),
            lessons: Arc::new(lessons),
            sessions: Sessions::new(max_session, sessions::DEFAULT_CAPACITY),
            events: EventLog::new(store, &dir),
            platform,
            live_index,
            index,
            dir,
        })
    }

    /// The lessons file when `$BRAIN_LESSONS_PATH` puts it outside the brain directory: the
    /// routes read it, but gradata writes only inside the brain (0.6.0 wrote wherever it had
    /// read the lessons).
    pub(super) fn lessons_outside_brain(&self) -> Option<PathBuf> {
        let path = self.lessons.path();
        let resolved = path
            .parent()
            .and_then(|parent| parent.canonicalize().ok())
            .unwrap_or_else(|| path.clone());
        (!resolved.starts_with(&self.dir)).then_some(path)
    }

    /// The brain directory, absolute.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The lessons as served now (re-read if `lessons.md` changed).
    pub async fn lessons(&self) -> Result<Arc<Served>, Error> {
        Ok(self.lessons.load().await?)
    }

    /// Sessions seen by `/detect` (and, later, `/correct`) and not ended.
    pub fn active_sessions(&self) -> usize {
        self.sessions.active_sessions()
    }

    /// `/apply-rules`: the rules for `request`, remembered as the session's fired rules when it
    /// has an id (replacing what an earlier call fired).
    pub async fn apply_rules(
        &self,
        request: &rules::Request<'_>,
        session_id: &str,
    ) -> Result<Applied, Error> {
        let served = self.lessons().await?;
        let applied = served.book.apply(request);
        if !session_id.is_empty() {
            self.sessions.set_fired(session_id, applied.fired.clone());
        }
        Ok(applied)
    }

    /// `/enforce-rules`: the RULEs `content` breaks. Empty content breaks nothing, and reads
    /// nothing.
    pub async fn enforce(&self, content: &str) -> Result<Enforcement, Error> {
        if content.is_empty() {
            return Ok(enforce::enforce(content, &[]));
        }
        Ok(self.lessons().await?.enforcer.enforce(content))
    }

    /// `/detect`: the feedback signals in `message`. A session id is numbered (it becomes an
    /// active session); any signal is logged as one IMPLICIT_FEEDBACK event under that number.
    pub async fn detect(&self, message: &str, session_id: &str) -> Result<Vec<Signal>, Error> {
        let session = self.sessions.number(session_id);
        let signals = feedback::scan(message);
        if let Some(FeedbackEvent { data, tags }) = FeedbackEvent::for_signals(message, &signals) {
            let mut object = Object::new();
            let texts = |items: &[&str]| {
                Value::from(
                    items
                        .iter()
                        .map(|&item| Value::from(item))
                        .collect::<Vec<_>>(),
                )
            };
            object.insert("signals".to_owned(), texts(&data.signals));
            object.insert("markers".to_owned(), texts(&data.markers));
            object.insert("snippet".to_owned(), Value::from(data.snippet));
            self.record(
                feedback::EVENT_TYPE,
                feedback::EVENT_SOURCE,
                session,
                object,
                tags,
                None,
            )
            .await?;
        }
        Ok(signals)
    }

    /// `/brain-recall`: the best matches of the brain's full-text index. A brain without one
    /// recalls nothing; nothing is created.
    pub async fn recall(&self, file_path: &str, content_preview: &str) -> Result<Recall, Error> {
        let file_path = file_path.to_owned();
        let preview = content_preview.to_owned();
        let today = recall::local_today();
        let live = Arc::clone(&self.live_index);
        let found = self
            .index
            .run(move |conn| recall::recall(&live, conn, &file_path, &preview, today))
            .await?;
        found.map_err(Error::Recall)
    }

    /// Records one event in the brain's log (its `events` table and `events.jsonl`), and
    /// `outbox` for the cloud in the same transaction when given.
    pub async fn record(
        &self,
        event_type: &str,
        source: &str,
        session: i64,
        data: Object,
        tags: Vec<String>,
        outbox: Option<OutboxEntry>,
    ) -> Result<Logged, Error> {
        let event = BrainEvent::new(
            crate::clock::now(),
            session,
            event_type,
            source,
            data,
            tags,
            &self.platform,
        );
        Ok(self.events.record(&event, outbox).await?)
    }
}
