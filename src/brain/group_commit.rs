//! Group commit for the writers of one file, as a database does for its log: the jobs that arrive
//! while a write is in progress wait in a queue, and the next writer takes all of them (up to a
//! bound), in arrival order, into one write. Each job's submitter gets its own answer back. It
//! knows nothing of what a job is or how the write is made: the caller's write function turns a
//! batch of jobs into one answer per job.
//!
//! Writers take turns (first come, first served) on one turn, which a writer that is not batched
//! (the end of a session) also takes, so that it writes between two batches. The batch's write
//! runs on a task of its own that holds the turn until every member has its answer: a submitter
//! whose request is dropped half way neither cuts its batch short nor lets the next batch start
//! before this one is written. Its own job is still written if it was queued (its answer is
//! then dropped), as a write already started finishes when its caller goes away.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as TurnMutex, OwnedMutexGuard, oneshot};

/// The batch that held a job ended without an answer for it: its write panicked, was cancelled
/// with the runtime, or answered fewer jobs than it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the write that held the job ended without answering it")]
pub struct Abandoned;

/// A queue of jobs of type `J` written in batches, each answered with an `R`. Share one per file.
#[derive(Debug)]
pub struct GroupCommit<J, R> {
    /// The jobs not yet taken by a writer, oldest first, each with where its answer goes (its
    /// submitter holds the receiving end; a dropped submitter makes the send a no-op).
    queue: Mutex<VecDeque<Waiting<J, R>>>,
    /// Held by whoever writes: a batch's write task, or a writer outside the queue.
    turn: Arc<TurnMutex<()>>,
    /// The most jobs one write takes.
    bound: usize,
}

#[derive(Debug)]
struct Waiting<J, R> {
    job: J,
    answer: oneshot::Sender<R>,
}

impl<J, R> GroupCommit<J, R>
where
    J: Send + 'static,
    R: Send + 'static,
{
    /// An empty queue whose writes take at most `bound` jobs each (at least one).
    pub fn new(bound: usize) -> GroupCommit<J, R> {
        GroupCommit {
            queue: Mutex::new(VecDeque::new()),
            turn: Arc::new(TurnMutex::new(())),
            bound: bound.max(1),
        }
    }

    /// Waits for the writers that came before (batches included) and holds the turn until the
    /// guard is dropped: for a writer of the same file that is not batched.
    pub async fn turn(&self) -> OwnedMutexGuard<()> {
        Arc::clone(&self.turn).lock_owned().await
    }

    /// Queues `job` and answers what its batch's write answered for it. When the turn comes to
    /// this submitter and its job has not been written yet, it takes the queue's oldest jobs
    /// (its own among them, unless more than the bound came before it) and hands them to
    /// `write`, which must answer one `R` per job, in the order given.
    pub async fn submit<W, F>(&self, job: J, write: W) -> Result<R, Abandoned>
    where
        W: Fn(Vec<J>) -> F,
        F: Future<Output = Vec<R>> + Send + 'static,
    {
        let (answer, mut answered) = oneshot::channel();
        self.lock_queue().push_back(Waiting { job, answer });
        loop {
            let turn = tokio::select! {
                // An answer that is there wins: the turn is not needed any more.
                biased;
                result = &mut answered => return result.map_err(|_| Abandoned),
                turn = self.turn() => turn,
            };
            // The batch that took this job answers before it lets go of the turn.
            match answered.try_recv() {
                Ok(result) => return Ok(result),
                Err(oneshot::error::TryRecvError::Closed) => return Err(Abandoned),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<Waiting<J, R>> = {
                let mut queue = self.lock_queue();
                let taken = queue.len().min(self.bound);
                queue.drain(..taken).collect()
            };
            if batch.is_empty() {
                // Not reached: an unanswered job is in the queue until a writer takes it.
                return Err(Abandoned);
            }
            let (jobs, answers): (Vec<J>, Vec<oneshot::Sender<R>>) = batch
                .into_iter()
                .map(|waiting| (waiting.job, waiting.answer))
                .unzip();
            let writing = write(jobs);
            tokio::spawn(async move {
                let results = writing.await;
                for (answer, result) in answers.into_iter().zip(results) {
                    // A submitter that went away does not want its answer.
                    let _ = answer.send(result);
                }
                drop(turn);
            });
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting<J, R>>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batches the writes of a test saw, in order.
    type Batches = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A queue whose writes record their batches and answer each job with itself doubled.
    fn recording(bound: usize) -> (Arc<GroupCommit<u32, u32>>, Batches) {
        (
            Arc::new(GroupCommit::new(bound)),
            Arc::new(Mutex::new(Vec::new())),
        )
    }

    fn double(batches: &Batches) -> impl Fn(Vec<u32>) -> std::future::Ready<Vec<u32>> + use<> {
        let batches = Arc::clone(batches);
        move |jobs: Vec<u32>| {
            batches.lock().unwrap().push(jobs.clone());
            std::future::ready(jobs.iter().map(|job| job * 2).collect())
        }
    }

    /// Submits `jobs` one after the other while the turn is held elsewhere, so that all of them
    /// queue; answers their tasks and the held turn.
    async fn queue_behind_a_writer(
        commit: &Arc<GroupCommit<u32, u32>>,
        batches: &Batches,
        jobs: impl IntoIterator<Item = u32>,
    ) -> (
        Vec<tokio::task::JoinHandle<Result<u32, Abandoned>>>,
        OwnedMutexGuard<()>,
    ) {
        let held = commit.turn().await;
        let mut tasks = Vec::new();
        for job in jobs {
            let commit = Arc::clone(commit);
            let write = double(batches);
            tasks.push(tokio::spawn(async move { commit.submit(job, write).await }));
            // On this one thread, the submitter runs until it waits for the turn.
            tokio::task::yield_now().await;
        }
        assert_eq!(commit.lock_queue().len(), tasks.len());
        (tasks, held)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn jobs_queued_during_a_write_go_in_one_batch_in_arrival_order() {
        let (commit, batches) = recording(64);
        let (tasks, held) = queue_behind_a_writer(&commit, &batches, [5, 3, 9, 1]).await;
        drop(held);
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap().unwrap());
        }
        assert_eq!(
            answers,
            [10, 6, 18, 2],
            "each submitter gets its own answer"
        );
        assert_eq!(*batches.lock().unwrap(), [vec![5, 3, 9, 1]]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_takes_at_most_the_bound() {
        let (commit, batches) = recording(3);
        let (tasks, held) = queue_behind_a_writer(&commit, &batches, 0..7).await;
        drop(held);
        for (job, task) in (0..7).zip(tasks) {
            assert_eq!(task.await.unwrap(), Ok(job * 2));
        }
        assert_eq!(
            *batches.lock().unwrap(),
            [vec![0, 1, 2], vec![3, 4, 5], vec![6]]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_job_is_written_at_once() {
        let (commit, batches) = recording(64);
        assert_eq!(commit.submit(21, double(&batches)).await, Ok(42));
        assert_eq!(*batches.lock().unwrap(), [vec![21]]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_member_of_a_batch_whose_write_answers_nothing_is_abandoned() {
        let commit: Arc<GroupCommit<u32, u32>> = Arc::new(GroupCommit::new(64));
        let held = commit.turn().await;
        let mut tasks = Vec::new();
        for job in 0..3 {
            let commit = Arc::clone(&commit);
            tasks.push(tokio::spawn(async move {
                commit
                    .submit(job, |_jobs| std::future::ready(Vec::new()))
                    .await
            }));
            tokio::task::yield_now().await;
        }
        drop(held);
        for task in tasks {
            assert_eq!(task.await.unwrap(), Err(Abandoned));
        }
        // The turn is free again for the next writer.
        drop(commit.turn().await);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_writer_outside_the_queue_waits_for_the_batch_before_it() {
        let (commit, batches) = recording(64);
        let (tasks, held) = queue_behind_a_writer(&commit, &batches, [1, 2]).await;
        // A writer that is not batched queues on the turn after the two submitters.
        let outside = {
            let commit = Arc::clone(&commit);
            let batches = Arc::clone(&batches);
            tokio::spawn(async move {
                let _turn = commit.turn().await;
                batches.lock().unwrap().len()
            })
        };
        tokio::task::yield_now().await;
        drop(held);
        assert_eq!(outside.await.unwrap(), 1, "it wrote after the batch");
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_writer_that_waits_is_not_overtaken_by_one_that_just_came() {
        let commit: Arc<GroupCommit<u32, u32>> = Arc::new(GroupCommit::new(64));
        let first = commit.turn().await;
        let waiting = Arc::clone(&commit);
        let waiter = tokio::spawn(async move {
            let _turn = waiting.turn().await;
        });
        // On this one thread, the waiter runs up to the lock and queues.
        tokio::task::yield_now().await;
        drop(first);
        // A writer arriving as the turn is released does not get it: the waiter does.
        assert!(commit.turn.try_lock().is_err());
        waiter.await.unwrap();
        assert!(commit.turn.try_lock().is_ok());
    }
}
