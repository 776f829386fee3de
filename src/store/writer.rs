//! The single writer: one task per process, on a thread of its own ([`spawn`]), owns
//! the write connection ([`Tx`]), takes operations from a queue and commits as many as
//! are waiting in one transaction (group commit: one fsync for many changes). Each
//! operation is answered only after its transaction committed. If a database error
//! hits a batch, the transaction is rolled back and every operation in it is retried
//! alone, so one bad operation cannot fail its neighbours. A batch whose `COMMIT` got
//! no reply is first looked up: answered as committed if it was, retried if it was
//! not, and failed, not retried, if that cannot be learned (`ops::Failed`). What the
//! operations do is [`super::ops`].

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{broadcast, mpsc};

use super::backend::Tx;
use super::durable::{Fence, SyncFailed};
use super::ops::{self, Failed, Op};
use super::{StatusChange, StoreError, WriterStats};
use crate::jobs::Deliveries;
use crate::signing::Signer;

/// Operations waiting beyond this apply back-pressure to callers.
pub(crate) const QUEUE: usize = 4096;
/// At most this many operations share one transaction.
const MAX_BATCH: usize = 128;

/// What the writer works with besides its connection and its queue.
pub(crate) struct Setup {
    /// Where committed status changes are announced.
    pub(crate) changes: broadcast::Sender<StatusChange>,
    /// The deliveries each change plans.
    pub(crate) deliveries: Deliveries,
    /// With a signer, signed audit checkpoints are appended as they come due.
    pub(crate) signer: Option<Signer>,
    /// Where its time goes.
    pub(crate) stats: WriterStats,
}

/// Starts the writer on a thread of its own, with its own single-threaded runtime,
/// until every sender is gone. A batch is a chain of statements, each a hand-off to
/// the database (SQLite's worker thread, PostgreSQL's socket) and back; on the shared
/// runtime each return waited behind the HTTP requests queued on the workers, and the
/// writer, which every write waits for, spent most of a batch waiting to be polled.
pub(crate) fn spawn<T: Tx>(tx: T, queue: mpsc::Receiver<Op>, setup: Setup) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("signoff-writer".into())
        .spawn(move || runtime.block_on(run(tx, queue, setup)))?;
    Ok(())
}

/// Runs the writer until every sender is gone.
pub(crate) async fn run<T: Tx>(mut tx: T, mut queue: mpsc::Receiver<Op>, setup: Setup) {
    let Setup {
        changes,
        deliveries,
        signer,
        stats,
    } = setup;
    // A backend whose commits return before they are durable has them answered once
    // they are, by a task beside the writer, while the writer runs the next batch.
    let fence = tx.fence();
    let mut held = fence
        .clone()
        .map(|fence| Held::start(fence, changes.clone(), stats.clone()));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut checkpoints = signer.map(ops::Checkpoints::new);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Some(failed) = fence.as_ref().and_then(|fence| fence.failure()) {
            refuse(&mut batch, failed);
            continue;
        }
        let began = Instant::now();
        stats.began(batch.iter().map(Op::queued), began);
        let waiting = || !queue.is_empty();
        let this = ops::Batch {
            deliveries,
            checkpoints: checkpoints.as_mut(),
            stats: &stats,
            waiting: &waiting,
        };
        let committed = match ops::run_batch(&mut tx, &mut batch, this).await {
            Ok(committed) => committed,
            Err(Failed::RolledBack(error)) => {
                tracing::warn!(%error, size = batch.len(), "batch failed; retrying its operations one by one");
                let mut committed = Vec::new();
                for op in batch.iter_mut() {
                    committed
                        .extend(retry(&mut tx, op, deliveries, &mut checkpoints, &stats).await);
                }
                committed
            }
            Err(Failed::Unknown(why)) => {
                for op in batch.iter_mut() {
                    op.fail(unknown(&why));
                }
                Vec::new()
            }
        };
        stats.batch(began.elapsed());
        match held.as_mut() {
            Some(held) => held.hold(committed, &mut batch).await,
            None => answer(&changes, committed, &mut batch),
        }
    }
    if let Some(held) = held {
        held.finish().await;
    }
}

/// Announces a committed batch's status changes and answers its operations.
fn answer(
    changes: &broadcast::Sender<StatusChange>,
    committed: Vec<StatusChange>,
    batch: &mut Vec<Op>,
) {
    for change in committed {
        // Nobody listening is fine: long-pollers subscribe before they read.
        let _ = changes.send(change);
    }
    for op in batch.drain(..) {
        op.answer();
    }
}

/// Refuses a batch without running it: the fence failed, and nothing is written to a
/// file that may have lost what it last wrote.
fn refuse(batch: &mut Vec<Op>, failed: SyncFailed) {
    for mut op in batch.drain(..) {
        op.fail(failed.clone().into());
        op.answer();
    }
}

/// Batches committed and not yet durable, answered in commit order by a task beside
/// the writer once the fence says their commit is flushed.
struct Held {
    queue: mpsc::Sender<Committed>,
    task: tokio::task::JoinHandle<()>,
    fence: Arc<Fence>,
}

/// Batches that may wait for one sync together; the writer waits beyond them.
const HELD: usize = 64;

/// A committed batch as the answerer holds it: the number of its (last) commit, its
/// status changes, its operations, and when it was handed over.
type Committed = (u64, Vec<StatusChange>, Vec<Op>, Instant);

impl Held {
    fn start(
        fence: Arc<Fence>,
        changes: broadcast::Sender<StatusChange>,
        stats: WriterStats,
    ) -> Self {
        let (queue, mut batches) = mpsc::channel::<Committed>(HELD);
        let task = tokio::spawn({
            let fence = fence.clone();
            async move {
                while let Some((n, committed, mut ops, since)) = batches.recv().await {
                    let flushed = fence.until_flushed(n).await;
                    // Counted before anyone is answered, so that a caller who reads the
                    // metrics after its answer finds its batch's hold among them.
                    stats.held(since.elapsed());
                    match flushed {
                        Ok(()) => answer(&changes, committed, &mut ops),
                        // Committed, maybe lost: neither announced nor answered as done.
                        Err(failed) => refuse(&mut ops, failed),
                    }
                    fence.released(n);
                }
            }
        });
        Held { queue, task, fence }
    }

    /// Hands the batch (every op, answered or failed) to the answerer, to be answered
    /// once the newest commit is flushed.
    async fn hold(&mut self, committed: Vec<StatusChange>, batch: &mut Vec<Op>) {
        let ops = std::mem::replace(batch, Vec::with_capacity(MAX_BATCH));
        let newest = self.fence.newest();
        let handed = (newest, committed, ops, Instant::now());
        if let Err(mpsc::error::SendError((_, _, mut ops, _))) = self.queue.send(handed).await {
            // The answerer is gone only if it panicked: nothing is answered as done,
            // and the fence fails, so that reads waiting for a release are refused
            // rather than left waiting.
            let why = "the writer's answerer stopped".to_owned();
            self.fence.fail(why.clone());
            refuse(&mut ops, SyncFailed(why));
        }
    }

    /// Answers what is held, then stops.
    async fn finish(self) {
        drop(self.queue);
        let _ = self.task.await;
    }
}

/// Runs `op` again, alone, after its batch failed, and sets its answer; answers the
/// status changes to announce if it committed. It gets a second try: on SQLite,
/// another process may append to the audit chain after the op before it committed,
/// and the op's first event collides with it; the failure rolled back and forgot the
/// cached head, so the retry reads it under the lock. None after a commit whose
/// outcome is unknown: it may have been made.
async fn retry<T: Tx>(
    tx: &mut T,
    op: &mut Op,
    deliveries: Deliveries,
    checkpoints: &mut Option<ops::Checkpoints>,
    stats: &WriterStats,
) -> Vec<StatusChange> {
    let mut outcome = alone(tx, op, deliveries, checkpoints, stats).await;
    if let Err(Failed::RolledBack(_)) = outcome {
        outcome = alone(tx, op, deliveries, checkpoints, stats).await;
    }
    match outcome {
        Ok(changes) => changes,
        Err(Failed::RolledBack(error)) => {
            op.fail(StoreError::Database(error));
            Vec::new()
        }
        Err(Failed::Unknown(why)) => {
            op.fail(unknown(&why));
            Vec::new()
        }
    }
}

/// The error an operation fails with when its batch's `COMMIT` got no reply and
/// whether it committed could not be learned (`why`): a database error, as when the
/// database cannot be reached, whose words say that the write may have been made.
fn unknown(why: &sqlx::Error) -> StoreError {
    let words = format!(
        "the write's COMMIT got no reply and the database could not be asked whether it \
         committed, so it may have been made ({why})"
    );
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(words)))
}

/// Runs `op` in a transaction of its own, its earlier answer (if any) cleared.
async fn alone<T: Tx>(
    tx: &mut T,
    op: &mut Op,
    deliveries: Deliveries,
    checkpoints: &mut Option<ops::Checkpoints>,
    stats: &WriterStats,
) -> Result<Vec<StatusChange>, Failed> {
    op.clear();
    let this = ops::Batch {
        deliveries,
        checkpoints: checkpoints.as_mut(),
        stats,
        // After a failure, one operation at a time, each in a transaction begun alone.
        waiting: &|| false,
    };
    ops::run_batch(tx, std::slice::from_mut(op), this).await
}
