//! Persistence: approvals, votes, jobs, the audit log and API tokens, on SQLite (the
//! embedded default) or PostgreSQL (shared tables, several replicas), chosen by URL.
//!
//! - [`Store`] (this file) is the facade every caller uses.
//! - `backend` holds the two contracts each backend implements: `Reads` (a pool of
//!   readers) and `Tx` (the write transaction); `sqlite` and `postgres` implement them,
//!   and `sql` holds the statements whose text is the same on both.
//! - `writer` is the one task per process that takes write operations from a queue and
//!   commits as many as are waiting in one transaction (group commit: one fsync for
//!   many changes, each acknowledged only after it is durable), retrying them one by
//!   one after a database error.
//! - `ops` is the domain work of a batch: each operation with its own typed reply.
//! - `requests` says what makes a request repeat an open one.
//!
//! One test suite (`tests/store`) runs against both backends.

/// The `pending_approvals` columns every backend reads and writes, in bind order.
macro_rules! approval_columns {
    () => {
        "id, tool_name, parameters, risk_tier, status, requested_by, decided_by, decision_at, \
         expires_at, created_at, summary, context, reason, original_parameters, token_name, \
         idempotency_key, callback_url, required_approvals, routing, executed_at, version, server"
    };
}

/// The first and last ids that start with `prefix` (hex digits, dashes where an id
/// has them or nowhere, any case); `None` for anything else.
fn prefix_range(prefix: &str) -> Option<(ApprovalId, ApprovalId)> {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let mut digits = String::with_capacity(32);
    for (at, c) in prefix.chars().enumerate() {
        match c {
            '-' if DASHES.contains(&at) => {}
            c if c.is_ascii_hexdigit() => digits.push(c.to_ascii_lowercase()),
            _ => return None,
        }
    }
    if digits.is_empty() || digits.len() > 32 {
        return None;
    }
    let padded = |fill: char| -> Option<ApprovalId> {
        let hex: String = digits
            .chars()
            .chain(std::iter::repeat(fill))
            .take(32)
            .collect();
        uuid::Uuid::parse_str(&hex).ok().map(ApprovalId)
    };
    Some((padded('0')?, padded('f')?))
}

/// The start of a multi-row `INSERT` of every approval column plus `params_sha256`;
/// the backend pushes the rows, then what to do with a reused idempotency key and
/// what to answer.
macro_rules! insert_approvals_sql {
    () => {
        concat!(
            "INSERT INTO pending_approvals (",
            approval_columns!(),
            ", params_sha256) "
        )
    };
}

/// Splits `rows` into chunks whose sizes are powers of two, largest first, none over
/// `max` (itself a power of two). A multi-row statement then has at most
/// `log2(max) + 1` shapes, so the prepared-statement cache holds few of them: on
/// SQLite each shape is a compiled program in this process's memory.
pub(crate) fn pow2_chunks<T>(mut rows: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two());
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = max.min(1 << rows.len().ilog2());
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

mod backend;
mod ops;
mod postgres;
pub mod requests;
mod sql;
mod sqlite;
mod writer;

pub use postgres::WRITER_SETTING as POSTGRES_WRITER_SETTING;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc};

use crate::approval::{Approval, ApprovalId, Event, NewApproval, Rejection, Status};
use crate::audit;
use crate::jobs::{Deliveries, DueJob, Outcome, PostedMessage};
use crate::policy::Classification;
use backend::Reads;
use ops::{Op, Reply, TokenChange};

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state machine refused the event; `current` is the approval as it stands.
    #[error("{rejection}")]
    Rejected {
        rejection: Rejection,
        current: Box<Approval>,
    },
    #[error("no approval with id {0}")]
    NotFound(ApprovalId),
    /// The idempotency key names another call (`ApprovalId`: that call's approval).
    #[error(
        "this idempotency_key was used for another call (approval {0}): use a new key for a new call"
    )]
    IdempotencyKeyReused(ApprovalId),
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the store is shutting down")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The answer to a create: the approval, and whether it is new (false: an identical
/// pending request or the same idempotency key already existed).
#[derive(Debug, Clone)]
pub struct Created {
    pub approval: Approval,
    pub created: bool,
}

/// Timers fired per write operation at most: a scheduler pass's whole batch (fewer,
/// larger statements measured faster on PostgreSQL than two operations of 500).
const FIRE_CHUNK: i64 = 1000;

/// An approval's status changed (sent after the change committed).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub id: ApprovalId,
    pub status: Status,
    /// The approval as this process committed it, so that waiters can answer without
    /// reading it back; `None` when the change was heard from another replica.
    pub after: Option<Arc<Approval>>,
}

impl StatusChange {
    /// Made by this process (not heard from another replica).
    pub fn is_local(&self) -> bool {
        self.after.is_some()
    }
}

/// One API token as listed (the secret itself is never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Counts for `/health/approvals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HealthCounts {
    pub pending: i64,
    /// Pending or approved approvals past their expiry that the scheduler has not expired yet.
    pub stale_pending: i64,
    /// Jobs that were given up on, or are overdue by more than the grace period.
    pub undelivered: i64,
}

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
        // Each notice may hold an approval snapshot; a waiter that falls further
        // behind than this reads the approval back instead.
        let (changes, _) = broadcast::channel(1024);
        let wakeup = Arc::new(tokio::sync::Notify::new());
        let (writes, rx) = mpsc::channel(writer::QUEUE);
        let backend = if url.starts_with("sqlite:") {
            let (reads, tx) = sqlite::open(url).await?;
            tokio::spawn(writer::run(tx, rx, changes.clone(), deliveries));
            Backend::Sqlite(reads)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let (reads, tx) = postgres::open(url).await?;
            tokio::spawn(writer::run(tx, rx, changes.clone(), deliveries));
            tokio::spawn(postgres::listen(
                url.to_owned(),
                changes.clone(),
                wakeup.clone(),
            ));
            Backend::Postgres(reads)
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
            }),
        })
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
            .map_err(|_| StoreError::Closed)?;
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
        self.write(|reply| Op::Create {
            request: Box::new(request),
            class: Box::new(class),
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
            reply,
        })
        .await
    }

    /// Expires up to `limit` approvals whose `expires_at` has come by `now` (their
    /// timers), each in the same transaction as its audit events and follow-up
    /// deliveries, so timers need no lease. The work goes to the writer in operations
    /// of up to `FIRE_CHUNK` timers each, queued at once. Returns how many fired.
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
                .map_err(|_| StoreError::Closed)?;
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

    pub async fn health(&self, now: DateTime<Utc>) -> Result<HealthCounts> {
        read!(self.health(now))
    }

    /// Leases up to `limit` deliveries due at `now` for `lease` (a holder that dies
    /// loses them after it); expiry timers are not leased but fired by
    /// [`Store::fire_due`].
    pub async fn claim_jobs(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<DueJob>> {
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        self.write(|reply| Op::Claim {
            now,
            lease,
            limit,
            reply,
        })
        .await
    }

    /// Puts claimed jobs back until the paired times without counting the attempt.
    pub async fn defer_jobs(&self, jobs: Vec<(i64, DateTime<Utc>)>) -> Result<()> {
        self.write(|reply| Op::Defer { jobs, reply }).await
    }

    /// Records how a claimed delivery job ended.
    pub async fn report(&self, job: DueJob, outcome: Outcome, now: DateTime<Utc>) -> Result<()> {
        self.write(|reply| Op::Report {
            job: Box::new(job),
            outcome: Box::new(outcome),
            now,
            reply,
        })
        .await
    }

    /// Pending rows inserted straight into the shared table, not yet classified.
    pub async fn unclassified(&self, limit: i64) -> Result<Vec<ApprovalId>> {
        read!(self.unclassified(limit))
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

    /// The Slack messages posted for an approval.
    pub async fn messages(&self, id: ApprovalId) -> Result<Vec<PostedMessage>> {
        read!(self.messages(id))
    }

    /// The permalinks of the main channel posts of `ids`, where Slack gave one.
    pub async fn main_permalinks(&self, ids: &[ApprovalId]) -> Result<HashMap<ApprovalId, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        read!(self.main_permalinks(ids))
    }

    /// Pending approvals, oldest first, at most `limit`.
    pub async fn list_pending(&self, limit: i64) -> Result<Vec<Approval>> {
        read!(self.list_pending(limit))
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
        self.write(|reply| Op::Token { change, reply }).await
    }

    /// Revokes the token `name`; false if there is no such active token.
    pub async fn token_revoke(&self, name: &str, now: DateTime<Utc>) -> Result<bool> {
        let change = TokenChange::Revoke {
            name: name.to_owned(),
            now,
        };
        self.write(|reply| Op::Token { change, reply }).await
    }

    pub async fn token_list(&self) -> Result<Vec<TokenInfo>> {
        read!(self.token_list())
    }

    /// The stored hash of the token `name` (revoked or not): the key that signs its
    /// decision callbacks.
    pub async fn token_hash(&self, name: &str) -> Result<Option<String>> {
        read!(self.token_hash(name))
    }

    /// The name of the active token with this hash.
    pub async fn token_lookup(&self, hash: &str) -> Result<Option<String>> {
        read!(self.token_lookup(hash))
    }

    /// A receiver of status changes (long-poll wake-ups, metrics).
    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.inner.changes.subscribe()
    }
}

/// Decodes the JSON array of votes a backend's approval query aggregates.
fn decode_votes(json: &str) -> sqlx::Result<Vec<crate::approval::Vote>> {
    serde_json::from_str(json).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// Decodes a message's `kind` column.
fn decode_kind(text: &str) -> sqlx::Result<crate::jobs::MessageKind> {
    crate::jobs::MessageKind::parse(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("unknown message kind {text:?}").into()))
}

/// Decodes a column stored as a name (status, tier, decision).
fn decode<T>(text: &str) -> sqlx::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error: T::Err| sqlx::Error::Decode(error.to_string().into()))
}

/// The URL without its password, for error messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{pow2_chunks, prefix_range};

    #[test]
    fn an_id_prefix_is_the_range_of_ids_it_starts() {
        let range = |prefix: &str| {
            prefix_range(prefix).map(|(first, last)| (first.to_string(), last.to_string()))
        };
        assert_eq!(
            range("1d8a54e1"),
            Some((
                "1d8a54e1-0000-0000-0000-000000000000".into(),
                "1d8a54e1-ffff-ffff-ffff-ffffffffffff".into()
            ))
        );
        assert_eq!(range("1D8A54E1-55"), range("1d8a54e155"));
        let full = "1d8a54e1-55c8-4ba9-9bb1-bf08ca4746b1";
        assert_eq!(range(full), Some((full.into(), full.into())));
        assert_eq!(range(&full.replace('-', "")), range(full));
        for bad in [
            "",
            "-",
            "1d8a-54e1",
            "xyz",
            "1d8a54e1 ",
            &format!("{full}0"),
        ] {
            assert_eq!(range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn chunks_are_powers_of_two_largest_first_and_cover_every_row() {
        let rows: Vec<u32> = (0..300).collect();
        let chunks: Vec<&[u32]> = pow2_chunks(&rows, 128).collect();
        let sizes: Vec<usize> = chunks.iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, [128, 128, 32, 8, 4]);
        assert_eq!(chunks.concat(), rows);
        assert_eq!(pow2_chunks(&rows[..1], 64).count(), 1);
        assert_eq!(pow2_chunks::<u32>(&[], 64).count(), 0);
    }

    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://signoff.db"), "sqlite://signoff.db");
    }
}
