//! The SQLite backend: one file in WAL mode, a pool of readers and one writer
//! connection. The writer commits with `synchronous = NORMAL` and the WAL is synced to
//! disk beside it (`sync`); nothing a commit wrote is answered, announced or read
//! before that sync ended (`store::durable`).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::backend::{Reads, Tx};
use super::{
    HealthCounts, QUEUED_WITHIN, QueuedPosts, Result, StoreError, TokenInfo, WithMessages, decode,
    decode_messages, due_jobs, found_at, leased, posted_messages, pow2_chunks, schema, sql,
};
use crate::approval::{Approval, ApprovalId, Routing, Vote};
use crate::audit;
use crate::audit::checkpoint::Checkpoint;
use crate::jobs::{self, DueJobs, MessageKey, NewJob, PostedMessage};
use crate::store::Schema;
use crate::store::durable::Fence;
use crate::store::read_pool::ReadPool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The file a `sqlite:` URL names (`None` for any other URL, or one SQLite cannot
/// read).
pub fn file_of(url: &str) -> Option<std::path::PathBuf> {
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// Opens the file, its schema as `schema` says; `changes` hears what other processes
/// commit to it (see `watch`); the writer's commits are synced by `log` (the WAL file
/// when `None`).
pub(crate) async fn open(
    url: &str,
    schema: Schema,
    changes: tokio::sync::broadcast::Sender<crate::store::StatusChange>,
    log: Option<Box<dyn SyncLog>>,
) -> Result<(SqliteReads, SqliteTx)> {
    open_with(url, schema, changes, WalLimits::default(), log).await
}

/// [`open`], its WAL kept within `wal` (see [`wal`]) and synced by `log` (the WAL file
/// when `None`).
async fn open_with(
    url: &str,
    schema: Schema,
    changes: tokio::sync::broadcast::Sender<crate::store::StatusChange>,
    wal: WalLimits,
    log: Option<Box<dyn SyncLog>>,
) -> Result<(SqliteReads, SqliteTx)> {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return Err(StoreError::Invalid(
            "in-memory SQLite is not supported (readers and the writer need one file): use sqlite://FILE".into(),
        ));
    }
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| StoreError::Invalid(format!("bad SQLite URL {url:?}: {error}")))?
        // A file taken as found is one that exists (`signoff` checks first, to say so).
        .create_if_missing(schema == Schema::Migrate)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL for the migrations and any write outside the writer; the writer's
        // transactions commit with NORMAL and are synced beside it (`SqliteTx::begin`).
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
    // When the WAL starts over, the writer cuts it back (see `wal`).
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(
            options
                .clone()
                .pragma("wal_autocheckpoint", "0")
                .pragma("journal_size_limit", wal.size_limit.to_string()),
        )
        .await?;
    match schema {
        Schema::Migrate => schema::migrated(MIGRATOR.run(&writer).await)?,
        Schema::AsFound => {
            let applied = sqlx::query_as(schema::APPLIED).fetch_all(&writer).await;
            schema::check(schema::applied_or_none(applied)?, &MIGRATOR)?;
        }
    }
    // The WAL exists from the first connection in WAL mode until the last one closes;
    // the migrations' commits are on disk (FULL).
    let fence = std::sync::Arc::new(Fence::default());
    let log = match log {
        Some(log) => log,
        None => Box::new(sync::WalFile::open(options.get_filename()).map_err(sqlx::Error::Io)?),
    };
    // Closes the fence, stopping the sync thread, should the rest of the opening fail.
    let closing = Closing(fence.clone());
    sync::spawn(fence.clone(), log).map_err(sqlx::Error::Io)?;
    // Each connection has its own page cache (2 MiB by default). Readers mostly need
    // the B-tree's upper levels cached (leaves come from the OS page cache), so they
    // get less, which keeps memory flat however large the table grows.
    let readers =
        ReadPool::new(options.clone().pragma("cache_size", "-1024"), READERS).fenced(fence.clone());
    // `data_version` is per connection: the watcher keeps its one.
    let watcher = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone().pragma("cache_size", "-256"))
        .await?;
    // Other processes' changes are heard from the moment the store is open (as
    // `Store::hearing` says), not from the watcher's first look.
    let local = changes.subscribe();
    let head = watch::head(&watcher).await?;
    // A checkpoint copies WAL frames to the file without the page cache.
    let checkpointer = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.pragma("cache_size", "-256"))
        .await?;
    let checkpointer = wal::checkpointer(checkpointer, wal.every);
    Ok((
        SqliteReads {
            pool: std::sync::Arc::new(readers),
        },
        SqliteTx {
            pool: writer,
            conn: None,
            _checkpointer: Checkpointer(tokio::spawn(checkpointer)),
            _watcher: Checkpointer(tokio::spawn(watch::watch(
                watcher,
                changes,
                local,
                fence.clone(),
                head,
            ))),
            fence: closing,
            rowids: HashMap::new(),
            deferred: Default::default(),
            head: None,
            staged_head: None,
            unopened: false,
        },
    ))
}

/// Connections for reads (the writer and the checkpointer have one each).
const READERS: usize = 8;

/// Stops a background task of the file (the checkpointer, the change watcher) with
/// the writer that owns it.
pub(crate) struct Checkpointer(tokio::task::JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The writer's fence, closed (its sync thread stopped) with the writer.
pub(crate) struct Closing(std::sync::Arc<Fence>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close();
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

/// JSON stored as text (a column, or a whole `select_approvals!` answer).
fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> sqlx::Result<T> {
    serde_json::from_str(text).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// A job row's `payload` column.
fn payload(row: &SqliteRow) -> sqlx::Result<serde_json::Value> {
    parse_json(row.try_get("payload")?)
}

fn parse_id(text: &str) -> sqlx::Result<ApprovalId> {
    text.parse()
        .map_err(|error: uuid::Error| sqlx::Error::Decode(Box::new(error)))
}

/// [`parse_id`] over a column of ids.
fn parse_ids(texts: &[String]) -> sqlx::Result<Vec<ApprovalId>> {
    texts.iter().map(|id| parse_id(id)).collect()
}

/// An approval as [`select_approvals!`] answers it: one element of its JSON array, in
/// column order. Times and the JSON columns stay text here and are parsed as the rest
/// of the store parses them.
#[derive(serde::Deserialize)]
struct ApprovalRow {
    rowid: i64,
    id: String,
    tool_name: String,
    parameters: String,
    risk_tier: String,
    status: String,
    requested_by: Option<String>,
    decided_by: Option<String>,
    decision_at: Option<String>,
    expires_at: String,
    created_at: String,
    summary: Option<String>,
    context: Option<String>,
    reason: Option<String>,
    original_parameters: Option<String>,
    token_name: Option<String>,
    idempotency_key: Option<String>,
    callback_url: Option<String>,
    required_approvals: i64,
    routing: Option<String>,
    executed_at: Option<String>,
    version: i64,
    server: Option<String>,
    decided_via: Option<String>,
    votes: Vec<Vote>,
}

impl ApprovalRow {
    fn into_approval(self) -> sqlx::Result<Approval> {
        Ok(Approval {
            id: parse_id(&self.id)?,
            tool_name: self.tool_name,
            server: self.server,
            parameters: parse_json(&self.parameters)?,
            original_parameters: self
                .original_parameters
                .as_deref()
                .map(parse_json)
                .transpose()?,
            risk_tier: decode(&self.risk_tier)?,
            status: decode(&self.status)?,
            requested_by: self.requested_by,
            token_name: self.token_name,
            summary: self.summary,
            context: self.context,
            decided_by: self.decided_by,
            decided_via: self.decided_via,
            decision_at: parse_opt_ts(self.decision_at)?,
            reason: self.reason,
            required_approvals: self.required_approvals.clamp(1, i64::from(u32::MAX)) as u32,
            votes: self.votes,
            expires_at: parse_ts(&self.expires_at)?,
            created_at: parse_ts(&self.created_at)?,
            executed_at: parse_opt_ts(self.executed_at)?,
            idempotency_key: self.idempotency_key,
            callback_url: self.callback_url,
            routing: match self.routing {
                Some(text) => parse_json(&text)?,
                None => Routing::default(),
            },
            version: self.version,
        })
    }
}

/// `SELECT` of the approvals matching `$where` (with their rowids and their votes) as
/// one row: a JSON array of arrays in [`ApprovalRow`]'s order. One value instead of a
/// row per approval: sqlx copies every column of every row out of SQLite and hands
/// each row across threads on its own, which for the 1,000 approvals of a scheduler
/// pass cost more than SQLite's own reads. An approval still at version 0 has had no
/// event accepted, so it has no votes: its lookup (a random page of the votes index in
/// a store with a long history) is skipped.
macro_rules! select_approvals {
    ($where:literal) => {
        concat!(
            "SELECT json_group_array(json_array(rid, ",
            approval_columns!(),
            ", json(votes))) FROM (SELECT rowid AS rid, ",
            approval_columns!(),
            ", CASE WHEN version = 0 THEN '[]' ELSE \
             (SELECT json_group_array(json_object('user', user_id, 'decision', decision, 'at', at, 'reason', reason)) \
             FROM (SELECT * FROM votes v WHERE v.approval_id = pending_approvals.id ORDER BY at, user_id)) END AS votes \
             FROM pending_approvals ",
            $where,
            ")"
        )
    };
}

/// Runs a [`select_approvals!`] query: the approvals, each with its rowid.
async fn fetch_approvals<'q>(
    conn: &mut sqlx::SqliteConnection,
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
) -> sqlx::Result<Vec<(i64, Approval)>> {
    let json: String = query.fetch_one(conn).await?.try_get(0)?;
    parse_approvals(&json)
}

/// A [`select_approvals!`] answer: the approvals, each with its rowid.
fn parse_approvals(json: &str) -> sqlx::Result<Vec<(i64, Approval)>> {
    let rows: Vec<ApprovalRow> = parse_json(json)?;
    rows.into_iter()
        .map(|row| Ok((row.rowid, row.into_approval()?)))
        .collect()
}

async fn load_approval(
    conn: &mut sqlx::SqliteConnection,
    id: ApprovalId,
) -> sqlx::Result<Option<Approval>> {
    let query = sqlx::query(select_approvals!("WHERE id = $1")).bind(id.to_string());
    Ok(fetch_approvals(conn, query)
        .await?
        .pop()
        .map(|(_, approval)| approval))
}

/// The approval and its main channel post's permalink, in one statement.
async fn load_linked(
    conn: &mut sqlx::SqliteConnection,
    id: ApprovalId,
) -> sqlx::Result<Option<(Approval, Option<String>)>> {
    let query = sqlx::query(concat!(
        "SELECT (",
        select_approvals!("WHERE id = $1"),
        "), ",
        main_link_of!("$1")
    ));
    load_beside(conn, query.bind(id.to_string())).await
}

/// The approval and whether `message` is one of its messages, in one statement.
async fn load_shown_in(
    conn: &mut sqlx::SqliteConnection,
    id: ApprovalId,
    message: &MessageKey,
) -> sqlx::Result<Option<(Approval, bool)>> {
    let query = sqlx::query(concat!(
        "SELECT (",
        select_approvals!("WHERE id = $1"),
        "), ",
        shown_in_2_3_of_1!()
    ));
    let query = query
        .bind(id.to_string())
        .bind(message.channel.clone())
        .bind(message.ts.clone());
    load_beside(conn, query).await
}

/// The approval `query` selects (as its first column, [`select_approvals!`]) and the
/// value of its second column.
async fn load_beside<'q, X>(
    conn: &mut sqlx::SqliteConnection,
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
) -> sqlx::Result<Option<(Approval, X)>>
where
    X: for<'r> sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    let row = query.fetch_one(conn).await?;
    let beside: X = row.try_get(1)?;
    let approval = parse_approvals(row.try_get(0)?)?.pop();
    Ok(approval.map(|(_, approval)| (approval, beside)))
}

/// An audit event as stored. Its text must be the form signoff wrote: the hash covers
/// what the text reads as, so another text that reads the same (`data` with a key
/// twice, which SQLite's `json_extract` reads by its first and a hash by its last; a
/// time with another offset; an id in capitals) would verify while showing something
/// else to whoever reads the table.
fn entry_from_row(row: &SqliteRow) -> sqlx::Result<audit::Entry> {
    let seq: i64 = row.try_get("seq")?;
    let stored = |column: &str, text: &str, written: String| match written == text {
        true => Ok(()),
        false => Err(sqlx::Error::Decode(
            format!("audit event {seq}: its {column} is not as signoff wrote it (altered)").into(),
        )),
    };
    let approval_id: Option<&str> = row.try_get("approval_id")?;
    let approval_id = approval_id
        .map(|text| {
            let id = parse_id(text)?;
            stored("approval_id", text, id.to_string()).map(|()| id)
        })
        .transpose()?;
    let at_text: &str = row.try_get("at")?;
    let at = parse_ts(at_text)?;
    stored("at", at_text, ts(&at))?;
    let data_text: &str = row.try_get("data")?;
    let data = parse_json(data_text)?;
    stored("data", data_text, crate::canonical::to_string(&data))?;
    Ok(audit::Entry {
        seq,
        approval_id,
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        at,
        data,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn checkpoint_from_row(row: &SqliteRow) -> sqlx::Result<Checkpoint> {
    Ok(Checkpoint {
        n: row.try_get("n")?,
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
        at: parse_ts(row.try_get("at")?)?,
        signature: row.try_get("signature")?,
    })
}

mod batches;
mod deferred;
mod outbox;
mod reads;
mod requests;
mod sync;
mod tx;
mod wal;
mod watch;

use wal::WalLimits;

pub(crate) use reads::SqliteReads;
pub(crate) use sync::SyncLog;
pub(crate) use tx::SqliteTx;
