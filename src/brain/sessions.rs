//! The brain routes' in-memory session state, as 0.6.0 keeps it: the number each
//! client session id gets, and the rules `/apply-rules` last fired in each session with the token
//! sets of their instructions. Lost on restart, as in 0.6.0: numbering starts again after the
//! highest integer session in the event log.
//!
//! [`Sessions`] is shared by every route (behind an `Arc`). Memory is bounded: beyond
//! [`DEFAULT_CAPACITY`] session ids (or the capacity given), the least recently used one is
//! forgotten, number and fired rules alike; should that id come back, it gets a new number, as it
//! would after a restart. 0.6.0 kept every id until `/end-session`, which a plugin that never
//! ends its sessions turns into a leak.
//!
//! Thread-safe and cheap: one std mutex, held for a map lookup or two, never across an `.await`
//! (nothing here is async). It knows nothing of HTTP, lessons or the database.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

/// How many session ids are remembered by default. A session is a conversation of an agent, so a
/// workstation sees a few a day; 4,096 keeps weeks of them, in well under a megabyte plus the
/// fired rules (at most 10 per session).
pub const DEFAULT_CAPACITY: usize = 4096;

pub use super::rules::FiredRule;

/// What [`Sessions::end`] removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ended {
    /// The session's number, if it had one.
    pub number: Option<i64>,
    /// The rules last fired in it, if any.
    pub fired: Option<Arc<[FiredRule]>>,
}

/// What is remembered of one session id.
#[derive(Debug)]
struct Entry {
    number: Option<i64>,
    fired: Option<Arc<[FiredRule]>>,
    /// When it was last used, the key of `State::by_use`.
    last_used: u64,
}

#[derive(Debug)]
struct State {
    /// The number the next new session gets.
    next_number: i64,
    entries: HashMap<String, Entry>,
    /// Session ids by last use, oldest first: the eviction order.
    by_use: BTreeMap<u64, String>,
    /// The use counter; every touch takes the next value.
    clock: u64,
    /// Entries that have a number (`/health`'s `active_sessions`).
    numbered: usize,
}

/// The session state every brain route shares; see the module doc.
#[derive(Debug)]
pub struct Sessions {
    state: Mutex<State>,
    capacity: usize,
}

impl Sessions {
    /// State whose first new session gets number `max_event_session + 1`, or 1 when the event
    /// log has no integer session (or could not be read), remembering at most `capacity` ids (at
    /// least one).
    pub fn new(max_event_session: Option<i64>, capacity: usize) -> Sessions {
        Sessions {
            state: Mutex::new(State {
                next_number: max_event_session.map_or(1, |max| max.saturating_add(1)),
                entries: HashMap::new(),
                by_use: BTreeMap::new(),
                clock: 0,
                numbered: 0,
            }),
            capacity: capacity.max(1),
        }
    }

    /// The number of `session_id`, given it now if it has none (`/detect`, `/correct`); 0 for an
    /// empty id, which is never registered.
    pub fn number(&self, session_id: &str) -> i64 {
        if session_id.is_empty() {
            return 0;
        }
        let mut state = self.lock();
        let entry = state.touch(session_id, self.capacity);
        if let Some(number) = entry.number {
            return number;
        }
        let number = state.next_number;
        state.next_number = number.saturating_add(1);
        state.numbered += 1;
        if let Some(entry) = state.entries.get_mut(session_id) {
            entry.number = Some(number);
        }
        number
    }

    /// The number of `session_id` if it has one, without giving it one.
    pub fn existing_number(&self, session_id: &str) -> Option<i64> {
        self.lock()
            .entries
            .get(session_id)
            .and_then(|entry| entry.number)
    }

    /// Replaces the rules fired in `session_id` (`/apply-rules`; an empty id is ignored). Does
    /// not number the session, as in 0.6.0.
    pub fn set_fired(&self, session_id: &str, rules: Vec<FiredRule>) {
        if session_id.is_empty() {
            return;
        }
        let mut state = self.lock();
        state.touch(session_id, self.capacity).fired = Some(rules.into());
    }

    /// The rules last fired in `session_id`.
    pub fn fired(&self, session_id: &str) -> Option<Arc<[FiredRule]>> {
        self.lock()
            .entries
            .get(session_id)
            .and_then(|entry| entry.fired.clone())
    }

    /// Forgets `session_id` (`/end-session`) and answers what it had.
    pub fn end(&self, session_id: &str) -> Ended {
        let mut state = self.lock();
        let Some(entry) = state.entries.remove(session_id) else {
            return Ended::default();
        };
        state.by_use.remove(&entry.last_used);
        if entry.number.is_some() {
            state.numbered -= 1;
        }
        Ended {
            number: entry.number,
            fired: entry.fired,
        }
    }

    /// How many session ids have a number (`/health`'s `active_sessions`).
    pub fn active_sessions(&self) -> usize {
        self.lock().numbered
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the maps half-changed in a way that
        // matters more than losing the state: go on with what is there.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The entry of `session_id`, created if missing, marked as the most recently used; the least
    /// recently used entries are forgotten beyond `capacity`.
    fn touch(&mut self, session_id: &str, capacity: usize) -> &mut Entry {
        self.clock += 1;
        let now = self.clock;
        if !self.entries.contains_key(session_id) {
            while self.entries.len() >= capacity {
                let Some((_, oldest)) = self.by_use.pop_first() else {
                    break;
                };
                if let Some(gone) = self.entries.remove(&oldest) {
                    if gone.number.is_some() {
                        self.numbered -= 1;
                    }
                }
            }
        }
        let entry = self.entries.entry(session_id.to_owned()).or_insert(Entry {
            number: None,
            fired: None,
            last_used: now,
        });
        self.by_use.remove(&entry.last_used);
        entry.last_used = now;
        self.by_use.insert(now, session_id.to_owned());
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, tokens: &[&str]) -> FiredRule {
        FiredRule {
            rule_id: id.to_owned(),
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn numbering_starts_after_the_log_and_is_stable_per_id() {
        for (max, calls, expected) in [
            (None, vec!["a", "b", "a", "c"], vec![1, 2, 1, 3]),
            (Some(41), vec!["x", "y", "x"], vec![42, 43, 42]),
            (Some(0), vec!["x"], vec![1]),
            (Some(i64::MAX), vec!["x", "y"], vec![i64::MAX, i64::MAX]),
            (None, vec!["", "a", ""], vec![0, 1, 0]),
        ] {
            let sessions = Sessions::new(max, DEFAULT_CAPACITY);
            let got: Vec<i64> = calls.iter().map(|id| sessions.number(id)).collect();
            assert_eq!(got, expected, "{max:?} {calls:?}");
        }
    }

    #[test]
    fn active_sessions_count_numbered_ids_only() {
        let sessions = Sessions::new(None, DEFAULT_CAPACITY);
        sessions.set_fired("applied-only", vec![rule("CODE:1", &[])]);
        assert_eq!(sessions.active_sessions(), 0);
        assert_eq!(sessions.existing_number("applied-only"), None);
        sessions.number("a");
        sessions.number("applied-only");
        sessions.number("a");
        assert_eq!(sessions.active_sessions(), 2);
        assert_eq!(
            sessions.end("a"),
            Ended {
                number: Some(1),
                fired: None
            }
        );
        assert_eq!(sessions.active_sessions(), 1);
        assert_eq!(sessions.end("a"), Ended::default());
        assert_eq!(sessions.number(""), 0);
        assert_eq!(sessions.active_sessions(), 1);
    }

    #[test]
    fn fired_rules_are_replaced_per_call_and_ended_with_the_session() {
        let sessions = Sessions::new(None, DEFAULT_CAPACITY);
        sessions.set_fired("s", vec![rule("A:1", &["use", "tabs"]), rule("B:2", &[])]);
        sessions.set_fired("s", vec![rule("C:3", &["x"])]);
        sessions.set_fired("", vec![rule("D:4", &[])]);
        assert_eq!(sessions.fired("s").unwrap().as_ref(), [rule("C:3", &["x"])]);
        assert_eq!(sessions.fired(""), None);
        let number = sessions.number("s");
        let ended = sessions.end("s");
        assert_eq!(ended.number, Some(number));
        assert_eq!(ended.fired.unwrap().as_ref(), [rule("C:3", &["x"])]);
        assert_eq!(sessions.fired("s"), None);
        // A new number after the end, as after a restart.
        assert_eq!(sessions.number("s"), number + 1);
    }

    #[test]
    fn the_least_recently_used_ids_are_forgotten_beyond_the_capacity() {
        let sessions = Sessions::new(None, 3);
        for id in ["a", "b", "c"] {
            sessions.number(id);
        }
        sessions.set_fired("a", vec![]); // a is now the most recently used
        sessions.number("d"); // forgets b
        for (id, number) in [("a", Some(1)), ("b", None), ("c", Some(3)), ("d", Some(4))] {
            assert_eq!(sessions.existing_number(id), number, "{id}");
        }
        assert_eq!(sessions.active_sessions(), 3);
        sessions.set_fired("e", vec![]); // forgets c
        assert_eq!(sessions.existing_number("c"), None);
        assert_eq!(sessions.active_sessions(), 2);
        assert_eq!(sessions.number("b"), 5, "a forgotten id is numbered anew");
        let state = sessions.lock();
        assert_eq!(state.entries.len(), 3);
        assert_eq!(state.by_use.len(), 3);
    }

    #[test]
    fn concurrent_callers_never_share_a_number() {
        let sessions = Arc::new(Sessions::new(Some(10), DEFAULT_CAPACITY));
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let sessions = Arc::clone(&sessions);
                std::thread::spawn(move || {
                    (0..200)
                        .map(|n| sessions.number(&format!("{thread}-{n}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut numbers: Vec<i64> = threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (11..811).collect::<Vec<_>>());
        assert_eq!(sessions.active_sessions(), 800);
    }
}
