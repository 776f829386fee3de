//! The reader connections of both backends. sqlx's pool pings every connection handed
//! back to it (and, by default, every one it hands out): a round trip to the server,
//! or a hand-off to SQLite's worker thread, for each read on top of the query itself.
//! This pool hands a connection back only after its query finished, and drops it
//! otherwise (an error that may have broken it, or a read cancelled mid-query, which
//! leaves the protocol or the statement in an unknown state). A connection idle for a
//! while may have been closed by the server (a restart): it is pinged before it
//! serves again. With a fence (SQLite), a read answers only once every commit it may
//! have seen is durable (`store::durable`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tokio::sync::{Semaphore, SemaphorePermit};

/// A connection idle this long is pinged before it serves a read.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);
/// How long a read waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct ReadPool<C: Connection> {
    options: C::Options,
    /// Connections not in use, with when each was last handed back.
    idle: Mutex<Vec<(C, Instant)>>,
    /// One permit per connection that may exist.
    permits: Semaphore,
    /// The writer's fence, on a backend whose commits are visible before they are
    /// durable.
    fence: Option<std::sync::Arc<crate::store::durable::Fence>>,
}

impl<C: Connection> ReadPool<C> {
    pub(crate) fn new(options: C::Options, size: usize) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::with_capacity(size)),
            permits: Semaphore::new(size),
            fence: None,
        }
    }

    /// Holds each read's answer back until what it may have seen is durable.
    pub(crate) fn fenced(mut self, fence: std::sync::Arc<crate::store::durable::Fence>) -> Self {
        self.fence = Some(fence);
        self
    }

    /// The writer's fence, if reads are held back by one.
    pub(crate) fn fence(&self) -> Option<&std::sync::Arc<crate::store::durable::Fence>> {
        self.fence.as_ref()
    }

    /// Waits, after a read, until every commit it may have seen is durable.
    pub(crate) async fn settle(&self) -> sqlx::Result<()> {
        match &self.fence {
            Some(fence) => Ok(fence.settle().await?),
            None => Ok(()),
        }
    }

    /// A connection for one read: an idle one (pinged first if it idled long), or a
    /// new one when none is idle.
    pub(crate) async fn acquire(&self) -> sqlx::Result<ReadConn<'_, C>> {
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        loop {
            let next = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some((mut conn, since)) = next else {
                let conn = C::connect_with(&self.options).await?;
                return Ok(ReadConn::new(self, conn, permit));
            };
            if since.elapsed() < PING_IDLE_AFTER || conn.ping().await.is_ok() {
                return Ok(ReadConn::new(self, conn, permit));
            }
            // Dead: dropped here, and the next idle one (or a new one) is tried.
        }
    }

    fn give_back(&self, conn: C) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((conn, Instant::now()));
    }
}

/// A connection lent for one read. Call [`ReadConn::finish`] with the read's result;
/// dropped without it (the read was cancelled), the connection is closed.
pub(crate) struct ReadConn<'a, C: Connection> {
    pool: &'a ReadPool<C>,
    conn: Option<C>,
    _permit: SemaphorePermit<'a>,
}

impl<'a, C: Connection> ReadConn<'a, C> {
    fn new(pool: &'a ReadPool<C>, conn: C, permit: SemaphorePermit<'a>) -> Self {
        Self {
            pool,
            conn: Some(conn),
            _permit: permit,
        }
    }

    pub(crate) fn conn(&mut self) -> &mut C {
        self.conn
            .as_mut()
            .expect("a ReadConn holds its connection until finished")
    }

    /// Hands the connection back unless `result` says it may be broken, and returns
    /// `result`. An error the server answered (a constraint, a bad value) leaves the
    /// connection usable; any other error closes it.
    pub(crate) fn finish<T>(mut self, result: sqlx::Result<T>) -> sqlx::Result<T> {
        let usable = match &result {
            Ok(_) => true,
            Err(error) => matches!(
                error,
                sqlx::Error::Database(_)
                    | sqlx::Error::RowNotFound
                    | sqlx::Error::ColumnDecode { .. }
            ),
        };
        if let (true, Some(conn)) = (usable, self.conn.take()) {
            self.pool.give_back(conn);
        }
        result
    }
}

/// Evaluates `$read` (a query future on the connection `$conn`) on a connection from
/// `$self.pool` (a [`ReadPool`]), hands the connection back unless the read broke
/// it, and answers once what it read is durable ([`ReadPool::settle`]).
macro_rules! on_conn {
    ($self:ident, |$conn:ident| $read:expr) => {{
        let mut lent = $self.pool.acquire().await?;
        let $conn = lent.conn();
        let result = $read.await;
        let read = lent.finish(result)?;
        $self.pool.settle().await?;
        read
    }};
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgConnection};
    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

    use super::*;

    /// A pool on the test server, or None (skipped) without `SIGNOFF_TEST_POSTGRES_URL`.
    fn pg_pool(size: usize) -> Option<ReadPool<PgConnection>> {
        let Ok(url) = std::env::var("SIGNOFF_TEST_POSTGRES_URL") else {
            eprintln!("skipped: SIGNOFF_TEST_POSTGRES_URL is not set");
            return None;
        };
        Some(ReadPool::new(
            PgConnectOptions::from_str(&url).unwrap(),
            size,
        ))
    }

    async fn backend_pid(pool: &ReadPool<PgConnection>) -> i32 {
        let mut lent = pool.acquire().await.unwrap();
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(lent.conn())
            .await;
        lent.finish(pid).unwrap()
    }

    #[tokio::test]
    async fn postgres_a_finished_read_hands_its_connection_back() {
        let Some(pool) = pg_pool(4) else { return };
        let first = backend_pid(&pool).await;
        assert_eq!(backend_pid(&pool).await, first, "the same connection again");
        // An error the server answered leaves the connection usable.
        let mut lent = pool.acquire().await.unwrap();
        let failed = sqlx::query("SELECT 1 / 0").execute(lent.conn()).await;
        assert!(matches!(lent.finish(failed), Err(sqlx::Error::Database(_))));
        assert_eq!(backend_pid(&pool).await, first);
    }

    #[tokio::test]
    async fn postgres_a_read_cancelled_midway_closes_its_connection() {
        let Some(pool) = pg_pool(1) else { return };
        let first = backend_pid(&pool).await;
        let slow = async {
            let mut lent = pool.acquire().await.unwrap();
            let slept = sqlx::query("SELECT pg_sleep(5)").execute(lent.conn()).await;
            lent.finish(slept)
        };
        let cancelled = tokio::time::timeout(Duration::from_millis(200), slow).await;
        assert!(cancelled.is_err(), "the read was cancelled");
        let next = backend_pid(&pool).await;
        assert_ne!(next, first, "a new connection, not the one left mid-query");
    }

    #[tokio::test]
    async fn postgres_reads_wait_for_a_free_connection_beyond_the_size() {
        let Some(pool) = pg_pool(2) else { return };
        let one = pool.acquire().await.unwrap();
        let two = pool.acquire().await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(200), pool.acquire()).await;
        assert!(third.is_err(), "no third connection while two are lent");
        drop(one); // unfinished: closed, and its place is free again
        let mut third = pool.acquire().await.unwrap();
        let one_more = sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(third.conn())
            .await;
        assert_eq!(third.finish(one_more).unwrap(), 1);
        drop(two);
    }

    /// A pool on a new SQLite file in `dir`.
    fn sqlite_pool(dir: &tempfile::TempDir, size: usize) -> ReadPool<SqliteConnection> {
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("reads.db"))
            .create_if_missing(true);
        ReadPool::new(options, size)
    }

    /// Marks the connection it is lent (a table only that connection sees) and says
    /// whether it was marked before.
    async fn marked_before(pool: &ReadPool<SqliteConnection>) -> bool {
        let mut lent = pool.acquire().await.unwrap();
        let marked = sqlx::query("CREATE TEMP TABLE marker (x)")
            .execute(lent.conn())
            .await;
        match lent.finish(marked) {
            Ok(_) => false,
            Err(sqlx::Error::Database(error)) if error.message().contains("already exists") => true,
            Err(error) => panic!("unexpected error: {error}"),
        }
    }

    #[tokio::test]
    async fn sqlite_a_finished_read_hands_its_connection_back_even_after_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let pool = sqlite_pool(&dir, 4);
        assert!(!marked_before(&pool).await, "a new connection");
        // The second mark fails (an error SQLite answered): the connection stays.
        assert!(marked_before(&pool).await, "the same connection again");
        assert!(marked_before(&pool).await, "still the same one");
    }

    #[tokio::test]
    async fn sqlite_a_read_cancelled_midway_closes_its_connection() {
        let dir = tempfile::tempdir().unwrap();
        let pool = sqlite_pool(&dir, 1);
        assert!(!marked_before(&pool).await);
        // Rows without end: only a cancel stops it.
        let endless = async {
            let mut lent = pool.acquire().await.unwrap();
            let rows = sqlx::query(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT x FROM n",
            )
            .execute(lent.conn())
            .await;
            lent.finish(rows)
        };
        let cancelled = tokio::time::timeout(Duration::from_millis(100), endless).await;
        assert!(cancelled.is_err(), "the read was cancelled");
        assert!(
            !marked_before(&pool).await,
            "a new connection, not the one left mid-statement"
        );
    }
}
