//! The PostgreSQL writer connection: transaction control and the small statements
//! the generic writer (`store::writer`) is made of.

use super::*;
use crate::approval::Status;
use crate::store::requests::{self, RequestKey, request_key, unrepeated};

/// Moves the expiry watermark down to `$n` if it is above.
macro_rules! lower_watermark {
    ($n:literal) => {
        concat!(
            "UPDATE expiry_watermark SET below = $",
            $n,
            " WHERE id = 1 AND below > $",
            $n
        )
    };
}

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
}

/// Expiry timers this transaction added or fired, for the watermark (see
/// `migrations/postgres/0006_hot_updates.sql`).
#[derive(Default)]
pub(super) struct Timers {
    /// The earliest expiry among the pending or approved approvals it inserted or
    /// adopted, while the watermark has yet to be moved down to it.
    opened: Option<DateTime<Utc>>,
    /// The `now` of the scheduler pass it ran: the watermark moves up to the earliest
    /// expiry still open by then.
    swept: Option<DateTime<Utc>>,
    /// Whether it holds the audit head's row lock, which orders every signoff writer's
    /// watermark work (taken for the audit log; else at commit).
    ordered: bool,
}

impl Timers {
    fn open<'a>(&mut self, approvals: impl IntoIterator<Item = &'a Approval>) {
        for approval in approvals {
            if matches!(approval.status, Status::Pending | Status::Approved) {
                let at = approval.expires_at;
                self.opened = Some(self.opened.map_or(at, |earliest| earliest.min(at)));
            }
        }
    }
}

impl PgTx {
    fn conn(&mut self) -> sqlx::Result<&mut sqlx::PgConnection> {
        self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)
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

    /// The keys among `rows` whose newest request is open (`request_keys`; see
    /// [`crate::store::requests`]), each key locked first until commit (an advisory
    /// lock, taken in one order by every writer; migration 0008's
    /// `signoff_open_requests`), so that a replica inserting the same request waits
    /// for this transaction and then sees its row. The function plans its lookup on
    /// every call, so that the plan follows the table's growth.
    async fn open_requests(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<HashSet<RequestKey>> {
        let keys: Vec<RequestKey> = rows.iter().filter_map(request_key).collect();
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let tokens: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
        let tools: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
        let hashes: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
        let pending: Vec<(String, String, String)> =
            sqlx::query_as("SELECT * FROM signoff_open_requests($1, $2, $3, $4)")
                .bind(&tokens)
                .bind(&tools)
                .bind(&hashes)
                .bind(requests::now_of(rows))
                .fetch_all(self.conn()?)
                .await?;
        Ok(pending.into_iter().collect())
    }

    /// Keeps the expiry watermark true for what this transaction did, at commit.
    ///
    /// Every signoff writer does this work while holding the audit head's row lock, so
    /// that writers take turns: a pass reads the open approvals after every insert
    /// committed before it, and an insert that waited for a pass sees where the pass
    /// left the mark (and moves it down below its own approvals, in
    /// `set_audit_head`'s statement when the transaction appends to the audit log,
    /// as creates and adoptions do). A pass also locks the watermark's row, which
    /// another program's trigger (an expiry moved earlier) takes to move it down.
    async fn settle_watermark(&mut self) -> sqlx::Result<()> {
        let Timers {
            opened,
            swept,
            ordered,
        } = std::mem::take(&mut self.timers);
        if opened.is_none() && swept.is_none() {
            return Ok(());
        }
        if !ordered {
            sqlx::query("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE")
                .execute(self.conn()?)
                .await?;
        }
        if let Some(opened) = opened {
            sqlx::query(lower_watermark!("1"))
                .bind(opened)
                .execute(self.conn()?)
                .await?;
        }
        let Some(now) = swept else {
            return Ok(());
        };
        let below: DateTime<Utc> =
            sqlx::query_scalar("SELECT below FROM expiry_watermark WHERE id = 1 FOR UPDATE")
                .fetch_one(self.conn()?)
                .await?;
        // The earliest approval still open up to `now`: one this pass left for later
        // (over its limit, or locked by another transaction). Its own expiries read as
        // expired here.
        let open: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT expires_at FROM pending_approvals \
             WHERE expires_at >= $1 AND expires_at <= $2 AND status IN ('pending', 'approved') \
             ORDER BY expires_at LIMIT 1",
        )
        .bind(below)
        .bind(now)
        .fetch_optional(self.conn()?)
        .await?;
        let settled = below.max(open.unwrap_or(now));
        if settled != below {
            sqlx::query("UPDATE expiry_watermark SET below = $1 WHERE id = 1")
                .bind(settled)
                .execute(self.conn()?)
                .await?;
        }
        Ok(())
    }
}

impl Tx for PgTx {
    async fn begin(&mut self) -> sqlx::Result<()> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        self.locations.clear();
        self.timers = Timers::default();
        sqlx::raw_sql("BEGIN").execute(self.conn()?).await?;
        Ok(())
    }

    async fn commit(&mut self) -> sqlx::Result<()> {
        self.settle_watermark().await?;
        sqlx::raw_sql("COMMIT").execute(self.conn()?).await?;
        Ok(())
    }

    async fn rollback(&mut self) {
        let ok = match self.conn() {
            Ok(conn) => sqlx::raw_sql("ROLLBACK").execute(conn).await.is_ok(),
            Err(_) => true,
        };
        if !ok && let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }

    async fn insert_approvals(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<HashSet<ApprovalId>> {
        let pending = self.open_requests(rows).await?;
        let rows = unrepeated(rows, &pending);
        self.timers.open(rows.iter().map(|(approval, _)| *approval));
        let mut inserted = HashSet::with_capacity(rows.len());
        // Few shapes of this wide statement, so each stays prepared on the server.
        // (The narrower multi-row statements below take up to 1,000 rows at once:
        // fewer round trips count for more there than re-preparing a new shape.)
        for chunk in pow2_chunks(&rows, 64) {
            let mut query =
                QueryBuilder::<Postgres>::new(concat!("WITH added AS (", insert_approvals_sql!()));
            query.push_values(chunk, |mut row, (a, params_sha256)| {
                row.push_bind(a.id.0)
                    .push_bind(a.tool_name.clone())
                    .push_bind(a.parameters.clone())
                    .push_bind(a.risk_tier.as_str())
                    .push_bind(a.status.as_str())
                    .push_bind(a.requested_by.clone())
                    .push_bind(a.decided_by.clone())
                    .push_bind(a.decision_at)
                    .push_bind(a.expires_at)
                    .push_bind(a.created_at)
                    .push_bind(a.summary.clone())
                    .push_bind(a.context.clone())
                    .push_bind(a.reason.clone())
                    .push_bind(a.original_parameters.clone())
                    .push_bind(a.token_name.clone())
                    .push_bind(a.idempotency_key.clone())
                    .push_bind(a.callback_url.clone())
                    .push_bind(i32::try_from(a.required_approvals).unwrap_or(i32::MAX))
                    .push_bind(serde_json::to_value(&a.routing).unwrap_or_default())
                    .push_bind(a.executed_at)
                    .push_bind(a.version)
                    .push_bind(a.server.clone())
                    .push_bind(params_sha256.to_string());
            });
            // Skips a reused idempotency key (a unique index); each open request
            // inserted becomes the newest of its key in `request_keys`.
            query.push(
                " ON CONFLICT DO NOTHING RETURNING id, token_name, tool_name, params_sha256, status), \
                 keyed AS (INSERT INTO request_keys (token_name, tool_name, params_sha256, approval_id) \
                   SELECT token_name, tool_name, params_sha256, id FROM added \
                   WHERE status IN ('pending', 'approved') AND token_name IS NOT NULL \
                   ON CONFLICT (token_name, tool_name, params_sha256) \
                   DO UPDATE SET approval_id = excluded.approval_id) \
                 SELECT id FROM added",
            );
            let ids: Vec<uuid::Uuid> = query.build_query_scalar().fetch_all(self.conn()?).await?;
            inserted.extend(ids.into_iter().map(ApprovalId));
        }
        Ok(inserted)
    }

    async fn find_existing(
        &mut self,
        token: &str,
        idempotency_key: Option<&str>,
        tool: &str,
        params_sha256: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Option<ApprovalId>> {
        let id: Option<Uuid> = sqlx::query_scalar(
            // The same idempotency key first; else the newest request with the same
            // tool and parameters, if it is open (its key is locked: see
            // `open_requests`).
            "SELECT id FROM ( \
               SELECT id, 0 AS rank FROM pending_approvals \
               WHERE token_name = $1 AND idempotency_key = $2 \
               UNION ALL \
               SELECT p.id, 1 FROM request_keys r JOIN pending_approvals p ON p.id = r.approval_id \
               WHERE r.token_name = $1 AND r.tool_name = $3 AND r.params_sha256 = $4 \
                 AND (p.status = 'pending' OR (p.status = 'approved' AND p.expires_at > $5))) AS found \
             ORDER BY rank LIMIT 1",
        )
        .bind(token)
        .bind(idempotency_key)
        .bind(tool)
        .bind(params_sha256)
        .bind(now)
        .fetch_optional(self.conn()?)
        .await?;
        Ok(id.map(ApprovalId))
    }

    async fn load(&mut self, id: ApprovalId) -> sqlx::Result<Option<Approval>> {
        let rows = sqlx::query(select_approvals!(located "WHERE id = $1 FOR UPDATE"))
            .bind(id.0)
            .fetch_all(self.conn()?)
            .await?;
        Ok(self.located(&rows)?.pop())
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
        // One statement of one shape for any number of rows: each column an array.
        let moved: Vec<(Uuid, String)> = sqlx::query_as(
            "UPDATE pending_approvals p SET parameters = v.parameters, status = v.status, \
             decided_by = v.decided_by, decision_at = v.decision_at, reason = v.reason, \
             original_parameters = v.original_parameters, executed_at = v.executed_at, \
             version = v.version \
             FROM unnest($1::uuid[], $2::bigint[], $3::jsonb[], $4::text[], $5::text[], \
               $6::timestamptz[], $7::text[], $8::jsonb[], $9::timestamptz[], $10::bigint[], \
               $11::text[]::tid[]) \
             AS v(id, expected, parameters, status, decided_by, decision_at, reason, \
               original_parameters, executed_at, version, loc) \
             WHERE p.ctid = v.loc AND p.id = v.id AND p.version = v.expected \
             RETURNING p.id, p.ctid::text",
        )
        .bind(column(approvals, |(a, _)| a.id.0))
        .bind(column(approvals, |(_, expected)| *expected))
        .bind(column(approvals, |(a, _)| a.parameters.clone()))
        .bind(column(approvals, |(a, _)| a.status.as_str()))
        .bind(column(approvals, |(a, _)| a.decided_by.as_deref()))
        .bind(column(approvals, |(a, _)| a.decision_at))
        .bind(column(approvals, |(a, _)| a.reason.as_deref()))
        .bind(column(approvals, |(a, _)| a.original_parameters.clone()))
        .bind(column(approvals, |(a, _)| a.executed_at))
        .bind(column(approvals, |(a, _)| a.version))
        .bind(locations)
        .fetch_all(self.conn()?)
        .await?;
        let updated = moved.len() as u64;
        for (id, location) in moved {
            self.locations.insert(ApprovalId(id), location);
        }
        Ok(updated)
    }

    async fn insert_votes(&mut self, votes: &[(ApprovalId, Vote)]) -> sqlx::Result<()> {
        for chunk in pow2_chunks(votes, 128) {
            let mut query = QueryBuilder::<Postgres>::new(
                "INSERT INTO votes (approval_id, user_id, decision, reason, at) ",
            );
            query.push_values(chunk, |mut row, (id, vote)| {
                row.push_bind(id.0)
                    .push_bind(vote.user.clone())
                    .push_bind(vote.decision.as_str())
                    .push_bind(vote.reason.clone())
                    .push_bind(vote.at);
            });
            query.build().execute(self.conn()?).await?;
        }
        Ok(())
    }

    async fn delete_vote(&mut self, id: ApprovalId, user: &str) -> sqlx::Result<()> {
        sqlx::query(sql::DELETE_VOTE)
            .bind(id.0)
            .bind(user)
            .execute(self.conn()?)
            .await?;
        Ok(())
    }

    async fn insert_jobs(&mut self, jobs: &[(NewJob, DateTime<Utc>)]) -> sqlx::Result<()> {
        // 5 binds per row; far below either backend's limit per statement.
        for chunk in jobs.chunks(1000) {
            let mut query = QueryBuilder::new(sql::jobs::INSERT);
            query.push_values(chunk, |mut row, (job, planned)| {
                row.push_bind(job.approval_id.0)
                    .push_bind(job.job.kind())
                    .push_bind(job.job.payload())
                    .push_bind(job.due_at)
                    .push_bind(*planned);
            });
            query.build().execute(self.conn()?).await?;
        }
        Ok(())
    }

    async fn set_permalink(
        &mut self,
        channel: &str,
        ts: &str,
        permalink: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(sql::messages::SET_PERMALINK)
            .bind(channel)
            .bind(ts)
            .bind(permalink)
            .execute(self.conn()?)
            .await?;
        Ok(())
    }

    async fn load_many(&mut self, ids: &[ApprovalId]) -> sqlx::Result<Vec<Approval>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        // In id order, so two replicas lock overlapping sets without deadlocking.
        let rows = sqlx::query(select_approvals!(
            located "WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        ))
        .bind(&ids)
        .fetch_all(self.conn()?)
        .await?;
        self.located(&rows)
    }

    async fn finish_job(&mut self, job_id: i64) -> sqlx::Result<()> {
        sqlx::query(sql::jobs::FINISH)
            .bind(job_id)
            .execute(self.conn()?)
            .await?;
        Ok(())
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
            .execute(self.conn()?)
            .await?;
        let adopted = done.rows_affected() == 1;
        if adopted {
            self.timers.open([a]);
        }
        Ok(adopted)
    }

    async fn announce(&mut self, changes: &[StatusChange]) -> sqlx::Result<()> {
        // NOTIFY is transactional: other replicas hear it when (and only if) we commit.
        let notices: Vec<String> = changes
            .iter()
            .map(|c| format!("{}:{}", c.id, c.status))
            .collect();
        sqlx::query("SELECT pg_notify($1, notice) FROM unnest($2::text[]) AS notice")
            .bind(CHANGES_CHANNEL)
            .bind(&notices)
            .execute(self.conn()?)
            .await?;
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
        // different approvals, and never wait for one that a batch of clicks holds.
        let rows = sqlx::query(select_approvals!(
            located "WHERE expires_at >= (SELECT below FROM expiry_watermark WHERE id = 1) \
             AND expires_at <= $1 AND status IN ('pending', 'approved') \
             ORDER BY expires_at LIMIT $2 FOR UPDATE OF pending_approvals SKIP LOCKED"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(self.conn()?)
        .await?;
        self.timers.swept = Some(self.timers.swept.map_or(now, |swept| swept.max(now)));
        self.located(&rows)
    }

    async fn claim_jobs(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<DueJob>> {
        // SKIP LOCKED: replicas claiming at the same moment take different jobs
        // instead of queueing behind each other.
        let rows = sqlx::query(sql::jobs::CLAIM_SKIP_LOCKED)
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(self.conn()?)
            .await?;
        due_jobs(rows)
    }

    async fn retry_job(&mut self, job_id: i64, at: DateTime<Utc>, error: &str) -> sqlx::Result<()> {
        sqlx::query(sql::jobs::RETRY)
            .bind(job_id)
            .bind(at)
            .bind(error)
            .execute(self.conn()?)
            .await?;
        Ok(())
    }

    async fn defer_jobs(&mut self, jobs: &[(i64, DateTime<Utc>)]) -> sqlx::Result<()> {
        let (ids, ats): (Vec<i64>, Vec<DateTime<Utc>>) = jobs.iter().copied().unzip();
        sqlx::query(
            "UPDATE jobs SET due_at = v.at, locked_until = NULL, attempts = attempts - 1 \
             FROM UNNEST($1::bigint[], $2::timestamptz[]) AS v(id, at) WHERE jobs.id = v.id",
        )
        .bind(ids)
        .bind(ats)
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    async fn kill_job(&mut self, job_id: i64, error: &str) -> sqlx::Result<()> {
        sqlx::query(sql::jobs::KILL)
            .bind(job_id)
            .bind(error)
            .execute(self.conn()?)
            .await?;
        Ok(())
    }

    async fn insert_message(&mut self, m: &PostedMessage, now: DateTime<Utc>) -> sqlx::Result<()> {
        sqlx::query(sql::messages::INSERT)
            .bind(m.approval_id.0)
            .bind(&m.channel)
            .bind(&m.ts)
            .bind(m.kind.as_str())
            .bind(&m.permalink)
            .bind(m.rendered_version)
            .bind(now)
            .execute(self.conn()?)
            .await?;
        Ok(())
    }

    async fn mark_rendered(&mut self, key: &MessageKey, version: i64) -> sqlx::Result<()> {
        sqlx::query(sql::messages::MARK_RENDERED)
            .bind(&key.channel)
            .bind(&key.ts)
            .bind(version)
            .execute(self.conn()?)
            .await?;
        Ok(())
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
            .execute(self.conn()?)
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
            .execute(self.conn()?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn token_revoke(&mut self, name: &str, now: DateTime<Utc>) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::tokens::REVOKE)
            .bind(name)
            .bind(now)
            .execute(self.conn()?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn audit_head(&mut self) -> sqlx::Result<(i64, String)> {
        // FOR UPDATE: replicas append one after another; after waiting, Postgres
        // returns the head as the previous holder committed it.
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(self.conn()?)
            .await?;
        self.timers.ordered = true;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    async fn insert_audit(&mut self, entries: &[audit::Entry]) -> sqlx::Result<()> {
        // One statement of one shape for any number of events: each column an array.
        sqlx::query(
            "INSERT INTO audit_events (seq, approval_id, kind, actor, at, data, prev_hash, hash) \
             SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], \
               $5::timestamptz[], $6::text[], $7::text[], $8::text[])",
        )
        .bind(column(entries, |e| e.seq))
        .bind(column(entries, |e| e.approval_id.map(|id| id.0)))
        .bind(column(entries, |e| e.kind.as_str()))
        .bind(column(entries, |e| e.actor.as_deref()))
        .bind(column(entries, |e| e.at))
        .bind(column(entries, |e| crate::canonical::to_string(&e.data)))
        .bind(column(entries, |e| e.prev_hash.as_str()))
        .bind(column(entries, |e| e.hash.as_str()))
        .execute(self.conn()?)
        .await?;
        Ok(())
    }

    async fn set_audit_head(&mut self, seq: i64, hash: &str) -> sqlx::Result<()> {
        // With the approvals this transaction opened, the watermark moves down in the
        // same statement, saving a round trip per batch of creates (see
        // `settle_watermark`; the audit head is locked by now).
        let query = match self.timers.opened.take() {
            Some(opened) => sqlx::query(concat!(
                "WITH lowered AS (",
                lower_watermark!("3"),
                ") ",
                "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1"
            ))
            .bind(seq)
            .bind(hash)
            .bind(opened),
            None => sqlx::query(sql::SET_AUDIT_HEAD).bind(seq).bind(hash),
        };
        query.execute(self.conn()?).await?;
        Ok(())
    }
}

/// One column of a multi-row statement that binds each column as an array (`unnest`).
fn column<'a, R, T>(rows: &'a [R], value: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(value).collect()
}

/// Claimed or due job rows (`id, approval_id, kind, payload, attempts`) as jobs.
fn due_jobs(rows: Vec<PgRow>) -> sqlx::Result<Vec<DueJob>> {
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let kind: &str = row.try_get("kind")?;
        let Some(job) = Job::from_columns(kind, payload(&row)?) else {
            continue; // written by a newer signoff: it waits for that version
        };
        jobs.push(DueJob {
            id: row.try_get("id")?,
            approval_id: ApprovalId(row.try_get("approval_id")?),
            job,
            attempts: row.try_get("attempts")?,
        });
    }
    Ok(jobs)
}
