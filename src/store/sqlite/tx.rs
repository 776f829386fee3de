//! The SQLite writer connection: transaction control and the small statements the
//! generic writer (`store::writer`) is made of.

use super::deferred::Deferred;
use super::*;
use crate::approval::Status;

/// The writer's connection. Taken from a one-connection pool so a broken connection
/// is simply dropped and a fresh one opened on the next batch.
pub(crate) struct SqliteTx {
    pub(super) pool: SqlitePool,
    pub(super) conn: Option<PoolConnection<Sqlite>>,
    pub(super) _checkpointer: Checkpointer,
    /// The change watcher (`watch`), stopped with the writer too.
    pub(super) _watcher: Checkpointer,
    /// The rowid of every approval this transaction read, so its update seeks the
    /// table directly instead of through the id index (random ids: a random index
    /// page per row). Valid for one transaction only: cleared at `begin`.
    pub(super) rowids: HashMap<ApprovalId, i64>,
    /// Statements kept back until the next one whose answer is read (see [`Deferred`]).
    pub(super) deferred: Deferred,
    /// The audit chain's head as this writer's last commit left it, so a batch does
    /// not read it back. Forgotten on any rollback. If another process appended to the
    /// chain meanwhile (`signoff decide` writes through a writer of its own), the
    /// batch's first event collides with that process's `seq` (the primary key), the
    /// batch is rolled back, and its retry reads the head again.
    pub(super) head: Option<(i64, String)>,
    /// The head this transaction sets, remembered once it commits.
    pub(super) staged_head: Option<(i64, String)>,
    /// `BEGIN IMMEDIATE` is not sent yet: it goes with the transaction's first query
    /// (see [`SqliteTx::opening`]) instead of being a hand-off of its own.
    pub(super) unopened: bool,
    /// Numbers each commit, whose sync and answers follow it (`store::durable`).
    pub(super) fence: Closing,
}

impl SqliteTx {
    /// The connection for a statement whose answer is read: what is kept back runs
    /// first, so every statement sees the ones before it.
    pub(super) async fn conn(&mut self) -> sqlx::Result<&mut sqlx::SqliteConnection> {
        self.flush(None).await
    }

    /// Runs what is kept back, followed by `last` (see [`Deferred::run`]); the
    /// connection it ran on.
    async fn flush(
        &mut self,
        last: Option<&'static str>,
    ) -> sqlx::Result<&mut sqlx::SqliteConnection> {
        self.open_deferred();
        let conn = self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)?;
        self.deferred.run(conn, last).await?;
        Ok(conn)
    }

    /// Where a statement whose answer nobody reads is written, to run later.
    pub(super) fn defer(&mut self) -> &mut QueryBuilder<Sqlite> {
        self.open_deferred();
        self.deferred.statement()
    }

    /// Puts a `BEGIN IMMEDIATE` not sent yet first among the statements kept back.
    fn open_deferred(&mut self) {
        if std::mem::take(&mut self.unopened) {
            self.deferred.statement().push("BEGIN IMMEDIATE");
        }
    }

    /// What a query that may be the transaction's first starts with: `BEGIN
    /// IMMEDIATE` while it is not sent yet (the query then sends it, saving a hand-off
    /// to SQLite's worker), else nothing. The query must then come next, on
    /// [`SqliteTx::conn`]: what is kept back besides was sent by this call.
    pub(super) async fn opening(&mut self) -> sqlx::Result<&'static str> {
        if std::mem::take(&mut self.unopened) {
            return Ok("BEGIN IMMEDIATE;\n");
        }
        self.flush(None).await?;
        Ok("")
    }

    /// Runs a `select_approvals!` query; remembers the rowids of what it read.
    async fn approvals(
        &mut self,
        query: sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> sqlx::Result<Vec<Approval>> {
        let rows = fetch_approvals(self.conn().await?, query).await?;
        Ok(self.remember(rows))
    }

    /// The approvals read, their rowids remembered.
    fn remember(&mut self, rows: Vec<(i64, Approval)>) -> Vec<Approval> {
        let mut approvals = Vec::with_capacity(rows.len());
        for (rowid, approval) in rows {
            self.rowids.insert(approval.id, rowid);
            approvals.push(approval);
        }
        approvals
    }
}

impl Tx for SqliteTx {
    fn fence(&self) -> Option<std::sync::Arc<Fence>> {
        Some(self.fence.0.clone())
    }

    async fn begin(&mut self) -> sqlx::Result<()> {
        if self.conn.is_none() {
            let mut conn = self.pool.acquire().await?;
            // Its commits write the WAL without syncing it; the sync thread does, and
            // nothing is answered before (`store::durable`).
            sqlx::raw_sql("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
            self.conn = Some(conn);
        }
        self.rowids.clear();
        self.deferred.discard();
        self.staged_head = None;
        // Sent with the first query (IMMEDIATE takes the write lock before that query
        // reads anything, so a reader-side write, such as a token command, waits on
        // busy_timeout instead of failing the batch halfway).
        self.unopened = true;
        Ok(())
    }

    async fn commit(&mut self, _then_begin: bool) -> sqlx::Result<()> {
        // The next BEGIN goes with the next batch's first query anyway. Numbered
        // before it is sent: a reader that sees its rows finishes after this.
        let n = self.fence.0.committing();
        let committed = self.flush(Some("COMMIT")).await.map(|_| ());
        self.fence.0.returned(n);
        committed?;
        if let Some(head) = self.staged_head.take() {
            self.head = Some(head);
        }
        Ok(())
    }

    async fn rollback(&mut self) {
        self.deferred.discard();
        self.staged_head = None;
        self.head = None;
        if std::mem::take(&mut self.unopened) {
            return; // nothing was sent
        }
        let ok = match self.conn.as_deref_mut() {
            Some(conn) => sqlx::raw_sql("ROLLBACK").execute(conn).await.is_ok(),
            None => true,
        };
        if !ok && let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }

    async fn insert_approvals(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<HashSet<ApprovalId>> {
        self.insert_requests(rows).await
    }

    async fn find_existing(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<Vec<Option<ApprovalId>>> {
        self.find_requests(rows).await
    }

    async fn bind_joined_key(
        &mut self,
        token: &str,
        key: &str,
        approval: ApprovalId,
    ) -> sqlx::Result<ApprovalId> {
        self.bind_key(token, key, approval).await
    }

    async fn waiting(
        &mut self,
        token: &str,
        up_to: u32,
        now: DateTime<Utc>,
    ) -> sqlx::Result<(i64, bool)> {
        // The partial index holds pending rows only: the count never reads history.
        // A pending row past its expiry, which the expiry pass has not marked yet,
        // waits for nothing (as on PostgreSQL). Usually a create batch's first query.
        const WAITING: &str = "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM pending_approvals \
               INDEXED BY pending_approvals_waiting \
               WHERE token_name = $1 AND status = 'pending' AND expires_at > $3 LIMIT $2)), \
             EXISTS (SELECT 1 FROM throttles WHERE token_name = $1)";
        let mut query = QueryBuilder::<Sqlite>::new(self.opening().await?);
        query.push(WAITING);
        query
            .build_query_as()
            .bind(token)
            .bind(i64::from(up_to))
            .bind(ts(&now))
            .fetch_one(self.conn().await?)
            .await
    }

    async fn newest_waiting(
        &mut self,
        token: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Option<ApprovalId>> {
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM pending_approvals INDEXED BY pending_approvals_waiting \
             WHERE token_name = $1 AND status = 'pending' AND expires_at > $2 \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(token)
        .bind(ts(&now))
        .fetch_optional(self.conn().await?)
        .await?;
        id.as_deref().map(parse_id).transpose()
    }

    async fn throttled(
        &mut self,
        token: &str,
        channel: &str,
        now: DateTime<Utc>,
        refusals: i64,
    ) -> sqlx::Result<bool> {
        let refused: i64 = sqlx::query_scalar(sql::throttles::REFUSED)
            .bind(token)
            .bind(channel)
            .bind(ts(&now))
            .bind(refusals)
            .fetch_one(self.conn().await?)
            .await?;
        Ok(refused == refusals)
    }

    async fn unthrottled(&mut self, token: &str) -> sqlx::Result<()> {
        sqlx::query(sql::throttles::END)
            .bind(token)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    async fn load(&mut self, id: ApprovalId) -> sqlx::Result<Option<Approval>> {
        let query = sqlx::query(select_approvals!("WHERE id = $1")).bind(id.to_string());
        Ok(self.approvals(query).await?.pop())
    }

    async fn parameters_text(&mut self, id: ApprovalId) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT parameters FROM pending_approvals WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.conn().await?)
            .await
    }

    async fn update_approvals(&mut self, approvals: &[(&Approval, i64)]) -> sqlx::Result<u64> {
        // Every approval the writer changes was read (or inserted) in this transaction,
        // so its rowid is known; the id is compared too, as a guard. That read came
        // after `BEGIN IMMEDIATE` took the file's write lock, so no other connection
        // can have changed the row since: the version compared below always matches,
        // and the statement is kept back (sent with the next read or the `COMMIT`)
        // instead of being a round trip of its own whose count is known beforehand.
        let mut rows = Vec::with_capacity(approvals.len());
        for (approval, expected) in approvals {
            let Some(&rowid) = self.rowids.get(&approval.id) else {
                return Err(sqlx::Error::Protocol(format!(
                    "approval {} is written without having been read in this transaction",
                    approval.id
                )));
            };
            rows.push((rowid, approval, *expected));
        }
        // 12 binds per row; far below SQLite's variable limit.
        for chunk in pow2_chunks(&rows, 64) {
            let query = self.defer();
            query.push(
                "WITH v(rid, id, expected, parameters, status, decided_by, decision_at, reason, \
                 original_parameters, executed_at, version, decided_via) AS (",
            );
            query.push_values(chunk, |mut row, (rowid, a, expected)| {
                row.push_bind(*rowid)
                    .push_bind(a.id.to_string())
                    .push_bind(*expected)
                    .push_bind(crate::canonical::to_string(&a.parameters))
                    .push_bind(a.status.as_str())
                    .push_bind(a.decided_by.clone())
                    .push_bind(a.decision_at.as_ref().map(ts))
                    .push_bind(a.reason.clone())
                    .push_bind(
                        a.original_parameters
                            .as_ref()
                            .map(crate::canonical::to_string),
                    )
                    .push_bind(a.executed_at.as_ref().map(ts))
                    .push_bind(a.version)
                    .push_bind(a.decided_via.clone());
            });
            query.push(
                ") UPDATE pending_approvals SET parameters = v.parameters, status = v.status, \
                 decided_by = v.decided_by, decision_at = v.decision_at, reason = v.reason, \
                 original_parameters = v.original_parameters, executed_at = v.executed_at, \
                 version = v.version, decided_via = v.decided_via \
                 FROM v WHERE pending_approvals.rowid = v.rid AND pending_approvals.id = v.id \
                 AND pending_approvals.version = v.expected",
            );
        }
        // A batch writes each approval once (`Current::write`). A second write in this
        // transaction would compare a version the first one changed and match nothing,
        // unseen: it fails instead, as a write of a row not read does.
        for (approval, _) in approvals {
            self.rowids.remove(&approval.id);
        }
        Ok(approvals.len() as u64)
    }

    async fn insert_votes(&mut self, votes: &[(ApprovalId, Vote)]) -> sqlx::Result<()> {
        for chunk in pow2_chunks(votes, 128) {
            let query = self.defer();
            query.push("INSERT INTO votes (approval_id, user_id, decision, reason, at) ");
            query.push_values(chunk, |mut row, (id, vote)| {
                row.push_bind(id.to_string())
                    .push_bind(vote.user.clone())
                    .push_bind(vote.decision.as_str())
                    .push_bind(vote.reason.clone())
                    .push_bind(ts(&vote.at));
            });
        }
        Ok(())
    }

    async fn delete_vote(&mut self, id: ApprovalId, user: &str) -> sqlx::Result<()> {
        sqlx::query(sql::DELETE_VOTE)
            .bind(id.to_string())
            .bind(user)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    async fn load_many(&mut self, ids: &[ApprovalId]) -> sqlx::Result<Vec<Approval>> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let query = sqlx::query(select_approvals!(
            "WHERE id IN (SELECT value FROM json_each($1))"
        ))
        .bind(serde_json::to_string(&ids).unwrap_or_default());
        self.approvals(query).await
    }

    async fn load_many_shown(
        &mut self,
        ids: &[ApprovalId],
        pairs: &[(ApprovalId, &MessageKey)],
    ) -> sqlx::Result<(Vec<Approval>, Vec<bool>)> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let pairs_json: Vec<serde_json::Value> = pairs
            .iter()
            .map(|(id, message)| serde_json::json!([id.to_string(), message.channel, message.ts]))
            .collect();
        let row = sqlx::query(concat!(
            "SELECT (",
            select_approvals!("WHERE id IN (SELECT value FROM json_each($1))"),
            "), ",
            shown_at_json_2!()
        ))
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .bind(serde_json::Value::Array(pairs_json).to_string())
        .fetch_one(self.conn().await?)
        .await?;
        let approvals = parse_approvals(row.try_get(0)?)?;
        let found: Vec<i64> = parse_json(row.try_get(1)?)?;
        Ok((self.remember(approvals), found_at(pairs.len(), found)))
    }

    async fn adopt_approval(&mut self, a: &Approval) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::ADOPT)
            .bind(a.id.to_string())
            .bind(a.risk_tier.as_str())
            .bind(a.status.as_str())
            .bind(&a.decided_by)
            .bind(a.decision_at.as_ref().map(ts))
            .bind(&a.reason)
            .bind(&a.summary)
            .bind(i64::from(a.required_approvals))
            .bind(serde_json::to_string(&a.routing).unwrap_or_default())
            .bind(ts(&a.expires_at))
            .bind(a.version)
            .bind(jobs::first_nudge(a).as_ref().map(ts))
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn announce(&mut self, _changes: &[crate::store::StatusChange]) -> sqlx::Result<()> {
        // One process owns a SQLite file: the in-process broadcast is enough.
        Ok(())
    }

    async fn due_expiries(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<Approval>> {
        // One status at a time, each an ordered range of the open index, so a backlog
        // costs no sort; approved ones first (they are few). The first condition is
        // the index's own, which SQLite needs to see to use a partial index. Only rows
        // signoff took in: another program's row is taken in first, in the same pass,
        // and one that cannot be read (inserted before the insert checks) is left out
        // rather than failing every expiry.
        let mut due = Vec::new();
        for status in [Status::Approved, Status::Pending] {
            let left = limit - due.len() as i64;
            if left <= 0 {
                break;
            }
            let query = sqlx::query(select_approvals!(
                "WHERE status IN ('pending', 'approved') AND status = $1 AND expires_at <= $2 \
                 AND routing IS NOT NULL ORDER BY expires_at LIMIT $3"
            ))
            .bind(status.as_str())
            .bind(ts(&now))
            .bind(left);
            due.extend(self.approvals(query).await?);
        }
        Ok(due)
    }

    async fn due_nudges(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<(ApprovalId, DateTime<Utc>)>> {
        // `IS NOT NULL` first: the index's own condition, which SQLite needs to see.
        let due: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, nudge_at FROM pending_approvals \
             WHERE nudge_at IS NOT NULL AND nudge_at <= $1 AND routing IS NOT NULL \
             ORDER BY nudge_at LIMIT $2",
        )
        .bind(ts(&now))
        .bind(limit)
        .fetch_all(self.conn().await?)
        .await?;
        due.into_iter()
            .map(|(id, at)| Ok((parse_id(&id)?, parse_ts(&at)?)))
            .collect()
    }

    async fn set_nudges(
        &mut self,
        nudges: &[(ApprovalId, Option<DateTime<Utc>>)],
    ) -> sqlx::Result<()> {
        if nudges.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = nudges
            .iter()
            .map(|(id, at)| serde_json::json!([id.to_string(), at.as_ref().map(ts)]))
            .collect();
        let done = sqlx::query(
            "UPDATE pending_approvals SET nudge_at = v.value ->> 1 FROM json_each($1) AS v \
             WHERE pending_approvals.id = v.value ->> 0",
        )
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(self.conn().await?)
        .await?;
        if done.rows_affected() != nudges.len() as u64 {
            return Err(sqlx::Error::RowNotFound);
        }
        Ok(())
    }

    async fn take_shared_claims(
        &mut self,
        limit: i64,
    ) -> sqlx::Result<Vec<(ApprovalId, DateTime<Utc>)>> {
        // Read first: the usual pass finds none, and then writes nothing.
        let found: Vec<(String, String)> =
            sqlx::query_as("SELECT approval_id, at FROM shared_claims ORDER BY at LIMIT $1")
                .bind(limit)
                .fetch_all(self.conn().await?)
                .await?;
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = found.iter().map(|(id, _)| id.as_str()).collect();
        sqlx::query(
            "DELETE FROM shared_claims WHERE approval_id IN (SELECT value FROM json_each($1))",
        )
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .execute(self.conn().await?)
        .await?;
        found
            .iter()
            .map(|(id, at)| Ok((parse_id(id)?, parse_ts(at)?)))
            .collect()
    }

    async fn token_insert(
        &mut self,
        name: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::tokens::INSERT)
            .bind(name)
            .bind(hash)
            .bind(ts(&now))
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_rotate(
        &mut self,
        name: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::tokens::ROTATE)
            .bind(name)
            .bind(hash)
            .bind(ts(&now))
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_revoke(&mut self, name: &str, now: DateTime<Utc>) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::tokens::REVOKE)
            .bind(name)
            .bind(ts(&now))
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn audit_head(&mut self) -> sqlx::Result<(i64, String)> {
        if let Some(head) = self.staged_head.as_ref().or(self.head.as_ref()) {
            return Ok(head.clone());
        }
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_one(self.conn().await?)
            .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    async fn stored_audit_head(&mut self) -> sqlx::Result<(i64, String)> {
        if self.staged_head.is_none() {
            self.head = None;
        }
        self.audit_head().await
    }

    async fn insert_audit(&mut self, entries: &[audit::Entry]) -> sqlx::Result<()> {
        // 8 binds per row; stay far below SQLite's variable limit.
        for chunk in pow2_chunks(entries, 128) {
            let query = self.defer();
            query.push(
                "INSERT INTO audit_events (seq, approval_id, kind, actor, at, data, prev_hash, hash) ",
            );
            query.push_values(chunk, |mut row, e| {
                row.push_bind(e.seq)
                    .push_bind(e.approval_id.map(|id| id.to_string()))
                    .push_bind(e.kind.clone())
                    .push_bind(e.actor.clone())
                    .push_bind(ts(&e.at))
                    .push_bind(crate::canonical::to_string(&e.data))
                    .push_bind(e.prev_hash.clone())
                    .push_bind(e.hash.clone());
            });
        }
        Ok(())
    }

    async fn set_audit_head(&mut self, seq: i64, hash: &str) -> sqlx::Result<()> {
        let query = self.defer();
        query.push("UPDATE audit_head SET seq = ");
        query.push_bind(seq).push(", hash = ");
        query.push_bind(hash.to_owned()).push(" WHERE id = 1");
        self.staged_head = Some((seq, hash.to_owned()));
        Ok(())
    }

    async fn newest_checkpoint(&mut self) -> sqlx::Result<Option<Checkpoint>> {
        let row = sqlx::query(sql::checkpoints::NEWEST)
            .fetch_optional(self.conn().await?)
            .await?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn insert_checkpoint(&mut self, checkpoint: &Checkpoint) -> sqlx::Result<()> {
        sqlx::query(sql::checkpoints::INSERT)
            .bind(checkpoint.n)
            .bind(checkpoint.seq)
            .bind(&checkpoint.hash)
            .bind(ts(&checkpoint.at))
            .bind(&checkpoint.signature)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }
}
