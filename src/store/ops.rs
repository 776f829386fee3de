//! The write operations, written once over [`Tx`] for both backends: each loads what
//! it needs, lets the pure state machine decide, then writes with compare-and-set on
//! `version`. A refusal is decided before anything is written, so it needs no
//! rollback. Jobs and audit drafts go back to the writer, which writes them per batch.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::writer::{Done, Tx, WriteOp, WriteOutput};
use super::{Created, Result, StatusChange, StoreError, requests};
use crate::approval::{Approval, ApprovalId, Event, Happening, NewApproval, Status, Vote, machine};
use crate::audit::Draft;
use crate::jobs::{self, Deliveries, DueJob, JobKind, NewJob, Outcome};
use crate::policy::Classification;

pub(super) async fn report<T: Tx>(
    tx: &mut T,
    job: &DueJob,
    outcome: &Outcome,
    now: DateTime<Utc>,
    deliveries: Deliveries,
) -> Result<Done> {
    let mut follow_ups = Vec::new();
    match outcome {
        Outcome::Delivered {
            posted,
            rendered,
            version,
            next,
        } => {
            for message in posted {
                tx.insert_message(message, now).await?;
            }
            for key in rendered {
                tx.mark_rendered(key, *version).await?;
            }
            tx.finish_job(job.id).await?;
            if let Some(next) = next {
                follow_ups.push((next.clone(), now));
            }
            // The approval changed while the message was being posted or updated:
            // bring it up to date.
            let behind = tx
                .load(job.approval_id)
                .await?
                .is_some_and(|a| a.version > *version);
            if behind && deliveries.slack && (!posted.is_empty() || !rendered.is_empty()) {
                let update = NewJob {
                    approval_id: job.approval_id,
                    kind: JobKind::SlackUpdate,
                    payload: serde_json::json!({}),
                    due_at: now,
                };
                follow_ups.push((update, now));
            }
        }
        Outcome::Retry { at, error } => tx.retry_job(job.id, *at, error).await?,
        Outcome::Dead { error } => tx.kill_job(job.id, error).await?,
    }
    let mut done = Done::quiet(WriteOutput::Reported);
    done.jobs = follow_ups;
    Ok(done)
}

/// A new approval as the state machine opened it, before it is inserted (the writer
/// inserts a batch's new approvals in one statement).
pub(super) struct Opening {
    pub approval: Approval,
    pub params_sha256: String,
    happened: Vec<Happening>,
    now: DateTime<Utc>,
}

impl Opening {
    pub(super) fn new(request: &NewApproval, class: &Classification, now: DateTime<Utc>) -> Self {
        let params_sha256 = requests::request_hash(request.server.as_deref(), &request.parameters);
        let transition = machine::open(ApprovalId::new(), request.clone(), class, now);
        Opening {
            approval: transition.next,
            params_sha256,
            happened: transition.happened,
            now,
        }
    }
}

/// Finishes a create: with `inserted`, plans its jobs and audit; otherwise answers the
/// approval that blocked the insert (same idempotency key, or the same request still
/// open). An idempotency key names one call: the same key with another tool, server
/// or parameters is refused, never answered with the first call's approval.
pub(super) async fn create<T: Tx>(
    tx: &mut T,
    opening: Opening,
    inserted: bool,
    deliveries: Deliveries,
) -> Result<Done> {
    let Opening {
        approval,
        params_sha256,
        happened,
        now,
    } = opening;
    if !inserted {
        let token = approval.token_name.as_deref().unwrap_or_default();
        let existing = tx
            .find_existing(
                token,
                approval.idempotency_key.as_deref(),
                &approval.tool_name,
                &params_sha256,
                now,
            )
            .await?;
        let existing = match existing {
            Some(id) => tx.load(id).await?,
            None => None,
        };
        return match existing {
            Some(existing)
                if existing.idempotency_key.is_some()
                    && existing.idempotency_key == approval.idempotency_key
                    && (existing.tool_name != approval.tool_name
                        || requests::approval_request_hash(&existing) != params_sha256) =>
            {
                Err(StoreError::IdempotencyKeyReused(existing.id))
            }
            Some(approval) => Ok(Done {
                output: WriteOutput::Created(Created {
                    approval,
                    created: false,
                }),
                changes: Vec::new(),
                audit: Vec::new(),
                jobs: Vec::new(),
            }),
            // A conflict with a row we cannot see: let the batch retry.
            None => Err(StoreError::Database(sqlx::Error::RowNotFound)),
        };
    }
    let jobs = jobs::plan(None, &approval, deliveries, now)
        .into_iter()
        .map(|job| (job, now))
        .collect();
    let audit = happened
        .into_iter()
        .map(|happening| Draft::from_happening(approval.id, now, happening))
        .collect();
    Ok(Done {
        output: WriteOutput::Created(Created {
            approval,
            created: true,
        }),
        changes: Vec::new(),
        audit,
        jobs,
    })
}

/// The approvals a batch's events and timers change: read together (the events'
/// before the first request runs, each timer batch's as it fires), kept up to date
/// in memory as each change lands (so a second change to the same approval sees the
/// first one's result), and written together after the last request
/// ([`Current::write`]): one statement for all their rows, one for their new votes.
/// Each approval is held once, behind an `Arc` that its change notice shares.
#[derive(Default)]
pub(super) struct Current {
    /// As read: what the write compares against.
    read: HashMap<ApprovalId, AsRead>,
    /// As the batch's events left them.
    now: HashMap<ApprovalId, Arc<Approval>>,
    /// Changed ones, in the order of their first change.
    changed: Vec<ApprovalId>,
}

/// What the write needs of an approval as it was read.
struct AsRead {
    /// The version its compare-and-set expects.
    version: i64,
    /// The votes its new votes are told apart from.
    votes: Vec<Vote>,
    changed: bool,
}

impl Current {
    pub(super) async fn load<T: Tx>(tx: &mut T, ops: &[&WriteOp]) -> sqlx::Result<Self> {
        let ids: Vec<ApprovalId> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Apply { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        let mut current = Current::default();
        current.load_more(tx, &ids).await?;
        Ok(current)
    }

    /// Reads (and on Postgres locks) those of `ids` not read yet, in one statement.
    /// An id that names no approval stays absent.
    async fn load_more<T: Tx>(&mut self, tx: &mut T, ids: &[ApprovalId]) -> sqlx::Result<()> {
        let mut ids: Vec<ApprovalId> = ids
            .iter()
            .filter(|id| !self.read.contains_key(id))
            .copied()
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_unstable();
        ids.dedup();
        self.join(tx.load_many(&ids).await?);
        Ok(())
    }

    /// Adds approvals read by the caller, except those read already (which stay as the
    /// batch left them); answers all their ids, in the order given.
    fn join(&mut self, approvals: Vec<Approval>) -> Vec<ApprovalId> {
        let mut ids = Vec::with_capacity(approvals.len());
        for approval in approvals {
            ids.push(approval.id);
            if let std::collections::hash_map::Entry::Vacant(entry) = self.read.entry(approval.id) {
                entry.insert(AsRead {
                    version: approval.version,
                    votes: approval.votes.clone(),
                    changed: false,
                });
                self.now.insert(approval.id, Arc::new(approval));
            }
        }
        ids
    }

    fn get(&self, id: ApprovalId) -> Option<&Arc<Approval>> {
        self.now.get(&id)
    }

    fn set(&mut self, after: Arc<Approval>) {
        debug_assert!(self.read.contains_key(&after.id), "set before read");
        if let Some(read) = self.read.get_mut(&after.id) {
            if !read.changed {
                read.changed = true;
                self.changed.push(after.id);
            }
        }
        self.now.insert(after.id, after);
    }

    /// Writes every changed approval with compare-and-set on the version it was read
    /// at, and the votes it gained or lost. `RowNotFound` if another writer changed
    /// one since (another replica): the batch is then retried one request at a time,
    /// each deciding against the new state.
    pub(super) async fn write<T: Tx>(self, tx: &mut T) -> sqlx::Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(self.changed.len());
        let mut added = Vec::new();
        for id in &self.changed {
            let (before, after) = (&self.read[id], &self.now[id]);
            for vote in &before.votes {
                if !after.votes.contains(vote) {
                    tx.delete_vote(*id, &vote.user).await?;
                }
            }
            added.extend(
                after
                    .votes
                    .iter()
                    .filter(|vote| !before.votes.contains(vote))
                    .map(|vote| (*id, vote.clone())),
            );
            rows.push((&**after, before.version));
        }
        if tx.update_approvals(&rows).await? != rows.len() as u64 {
            return Err(sqlx::Error::RowNotFound);
        }
        if !added.is_empty() {
            tx.insert_votes(&added).await?;
        }
        Ok(())
    }
}

/// Applies an event to an approval of `current`; the batch writes it afterwards (see
/// [`Current`]).
pub(super) fn apply(
    current: &mut Current,
    id: ApprovalId,
    event: &Event,
    now: DateTime<Utc>,
    deliveries: Deliveries,
) -> Result<Done> {
    let before = current.get(id).cloned().ok_or(StoreError::NotFound(id))?;
    let transition =
        machine::apply(&before, event, now).map_err(|rejection| StoreError::Rejected {
            rejection,
            current: Box::new((*before).clone()),
        })?;
    let after = Arc::new(transition.next);
    let jobs = jobs::plan(Some(&before), &after, deliveries, now);
    current.set(after.clone());
    let mut done = Done::quiet(WriteOutput::Applied((*after).clone()));
    done.record(before.status, after, transition.happened, jobs, now);
    Ok(done)
}

impl Done {
    /// Adds what a change to `after` at `now` leaves behind: its change notice (if its
    /// status moved from `was`), its audit drafts, its jobs.
    fn record(
        &mut self,
        was: Status,
        after: Arc<Approval>,
        happened: Vec<Happening>,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) {
        let id = after.id;
        self.audit.extend(
            happened
                .into_iter()
                .map(|happening| Draft::from_happening(id, now, happening)),
        );
        self.jobs.extend(jobs.into_iter().map(|job| (job, now)));
        if after.status != was {
            self.changes.push(StatusChange {
                id,
                status: after.status,
                after: Some(after),
            });
        }
    }
}

/// Expires up to `limit` approvals whose expiry has come by `now`, set-based and in
/// this one transaction, so an expiry needs no lease: a process that dies mid-way
/// expired nothing. The timer is the approval's own `expires_at` (indexed), so an expiry
/// moved in the shared table, earlier or later, is followed. The due approvals are read
/// in one query and join the batch's [`Current`] (an approval an earlier request of the
/// batch read stays as that request left it); each is decided by the pure state
/// machine, and the batch writes them with its events' changes. Deliveries are not run
/// here; the outbox claims them, runs them and reports back.
pub(super) async fn fire_due<T: Tx>(
    tx: &mut T,
    current: &mut Current,
    now: DateTime<Utc>,
    limit: i64,
    deliveries: Deliveries,
) -> Result<Done> {
    let due = current.join(tx.due_expiries(now, limit).await?);
    let mut done = Done::quiet(WriteOutput::Fired(0));
    let mut fired = 0;
    for id in due {
        let Some(before) = current.get(id).cloned() else {
            continue;
        };
        // Refused when an earlier request of the batch decided or executed it: then
        // nothing is left to expire.
        let Ok(transition) = machine::apply(&before, &Event::Expire, now) else {
            continue;
        };
        let after = Arc::new(transition.next);
        let planned = jobs::plan(Some(&before), &after, deliveries, now);
        current.set(after.clone());
        done.record(before.status, after, transition.happened, planned, now);
        fired += 1;
    }
    done.output = WriteOutput::Fired(fired);
    Ok(done)
}

pub(super) async fn adopt<T: Tx>(
    tx: &mut T,
    id: ApprovalId,
    class: &Classification,
    now: DateTime<Utc>,
    deliveries: Deliveries,
) -> Result<Done> {
    let Some(row) = tx.load(id).await? else {
        return Err(StoreError::NotFound(id));
    };
    let transition = machine::adopt(&row, class, now);
    let after = transition.next;
    if !tx.adopt_approval(&after).await? {
        // Classified already (another replica), or decided meanwhile: nothing to do.
        return Ok(Done::quiet(WriteOutput::Applied(row)));
    }
    // Planned as for a new request: the row is new to signoff.
    let jobs = jobs::plan(None, &after, deliveries, now);
    let mut done = Done::quiet(WriteOutput::Applied(after.clone()));
    done.record(row.status, Arc::new(after), transition.happened, jobs, now);
    Ok(done)
}
