//! The outbox's statements on PostgreSQL: the jobs (inserted with the change that causes
//! them, claimed with a lease, finished, retried, deferred or given up) and the Slack
//! messages they posted.

use super::tx::{PgTx, column};
use super::*;
use crate::jobs::Job;
use crate::store::backend::OutboxTx;

impl OutboxTx for PgTx {
    async fn insert_jobs(&mut self, jobs: &[(NewJob, DateTime<Utc>)]) -> sqlx::Result<()> {
        // In the order given (`unnest` keeps it), so ids rise as they were planned.
        self.deferred.push(|q| {
            q.push(sql::jobs::INSERT).push("SELECT * FROM unnest(");
            unnest_arrays!(q,
                column(jobs, |(job, _)| job.approval_id.0) => "uuid[]",
                column(jobs, |(job, _)| job.job.kind()) => "text[]",
                column(jobs, |(job, _)| job.job.payload()) => "jsonb[]",
                column(jobs, |(job, _)| job.due_at) => "timestamptz[]",
                column(jobs, |(_, planned)| *planned) => "timestamptz[]",
            );
            q.push(")");
        });
        Ok(())
    }

    async fn update_if_newer(
        &mut self,
        shown: &[(ApprovalId, i64, DateTime<Utc>)],
    ) -> sqlx::Result<()> {
        if shown.is_empty() {
            return Ok(());
        }
        let update = Job::SlackUpdate {};
        self.deferred.push(|q| {
            q.push(sql::jobs::INSERT)
                .push("SELECT s.id, ")
                .push_bind(update.kind())
                .push(", ")
                .push_bind(update.payload())
                .push(sql::jobs::IF_NEWER.0)
                .push("unnest(");
            unnest_arrays!(q,
                column(shown, |(id, ..)| id.0) => "uuid[]",
                column(shown, |(_, version, _)| *version) => "bigint[]",
                column(shown, |(.., at)| *at) => "timestamptz[]",
            );
            q.push(") AS r(id, shown, at)").push(sql::jobs::IF_NEWER.1);
        });
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
        let (ids, leases): (Vec<i64>, Vec<Option<DateTime<Utc>>>) = jobs.iter().copied().unzip();
        // Only the rows whose leases are still the claims' (see `DueJob::lease_until`).
        // What is kept back rides along: none of it writes a job row.
        let (conn, deferred) = self.parts()?;
        let rows = deferred
            .run_with(conn, |q| {
                q.push("DELETE FROM jobs WHERE id = ANY(")
                    .push_bind(ids.clone())
                    .push("::bigint[]) AND (id, locked_until) IN (SELECT * FROM unnest(")
                    .push_bind(ids)
                    .push("::bigint[], ")
                    .push_bind(leases)
                    .push("::timestamptz[])) RETURNING id");
            })
            .await?;
        rows.iter().map(|row| row.try_get(0)).collect()
    }

    async fn claim_jobs(
        &mut self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        jobs: &[(i64, Option<DateTime<Utc>>)],
    ) -> sqlx::Result<Vec<(i64, i32)>> {
        let (ids, ats): (Vec<i64>, Vec<Option<DateTime<Utc>>>) = jobs.iter().copied().unzip();
        let rows: Vec<(i64, i32, bool)> = sqlx::query_as(sql::jobs::CLAIM_ARRAYS)
            .bind(now)
            .bind(lease_until)
            .bind(ids)
            .bind(ats)
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
            .bind(at)
            .bind(error)
            .bind(lease)
            .execute(self.conn().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn defer_jobs(&mut self, jobs: &[crate::jobs::PutBack]) -> sqlx::Result<()> {
        let ids: Vec<i64> = jobs.iter().map(|(id, ..)| *id).collect();
        let leases: Vec<Option<DateTime<Utc>>> = jobs.iter().map(|(_, lease, _)| *lease).collect();
        let ats: Vec<DateTime<Utc>> = jobs.iter().map(|(.., at)| *at).collect();
        sqlx::query(
            "UPDATE jobs SET due_at = v.at, locked_until = NULL, attempts = attempts - 1 \
             FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS v(id, lease, at) \
             WHERE jobs.id = v.id AND jobs.locked_until = v.lease",
        )
        .bind(ids)
        .bind(leases)
        .bind(ats)
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
            .bind(lease)
            .bind(now)
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
        let each = |column: fn(&PostedMessage) -> Option<&str>| -> Vec<Option<&str>> {
            messages.iter().map(|(m, _)| column(m)).collect()
        };
        sqlx::query(sql::messages::INSERT_ARRAYS)
            .bind(
                messages
                    .iter()
                    .map(|(m, _)| m.approval_id.0)
                    .collect::<Vec<_>>(),
            )
            .bind(each(|m| Some(&m.channel)))
            .bind(each(|m| Some(&m.ts)))
            .bind(each(|m| Some(m.kind.as_str())))
            .bind(each(|m| m.permalink.as_deref()))
            .bind(
                messages
                    .iter()
                    .map(|(m, _)| m.rendered_version)
                    .collect::<Vec<_>>(),
            )
            .bind(messages.iter().map(|(_, now)| *now).collect::<Vec<_>>())
            .execute(self.conn().await?)
            .await?;
        Ok(())
    }

    async fn mark_rendered(&mut self, rows: &[(&MessageKey, ApprovalId, i64)]) -> sqlx::Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let (update, filter) = sql::messages::MARK_RENDERED;
        self.deferred.push(|q| {
            q.push(update).push("unnest(");
            unnest_arrays!(q,
                column(rows, |(key, ..)| key.channel.clone()) => "text[]",
                column(rows, |(key, ..)| key.ts.clone()) => "text[]",
                column(rows, |(_, id, _)| id.0) => "uuid[]",
                column(rows, |(.., version)| *version) => "bigint[]",
            );
            q.push(") AS v(channel, ts, approval_id, version)")
                .push(filter);
        });
        Ok(())
    }
}
