//! A fresh PostgreSQL database per bench: `signoff_bench_<random>`, created through the
//! admin URL in `SIGNOFF_BENCH_POSTGRES_URL` and dropped afterwards.

use std::future::Future;

use anyhow::{Context, Result, bail};
use sqlx::Connection;

use crate::POSTGRES_ENV;

/// Runs `run(url)` in a fresh database and drops it afterwards, even if `run` fails or
/// panics.
pub async fn with_fresh_database<T, Fut>(admin: &str, run: impl FnOnce(String) -> Fut) -> Result<T>
where
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let name = format!("signoff_bench_{:016x}", rand::random::<u64>());
    let url = database_url(admin, &name).context(POSTGRES_ENV)?;
    admin_sql(admin, &format!("CREATE DATABASE {name}")).await?;
    let outcome = tokio::spawn(run(url)).await;
    let dropped = admin_sql(
        admin,
        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
    )
    .await;
    let report = match outcome {
        Ok(report) => report?,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => bail!("the PostgreSQL bench was cancelled: {join}"),
    };
    dropped.with_context(|| format!("drop database {name}"))?;
    Ok(report)
}

/// Runs one statement on the admin database. `sql` only ever holds names we generated.
async fn admin_sql(admin: &str, sql: &str) -> Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .with_context(|| format!("connect to {POSTGRES_ENV}"))?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .with_context(|| format!("run `{sql}`"))?;
    conn.close().await.context("close the admin connection")?;
    Ok(())
}

/// The admin URL with its database name replaced by `name` (query string kept).
fn database_url(admin: &str, name: &str) -> Result<String> {
    let (base, query) = admin.split_once('?').unwrap_or((admin, ""));
    let authority = base.find("://").context("URL has no scheme")? + 3;
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |at| authority + at);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    Ok(format!("{}/{name}{query}", &base[..path]))
}
