//! `/end-session` for [`Brain`]: gathers what one session showed, runs the graduation sweep
//! ([`super::graduation`]) on `lessons.md` under the lessons lock, writes the result back (the
//! killed lessons to the archive), and records what moved in the brain's event log.
//!
//! A session is the client's session id. Claude Code runs the plugin's Stop hook after every
//! assistant turn, so the call arrives many times for one id: the first call sweeps, the later
//! ones change nothing. A swept session is remembered by its SESSION_END event, which carries the
//! id (`data.session_id`), so a restart keeps it swept. A call without a session id sweeps
//! nothing: it cannot be told apart from the next turn's call.
//!
//! Order of the writes, all while the lock is held: `lessons.md` (and the archive) first, then one
//! LESSON_CHANGE event per move, then SESSION_END. After a crash every recorded LESSON_CHANGE is in
//! `lessons.md` or the archive; a crash before SESSION_END leaves the session unswept in the log,
//! so the next call sweeps it again (at worst one extra aging step), never a move without its file.
//!
//! Nothing goes to the cloud: 0.6.0 sends nothing on `/end-session`, and the corrections the sweep
//! reads were already queued by `/correct`. It knows nothing of HTTP.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};

use super::atomic;
use super::confidence::{Salt, Severity, Thresholds};
use super::graduation::{
    self, Counters, Outcome, SessionEvidence, SessionType, Sweep, SweptSessions, convergence,
};
use super::handle::{Brain, Error};
use super::lessons::State;
use super::lessons_file::DEFAULT_LOCK_TIMEOUT;
use super::lessons_write::{SaveError, WriteLock};
use super::pyjson::{Object, Value};
use super::rule_id::rule_id;

/// The brain's salt file, which keys its graduation thresholds (brain spec §8.4).
pub const SALT_FILE: &str = ".brain_salt";

/// The source of the events `/end-session` records.
pub const EVENT_SOURCE: &str = "brain.end_session";

/// Why `/end-session` could not finish. Nothing is written before the lessons are read and the
/// salt is known; see the module doc for what a failure after the `lessons.md` write leaves.
#[derive(Debug, thiserror::Error)]
pub enum EndSessionError {
    /// The event log or the database failed.
    #[error(transparent)]
    Brain(#[from] Error),
    /// `lessons.md` (or its archive, or its lock) could not be read or written.
    #[error(transparent)]
    Lessons(#[from] SaveError),
    /// The salt file could not be read or created.
    #[error("{}: cannot read or create the brain's salt", path.display())]
    Salt {
        /// The salt file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A new salt could not be written.
    #[error(transparent)]
    SaltWrite(#[from] atomic::Error),
    /// The session's events could not be read.
    #[error("cannot read the session's events")]
    Query(#[source] rusqlite::Error),
    /// `$BRAIN_LESSONS_PATH` names a file outside the brain directory, which gradata never
    /// writes (the Python daemon's `/end-session` wrote wherever it had read the lessons).
    #[error(
        "{}: the lessons are read from outside the brain directory ($BRAIN_LESSONS_PATH), and \
         gradata writes only inside it; unset BRAIN_LESSONS_PATH or point it into the brain",
        path.display()
    )]
    OutsideBrain {
        /// The lessons file.
        path: PathBuf,
    },
    /// The blocking work did not finish (the runtime is shutting down).
    #[error("the end of the session did not finish")]
    Interrupted(#[source] tokio::task::JoinError),
}

/// What `/end-session` answers (spec §6.10, with the real counters of §13 #1).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEnded {
    /// CORRECTION events of the ended session.
    pub corrections_captured: u64,
    /// LESSON_CHANGE events of the session that created a lesson.
    pub instructions_extracted: u64,
    /// What this call's sweep did (all zero for a session swept before).
    pub counters: Counters,
    /// Whether this call swept the session.
    pub outcome: Outcome,
    /// The brain's convergence, over every CORRECTION event.
    pub convergence: convergence::Convergence,
}

/// What the event log says about one session.
#[derive(Debug, Default)]
struct SessionLog {
    swept: bool,
    corrections: u64,
    created: u64,
    corrected: BTreeMap<String, Severity>,
    reinforced: BTreeSet<String>,
}

impl Brain {
    /// `/end-session`: sweeps the lessons once for `session_id` (see the module doc), testing the
    /// categories `session_type` names, and answers the counters and the convergence.
    pub async fn end_session(
        &self,
        session_id: &str,
        session_type: &str,
    ) -> Result<SessionEnded, EndSessionError> {
        let number = if session_id.is_empty() {
            0
        } else {
            self.sessions.number(session_id)
        };
        let lookup_id = session_id.to_owned();
        let log = self
            .index
            .run(move |conn| session_log(conn, &lookup_id, number))
            .await
            .map_err(Error::from)?
            .map_err(EndSessionError::Query)?;
        let mut ended = SessionEnded {
            corrections_captured: log.corrections,
            instructions_extracted: log.created,
            counters: Counters::default(),
            outcome: Outcome::AlreadySwept,
            convergence: convergence::convergence(&[]),
        };
        if !session_id.is_empty() && !log.swept {
            let mut fired = log.reinforced.clone();
            if let Some(rules) = self.sessions.fired(session_id) {
                fired.extend(rules.iter().map(|rule| rule.rule_id.clone()));
            }
            let evidence = SessionEvidence {
                id: session_id.to_owned(),
                number,
                session_type: SessionType::from_label(session_type),
                corrected: log.corrected,
                fired,
            };
            let swept = self.sweep_and_record(&evidence).await?;
            ended.counters = swept.counters;
            ended.outcome = swept.outcome;
        }
        let corrections = self
            .index
            .run(all_corrections)
            .await
            .map_err(Error::from)?
            .map_err(EndSessionError::Query)?;
        ended.convergence = convergence::convergence(&corrections);
        Ok(ended)
    }

    /// Takes the lessons lock, checks again (under it) that the session was not swept by a
    /// concurrent call, sweeps, writes `lessons.md` and records the events, then lets go.
    async fn sweep_and_record(&self, evidence: &SessionEvidence) -> Result<Sweep, EndSessionError> {
        let dir = self.dir.clone();
        let _turn = self.learning.writer_turn().await;
        let lock = blocking(move || WriteLock::acquire(&dir, DEFAULT_LOCK_TIMEOUT)).await??;
        let id = evidence.id.clone();
        let swept_before = self
            .index
            .run(move |conn| was_swept(conn, &id))
            .await
            .map_err(Error::from)?
            .map_err(EndSessionError::Query)?;
        if swept_before {
            return Ok(graduation::sweep(
                &[],
                evidence,
                &std::iter::once(evidence.id.clone()).collect(),
                Thresholds::UNSALTED,
            ));
        }
        if let Some(path) = self.lessons_outside_brain() {
            return Err(EndSessionError::OutsideBrain { path });
        }
        let dir = self.dir.clone();
        let path = self.lessons.path();
        let session = evidence.clone();
        let cache = self.learning.document_cache();
        let (lock, sweep, moved) = blocking(move || -> Result<_, EndSessionError> {
            let thresholds = Thresholds::salted(&brain_salt(&dir)?);
            let mut document = lock.read_cached(&path, &cache)?;
            let mut parts = Vec::new();
            let mut moved = Vec::new();
            for lesson in document.lessons_mut() {
                // One lesson at a time, so that each lesson's result replaces it in place and the
                // document keeps every other line where it was. The sweep decides each lesson on
                // its own evidence, so this is the sweep of the whole list.
                let one = graduation::sweep(
                    std::slice::from_ref(lesson),
                    &session,
                    &SweptSessions::new(),
                    thresholds,
                );
                if let Some(after) = one.lessons.first().or(one.archived.first()) {
                    *lesson = after.clone();
                    moved.extend(one.transitions.iter().map(|t| (t.clone(), after.clone())));
                }
                parts.push(one);
            }
            let sweep = combine(parts);
            if document.lessons().next().is_some() {
                let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ");
                lock.save_cached(&path, document, &now.to_string(), &cache)?;
            }
            Ok((lock, sweep, moved))
        })
        .await??;
        // One future per move, all polled at once: each reaches the store's writer in this
        // order (so the rows' ids keep it) and the writer commits them together, with one fsync
        // for the group instead of one per move (a first sweep of a large brain moves thousands
        // of lessons). Their JSONL lines are appended as each commit is answered, so within one
        // sweep their order there may differ; SESSION_END follows them all.
        let changes = moved.iter().map(|(transition, lesson)| {
            let mut data = Object::new();
            data.insert("action".to_owned(), Value::from(action(transition.to)));
            data.insert("lesson_id".to_owned(), Value::from(&*transition.lesson_id));
            data.insert("lesson_category".to_owned(), Value::from(&*lesson.category));
            let description: String = lesson.description.chars().take(200).collect();
            data.insert("lesson_description".to_owned(), Value::from(description));
            data.insert(
                "from_state".to_owned(),
                Value::from(transition.from.as_str()),
            );
            data.insert("to_state".to_owned(), Value::from(transition.to.as_str()));
            data.insert("reason".to_owned(), Value::from(transition.why.to_string()));
            data.insert("confidence".to_owned(), Value::from(lesson.confidence));
            data.insert("fire_count".to_owned(), Value::from(lesson.fire_count));
            data.insert("session_id".to_owned(), Value::from(&*evidence.id));
            let tags = vec![format!("category:{}", lesson.category)];
            self.record(
                "LESSON_CHANGE",
                EVENT_SOURCE,
                evidence.number,
                data,
                tags,
                None,
            )
        });
        for recorded in futures_util::future::join_all(changes).await {
            recorded?;
        }
        let end = sweep.session_end(evidence);
        let mut data = Object::new();
        data.insert("session".to_owned(), Value::from(end.session));
        data.insert("total_lessons".to_owned(), Value::from(end.total_lessons));
        data.insert("promotions".to_owned(), Value::from(end.promotions));
        data.insert("demotions".to_owned(), Value::from(end.demotions));
        data.insert(
            "graduated_rules".to_owned(),
            Value::from(end.graduated_rules),
        );
        data.insert("session_id".to_owned(), Value::from(&*evidence.id));
        self.record(
            "SESSION_END",
            EVENT_SOURCE,
            evidence.number,
            data,
            vec![],
            None,
        )
        .await?;
        drop(lock);
        Ok(sweep)
    }
}

/// Runs `work` on the blocking pool (file locks and writes).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, EndSessionError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(EndSessionError::Interrupted)
}

/// The per-lesson sweeps as one sweep of the list, in lesson order.
fn combine(parts: Vec<Sweep>) -> Sweep {
    let mut all = Sweep {
        lessons: Vec::new(),
        archived: Vec::new(),
        transitions: Vec::new(),
        counters: Counters::default(),
        outcome: Outcome::Swept,
    };
    for part in parts {
        all.lessons.extend(part.lessons);
        all.archived.extend(part.archived);
        all.transitions.extend(part.transitions);
        let (sum, add) = (&mut all.counters, part.counters);
        sum.promotions += add.promotions;
        sum.demotions += add.demotions;
        sum.graduated += add.graduated;
        sum.kills += add.kills;
        sum.archived += add.archived;
    }
    all
}

/// The LESSON_CHANGE `action` of a move to `to`.
fn action(to: State) -> &'static str {
    match to {
        State::Pattern | State::Rule => "promoted",
        State::Instinct => "demoted",
        State::Untestable => "untestable",
        State::Killed | State::Archived => "killed",
    }
}

/// The brain's salt, created as 0.6.0 creates it (64 hex digits) when the file is missing or
/// does not hold one.
fn brain_salt(dir: &Path) -> Result<Salt, EndSessionError> {
    let path = dir.join(SALT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            if let Some(salt) = Salt::from_file_text(&text) {
                return Ok(salt);
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(EndSessionError::Salt { path, source }),
    }
    let salt = Salt::generate(&mut rand::rngs::OsRng);
    atomic::replace(&path, salt.as_str().as_bytes())?;
    Ok(salt)
}

/// Whether a SESSION_END event names this session id.
fn was_swept(conn: &Connection, session_id: &str) -> rusqlite::Result<bool> {
    if !has_events(conn)? {
        return Ok(false);
    }
    conn.query_row(
        "SELECT 1 FROM events WHERE type = 'SESSION_END' \
         AND json_valid(data_json) AND json_extract(data_json, '$.session_id') = ?1 LIMIT 1",
        [session_id],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

fn has_events(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |_| Ok(()),
    )
    .optional()
    .map(|found| found.is_some())
}

/// What the log holds for the session `session_id`, numbered `number` (0: none).
fn session_log(conn: &Connection, session_id: &str, number: i64) -> rusqlite::Result<SessionLog> {
    let mut log = SessionLog::default();
    if !has_events(conn)? {
        return Ok(log);
    }
    if !session_id.is_empty() {
        log.swept = was_swept(conn, session_id)?;
    }
    if number <= 0 {
        return Ok(log);
    }
    let mut rows = conn.prepare(
        "SELECT type, \
           CASE WHEN json_valid(data_json) THEN json_extract(data_json, '$.category') END, \
           CASE WHEN json_valid(data_json) THEN json_extract(data_json, '$.severity') END, \
           CASE WHEN json_valid(data_json) THEN json_extract(data_json, '$.action') END, \
           CASE WHEN json_valid(data_json) THEN json_extract(data_json, '$.lesson_category') END, \
           CASE WHEN json_valid(data_json) \
             THEN json_extract(data_json, '$.lesson_description') END, \
           CASE WHEN json_valid(data_json) THEN json_extract(data_json, '$.lesson_id') END \
         FROM events WHERE session = ?1 AND type IN ('CORRECTION', 'LESSON_CHANGE') ORDER BY id",
    )?;
    let mut found = rows.query([number])?;
    while let Some(row) = found.next()? {
        let kind: String = row.get(0)?;
        let text = |i| -> rusqlite::Result<Option<String>> {
            Ok(match row.get_ref(i)? {
                rusqlite::types::ValueRef::Text(bytes) => {
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                _ => None,
            })
        };
        if kind == "CORRECTION" {
            log.corrections += 1;
            if let Some(category) = text(1)?.filter(|c| !c.is_empty()) {
                // One severity per category, the last correction's, as 0.6.0 keeps a map.
                let severity = Severity::from_label(&text(2)?.unwrap_or_default());
                log.corrected.insert(category.to_uppercase(), severity);
            }
        } else {
            match text(3)?.as_deref() {
                Some("created") => log.created += 1,
                Some("reinforced") => {
                    // The lesson's id when the event names it; else made from the (possibly
                    // cut) description, as 0.6.0's events only carry that.
                    if let Some(id) = text(6)? {
                        log.reinforced.insert(id);
                    } else if let (Some(category), Some(description)) = (text(4)?, text(5)?) {
                        log.reinforced.insert(rule_id(&category, &description));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(log)
}

/// Every CORRECTION event of an integer session above 0, for the convergence.
pub(super) fn all_corrections(conn: &Connection) -> rusqlite::Result<Vec<convergence::Correction>> {
    if !has_events(conn)? {
        return Ok(Vec::new());
    }
    let mut rows = conn.prepare(
        "SELECT session, \
           CASE WHEN json_valid(data_json) AND json_type(data_json, '$.category') = 'text' \
             THEN json_extract(data_json, '$.category') END, \
           CASE WHEN json_valid(data_json) \
             AND json_type(data_json, '$.edit_distance') IN ('integer', 'real') \
             THEN json_extract(data_json, '$.edit_distance') END \
         FROM events WHERE type = 'CORRECTION' AND typeof(session) = 'integer' AND session > 0",
    )?;
    let found = rows.query_map([], |row| {
        Ok(convergence::Correction {
            session: row.get(0)?,
            category: row.get(1)?,
            edit_distance: row.get(2)?,
        })
    })?;
    found.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_unusable_salt_is_created_and_a_good_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SALT_FILE);
        let created = brain_salt(dir.path()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(created.as_str(), text);
        assert_eq!(
            brain_salt(dir.path()).unwrap(),
            created,
            "a good salt is kept"
        );

        let kept = "a".repeat(64);
        std::fs::write(&path, format!("{kept}\n")).unwrap();
        assert_eq!(brain_salt(dir.path()).unwrap().as_str(), kept);

        std::fs::write(&path, "short").unwrap();
        let replaced = brain_salt(dir.path()).unwrap();
        assert_eq!(replaced.as_str().len(), 64);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), replaced.as_str());
    }

    #[test]
    fn corrections_and_session_changes_are_read_from_the_log() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            session_log(&conn, "s", 1).unwrap().corrections,
            0,
            "no table"
        );
        conn.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, session, type, data_json);
             INSERT INTO events (session, type, data_json) VALUES
               (3, 'CORRECTION', '{\"category\": \"tone\", \"severity\": \"major\"}'),
               (3, 'CORRECTION', '{\"category\": \"TONE\", \"severity\": \"minor\"}'),
               (3, 'CORRECTION', 'not json'),
               (4, 'CORRECTION', '{\"category\": \"CODE\"}'),
               (3, 'LESSON_CHANGE', '{\"action\": \"created\"}'),
               (3, 'LESSON_CHANGE', '{\"action\": \"reinforced\", \"lesson_category\": \"CODE\",
                                      \"lesson_description\": \"Use rg\"}'),
               (3, 'LESSON_CHANGE', '{\"action\": \"reinforced\", \"lesson_id\": \"TONE:1\"}'),
               (9, 'SESSION_END', '{\"session\": 9, \"session_id\": \"old\"}');",
        )
        .unwrap();
        let log = session_log(&conn, "s", 3).unwrap();
        assert_eq!(log.corrections, 3);
        assert_eq!(log.created, 1);
        assert!(!log.swept);
        assert_eq!(
            log.corrected,
            BTreeMap::from([("TONE".to_owned(), Severity::from_label("minor"))]),
            "the session's last severity per category"
        );
        assert_eq!(
            log.reinforced,
            BTreeSet::from([rule_id("CODE", "Use rg"), "TONE:1".to_owned()])
        );
        assert!(session_log(&conn, "old", 9).unwrap().swept);
        let all = all_corrections(&conn).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[2].category, None, "unreadable data is no category");
        assert_eq!(all[0].category.as_deref(), Some("tone"));
    }
}
