//! The single writer: one task per process owns one connection, takes write requests
//! from a queue and commits as many as are waiting in one transaction (group commit).
//! Each request is answered only after its transaction committed.
//!
//! The operations themselves live in [`super::ops`], written once over [`Tx`]. Each
//! returns what it changed, the jobs it planned and its audit drafts; the batch
//! writes the jobs in one statement, chains and appends the audit drafts, announces
//! status changes, and commits. If a database error hits a batch, the whole
//! transaction is rolled back and every request in it is retried alone, so one bad
//! request cannot fail its neighbours.

use std::collections::HashSet;
use std::future::Future;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Created, Result, StatusChange, StoreError, ops};
use crate::approval::{Approval, ApprovalId, Event, NewApproval, Vote};
use crate::audit::{self, Draft};
use crate::jobs::{self, Deliveries, DueJob, MessageKey, NewJob, Outcome, PostedMessage};
use crate::policy::Classification;

/// Requests waiting beyond this apply back-pressure to callers.
pub(crate) const QUEUE: usize = 4096;
/// At most this many requests share one transaction.
const MAX_BATCH: usize = 128;

#[derive(Debug)]
pub(crate) enum WriteOp {
    Create {
        request: Box<NewApproval>,
        class: Box<Classification>,
        now: DateTime<Utc>,
    },
    Apply {
        id: ApprovalId,
        event: Event,
        now: DateTime<Utc>,
    },
    /// Expire up to `limit` approvals whose expiry has come by `now`, set-based and in
    /// this transaction: one read of the due approvals, one write of them.
    FireDue { now: DateTime<Utc>, limit: i64 },
    /// Classify a row inserted straight into the shared table.
    Adopt {
        id: ApprovalId,
        class: Box<Classification>,
        now: DateTime<Utc>,
    },
    /// Lease up to `limit` due deliveries.
    Claim { now: DateTime<Utc>, limit: i64 },
    /// Remember a posted message's link.
    SetPermalink {
        channel: String,
        ts: String,
        permalink: String,
    },
    /// Puts claimed jobs back until their times, not counting the attempt (posts
    /// waiting for their channel's next slot), in one statement.
    Defer { jobs: Vec<(i64, DateTime<Utc>)> },
    /// A claimed delivery job finished, failed, or was given up.
    Report {
        job: DueJob,
        outcome: Outcome,
        now: DateTime<Utc>,
    },
}

#[derive(Debug)]
pub(crate) enum WriteOutput {
    Created(Created),
    Applied(Approval),
    /// How many timers fired.
    Fired(usize),
    Claimed(Vec<DueJob>),
    Reported,
}

pub(crate) struct Request {
    pub op: WriteOp,
    pub reply: oneshot::Sender<Result<WriteOutput>>,
}

/// What one backend must provide to the writer: transaction control on its own
/// connection and the small queries the operations are made of.
pub(crate) trait Tx: Send + 'static {
    fn begin(&mut self) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn commit(&mut self) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Rolls back; on failure the backend drops the connection and reconnects later.
    fn rollback(&mut self) -> impl Future<Output = ()> + Send;
    /// Inserts new approvals, each with its `params_sha256` (the request hash), in one
    /// statement, skipping those that repeat an open request (same token, tool and
    /// request hash, whatever their own status) or reuse an idempotency key, also
    /// within `rows`; answers the ids inserted.
    fn insert_approvals(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> impl Future<Output = sqlx::Result<HashSet<ApprovalId>>> + Send;
    /// The approval that blocks an insert: same token and idempotency key, else the
    /// same token, tool and request hash while open at `now`.
    fn find_existing(
        &mut self,
        token: &str,
        idempotency_key: Option<&str>,
        tool: &str,
        params_sha256: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<Option<ApprovalId>>> + Send;
    /// Loads an approval with its votes, locking the row where the backend can.
    fn load(
        &mut self,
        id: ApprovalId,
    ) -> impl Future<Output = sqlx::Result<Option<Approval>>> + Send;
    /// Writes each approval's changeable columns if its stored version is still the
    /// paired one; answers how many it wrote. One statement for a batch.
    fn update_approvals(
        &mut self,
        approvals: &[(&Approval, i64)],
    ) -> impl Future<Output = sqlx::Result<u64>> + Send;
    /// Inserts votes, one statement for a batch.
    fn insert_votes(
        &mut self,
        votes: &[(ApprovalId, Vote)],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn delete_vote(
        &mut self,
        id: ApprovalId,
        user: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Inserts jobs, each with the time it was planned (one statement for a batch).
    fn insert_jobs(
        &mut self,
        jobs: &[(NewJob, DateTime<Utc>)],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Deletes a finished job (finishing it again is a no-op).
    fn finish_job(&mut self, job_id: i64) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn set_permalink(
        &mut self,
        channel: &str,
        ts: &str,
        permalink: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Loads approvals with their votes, locking the rows where the backend can.
    fn load_many(
        &mut self,
        ids: &[ApprovalId],
    ) -> impl Future<Output = sqlx::Result<Vec<Approval>>> + Send;
    /// Writes a classified shared-table row if it is still unclassified; false if
    /// another replica got there first.
    fn adopt_approval(
        &mut self,
        approval: &Approval,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// Tells other processes about status changes, delivered when the transaction
    /// commits (Postgres NOTIFY; nothing on SQLite, which has one process).
    fn announce(
        &mut self,
        changes: &[StatusChange],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Up to `limit` pending or approved approvals whose expiry has come by `now`,
    /// earliest expiry first, with their votes, for this transaction to expire
    /// (Postgres: locked, skipping those another replica is expiring).
    fn due_expiries(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = sqlx::Result<Vec<Approval>>> + Send;
    /// Deletes the `expire` rows (timers that a signoff before migration 0005 planned
    /// and fired itself, during a rolling upgrade) due before `due_before` and not
    /// leased at `now`: no such replica took them in time, and the approval's own
    /// `expires_at` has fired by then. Answers how many went.
    fn drop_stale_timers(
        &mut self,
        due_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<u64>> + Send;
    /// Leases up to `limit` ready deliveries (every job but timers) due at `now` until
    /// `lease_until`, counting the attempt.
    fn claim_jobs(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = sqlx::Result<Vec<DueJob>>> + Send;
    /// Releases the lease and schedules the job again at `at` after a failed attempt.
    fn retry_job(
        &mut self,
        job_id: i64,
        at: DateTime<Utc>,
        error: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Releases the leases and schedules the jobs again at the paired times; these
    /// attempts do not count (the jobs were only waiting their turn).
    fn defer_jobs(
        &mut self,
        jobs: &[(i64, DateTime<Utc>)],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn kill_job(
        &mut self,
        job_id: i64,
        error: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Records a posted Slack message (a repeated report is a no-op).
    fn insert_message(
        &mut self,
        message: &PostedMessage,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Notes that a message now shows `version` (never moves backwards).
    fn mark_rendered(
        &mut self,
        key: &MessageKey,
        version: i64,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// The chain head, locked until commit.
    fn audit_head(&mut self) -> impl Future<Output = sqlx::Result<(i64, String)>> + Send;
    fn insert_audit(
        &mut self,
        entries: &[audit::Entry],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn set_audit_head(
        &mut self,
        seq: i64,
        hash: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}

/// Runs the writer until every sender is gone.
pub(crate) async fn run<T: Tx>(
    mut tx: T,
    mut rx: mpsc::Receiver<Request>,
    changes: broadcast::Sender<StatusChange>,
    deliveries: Deliveries,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let ops: Vec<&WriteOp> = batch.iter().map(|request| &request.op).collect();
        let results = match run_batch(&mut tx, &ops, deliveries).await {
            Ok(results) => results,
            Err(error) => {
                tracing::warn!(%error, size = ops.len(), "batch failed; retrying its requests one by one");
                let mut results = Vec::with_capacity(ops.len());
                for op in &ops {
                    results.push(
                        match run_batch(&mut tx, std::slice::from_ref(op), deliveries).await {
                            Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Closed)),
                            Err(error) => Err(StoreError::Database(error)),
                        },
                    );
                }
                results
            }
        };
        for (request, result) in batch.drain(..).zip(results) {
            if let Ok(done) = &result {
                for change in &done.changes {
                    // Nobody listening is fine: long-pollers subscribe before they read.
                    let _ = changes.send(change.clone());
                }
            }
            let _ = request.reply.send(result.map(|done| done.output));
        }
    }
}

pub(super) struct Done {
    pub output: WriteOutput,
    /// Existing approvals whose status changed (to wake their waiters).
    pub changes: Vec<StatusChange>,
    pub audit: Vec<Draft>,
    /// Jobs to insert, with when they were planned; written once per batch.
    pub jobs: Vec<(NewJob, DateTime<Utc>)>,
}

/// One transaction for all `ops`. `Err` means the transaction was rolled back.
async fn run_batch<T: Tx>(
    tx: &mut T,
    ops: &[&WriteOp],
    deliveries: Deliveries,
) -> sqlx::Result<Vec<Result<Done>>> {
    tx.begin().await?;
    let outcome = async {
        // Every new approval of the batch in one statement, ahead of the other
        // operations (none of which can name an approval not created yet).
        let mut openings: Vec<Option<ops::Opening>> = ops
            .iter()
            .map(|op| match op {
                WriteOp::Create {
                    request,
                    class,
                    now,
                } => Some(ops::Opening::new(request, class, *now)),
                _ => None,
            })
            .collect();
        let rows: Vec<(&Approval, &str)> = openings
            .iter()
            .flatten()
            .map(|opening| (&opening.approval, opening.params_sha256.as_str()))
            .collect();
        let inserted = if rows.is_empty() {
            HashSet::new()
        } else {
            tx.insert_approvals(&rows).await?
        };
        // Every approval an event names, read (and on Postgres locked) in one statement.
        let mut current = ops::Current::load(tx, ops).await?;
        let mut results = Vec::with_capacity(ops.len());
        let mut drafts = Vec::new();
        for (op, opening) in ops.iter().zip(openings.iter_mut()) {
            let done = match opening.take() {
                Some(opening) => {
                    let fresh = inserted.contains(&opening.approval.id);
                    ops::create(tx, opening, fresh, deliveries).await
                }
                None => run_op(tx, op, &mut current, deliveries).await,
            };
            let result = match done {
                Ok(done) => Ok(done),
                Err(StoreError::Database(error)) => return Err(error),
                Err(refused) => Err(refused),
            };
            if let Ok(done) = &result {
                drafts.extend(done.audit.iter().cloned());
            }
            results.push(result);
        }
        current.write(tx).await?;
        let jobs: Vec<(NewJob, DateTime<Utc>)> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|done| done.jobs.iter().cloned())
            .collect();
        if !jobs.is_empty() {
            tx.insert_jobs(&jobs).await?;
        }
        if !drafts.is_empty() {
            let (seq, hash) = tx.audit_head().await?;
            let entries = audit::link(seq, &hash, drafts);
            tx.insert_audit(&entries).await?;
            if let Some(last) = entries.last() {
                tx.set_audit_head(last.seq, &last.hash).await?;
            }
        }
        let changes: Vec<StatusChange> = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .flat_map(|done| done.changes.iter().cloned())
            .collect();
        if !changes.is_empty() {
            tx.announce(&changes).await?;
        }
        tx.commit().await?;
        Ok(results)
    }
    .await;
    if outcome.is_err() {
        tx.rollback().await;
    }
    outcome
}

async fn run_op<T: Tx>(
    tx: &mut T,
    op: &WriteOp,
    current: &mut ops::Current,
    deliveries: Deliveries,
) -> Result<Done> {
    match op {
        WriteOp::Create { .. } => unreachable!("run_batch inserts new approvals together"),
        WriteOp::Apply { id, event, now } => ops::apply(current, *id, event, *now, deliveries),
        WriteOp::SetPermalink {
            channel,
            ts,
            permalink,
        } => {
            tx.set_permalink(channel, ts, permalink).await?;
            Ok(Done::quiet(WriteOutput::Reported))
        }
        WriteOp::FireDue { now, limit } => {
            ops::fire_due(tx, current, *now, *limit, deliveries).await
        }
        WriteOp::Claim { now, limit } => {
            let lease = chrono::Duration::from_std(jobs::LEASE).unwrap_or(chrono::Duration::MAX);
            let dropped = tx.drop_stale_timers(*now - lease, *now).await?;
            if dropped > 0 {
                tracing::info!(
                    dropped,
                    "deleted expire timers left by a signoff before migration 0005"
                );
            }
            let lease_until = *now + lease;
            let claimed = tx.claim_jobs(*now, lease_until, *limit).await?;
            Ok(Done::quiet(WriteOutput::Claimed(claimed)))
        }
        WriteOp::Defer { jobs } => {
            tx.defer_jobs(jobs).await?;
            Ok(Done::quiet(WriteOutput::Reported))
        }
        WriteOp::Report { job, outcome, now } => {
            ops::report(tx, job, outcome, *now, deliveries).await
        }
        WriteOp::Adopt { id, class, now } => ops::adopt(tx, *id, class, *now, deliveries).await,
    }
}

impl Done {
    /// An output that changes no approval and records no audit event.
    pub(super) fn quiet(output: WriteOutput) -> Self {
        Done {
            output,
            changes: Vec::new(),
            audit: Vec::new(),
            jobs: Vec::new(),
        }
    }
}
