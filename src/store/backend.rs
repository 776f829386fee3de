//! The two contracts each backend (SQLite, PostgreSQL) implements: [`Reads`], the read
//! side on a pool, and [`Tx`], the write transaction the single writer runs, whose
//! outbox statements ([`OutboxTx`]) and batching statements ([`BatchTx`]) are parts of
//! their own (each backend implements them in `outbox.rs` and `batches.rs`). The store
//! facade (`Store`) and the writer are written once over these.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use chrono::{DateTime, Utc};

use super::{HealthCounts, Result, StatusChange, TokenInfo, WithMessages};
use crate::approval::{Approval, ApprovalId, Status, Vote};
use crate::audit;
use crate::audit::checkpoint::{self, Checkpoint};
use crate::jobs::{Due, DueJobs, MessageKey, NewJob, PostedMessage};

/// The read side, implemented by each backend on its pool of reader connections. It
/// never writes: every write goes through the writer ([`Tx`]).
pub(crate) trait Reads: Send + Sync {
    fn get(&self, id: ApprovalId) -> impl Future<Output = Result<Option<Approval>>> + Send;
    /// The approval and, in the same statement, the permalink of its main channel post
    /// (if Slack gave one): what a status get answers with, in one read.
    fn get_linked(
        &self,
        id: ApprovalId,
    ) -> impl Future<Output = Result<Option<(Approval, Option<String>)>>> + Send;
    /// The approval and, in the same statement, whether `message` is one of its
    /// messages: what a click on that message needs to know, in one read.
    fn get_shown_in(
        &self,
        id: ApprovalId,
        message: &MessageKey,
    ) -> impl Future<Output = Result<Option<(Approval, bool)>>> + Send;
    /// The approvals of `ids` that exist, in one statement, in no particular order.
    fn get_many(&self, ids: &[ApprovalId]) -> impl Future<Output = Result<Vec<Approval>>> + Send;
    fn health(&self, now: DateTime<Utc>) -> impl Future<Output = Result<HealthCounts>> + Send;
    fn messages(&self, id: ApprovalId) -> impl Future<Output = Result<Vec<PostedMessage>>> + Send;
    /// The approval and, in the same statement, its messages and the members of the
    /// batch it is in (as [`Reads::batch_members`]): what bringing its messages up to
    /// date reads.
    fn get_with_messages(
        &self,
        id: ApprovalId,
    ) -> impl Future<Output = Result<Option<WithMessages>>> + Send;
    /// The permalinks of the main channel posts of `ids` (those that have one), in one query.
    fn main_permalinks(
        &self,
        ids: &[ApprovalId],
    ) -> impl Future<Output = Result<HashMap<ApprovalId, String>>> + Send;
    /// Whether Slack was asked to show the approval: a post planned (still to run, or
    /// dead) or a message posted (one statement, so a post that finishes meanwhile
    /// is seen as one or the other).
    fn slack_planned(&self, id: ApprovalId) -> impl Future<Output = Result<bool>> + Send;
    /// Whether approval `id` is a row another program inserted straight into the
    /// table that no server has classified yet (false when there is no such row).
    fn unclassified_row(&self, id: ApprovalId) -> impl Future<Output = Result<bool>> + Send;
    /// The ids of every approval with `status` (any status: `None`), oldest first:
    /// ids only, so that a caller can load them all, however many there are.
    fn list_ids(
        &self,
        status: Option<Status>,
    ) -> impl Future<Output = Result<Vec<ApprovalId>>> + Send;
    /// Up to `limit` deliveries (ready jobs) of the kinds `which` takes, due and not
    /// leased at `now`, earliest first; the writer claims them after
    /// (`Tx::claim_jobs`).
    fn due_jobs(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        which: Due,
    ) -> impl Future<Output = Result<DueJobs>> + Send;
    /// Pending rows nobody classified yet (inserted straight into the table), oldest
    /// first, but for those in `skip`.
    fn unclassified(
        &self,
        limit: i64,
        skip: &[ApprovalId],
    ) -> impl Future<Output = Result<Vec<ApprovalId>>> + Send;
    /// Ids from `first` to `last` (both included) in id order, at most `limit`: an id
    /// prefix as a range, which the primary key answers without a scan.
    fn find_in_range(
        &self,
        first: ApprovalId,
        last: ApprovalId,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<ApprovalId>>> + Send;
    fn audit_head(&self) -> impl Future<Output = Result<(i64, String)>> + Send;
    /// The head's number and the lowest and highest event numbers, in one snapshot.
    fn audit_bounds(&self) -> impl Future<Output = Result<checkpoint::Bounds>> + Send;
    fn audit_page(
        &self,
        after_seq: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<audit::Entry>>> + Send;
    /// Every signed audit checkpoint, by number.
    fn audit_checkpoints(&self) -> impl Future<Output = Result<Vec<Checkpoint>>> + Send;
    fn newest_checkpoint(&self) -> impl Future<Output = Result<Option<Checkpoint>>> + Send;
    /// The approvals of the batch `id` is in (the leader first, in the message's order);
    /// empty when it was posted alone.
    fn batch_members(&self, id: ApprovalId)
    -> impl Future<Output = Result<Vec<ApprovalId>>> + Send;
    fn token_list(&self) -> impl Future<Output = Result<Vec<TokenInfo>>> + Send;
    fn token_lookup(&self, hash: &str) -> impl Future<Output = Result<Option<String>>> + Send;
}

/// The write side: what one backend must provide to the writer, transaction control
/// on its own connection and the small statements the operations are made of. Only
/// the writer task holds one.
pub(crate) trait Tx: OutboxTx + BatchTx + Send + 'static {
    fn begin(&mut self) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Commits. With `then_begin` (operations are waiting for the next batch) a
    /// backend may open the next transaction in the same round trip, so that the next
    /// [`Tx::begin`] sends nothing.
    fn commit(&mut self, then_begin: bool) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// After [`Tx::commit`] failed with `error`, whether the transaction committed
    /// all the same, learned by whether the last audit event it appended, `appended`
    /// (`(seq, hash)`), is there. `Ok(None)`: the error is the database's answer to
    /// the commit, so it did not commit; or the batch appended no event (its
    /// operations may run again either way), and its old session, whose locks a retry
    /// would wait for, is gone. `Ok(Some(committed))`: the reply was lost (the
    /// connection broke after the commit was sent), and this is what became of it.
    /// `Err`: the reply was lost and what became of it could not be learned, so the
    /// batch may have committed or not. SQLite's commit runs in this process, and an
    /// error from it means it did not commit.
    fn committed_after_all(
        &mut self,
        error: &sqlx::Error,
        appended: Option<(i64, &str)>,
    ) -> impl Future<Output = sqlx::Result<Option<bool>>> + Send {
        let _ = (error, appended);
        std::future::ready(Ok(None))
    }
    /// Rolls back; on failure the backend drops the connection and reconnects later.
    fn rollback(&mut self) -> impl Future<Output = ()> + Send;
    /// The fence a backend whose commits return before they are durable numbers them
    /// on (`durable`): the writer answers each batch once its commit is released.
    /// `None` (PostgreSQL): a commit that returned is durable.
    fn fence(&self) -> Option<std::sync::Arc<super::durable::Fence>> {
        None
    }
    /// Inserts new approvals, each with its `params_sha256` (the request hash), in one
    /// statement, skipping those that repeat an open request (same token, tool and
    /// request hash, whatever their own status) or reuse an idempotency key (one a
    /// request opened or joined with), also within `rows`; answers the ids inserted.
    /// A row inserted may then be changed in the same transaction without being read
    /// (as `create` left it).
    fn insert_approvals(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> impl Future<Output = sqlx::Result<HashSet<ApprovalId>>> + Send;
    /// For each of `rows` (as given to [`Tx::insert_approvals`], which did not insert
    /// them), the approval that blocked it, in one statement: the one the token's
    /// idempotency key names (its own, or the one a repeat with the key joined), else
    /// the one with the same token, tool and request hash while open at the row's
    /// creation; `None` where neither is seen.
    fn find_existing(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> impl Future<Output = sqlx::Result<Vec<Option<ApprovalId>>>> + Send;
    /// Binds `key`, which came with a repeat that joined `approval`, to that approval
    /// (see [`Tx::find_existing`]) unless `token` has used the key already, for a
    /// request of its own or another join; answers the approval the key names now.
    fn bind_joined_key(
        &mut self,
        token: &str,
        key: &str,
        approval: ApprovalId,
    ) -> impl Future<Output = sqlx::Result<ApprovalId>> + Send;
    /// How many of `token`'s approvals wait for people at `now` (counting stops at
    /// `up_to`), and whether it is throttled (a refusal not yet followed by an
    /// accepted request). On PostgreSQL the requester is locked first, until commit,
    /// so that replicas count it one at a time.
    fn waiting(
        &mut self,
        token: &str,
        up_to: u32,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<(i64, bool)>> + Send;
    /// `token`'s newest approval that waits for people at `now`.
    fn newest_waiting(
        &mut self,
        token: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<Option<ApprovalId>>> + Send;
    /// Records `refusals` refusals of `token`'s requests for `channel` ('' for none),
    /// the first at `now`; true when they start an episode (the first refusals since
    /// the requester was last accepted).
    fn throttled(
        &mut self,
        token: &str,
        channel: &str,
        now: DateTime<Utc>,
        refusals: i64,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// `token` was accepted again: its throttle episodes end.
    fn unthrottled(&mut self, token: &str) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Loads an approval with its votes, locking the row where the backend can.
    fn load(
        &mut self,
        id: ApprovalId,
    ) -> impl Future<Output = sqlx::Result<Option<Approval>>> + Send;
    /// The approval's parameters as the store holds them, as text: what another
    /// program wrote into the shared table, before it is read into a [`Approval`].
    fn parameters_text(
        &mut self,
        id: ApprovalId,
    ) -> impl Future<Output = sqlx::Result<Option<String>>> + Send;
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
    /// Loads approvals with their votes, locking the rows where the backend can.
    fn load_many(
        &mut self,
        ids: &[ApprovalId],
    ) -> impl Future<Output = sqlx::Result<Vec<Approval>>> + Send;
    /// Like [`Tx::load_many`], and in the same statement, for each `(approval, message)`
    /// pair whether the message is one of the approval's recorded messages (the
    /// messages votes were clicked on, see `ops::vote`).
    fn load_many_shown(
        &mut self,
        ids: &[ApprovalId],
        pairs: &[(ApprovalId, &MessageKey)],
    ) -> impl Future<Output = sqlx::Result<(Vec<Approval>, Vec<bool>)>> + Send;
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
    /// Up to `limit` approvals whose nudge has come by `now` (`nudge_at`, see
    /// [`crate::jobs::nudges`]), earliest first, each with its `nudge_at`, for this
    /// transaction to plan and move on (Postgres: locked, skipping those another
    /// replica is firing). Decided ones too: their nudges are cleared.
    fn due_nudges(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> impl Future<Output = sqlx::Result<Vec<(ApprovalId, DateTime<Utc>)>>> + Send;
    /// Moves each approval's `nudge_at` to its next nudge (`None`: clears it). Each was
    /// read in this transaction ([`Tx::load_many`]).
    fn set_nudges(
        &mut self,
        nudges: &[(ApprovalId, Option<DateTime<Utc>>)],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Takes up to `limit` of the claims other programs made in the shared table (a row
    /// moved from approved to executed, see `migrations/postgres/0025_shared_claim.sql`),
    /// oldest first, each with when it was made: their markers are deleted, so that the
    /// transaction that records them takes each once (Postgres: skipping those another
    /// replica is taking).
    fn take_shared_claims(
        &mut self,
        limit: i64,
    ) -> impl Future<Output = sqlx::Result<Vec<(ApprovalId, DateTime<Utc>)>>> + Send;
    /// Stores a token hash under `name` (also the name of a revoked token); false if
    /// an active token has the name.
    fn token_insert(
        &mut self,
        name: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// Gives the active token `name` a new hash; false if there is none.
    fn token_rotate(
        &mut self,
        name: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// Revokes the active token `name`; false if there is none.
    fn token_revoke(
        &mut self,
        name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// The chain head, locked until commit. SQLite answers the head its last commit
    /// left (see `SqliteTx::head`): appending onto one another process moved fails the
    /// batch on `seq`, and the retry reads it.
    fn audit_head(&mut self) -> impl Future<Output = sqlx::Result<(i64, String)>> + Send;
    /// The chain head as the table holds it, locked until commit: on SQLite, not the
    /// one its last commit left, which misses events another process (`signoff
    /// decide`, `token create`) appended since. For a checkpoint that signs the head
    /// without appending to it, where no `seq` collision would tell.
    fn stored_audit_head(&mut self) -> impl Future<Output = sqlx::Result<(i64, String)>> + Send {
        self.audit_head()
    }
    fn insert_audit(
        &mut self,
        entries: &[audit::Entry],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn set_audit_head(
        &mut self,
        seq: i64,
        hash: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    fn newest_checkpoint(
        &mut self,
    ) -> impl Future<Output = sqlx::Result<Option<Checkpoint>>> + Send;
    fn insert_checkpoint(
        &mut self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}

/// The write statements of batching (`ops::batching`), a part of [`Tx`] of its own.
pub(crate) trait BatchTx {
    /// The open batch with `key` that a request expiring at `expires_at` may join at
    /// `now` (window open, posted before that expiry, fewer than `max` members): its
    /// leader and size. On PostgreSQL the batch is locked until commit, so the post
    /// that closes it cannot miss this join.
    fn open_batch(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        max: i64,
    ) -> impl Future<Output = sqlx::Result<Option<(ApprovalId, i64)>>> + Send;
    /// Starts a batch led by `leader` (its first member), open until `closes_at`.
    fn start_batch(
        &mut self,
        leader: ApprovalId,
        key: &str,
        closes_at: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Adds `id` to `leader`'s batch at `position`.
    fn join_batch(
        &mut self,
        leader: ApprovalId,
        id: ApprovalId,
        position: i64,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Closes `leader`'s batch (nothing joins it any more; closing again is a no-op)
    /// and answers its members in order.
    fn close_batch(
        &mut self,
        leader: ApprovalId,
    ) -> impl Future<Output = sqlx::Result<Vec<ApprovalId>>> + Send;
}

/// The outbox's write statements (the jobs, and the Slack messages they posted), a part
/// of [`Tx`] of its own.
pub(crate) trait OutboxTx {
    /// Inserts jobs, each with the time it was planned (one statement for a batch).
    fn insert_jobs(
        &mut self,
        jobs: &[(NewJob, DateTime<Utc>)],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Plans a message update for each approval newer than a delivery showed it
    /// (`(approval, version shown, reported at)`), one per approval however many
    /// reports name it, due when it was first reported: one statement, kept back with
    /// the others, that compares with the approvals as the batch found them (the
    /// reports are recorded before any approval is written) without reading or locking
    /// them in a statement of its own.
    fn update_if_newer(
        &mut self,
        shown: &[(ApprovalId, i64, DateTime<Utc>)],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Deletes the finished jobs `(id, lease)` whose rows still hold the lease of the
    /// claim that ran them (finishing one again is a no-op), in one statement; answers
    /// the ids it deleted.
    fn finish_jobs(
        &mut self,
        jobs: &[(i64, Option<DateTime<Utc>>)],
    ) -> impl Future<Output = sqlx::Result<Vec<i64>>> + Send;
    fn set_permalink(
        &mut self,
        channel: &str,
        ts: &str,
        permalink: &str,
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Claims the given jobs that are still ready, due and free at `now`, one write
    /// each: those paired with no time are leased until `lease_until` (counting the
    /// attempt), the others wait until their time (pacing; no attempt). Answers the
    /// leased ones with their attempts, this one included.
    fn claim_jobs(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        jobs: &[(i64, Option<DateTime<Utc>>)],
    ) -> impl Future<Output = sqlx::Result<Vec<(i64, i32)>>> + Send;
    /// Releases the lease and schedules the job again at `at` after a failed attempt,
    /// if its row still holds `lease` (the claim that ran it): whether it did.
    fn retry_job(
        &mut self,
        job_id: i64,
        lease: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        error: &str,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// Releases the leases `(id, lease, at)` that the rows still hold and schedules
    /// those jobs again at the paired times; these attempts do not count (the jobs
    /// were only waiting their turn, or never started).
    fn defer_jobs(
        &mut self,
        jobs: &[crate::jobs::PutBack],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Gives the job up at `now`, if its row still holds `lease`: whether it did.
    fn kill_job(
        &mut self,
        job_id: i64,
        lease: Option<DateTime<Utc>>,
        error: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = sqlx::Result<bool>> + Send;
    /// Records posted Slack messages, each with when it was reported, in one statement
    /// (a repeated report is a no-op).
    fn insert_messages(
        &mut self,
        messages: &[(&PostedMessage, DateTime<Utc>)],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
    /// Notes that each `(message, approval)` row now shows the paired version (never
    /// moving backwards), in one statement. Each row appears at most once.
    fn mark_rendered(
        &mut self,
        rows: &[(&MessageKey, ApprovalId, i64)],
    ) -> impl Future<Output = sqlx::Result<()>> + Send;
}
