//! The outbox's statements on SQLite: the jobs (inserted with the change that causes
//! them, claimed with a lease, finished, retried, deferred or given up) and the Slack
//! messages they posted.

use super::tx::SqliteTx;
use super::*;
use crate::jobs::Job;
use crate::store::backend::OutboxTx;

impl OutboxTx for SqliteTx {
    async fn insert_jobs(&mut self, jobs: &[(NewJob, DateTime<Utc>)]) -> sqlx::Result<()> {
        // 5 binds per row; far below either backend's limit per statement.
        for chunk in pow2_chunks(jobs, 128) {
            let query = self.defer();
            query.push(sql::jobs::INSERT);
            query.push_values(chunk, |mut row, (job, planned)| {
                row.push_bind(job.approval_id.to_string())
                    .push_bind(job.job.kind())
                    .push_bind(job.job.payload().to_string())
                    .push_bind(ts(&job.due_at))
                    .push_bind(ts(planned));
            });
        }
        Ok(())
    }

    async fn update_if_newer(
        &mut self,
        shown: &[(ApprovalId, i64, DateTime<Utc>)],
    ) -> sqlx::Result<()> {
        if shown.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = shown
            .iter()
            .map(|(id, version, at)| serde_json::json!([id.to_string(), version, ts(at)]))
            .collect();
        let update = Job::SlackUpdate {};
        self.defer()
            .push(sql::jobs::INSERT)
            .push("SELECT s.id, ")
            .push_bind(update.kind())
            .push(", ")
            .push_bind(update.payload().to_string())
            .push(sql::jobs::IF_NEWER.0)
            .push("(SELECT value ->> 0 AS id, value ->> 1 AS shown, value ->> 2 AS at FROM json_each(")
            .push_bind(serde_json::Value::Array(rows).to_string())
            .push("))")
            .push(sql::jobs::IF_NEWER.1);
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
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    async fn finish_jobs(
        &mut self,
        jobs: &[(i64, Option<DateTime<Utc>>)],
    ) -> sqlx::Result<Vec<i64>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        // Only the rows whose leases are still the claims' (see `DueJob::lease_until`).
        let pairs: Vec<(i64, Option<String>)> = jobs
            .iter()
            .map(|(id, lease)| (*id, lease.as_ref().map(ts)))
            .collect();
        sqlx::query_scalar(sql::jobs::FINISH_JSON)
            .bind(serde_json::to_string(&pairs).unwrap_or_default())
            .fetch_all(self.conn().await?)
            .await
    }

    async fn claim_jobs(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        jobs: &[(i64, Option<DateTime<Utc>>)],
    ) -> sqlx::Result<Vec<(i64, i32)>> {
        let rows: Vec<(i64, Option<String>)> = jobs
            .iter()
            .map(|(id, at)| (*id, at.as_ref().map(ts)))
            .collect();
        let rows: Vec<(i64, i32, bool)> = sqlx::query_as(sql::jobs::CLAIM_JSON)
            .bind(ts(&now))
            .bind(ts(&lease_until))
            .bind(serde_json::to_string(&rows).unwrap_or_default())
            .fetch_all(self.conn().await?)
            .await?;
        Ok(leased(rows))
    }

    async fn retry_job(
        &mut self,
        job_id: i64,
        lease: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        error: &str,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::jobs::RETRY)
            .bind(job_id)
            .bind(ts(&at))
            .bind(error)
            .bind(lease.as_ref().map(ts))
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn defer_jobs(&mut self, jobs: &[crate::jobs::PutBack]) -> sqlx::Result<()> {
        let rows: Vec<(i64, Option<String>, String)> = jobs
            .iter()
            .map(|(id, lease, at)| (*id, lease.as_ref().map(ts), ts(at)))
            .collect();
        sqlx::query(
            "UPDATE jobs SET due_at = v.at, locked_until = NULL, attempts = attempts - 1 \
             FROM (SELECT value ->> 0 AS id, value ->> 1 AS lease, value ->> 2 AS at \
             FROM json_each($1)) AS v WHERE jobs.id = v.id AND jobs.locked_until = v.lease",
        )
        .bind(serde_json::to_string(&rows).unwrap_or_default())
        .execute(self.conn().await?)
        .await?;
        Ok(())
    }

    async fn kill_job(
        &mut self,
        job_id: i64,
        lease: Option<DateTime<Utc>>,
        error: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let done = sqlx::query(sql::jobs::KILL)
            .bind(job_id)
            .bind(error)
            .bind(lease.as_ref().map(ts))
            .bind(ts(&now))
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn insert_messages(
        &mut self,
        messages: &[(&PostedMessage, DateTime<Utc>)],
    ) -> sqlx::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = messages
            .iter()
            .map(|(m, now)| {
                serde_json::json!([
                    m.approval_id.to_string(),
                    m.channel,
                    m.ts,
                    m.kind.as_str(),
                    m.permalink,
                    m.rendered_version,
                    ts(now),
                ])
            })
            .collect();
        sqlx::query(sql::messages::INSERT_JSON)
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    async fn mark_rendered(&mut self, rows: &[(&MessageKey, ApprovalId, i64)]) -> sqlx::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<_> = rows
            .iter()
            .map(|(key, id, version)| {
                serde_json::json!([key.channel, key.ts, id.to_string(), version])
            })
            .collect();
        let (update, filter) = sql::messages::MARK_RENDERED;
        let (before, after) = sql::messages::RENDERED_JSON;
        self.defer()
            .push(update)
            .push(before)
            .push_bind(serde_json::Value::Array(rows).to_string())
            .push(after)
            .push(filter);
        Ok(())
    }
}
