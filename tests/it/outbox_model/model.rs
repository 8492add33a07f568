//! The outbox as the store promises it, in memory: rows keyed by id (ids are never reused: the
//! table's key is `AUTOINCREMENT`), the event ids they hold, their state, lease, timer and
//! attempts; and the batches each drainer holds. Each method is one operation of the store, with
//! what it promises written out plainly, and returns what the store must answer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// One of the two drainers claiming from the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drainer {
    A,
    B,
}

impl Drainer {
    pub fn index(self) -> usize {
        match self {
            Drainer::A => 0,
            Drainer::B => 1,
        }
    }
}

/// A row's state (the store's three).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Dead,
    Synced,
}

/// What the model knows of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub event_id: String,
    pub state: State,
    /// The lease, while a drainer holds the (pending) row.
    pub lease: Option<Lease>,
    pub next_attempt_at: Option<SystemTime>,
    pub attempts: i64,
    pub synced_at: Option<SystemTime>,
}

/// A drainer's hold on a row: the token stored, and which claim took it. The model fences by
/// the claim, the promise (a drainer's settlement changes only rows it still holds); the store
/// by the token, which is the same as long as no two claims share a token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lease {
    pub token: SystemTime,
    pub claim: u64,
}

/// Rows a drainer claimed in one call, with the token it claimed them with (or last renewed to).
#[derive(Debug, Clone)]
pub struct Batch {
    pub token: SystemTime,
    /// Which claim this is, counted from 1.
    pub claim: u64,
    /// `(row id, event_id)`, in id order.
    pub rows: Vec<(i64, String)>,
}

/// The outcome of one delivery attempt, as a drainer settles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Synced,
    /// Try again after this many seconds.
    Retry(u16),
    Dead,
    Release,
}

/// The enqueue answer the store must give for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    Inserted(i64),
    Duplicate(i64),
}

#[derive(Debug, Default)]
pub struct Model {
    pub rows: BTreeMap<i64, Row>,
    /// The last id handed out: the next row is `last_id + 1`, whatever was purged.
    last_id: i64,
    /// Batches held by each drainer, by [`Drainer::index`].
    pub batches: [Vec<Batch>; 2],
    /// Ids of rows purged after being synced: they must never come back.
    pub purged: BTreeSet<i64>,
    /// Ids of rows that were ever synced: they stay synced until purged.
    pub synced_ever: BTreeSet<i64>,
    /// Claims made so far.
    claims: u64,
}

impl Model {
    /// Enqueue is idempotent on `event_id` while a row holds it (whatever its state): the first
    /// event of a call with a new id is a new pending row, any later one its duplicate. Row ids
    /// only grow and are never reused, but may skip (a duplicate's insert uses one up), so the
    /// store's answer `got` gives them; anything else in it is an error.
    pub fn enqueue(&mut self, event_ids: &[String], got: &[Enqueued]) -> Result<(), String> {
        if got.len() != event_ids.len() {
            return Err(format!(
                "{} answers for {} events",
                got.len(),
                event_ids.len()
            ));
        }
        for (event_id, answer) in event_ids.iter().zip(got) {
            let existing = self.rows.iter().find(|(_, r)| r.event_id == *event_id);
            match (existing, *answer) {
                (Some((id, _)), Enqueued::Duplicate(got)) if got == *id => {}
                (None, Enqueued::Inserted(id)) if id > self.last_id => {
                    self.last_id = id;
                    self.rows.insert(
                        id,
                        Row {
                            event_id: event_id.clone(),
                            state: State::Pending,
                            lease: None,
                            next_attempt_at: None,
                            attempts: 0,
                            synced_at: None,
                        },
                    );
                }
                (existing, answer) => {
                    return Err(format!(
                        "{event_id}: {answer:?}, but the row holding it is {:?} and the last id \
                         handed out {}",
                        existing.map(|(id, _)| id),
                        self.last_id
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rows a claim may take: pending, leased by nobody, and for a due claim, with no timer,
    /// a timer run out, or one further off than `longest_wait` (the clock went back).
    pub fn claimable(&self, due_at: Option<(SystemTime, Duration)>) -> Vec<i64> {
        self.rows
            .iter()
            .filter(|(_, r)| r.state == State::Pending && r.lease.is_none())
            .filter(|(_, r)| match (due_at, r.next_attempt_at) {
                (None, _) | (_, None) => true,
                (Some((now, longest_wait)), Some(at)) => at <= now || at > now + longest_wait,
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// Leases `ids` (already checked claimable) to `by` with `token`.
    pub fn lease(&mut self, by: Drainer, token: SystemTime, ids: &[i64]) {
        self.claims += 1;
        let claim = self.claims;
        let mut rows = Vec::new();
        for id in ids {
            let row = self.rows.get_mut(id).unwrap();
            row.lease = Some(Lease { token, claim });
            rows.push((*id, row.event_id.clone()));
        }
        if !rows.is_empty() {
            self.batches[by.index()].push(Batch { token, claim, rows });
        }
    }

    /// Settles one of `by`'s batches (the drainer then forgets it), the row at position `n` with
    /// `outcomes[n % len]`, fenced by the batch's lease: `Retry`, `Dead` and `Release` change a
    /// pending row only while this claim still holds it; `Synced` is a fact, and marks any row not
    /// synced yet (a dead one too) synced.
    pub fn settle(&mut self, by: Drainer, batch: &Batch, outcomes: &[Outcome], now: SystemTime) {
        self.batches[by.index()].retain(|b| b.claim != batch.claim);
        for (n, (id, event_id)) in batch.rows.iter().enumerate() {
            let outcome = outcomes[n % outcomes.len()];
            let Some(row) = self.rows.get_mut(id) else {
                continue;
            };
            assert_eq!(&row.event_id, event_id, "row {id} changed its event");
            let held = row.state == State::Pending
                && row.lease.is_some_and(|lease| lease.claim == batch.claim);
            match outcome {
                Outcome::Synced if row.state != State::Synced => {
                    row.state = State::Synced;
                    row.synced_at = Some(now);
                    row.lease = None;
                    self.synced_ever.insert(*id);
                }
                Outcome::Synced => {}
                Outcome::Retry(secs) if held => {
                    row.attempts += 1;
                    row.lease = None;
                    row.next_attempt_at = Some(now + Duration::from_secs(secs.into()));
                }
                Outcome::Dead if held => {
                    row.attempts += 1;
                    row.lease = None;
                    row.state = State::Dead;
                }
                Outcome::Release if held => row.lease = None,
                Outcome::Retry(_) | Outcome::Dead | Outcome::Release => {}
            }
        }
    }

    /// Renews `by`'s batch of claim `claim` to the token `renewed`: the rows this claim still
    /// holds take it. Returns how many did.
    pub fn renew(&mut self, by: Drainer, claim: u64, renewed: SystemTime) -> usize {
        let batch = self.batches[by.index()]
            .iter_mut()
            .find(|b| b.claim == claim)
            .unwrap();
        batch.token = renewed;
        let mut changed = 0;
        for (id, _) in &batch.rows {
            let lease = self.rows.get_mut(id).and_then(|row| row.lease.as_mut());
            if let Some(lease) = lease.filter(|lease| lease.claim == claim) {
                lease.token = renewed;
                changed += 1;
            }
        }
        changed
    }

    /// Frees the leases whose token is in `tokens` (an observer that saw them unchanged for a
    /// lease period); `None` frees every lease. Returns how many it freed.
    pub fn expire(&mut self, tokens: Option<&[SystemTime]>) -> usize {
        let mut freed = 0;
        for row in self.rows.values_mut() {
            let token = row.lease.map(|lease| lease.token);
            if token.is_some_and(|token| tokens.is_none_or(|tokens| tokens.contains(&token))) {
                row.lease = None;
                freed += 1;
            }
        }
        freed
    }

    /// The process stopped or died: its drainers and their batches with it. The store opened
    /// again alone frees every lease left.
    pub fn crash(&mut self) {
        self.batches = [Vec::new(), Vec::new()];
        self.expire(None);
    }

    /// Deletes the rows synced before `cutoff`; returns how many.
    pub fn purge(&mut self, cutoff: SystemTime) -> usize {
        let expired: Vec<i64> = self
            .rows
            .iter()
            .filter(|(_, r)| r.synced_at.is_some_and(|at| at < cutoff))
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.rows.remove(id);
            self.purged.insert(*id);
        }
        expired.len()
    }

    /// `queue retry`: every dead row becomes pending and due now; returns how many.
    pub fn retry_dead(&mut self) -> usize {
        let mut changed = 0;
        for row in self.rows.values_mut().filter(|r| r.state == State::Dead) {
            row.state = State::Pending;
            row.next_attempt_at = None;
            changed += 1;
        }
        changed
    }

    /// `queue retry <ids>`: each listed row not synced becomes pending and due now (a pending
    /// one keeps its lease); a row listed twice counts twice. Returns how many changes.
    pub fn retry_ids(&mut self, ids: &[i64]) -> usize {
        let mut changed = 0;
        for id in ids {
            let row = self.rows.get_mut(id);
            if let Some(row) = row.filter(|row| row.state != State::Synced) {
                row.state = State::Pending;
                row.next_attempt_at = None;
                changed += 1;
            }
        }
        changed
    }

    pub fn count(&self, state: State) -> u64 {
        self.rows.values().filter(|r| r.state == state).count() as u64
    }

    pub fn leased(&self) -> u64 {
        self.rows.values().filter(|r| r.lease.is_some()).count() as u64
    }
}
