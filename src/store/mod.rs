//! Persistence: approvals, votes, jobs, the audit log and API tokens, on SQLite (the
//! embedded default) or PostgreSQL (shared tables, several replicas), chosen by URL.
//!
//! - [`Store`] (`facade`) is the handle every caller uses; this file holds the types it
//!   answers with.
//! - `backend` holds the two contracts each backend implements: `Reads` (a pool of
//!   readers) and `Tx` (the write transaction); `sqlite` and `postgres` implement them,
//!   `sql` holds the statements whose text is the same on both, `shared` the rest
//!   they share (columns, chunking, decoding), `read_pool` their reader connections,
//!   `coalesce` the reads that arrive together and share one statement (PostgreSQL's
//!   status gets and message updates: `postgres::coalesced`).
//! - `writer` is the one task per process that takes write operations from a queue and
//!   commits as many as are waiting in one transaction (group commit: one fsync for
//!   many changes, each acknowledged only after it is durable), retrying them one by
//!   one after a database error. `durable` holds SQLite's answers, announcements and
//!   reads back until the WAL's sync beside the writer covers the commit they rest on.
//! - `ops` is the domain work of a batch: each operation with its own typed reply.
//! - `requests` says what makes a request repeat an open one.
//!
//! One test suite (`tests/store`) runs against both backends.

#[macro_use]
mod shared;
#[macro_use]
mod read_pool;
mod schema;

mod backend;
mod coalesce;
mod durable;
mod facade;
mod ops;
mod postgres;
pub mod requests;
mod sql;
mod sqlite;
mod stats;
mod writer;

pub use postgres::WRITER_SETTING as POSTGRES_WRITER_SETTING;

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::approval::{Approval, ApprovalId, Rejection, Status};
pub use facade::Store;
pub use schema::Schema;
pub use shared::redact;
use shared::{
    by_position, decode, decode_messages, decode_votes, due_jobs, found_at, leased,
    posted_messages, pow2_chunks,
};
#[cfg(test)]
pub(crate) use sqlite::SyncLog;
pub use sqlite::file_of as sqlite_file;
pub use stats::WriterStats;

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
    /// The requester has `limit` or more requests waiting for people (`max_pending`).
    #[error(
        "{requester} has {waiting} requests waiting for a decision (max_pending is {limit}): \
         this one was not opened. Wait for decisions, or cancel requests no longer needed"
    )]
    TooManyPending {
        requester: String,
        waiting: i64,
        limit: u32,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("the store is shutting down")]
    Closed,
    /// The writer's thread ended (it panicked): no write can be made until a restart.
    #[error("the store's writer stopped (its panic is logged above): signoff must be restarted")]
    WriterStopped,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The answer to a create: the approval, and whether it is new (false: an identical
/// pending request or the same idempotency key already existed).
#[derive(Debug, Clone)]
pub struct Created {
    pub approval: Approval,
    pub created: bool,
    /// This request executed the approval (`execute_if_approved`): its caller runs the
    /// parameters now. False for an approval executed before, by an earlier request
    /// (an idempotent retry), which must not run again.
    pub spent: bool,
}

/// What bringing an approval's Slack messages up to date needs, read in one statement:
/// the approval, its messages, and the members of the batch it is in (empty when it
/// was posted alone or not at all).
#[derive(Debug, Clone, PartialEq)]
pub struct WithMessages {
    pub approval: Approval,
    pub messages: Vec<crate::jobs::PostedMessage>,
    pub batch: Vec<ApprovalId>,
}

/// How a vote clicked in Slack went ([`Store::vote`]). Nothing changed unless it
/// counted.
#[derive(Debug, Clone, PartialEq)]
pub enum Voted {
    /// It counted: the approval after it.
    Counted(Box<Approval>),
    /// The approval lists a user group that does not name the voter directly: only
    /// Slack can tell whether they are in it (the caller asks it, then votes with
    /// [`Store::apply`]).
    AskSlack,
    /// The message clicked is not one of the approval's, so the click counts for
    /// nothing.
    NotShownThere,
}

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

/// How long a job may be overdue before health reports it undelivered.
pub(crate) const OVERDUE_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// How long health reports a delivery given up: long enough for any monitor to see
/// it, and then it clears (nothing can bring it back, and a status degraded for good
/// would hide the next failure).
pub const GIVEN_UP_SHOWN: chrono::Duration = chrono::Duration::hours(1);

/// Counts for `/health/approvals`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthCounts {
    pub pending: i64,
    /// Pending or approved approvals past their expiry that the scheduler has not expired yet.
    pub stale_pending: i64,
    /// Slack deliveries overdue by more than [`OVERDUE_GRACE`] or given up within
    /// [`GIVEN_UP_SHOWN`]. Callbacks are not counted, overdue or given up: any token
    /// holder could queue enough of them to a receiver that never answers to keep
    /// them overdue.
    pub undelivered: i64,
    /// Callbacks given up within [`GIVEN_UP_SHOWN`]: their receivers are the callers',
    /// so they are reported apart and do not degrade health.
    pub callbacks_given_up: i64,
    /// Per channel, the approvals whose post waits its turn (see `outbox` pacing).
    pub queued_posts: Vec<QueuedPosts>,
}

/// A channel's waiting posts: how many, and the soonest expiry among their approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedPosts {
    pub channel: String,
    pub posts: i64,
    pub first_expiry: DateTime<Utc>,
}

/// A channel's queue (`/health/approvals`) is its main posts waiting, whenever they are
/// due (pacing defers a backlog in waves, up to an hour ahead: `outbox::pacing`), and
/// its other posts due within this long: later ones, such as escalations, are timers,
/// not a queue.
pub(crate) const QUEUED_WITHIN: chrono::Duration = chrono::Duration::seconds(30);
