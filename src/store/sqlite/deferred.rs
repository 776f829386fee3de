//! Statements of a writer transaction whose answers nobody reads (the batch's jobs,
//! votes and audit events, the audit head, the approvals' updates and the messages'
//! rendered versions), kept back and sent
//! with the next statement that is read, or with the `COMMIT`, as one multi-statement
//! query. Each query is a hand-off to sqlx's SQLite worker thread and back, which on
//! this kind of machine costs more than the statement itself. `BEGIN IMMEDIATE` too
//! waits for the transaction's first query (`SqliteTx::opening`). An auto-approved
//! create that is spent at once (with the audit head remembered, see `SqliteTx::head`)
//! so takes two: `BEGIN` with the insert (which looks for an open request with the
//! same key itself), and the rest (the spend's update among it) with the `COMMIT`.
//!
//! Only positional `?` parameters may be pushed (sqlx numbers `$N` from the start of
//! the whole query, not of its statement). A statement that fails fails the query
//! where it stands: what ran before it is rolled back with the transaction.

use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

/// The statements kept back, in order.
pub(super) struct Deferred {
    query: QueryBuilder<Sqlite>,
    statements: usize,
}

impl Default for Deferred {
    fn default() -> Self {
        Self {
            query: QueryBuilder::new(""),
            statements: 0,
        }
    }
}

impl Deferred {
    /// Where the next statement is written: its SQL with `push`, its values with
    /// `push_bind` (or `push_values`).
    pub(super) fn statement(&mut self) -> &mut QueryBuilder<Sqlite> {
        if self.statements > 0 {
            self.query.push(";\n");
        }
        self.statements += 1;
        &mut self.query
    }

    /// Runs what is kept back, then `last` (a statement without parameters, such as
    /// `COMMIT`), as one query; nothing is kept back afterwards, whatever the outcome.
    pub(super) async fn run(
        &mut self,
        conn: &mut SqliteConnection,
        last: Option<&'static str>,
    ) -> sqlx::Result<()> {
        if self.statements == 0 {
            if let Some(last) = last {
                sqlx::raw_sql(last).execute(conn).await?;
            }
            return Ok(());
        }
        if let Some(last) = last {
            self.statement().push(last);
        }
        let outcome = self.query.build().execute(conn).await;
        self.discard();
        outcome.map(drop)
    }

    /// Forgets what is kept back (the transaction is rolled back).
    pub(super) fn discard(&mut self) {
        self.query.reset();
        self.statements = 0;
    }
}
