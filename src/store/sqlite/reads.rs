//! Reads for the SQLite backend, on the reader pool.

use std::collections::HashMap;

use super::*;
use crate::jobs::Due;
use crate::store::{GIVEN_UP_SHOWN, OVERDUE_GRACE, sql};

#[derive(Clone)]
pub(crate) struct SqliteReads {
    pub(super) pool: std::sync::Arc<ReadPool<sqlx::SqliteConnection>>,
}

impl SqliteReads {
    /// The writer's fence, which holds these reads back until what they saw is durable.
    pub(crate) fn fence(&self) -> Option<&std::sync::Arc<crate::store::durable::Fence>> {
        self.pool.fence()
    }

    /// The approvals of `ids` that exist, in one statement.
    async fn read_many(&self, ids: &[ApprovalId]) -> Result<Vec<Approval>> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let query = sqlx::query(select_approvals!(
            "WHERE id IN (SELECT value FROM json_each($1))"
        ))
        .bind(serde_json::to_string(&ids).unwrap_or_default());
        let rows = on_conn!(self, |c| fetch_approvals(c, query));
        Ok(rows.into_iter().map(|(_, approval)| approval).collect())
    }
}

impl Reads for SqliteReads {
    async fn get(&self, id: ApprovalId) -> Result<Option<Approval>> {
        Ok(on_conn!(self, |c| load_approval(c, id)))
    }

    async fn get_linked(&self, id: ApprovalId) -> Result<Option<(Approval, Option<String>)>> {
        Ok(on_conn!(self, |c| load_linked(c, id)))
    }

    async fn get_shown_in(
        &self,
        id: ApprovalId,
        message: &MessageKey,
    ) -> Result<Option<(Approval, bool)>> {
        Ok(on_conn!(self, |c| load_shown_in(c, id, message)))
    }

    async fn get_many(&self, ids: &[ApprovalId]) -> Result<Vec<Approval>> {
        match self.read_many(ids).await {
            // One row signoff cannot decode (another program's: a number beyond `f64`
            // in its parameters, say) fails the statement's whole answer: read them one
            // by one instead, passing over that one.
            Err(StoreError::Database(sqlx::Error::Decode(_))) => {
                let mut approvals = Vec::with_capacity(ids.len());
                for &id in ids {
                    match self.get(id).await {
                        Ok(found) => approvals.extend(found),
                        Err(StoreError::Database(sqlx::Error::Decode(error))) => tracing::warn!(
                            %id, %error, "a row of pending_approvals cannot be read: passed over"
                        ),
                        Err(error) => return Err(error),
                    }
                }
                Ok(approvals)
            }
            read => read,
        }
    }

    async fn health(&self, now: DateTime<Utc>) -> Result<HealthCounts> {
        // `status IN ('pending', 'approved')` repeats the condition of the open index:
        // SQLite uses a partial index only for a query that states its condition.
        let row = on_conn!(self, |c| {
            sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM pending_approvals \
                WHERE status IN ('pending', 'approved') AND status = 'pending'), \
               (SELECT COUNT(*) FROM pending_approvals WHERE status IN ('pending', 'approved') AND expires_at < $1), \
               (SELECT COUNT(*) FROM jobs WHERE (state = 'ready' AND kind <> 'callback' AND due_at < $1) \
                  OR (state = 'dead' AND kind <> 'callback' AND due_at >= $2)), \
               (SELECT COUNT(*) FROM jobs WHERE state = 'dead' AND kind = 'callback' AND due_at >= $2)",
        )
        .bind(ts(&(now - OVERDUE_GRACE)))
        .bind(ts(&(now - GIVEN_UP_SHOWN)))
        .fetch_one(c)
        });
        let queued: Vec<(String, i64, String)> = on_conn!(self, |c| sqlx::query_as(
            "SELECT j.payload ->> '$.channel', COUNT(*), MIN(a.expires_at) \
             FROM jobs j JOIN pending_approvals a ON a.id = j.approval_id \
             WHERE j.state = 'ready' AND j.kind = 'slack_post' AND a.status = 'pending' \
               AND (j.payload ->> '$.kind' = 'main' OR j.due_at <= $1) \
             GROUP BY 1 ORDER BY 1",
        )
        .bind(ts(&(now + QUEUED_WITHIN)))
        .fetch_all(c));
        let mut queued_posts = Vec::with_capacity(queued.len());
        for (channel, posts, first_expiry) in queued {
            let first_expiry = parse_ts(&first_expiry)?;
            queued_posts.push(QueuedPosts {
                channel,
                posts,
                first_expiry,
            });
        }
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
            .bind(id.to_string())
            .fetch_all(c));
        Ok(posted_messages(id, &rows)?)
    }

    async fn get_with_messages(&self, id: ApprovalId) -> Result<Option<WithMessages>> {
        const SQL: &str = concat!(
            "SELECT (",
            select_approvals!("WHERE id = $1"),
            "), (SELECT json_group_array(json_object(",
            message_object_fields!(),
            ")) FROM (SELECT * FROM slack_messages WHERE approval_id = $1 \
               ORDER BY created_at, channel)), \
             (SELECT group_concat(approval_id, ',' ORDER BY position) \
               FROM slack_batch_members WHERE leader_id = \
               (SELECT leader_id FROM slack_batch_members WHERE approval_id = $1))"
        );
        let row = on_conn!(self, |c| sqlx::query(SQL).bind(id.to_string()).fetch_one(c));
        let Some((_, approval)) = parse_approvals(row.try_get(0)?)?.pop() else {
            return Ok(None);
        };
        let batch = match row.try_get::<Option<&str>, _>(2)? {
            Some(ids) => ids.split(',').map(parse_id).collect::<sqlx::Result<_>>()?,
            None => Vec::new(),
        };
        Ok(Some(WithMessages {
            approval,
            messages: decode_messages(id, row.try_get(1)?)?,
            batch,
        }))
    }

    async fn main_permalinks(&self, ids: &[ApprovalId]) -> Result<HashMap<ApprovalId, String>> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let rows: Vec<(String, String)> = on_conn!(self, |c| sqlx::query_as(
            "SELECT approval_id, permalink FROM slack_messages \
             WHERE approval_id IN (SELECT value FROM json_each($1)) AND kind = 'main' \
             AND permalink IS NOT NULL",
        )
        .bind(serde_json::to_string(&ids).unwrap_or_default())
        .fetch_all(c));
        let mut links = HashMap::with_capacity(rows.len());
        for (id, link) in rows {
            links.insert(parse_id(&id)?, link);
        }
        Ok(links)
    }

    async fn slack_planned(&self, id: ApprovalId) -> Result<bool> {
        Ok(on_conn!(self, |c| sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE approval_id = $1 AND kind = 'slack_post') \
             OR EXISTS (SELECT 1 FROM slack_messages WHERE approval_id = $1) \
             OR EXISTS (SELECT 1 FROM slack_batch_members WHERE approval_id = $1)",
        )
        .bind(id.to_string())
        .fetch_one(c)))
    }

    async fn unclassified_row(&self, id: ApprovalId) -> Result<bool> {
        Ok(on_conn!(self, |c| sqlx::query_scalar(
            sql::UNCLASSIFIED_ROW
        )
        .bind(id.to_string())
        .fetch_one(c)))
    }

    async fn list_ids(&self, status: Option<crate::approval::Status>) -> Result<Vec<ApprovalId>> {
        let ids: Vec<String> = on_conn!(self, |c| sqlx::query_scalar(
            "SELECT id FROM pending_approvals WHERE $1 IS NULL OR status = $1 \
             ORDER BY created_at, lower(id)",
        )
        .bind(status.map(|status| status.as_str()))
        .fetch_all(c));
        Ok(parse_ids(&ids)?)
    }

    async fn due_jobs(&self, now: DateTime<Utc>, limit: i64, which: Due) -> Result<DueJobs> {
        let rows = on_conn!(self, |c| sqlx::query(sql::jobs::due(which))
            .bind(ts(&now))
            .bind(limit)
            .fetch_all(c));
        Ok(due_jobs(
            &rows,
            |row| parse_id(row.try_get("approval_id")?),
            payload,
        )?)
    }

    async fn unclassified(&self, limit: i64, skip: &[ApprovalId]) -> Result<Vec<ApprovalId>> {
        let skip = serde_json::to_string(skip).unwrap_or_else(|_| "[]".to_owned());
        let ids: Vec<Option<String>> = on_conn!(self, |c| {
            sqlx::query_scalar(
                "SELECT id FROM pending_approvals WHERE routing IS NULL AND status = 'pending' \
             AND id NOT IN (SELECT value FROM json_each($2)) ORDER BY created_at LIMIT $1",
            )
            .bind(limit)
            .bind(&skip)
            .fetch_all(c)
        });
        // A row whose id is no UUID (inserted before the insert trigger refused such
        // rows) is passed over, so that it does not stop the rows after it.
        Ok(ids
            .into_iter()
            .filter_map(|id| match id.as_deref().map(parse_id) {
                Some(Ok(id)) => Some(id),
                _ => {
                    tracing::warn!(
                        id,
                        "a row of pending_approvals has no UUID for an id: passed over"
                    );
                    None
                }
            })
            .collect())
    }

    async fn find_in_range(
        &self,
        first: ApprovalId,
        last: ApprovalId,
        limit: i64,
    ) -> Result<Vec<ApprovalId>> {
        // Ids are TEXT: signoff writes them lowercase, another program writing to the
        // shared table may not. Two ranges of the primary key, no scan.
        let (first, last) = (first.to_string(), last.to_string());
        let ids: Vec<String> = on_conn!(self, |c| sqlx::query_scalar(
            "SELECT id FROM pending_approvals WHERE id BETWEEN $1 AND $2 \
             OR id BETWEEN upper($1) AND upper($2) ORDER BY id LIMIT $3",
        )
        .bind(first)
        .bind(last)
        .bind(limit)
        .fetch_all(c));
        Ok(parse_ids(&ids)?)
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
        let ids: Vec<String> = on_conn!(self, |c| sqlx::query_scalar(sql::batches::MEMBERS)
            .bind(id.to_string())
            .fetch_all(c));
        Ok(parse_ids(&ids)?)
    }

    async fn token_list(&self) -> Result<Vec<TokenInfo>> {
        let rows = on_conn!(self, |c| sqlx::query(sql::tokens::LIST).fetch_all(c));
        let mut tokens = Vec::with_capacity(rows.len());
        for row in rows {
            tokens.push(TokenInfo {
                name: row.try_get("name")?,
                created_at: parse_ts(row.try_get("created_at")?)?,
                revoked_at: parse_opt_ts(row.try_get("revoked_at")?)?,
            });
        }
        Ok(tokens)
    }

    async fn token_lookup(&self, hash: &str) -> Result<Option<String>> {
        Ok(on_conn!(self, |c| sqlx::query_scalar(sql::tokens::LOOKUP)
            .bind(hash)
            .fetch_optional(c)))
    }
}
