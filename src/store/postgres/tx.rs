//! The PostgreSQL writer connection: transaction control and the small statements
//! the generic writer (`store::writer`) is made of.

use super::deferred::Deferred;
use super::lost_commit::ServerProcess;
use super::watermark::Timers;
use super::*;

/// `Tx::load_many`'s read with the check of the messages votes were clicked on.
pub(super) const LOAD_SHOWN: &str = select_approvals!(@
    concat!(", ctid::text AS loc", seen_version!(), ", ", shown_at_jsonb_2!(), " AS shown_at"),
    "WHERE id = ANY($1) ORDER BY id FOR UPDATE");

/// Whether `row`, read with `seen_version!`, was changed by another writer while its
/// statement waited for the lock: the rest of the statement is then older than it.
fn changed_while_waiting(row: &PgRow) -> bool {
    let seen: Option<i64> = row.try_get("seen_version").unwrap_or(None);
    let locked: Option<i64> = row.try_get("version").ok();
    seen != locked
}

/// The setting that makes a connection keep one plan per statement: the writer's,
/// whose plans are made afresh every [`REPLAN_EVERY`] transactions, and the coalesced
/// readers' (`coalesced::Coalesced::spawn`). Left to itself, PostgreSQL plans each call of a prepared statement
/// anew while that looks cheaper than a plan kept, and otherwise keeps one plan for the
/// life of the connection, made for the tables as they were then. Both were measured
/// here (docs/performance-journal.md, "The writer's kept plans"): a click batch's update with
/// its message reports cost as much to plan as to run, and a post's report kept a plan
/// made while the tables were nearly empty, which read the approvals and the jobs
/// whole on every call as they grew.
pub(super) const KEPT_PLANS: (&str, &str) = ("plan_cache_mode", "force_generic_plan");

/// A kept plan is made for the tables as they are when it is made: one made while a
/// table was small may scan the whole table, and would keep scanning it as it grows.
/// So the writer drops its plans every this many transactions (`DISCARD PLANS`, sent
/// with a `BEGIN`), and each statement is planned again, once, for the tables as they
/// are then: a plan is at most this many batches (at most 128 writes each) older than
/// the tables it reads.
pub(super) const REPLAN_EVERY: u32 = 64;

/// The writer's connection, from a one-connection pool (reconnects after a failure).
pub(crate) struct PgTx {
    pub(super) pool: PgPool,
    pub(super) conn: Option<PoolConnection<Postgres>>,
    /// Where each approval this transaction read (and so locked) lies: its row
    /// version's `ctid`, as text. The update finds the row there (a TID scan) instead
    /// of through the primary key (random ids: a random index page per row). A locked
    /// row cannot move under its lock, and the update refreshes the entry with the new
    /// version's place; cleared at `begin`.
    pub(super) locations: HashMap<ApprovalId, String>,
    /// What this transaction does to the expiry watermark at commit
    /// ([`PgTx::settle_watermark`]); cleared at `begin`.
    pub(super) timers: Timers,
    /// Statements whose answers nobody reads, sent with the next statement.
    pub(super) deferred: Deferred,
    /// A transaction is open and nothing has run in it yet: the last `COMMIT` began it
    /// (`Tx::commit` with `then_begin`), so `begin` sends nothing.
    pub(super) begun: bool,
    /// The audit chain's head as this transaction locked it, and moved it since, if it
    /// did (so also whether it holds the head's lock): read along with the approvals'
    /// update, whose batch appends to the chain, instead of in a round trip of its own
    /// before the events ([`moved_with_head`]); cleared at `begin`.
    pub(super) head: Option<(i64, String)>,
    /// Transactions to go before the statements' kept plans are dropped
    /// ([`REPLAN_EVERY`]).
    pub(super) unplanned_in: u32,
    /// The server process behind `conn`, read when it connected: the one to end when a
    /// commit's reply is lost (`lost_commit`).
    pub(super) process: Option<ServerProcess>,
    /// A server process of the writer's whose connection was given up while its
    /// transaction may be open, to be ended before the next one begins
    /// ([`PgTx::end_abandoned`]).
    pub(super) abandoned: Option<ServerProcess>,
    /// How long to try to learn whether a commit whose reply was lost committed.
    pub(super) learn_within: std::time::Duration,
}

impl PgTx {
    /// The connection, once the statements kept back have run: no statement sees the
    /// tables without the writes before it.
    pub(super) async fn conn(&mut self) -> sqlx::Result<&mut sqlx::PgConnection> {
        let (conn, deferred) = self.parts()?;
        deferred.flush(conn).await?;
        Ok(conn)
    }

    /// The connection and the statements kept back, for a statement that takes them
    /// along ([`Deferred::run_with`]).
    pub(super) fn parts(&mut self) -> sqlx::Result<(&mut sqlx::PgConnection, &mut Deferred)> {
        let conn = self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)?;
        Ok((conn, &mut self.deferred))
    }

    /// Remembers the places of the rows the approvals' update answers
    /// ([`moved_with_head`]), and the head (locked) if it took it along; answers how
    /// many rows it updated.
    fn placed_with_head(&mut self, rows: &[PgRow]) -> sqlx::Result<u64> {
        let mut placed = 0;
        for row in rows {
            if let Some(id) = row.try_get::<Option<Uuid>, _>("id")? {
                self.locations.insert(ApprovalId(id), row.try_get("loc")?);
                placed += 1;
            } else {
                self.head = Some((row.try_get("seq")?, row.try_get("hash")?));
            }
        }
        Ok(placed)
    }

    /// Whether the transaction about to begin drops the kept plans first: one in
    /// every [`REPLAN_EVERY`].
    fn replan_due(&mut self) -> bool {
        self.unplanned_in = self.unplanned_in.saturating_sub(1);
        if self.unplanned_in > 0 {
            return false;
        }
        self.unplanned_in = REPLAN_EVERY;
        true
    }

    /// The rows of a read that locks them (`FOR UPDATE`, with `seen_version!`): read
    /// again when another writer changed one while the read waited for its lock, so
    /// that its votes and messages are as new as the row (the locks are ours by then,
    /// and the second read's snapshot is taken after that writer committed).
    async fn locked<'q>(
        &mut self,
        read: impl Fn() -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::Result<Vec<PgRow>> {
        let rows = read().fetch_all(self.conn().await?).await?;
        if !rows.iter().any(changed_while_waiting) {
            return Ok(rows);
        }
        read().fetch_all(self.conn().await?).await
    }

    /// Approvals read with `select_approvals!(located …)`, their places remembered.
    fn located(&mut self, rows: &[PgRow]) -> sqlx::Result<Vec<Approval>> {
        let mut approvals = Vec::with_capacity(rows.len());
        for row in rows {
            let approval = approval_with_votes(row)?;
            self.locations.insert(approval.id, row.try_get("loc")?);
            approvals.push(approval);
        }
        Ok(approvals)
    }
}

impl Tx for PgTx {
    async fn begin(&mut self) -> sqlx::Result<()> {
        if self.conn.is_none() {
            let mut conn = self.pool.acquire().await?;
            self.end_abandoned(&mut conn).await?;
            self.process = Some(ServerProcess::of(&mut conn).await?);
            self.conn = Some(conn);
        }
        self.locations.clear();
        self.timers = Timers::default();
        self.head = None;
        self.deferred.discard();
        if std::mem::take(&mut self.begun) {
            return Ok(());
        }
        let sql = if self.replan_due() {
            "DISCARD PLANS; BEGIN"
        } else {
            "BEGIN"
        };
        sqlx::raw_sql(sql).execute(self.conn().await?).await?;
        Ok(())
    }

    async fn commit(&mut self, then_begin: bool) -> sqlx::Result<()> {
        self.settle_watermark().await?;
        // One simple query, two statements: the next batch's BEGIN costs no round
        // trip of its own. If the COMMIT fails, Postgres runs nothing after it.
        let sql = if !then_begin {
            "COMMIT"
        } else if self.replan_due() {
            "COMMIT; DISCARD PLANS; BEGIN"
        } else {
            "COMMIT; BEGIN"
        };
        sqlx::raw_sql(sql).execute(self.conn().await?).await?;
        self.begun = then_begin;
        Ok(())
    }

    async fn committed_after_all(
        &mut self,
        error: &sqlx::Error,
        appended: Option<(i64, &str)>,
    ) -> sqlx::Result<Option<bool>> {
        self.learn_commit(error, appended).await
    }

    async fn rollback(&mut self) {
        self.deferred.discard();
        let ok = match self.conn.as_deref_mut() {
            Some(conn) => sqlx::raw_sql("ROLLBACK").execute(conn).await.is_ok(),
            None => true,
        };
        if !ok && let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
            // The server may not have noticed: its transaction may hold locks still.
            self.abandoned = self.process.take();
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
        // Replicas count a requester one at a time: the lock is held until commit, and
        // the count, a statement of its own, sees what the previous holder committed.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("signoff.requester:{token}"))
            .execute(self.conn().await?)
            .await?;
        sqlx::query_as(
            // A waiting request has not expired: the requester's rows whose expiry is
            // ahead, through an index no decision changes (HOT updates stay HOT).
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM pending_approvals \
               WHERE token_name = $1 AND expires_at > $3 AND status = 'pending' LIMIT $2) AS w), \
             EXISTS (SELECT 1 FROM throttles WHERE token_name = $1)",
        )
        .bind(token)
        .bind(i64::from(up_to))
        .bind(now)
        .fetch_one(self.conn().await?)
        .await
    }

    async fn newest_waiting(
        &mut self,
        token: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Option<ApprovalId>> {
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM pending_approvals WHERE token_name = $1 AND expires_at > $2 \
             AND status = 'pending' ORDER BY created_at DESC LIMIT 1",
        )
        .bind(token)
        .bind(now)
        .fetch_optional(self.conn().await?)
        .await?;
        Ok(id.map(ApprovalId))
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
            .bind(now)
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
        let read = || sqlx::query(select_approvals!(located "WHERE id = $1 FOR UPDATE")).bind(id.0);
        let rows = self.locked(read).await?;
        Ok(self.located(&rows)?.pop())
    }

    async fn parameters_text(&mut self, id: ApprovalId) -> sqlx::Result<Option<String>> {
        // jsonb's text keeps every number as written (a numeric), where reading it
        // into a `Value` would round it to an f64.
        sqlx::query_scalar("SELECT parameters::text FROM pending_approvals WHERE id = $1")
            .bind(id.0)
            .fetch_optional(self.conn().await?)
            .await
    }

    async fn update_approvals(&mut self, approvals: &[(&Approval, i64)]) -> sqlx::Result<u64> {
        // Every approval the writer changes was read, and locked, in this transaction,
        // so its place is known; the id and version are compared too, as a guard.
        let mut locations = Vec::with_capacity(approvals.len());
        for (approval, _) in approvals {
            let Some(location) = self.locations.get(&approval.id) else {
                return Err(sqlx::Error::Protocol(format!(
                    "approval {} is written without having been read in this transaction",
                    approval.id
                )));
            };
            locations.push(location.clone());
        }
        // One statement of one shape for any number of rows: each column an array. It
        // takes along what is kept back (none of which writes approvals), and reads the
        // audit head, locked: the batch takes no other lock after this statement (only
        // inserts follow), so the head is still the last lock, as in every transaction.
        let head = self.head.is_none();
        let (conn, deferred) = self.parts()?;
        deferred.with("moved", |q| {
            q.push(
                "UPDATE pending_approvals p SET parameters = v.parameters, status = v.status, \
                 decided_by = v.decided_by, decision_at = v.decision_at, reason = v.reason, \
                 original_parameters = v.original_parameters, executed_at = v.executed_at, \
                 version = v.version, decided_via = v.decided_via FROM unnest(",
            );
            unnest_arrays!(q,
                column(approvals, |(a, _)| a.id.0) => "uuid[]",
                column(approvals, |(_, expected)| *expected) => "bigint[]",
                column(approvals, |(a, _)| a.parameters.clone()) => "jsonb[]",
                column(approvals, |(a, _)| a.status.as_str()) => "text[]",
                column(approvals, |(a, _)| a.decided_by.clone()) => "text[]",
                column(approvals, |(a, _)| a.decision_at) => "timestamptz[]",
                column(approvals, |(a, _)| a.reason.clone()) => "text[]",
                column(approvals, |(a, _)| a.original_parameters.clone()) => "jsonb[]",
                column(approvals, |(a, _)| a.executed_at) => "timestamptz[]",
                column(approvals, |(a, _)| a.version) => "bigint[]",
                locations => "text[]::tid[]",
                column(approvals, |(a, _)| a.decided_via.clone()) => "text[]",
            );
            q.push(
                ") AS v(id, expected, parameters, status, decided_by, decision_at, reason, \
                 original_parameters, executed_at, version, loc, decided_via) \
                 WHERE p.ctid = v.loc AND p.id = v.id AND p.version = v.expected \
                 RETURNING p.id, p.ctid::text AS loc",
            );
        });
        if head {
            deferred.with("head", |q| {
                q.push(HEAD);
            });
        }
        let moved = deferred
            .run_with(conn, |q| moved_with_head(q, head))
            .await?;
        self.placed_with_head(&moved)
    }

    async fn insert_votes(&mut self, votes: &[(ApprovalId, Vote)]) -> sqlx::Result<()> {
        self.deferred.push(|q| {
            q.push("INSERT INTO votes (approval_id, user_id, decision, reason, at) SELECT * FROM unnest(");
            unnest_arrays!(q,
                column(votes, |(id, _)| id.0) => "uuid[]",
                column(votes, |(_, vote)| vote.user.clone()) => "text[]",
                column(votes, |(_, vote)| vote.decision.as_str()) => "text[]",
                column(votes, |(_, vote)| vote.reason.clone()) => "text[]",
                column(votes, |(_, vote)| vote.at) => "timestamptz[]",
            );
            q.push(")");
        });
        Ok(())
    }

    async fn delete_vote(&mut self, id: ApprovalId, user: &str) -> sqlx::Result<()> {
        sqlx::query(sql::DELETE_VOTE)
            .bind(id.0)
            .bind(user)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    async fn load_many(&mut self, ids: &[ApprovalId]) -> sqlx::Result<Vec<Approval>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        // In id order, so two replicas lock overlapping sets without deadlocking.
        let read = || {
            sqlx::query(select_approvals!(
                located "WHERE id = ANY($1) ORDER BY id FOR UPDATE"
            ))
            .bind(&ids)
        };
        let rows = self.locked(read).await?;
        self.located(&rows)
    }

    async fn load_many_shown(
        &mut self,
        ids: &[ApprovalId],
        pairs: &[(ApprovalId, &MessageKey)],
    ) -> sqlx::Result<(Vec<Approval>, Vec<bool>)> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        // Each approval's id to the pairs asked about it, `[channel, ts, position]`.
        let mut asked: HashMap<String, Vec<Value>> = HashMap::new();
        for (at, (id, message)) in pairs.iter().enumerate() {
            let pair = serde_json::json!([message.channel, message.ts, at]);
            asked.entry(id.to_string()).or_default().push(pair);
        }
        let asked = sqlx::types::Json(asked);
        let read = || sqlx::query(LOAD_SHOWN).bind(&ids).bind(&asked);
        let rows = self.locked(read).await?;
        let mut found = Vec::new();
        for row in &rows {
            found.extend(row.try_get::<Vec<i64>, _>("shown_at")?);
        }
        Ok((self.located(&rows)?, found_at(pairs.len(), found)))
    }

    async fn adopt_approval(&mut self, a: &Approval) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::ADOPT)
            .bind(a.id.0)
            .bind(a.risk_tier.as_str())
            .bind(a.status.as_str())
            .bind(&a.decided_by)
            .bind(a.decision_at)
            .bind(&a.reason)
            .bind(&a.summary)
            .bind(i32::try_from(a.required_approvals).unwrap_or(i32::MAX))
            .bind(serde_json::to_value(&a.routing).unwrap_or_default())
            .bind(a.expires_at)
            .bind(a.version)
            .bind(jobs::first_nudge(a))
            .execute(self.conn().await?)
            .await?;
        let adopted = done.rows_affected() == 1;
        if adopted {
            self.timers.open([a]);
        }
        Ok(adopted)
    }

    async fn announce(&mut self, changes: &[StatusChange]) -> sqlx::Result<()> {
        // NOTIFY is transactional: other replicas hear it when (and only if) we commit.
        self.deferred
            .notify(changes.iter().map(|c| format!("{}:{}", c.id, c.status)));
        Ok(())
    }

    async fn due_expiries(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<Approval>> {
        // From the watermark on (every open approval expires at or after it; see
        // `settle_watermark`), so the pass does not walk past the expired and decided
        // approvals behind it. SKIP LOCKED: replicas expiring at the same moment take
        // different approvals, and never wait for one that a batch of clicks holds. Only
        // rows signoff took in: another program's row is taken in first, in the same
        // pass, and one that cannot be read is left out rather than failing every pass.
        let rows = sqlx::query(select_approvals!(
            located "WHERE expires_at >= (SELECT below FROM expiry_watermark WHERE id = 1) \
             AND expires_at <= $1 AND status IN ('pending', 'approved') AND routing IS NOT NULL \
             ORDER BY expires_at LIMIT $2 FOR UPDATE OF pending_approvals SKIP LOCKED"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(self.conn().await?)
        .await?;
        self.timers.swept = Some(self.timers.swept.map_or(now, |swept| swept.max(now)));
        self.located(&rows)
    }

    async fn due_nudges(
        &mut self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<(ApprovalId, DateTime<Utc>)>> {
        // SKIP LOCKED: replicas firing at the same moment take different approvals.
        let due: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, nudge_at FROM pending_approvals WHERE nudge_at <= $1 \
             AND routing IS NOT NULL ORDER BY nudge_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(self.conn().await?)
        .await?;
        Ok(due
            .into_iter()
            .map(|(id, at)| (ApprovalId(id), at))
            .collect())
    }

    async fn set_nudges(
        &mut self,
        nudges: &[(ApprovalId, Option<DateTime<Utc>>)],
    ) -> sqlx::Result<()> {
        if nudges.is_empty() {
            return Ok(());
        }
        // Through the rows read (as `update_approvals`), then kept up to date: the
        // index over `nudge_at` moves each row, which this batch may still write.
        let mut locations = Vec::with_capacity(nudges.len());
        for (id, _) in nudges {
            let Some(location) = self.locations.get(id) else {
                return Err(sqlx::Error::Protocol(format!(
                    "approval {id} is nudged without having been read in this transaction"
                )));
            };
            locations.push(location.clone());
        }
        let moved: Vec<(Uuid, String)> = sqlx::query_as(
            "UPDATE pending_approvals p SET nudge_at = v.at \
             FROM unnest($1::uuid[], $2::text[]::tid[], $3::timestamptz[]) AS v(id, loc, at) \
             WHERE p.ctid = v.loc AND p.id = v.id RETURNING p.id, p.ctid::text",
        )
        .bind(column(nudges, |(id, _)| id.0))
        .bind(locations)
        .bind(column(nudges, |(_, at)| *at))
        .fetch_all(self.conn().await?)
        .await?;
        if moved.len() != nudges.len() {
            return Err(sqlx::Error::RowNotFound);
        }
        for (id, location) in moved {
            self.locations.insert(ApprovalId(id), location);
        }
        Ok(())
    }

    async fn take_shared_claims(
        &mut self,
        limit: i64,
    ) -> sqlx::Result<Vec<(ApprovalId, DateTime<Utc>)>> {
        // SKIP LOCKED: replicas taking claims at the same moment take different ones.
        // With none (the usual pass) it deletes nothing, and so writes nothing.
        let taken: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "DELETE FROM shared_claims WHERE approval_id IN (SELECT approval_id FROM shared_claims \
             ORDER BY at LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING approval_id, at",
        )
        .bind(limit)
        .fetch_all(self.conn().await?)
        .await?;
        let mut taken: Vec<(ApprovalId, DateTime<Utc>)> = taken
            .into_iter()
            .map(|(id, at)| (ApprovalId(id), at))
            .collect();
        taken.sort_by_key(|(_, at)| *at);
        Ok(taken)
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
            .bind(now)
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
            .bind(now)
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_revoke(&mut self, name: &str, now: DateTime<Utc>) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::tokens::REVOKE)
            .bind(name)
            .bind(now)
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn audit_head(&mut self) -> sqlx::Result<(i64, String)> {
        if let Some(head) = &self.head {
            return Ok(head.clone());
        }
        // FOR UPDATE: replicas append one after another; after waiting, Postgres
        // returns the head as the previous holder committed it. It takes along what is
        // kept back (none of which writes the head: its update comes after this).
        let (conn, deferred) = self.parts()?;
        let rows = deferred
            .run_with(conn, |q| {
                q.push(HEAD);
            })
            .await?;
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        let head: (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        self.head = Some(head.clone());
        Ok(head)
    }

    async fn insert_audit(&mut self, entries: &[audit::Entry]) -> sqlx::Result<()> {
        // One statement of one shape for any number of events: each column an array.
        self.deferred.push(|q| {
            q.push(
                "INSERT INTO audit_events (seq, approval_id, kind, actor, at, data, prev_hash, hash) \
                 SELECT * FROM unnest(",
            );
            unnest_arrays!(q,
                column(entries, |e| e.seq) => "bigint[]",
                column(entries, |e| e.approval_id.map(|id| id.0)) => "uuid[]",
                column(entries, |e| e.kind.as_str()) => "text[]",
                column(entries, |e| e.actor.clone()) => "text[]",
                column(entries, |e| e.at) => "timestamptz[]",
                column(entries, |e| crate::canonical::to_string(&e.data)) => "text[]",
                column(entries, |e| e.prev_hash.clone()) => "text[]",
                column(entries, |e| e.hash.clone()) => "text[]",
            );
            q.push(")");
        });
        Ok(())
    }

    async fn set_audit_head(&mut self, seq: i64, hash: &str) -> sqlx::Result<()> {
        self.head = Some((seq, hash.to_owned()));
        let hash = hash.to_owned();
        self.deferred.push(|q| {
            q.push("UPDATE audit_head SET seq = ")
                .push_bind(seq)
                .push(", hash = ")
                .push_bind(hash)
                .push(" WHERE id = 1");
        });
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
            .bind(checkpoint.at)
            .bind(&checkpoint.signature)
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }
}

/// The audit head, locked.
const HEAD: &str = "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE";

/// Ends the approvals' update (its clause `moved` answers their `id` and `loc`): it
/// answers those rows and, with `head` (the statement has a clause `head AS (HEAD)`),
/// the audit head as one more row (`seq` and `hash`, the others null). The second
/// branch of a `UNION ALL` runs once the first is done, so the head is locked after
/// the rows.
fn moved_with_head(q: &mut QueryBuilder<Postgres>, head: bool) {
    q.push("SELECT id, loc, NULL::bigint AS seq, NULL::text AS hash FROM moved");
    if head {
        q.push(" UNION ALL SELECT NULL, NULL, seq, hash FROM head");
    }
}

/// One column of a multi-row statement that binds each column as an array (`unnest`).
pub(super) fn column<'a, R, T>(rows: &'a [R], value: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}
