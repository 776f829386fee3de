//! The bench's own database connection, beside the store's: the bulk load, finding
//! ids, and checking what a pass left behind. Nothing here is timed as part of a pass.

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, SubsecRound, Utc};
use sqlx::Connection;
use sqlx::sqlite::SqliteConnectOptions;

use signoff::audit::format_time;

use crate::report::secs;

/// The loaded approvals' tool (unknown to the built-in policy, so `medium`).
const TOOL: &str = "delete_customer_records";
/// What signoff writes for a request no policy rule routes anywhere.
const ROUTING: &str = r#"{"channel":null,"approvers":[],"rule":null,"remind_after_secs":null,"remind_every_secs":null,"escalate_after_secs":null,"escalation_channel":null}"#;
/// The first loaded approval expires this far ahead of the load, the others one
/// second apart after it.
const EXPIRES_AFTER_SECS: i64 = 30 * 86_400;

/// How the loaded approvals' expiries relate to the order they were created in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Order {
    /// Expiry order is creation order, as when every request takes its rule's
    /// `expires_after`: approvals that fall due together were created together, so
    /// their rows share pages.
    Creation,
    /// Expiry order has nothing to do with creation order (every request its own
    /// `expires_in`): the approvals that fall due together are scattered over the
    /// table and its indexes, the worst case for a pass.
    Random,
}

impl Order {
    pub fn describe(self) -> &'static str {
        match self {
            Order::Creation => "expiring in creation order",
            Order::Random => "expiring in random order",
        }
    }
}

/// Row `rank` (parameters `{"rank": rank}`) expires `rank` seconds after
/// [`Loaded::base`]; the rows are inserted in order of rank, or in random order
/// (`ORDER BY` appended). Ids are random UUIDs and `params_sha256` random hex, as
/// real ones are.
const SQLITE_LOAD_APPROVALS: &str = "\
    WITH RECURSIVE n(rank, h) AS ( \
        SELECT 1, lower(hex(randomblob(16))) \
        UNION ALL SELECT rank + 1, lower(hex(randomblob(16))) FROM n WHERE rank < $1) \
    INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, status, expires_at, \
        created_at, params_sha256, token_name, required_approvals, routing, version) \
    SELECT substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-' \
           || substr('89ab', unicode(substr(h, 17, 1)) % 4 + 1, 1) || substr(h, 18, 3) || '-' \
           || substr(h, 21, 12), \
        $2, json_object('rank', rank), 'medium', 'pending', \
        strftime('%Y-%m-%dT%H:%M:%S', $3 + rank, 'unixepoch') || '.000000Z', \
        $4, lower(hex(randomblob(32))), 'bench', 1, $5, 0 \
    FROM n";

const POSTGRES_LOAD_APPROVALS: &str = "\
    INSERT INTO pending_approvals (id, tool_name, parameters, risk_tier, status, expires_at, \
        created_at, params_sha256, token_name, required_approvals, routing, version) \
    SELECT gen_random_uuid(), $2, jsonb_build_object('rank', rank), 'medium', 'pending', \
        $3 + rank * interval '1 second', $4, md5(random()::text) || md5(random()::text), \
        'bench', 1, $5::jsonb, 0 \
    FROM generate_series(1, $1::bigint) AS rank";

/// A connection of the bench's own.
pub enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

/// What the load wrote.
pub struct Loaded {
    /// Approval `rank` expires at `base + rank` seconds.
    pub base: DateTime<Utc>,
    pub took: Duration,
    pub detail: String,
}

impl Loaded {
    /// When the approval of expiry rank `rank` (1-based) expires.
    pub fn expiry(&self, rank: usize) -> DateTime<Utc> {
        self.base + chrono::Duration::seconds(rank as i64)
    }
}

impl Db {
    pub async fn connect(url: &str) -> Result<Db> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .context("parse the SQLite URL")?
                .busy_timeout(Duration::from_secs(30))
                // A large page cache for the bulk load, on this connection only.
                .pragma("cache_size", "-262144");
            let conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .context("open the bench's SQLite connection")?;
            Ok(Db::Sqlite(conn))
        } else {
            // The bench writes rows as signoff's writer would (see migration 0008).
            let options = sqlx::postgres::PgConnectOptions::from_str(url)
                .context("parse the PostgreSQL URL")?
                .options([signoff::store::POSTGRES_WRITER_SETTING]);
            let conn = sqlx::PgConnection::connect_with(&options)
                .await
                .context("open the bench's PostgreSQL connection")?;
            Ok(Db::Postgres(conn))
        }
    }

    pub async fn close(self) {
        let _ = match self {
            Db::Sqlite(conn) => conn.close().await,
            Db::Postgres(conn) => conn.close().await,
        };
    }

    /// `pending` pending approvals in one transaction.
    pub async fn load(&mut self, pending: usize, order: Order) -> Result<Loaded> {
        let now = Utc::now();
        let base = (now + chrono::Duration::seconds(EXPIRES_AFTER_SECS)).trunc_subsecs(0);
        let started = Instant::now();
        let detail = match self {
            Db::Sqlite(conn) => load_sqlite(conn, pending, order, base, now).await?,
            Db::Postgres(conn) => load_postgres(conn, pending, order, base, now).await?,
        };
        Ok(Loaded {
            base,
            took: started.elapsed(),
            detail,
        })
    }

    /// The ids of the still-pending approvals of these expiry ranks.
    pub async fn pending_ids(&mut self, loaded: &Loaded, ranks: &[usize]) -> Result<Vec<String>> {
        let expiries: Vec<DateTime<Utc>> = ranks.iter().map(|&rank| loaded.expiry(rank)).collect();
        let ids = match self {
            Db::Sqlite(conn) => {
                let expiries: Vec<String> = expiries.iter().map(format_time).collect();
                sqlx::query_scalar(
                    "SELECT id FROM pending_approvals WHERE status = 'pending' \
                     AND expires_at IN (SELECT value FROM json_each($1))",
                )
                .bind(serde_json::to_string(&expiries)?)
                .fetch_all(&mut *conn)
                .await?
            }
            Db::Postgres(conn) => {
                let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
                    "SELECT id FROM pending_approvals WHERE status = 'pending' \
                     AND expires_at = ANY($1)",
                )
                .bind(&expiries)
                .fetch_all(&mut *conn)
                .await?;
                ids.iter().map(ToString::to_string).collect()
            }
        };
        ensure!(
            ids.len() == ranks.len(),
            "found {} pending approvals for {} expiry ranks",
            ids.len(),
            ranks.len()
        );
        Ok(ids)
    }

    /// How many approvals are still pending, and how many of those expire at or before
    /// `now`. (The first condition repeats the SQLite open index's, so that both counts
    /// read that index only.)
    pub async fn pending_counts(&mut self, now: DateTime<Utc>) -> Result<(i64, i64)> {
        const SQL: &str = "SELECT \
            (SELECT COUNT(*) FROM pending_approvals \
             WHERE status IN ('pending', 'approved') AND status = 'pending'), \
            (SELECT COUNT(*) FROM pending_approvals \
             WHERE status IN ('pending', 'approved') AND status = 'pending' AND expires_at <= $1)";
        Ok(match self {
            Db::Sqlite(conn) => {
                sqlx::query_as(SQL)
                    .bind(format_time(&now))
                    .fetch_one(&mut *conn)
                    .await?
            }
            Db::Postgres(conn) => sqlx::query_as(SQL).bind(now).fetch_one(&mut *conn).await?,
        })
    }

    /// Commits a write that changes nothing a pass reads: what another program writing
    /// to the database between two passes does. On SQLite, any commit by another
    /// connection makes the writer drop its whole page cache at its next transaction.
    pub async fn foreign_write(&mut self) -> Result<()> {
        // The chain head row always exists, and setting it to itself changes nothing.
        const SQL: &str = "UPDATE audit_head SET seq = seq WHERE id = 1";
        let changed = match self {
            Db::Sqlite(conn) => sqlx::query(SQL).execute(&mut *conn).await?.rows_affected(),
            Db::Postgres(conn) => sqlx::query(SQL).execute(&mut *conn).await?.rows_affected(),
        };
        ensure!(changed == 1, "the audit chain head is missing");
        Ok(())
    }
}

/// `ORDER BY` for the insert: rows in rank order, or shuffled.
fn shuffle(order: Order) -> &'static str {
    match order {
        Order::Creation => "",
        Order::Random => " ORDER BY random()",
    }
}

/// The load on SQLite, in one transaction, then a WAL checkpoint: what it took.
async fn load_sqlite(
    conn: &mut sqlx::SqliteConnection,
    pending: usize,
    order: Order,
    base: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<String> {
    sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    let t = Instant::now();
    let sql = format!("{SQLITE_LOAD_APPROVALS}{}", shuffle(order));
    let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(pending as i64)
        .bind(TOOL)
        .bind(base.timestamp())
        .bind(format_time(&now))
        .bind(ROUTING)
        .execute(&mut *conn)
        .await
        .context("bulk-insert approvals")?
        .rows_affected();
    let approvals = t.elapsed();
    let t = Instant::now();
    sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
    sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await
        .context("checkpoint the WAL")?;
    let commit = t.elapsed();
    ensure!(
        inserted == pending as u64,
        "loaded {inserted} approvals, expected {pending}"
    );
    Ok(format!(
        "one transaction, recursive CTE, {}: insert {}, commit + WAL checkpoint {}",
        order.describe(),
        secs(approvals),
        secs(commit)
    ))
}

/// The load on PostgreSQL, in one transaction, then what autovacuum does to tables
/// this size soon after such a load (planner statistics and the visibility map), and a
/// checkpoint, so the passes do not start inside the one the load's WAL set off.
async fn load_postgres(
    conn: &mut sqlx::PgConnection,
    pending: usize,
    order: Order,
    base: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<String> {
    let mut tx = conn.begin().await?;
    let t = Instant::now();
    let sql = format!("{POSTGRES_LOAD_APPROVALS}{}", shuffle(order));
    let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(pending as i64)
        .bind(TOOL)
        .bind(base)
        .bind(now)
        .bind(ROUTING)
        .execute(&mut *tx)
        .await
        .context("bulk-insert approvals")?
        .rows_affected();
    let approvals = t.elapsed();
    let t = Instant::now();
    tx.commit().await?;
    let commit = t.elapsed();
    ensure!(
        inserted == pending as u64,
        "loaded {inserted} approvals, expected {pending}"
    );
    let t = Instant::now();
    // Two statements: VACUUM cannot run inside the implicit transaction of a
    // multi-statement query.
    sqlx::raw_sql("VACUUM (ANALYZE) pending_approvals")
        .execute(&mut *conn)
        .await
        .context("VACUUM ANALYZE")?;
    sqlx::raw_sql("CHECKPOINT")
        .execute(&mut *conn)
        .await
        .context("CHECKPOINT")?;
    let vacuum = t.elapsed();
    Ok(format!(
        "one transaction, generate_series, {}: insert {}, commit {}; \
         then VACUUM ANALYZE and CHECKPOINT {}",
        order.describe(),
        secs(approvals),
        secs(commit),
        secs(vacuum)
    ))
}
