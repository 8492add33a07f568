//! One drain, step by step. [`Run`] claims rows ([`Run::refill`]: the walk, or a probe elsewhere
//! in the queue), sends them with bounded concurrency ([`Run::dispatch`]), settles each batch in
//! one transaction when its last row is answered ([`Run::answered`]), gives back or times out
//! what is left when it stops ([`Run::wind_down`]), and names why it stopped
//! ([`Run::stop_reason`]). Meanwhile it renews the leases of the batches in hand
//! ([`Run::renew`]), so that no observer takes them however long their requests take.
//!
//! It does not decide what a response means (that is [`crate::sync::classify()`]) nor whether the
//! ingest is down (that is [`OutageWatch`]); it acts on their answers. The module documentation
//! of the parent states the invariants it keeps. Beside it: `settlement` (what one answer means
//! for its row), `renewal` (keeping the leases in hand) and `wind_down` (giving back what is
//! left, and why the drain stopped).

mod renewal;
mod settlement;
mod wind_down;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::outage::{Answer, Down, OutageWatch, PROBE_ROWS, ProbeAt};
use super::{Budget, DrainReport, Engine, Progress, StopReason, Trigger};
use crate::logging::Causes;
use crate::store::{self, ClaimFrom, ClaimedRow, RowId, Settlement};
use crate::sync::client::{Attempt, Client};
use crate::sync::status::SyncState;
use renewal::renewal_period;

/// What a claim's rows are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The next rows of the walk through the queue (the worker's next due rows).
    Walk,
    /// A few rows from elsewhere in the queue, to tell failing rows from a failing ingest.
    Probe,
}

/// The rows a claim took and the lease they hold, or why the store could not claim.
type Claimed = Result<(Vec<ClaimedRow>, SystemTime), store::Error>;

/// A claim sent to the store's writer, awaited beside the requests in flight.
type ClaimFuture = dyn Future<Output = (Purpose, Claimed)> + Send;

/// One POST in flight: it yields its row, the row's batch, and what came back.
type SendFuture = dyn Future<Output = (ClaimedRow, usize, Attempt)> + Send;

/// A batch's bookkeeping while its rows are in flight.
struct BatchTally {
    /// The lease its rows hold, and the token that fences their settlements; renewed (changed)
    /// every third of the lease period while the batch has rows not yet answered.
    lease_until: SystemTime,
    /// Every row the batch leased, answered or not: none is settled before the whole batch is.
    rows: Vec<RowId>,
    purpose: Purpose,
    /// Rows sent and not yet answered.
    outstanding: usize,
    /// A row was delivered or made dead.
    progressed: bool,
    /// No row failed.
    clean: bool,
    settlements: Vec<Settlement>,
}

impl BatchTally {
    /// A batch of `rows` to send, just claimed under `lease_until`, none answered yet.
    fn claimed(
        lease_until: SystemTime,
        purpose: Purpose,
        rows: Vec<RowId>,
        outstanding: usize,
    ) -> BatchTally {
        BatchTally {
            lease_until,
            rows,
            purpose,
            outstanding,
            progressed: false,
            clean: true,
            settlements: Vec::with_capacity(outstanding),
        }
    }
}

/// The state of one drain, from its first claim to its report.
pub(super) struct Run<'a> {
    engine: &'a Engine,
    client: Client,
    trigger: Trigger,
    budget: Budget,
    started: Instant,
    deadline: Instant,
    /// Pending rows when the drain started (probes aim by it), and that capped by the row budget
    /// (the progress total).
    pending_at_start: u64,
    total: u64,

    delivered: u64,
    dead: u64,
    retried: u64,
    done: u64,
    stop: Option<StopReason>,
    detail: Option<String>,
    /// The last failure's detail, for the reason an outage is concluded on.
    last_error: String,

    /// Where the walk claims next: after the last row it claimed (explicit drains), or the due
    /// rows (the worker).
    cursor: ClaimFrom,
    /// Rows the walk claimed, passed-over ones included.
    walked: u64,
    /// Rows claimed to be sent, against the row budget.
    taken: usize,
    /// The walk found nothing more to claim.
    exhausted: bool,
    /// The status says `sending` since the first rows were claimed.
    sending: bool,
    /// At most one claim is outstanding, polled beside the requests, so the senders never wait
    /// for the store: the next batch is leased while the current one is still in flight. Dropped
    /// only in [`Run::wind_down`], after awaiting it: its rows are leased and must be given back.
    claiming: Option<Pin<Box<ClaimFuture>>>,
    /// Claimed rows of the walk and of probes, waiting to be sent, each with its batch.
    queued: VecDeque<(ClaimedRow, usize)>,
    probes: VecDeque<(ClaimedRow, usize)>,
    in_flight: FuturesUnordered<Pin<Box<SendFuture>>>,
    /// Rows in flight, with their batch and attempts so far.
    in_flight_ids: HashMap<RowId, (usize, u32)>,
    /// Rows to give back untouched, with their batch.
    abandoned: Vec<(RowId, usize)>,
    /// Rows this explicit drain sent that failed: still pending, and never sent again by it.
    passed_over: HashSet<RowId>,
    /// The batches with rows not yet answered, by number. A batch leaves when settled, so what a
    /// drain keeps does not grow with the rows it has done.
    batches: HashMap<usize, BatchTally>,
    /// The number the next batch gets.
    next_batch: usize,
    /// Settlements on their way to the store's writer: reaped as they finish, and the rest
    /// awaited before the report.
    settling: JoinSet<Result<(), store::Error>>,
    /// Explicit drains only: the worker's pass stops at a batch without progress instead.
    watch: Option<OutageWatch>,
    past_deadline: bool,
    /// When the leases of the batches in hand are renewed next (every third of the lease
    /// period, on the monotonic clock).
    next_renewal: Instant,
    /// The highest id answered so far (see [`DrainReport::last_answered`]).
    last_answered: Option<RowId>,
}

impl<'a> Run<'a> {
    /// A drain about to start, `pending` rows waiting (unknown: `None`).
    pub(super) fn new(
        engine: &'a Engine,
        client: Client,
        trigger: Trigger,
        budget: Budget,
        started: Instant,
        pending: Option<u64>,
    ) -> Run<'a> {
        let pending_at_start = pending.unwrap_or(0);
        let explicit = trigger.is_explicit();
        Run {
            engine,
            client,
            trigger,
            budget,
            started,
            // A budget too large to add is as good as none.
            deadline: started
                .checked_add(budget.max_time)
                .unwrap_or(started + Duration::from_secs(100 * 365 * 86_400)),
            pending_at_start,
            total: pending_at_start.min(u64::try_from(budget.max_rows).unwrap_or(u64::MAX)),
            delivered: 0,
            dead: 0,
            retried: 0,
            done: 0,
            stop: None,
            detail: None,
            last_error: String::new(),
            cursor: trigger.first_claim(),
            walked: 0,
            taken: 0,
            exhausted: false,
            sending: false,
            claiming: None,
            queued: VecDeque::new(),
            probes: VecDeque::new(),
            in_flight: FuturesUnordered::new(),
            in_flight_ids: HashMap::new(),
            abandoned: Vec::new(),
            passed_over: HashSet::new(),
            batches: HashMap::new(),
            next_batch: 0,
            settling: JoinSet::new(),
            watch: explicit.then(|| OutageWatch::new(engine.settings.batch_size)),
            past_deadline: false,
            next_renewal: started + renewal_period(engine.settings.lease),
            last_answered: None,
        }
    }

    /// Runs the drain to its stop and reports.
    pub(super) async fn run(
        mut self,
        cancel: &CancellationToken,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> DrainReport {
        let deadline_reached = tokio::time::sleep_until(self.deadline.into());
        tokio::pin!(deadline_reached);
        loop {
            self.reap_settled();
            self.refill();
            self.dispatch();
            if self.in_flight.is_empty() && self.claiming.is_none() {
                break;
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.stop.get_or_insert(StopReason::Cancelled);
                    break;
                }
                // The deadline stops claiming and sending. The worker then waits for the requests
                // in flight, each bounded by the request timeout, so that a server slower than a
                // pass is heard rather than posted the same rows again by the next pass. An
                // explicit drain keeps its bound (the startup drain holds READY=1) and cuts them
                // short in `wind_down`, each counted as a timed-out attempt with a backoff:
                // released untouched, a hanging server would get them again at once, and never
                // show.
                () = &mut deadline_reached, if !self.past_deadline => {
                    self.past_deadline = true;
                    self.stop.get_or_insert(StopReason::TimeBudget);
                    if self.trigger.is_explicit() {
                        break;
                    }
                }
                // Awaited here, between answers: no settlement of a batch in hand is in flight
                // (a batch settles only once all its rows are answered, and then leaves), so none
                // can carry the token being replaced.
                () = tokio::time::sleep_until(self.next_renewal.into()) => {
                    self.renew().await;
                }
                (purpose, claim) = next_claim(&mut self.claiming), if self.claiming.is_some() => {
                    self.claiming = None;
                    self.claimed(purpose, claim);
                }
                Some((row, batch, attempt)) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.answered(row, batch, attempt);
                    progress(Progress {
                        done: self.done,
                        delivered: self.delivered,
                        total: self.total,
                    });
                }
            }
        }
        self.wind_down().await;
        let remaining = self.engine.pending(self.trigger).await;
        let reason = self.stop_reason(remaining);
        self.engine
            .finish_status(reason, self.retried, self.detail.as_deref());
        self.engine.persist_status().await;
        DrainReport {
            delivered: self.delivered,
            dead: self.dead,
            retried: self.retried,
            remaining,
            elapsed: self.started.elapsed(),
            reason,
            detail: self.detail,
            last_answered: self.last_answered,
        }
    }

    /// Whether the walk's rows may be claimed and sent: always for the worker; for an explicit
    /// drain, not while probes decide whether the ingest is down.
    fn walking(&self) -> bool {
        self.watch.as_ref().is_none_or(OutageWatch::walk_may_send)
    }

    /// Asks the store for rows, when none are being claimed: a probe the watch wants, or the
    /// walk's next batch while fewer than a batch beyond the in-flight limit is queued (the writer
    /// may be busy settling when the claim arrives, and a fast server empties a queue of only
    /// `limit` rows before the claim's answer comes back).
    fn refill(&mut self) {
        if self.claiming.is_some() || self.stop.is_some() || self.taken >= self.budget.max_rows {
            return;
        }
        let batch_size = self.engine.settings.batch_size;
        let limit = self.engine.concurrency.current();
        let probe = self.watch.as_ref().and_then(OutageWatch::wants_probe);
        let (purpose, from, want) = match probe {
            Some(at) => (Purpose::Probe, self.probe_from(at), PROBE_ROWS),
            None if self.walking() && !self.exhausted && self.queued.len() < limit + batch_size => {
                (Purpose::Walk, self.cursor, batch_size)
            }
            None => return,
        };
        let want = want.min(self.budget.max_rows - self.taken);
        let store = self.engine.store.clone();
        let lease_until = self.engine.lease_until(self.deadline);
        let longest_wait = self.engine.longest_retry_wait();
        self.claiming = Some(Box::pin(async move {
            let rows = store
                .claim_batch_until(want, from, lease_until, longest_wait)
                .await;
            (purpose, rows.map(|rows| (rows, lease_until)))
        }));
    }

    /// Where a probe claims: beyond the walk's cursor by half of what is left, or by all of it
    /// less a probe (the tail). Ids only grow and each pending row after the cursor has an id
    /// above the one before it, so the rows after `cursor + n` are at most `n` rows along:
    /// a probe lands no further than it aims, and never past the end of the queue as counted.
    fn probe_from(&self, at: ProbeAt) -> ClaimFrom {
        let ClaimFrom::After(RowId(cursor)) = self.cursor else {
            return self.cursor;
        };
        let beyond = self.pending_at_start.saturating_sub(self.walked);
        let skip = match at {
            ProbeAt::Middle => beyond / 2,
            ProbeAt::Tail => beyond.saturating_sub(PROBE_ROWS as u64),
        };
        ClaimFrom::After(RowId(
            cursor.saturating_add(i64::try_from(skip).unwrap_or(i64::MAX)),
        ))
    }

    /// Takes in a claim's rows: queues those to send, and gives back at once those this drain
    /// already sent (a failed row is passed over, never sent twice in one drain).
    fn claimed(&mut self, purpose: Purpose, claim: Claimed) {
        let (rows, lease_until) = match claim {
            Ok(claimed) => claimed,
            Err(err) => {
                self.stop.get_or_insert(StopReason::StoreError);
                self.detail = Some(Causes(&err).to_string());
                return;
            }
        };
        if purpose == Purpose::Walk {
            self.exhausted = rows.is_empty();
            if let (ClaimFrom::After(_), Some(last)) = (self.cursor, rows.last()) {
                self.cursor = ClaimFrom::After(last.id);
            }
            self.walked += rows.len() as u64;
        }
        // Only an explicit drain's claims move on (its cursor, a probe's fixed place): the worker
        // claims the due rows again and again, so a row that failed in this pass and is already
        // due again is sent again rather than given back, which would claim it forever.
        let (again, fresh): (Vec<ClaimedRow>, Vec<ClaimedRow>) = if self.trigger.is_explicit() {
            rows.into_iter()
                .partition(|row| self.passed_over.contains(&row.id))
        } else {
            (Vec::new(), rows)
        };
        self.taken += fresh.len();
        if !fresh.is_empty() && !self.sending {
            // Only now is there something to send: an empty pass stays idle.
            self.sending = true;
            self.engine.status.set_state(SyncState::Sending);
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        let leased = again.iter().chain(&fresh).map(|row| row.id).collect();
        let mut tally = BatchTally::claimed(lease_until, purpose, leased, fresh.len());
        let releases = again.iter().map(|row| Settlement::Release {
            id: row.id,
            status: None,
            error: None,
        });
        if fresh.is_empty() {
            self.settle(releases.collect(), lease_until);
        } else {
            tally.settlements.extend(releases);
            self.batches.insert(batch, tally);
        }
        let queue = match purpose {
            Purpose::Walk => &mut self.queued,
            Purpose::Probe => &mut self.probes,
        };
        let rows = fresh.len();
        queue.extend(fresh.into_iter().map(|row| (row, batch)));
        if purpose == Purpose::Probe {
            if let Some(down) = self.watch.as_mut().and_then(|w| w.probe_claimed(rows)) {
                self.conclude(down);
            }
        }
    }

    /// Sends queued rows, probes first, up to the concurrency limit; once the drain has stopped,
    /// gives the rows not yet sent back instead.
    fn dispatch(&mut self) {
        if self.stop.is_some() {
            let unsent = self.queued.drain(..).chain(self.probes.drain(..));
            self.abandoned
                .extend(unsent.map(|(row, batch)| (row.id, batch)));
            return;
        }
        let limit = self.engine.concurrency.current();
        while self.in_flight.len() < limit {
            let next = match self.probes.pop_front() {
                Some(probe) => probe,
                None if self.walking() => match self.queued.pop_front() {
                    Some(row) => row,
                    None => break,
                },
                None => break,
            };
            let (mut row, batch) = next;
            let client = self.client.clone();
            self.in_flight_ids.insert(row.id, (batch, row.attempts));
            self.in_flight.push(Box::pin(async move {
                // The payload is not needed once sent: move it into the request, no copy.
                let body = std::mem::take(&mut row.payload_json);
                let attempt = client.send(row.event_id.as_deref(), body).await;
                (row, batch, attempt)
            }));
        }
    }

    /// Applies one answer: the row's settlement, the counters, the outage watch, and the batch's
    /// settlement once its last row is in.
    fn answered(&mut self, row: ClaimedRow, batch: usize, attempt: Attempt) {
        self.in_flight_ids.remove(&row.id);
        self.last_answered = self.last_answered.max(Some(row.id));
        self.done += 1;
        let stopped = self.stop.is_some();
        let settlement = self.settlement(&row, &attempt);
        if !attempt.detail.is_empty() {
            self.engine.status.record_error(&attempt.detail);
            if !stopped {
                self.detail = Some(attempt.detail.clone());
            }
            self.last_error.clone_from(&attempt.detail);
        }
        if let (Settlement::Retry { id, .. }, true) = (&settlement, self.trigger.is_explicit()) {
            self.passed_over.insert(*id);
        }
        let probe = self
            .batches
            .get(&batch)
            .is_some_and(|tally| tally.purpose == Purpose::Probe);
        if let Some(watch) = self.watch.as_mut() {
            if let Some(down) = watch.observe(Answer::of(&attempt), probe, Instant::now()) {
                self.conclude(down);
            }
        }
        let explicit = self.watch.is_some();
        let Some(tally) = self.batches.get_mut(&batch) else {
            return;
        };
        tally.outstanding = tally.outstanding.saturating_sub(1);
        match settlement {
            Settlement::Synced { .. } | Settlement::Dead { .. } => tally.progressed = true,
            _ => tally.clean = false,
        }
        tally.settlements.push(settlement);
        if tally.outstanding > 0 {
            return;
        }
        if !tally.progressed {
            // The worker's pass ends at a batch without progress; an explicit drain passes the
            // rows over, and its watch decides whether the ingest is down.
            if !explicit {
                self.stop.get_or_insert(StopReason::NoProgress);
            }
        } else if tally.clean {
            self.engine.concurrency.increase();
        }
        if let Some(tally) = self.batches.remove(&batch) {
            self.settle(tally.settlements, tally.lease_until);
        }
    }

    /// The watch concluded that the ingest fails everything: stop, saying so.
    fn conclude(&mut self, down: Down) {
        if self.stop.is_none() {
            self.stop = Some(StopReason::NoProgress);
            self.detail = Some(down.explain(&self.last_error));
        }
    }

    /// Takes in the settlements the store has finished: a finished task keeps its memory until
    /// joined, and a drain of a million rows settles twenty thousand batches. A failed one stops
    /// the drain.
    fn reap_settled(&mut self) {
        while let Some(joined) = self.settling.try_join_next() {
            self.settled(joined);
        }
    }

    /// Records how one settlement ended.
    fn settled(&mut self, joined: Result<Result<(), store::Error>, tokio::task::JoinError>) {
        if let Ok(Err(err)) = joined {
            self.stop.get_or_insert(StopReason::StoreError);
            self.detail = Some(Causes(&err).to_string());
        }
    }

    /// Sends settlements of rows claimed under `lease_until` to the store.
    fn settle(&mut self, settlements: Vec<Settlement>, lease_until: SystemTime) {
        if settlements.is_empty() {
            return;
        }
        let store = self.engine.store.clone();
        self.settling
            .spawn(async move { store.settle_leased(settlements, lease_until).await });
    }
}

/// The outstanding claim's answer; never ready without one (the branch is guarded).
async fn next_claim(claiming: &mut Option<Pin<Box<ClaimFuture>>>) -> (Purpose, Claimed) {
    match claiming {
        Some(claim) => claim.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
