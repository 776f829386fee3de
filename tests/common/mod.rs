//! Test support shared by the integration test binaries: databases on both backends.
//!
//! PostgreSQL tests read `SIGNOFF_TEST_POSTGRES_URL` (an admin URL such as
//! `postgres://postgres@127.0.0.1:5432/postgres`) and create a fresh database per
//! test. Without it they print that they are skipped — unless
//! `SIGNOFF_REQUIRE_POSTGRES` is set (as `.ci/run` does), when they fail instead.
#![allow(dead_code)]

pub mod app;
pub mod deps;
pub mod fake_slack;
pub mod fake_socket;
pub mod fuzz;
pub mod pg_cut;
pub mod receiver;
pub mod server;
pub mod slack;
pub mod tls;

pub use server::http;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;

/// A database for one test; the SQLite file lives as long as this value.
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// The same PostgreSQL database, connected to as `role` (the tests' server trusts
    /// local connections).
    pub fn as_role(&self, role: &str) -> TestDb {
        let (scheme, rest) = self.url.split_once("://").expect("a database URL");
        let (_user, place) = rest.split_once('@').expect("a URL with a user");
        TestDb {
            url: format!("{scheme}://{role}@{place}"),
            backend: self.backend,
            _dir: None,
        }
    }

    /// The same PostgreSQL database, in sessions that say they are signoff's own
    /// (`signoff.writer = on`): what migration 0020 lets change any column.
    pub fn as_signoff_writer(&self) -> TestDb {
        let joint = if self.url.contains('?') { '&' } else { '?' };
        TestDb {
            url: format!("{}{joint}options=-c%20signoff.writer%3Don", self.url),
            backend: self.backend,
            _dir: None,
        }
    }
}

pub fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("signoff.db").display());
    TestDb {
        url,
        backend: "sqlite",
        _dir: Some(dir),
    }
}

/// A fresh, empty PostgreSQL database, or `None` (skipped) when none is configured.
pub async fn postgres(test: &str) -> Option<TestDb> {
    let Ok(admin) = std::env::var("SIGNOFF_TEST_POSTGRES_URL") else {
        if std::env::var_os("SIGNOFF_REQUIRE_POSTGRES").is_some() {
            panic!("SIGNOFF_REQUIRE_POSTGRES is set but SIGNOFF_TEST_POSTGRES_URL is not");
        }
        eprintln!("skipped {test} on postgres: SIGNOFF_TEST_POSTGRES_URL is not set");
        return None;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let name = format!("signoff_test_{now}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("connect to SIGNOFF_TEST_POSTGRES_URL");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    drop_old_databases(&mut conn, now).await;
    if let Some(marker) = std::env::var_os("SIGNOFF_POSTGRES_MARKER") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(marker)
            .expect("marker file");
        writeln!(file, "{test}").expect("write marker");
    }
    Some(TestDb {
        url: replace_database(&admin, &name),
        backend: "postgres",
        _dir: None,
    })
}

/// Test databases are left behind by design (a test may fail mid-way); the ones older
/// than an hour are dropped here so they never pile up.
async fn drop_old_databases(conn: &mut sqlx::PgConnection, now: u64) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database WHERE datname LIKE 'signoff\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap_or_default();
    for name in names {
        let created = name.split('_').nth(2).and_then(|ts| ts.parse::<u64>().ok());
        if created.is_some_and(|created| created + 3600 < now) {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut *conn)
            .await;
        }
    }
}

fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{}", &base[..host_end], name);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Runs SQL straight on the database (as another program or an attacker would).
pub async fn raw_execute(db: &TestDb, sql: &str) -> Result<u64, String> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    let result = if db.backend == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .map(|r| r.rows_affected())
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql)
            .execute(&mut conn)
            .await
            .map(|r| r.rows_affected())
    };
    result.map_err(|error| error.to_string())
}

/// Makes the database refuse a statement that `event`s (`INSERT`, `UPDATE` or `DELETE`) a row
/// of `table` for which `when` holds (over `NEW` and `OLD`, written alike in both
/// dialects), raising `message`: a trigger plays a statement the database refuses.
/// [`allow`] takes it away.
pub async fn refuse(db: &TestDb, event: &str, table: &str, when: &str, message: &str) {
    let sql = if db.backend == "sqlite" {
        vec![format!(
            "CREATE TRIGGER refuse BEFORE {event} ON {table} WHEN {when} \
             BEGIN SELECT RAISE(ABORT, '{message}'); END"
        )]
    } else {
        vec![
            format!(
                "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF {when} THEN RAISE EXCEPTION '{message}'; END IF; RETURN COALESCE(NEW, OLD); END $$"
            ),
            format!(
                "CREATE TRIGGER refuse BEFORE {event} ON {table} FOR EACH ROW EXECUTE FUNCTION refuse()"
            ),
        ]
    };
    for sql in sql {
        raw_execute(db, &sql).await.unwrap();
    }
}

/// Takes away what [`refuse`] set on `table`.
pub async fn allow(db: &TestDb, table: &str) {
    let sql = if db.backend == "sqlite" {
        "DROP TRIGGER refuse".to_owned()
    } else {
        format!("DROP TRIGGER refuse ON {table}")
    };
    raw_execute(db, &sql).await.unwrap();
}

/// A time as an SQL literal of the backend's column type.
pub fn sql_time(db: &TestDb, at: chrono::DateTime<chrono::Utc>) -> String {
    if db.backend == "sqlite" {
        format!("'{}'", signoff::audit::format_time(&at))
    } else {
        format!("'{}'::timestamptz", at.to_rfc3339())
    }
}

/// A count straight from the database.
pub async fn raw_count(db: &TestDb, sql: &str) -> i64 {
    raw_value(db, sql).await
}

/// One value straight from the database, of a type both stores read alike.
pub async fn raw_value<T>(db: &TestDb, sql: &str) -> T
where
    T: Send + Unpin,
    T: sqlx::Type<sqlx::Sqlite> + for<'r> sqlx::Decode<'r, sqlx::Sqlite>,
    T: sqlx::Type<sqlx::Postgres> + for<'r> sqlx::Decode<'r, sqlx::Postgres>,
{
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if db.backend == "sqlite" {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// One value straight from a PostgreSQL database.
pub async fn raw_scalar(db: &TestDb, sql: &str) -> uuid::Uuid {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Runs one scenario as two tests, `sqlite` and `postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::common::sqlite()).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(db) = $crate::common::postgres(stringify!($name)).await {
                        super::$name(db).await;
                    }
                }
            }
        )*
    };
}
