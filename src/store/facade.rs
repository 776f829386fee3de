//! [`Store`]: the handle every caller uses. Reads go to the backend's reader pool;
//! writes are queued for the writer task as typed operations, each answered once its
//! transaction committed.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc};

use super::backend::Reads;
use super::ops::{Op, Reply, Shown, TokenChange};
use super::shared::{prefix_range, redact};
use super::{
    Created, HealthCounts, Result, Schema, StatusChange, StoreError, TokenInfo, Voted,
    WithMessages, WriterStats, postgres, sqlite, writer,
};
use crate::approval::{Approval, ApprovalId, Decision, Event, NewApproval, Status};
use crate::audit;
use crate::audit::checkpoint::{self, Checkpoint};
use crate::clock::Clock;
use crate::ids::UserId;
use crate::jobs::{Deliveries, Due, DueJob, DueJobs, MessageKey, Outcome, Paced, PostedMessage};
use crate::policy::Classification;
use crate::signing::Signer;

/// Timers fired per write operation at most: a scheduler pass's whole batch (fewer,
/// larger statements measured faster on PostgreSQL than two operations of 500).
const FIRE_CHUNK: i64 = 1000;
/// Jobs claimed per write operation at most (see [`Store::claim_due`]): a pass's
/// 1,000 in one operation held the writer for 6.5 ms on PostgreSQL, and the requests
/// queued behind it with it (intake p99 15–17 ms, 10.5–11.3 ms in chunks of 128).
const CLAIM_CHUNK: usize = 128;
/// Approvals read by one statement of [`Store::get_many`].
const GET_MANY_CHUNK: usize = 500;

#[derive(Clone)]
enum Backend {
    Sqlite(sqlite::SqliteReads),
    Postgres(postgres::PgReads),
}

/// Dispatches a read to whichever backend is configured.
macro_rules! read {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.inner.backend {
            Backend::Sqlite(r) => r.$method($($arg),*).await,
            Backend::Postgres(r) => r.$method($($arg),*).await,
        }
    };
}

struct Inner {
    backend: Backend,
    writes: mpsc::Sender<Op>,
    changes: broadcast::Sender<StatusChange>,
    wakeup: Arc<tokio::sync::Notify>,
    /// True while this process hears other processes' notices (PostgreSQL's LISTEN
    /// connection is up); always true on SQLite, which has one process.
    hearing: tokio::sync::watch::Receiver<bool>,
    /// Counts the times this process may have missed other processes' change notices
    /// (see [`Store::missed`]); never moves on SQLite, whose watcher misses nothing.
    missed: tokio::sync::watch::Sender<u64>,
    /// Whether the writer signs audit checkpoints.
    signs: bool,
    /// Where the writer's time goes (for `/metrics`).
    stats: WriterStats,
}

/// The store handle: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl Store {
    /// Connects by URL scheme (`sqlite://path` or `postgres://…`), runs migrations and
    /// starts the writer task. No deliveries are planned (see [`Store::connect_with`]).
    pub async fn connect(url: &str) -> Result<Store> {
        Self::connect_with(url, Deliveries::default()).await
    }

    /// Like [`Store::connect`], planning the given deliveries with each change.
    pub async fn connect_with(url: &str, deliveries: Deliveries) -> Result<Store> {
        Self::connect_signing(url, deliveries, None).await
    }

    /// Like [`Store::connect_with`]; with `signer`, the writer appends signed audit
    /// checkpoints (`audit::checkpoint`) as they come due.
    pub async fn connect_signing(
        url: &str,
        deliveries: Deliveries,
        signer: Option<Signer>,
    ) -> Result<Store> {
        Self::connect_logged(url, Schema::Migrate, deliveries, signer, None, None).await
    }

    /// Like [`Store::connect`]; on PostgreSQL, when a write batch's `COMMIT` gets no
    /// reply, the writer tries for `within` (instead of ten seconds) to learn whether
    /// it committed before it fails the batch's writes. For tests that cut the
    /// connection and keep the database out of reach.
    pub async fn connect_learning_commits_within(
        url: &str,
        within: std::time::Duration,
    ) -> Result<Store> {
        let deliveries = Deliveries::default();
        Self::connect_logged(url, Schema::Migrate, deliveries, None, None, Some(within)).await
    }

    /// A SQLite store whose WAL syncs are `log`'s (a test's stand-in for the disk).
    #[cfg(test)]
    pub(crate) async fn connect_sqlite_synced_by(
        url: &str,
        log: Box<dyn sqlite::SyncLog>,
    ) -> Result<Store> {
        let deliveries = Deliveries::default();
        Self::connect_logged(url, Schema::Migrate, deliveries, None, Some(log), None).await
    }

    /// Connects to inspect what is there ([`Schema::AsFound`]): nothing of the
    /// database changes, and one whose schema is not this signoff's is refused.
    pub async fn connect_as_found(url: &str) -> Result<Store> {
        Self::connect_logged(
            url,
            Schema::AsFound,
            Deliveries::default(),
            None,
            None,
            None,
        )
        .await
    }

    /// [`Store::connect_signing`], the schema as `schema` says, a SQLite WAL synced by
    /// `log` (the file when `None`), PostgreSQL's lost commits learned within
    /// `learn_within` (`postgres::LEARN_WITHIN` when `None`).
    async fn connect_logged(
        url: &str,
        schema: Schema,
        deliveries: Deliveries,
        signer: Option<Signer>,
        log: Option<Box<dyn sqlite::SyncLog>>,
        learn_within: Option<std::time::Duration>,
    ) -> Result<Store> {
        let signs = signer.is_some();
        // Each notice may hold an approval snapshot; a waiter that falls further
        // behind than this reads the approval back instead.
        let (changes, _) = broadcast::channel(1024);
        let wakeup = Arc::new(tokio::sync::Notify::new());
        let (writes, rx) = mpsc::channel(writer::QUEUE);
        let (heard, hearing) = tokio::sync::watch::channel(false);
        let missed = tokio::sync::watch::Sender::new(0);
        let stats = WriterStats::default();
        let setup = writer::Setup {
            changes: changes.clone(),
            deliveries,
            signer,
            stats: stats.clone(),
        };
        let backend = if url.starts_with("sqlite:") {
            heard.send_replace(true);
            let (reads, tx) = sqlite::open(url, schema, changes.clone(), log).await?;
            writer::spawn(tx, rx, setup).map_err(sqlx::Error::Io)?;
            Backend::Sqlite(reads)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let learn_within = learn_within.unwrap_or(postgres::LEARN_WITHIN);
            let (reads, tx) = postgres::open(url, schema, learn_within).await?;
            writer::spawn(tx, rx, setup).map_err(sqlx::Error::Io)?;
            tokio::spawn(postgres::listen(
                url.to_owned(),
                changes.clone(),
                wakeup.clone(),
                heard,
                missed.clone(),
            ));
            Backend::Postgres(reads)
        } else if url.trim().is_empty() {
            return Err(StoreError::Invalid(
                "the database URL is empty (DATABASE_URL, or the file DATABASE_URL_FILE \
                 names): use sqlite://FILE or postgres://…, or leave both unset for the \
                 SQLite default"
                    .into(),
            ));
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL {:?}: use sqlite://FILE or postgres://…",
                redact(url)
            )));
        };
        Ok(Store {
            inner: Arc::new(Inner {
                backend,
                writes,
                changes,
                wakeup,
                hearing,
                missed,
                signs,
                stats,
            }),
        })
    }

    /// Resolves once this process hears other processes' changes and inserts (on
    /// PostgreSQL, once its LISTEN connection is up): a readiness signal for what
    /// relies on them.
    pub async fn hearing(&self) {
        let mut hearing = self.inner.hearing.clone();
        // The sender lives as long as the listener task, which never ends.
        let _ = hearing.wait_for(|up| *up).await;
    }

    /// The single writer's queue, batch and commit times.
    pub fn writer_stats(&self) -> &WriterStats {
        &self.inner.stats
    }

    /// Resolves once the store can serve nothing more until signoff is restarted, with
    /// why: the writer stopped (a panic: every write would fail from then on), or, on
    /// SQLite, a sync of its log failed (`durable`). PostgreSQL's server stops itself
    /// on such a failure, and signoff reconnects to it.
    pub async fn broken(&self) -> StoreError {
        let synced = async {
            match self.fence() {
                Some(fence) => fence.broken().await.into(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            failure = synced => failure,
            () = self.inner.writes.closed() => StoreError::WriterStopped,
        }
    }

    /// Why the store can serve nothing more, if it cannot (see [`Store::broken`]).
    pub fn failure(&self) -> Option<StoreError> {
        if self.inner.writes.is_closed() {
            return Some(StoreError::WriterStopped);
        }
        Some(self.fence()?.failure()?.into())
    }

    fn fence(&self) -> Option<&Arc<super::durable::Fence>> {
        match &self.inner.backend {
            Backend::Sqlite(reads) => reads.fence(),
            Backend::Postgres(_) => None,
        }
    }

    /// How far the database's clock is ahead of `clock` (negative: behind), against
    /// the middle of the round trip; `None` on SQLite, whose clock is this host's.
    /// Replicas judge leases and expiries by their own clocks, so clocks apart by more
    /// than a tenth of the lease may send a reminder twice (see [`crate::jobs::LEASE`]).
    pub async fn clock_offset(&self, clock: &dyn Clock) -> Result<Option<chrono::Duration>> {
        let Backend::Postgres(reads) = &self.inner.backend else {
            return Ok(None);
        };
        let before = clock.now();
        let database = reads.database_now().await?;
        let after = clock.now();
        Ok(Some(database - (before + (after - before) / 2)))
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend_name(&self) -> &'static str {
        match self.inner.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Queues the operation `make` builds around its reply, and waits for the answer
    /// (given once its transaction committed).
    async fn write<T>(&self, make: impl FnOnce(Reply<T>) -> Op) -> Result<T> {
        let (reply, answer) = Reply::new();
        self.inner
            .writes
            .send(make(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Records a new request, or returns the identical open one / the one with the
    /// same idempotency key.
    pub async fn create(
        &self,
        request: NewApproval,
        class: Classification,
        now: DateTime<Utc>,
    ) -> Result<Created> {
        self.open(request, class, false, now).await
    }

    /// As [`Store::create`], and an approved answer (approved by policy, or the
    /// approved request this one repeats) is executed in the same transaction: it comes
    /// back `executed`, with the parameters to run. Anything else comes back as
    /// `create` answers it.
    pub async fn create_and_execute(
        &self,
        request: NewApproval,
        class: Classification,
        now: DateTime<Utc>,
    ) -> Result<Created> {
        self.open(request, class, true, now).await
    }

    async fn open(
        &self,
        request: NewApproval,
        class: Classification,
        spend: bool,
        now: DateTime<Utc>,
    ) -> Result<Created> {
        self.write(|reply| Op::Create {
            request: Box::new(request),
            class: Box::new(class),
            spend,
            now,
            reply,
        })
        .await
    }

    /// Applies an event (vote, edit, execute, cancel, expire) with compare-and-set.
    pub async fn apply(
        &self,
        id: ApprovalId,
        event: Event,
        now: DateTime<Utc>,
    ) -> Result<Approval> {
        self.write(|reply| Op::Apply {
            id,
            event,
            now,
            deliveries: None,
            reply,
        })
        .await
    }

    /// `user`'s vote clicked in Slack, checked on the writer against the approval as it
    /// reads it there, so that a click needs no read of its own first: `shown_in`,
    /// the message clicked when its metadata does not name the approval, must be one
    /// of the approval's recorded messages; the voter must be one of its approvers
    /// where the list alone says so ([`Routing::lists`]), else the answer is
    /// [`Voted::AskSlack`]; then the state machine's rules, among them that an edit
    /// since the message showed `parameters_shown` refuses an approve. A refusal
    /// carries the approval as the writer read it.
    ///
    /// [`Routing::lists`]: crate::approval::Routing::lists
    pub async fn vote(
        &self,
        id: ApprovalId,
        user: &UserId,
        decision: Decision,
        (shown_in, parameters_shown): (Option<&MessageKey>, Option<&str>),
        now: DateTime<Utc>,
    ) -> Result<Voted> {
        let shown = shown_in.map_or(Shown::Named, |message| Shown::On(message.clone()));
        self.write(|reply| Op::Vote {
            id,
            user: user.clone(),
            decision,
            shown,
            parameters_shown: parameters_shown.map(str::to_owned),
            now,
            reply,
        })
        .await
    }

    /// Like [`Store::apply`], planning `deliveries` for this change instead of the
    /// store's (`signoff decide` updates the Slack messages an approval has, though
    /// its own process has no Slack client).
    pub async fn apply_delivering(
        &self,
        id: ApprovalId,
        event: Event,
        now: DateTime<Utc>,
        deliveries: Deliveries,
    ) -> Result<Approval> {
        self.write(|reply| Op::Apply {
            id,
            event,
            now,
            deliveries: Some(deliveries),
            reply,
        })
        .await
    }

    /// Fires the timers on approvals' rows that have come by `now`: expires up to
    /// `limit` approvals whose `expires_at` has come, each in the same transaction as
    /// its audit events and follow-up deliveries, and plans the nudges (first reminder,
    /// escalation post) of up to `limit` whose `nudge_at` has come (see
    /// [`crate::jobs::nudges`]), so timers need no lease. The work goes to the writer
    /// in operations of up to `FIRE_CHUNK` timers each, queued at once. Returns how
    /// many fired.
    pub async fn fire_due(&self, now: DateTime<Utc>, limit: i64) -> Result<usize> {
        let mut answers = Vec::new();
        let mut left = limit;
        while left > 0 {
            let chunk = left.min(FIRE_CHUNK);
            left -= chunk;
            let (reply, answer) = Reply::new();
            let op = Op::FireDue {
                now,
                limit: chunk,
                reply,
            };
            self.inner
                .writes
                .send(op)
                .await
                .map_err(|_| StoreError::WriterStopped)?;
            answers.push(answer);
        }
        let mut fired = 0;
        for answer in answers {
            fired += answer.await.map_err(|_| StoreError::Closed)??;
        }
        Ok(fired)
    }

    pub async fn get(&self, id: ApprovalId) -> Result<Option<Approval>> {
        read!(self.get(id))
    }

    /// The approval and its main channel post's permalink (where Slack gave one), in
    /// one read.
    pub async fn get_linked(&self, id: ApprovalId) -> Result<Option<(Approval, Option<String>)>> {
        read!(self.get_linked(id))
    }

    /// The approval and whether `message` is one of its messages, in one read.
    pub async fn get_shown_in(
        &self,
        id: ApprovalId,
        message: &MessageKey,
    ) -> Result<Option<(Approval, bool)>> {
        read!(self.get_shown_in(id, message))
    }

    pub async fn health(&self, now: DateTime<Utc>) -> Result<HealthCounts> {
        read!(self.health(now))
    }

    /// Leases up to `limit` deliveries of every kind due at `now` for `lease` (a
    /// holder that dies loses them after it); expiry timers are not leased but fired
    /// by [`Store::fire_due`]. The scheduler does this in two steps, its deliveries and
    /// its callbacks apart, pacing posts in between: [`Store::due_jobs`], then
    /// [`Store::claim_due`].
    pub async fn claim_jobs(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<DueJob>> {
        let due = self.due_jobs(now, limit, Due::All).await?;
        self.claim_due(due, now, lease, |jobs| (jobs, Vec::new()))
            .await
    }

    /// Up to `limit` deliveries of the kinds `which` takes, due and not leased at
    /// `now`, earliest first, read on a reader: the writer only claims them
    /// ([`Store::claim_due`]).
    pub async fn due_jobs(&self, now: DateTime<Utc>, limit: i64, which: Due) -> Result<DueJobs> {
        read!(self.due_jobs(now, limit, which))
    }

    /// Claims what `due` holds, one write per job, in write operations of at most
    /// [`CLAIM_CHUNK`] jobs: `pace` splits its jobs into those to run now, leased for
    /// `lease` (the attempt counts), and those to come back at the paired times (no
    /// lease, no attempt). Answers the leased jobs in `pace`'s order, less any that
    /// another replica claimed or that changed since the read.
    pub async fn claim_due(
        &self,
        due: DueJobs,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        pace: impl FnOnce(Vec<DueJob>) -> Paced,
    ) -> Result<Vec<DueJob>> {
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let (ready, waiting) = pace(due.jobs);
        let lease_until = chrono::Duration::from_std(lease)
            .ok()
            .and_then(|lease| now.checked_add_signed(lease))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        // A job of a kind only a newer signoff knows (a rolling upgrade) is moved a
        // lease later, as a paced one is: out of the way of the next passes, its
        // attempts left for the version that runs it (a lease would count one).
        let foreign = due.foreign.into_iter().map(|id| (id, Some(lease_until)));
        let jobs: Vec<(i64, Option<DateTime<Utc>>)> = ready
            .iter()
            .map(|job| (job.id, None))
            .chain(foreign)
            .chain(waiting.into_iter().map(|(id, at)| (id, Some(at))))
            .collect();
        // One write operation per chunk, one after the other, so that the requests
        // queued meanwhile run between them. Should a later chunk fail, the earlier
        // chunks' jobs are leased already: they run now (not a lease later), and the
        // failed chunk's and the rest stay due for the next pass.
        let mut leased: HashMap<i64, i32> = HashMap::new();
        for (n, chunk) in jobs.chunks(CLAIM_CHUNK).enumerate() {
            let jobs = chunk.to_vec();
            let claimed = self
                .write(|reply| Op::Claim {
                    now,
                    lease_until,
                    jobs,
                    reply,
                })
                .await;
            match claimed {
                Ok(claimed) => leased.extend(claimed),
                Err(error) if n == 0 => return Err(error),
                Err(error) => {
                    tracing::warn!(%error, leased = leased.len(), "claiming due jobs failed part-way; running those leased");
                    break;
                }
            }
        }
        Ok(ready
            .into_iter()
            .filter_map(|mut job| {
                job.attempts = *leased.get(&job.id)?;
                job.lease_until = Some(lease_until);
                Some(job)
            })
            .collect())
    }

    /// Puts claimed jobs back until the paired times without counting the attempt
    /// (deliveries claimed and not started): those whose rows still hold the leases of
    /// the claims that took them, so a holder whose lease ran out releases nothing
    /// another replica has claimed since.
    pub async fn defer_jobs(&self, jobs: Vec<(&DueJob, DateTime<Utc>)>) -> Result<()> {
        let jobs = jobs
            .into_iter()
            .map(|(job, at)| (job.id, job.lease_until, at))
            .collect();
        self.write(|reply| Op::Defer { jobs, reply }).await
    }

    /// Records how a claimed delivery job ended, if its row still holds the lease of
    /// the claim that ran it ([`DueJob::lease_until`]): whether it did. A holder whose
    /// lease ran out, its job claimed again by another replica or finished, neither
    /// finishes, retries nor kills it, and plans no follow-up (the next reminder);
    /// the messages it posted and the versions they show are recorded all the same.
    pub async fn report(&self, job: DueJob, outcome: Outcome, now: DateTime<Utc>) -> Result<bool> {
        self.write(|reply| Op::Report {
            job: Box::new(job),
            outcome: Box::new(outcome),
            now,
            reply,
        })
        .await
    }

    /// Pending rows inserted straight into the shared table, not yet classified, oldest
    /// first, but for those in `skip`.
    pub async fn unclassified(&self, limit: i64, skip: &[ApprovalId]) -> Result<Vec<ApprovalId>> {
        read!(self.unclassified(limit, skip))
    }

    /// Classifies such a row (a no-op if another replica already did).
    pub async fn adopt(
        &self,
        id: ApprovalId,
        class: Classification,
        now: DateTime<Utc>,
    ) -> Result<Approval> {
        self.write(|reply| Op::Adopt {
            id,
            class: Box::new(class),
            now,
            reply,
        })
        .await
    }

    /// Woken when there may be work for the scheduler right now (a row inserted into
    /// the shared table on Postgres).
    pub fn wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.inner.wakeup.clone()
    }

    /// Stores the link to a posted message.
    pub async fn set_permalink(&self, channel: &str, ts: &str, permalink: &str) -> Result<()> {
        self.write(|reply| Op::SetPermalink {
            channel: channel.to_owned(),
            ts: ts.to_owned(),
            permalink: permalink.to_owned(),
            reply,
        })
        .await
    }

    /// Closes the Slack batch `leader` leads, before its message is posted: no request
    /// joins it any more. Its members, in the message's order (closing again answers
    /// the same).
    pub async fn close_batch(&self, leader: ApprovalId) -> Result<Vec<ApprovalId>> {
        self.write(|reply| Op::CloseBatch { leader, reply }).await
    }

    /// The approvals of the Slack batch `id` is in, in the message's order; empty when
    /// it was posted alone.
    pub async fn batch_members(&self, id: ApprovalId) -> Result<Vec<ApprovalId>> {
        read!(self.batch_members(id))
    }

    /// The Slack messages posted for an approval.
    pub async fn messages(&self, id: ApprovalId) -> Result<Vec<PostedMessage>> {
        read!(self.messages(id))
    }

    /// The approval with the Slack messages posted for it and the members of the batch
    /// it is in, in one read: what bringing its messages up to date needs.
    pub async fn get_with_messages(&self, id: ApprovalId) -> Result<Option<WithMessages>> {
        read!(self.get_with_messages(id))
    }

    /// Whether a server with Slack planned to post the approval, or posted it: then a
    /// change made elsewhere (`signoff decide`) must update its messages.
    pub async fn slack_planned(&self, id: ApprovalId) -> Result<bool> {
        read!(self.slack_planned(id))
    }

    /// Whether approval `id` is a row another program inserted that no server has
    /// classified yet (see [`Reads::unclassified_row`]).
    pub async fn unclassified_row(&self, id: ApprovalId) -> Result<bool> {
        read!(self.unclassified_row(id))
    }

    /// The permalinks of the main channel posts of `ids`, where Slack gave one.
    pub async fn main_permalinks(&self, ids: &[ApprovalId]) -> Result<HashMap<ApprovalId, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        read!(self.main_permalinks(ids))
    }

    /// The approvals of `ids` that exist, in the order of `ids` (one gone meanwhile is
    /// left out): one read per [`GET_MANY_CHUNK`] ids.
    pub async fn get_many(&self, ids: &[ApprovalId]) -> Result<Vec<Approval>> {
        let mut found = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(GET_MANY_CHUNK) {
            found.extend(read!(self.get_many(chunk))?);
        }
        let mut by_id: HashMap<ApprovalId, Approval> = found
            .into_iter()
            .map(|approval| (approval.id, approval))
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// Every approval with `status` (any: `None`), oldest first, however many: their
    /// ids in one query, then the approvals a chunk at a time.
    pub async fn list_all(&self, status: Option<Status>) -> Result<Vec<Approval>> {
        let ids = self.list_ids(status).await?;
        self.get_many(&ids).await
    }

    /// The ids of every approval with `status` (any: `None`), oldest first: to read
    /// them a chunk at a time ([`Store::get_many`]) where holding them all would not do.
    pub async fn list_ids(&self, status: Option<Status>) -> Result<Vec<ApprovalId>> {
        read!(self.list_ids(status))
    }

    /// Resolves a full id or a short prefix (as shown in Slack) to at most `limit`
    /// approval ids, in id order.
    pub async fn find_by_prefix(&self, prefix: &str, limit: i64) -> Result<Vec<ApprovalId>> {
        let Some((first, last)) = prefix_range(prefix) else {
            return Ok(Vec::new());
        };
        read!(self.find_in_range(first, last, limit))
    }

    /// The chain head: (number of events, hash of the last).
    pub async fn audit_head(&self) -> Result<(i64, String)> {
        read!(self.audit_head())
    }

    /// The chain head's number and the lowest and highest event numbers, read in one
    /// snapshot (`audit verify` looks for rows beside the chain with it).
    pub async fn audit_bounds(&self) -> Result<crate::audit::checkpoint::Bounds> {
        read!(self.audit_bounds())
    }

    /// Every signed audit checkpoint, by number.
    pub async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        read!(self.audit_checkpoints())
    }

    /// Signs the audit chain's head if events arrived since the newest checkpoint and
    /// it is a minute old at `now` (the scheduler's pass: the tail of a burst gets
    /// signed even when no more events come). A no-op on a store that does not sign.
    pub async fn checkpoint(&self, now: DateTime<Utc>) -> Result<()> {
        if !self.inner.signs {
            return Ok(());
        }
        let newest = read!(self.newest_checkpoint())?;
        let (seq, _) = self.audit_head().await?;
        if !checkpoint::due(newest.map(|c| (c.seq, c.at)), seq, now) {
            return Ok(());
        }
        self.write(|reply| Op::Checkpoint { now, reply }).await
    }

    /// Audit events with `seq > after_seq`, in order, at most `limit`.
    pub async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<audit::Entry>> {
        read!(self.audit_page(after_seq, limit))
    }

    /// Stores a token hash under `name` (also the name of a revoked token); false if an
    /// active token has the name.
    pub async fn token_insert(&self, name: &str, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let change = TokenChange::Insert {
            name: name.to_owned(),
            hash: hash.to_owned(),
            now,
        };
        self.write(|reply| Op::Token { change, reply }).await
    }

    /// Gives the active token `name` a new hash (the old secret stops working); false
    /// if there is no such active token.
    pub async fn token_rotate(&self, name: &str, hash: &str, now: DateTime<Utc>) -> Result<bool> {
        let change = TokenChange::Rotate {
            name: name.to_owned(),
            hash: hash.to_owned(),
            now,
        };
        let rotated = self.write(|reply| Op::Token { change, reply }).await?;
        // Every replica's cached entry for the old secret runs out first (tokens.rs).
        tokio::time::sleep(crate::tokens::CACHE_TTL).await;
        Ok(rotated)
    }

    /// Revokes the token `name`; false if there is no such active token. Returns once no
    /// replica accepts it any more (see `tokens::Cache`).
    pub async fn token_revoke(&self, name: &str, now: DateTime<Utc>) -> Result<bool> {
        let change = TokenChange::Revoke {
            name: name.to_owned(),
            now,
        };
        let revoked = self.write(|reply| Op::Token { change, reply }).await?;
        tokio::time::sleep(crate::tokens::CACHE_TTL).await;
        Ok(revoked)
    }

    pub async fn token_list(&self) -> Result<Vec<TokenInfo>> {
        read!(self.token_list())
    }

    /// The name of the active token with this hash.
    pub async fn token_lookup(&self, hash: &str) -> Result<Option<String>> {
        read!(self.token_lookup(hash))
    }

    /// A receiver of status changes (long-poll wake-ups, metrics).
    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.inner.changes.subscribe()
    }

    /// A receiver that changes whenever notices of other processes' changes may have
    /// been missed (on PostgreSQL, once its LISTEN connection is back after it was
    /// lost: the notices sent meanwhile are gone). What waits on [`Store::subscribe`]
    /// reads again what it waits for; taken before that read, like the subscription.
    pub fn missed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.missed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store whose writer's thread has ended (as a panic ends it): `broken` resolves
    /// and `failure` says so, so that `serve` stops and the process exits non-zero
    /// instead of answering 503 to every write while `/healthz` says ok.
    #[tokio::test]
    async fn a_writer_that_stopped_leaves_the_store_broken() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = Store::connect(&url).await.unwrap();
        assert!(store.failure().is_none());
        let (writes, stopped) = mpsc::channel(1);
        drop(stopped);
        let inner = &store.inner;
        let dead = Store {
            inner: Arc::new(Inner {
                backend: inner.backend.clone(),
                writes,
                changes: inner.changes.clone(),
                wakeup: inner.wakeup.clone(),
                hearing: inner.hearing.clone(),
                missed: inner.missed.clone(),
                signs: inner.signs,
                stats: inner.stats.clone(),
            }),
        };
        let broken = tokio::time::timeout(std::time::Duration::from_secs(5), dead.broken());
        assert!(matches!(broken.await, Ok(StoreError::WriterStopped)));
        assert!(matches!(dead.failure(), Some(StoreError::WriterStopped)));
        let write = dead.token_insert("t", "hash", Utc::now()).await;
        assert!(matches!(write, Err(StoreError::WriterStopped)), "{write:?}");
    }
}
