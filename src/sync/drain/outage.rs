//! Telling "these rows fail" from "the ingest is down" in an explicit drain (DESIGN §5).
//!
//! An explicit drain walks the queue in id order and sends each row at most once: a row that
//! fails is settled for a retry and passed over, so rows the ingest keeps rejecting cannot block
//! the rows behind them. But an ingest that fails everything must stop the drain within a few
//! batches, or a restart during an outage would hold `READY=1` for its whole budget. So
//! [`OutageWatch`] reads every answer:
//!
//! - an answer that concerns every row (no response at all: a refused connection, a connect
//!   error, a timeout; or 503 without `Retry-After`) says "down" at once;
//! - a batch's worth of ordinary failures (500, 502…) with nothing delivered in between, or two
//!   seconds of them, pauses the walk and asks for probes: a few rows from elsewhere in the queue
//!   (halfway along what is left, then its tail). One delivery, anywhere, says "these rows fail":
//!   the walk goes on. Probes that all fail too say "down".
//!
//! It is pure decision code: it sees answers and the time, and says what to do; the drain loop
//! claims, sends and settles. 429, 401, 404… stop a drain by themselves and are not its concern.

use std::time::{Duration, Instant};

use super::super::classify::Disposition;
use super::super::client::Attempt;

/// Rows sent by one probe.
pub(super) const PROBE_ROWS: usize = 4;
/// Probes tried (at different places in the queue) before the ingest is taken to be down.
const PROBES: usize = 2;
/// Failures with nothing delivered for this long call for a probe, even within a batch: a slow
/// failing ingest must not hold a drain for a whole batch of timeouts.
const FAILING_FOR: Duration = Duration::from_secs(2);

/// What one answer says about the ingest, as opposed to about the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The row was delivered, or judged (a definitive 4xx makes it dead): the ingest is up.
    Progress,
    /// This row failed in a way that may be its own (500, 502, 504, 408…).
    RowFailed,
    /// No response at all (refused, connect error, timeout): the ingest cannot be reached.
    Silence,
    /// 503 without `Retry-After`: the ingest says it cannot take any row now.
    Unavailable,
    /// A throttle or a refusal (429, 401, 404…), which stops the drain by itself.
    Stops,
}

impl Answer {
    /// Reads an attempt.
    pub(super) fn of(attempt: &Attempt) -> Answer {
        match attempt.disposition {
            Disposition::Delivered | Disposition::Dead => Answer::Progress,
            Disposition::RetryLater => match attempt.status {
                None => Answer::Silence,
                Some(503) => Answer::Unavailable,
                Some(_) => Answer::RowFailed,
            },
            Disposition::Throttled { .. } | Disposition::AuthFailed | Disposition::ConfigError => {
                Answer::Stops
            }
        }
    }
}

/// Where a probe claims its rows, in what is left of the queue beyond the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProbeAt {
    /// Halfway along.
    Middle,
    /// At the end.
    Tail,
}

/// The watch's conclusion that the ingest is down, and why: the drain stops with `no_progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Down {
    /// No response at all (refused, connect error, timeout).
    Unreachable,
    /// 503 without `Retry-After`.
    Unavailable,
    /// A batch of rows failed, and so did this many rows probed elsewhere in the queue.
    EveryRowFails {
        /// Rows probed, all failed.
        probed: usize,
    },
}

impl Down {
    /// For operators: why the drain concluded the ingest fails everything, with the last error.
    pub(super) fn explain(self, last_error: &str) -> String {
        match self {
            Down::Unreachable => format!("the ingest is unreachable: {last_error}"),
            Down::Unavailable => format!("the ingest is unavailable: {last_error}"),
            Down::EveryRowFails { probed } => format!(
                "the ingest fails every row: a batch failed and {probed} rows probed elsewhere \
                 in the queue failed too (last: {last_error})"
            ),
        }
    }
}

/// The state of one explicit drain's watch. See the module documentation.
#[derive(Debug)]
pub(super) struct OutageWatch {
    /// Failures in a row needing a probe.
    batch_size: usize,
    /// Walk rows failed since the last progress.
    streak: usize,
    /// When the first of them failed.
    streak_since: Option<Instant>,
    state: State,
    /// Something was delivered or judged in this drain.
    progressed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Walking: no reason to doubt the ingest.
    Walking,
    /// Failures with nothing delivered: the walk is paused until probes say more.
    Probing {
        /// Probes already tried (sent or found nothing to send).
        tried: usize,
        /// Rows sent by tried probes, all failed.
        failed: usize,
        /// Rows of the current probe still unanswered; `None` when no probe is out.
        outstanding: Option<usize>,
    },
    /// Concluded: the drain stops.
    Down,
}

impl OutageWatch {
    /// A watch that asks for probes after `batch_size` failures in a row.
    pub(super) fn new(batch_size: usize) -> OutageWatch {
        OutageWatch {
            batch_size: batch_size.max(1),
            streak: 0,
            streak_since: None,
            state: State::Walking,
            progressed: false,
        }
    }

    /// Whether the walk may send its rows: not while probes decide.
    pub(super) fn walk_may_send(&self) -> bool {
        self.state == State::Walking
    }

    /// Where the next probe should claim, when one is wanted now.
    pub(super) fn wants_probe(&self) -> Option<ProbeAt> {
        match self.state {
            State::Probing {
                tried,
                outstanding: None,
                ..
            } => Some(if tried == 0 {
                ProbeAt::Middle
            } else {
                ProbeAt::Tail
            }),
            _ => None,
        }
    }

    /// Whether anything was delivered or judged in this drain.
    pub(super) fn progressed(&self) -> bool {
        self.progressed
    }

    /// A probe claimed `rows` rows to send (0: nothing there to probe).
    pub(super) fn probe_claimed(&mut self, rows: usize) -> Option<Down> {
        let State::Probing {
            tried,
            failed,
            outstanding: None,
        } = self.state
        else {
            return None;
        };
        if rows > 0 {
            self.state = State::Probing {
                tried,
                failed,
                outstanding: Some(rows),
            };
            return None;
        }
        self.next_probe(tried + 1, failed)
    }

    /// Reads the answer to a row of the walk (`probe` false) or of a probe, at `now`.
    pub(super) fn observe(&mut self, answer: Answer, probe: bool, now: Instant) -> Option<Down> {
        match answer {
            Answer::Stops => None,
            Answer::Progress => {
                self.progressed = true;
                self.streak = 0;
                self.streak_since = None;
                if self.state != State::Down {
                    self.state = State::Walking;
                }
                None
            }
            Answer::Silence => self.conclude(Down::Unreachable),
            Answer::Unavailable => self.conclude(Down::Unavailable),
            Answer::RowFailed => match self.state {
                State::Probing {
                    tried,
                    failed,
                    outstanding: Some(left),
                } if probe => {
                    let failed = failed + 1;
                    if left > 1 {
                        self.state = State::Probing {
                            tried,
                            failed,
                            outstanding: Some(left - 1),
                        };
                        None
                    } else {
                        self.next_probe(tried + 1, failed)
                    }
                }
                State::Walking if !probe => {
                    self.streak += 1;
                    let since = *self.streak_since.get_or_insert(now);
                    if self.streak >= self.batch_size
                        || now.saturating_duration_since(since) >= FAILING_FOR
                    {
                        self.state = State::Probing {
                            tried: 0,
                            failed: 0,
                            outstanding: None,
                        };
                    }
                    None
                }
                _ => None,
            },
        }
    }

    /// After a probe that found nothing or failed throughout: the next probe, or the verdict.
    fn next_probe(&mut self, tried: usize, failed: usize) -> Option<Down> {
        if tried < PROBES {
            self.state = State::Probing {
                tried,
                failed,
                outstanding: None,
            };
            return None;
        }
        if failed == 0 {
            // Nothing elsewhere to probe (the rest is leased by another drainer, or there is no
            // rest): no evidence either way, so the walk goes on and the next batch of failures
            // asks again.
            self.streak = 0;
            self.streak_since = None;
            self.state = State::Walking;
            return None;
        }
        self.conclude(Down::EveryRowFails { probed: failed })
    }

    /// The first conclusion stands; later answers of rows still in flight change nothing.
    fn conclude(&mut self, down: Down) -> Option<Down> {
        if self.state == State::Down {
            return None;
        }
        self.state = State::Down;
        Some(down)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use Answer::*;

    /// One input to the watch: `n` answers to rows of the walk or of a probe, a probe's claim of
    /// `n` rows, or time passing.
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Walk(Answer, usize),
        Probe(Answer, usize),
        Claimed(usize),
        After(Duration),
    }

    /// Feeds `steps` in order and checks whether the watch concluded "down", the probes it asked
    /// for, and whether the walk may send at the end.
    fn check(steps: &[Step], expected: (bool, Vec<ProbeAt>, bool)) {
        let mut watch = OutageWatch::new(50);
        let mut now = Instant::now();
        let mut down = false;
        let mut probes = Vec::new();
        for step in steps {
            let verdict = match *step {
                Step::Walk(answer, times) | Step::Probe(answer, times) => {
                    let probe = matches!(step, Step::Probe(..));
                    (0..times).fold(None, |verdict, _| {
                        verdict.or(watch.observe(answer, probe, now))
                    })
                }
                Step::Claimed(rows) => watch.probe_claimed(rows),
                Step::After(elapsed) => {
                    now += elapsed;
                    None
                }
            };
            down |= verdict.is_some();
            if let Some(at) = watch.wants_probe() {
                if probes.last() != Some(&at) {
                    probes.push(at);
                }
            }
        }
        assert_eq!((down, probes, watch.walk_may_send()), expected, "{steps:?}");
    }

    #[test]
    fn tells_failing_rows_from_a_failing_ingest() {
        use ProbeAt::*;
        use Step::*;
        // A few failures among deliveries: nothing to doubt.
        check(
            &[Walk(RowFailed, 49), Walk(Progress, 1)],
            (false, vec![], true),
        );
        // A batch of failures: probe halfway along; a delivery there says "rows fail".
        check(
            &[Walk(RowFailed, 50), Claimed(4), Probe(Progress, 1)],
            (false, vec![Middle], true),
        );
        // Both probes fail too: down.
        check(
            &[
                Walk(RowFailed, 50),
                Claimed(4),
                Probe(RowFailed, 4),
                Claimed(4),
                Probe(RowFailed, 4),
            ],
            (true, vec![Middle, Tail], false),
        );
        // The first probe fails, the tail delivers: rows fail, the walk goes on.
        check(
            &[
                Walk(RowFailed, 50),
                Claimed(4),
                Probe(RowFailed, 4),
                Claimed(4),
                Probe(RowFailed, 1),
                Probe(Progress, 1),
            ],
            (false, vec![Middle, Tail], true),
        );
        // A walk row in flight that is delivered while probing also says "rows fail".
        check(
            &[Walk(RowFailed, 50), Claimed(4), Walk(Progress, 1)],
            (false, vec![Middle], true),
        );
        // Nothing anywhere to probe: no evidence, the walk goes on.
        check(
            &[Walk(RowFailed, 50), Claimed(0), Claimed(0)],
            (false, vec![Middle, Tail], true),
        );
        // One probe found nothing, the other failed: down.
        check(
            &[
                Walk(RowFailed, 50),
                Claimed(0),
                Claimed(2),
                Probe(RowFailed, 2),
            ],
            (true, vec![Middle, Tail], false),
        );
        // Two seconds of failures with nothing delivered call for a probe within a batch.
        check(
            &[Walk(RowFailed, 3), After(FAILING_FOR), Walk(RowFailed, 1)],
            (false, vec![Middle], false),
        );
    }

    #[test]
    fn answers_that_concern_every_row_say_down_at_once() {
        use Step::*;
        check(&[Walk(Silence, 1)], (true, vec![], false));
        check(
            &[Walk(Progress, 10), Walk(Unavailable, 1)],
            (true, vec![], false),
        );
        check(
            &[Walk(RowFailed, 50), Claimed(4), Probe(Silence, 1)],
            (true, vec![ProbeAt::Middle], false),
        );
        // A throttle or a refusal is not the watch's to judge: the drain stops by itself.
        check(&[Walk(Stops, 60)], (false, vec![], true));
        // Only the first conclusion counts.
        let mut watch = OutageWatch::new(50);
        let now = Instant::now();
        assert_eq!(watch.observe(Silence, false, now), Some(Down::Unreachable));
        assert!(watch.observe(Unavailable, false, now).is_none());
        assert!(watch.observe(Progress, false, now).is_none());
        assert!(!watch.walk_may_send());
    }

    #[test]
    fn reads_attempts() {
        let attempt = |disposition, status| Attempt {
            disposition,
            status,
            detail: String::new(),
        };
        for (disposition, status, expected) in [
            (Disposition::Delivered, Some(200), Progress),
            (Disposition::Dead, Some(422), Progress),
            (Disposition::RetryLater, Some(500), RowFailed),
            (Disposition::RetryLater, Some(502), RowFailed),
            (Disposition::RetryLater, Some(503), Unavailable),
            (Disposition::RetryLater, None, Silence),
            (
                Disposition::Throttled { retry_after: None },
                Some(429),
                Stops,
            ),
            (Disposition::AuthFailed, Some(401), Stops),
            (Disposition::ConfigError, Some(404), Stops),
        ] {
            assert_eq!(
                Answer::of(&attempt(disposition, status)),
                expected,
                "{status:?}"
            );
        }
    }
}
