//! PostgreSQL reads made once per request, coalesced (see `store::coalesce`): a status
//! get's approval with its link, and a message update's approval with its messages and
//! batch. Each statement reads its batch's keys at once; under load the batch shares
//! the statement's fixed cost (the round trip, the protocol's messages, the executor's
//! start on both sides of the connection), which is most of a one-row read's.
//!
//! A click's read is not coalesced: measured, clicks were 12-15 % slower with it (the
//! read is on the click's path to the writer, and waiting to share a statement
//! lengthened it more than sharing saved).

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::tx::KEPT_PLANS;
use super::{ReadPool, WithMessages, approval_with_votes, decode_messages, readable};
use crate::approval::{Approval, ApprovalId};
use crate::store::coalesce::Coalescer;

/// Statements of one kind at most at once.
const SLOTS: usize = 4;
/// Keys at most in one statement.
const MOST: usize = 32;

/// The coalesced reads, on connections of their own (see [`Coalesced::spawn`]); cheap
/// to clone.
#[derive(Clone)]
pub(crate) struct Coalesced {
    pub(super) linked: Coalescer<ApprovalId, (Approval, Option<String>)>,
    pub(super) with_messages: Coalescer<ApprovalId, WithMessages>,
}

/// A coalescer whose statements run `$load` (a batch's keys on a connection) on a
/// connection of `$pool`.
macro_rules! on_pool {
    ($pool:expr, $load:path) => {{
        let pool = $pool.clone();
        Coalescer::spawn(SLOTS, MOST, move |keys| {
            let pool = pool.clone();
            async move {
                let mut lent = pool.acquire().await?;
                let read = $load(lent.conn(), keys).await;
                Ok(lent.finish(read)?)
            }
        })
    }};
}

/// A statement that reads the approvals of the keys `$keys` (a `unnest(…)` of the
/// bound arrays, as `k`, the approval's id as `key_id`) with `$extra` columns: each
/// looked up on its own through the primary key, behind a `LIMIT 1`. That keeps the
/// plan on the key's index from a freshly migrated database on, where a join or an
/// `= ANY` would keep a plan that scans the table (see `Coalesced::spawn`).
macro_rules! per_key {
    ($keys:literal, $extra:expr) => {
        concat!(
            "SELECT a.* FROM ",
            $keys,
            " CROSS JOIN LATERAL (",
            select_approvals!(@ $extra, "WHERE id = k.key_id LIMIT 1"),
            ") AS a"
        )
    };
}

/// A status get's statement: [`load_linked`].
const LINKED: &str = per_key!(
    "unnest($1::uuid[]) AS k(key_id)",
    concat!(", ", main_link_of!("pending_approvals.id"), " AS beside")
);

/// A message update's statement: [`load_with_messages`].
const WITH_MESSAGES: &str = per_key!(
    "unnest($1::uuid[]) AS k(key_id)",
    concat!(
        ", (SELECT json_agg(json_build_object(",
        message_object_fields!(),
        ") ORDER BY created_at, channel) FROM slack_messages \
           WHERE approval_id = pending_approvals.id)::text AS messages, \
         ARRAY(SELECT approval_id FROM slack_batch_members WHERE leader_id = \
           (SELECT leader_id FROM slack_batch_members WHERE approval_id = pending_approvals.id) \
           ORDER BY position) AS batch"
    )
);

impl Coalesced {
    /// Starts the coalescers' tasks (on the current runtime), on connections of their
    /// own made with `options`.
    ///
    /// Those connections keep one plan per statement (`plan_cache_mode`). Left to
    /// itself PostgreSQL plans a statement whose array has a known length anew on
    /// every call: its estimate for the actual keys is always below the kept plan's,
    /// which assumes ten. That planning costs about as much as the read (measured: a
    /// click's reads then cost PostgreSQL more than one statement per click did).
    /// Each statement here looks its keys up through a primary key, whatever their
    /// number, so the kept plan is the one it would choose anyway.
    pub(crate) fn spawn(options: &PgConnectOptions) -> Self {
        let options = options.clone().options([KEPT_PLANS]);
        // A connection for each slot of the two kinds.
        let pool = Arc::new(ReadPool::new(options, 2 * SLOTS));
        Self {
            linked: on_pool!(pool, load_linked),
            with_messages: on_pool!(pool, load_with_messages),
        }
    }
}

/// Runs `sql` (a [`per_key!`] statement whose `$1` is the ids) and answers each
/// approval found, by id, with what `decode` makes of it and its row.
async fn by_id<V>(
    conn: &mut PgConnection,
    sql: &'static str,
    ids: Vec<ApprovalId>,
    decode: impl Fn(Approval, &PgRow) -> sqlx::Result<V>,
) -> sqlx::Result<HashMap<ApprovalId, V>> {
    let ids: Vec<Uuid> = ids.into_iter().map(|id| id.0).collect();
    let rows = sqlx::query(sql).bind(ids).fetch_all(&mut *conn).await?;
    let decoded = rows.iter().filter_map(readable(|row| {
        let approval = approval_with_votes(row)?;
        Ok((approval.id, decode(approval, row)?))
    }));
    Ok(decoded.collect())
}

/// The approvals of `ids` that exist, each with its main channel post's permalink.
async fn load_linked(
    conn: &mut PgConnection,
    ids: Vec<ApprovalId>,
) -> sqlx::Result<HashMap<ApprovalId, (Approval, Option<String>)>> {
    by_id(conn, LINKED, ids, |approval, row| {
        Ok((approval, row.try_get("beside")?))
    })
    .await
}

/// The approvals of `ids` that exist, each with its messages and the members of the
/// batch it is in.
async fn load_with_messages(
    conn: &mut PgConnection,
    ids: Vec<ApprovalId>,
) -> sqlx::Result<HashMap<ApprovalId, WithMessages>> {
    by_id(conn, WITH_MESSAGES, ids, |approval, row| {
        let batch: Vec<Uuid> = row.try_get("batch")?;
        Ok(WithMessages {
            messages: decode_messages(approval.id, row.try_get("messages")?)?,
            batch: batch.into_iter().map(ApprovalId).collect(),
            approval,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::Connection;

    use super::*;

    /// Each statement keeps the plan it gets on a freshly migrated database, where
    /// nothing has been analyzed: that plan must look each key up through an index,
    /// or every read would scan the tables as they grow. The writer's check of the
    /// messages votes were clicked on is held to the same.
    #[tokio::test]
    async fn each_statement_keeps_a_plan_on_the_keys_from_a_fresh_database() {
        let Ok(admin) = std::env::var("SIGNOFF_TEST_POSTGRES_URL") else {
            eprintln!("skipped: SIGNOFF_TEST_POSTGRES_URL is not set");
            return;
        };
        let name = format!("signoff_unit_plans_{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.unwrap();
        let create = format!("CREATE DATABASE {name}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(&admin).unwrap().database(&name);
        let mut fresh = PgConnection::connect_with(&options).await.unwrap();
        super::super::MIGRATOR.run(&mut fresh).await.unwrap();
        let kept = options.options([KEPT_PLANS]);
        let mut kept = PgConnection::connect_with(&kept).await.unwrap();
        let one_key = "(ARRAY[gen_random_uuid()])";
        let one_click = r#"(ARRAY[gen_random_uuid()], '{"k": [["C1", "1.2", 0]]}')"#;
        // The writer's read with its check of the messages votes were clicked on keeps
        // its plan the same way: that check must read the messages' key.
        let statements = [
            ("linked", LINKED, one_key, "pending_approvals"),
            ("with_messages", WITH_MESSAGES, one_key, "pending_approvals"),
            (
                "shown",
                super::super::tx::LOAD_SHOWN,
                one_click,
                "slack_messages",
            ),
        ];
        for (statement, sql, arguments, table) in statements {
            let prepare = format!("PREPARE {statement} AS {sql}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(prepare))
                .execute(&mut kept)
                .await
                .unwrap();
            let explain = format!("EXPLAIN EXECUTE {statement}{arguments}");
            let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
                .fetch_all(&mut kept)
                .await
                .unwrap();
            let plan = plan.join("\n");
            assert!(
                plan.contains(&format!("Scan using {table}_pkey")),
                "{statement}: {plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{statement}: {plan}");
        }
        drop((fresh, kept));
        let drop = format!("DROP DATABASE {name} WITH (FORCE)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
