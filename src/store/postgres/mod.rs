//! The PostgreSQL backend: the shared `pending_approvals` table (see DESIGN.md), native
//! types (UUID, JSONB, TIMESTAMPTZ), row locks for decisions, and the audit head row
//! locked until commit so replicas append to one chain in turn.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{Connection, PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::backend::{Reads, Tx};
use super::{
    HealthCounts, QUEUED_WITHIN, QueuedPosts, Result, StatusChange, StoreError, TokenInfo,
    WithMessages, decode, decode_messages, due_jobs, found_at, leased, posted_messages, sql,
};
use crate::approval::{Approval, ApprovalId, Routing, Vote};
use crate::audit;
use crate::audit::checkpoint::Checkpoint;
use crate::jobs::{self, DueJobs, MessageKey, NewJob, PostedMessage};

use crate::store::Schema;
use crate::store::read_pool::ReadPool;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// NOTIFY channel for status changes (payload `id:status`), heard by every replica.
const CHANGES_CHANNEL: &str = "signoff_changes";
/// NOTIFY channel of the intake trigger (payload: the new row's id).
const INTAKE_CHANNEL: &str = "signoff_intake";

/// Listens for other replicas' decisions (waking long-polls here) and for rows
/// inserted straight into the shared table (waking the scheduler). Reconnects after
/// a lost connection; the notices sent meanwhile are gone, so each (re)connection
/// moves `missed` (waiters and event streams read again) and wakes the scheduler
/// (whose sweep covers the rows inserted meanwhile).
pub(crate) async fn listen(
    url: String,
    changes: tokio::sync::broadcast::Sender<StatusChange>,
    wakeup: std::sync::Arc<tokio::sync::Notify>,
    hearing: tokio::sync::watch::Sender<bool>,
    missed: tokio::sync::watch::Sender<u64>,
) {
    let heard_again = || {
        wakeup.notify_one();
        missed.send_modify(|times| *times += 1);
    };
    loop {
        let mut listener = match sqlx::postgres::PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(error) = listener.listen_all([CHANGES_CHANNEL, INTAKE_CHANNEL]).await {
            tracing::warn!(%error, "cannot LISTEN; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        hearing.send_replace(true);
        heard_again();
        loop {
            // `try_recv`, not `recv`: `recv` reconnects without a word, and what was
            // missed meanwhile would go unnoticed.
            match listener.try_recv().await {
                Ok(Some(notice)) if notice.channel() == INTAKE_CHANNEL => wakeup.notify_one(),
                Ok(Some(notice)) => {
                    if let Some(change) = parse_change(notice.payload()) {
                        let _ = changes.send(change);
                    }
                }
                // Lost, and connected and listening again already.
                Ok(None) => {
                    tracing::warn!("LISTEN connection lost; listening again");
                    heard_again();
                }
                Err(error) => {
                    tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                    hearing.send_replace(false);
                    break;
                }
            }
        }
    }
}

/// A change notice's payload, `id:status`.
fn parse_change(payload: &str) -> Option<StatusChange> {
    let (id, status) = payload.split_once(':')?;
    Some(StatusChange {
        id: id.parse().ok()?,
        status: status.parse().ok()?,
        after: None,
    })
}

/// Reader connections at most, besides those of the coalesced reads (`coalesced`).
const READERS: usize = 16;

/// The setting that tells migration 0008's insert trigger a row comes from signoff,
/// not from another program writing the shared table (whose rows start pending and
/// unclassified, whatever they say).
pub const WRITER_SETTING: (&str, &str) = ("signoff.writer", "on");

/// Opens the database, its schema as `schema` says; the writer tries for
/// `learn_within` to learn whether a commit whose reply was lost committed
/// (`lost_commit`).
pub(crate) async fn open(
    url: &str,
    schema: Schema,
    learn_within: Duration,
) -> Result<(PgReads, PgTx)> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| {
            StoreError::Invalid(format!(
                "bad PostgreSQL URL {:?}: {error}",
                super::redact(url)
            ))
        })?
        .options([WRITER_SETTING]);
    // One plain connection first: an unreachable server or a bad password fails at
    // once with its own message, instead of after the pool's acquire timeout.
    sqlx::PgConnection::connect_with(&options)
        .await?
        .close()
        .await?;
    let migrating = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await?;
    match schema {
        Schema::Migrate => super::schema::migrated(MIGRATOR.run(&migrating).await)?,
        Schema::AsFound => {
            let applied = sqlx::query_as(super::schema::APPLIED)
                .fetch_all(&migrating)
                .await;
            super::schema::check(super::schema::applied_or_none(applied)?, &MIGRATOR)?;
        }
    }
    migrating.close().await;
    // Connected on first use, i.e. by the writer on its own thread and runtime (see
    // `writer::spawn`), so that its socket wakes that runtime, not the shared one.
    let writer = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(options.clone().options([tx::KEPT_PLANS]));
    Ok((
        PgReads {
            coalesced: coalesced::Coalesced::spawn(&options),
            pool: std::sync::Arc::new(ReadPool::new(options, READERS)),
        },
        PgTx {
            pool: writer,
            conn: None,
            locations: HashMap::new(),
            timers: Default::default(),
            deferred: deferred::Deferred::new(CHANGES_CHANNEL),
            head: None,
            begun: false,
            unplanned_in: tx::REPLAN_EVERY,
            process: None,
            abandoned: None,
            learn_within,
        },
    ))
}

fn approval_from_row(row: &PgRow, votes: Vec<Vote>) -> sqlx::Result<Approval> {
    let routing: Option<Value> = row.try_get("routing")?;
    Ok(Approval {
        id: ApprovalId(row.try_get("id")?),
        tool_name: row.try_get("tool_name")?,
        server: row.try_get("server")?,
        parameters: row.try_get("parameters")?,
        original_parameters: row.try_get("original_parameters")?,
        risk_tier: decode(row.try_get("risk_tier")?)?,
        status: decode(row.try_get("status")?)?,
        requested_by: row.try_get("requested_by")?,
        token_name: row.try_get("token_name")?,
        summary: row.try_get("summary")?,
        context: row.try_get("context")?,
        decided_by: row.try_get("decided_by")?,
        decided_via: row.try_get("decided_via")?,
        decision_at: row.try_get("decision_at")?,
        reason: row.try_get("reason")?,
        required_approvals: row.try_get::<i32, _>("required_approvals")?.max(1) as u32,
        votes,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        executed_at: row.try_get("executed_at")?,
        idempotency_key: row.try_get("idempotency_key")?,
        callback_url: row.try_get("callback_url")?,
        routing: match routing {
            Some(value) => serde_json::from_value(value)
                .map_err(|error| sqlx::Error::Decode(Box::new(error)))?,
            None => Routing::default(),
        },
        version: row.try_get("version")?,
    })
}

/// With a read that locks (`FOR UPDATE`): the approval's version as the statement's
/// snapshot has it, beside the row it locked. They differ when another writer (a
/// replica, `signoff decide`) committed a change to the row while the statement waited
/// for its lock: PostgreSQL then returns that newest row, but everything else the
/// statement reads (the votes, the messages) as its snapshot had it, from before the
/// change, so the statement is read again (see `PgTx::locked`), the rows now ours.
macro_rules! seen_version {
    () => {
        ", (SELECT s.version FROM pending_approvals s WHERE s.id = pending_approvals.id) \
         AS seen_version"
    };
}

/// `SELECT` of approvals with their votes as a JSON array (one statement), then `$where`;
/// `located` adds each row version's place as `loc` (see `PgTx::locations`) and its
/// version as the statement's snapshot saw it (`seen_version!`), for a read that locks.
/// An approval still at version 0 has had no event accepted, so it has no votes: its
/// lookup is skipped.
macro_rules! select_approvals {
    ($where:literal) => {
        select_approvals!(@ "", $where)
    };
    (located $where:literal) => {
        select_approvals!(@ concat!(", ctid::text AS loc", seen_version!()), $where)
    };
    (@ $extra:expr, $where:literal) => {
        concat!(
            "SELECT ",
            approval_columns!(),
            $extra,
            ", CASE WHEN version = 0 THEN '[]' ELSE COALESCE((SELECT json_agg(json_build_object('user', \
             user_id, 'decision', decision, 'at', at, 'reason', reason) ORDER BY at, user_id) \
             FROM votes v WHERE v.approval_id = pending_approvals.id), '[]'::json)::text END AS votes \
             FROM pending_approvals ",
            $where
        )
    };
}

/// `decode` made to pass over a row it cannot read, with a warning naming the row: in a
/// read of many approvals, one that another program wrote wrong (a number beyond
/// `f64` in its parameters, say) is left out, not every other reader failed with it.
fn readable<T>(decode: impl Fn(&PgRow) -> sqlx::Result<T>) -> impl Fn(&PgRow) -> Option<T> {
    move |row| match decode(row) {
        Ok(value) => Some(value),
        Err(error) => {
            let id: Option<Uuid> = row.try_get("id").ok();
            tracing::warn!(?id, %error, "a row of pending_approvals cannot be read: passed over");
            None
        }
    }
}

/// An approval's row and votes into the domain type.
fn approval_with_votes(row: &PgRow) -> sqlx::Result<Approval> {
    let votes = super::decode_votes(row.try_get("votes")?)?;
    approval_from_row(row, votes)
}

async fn load_approval(
    conn: &mut sqlx::PgConnection,
    id: ApprovalId,
) -> sqlx::Result<Option<Approval>> {
    let Some(row) = sqlx::query(select_approvals!("WHERE id = $1"))
        .bind(id.0)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    approval_with_votes(&row).map(Some)
}

/// The approval and whether `message` is one of its messages, in one statement.
async fn load_shown_in(
    conn: &mut sqlx::PgConnection,
    id: ApprovalId,
    message: &MessageKey,
) -> sqlx::Result<Option<(Approval, bool)>> {
    let Some(row) = sqlx::query(select_approvals!(@
        concat!(", ", shown_in_2_3_of_1!(), " AS beside"),
        "WHERE id = $1"))
    .bind(id.0)
    .bind(&message.channel)
    .bind(&message.ts)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    Ok(Some((approval_with_votes(&row)?, row.try_get("beside")?)))
}

/// A job row's `payload` column.
fn payload(row: &PgRow) -> sqlx::Result<Value> {
    row.try_get("payload")
}

/// An audit event as stored. Its `data` must be the canonical text signoff wrote (the
/// column is TEXT, not jsonb, so that the text is kept to compare): the hash covers
/// what the text reads as, so another text that reads the same (a key given twice,
/// which the hash reads by its last and whoever reads the text by its first; a number
/// too long to read exactly) would verify while showing something else to whoever
/// reads the table. `at` and `approval_id` are typed columns, with one form each.
fn entry_from_row(row: &PgRow) -> sqlx::Result<audit::Entry> {
    let seq: i64 = row.try_get("seq")?;
    let text: String = row.try_get("data")?;
    let data: Value =
        serde_json::from_str(&text).map_err(|error| sqlx::Error::Decode(Box::new(error)))?;
    if crate::canonical::to_string(&data) != text {
        return Err(sqlx::Error::Decode(
            format!("audit event {seq}: its data is not as signoff wrote it (altered)").into(),
        ));
    }
    Ok(audit::Entry {
        seq,
        approval_id: row
            .try_get::<Option<Uuid>, _>("approval_id")?
            .map(ApprovalId),
        kind: row.try_get("kind")?,
        actor: row.try_get("actor")?,
        at: row.try_get("at")?,
        data,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

fn checkpoint_from_row(row: &PgRow) -> sqlx::Result<Checkpoint> {
    Ok(Checkpoint {
        n: row.try_get("n")?,
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
        at: row.try_get("at")?,
        signature: row.try_get("signature")?,
    })
}

/// Writes the arguments of an `unnest(…)` into the query builder `$q`: each value (a
/// column of the statement's rows, as a `Vec`) bound as one array and cast to its SQL
/// type, so the statement's text is the same for any number of rows.
macro_rules! unnest_arrays {
    ($q:expr, $($values:expr => $sql_type:literal),+ $(,)?) => {{
        let mut arrays = $q.separated(", ");
        $(
            arrays.push_bind($values);
            arrays.push_unseparated(concat!("::", $sql_type));
        )+
    }};
}

mod batches;
mod coalesced;
mod deferred;
mod lost_commit;
mod outbox;
mod reads;
mod requests;
mod tx;
mod watermark;

pub(crate) use lost_commit::LEARN_WITHIN;
pub(crate) use reads::PgReads;
pub(crate) use tx::PgTx;
