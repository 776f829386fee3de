//! Reads for the PostgreSQL backend, on the reader pool. Its connections keep
//! PostgreSQL's default choice between planning each call and keeping one plan, so a
//! keyed read added here joins `the_readers_kept_plans_follow_the_tables_as_they_grow_on_postgres`
//! (`tests/store/operations.rs`): a plan kept from near-empty tables must walk an index.

use std::collections::HashMap;

use super::coalesced::Coalesced;
use super::*;
use crate::jobs::Due;
use crate::store::{GIVEN_UP_SHOWN, OVERDUE_GRACE, sql};

#[derive(Clone)]
pub(crate) struct PgReads {
    pub(super) pool: std::sync::Arc<ReadPool<sqlx::PgConnection>>,
    /// The reads each status get and message update makes, coalesced.
    pub(super) coalesced: Coalesced,
}

impl PgReads {
    /// The database server's clock now (`clock_timestamp()`, not the transaction's).
    pub(crate) async fn database_now(&self) -> Result<DateTime<Utc>> {
        Ok(on_conn!(self, |c| sqlx::query_scalar(
            "SELECT clock_timestamp()"
        )
        .fetch_one(c)))
    }
}

impl Reads for PgReads {
    async fn get(&self, id: ApprovalId) -> Result<Option<Approval>> {
        Ok(on_conn!(self, |c| load_approval(c, id)))
    }

    async fn get_linked(&self, id: ApprovalId) -> Result<Option<(Approval, Option<String>)>> {
        self.coalesced.linked.get(id).await
    }

    async fn get_shown_in(
        &self,
        id: ApprovalId,
        message: &MessageKey,
    ) -> Result<Option<(Approval, bool)>> {
        Ok(on_conn!(self, |c| load_shown_in(c, id, message)))
    }

    async fn get_many(&self, ids: &[ApprovalId]) -> Result<Vec<Approval>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let rows = on_conn!(self, |c| sqlx::query(select_approvals!(
            "WHERE id = ANY($1)"
        ))
        .bind(ids)
        .fetch_all(c));
        Ok(rows
            .iter()
            .filter_map(readable(approval_with_votes))
            .collect())
    }

    async fn health(&self, now: DateTime<Utc>) -> Result<HealthCounts> {
        // Stale ones: no open approval expires before the expiry watermark, so only
        // the index range from there to the grace time is read.
        let row = on_conn!(self, |c| {
            sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM pending_approvals WHERE status = 'pending'), \
               (SELECT COUNT(*) FROM pending_approvals WHERE status IN ('pending', 'approved') \
                  AND expires_at >= (SELECT below FROM expiry_watermark WHERE id = 1) AND expires_at < $1), \
               (SELECT COUNT(*) FROM jobs WHERE (state = 'ready' AND kind <> 'callback' AND due_at < $1) \
                  OR (state = 'dead' AND kind <> 'callback' AND due_at >= $2)), \
               (SELECT COUNT(*) FROM jobs WHERE state = 'dead' AND kind = 'callback' AND due_at >= $2)",
        )
        .bind(now - OVERDUE_GRACE)
        .bind(now - GIVEN_UP_SHOWN)
        .fetch_one(c)
        });
        let queued: Vec<(String, i64, DateTime<Utc>)> = on_conn!(self, |c| sqlx::query_as(
            "SELECT j.payload ->> 'channel', COUNT(*), MIN(a.expires_at) \
             FROM jobs j JOIN pending_approvals a ON a.id = j.approval_id \
             WHERE j.state = 'ready' AND j.kind = 'slack_post' AND a.status = 'pending' \
               AND (j.payload ->> 'kind' = 'main' OR j.due_at <= $1) \
             GROUP BY 1 ORDER BY 1",
        )
        .bind(now + QUEUED_WITHIN)
        .fetch_all(c));
        let queued_posts = queued
            .into_iter()
            .map(|(channel, posts, first_expiry)| QueuedPosts {
                channel,
                posts,
                first_expiry,
            })
            .collect();
        Ok(HealthCounts {
            pending: row.try_get(0)?,
            stale_pending: row.try_get(1)?,
            undelivered: row.try_get(2)?,
            callbacks_given_up: row.try_get(3)?,
            queued_posts,
        })
    }

    async fn messages(&self, id: ApprovalId) -> Result<Vec<PostedMessage>> {
        let rows = on_conn!(self, |c| sqlx::query(select_messages!())
            .bind(id.0)
            .fetch_all(c));
        Ok(posted_messages(id, &rows)?)
    }

    async fn get_with_messages(&self, id: ApprovalId) -> Result<Option<WithMessages>> {
        self.coalesced.with_messages.get(id).await
    }

    async fn main_permalinks(&self, ids: &[ApprovalId]) -> Result<HashMap<ApprovalId, String>> {
        let ids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
        let rows: Vec<(Uuid, String)> = on_conn!(self, |c| sqlx::query_as(
            "SELECT approval_id, permalink FROM slack_messages \
             WHERE approval_id = ANY($1) AND kind = 'main' AND permalink IS NOT NULL",
        )
        .bind(ids)
        .fetch_all(c));
        Ok(rows
            .into_iter()
            .map(|(id, link)| (ApprovalId(id), link))
            .collect())
    }

    async fn slack_planned(&self, id: ApprovalId) -> Result<bool> {
        Ok(on_conn!(self, |c| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE approval_id = $1 AND kind = 'slack_post') \
             OR EXISTS (SELECT 1 FROM slack_messages WHERE approval_id = $1) \
             OR EXISTS (SELECT 1 FROM slack_batch_members WHERE approval_id = $1)"
        )
        .bind(id.0)
        .fetch_one(c)))
    }

    async fn unclassified_row(&self, id: ApprovalId) -> Result<bool> {
        Ok(on_conn!(self, |c| sqlx::query_scalar(
            sql::UNCLASSIFIED_ROW
        )
        .bind(id.0)
        .fetch_one(c)))
    }

    async fn list_ids(&self, status: Option<crate::approval::Status>) -> Result<Vec<ApprovalId>> {
        let ids: Vec<Uuid> = on_conn!(self, |c| sqlx::query_scalar(
            "SELECT id FROM pending_approvals WHERE $1::text IS NULL OR status = $1 \
             ORDER BY created_at, id"
        )
        .bind(status.map(|status| status.as_str()))
        .fetch_all(c));
        Ok(ids.into_iter().map(ApprovalId).collect())
    }

    async fn due_jobs(&self, now: DateTime<Utc>, limit: i64, which: Due) -> Result<DueJobs> {
        let rows = on_conn!(self, |c| sqlx::query(sql::jobs::due(which))
            .bind(now)
            .bind(limit)
            .fetch_all(c));
        Ok(due_jobs(
            &rows,
            |row| Ok(ApprovalId(row.try_get("approval_id")?)),
            payload,
        )?)
    }

    async fn unclassified(&self, limit: i64, skip: &[ApprovalId]) -> Result<Vec<ApprovalId>> {
        let skip: Vec<Uuid> = skip.iter().map(|id| id.0).collect();
        let ids: Vec<Uuid> = on_conn!(self, |c| {
            sqlx::query_scalar(
                "SELECT id FROM pending_approvals WHERE routing IS NULL AND status = 'pending' \
             AND NOT (id = ANY($2)) ORDER BY created_at LIMIT $1",
            )
            .bind(limit)
            .bind(&skip)
            .fetch_all(c)
        });
        Ok(ids.into_iter().map(ApprovalId).collect())
    }

    async fn find_in_range(
        &self,
        first: ApprovalId,
        last: ApprovalId,
        limit: i64,
    ) -> Result<Vec<ApprovalId>> {
        let ids: Vec<Uuid> = on_conn!(self, |c| sqlx::query_scalar(
            "SELECT id FROM pending_approvals WHERE id BETWEEN $1 AND $2 ORDER BY id LIMIT $3"
        )
        .bind(first.0)
        .bind(last.0)
        .bind(limit)
        .fetch_all(c));
        Ok(ids.into_iter().map(ApprovalId).collect())
    }

    async fn audit_head(&self) -> Result<(i64, String)> {
        let row = on_conn!(self, |c| sqlx::query(
            "SELECT seq, hash FROM audit_head WHERE id = 1"
        )
        .fetch_one(c));
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    async fn audit_bounds(&self) -> Result<crate::audit::checkpoint::Bounds> {
        let row = on_conn!(self, |c| sqlx::query(sql::AUDIT_BOUNDS).fetch_one(c));
        Ok(crate::audit::checkpoint::Bounds {
            head: row.try_get(0)?,
            lowest: row.try_get(1)?,
            highest: row.try_get(2)?,
        })
    }

    async fn audit_page(&self, after_seq: i64, limit: i64) -> Result<Vec<audit::Entry>> {
        let rows = on_conn!(self, |c| sqlx::query(
            "SELECT seq, approval_id, kind, actor, at, data, prev_hash, hash FROM audit_events \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after_seq)
        .bind(limit)
        .fetch_all(c));
        Ok(rows
            .iter()
            .map(entry_from_row)
            .collect::<sqlx::Result<_>>()?)
    }

    async fn audit_checkpoints(&self) -> Result<Vec<Checkpoint>> {
        let rows = on_conn!(self, |c| sqlx::query(sql::checkpoints::ALL).fetch_all(c));
        Ok(rows
            .iter()
            .map(checkpoint_from_row)
            .collect::<sqlx::Result<_>>()?)
    }

    async fn newest_checkpoint(&self) -> Result<Option<Checkpoint>> {
        let row = on_conn!(self, |c| sqlx::query(sql::checkpoints::NEWEST)
            .fetch_optional(c));
        Ok(row.as_ref().map(checkpoint_from_row).transpose()?)
    }

    async fn batch_members(&self, id: ApprovalId) -> Result<Vec<ApprovalId>> {
        let ids: Vec<Uuid> = on_conn!(self, |c| sqlx::query_scalar(sql::batches::MEMBERS)
            .bind(id.0)
            .fetch_all(c));
        Ok(ids.into_iter().map(ApprovalId).collect())
    }

    async fn token_list(&self) -> Result<Vec<TokenInfo>> {
        let rows = on_conn!(self, |c| sqlx::query(sql::tokens::LIST).fetch_all(c));
        let mut tokens = Vec::with_capacity(rows.len());
        for row in rows {
            tokens.push(TokenInfo {
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
                revoked_at: row.try_get("revoked_at")?,
            });
        }
        Ok(tokens)
    }

    async fn token_lookup(&self, hash: &str) -> Result<Option<String>> {
        Ok(on_conn!(self, |c| sqlx::query_scalar(sql::tokens::LOOKUP,)
            .bind(hash)
            .fetch_optional(c)))
    }
}
