//! Statements of a writer transaction whose answers nobody reads (the batch's votes,
//! jobs and audit events, the messages' rendered versions, the audit head and watermark
//! updates, the status notices),
//! kept back and sent with the next statement as data-modifying `WITH` clauses of that
//! one statement. Each statement is a round trip to the server, which under load costs
//! more than the statement itself: a batch of clicks is five round trips instead of ten
//! (`BEGIN`, the read, the update with the audit head's locking read, the votes, jobs
//! and audit events with the head's update and the notices, `COMMIT`), the PostgreSQL
//! counterpart of `store::sqlite::deferred`.
//!
//! Every clause of one statement sees the tables as they were before it, and the order
//! in which its clauses run is not defined. So a kept-back statement must not touch a
//! row that another kept-back statement touches, and a read sent with them
//! ([`Deferred::run_with`]) must not read what they write: every statement that is not
//! kept back first runs what is (`PgTx::conn`), and only reads of other tables ride
//! along. Parameters are numbered across the whole statement by the builder
//! (`push_bind`); one bind per column (`unnest` over arrays) keeps the statement's text,
//! and so sqlx's prepared statement, the same for any number of rows.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder};

/// The statements kept back, in order, and the notices to send with them.
pub(super) struct Deferred {
    query: QueryBuilder<Postgres>,
    clauses: usize,
    notices: Vec<String>,
    channel: &'static str,
}

impl Deferred {
    /// Nothing kept back; notices go to `channel`.
    pub(super) fn new(channel: &'static str) -> Self {
        Self {
            query: QueryBuilder::new(""),
            clauses: 0,
            notices: Vec::new(),
            channel,
        }
    }

    /// Keeps back one data-modifying statement (`INSERT`, `UPDATE` or `DELETE`, no
    /// `RETURNING`), which `write` pushes with its binds.
    pub(super) fn push(&mut self, write: impl FnOnce(&mut QueryBuilder<Postgres>)) {
        let n = self.clauses;
        self.with(format_args!("w{n}"), write);
    }

    /// Adds a clause `name AS (…)` that the statement [`Deferred::run_with`] is about to
    /// send reads (a locking read, or a write whose rows it answers); the same rules
    /// hold for it as for the statement.
    pub(super) fn with(
        &mut self,
        name: impl std::fmt::Display,
        body: impl FnOnce(&mut QueryBuilder<Postgres>),
    ) {
        self.query
            .push(if self.clauses == 0 { "WITH " } else { ", " });
        self.query.push(format_args!("{name} AS ("));
        body(&mut self.query);
        self.query.push(")");
        self.clauses += 1;
    }

    /// Keeps back `NOTIFY`s (sent, as any `NOTIFY`, only if the transaction commits).
    pub(super) fn notify(&mut self, notices: impl IntoIterator<Item = String>) {
        self.notices.extend(notices);
    }

    /// Runs what is kept back, if anything is, as one statement.
    pub(super) async fn flush(&mut self, conn: &mut PgConnection) -> sqlx::Result<()> {
        if self.clauses == 0 && self.notices.is_empty() {
            return Ok(());
        }
        if self.notices.is_empty() {
            self.query.push(" SELECT 1");
        } else {
            let notices = std::mem::take(&mut self.notices);
            self.query.push(" SELECT count(pg_notify(");
            self.query.push_bind(self.channel);
            self.query.push(", notice)) FROM unnest(");
            self.query.push_bind(notices);
            self.query.push("::text[]) AS notice");
        }
        let outcome = self.query.build().execute(conn).await;
        self.discard();
        outcome.map(drop)
    }

    /// Runs what is kept back and then the statement `main` pushes (with its binds),
    /// which must not touch a row that anything kept back writes, as one statement
    /// (notices, if any, are sent first on their own); the rows `main` answers.
    pub(super) async fn run_with(
        &mut self,
        conn: &mut PgConnection,
        main: impl FnOnce(&mut QueryBuilder<Postgres>),
    ) -> sqlx::Result<Vec<PgRow>> {
        if !self.notices.is_empty() {
            self.flush(conn).await?;
        }
        if self.clauses > 0 {
            self.query.push(" ");
        }
        main(&mut self.query);
        let outcome = self.query.build().fetch_all(conn).await;
        self.discard();
        outcome
    }

    /// Forgets what is kept back (the transaction is rolled back).
    pub(super) fn discard(&mut self) {
        self.query.reset();
        self.clauses = 0;
        self.notices.clear();
    }
}
