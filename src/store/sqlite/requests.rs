//! New requests on SQLite: the duplicate check and the insert (see
//! [`crate::store::requests`]). This writer owns the file and asks inside `BEGIN
//! IMMEDIATE`, so nothing slips in between the look and the insert.

use super::*;
use crate::store::requests::{self, RequestKey, request_key, unrepeated};

impl SqliteTx {
    /// `Tx::insert_approvals`: inserts the rows that repeat no pending request (in the
    /// store or earlier in `rows`) and reuse no idempotency key; answers their ids.
    pub(super) async fn insert_requests(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<HashSet<ApprovalId>> {
        let pending = self.open_requests(rows).await?;
        let rows = unrepeated(rows, &pending);
        let mut inserted = HashSet::with_capacity(rows.len());
        for chunk in pow2_chunks(&rows, 64) {
            let mut query = QueryBuilder::new(insert_approvals_sql!());
            query.push_values(chunk, |mut row, (a, params_sha256)| {
                row.push_bind(a.id.to_string())
                    .push_bind(a.tool_name.clone())
                    .push_bind(crate::canonical::to_string(&a.parameters))
                    .push_bind(a.risk_tier.as_str())
                    .push_bind(a.status.as_str())
                    .push_bind(a.requested_by.clone())
                    .push_bind(a.decided_by.clone())
                    .push_bind(a.decision_at.as_ref().map(ts))
                    .push_bind(ts(&a.expires_at))
                    .push_bind(ts(&a.created_at))
                    .push_bind(a.summary.clone())
                    .push_bind(a.context.clone())
                    .push_bind(a.reason.clone())
                    .push_bind(
                        a.original_parameters
                            .as_ref()
                            .map(crate::canonical::to_string),
                    )
                    .push_bind(a.token_name.clone())
                    .push_bind(a.idempotency_key.clone())
                    .push_bind(a.callback_url.clone())
                    .push_bind(i64::from(a.required_approvals))
                    .push_bind(serde_json::to_string(&a.routing).unwrap_or_default())
                    .push_bind(a.executed_at.as_ref().map(ts))
                    .push_bind(a.version)
                    .push_bind(a.server.clone())
                    .push_bind(params_sha256.to_string());
            });
            // Skips a reused idempotency key (a unique index). The rowids let a change
            // in this transaction (a spend at once) write the new rows unread.
            query.push(" ON CONFLICT DO NOTHING RETURNING id, rowid");
            let rows: Vec<(String, i64)> =
                query.build_query_as().fetch_all(self.conn().await?).await?;
            for (id, rowid) in rows {
                let id = parse_id(&id)?;
                self.rowids.insert(id, rowid);
                inserted.insert(id);
            }
        }
        Ok(inserted)
    }

    /// `Tx::find_existing`: the approval that kept a request from being inserted.
    pub(super) async fn find_request(
        &mut self,
        token: &str,
        idempotency_key: Option<&str>,
        tool: &str,
        params_sha256: &str,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Option<ApprovalId>> {
        // The same idempotency key first; else the newest request with the same tool
        // and parameters, if it is open.
        let id: Option<String> = sqlx::query_scalar(
            "SELECT id FROM ( \
               SELECT id, 0 AS rank FROM pending_approvals \
               WHERE token_name = $1 AND idempotency_key = $2 \
               UNION ALL \
               SELECT id, 1 FROM (SELECT id, status, expires_at FROM pending_approvals \
                 INDEXED BY pending_approvals_request \
                 WHERE token_name = $1 AND tool_name = $3 AND params_sha256 = $4 \
                 ORDER BY rowid DESC LIMIT 1) \
               WHERE status = 'pending' OR (status = 'approved' AND expires_at > $5)) \
             ORDER BY rank LIMIT 1",
        )
        .bind(token)
        .bind(idempotency_key)
        .bind(tool)
        .bind(params_sha256)
        .bind(ts(&now))
        .fetch_optional(self.conn().await?)
        .await?;
        id.as_deref().map(parse_id).transpose()
    }

    /// The keys among `rows` that have an open request already: one index seek per
    /// key (to its newest request), however many requests with that key came before.
    async fn open_requests(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<HashSet<RequestKey>> {
        let keys: Vec<RequestKey> = rows.iter().filter_map(request_key).collect();
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let pending: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2 FROM json_each($1) AS k \
             WHERE (SELECT status = 'pending' OR (status = 'approved' AND expires_at > $2) \
                    FROM pending_approvals INDEXED BY pending_approvals_request \
                    WHERE token_name = k.value ->> 0 AND tool_name = k.value ->> 1 \
                    AND params_sha256 = k.value ->> 2 ORDER BY rowid DESC LIMIT 1)",
        )
        .bind(serde_json::to_string(&keys).unwrap_or_default())
        .bind(ts(&requests::now_of(rows)))
        .fetch_all(self.conn().await?)
        .await?;
        Ok(pending.into_iter().collect())
    }
}
