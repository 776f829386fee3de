//! A `COMMIT` whose reply was lost: the connection broke after the commit was sent, and
//! the server may have committed it before the break or not. Answering such a batch as
//! failed when it committed tells the caller of an execute that it did not happen while
//! the audit log says it did, and running it again applies it twice (a second execute
//! is refused as already executed, a call spent at once is spent again); so what
//! became of it is learned first ([`Tx::committed_after_all`]), on a connection of its
//! own. The writer's old server process may still be running the commit: it is ended
//! (`pg_terminate_backend`, which a role may do to its own sessions, and which does
//! nothing to a process already gone), and once it is gone its transaction has
//! committed or rolled back, nothing in between. Then the batch committed if and only
//! if the last audit event it appended is in the log (every batch that changes an
//! approval or a token appends one, and no other transaction can write the same event:
//! its hash covers the chain before it).
//!
//! A server process whose connection the writer gave up on while its transaction may
//! still be open (a lost commit whose outcome could not be learned in time, a
//! `ROLLBACK` that failed on a broken connection) is ended too, by the next `begin`,
//! before it opens a transaction on a new connection: the server notices a client
//! that vanished without a word only hours later, and meanwhile the old transaction
//! holds the locks the next one needs (the audit head's), so every write would wait.
//!
//! [`Tx::committed_after_all`]: crate::store::backend::Tx::committed_after_all

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgSeverity};
use sqlx::{Connection, PgConnection};

use super::PgTx;

/// How long the writer tries, unless told otherwise, to learn whether a commit whose
/// reply was lost committed (a restarting server has this long to come back) before it
/// gives up and fails the batch's operations. Every write waits meanwhile.
pub(crate) const LEARN_WITHIN: Duration = Duration::from_secs(10);

/// How often it looks again whether the old server process is gone, and how long it
/// first waits after a failed attempt (the server not reachable).
const POLL: Duration = Duration::from_millis(20);

/// The longest wait between attempts while the server cannot be reached: the waits
/// double from [`POLL`] up to it, so that a server coming back is not met by fifty
/// connection attempts a second.
const RETRY_AT_MOST: Duration = Duration::from_millis(500);

/// The wait after a failed attempt that followed a wait of `last`.
fn next_wait(last: Duration) -> Duration {
    (last * 2).min(RETRY_AT_MOST)
}

/// The server process behind a connection: its pid, and when it started, which tells
/// it from a later process given the same pid.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServerProcess {
    pid: i32,
    started: DateTime<Utc>,
}

impl ServerProcess {
    /// The process behind `conn`: one statement, when the writer connects.
    pub(super) async fn of(conn: &mut PgConnection) -> sqlx::Result<Self> {
        let (pid, started) = sqlx::query_as(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()",
        )
        .fetch_one(conn)
        .await?;
        Ok(ServerProcess { pid, started })
    }
}

/// Whether `error`, from a commit, leaves unknown whether it committed: any error but
/// one the server answered, since the reply may be what was lost, and a fatal one too
/// (the server ends the session, as when it shuts down or the session is terminated),
/// which may come after the `COMMIT` of `COMMIT; BEGIN` has committed.
fn outcome_unknown(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else {
        return true;
    };
    error
        .try_downcast_ref::<PgDatabaseError>()
        .is_some_and(|error| matches!(error.severity(), PgSeverity::Fatal | PgSeverity::Panic))
}

impl PgTx {
    /// [`Tx::committed_after_all`] on PostgreSQL (see the module's comment), trying
    /// for `learn_within` at most.
    ///
    /// [`Tx::committed_after_all`]: crate::store::backend::Tx::committed_after_all
    pub(super) async fn learn_commit(
        &mut self,
        error: &sqlx::Error,
        appended: Option<(i64, &str)>,
    ) -> sqlx::Result<Option<bool>> {
        self.deferred.discard();
        if !outcome_unknown(error) {
            return Ok(None);
        }
        // Broken, or in a state nobody knows: never used again.
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
        let Some(process) = self.process.take() else {
            return Err(sqlx::Error::Protocol(
                "the writer's server process is not known".into(),
            ));
        };
        let options = self.pool.connect_options();
        let mut failed = None;
        let looked = tokio::time::timeout(self.learn_within, async {
            let mut wait = POLL;
            loop {
                match look(&options, &process, appended).await {
                    Ok(committed) => return committed,
                    Err(error) => failed = Some(error),
                }
                tokio::time::sleep(wait).await;
                wait = next_wait(wait);
            }
        })
        .await;
        match looked {
            Ok(committed) => Ok(committed),
            Err(_) => {
                // It may still be there, its transaction open: the next `begin` ends it.
                self.abandoned = Some(process);
                Err(failed.unwrap_or_else(|| timed_out("not learned", self.learn_within)))
            }
        }
    }

    /// Ends the server process the writer last abandoned, if any, from `conn` (a new
    /// connection, before its first transaction), and waits until it is gone, for
    /// `learn_within` at most; it stays to be ended on failure.
    pub(super) async fn end_abandoned(&mut self, conn: &mut PgConnection) -> sqlx::Result<()> {
        let Some(process) = self.abandoned else {
            return Ok(());
        };
        tokio::time::timeout(self.learn_within, end(conn, &process))
            .await
            .map_err(|_| {
                timed_out(
                    "the writer's abandoned server process not ended",
                    self.learn_within,
                )
            })??;
        self.abandoned = None;
        Ok(())
    }
}

fn timed_out(what: &str, within: Duration) -> sqlx::Error {
    let words = format!("{what} within {within:?}");
    sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, words))
}

/// Ends the server `process` (nothing, if it is gone already), from `conn`, and waits
/// until it is gone: then its transaction has committed or rolled back.
async fn end(conn: &mut PgConnection, process: &ServerProcess) -> sqlx::Result<()> {
    let &ServerProcess { pid, started } = process;
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE pid = $1 AND backend_start = $2",
    )
    .bind(pid)
    .bind(started)
    .execute(&mut *conn)
    .await?;
    // Each statement its own transaction, so each reads the processes afresh.
    loop {
        let running: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2)",
        )
        .bind(pid)
        .bind(started)
        .fetch_one(&mut *conn)
        .await?;
        if !running {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One attempt, on a new connection: ends the old server `process`, waits until it is
/// gone, and answers whether the audit event `appended` (`(seq, hash)`) is in the log
/// (`None` with none to look for).
async fn look(
    options: &PgConnectOptions,
    process: &ServerProcess,
    appended: Option<(i64, &str)>,
) -> sqlx::Result<Option<bool>> {
    let mut conn = PgConnection::connect_with(options).await?;
    end(&mut conn, process).await?;
    let Some((seq, hash)) = appended else {
        let _ = conn.close().await;
        return Ok(None);
    };
    let committed = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq = $1 AND hash = $2)",
    )
    .bind(seq)
    .bind(hash)
    .fetch_one(&mut conn)
    .await?;
    // Nothing more is asked of it: an error closing it changes nothing learned.
    let _ = conn.close().await;
    Ok(Some(committed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_waits_between_attempts_double_from_the_poll_to_half_a_second() {
        let waits: Vec<u128> = std::iter::successors(Some(POLL), |w| Some(next_wait(*w)))
            .take(8)
            .map(|w| w.as_millis())
            .collect();
        assert_eq!(waits, [20, 40, 80, 160, 320, 500, 500, 500]);
    }
}
