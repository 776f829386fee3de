//! Each write operation's domain work, written once over [`Tx`] for both backends: it
//! loads what it needs, lets the pure state machine decide, and answers its output and
//! what it leaves behind ([`Done`]) for the batch to write; changed approvals are
//! written by the batch with compare-and-set on `version` (see [`Current`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::Done;
use super::batching;
use super::current::Current;
use crate::approval::{Approval, ApprovalId, Event, Happening, NewApproval, Status, machine};
use crate::audit::Draft;
use crate::jobs::{self, Deliveries, NewJob};
use crate::policy::Classification;
use crate::store::backend::Tx;
use crate::store::{Created, Result, StatusChange, StoreError, requests};

/// A new approval as the state machine opened it, before it is inserted (the writer
/// inserts a batch's new approvals in one statement).
pub(crate) struct Opening {
    pub(crate) approval: Approval,
    pub(crate) params_sha256: String,
    /// The requester's `max_pending` for this call (the matched rule's, or the default).
    pub(crate) max_pending: u32,
    happened: Vec<Happening>,
    pub(crate) now: DateTime<Utc>,
}

impl Opening {
    pub(crate) fn new(request: &NewApproval, class: &Classification, now: DateTime<Utc>) -> Self {
        let params_sha256 = requests::request_hash(request.server.as_deref(), &request.parameters);
        let transition = machine::open(ApprovalId::new(), request.clone(), class, now);
        Opening {
            approval: transition.next,
            params_sha256,
            max_pending: class.route.max_pending,
            happened: transition.happened,
            now,
        }
    }

    /// Its row as [`Tx::insert_approvals`] and [`Tx::find_existing`] take it.
    pub(crate) fn row(&self) -> (&Approval, &str) {
        (&self.approval, self.params_sha256.as_str())
    }
}

/// For each of `openings`, the approval that would keep it from being inserted (see
/// [`Tx::find_existing`]), for all of them in one statement; none for none.
pub(crate) async fn blockers<T: Tx>(
    tx: &mut T,
    openings: &[&Opening],
) -> sqlx::Result<Vec<Option<ApprovalId>>> {
    if openings.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(&Approval, &str)> = openings.iter().map(|opening| opening.row()).collect();
    tx.find_existing(&rows).await
}

/// What the batch's insert made of an opening.
pub(crate) enum Placed {
    /// Inserted: the request opens a new approval.
    Inserted,
    /// Not inserted: the approval that blocked it (same idempotency key, or the same
    /// request still open) as the batch has it, read with the batch's other approvals
    /// ([`Placements`]); `None` when it could not be seen.
    Blocked(Option<Arc<Approval>>),
}

/// What the batch's insert made of its openings: the ids it inserted and, for each
/// opening it did not, the approval that blocked it.
pub(crate) struct Placements {
    inserted: HashSet<ApprovalId>,
    blockers: HashMap<ApprovalId, ApprovalId>,
}

impl Placements {
    /// Looks up the approvals that blocked the `openings` not `inserted`, for all of
    /// them in one statement, so that a batch with repeated requests costs one
    /// statement more, not two per repeat.
    pub(crate) async fn find<T: Tx>(
        tx: &mut T,
        openings: &[&Opening],
        inserted: HashSet<ApprovalId>,
    ) -> sqlx::Result<Self> {
        let blocked: Vec<&Opening> = openings
            .iter()
            .filter(|opening| !inserted.contains(&opening.approval.id))
            .copied()
            .collect();
        let found = blockers(tx, &blocked).await?;
        let blockers = blocked
            .iter()
            .zip(found)
            .filter_map(|(opening, blocker)| Some((opening.approval.id, blocker?)))
            .collect();
        Ok(Placements { inserted, blockers })
    }

    /// The approvals that blocked openings: the caller reads them with the approvals
    /// the batch's events name.
    pub(crate) fn blockers(&self) -> impl Iterator<Item = ApprovalId> + '_ {
        self.blockers.values().copied()
    }

    /// What became of the opening `id`; a blocker as the batch has it in `current` (an
    /// earlier request of the batch may have changed it).
    pub(crate) fn of(&self, id: ApprovalId, current: &Current) -> Placed {
        if self.inserted.contains(&id) {
            return Placed::Inserted;
        }
        let blocker = self.blockers.get(&id).and_then(|b| current.get(*b));
        Placed::Blocked(blocker.cloned())
    }
}

/// Finishes a create: when `placed` is inserted, plans its jobs and audit; otherwise
/// answers the approval that blocked the insert (the one its idempotency key names, or
/// the same request still open), see [`joined`].
pub(crate) async fn create<T: Tx>(
    tx: &mut T,
    opening: Opening,
    placed: Placed,
    deliveries: Deliveries,
) -> Result<(Created, Done)> {
    let Opening {
        approval,
        params_sha256,
        happened,
        now,
        ..
    } = opening;
    if let Placed::Blocked(existing) = placed {
        // A conflict with a row we cannot see: let the batch retry.
        let existing = existing.ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
        let joined = joined(tx, &approval, &params_sha256, existing).await?;
        return Ok((
            Created {
                approval: Arc::unwrap_or_clone(joined),
                created: false,
                spent: false,
            },
            Done::default(),
        ));
    }
    let mut jobs = jobs::plan(None, &approval, deliveries, now);
    batching::place(tx, &approval, &mut jobs).await?;
    let jobs = jobs.into_iter().map(|job| (job, now)).collect();
    let audit = happened
        .into_iter()
        .map(|happening| Draft::from_happening(&approval, now, happening))
        .collect();
    let done = Done {
        audit,
        jobs,
        ..Done::default()
    };
    Ok((
        Created {
            approval,
            created: true,
            spent: false,
        },
        done,
    ))
}

/// The answer to `request` (hashed `params_sha256`), which `existing` kept from being
/// inserted. An idempotency key names one call: the same key with another tool, server
/// or parameters is refused, never answered with the first call's approval (a blocker
/// for another call can only be the one the key names). A key that comes with a
/// repeat of an open request is bound to the approval it joins, so that it names that
/// call from then on, as if it had opened it; a key the token has used meanwhile for
/// another call (another request of this batch) is refused.
async fn joined<T: Tx>(
    tx: &mut T,
    request: &Approval,
    params_sha256: &str,
    existing: Arc<Approval>,
) -> Result<Arc<Approval>> {
    let (Some(token), Some(key)) = (&request.token_name, &request.idempotency_key) else {
        return Ok(existing);
    };
    // Hashed only for a keyed request: a repeat without a key joins the same call.
    let another_call = existing.tool_name != request.tool_name
        || requests::approval_request_hash(&existing) != params_sha256;
    if another_call {
        return Err(StoreError::IdempotencyKeyReused(existing.id));
    }
    if existing.idempotency_key.as_ref() != Some(key) {
        let named = tx.bind_joined_key(token, key, existing.id).await?;
        if named != existing.id {
            return Err(StoreError::IdempotencyKeyReused(named));
        }
    }
    Ok(existing)
}

/// A create that spends its approval at once when the answer is approved (approved by
/// policy, or the approved request it repeats), in the same transaction: the caller
/// runs the answer's parameters, and an auto-approved call costs one write instead of
/// two. A spend the machine refuses (an approval past its expiry) leaves the approval
/// as it is; the caller's own execute then says why.
pub(crate) async fn create_and_spend<T: Tx>(
    tx: &mut T,
    current: &mut Current,
    opening: Opening,
    placed: Placed,
    deliveries: Deliveries,
) -> Result<(Created, Done)> {
    let now = opening.now;
    let (created, mut done) = create(tx, opening, placed, deliveries).await?;
    if created.approval.status != Status::Approved {
        return Ok((created, done));
    }
    let approval = &created.approval;
    let event = Event::Execute {
        parameters: approval.parameters.clone(),
        tool_name: Some(approval.tool_name.clone()),
        server: approval.server.clone(),
        caller: approval.token_name.clone(),
    };
    let id = approval.id;
    if created.created {
        // Inserted by this transaction, so it is as `create` left it (and on
        // PostgreSQL locked by the insert): it is written without being read back.
        current.join(vec![approval.clone()]);
    } else {
        // Read in this transaction (and on Postgres locked) as every changed row is.
        current.load_more(tx, &[id]).await?;
    }
    match apply(current, id, &event, now, deliveries) {
        Ok((spent, left)) => {
            done.absorb(left);
            let created = Created {
                approval: spent,
                created: created.created,
                spent: true,
            };
            Ok((created, done))
        }
        Err(StoreError::Database(error)) => Err(StoreError::Database(error)),
        Err(_) => Ok((created, done)),
    }
}

/// Applies an event to an approval of `current`; the batch writes it afterwards (see
/// [`Current`]).
pub(crate) fn apply(
    current: &mut Current,
    id: ApprovalId,
    event: &Event,
    now: DateTime<Utc>,
    deliveries: Deliveries,
) -> Result<(Approval, Done)> {
    let before = current.get(id).cloned().ok_or(StoreError::NotFound(id))?;
    let transition =
        machine::apply(&before, event, now).map_err(|rejection| StoreError::Rejected {
            rejection,
            current: Box::new((*before).clone()),
        })?;
    let after = Arc::new(transition.next);
    let jobs = jobs::plan(Some(&before), &after, deliveries, now);
    current.set(after.clone());
    let mut done = Done::default();
    done.record(before.status, after.clone(), transition.happened, jobs, now);
    Ok(((*after).clone(), done))
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
                .map(|happening| Draft::from_happening(&after, now, happening)),
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

/// Fires the timers on approvals' rows that have come by `now`, up to `limit` of each
/// kind: expiries, then nudges ([`fire_nudges`]), and records the claims other programs
/// made in the shared table ([`record_claims`]). Answers how many fired or were
/// recorded.
///
/// Expiries are set-based and in this one transaction, so an expiry needs no lease: a
/// process that dies mid-way expired nothing. The timer is the approval's own
/// `expires_at` (indexed), so an expiry moved in the shared table, earlier or later,
/// is followed. The due approvals are read in one query and join the batch's
/// [`Current`] (an approval an earlier request of the batch read stays as that request
/// left it); each is decided by the pure state machine, and the batch writes them with
/// its events' changes. Deliveries are not run here; the outbox claims them, runs them
/// and reports back.
pub(crate) async fn fire_due<T: Tx>(
    tx: &mut T,
    current: &mut Current,
    now: DateTime<Utc>,
    limit: i64,
    deliveries: Deliveries,
) -> Result<(usize, Done)> {
    let due = current.join(tx.due_expiries(now, limit).await?);
    let mut done = Done::default();
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
    fired += fire_nudges(tx, current, now, limit, deliveries, &mut done).await?;
    fired += record_claims(tx, current, now, limit, deliveries, &mut done).await?;
    Ok((fired, done))
}

/// Records up to `limit` of the claims other programs made in the shared table since
/// the last pass: a row they inserted, approved, that they moved to executed themselves
/// (`UPDATE … SET status = 'executed' WHERE id = … AND status = 'approved'`), which
/// the database allows only as the API's execute would, and marks (see
/// `migrations/postgres/0025_shared_claim.sql`). Each gets what an execute through the
/// API gets: its `executed` event, its message update and its change notice. The row
/// itself is as the claim left it (executed, its version moved on): it is read, not
/// written. Answers how many it recorded.
async fn record_claims<T: Tx>(
    tx: &mut T,
    current: &mut Current,
    now: DateTime<Utc>,
    limit: i64,
    deliveries: Deliveries,
    done: &mut Done,
) -> sqlx::Result<usize> {
    let claims = tx.take_shared_claims(limit).await?;
    if claims.is_empty() {
        return Ok(0);
    }
    let ids: Vec<ApprovalId> = claims.iter().map(|(id, _)| *id).collect();
    current.load_more(tx, &ids).await?;
    let mut recorded = 0;
    for (id, at) in claims {
        let Some(after) = current.get(id).cloned() else {
            tracing::warn!(%id, "a claim marked in the shared table names no row: dropped");
            continue;
        };
        let Some((before, happening)) = machine::claimed(&after, at) else {
            tracing::warn!(%id, status = %after.status, "a claim marked in the shared table names a row not claimed: dropped");
            continue;
        };
        let planned = jobs::plan(Some(&before), &after, deliveries, now);
        done.record(before.status, after, vec![happening], planned, now);
        recorded += 1;
    }
    Ok(recorded)
}

/// Plans the nudges (first reminder, escalation post) of up to `limit` approvals whose
/// `nudge_at` has come by `now`, as deliveries due at their own times, and moves each
/// one's `nudge_at` on to its next nudge, or clears it (decided, expired, none left).
/// The approvals are read as the batch has them (one an earlier request decided gets
/// no nudge) and, on Postgres, stay locked to this transaction, so replicas plan each
/// nudge once. Answers how many approvals it moved on. A process without Slack leaves
/// them alone: it could plan none, and clearing them would lose them for a replica
/// with Slack (or for this one, restarted with its token).
async fn fire_nudges<T: Tx>(
    tx: &mut T,
    current: &mut Current,
    now: DateTime<Utc>,
    limit: i64,
    deliveries: Deliveries,
    done: &mut Done,
) -> sqlx::Result<usize> {
    if !deliveries.slack {
        return Ok(0);
    }
    let due = tx.due_nudges(now, limit).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let ids: Vec<ApprovalId> = due.iter().map(|(id, _)| *id).collect();
    current.load_more(tx, &ids).await?;
    let mut moved = Vec::with_capacity(due.len());
    for (id, from) in due {
        let (planned, next) = match current.get(id) {
            Some(approval) => jobs::nudges(approval, from, now, deliveries),
            None => (Vec::new(), None),
        };
        done.jobs.extend(planned.into_iter().map(|job| (job, now)));
        moved.push((id, next));
    }
    tx.set_nudges(&moved).await?;
    Ok(moved.len())
}

pub(crate) async fn adopt<T: Tx>(
    tx: &mut T,
    id: ApprovalId,
    class: &Classification,
    now: DateTime<Utc>,
    deliveries: Deliveries,
) -> Result<(Approval, Done)> {
    let Some(row) = tx.load(id).await? else {
        return Err(StoreError::NotFound(id));
    };
    // The API refuses parameters it cannot keep exactly; another program's row is
    // checked here, as stored, since reading it into the row above rounded them.
    let stored = tx.parameters_text(id).await?.unwrap_or_default();
    let unreviewable = crate::exact_json::parse_str(&stored).err();
    let why = unreviewable.as_ref().map(ToString::to_string);
    let transition = machine::adopt(&row, class, why.as_deref(), now);
    let after = transition.next;
    if !tx.adopt_approval(&after).await? {
        // Classified already (another replica), or decided meanwhile: nothing to do.
        return Ok((row, Done::default()));
    }
    // Planned as for a new request: the row is new to signoff.
    let jobs = jobs::plan(None, &after, deliveries, now);
    let mut done = Done::default();
    done.record(
        row.status,
        Arc::new(after.clone()),
        transition.happened,
        jobs,
        now,
    );
    Ok((after, done))
}
