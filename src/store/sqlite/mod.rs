//! The SQLite backend: one file in WAL mode, `synchronous = FULL` (a commit is on disk
//! before it is acknowledged), a pool of readers and one writer connection.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::writer::Tx;
use super::{
    HealthCounts, INSERT_APPROVALS_END, Reads, Result, StoreError, TokenInfo, decode, pow2_chunks,
};
use crate::approval::{Approval, ApprovalId, Routing, Vote};
use crate::audit;
use crate::jobs::{DueJob, JobKind, MessageKey, NewJob, PostedMessage};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a job may be overdue before health reports it undelivered.
const OVERDUE_GRACE: chrono::Duration = chrono::Duration::seconds(60);

pub(crate) async fn open(url: &str) -> Result<(SqliteReads, SqliteTx)> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(StoreError::Invalid(
            "in-memory SQLite is not supported (readers and the writer need one file): use sqlite://FILE".into(),
        ));
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| StoreError::Invalid(format!("bad SQLite URL {url:?}: {error}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // Statement journals (a multi-row insert that may skip rows keeps one) stay
        // in memory instead of a temporary file.
        .pragma("temp_store", "memory")
        // For a new file only. Approvals are read and written at random (ids are
        // random), so each one written costs a whole page in the WAL; 2 KiB pages
        // halve those bytes. Measured: creates +13 %, a scheduler pass over 1,000
        // scattered timers -15 %, gets unchanged.
        .pragma("page_size", "2048");
    // The writer never stops a commit to checkpoint; the checkpointer does it beside it.
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
        .await?;
    MIGRATOR.run(&writer).await?;
    // Each connection has its own page cache (2 MiB by default). Readers mostly need
    // the B-tree's upper levels cached (leaves come from the OS page cache), so they
    // get less, which keeps memory flat however large the table grows.
    let readers = SqlitePoolOptions::new()
        .max_connections(READERS)
        .connect_with(options.clone().pragma("cache_size", "-1024"))
        .await?;
    // A checkpoint copies WAL frames to the file without the page cache.
    let checkpointer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.pragma("cache_size", "-256"))
        .await?;
    Ok((
        SqliteReads { pool: readers },
        SqliteTx {
            pool: writer,
            conn: None,
            _checkpointer: Checkpointer(tokio::spawn(checkpoint(checkpointer))),
            rowids: HashMap::new(),
        },
    ))
}

/// Connections for reads (the writer and the checkpointer have one each).
const READERS: u32 = 8;

/// How often committed WAL frames are copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies committed WAL frames into the database file, off the writer's path: left to
/// SQLite, every ~1,000 pages one commit would stop to write them back and sync the
/// file, stalling every request in its batch. A passive checkpoint blocks neither
/// readers nor the writer; once it has caught up, the writer starts the WAL over.
async fn checkpoint(pool: SqlitePool) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(%error, "SQLite WAL checkpoint failed; trying again");
        }
    }
}

/// Stops the checkpointer with the writer that owns it.
pub(crate) struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Times as fixed-width text, so string order is time order.
pub(crate) fn ts(at: &DateTime<Utc>) -> String {
    audit::format_time(at)
}

fn parse_ts(text: &str) -> sqlx::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| sqlx::Error::Decode(format!("bad time {text:?}: {error}").into()))
}

fn parse_opt_ts(text: Option<String>) -> sqlx::Result<Option<DateTime<Utc>>> {
    text.as_deref().map(parse_ts).transpose()
}

fn parse_json(text: &str) -> sqlx::Result<Value> {
    serde_json::from_str(text).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

fn parse_id(text: &str) -> sqlx::Result<ApprovalId> {
    text.parse()
        .map_err(|error: uuid::Error| sqlx::Error::Decode(Box::new(error)))
}

fn approval_from_row(row: &SqliteRow, votes: Vec<Vote>) -> sqlx::Result<Approval> {
    let routing: Option<String> = row.try_get("routing")?;
    Ok(Approval {
        id: parse_id(row.try_get("id")?)?,
        tool_name: row.try_get("tool_name")?,
        parameters: parse_json(row.try_get("parameters")?)?,
        original_parameters: row
            .try_get::<Option<&str>, _>("original_parameters")?
            .map(parse_json)
            .transpose()?,
        risk_tier: decode(row.try_get("risk_tier")?)?,
        status: decode(row.try_get("status")?)?,
        requested_by: row.try_get("requested_by")?,
        token_name: row.try_get("token_name")?,
        summary: row.try_get("summary")?,
        context: row.try_get("context")?,
        decided_by: row.try_get("decided_by")?,
        decision_at: parse_opt_ts(row.try_get("decision_at")?)?,
        reason: row.try_get("reason")?,
        required_approvals: row
            .try_get::<i64, _>("required_approvals")?
            .clamp(1, i64::from(u32::MAX)) as u32,
        votes,
        expires_at: parse_ts(row.try_get("expires_at")?)?,
        created_at: parse_ts(row.try_get("created_at")?)?,
        executed_at: parse_opt_ts(row.try_get("executed_at")?)?,
        idempotency_key: row.try_get("idempotency_key")?,
        callback_url: row.try_get("callback_url")?,
        routing: match routing {
            Some(text) => {
                serde_json::from_str(&text).map_err(|error| sqlx::Error::Decode(Box::new(error)))?
            }
            None => Routing::default(),
        },
        version: row.try_get("version")?,
    })
}

/// `SELECT` of approvals (and their rowids) with their votes as a JSON array (one
/// statement), then `$where`. An approval still at version 0 has had no event
/// accepted, so it has no votes: its lookup (a random page of the votes index in a
/// store with a long history) is skipped.
macro_rules! select_approvals {
    ($where:literal) => {
        concat!(
            "SELECT rowid, ",
            approval_columns!(),
            ", CASE WHEN version = 0 THEN '[]' ELSE \
             (SELECT json_group_array(json_object('user', user_id, 'decision', decision, 'at', at, 'reason', reason)) \
             FROM (SELECT * FROM votes v WHERE v.approval_id = pending_approvals.id ORDER BY at, user_id)) END AS votes \
             FROM pending_approvals ",
            $where
        )
    };
}

/// An approval's row and votes into the domain type.
fn approval_with_votes(row: &SqliteRow) -> sqlx::Result<Approval> {
    let votes = super::decode_votes(row.try_get("votes")?)?;
    approval_from_row(row, votes)
}

async fn load_approval(
    conn: &mut sqlx::SqliteConnection,
    id: ApprovalId,
) -> sqlx::Result<Option<Approval>> {
    let Some(row) = sqlx::query(select_approvals!("WHERE id = $1"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    approval_with_votes(&row).map(Some)
}

fn entry_from_row(row: &SqliteRow) -> sqlx::Result<audit::Entry> {
    Ok(audit::Entry {
        seq: row.try_get("seq")?,
        approval_id: row
            .try_get::<Option<&str>, _>("approval_id")?
            .map(parse_id)
            .transpose()?,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        at: parse_ts(row.try_get("at")?)?,
        data: parse_json(row.try_get("data")?)?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

mod reads;
mod requests;
mod tx;

pub(crate) use reads::SqliteReads;
pub(crate) use tx::SqliteTx;
