//! The domain work of the writer's batches: each write is an [`Op`] that carries its
//! own typed [`Reply`], and [`run_batch`] runs many of them in one transaction, written
//! once over [`Tx`] for both backends. Each operation loads what it needs, lets the
//! pure state machine decide, and leaves behind what it changed ([`Done`]: status
//! notices, audit drafts, jobs), which the batch writes together: new approvals in one
//! statement ahead of the rest, the delivery reports' messages and finished jobs in one
//! statement each ([`report`]), the changed approvals and their votes in one statement
//! each after the last operation, then the jobs, the audit chain and the notices. A
//! refusal is decided before anything is written, so it needs no rollback.

mod batching;
mod checkpoint;
mod current;
mod report;
mod throttle;
mod vote;
mod work;

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::backend::Tx;
use super::{Created, Result, StatusChange, StoreError, Voted, WriterStats};
use crate::approval::{Approval, ApprovalId, Decision, Event, NewApproval, machine};
use crate::audit::{self, Draft};
use crate::ids::UserId;
use crate::jobs::{Deliveries, DueJob, NewJob, Outcome};
use crate::policy::Classification;
pub(crate) use checkpoint::Checkpoints;
use current::Current;
pub(crate) use vote::Shown;
use work::{Opening, Placements};

/// Where one operation's answer goes once its transaction committed. Each operation
/// has its own answer type, so no operation can answer with another's output.
pub(crate) struct Reply<T> {
    sender: oneshot::Sender<Result<T>>,
    answer: Option<Result<T>>,
    /// When the operation was made, i.e. queued for the writer.
    queued: Instant,
}

impl<T> Reply<T> {
    pub(crate) fn new() -> (Self, oneshot::Receiver<Result<T>>) {
        let (sender, receiver) = oneshot::channel();
        let reply = Reply {
            sender,
            answer: None,
            queued: Instant::now(),
        };
        (reply, receiver)
    }

    fn set(&mut self, answer: Result<T>) {
        self.answer = Some(answer);
    }

    /// Answers the caller; nobody waiting any more is fine.
    fn send(self) {
        let answer = self.answer.unwrap_or(Err(StoreError::Closed));
        let _ = self.sender.send(answer);
    }
}

/// A change to an API token.
#[derive(Debug)]
pub(crate) enum TokenChange {
    Insert {
        name: String,
        hash: String,
        now: DateTime<Utc>,
    },
    Rotate {
        name: String,
        hash: String,
        now: DateTime<Utc>,
    },
    Revoke {
        name: String,
        now: DateTime<Utc>,
    },
}

impl TokenChange {
    /// Its audit event: who may ask changed (`token_created`, `token_rotated`,
    /// `token_revoked`, naming the token; never its secret or hash).
    fn audit(&self) -> Draft {
        let (kind, name, at) = match self {
            TokenChange::Insert { name, now, .. } => ("token_created", name, now),
            TokenChange::Rotate { name, now, .. } => ("token_rotated", name, now),
            TokenChange::Revoke { name, now } => ("token_revoked", name, now),
        };
        Draft {
            approval_id: None,
            kind,
            actor: None,
            at: *at,
            data: serde_json::json!({ "token": name }),
        }
    }
}

/// One write, and where its answer goes.
pub(crate) enum Op {
    /// Open an approval (or answer the one it repeats); with `spend`, an approved
    /// answer is executed in the same transaction (see [`work::create_and_spend`]).
    Create {
        request: Box<NewApproval>,
        class: Box<Classification>,
        spend: bool,
        now: DateTime<Utc>,
        reply: Reply<Created>,
    },
    /// A vote, edit, execute, cancel or expiry on one approval; `deliveries`, when
    /// given, instead of the writer's (a one-shot command that knows better).
    Apply {
        id: ApprovalId,
        event: Event,
        now: DateTime<Utc>,
        deliveries: Option<Deliveries>,
        reply: Reply<Approval>,
    },
    /// A Slack user's vote, checked here against the approval as this batch reads it
    /// (see [`vote`]), so the click needs no read of its own first.
    Vote {
        id: ApprovalId,
        user: UserId,
        decision: Decision,
        /// Where it was clicked.
        shown: Shown,
        /// The parameters the message showed ([`Event::Vote`]'s `parameters_shown`).
        parameters_shown: Option<String>,
        now: DateTime<Utc>,
        reply: Reply<Voted>,
    },
    /// Fire the timers on approvals' rows that have come by `now`, up to `limit` of
    /// each kind (expiries, nudges): how many fired.
    FireDue {
        now: DateTime<Utc>,
        limit: i64,
        reply: Reply<usize>,
    },
    /// Classify a row inserted straight into the shared table.
    Adopt {
        id: ApprovalId,
        class: Box<Classification>,
        now: DateTime<Utc>,
        reply: Reply<Approval>,
    },
    /// Claim due deliveries, each still due and free at `now`: lease those paired
    /// with no time until `lease_until`, move the others to their time (pacing).
    /// Answers the leased ones' ids and attempts.
    Claim {
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        jobs: Vec<(i64, Option<DateTime<Utc>>)>,
        reply: Reply<Vec<(i64, i32)>>,
    },
    /// Remember a posted message's link.
    SetPermalink {
        channel: String,
        ts: String,
        permalink: String,
        reply: Reply<()>,
    },
    /// Close the Slack batch `leader` leads (nothing joins it any more): its members.
    CloseBatch {
        leader: ApprovalId,
        reply: Reply<Vec<ApprovalId>>,
    },
    /// Put claimed jobs `(id, lease, at)` back until their times without counting the
    /// attempt (deliveries not started), those whose rows still hold the leases.
    Defer {
        jobs: Vec<crate::jobs::PutBack>,
        reply: Reply<()>,
    },
    /// A claimed delivery finished, failed, or was given up (see [`report`]): whether
    /// its job still held the claim's lease, and so was recorded as such.
    Report {
        job: Box<DueJob>,
        outcome: Box<Outcome>,
        now: DateTime<Utc>,
        reply: Reply<bool>,
    },
    /// Create, rotate or revoke an API token: whether it took effect.
    Token {
        change: TokenChange,
        reply: Reply<bool>,
    },
    /// Sign the audit chain's head if a checkpoint is due at `now`.
    Checkpoint {
        now: DateTime<Utc>,
        reply: Reply<()>,
    },
}

/// Runs `$body` on the operation's reply, whichever operation it is (each has its
/// own answer type, so the reply cannot be handed out as one type).
macro_rules! on_reply {
    ($op:expr, $reply:ident => $body:expr) => {
        match $op {
            Op::Create { $reply, .. } => $body,
            Op::Apply { $reply, .. } | Op::Adopt { $reply, .. } => $body,
            Op::Vote { $reply, .. } => $body,
            Op::FireDue { $reply, .. } => $body,
            Op::Claim { $reply, .. } => $body,
            Op::SetPermalink { $reply, .. }
            | Op::Defer { $reply, .. }
            | Op::Checkpoint { $reply, .. } => $body,
            Op::Report { $reply, .. } => $body,
            Op::Token { $reply, .. } => $body,
            Op::CloseBatch { $reply, .. } => $body,
        }
    };
}

impl Op {
    /// Forgets an answer from a batch that was rolled back.
    pub(crate) fn clear(&mut self) {
        on_reply!(self, reply => reply.answer = None)
    }

    /// What kind of write it is, for the writer's log.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Apply { .. } => "apply",
            Op::Vote { .. } => "vote",
            Op::FireDue { .. } => "fire_due",
            Op::Adopt { .. } => "adopt",
            Op::Claim { .. } => "claim",
            Op::SetPermalink { .. } => "set_permalink",
            Op::CloseBatch { .. } => "close_batch",
            Op::Defer { .. } => "defer",
            Op::Report { .. } => "report",
            Op::Token { .. } => "token",
            Op::Checkpoint { .. } => "checkpoint",
        }
    }

    /// When the operation was queued for the writer.
    pub(crate) fn queued(&self) -> Instant {
        on_reply!(self, reply => reply.queued)
    }

    /// Answers the caller with the committed outcome.
    pub(crate) fn answer(self) {
        on_reply!(self, reply => reply.send())
    }

    /// Fails the operation with `error` (its batch and its retry alone both failed).
    pub(crate) fn fail(&mut self, error: StoreError) {
        on_reply!(self, reply => reply.set(Err(error)))
    }
}

/// A batch's operations counted by kind, for the writer's log: `vote=20 report=6
/// claim=1`, with the jobs the claims and deferrals carry (`jobs=128`).
struct Kinds<'a>(&'a [Op]);

impl std::fmt::Display for Kinds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        let mut jobs = 0;
        for op in self.0 {
            match op {
                Op::Claim { jobs: these, .. } => jobs += these.len(),
                Op::Defer { jobs: these, .. } => jobs += these.len(),
                _ => {}
            }
            let kind = op.kind();
            match counts.iter_mut().find(|(seen, _)| *seen == kind) {
                Some((_, count)) => *count += 1,
                None => counts.push((kind, 1)),
            }
        }
        let mut sep = "";
        for (kind, count) in counts {
            write!(f, "{sep}{kind}={count}")?;
            sep = " ";
        }
        if jobs > 0 {
            write!(f, "{sep}jobs={jobs}")?;
        }
        Ok(())
    }
}

/// What an accepted operation leaves behind for its batch to write.
#[derive(Default)]
pub(crate) struct Done {
    /// Existing approvals whose status changed (to wake their waiters).
    pub(crate) changes: Vec<StatusChange>,
    pub(crate) audit: Vec<Draft>,
    /// Jobs to insert, with when they were planned; written once per batch.
    pub(crate) jobs: Vec<(NewJob, DateTime<Utc>)>,
}

impl Done {
    /// Adds what another operation left behind.
    pub(crate) fn absorb(&mut self, other: Done) {
        self.changes.extend(other.changes);
        self.audit.extend(other.audit);
        self.jobs.extend(other.jobs);
    }
}

/// Why a batch is not answered as committed; the answers its operations set are void.
#[derive(Debug)]
pub(crate) enum Failed {
    /// A database error: the transaction was rolled back (or its `COMMIT`'s reply was
    /// lost and it is known not to have committed, or it appended nothing, see
    /// [`committed_after_all`]), so its operations may run again.
    RolledBack(sqlx::Error),
    /// Its `COMMIT` was sent and the reply lost, and whether it committed could not be
    /// learned (why: the error): running its operations again could apply them twice.
    Unknown(sqlx::Error),
}

impl From<sqlx::Error> for Failed {
    fn from(error: sqlx::Error) -> Self {
        Failed::RolledBack(error)
    }
}

/// Runs `ops` in one transaction and sets each one's answer (its output, or why it was
/// refused); answers the status changes to announce once it committed.
/// With `checkpoints`, a signed audit checkpoint joins the batch when one is due.
pub(crate) async fn run_batch<T: Tx>(
    tx: &mut T,
    ops: &mut [Op],
    batch_of: Batch<'_>,
) -> Result<Vec<StatusChange>, Failed> {
    tx.begin().await?;
    let outcome = batch(tx, ops, batch_of).await;
    if outcome.is_err() {
        tx.rollback().await;
    }
    outcome
}

/// What a batch runs with besides its connection and its operations.
pub(crate) struct Batch<'a> {
    /// The deliveries each change plans.
    pub(crate) deliveries: Deliveries,
    /// With a signer's state, signed checkpoints are appended as they come due.
    pub(crate) checkpoints: Option<&'a mut Checkpoints>,
    pub(crate) stats: &'a WriterStats,
    /// Asked when the batch commits: whether more operations are waiting (the
    /// transaction for them may then open with the commit, see [`Tx::commit`]).
    pub(crate) waiting: &'a (dyn Fn() -> bool + Sync),
}

async fn batch<T: Tx>(
    tx: &mut T,
    ops: &mut [Op],
    batch_of: Batch<'_>,
) -> Result<Vec<StatusChange>, Failed> {
    let Batch {
        deliveries,
        mut checkpoints,
        stats,
        waiting,
    } = batch_of;
    let started = Instant::now();
    // Every new approval of the batch in one statement, ahead of the other operations
    // (none of which can name an approval not created yet), less those refused for
    // their requester's waiting requests (`max_pending`).
    let mut openings: Vec<Option<Result<Opening>>> = ops
        .iter()
        .map(|op| match op {
            Op::Create {
                request,
                class,
                now,
                ..
            } => Some(Ok(Opening::new(request, class, *now))),
            _ => None,
        })
        .collect();
    let mut done = Done::default();
    throttle::check(tx, &mut openings, deliveries, &mut done).await?;
    let opened: Vec<&Opening> = openings.iter().flatten().flatten().collect();
    let rows: Vec<(&Approval, &str)> = opened.iter().map(|opening| opening.row()).collect();
    let inserted = if rows.is_empty() {
        HashSet::new()
    } else {
        tx.insert_approvals(&rows).await?
    };
    // The approvals that repeated requests join, found in one statement.
    let placements = Placements::find(tx, &opened, inserted).await?;
    // Every approval an event names or a repeated request joins, read (and on Postgres
    // locked) in one statement.
    let mut named: Vec<ApprovalId> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Apply { id, .. } | Op::Vote { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    named.extend(placements.blockers());
    // With the messages the batch's Slack votes were clicked on, looked up in the same
    // statement.
    let asked = vote::asked(ops);
    let (mut current, shown) = Current::load(tx, &named, &asked).await?;
    vote::check_shown(ops, shown);
    // The reports first, against the approvals as they were before this batch (one
    // this batch changes gets its update from that change).
    report::record(tx, ops, deliveries, &mut done).await?;
    for (op, opening) in ops.iter_mut().zip(openings.iter_mut()) {
        run_op(
            tx,
            op,
            opening.take(),
            &placements,
            &mut current,
            deliveries,
            &mut done,
        )
        .await?;
    }
    current.write(tx).await?;
    if !done.jobs.is_empty() {
        tx.insert_jobs(&done.jobs).await?;
    }
    let asked = ops.iter().filter_map(|op| match op {
        Op::Checkpoint { now, .. } => Some(*now),
        _ => None,
    });
    let asked = asked.max();
    let drafts = std::mem::take(&mut done.audit);
    let (appended, newest) = append_audit(tx, drafts, checkpoints.as_deref(), asked).await?;
    if !done.changes.is_empty() {
        tx.announce(&done.changes).await?;
    }
    commit(tx, ops, stats, waiting(), started, appended).await?;
    if let Some(checkpoints) = checkpoints.as_mut() {
        checkpoints.committed(newest);
    }
    Ok(done.changes)
}

/// Commits the batch that began at `started` (the next transaction opened with it
/// when operations are `waiting`), and logs it at debug level: what a slow write
/// waited behind (`RUST_LOG=signoff::store::ops=debug`; nothing is formatted unless
/// that level is on). `appended` is the last audit event the batch appended, by which
/// a commit whose reply was lost is known to have committed or not.
async fn commit<T: Tx>(
    tx: &mut T,
    ops: &[Op],
    stats: &WriterStats,
    waiting: bool,
    started: Instant,
    appended: Option<(i64, String)>,
) -> Result<(), Failed> {
    let committing = Instant::now();
    if let Err(error) = tx.commit(waiting).await {
        committed_after_all(tx, ops, error, appended).await?;
    }
    let committed = committing.elapsed();
    stats.commit(committed);
    tracing::debug!(
        operations = ops.len(),
        kinds = %Kinds(ops),
        statements_us = committing.duration_since(started).as_micros(),
        commit_us = committed.as_micros(),
        "write batch committed"
    );
    Ok(())
}

/// After the batch's commit failed with `error`: `Ok` when it committed all the same
/// (the reply was lost on the way back), and the batch is answered as committed;
/// else whether its operations may run again ([`Failed`]). Running them again after
/// they committed would answer an execute that took place as refused (already
/// executed), and would create and spend a second approval for a call spent at
/// once; so it is learned first ([`Tx::committed_after_all`]), and when that cannot
/// be learned they fail, not run again.
async fn committed_after_all<T: Tx>(
    tx: &mut T,
    ops: &[Op],
    error: sqlx::Error,
    appended: Option<(i64, String)>,
) -> Result<(), Failed> {
    // A batch that appended no audit event changed no approval, token or chain: its
    // reports change only jobs that still hold their claims' leases, links and closed
    // Slack batches are set again to what they are, and a checkpoint is appended only
    // when the chain has grown past the table's newest. Each may run again, committed
    // or not, once the old session is gone (its locks would hold the retry up); a
    // claim that did commit finds its jobs leased and claims nothing, so they wait
    // out their lease. Nothing to look for, nothing is learned: `Ok(None)`.
    let seq = appended.as_ref().map(|(seq, _)| *seq);
    let looked = appended.as_ref().map(|(seq, hash)| (*seq, hash.as_str()));
    match tx.committed_after_all(&error, looked).await {
        Ok(None) => Err(Failed::RolledBack(error)),
        Ok(Some(true)) => {
            tracing::warn!(%error, operations = ops.len(), kinds = %Kinds(ops), seq,
                "a write batch's COMMIT got no reply, and the batch committed: answered as committed");
            Ok(())
        }
        Ok(Some(false)) => {
            tracing::warn!(%error, operations = ops.len(), kinds = %Kinds(ops), seq,
                "a write batch's COMMIT got no reply, and the batch did not commit: its operations run again");
            Err(Failed::RolledBack(error))
        }
        Err(unknown) => {
            tracing::warn!(%error, why = %unknown, operations = ops.len(), kinds = %Kinds(ops), seq,
                "a write batch's COMMIT got no reply, and whether it committed cannot be learned: its operations fail");
            Err(Failed::Unknown(unknown))
        }
    }
}

/// Links the batch's audit drafts onto the chain and, with `checkpoints`, appends a
/// signed checkpoint if one is due at the newest event's time (or at `asked`, the time
/// a checkpoint was asked for). Answers the last event it linked, `(seq, hash)`, and
/// what it found of the checkpoints.
async fn append_audit<T: Tx>(
    tx: &mut T,
    drafts: Vec<Draft>,
    checkpoints: Option<&Checkpoints>,
    asked: Option<DateTime<Utc>>,
) -> sqlx::Result<(Option<(i64, String)>, checkpoint::Looked)> {
    let checkpoint_at = drafts.iter().map(|draft| draft.at).chain(asked).max();
    let mut head = None;
    if !drafts.is_empty() {
        let (seq, hash) = tx.audit_head().await?;
        let entries = audit::link(seq, &hash, drafts);
        tx.insert_audit(&entries).await?;
        if let Some(last) = entries.last() {
            tx.set_audit_head(last.seq, &last.hash).await?;
            head = Some((last.seq, last.hash.clone()));
        }
    }
    let looked = match (checkpoints, checkpoint_at) {
        (Some(checkpoints), Some(at)) => {
            checkpoint::append_if_due(tx, checkpoints, at, head.clone()).await?
        }
        _ => checkpoint::Looked::default(),
    };
    Ok((head, looked))
}

/// Runs one operation of the batch and sets its answer; what it leaves behind joins
/// `done`. Only a database error stops the batch.
async fn run_op<T: Tx>(
    tx: &mut T,
    op: &mut Op,
    opening: Option<Result<Opening>>,
    placements: &Placements,
    current: &mut Current,
    deliveries: Deliveries,
    done: &mut Done,
) -> sqlx::Result<()> {
    match op {
        Op::Create { reply, spend, .. } => {
            let opening = match opening {
                Some(Ok(opening)) => opening,
                Some(Err(refused)) => return settle(reply, done, Err(refused)),
                None => unreachable!("every create has its opening"),
            };
            let placed = placements.of(opening.approval.id, current);
            let outcome = if *spend {
                work::create_and_spend(tx, current, opening, placed, deliveries).await
            } else {
                work::create(tx, opening, placed, deliveries).await
            };
            settle(reply, done, outcome)
        }
        Op::Apply {
            id,
            event,
            now,
            deliveries: given,
            reply,
        } => {
            let deliveries = given.unwrap_or(deliveries);
            let outcome = apply_recording_refusal(current, (*id, event, *now), deliveries, done);
            settle(reply, done, outcome)
        }
        Op::Vote {
            id,
            user,
            decision,
            shown,
            parameters_shown,
            now,
            reply,
        } => {
            let click = vote::Click {
                user,
                decision: *decision,
                shown,
                parameters_shown: parameters_shown.as_deref(),
            };
            let cast = vote::cast(current, *id, click, *now, deliveries);
            settle(reply, done, cast)
        }
        Op::FireDue { now, limit, reply } => settle(
            reply,
            done,
            work::fire_due(tx, current, *now, *limit, deliveries).await,
        ),
        Op::Adopt {
            id,
            class,
            now,
            reply,
        } => settle(
            reply,
            done,
            work::adopt(tx, *id, class, *now, deliveries).await,
        ),
        // Recorded with the batch's other reports, before the first operation.
        Op::Report { .. } => Ok(()),
        Op::Token { change, reply } => {
            let took = token(tx, change).await?;
            if took {
                done.audit.push(change.audit());
            }
            reply.set(Ok(took));
            Ok(())
        }
        Op::Claim { .. } | Op::SetPermalink { .. } | Op::Defer { .. } | Op::CloseBatch { .. } => {
            keep_books(tx, op).await
        }
        // Done by the batch, after the events (see `batch`).
        Op::Checkpoint { reply, .. } => {
            reply.set(Ok(()));
            Ok(())
        }
    }
}

/// The operations that change no approval: jobs claimed and deferred, links and
/// closed Slack batches. Each answers what its statement did.
async fn keep_books<T: Tx>(tx: &mut T, op: &mut Op) -> sqlx::Result<()> {
    match op {
        Op::Claim {
            now,
            lease_until,
            jobs,
            reply,
        } => {
            let claimed = tx.claim_jobs(*now, *lease_until, jobs).await?;
            reply.set(Ok(claimed));
            Ok(())
        }
        Op::SetPermalink {
            channel,
            ts,
            permalink,
            reply,
        } => {
            tx.set_permalink(channel, ts, permalink).await?;
            reply.set(Ok(()));
            Ok(())
        }
        Op::Defer { jobs, reply } => {
            tx.defer_jobs(jobs).await?;
            reply.set(Ok(()));
            Ok(())
        }
        Op::CloseBatch { leader, reply } => {
            let members = tx.close_batch(*leader).await?;
            reply.set(Ok(members));
            Ok(())
        }
        _ => unreachable!("run_op passes only these"),
    }
}

/// Makes a token change: whether it took (a new name, a token that exists).
async fn token<T: Tx>(tx: &mut T, change: &TokenChange) -> sqlx::Result<bool> {
    match change {
        TokenChange::Insert { name, hash, now } => tx.token_insert(name, hash, *now).await,
        TokenChange::Rotate { name, hash, now } => tx.token_rotate(name, hash, *now).await,
        TokenChange::Revoke { name, now } => tx.token_revoke(name, *now).await,
    }
}

/// [`work::apply`], a refused execute put on record in `done`: it changes nothing else.
fn apply_recording_refusal(
    current: &mut Current,
    (id, event, now): (ApprovalId, &Event, DateTime<Utc>),
    deliveries: Deliveries,
    done: &mut Done,
) -> Result<(Approval, Done)> {
    let outcome = work::apply(current, id, event, now, deliveries);
    if let Err(StoreError::Rejected { rejection, current }) = &outcome
        && let Some(happening) = machine::refused(event, rejection)
    {
        done.audit
            .push(Draft::from_happening(current, now, happening));
    }
    outcome
}

/// Sets an operation's answer from its work: an output and what it left behind, or a
/// refusal. A database error is the batch's, not the operation's.
fn settle<O>(
    reply: &mut Reply<O>,
    done: &mut Done,
    outcome: Result<(O, Done)>,
) -> sqlx::Result<()> {
    match outcome {
        Ok((output, left)) => {
            done.absorb(left);
            reply.set(Ok(output));
            Ok(())
        }
        Err(StoreError::Database(error)) => Err(error),
        Err(refused) => {
            reply.set(Err(refused));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_logged_as_its_operations_by_kind_with_the_jobs_they_carry() {
        let now = Utc::now();
        let defer = |jobs: usize| Op::Defer {
            jobs: vec![(1, None, now); jobs],
            reply: Reply::new().0,
        };
        let checkpoint = Op::Checkpoint {
            now,
            reply: Reply::new().0,
        };
        let ops = [defer(2), checkpoint, defer(3)];
        assert_eq!(Kinds(&ops).to_string(), "defer=2 checkpoint=1 jobs=5");
        assert_eq!(Kinds(&ops[1..2]).to_string(), "checkpoint=1");
        assert_eq!(Kinds(&[]).to_string(), "");
    }
}
