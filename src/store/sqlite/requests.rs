//! New requests on SQLite: the duplicate check and the insert (see
//! [`crate::store::requests`]). This writer owns the file and asks inside `BEGIN
//! IMMEDIATE`, so nothing slips in between the look and the insert.

use super::*;
use crate::store::by_position;
use crate::store::requests::{self, unrepeated};

impl SqliteTx {
    /// `Tx::insert_approvals`: inserts the rows that repeat no open request (in the
    /// store or earlier in `rows`) and reuse no idempotency key; answers their ids.
    /// The look for an open request is part of the insert (one statement, one hand-off
    /// to SQLite's worker instead of two): each row is inserted only if the newest
    /// request with its key is not open. Repeats within `rows` are dropped first, so a
    /// row never needs to see one inserted by the same statement.
    pub(super) async fn insert_requests(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<HashSet<ApprovalId>> {
        let now = ts(&requests::now_of(rows));
        let rows = unrepeated(rows);
        let mut inserted = HashSet::with_capacity(rows.len());
        for chunk in pow2_chunks(&rows, 64) {
            // The first query of a create batch, usually: it also opens the
            // transaction (see `SqliteTx::opening`).
            let mut query = QueryBuilder::new(self.opening().await?);
            query.push(insert_approvals_sql!());
            // A VALUES list as a table names its columns column1, column2, …: the
            // key is token_name (15), tool_name (2) and params_sha256 (23).
            query.push("SELECT * FROM (");
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
                    .push_bind(params_sha256.to_string())
                    .push_bind(jobs::first_nudge(a).as_ref().map(ts));
            });
            // One index seek per row, to the newest request with its key (a row
            // without a token matches none). The WHERE also keeps SQLite from reading
            // `ON CONFLICT` as a join.
            query.push(
                ") AS v WHERE NOT COALESCE((SELECT status IN ('pending', 'approved') \
                 AND expires_at > ",
            );
            query.push_bind(now.clone());
            query.push(
                " FROM pending_approvals INDEXED BY pending_approvals_request \
                 WHERE token_name = v.column15 AND tool_name = v.column2 \
                 AND params_sha256 = v.column23 ORDER BY rowid DESC LIMIT 1), 0) \
                 AND (v.column16 IS NULL OR NOT EXISTS (SELECT 1 FROM joined_idempotency_keys \
                   WHERE token_name = v.column15 AND idempotency_key = v.column16))",
            );
            // Skips an idempotency key a repeat joined with (above) and one a request
            // opened with (a unique index). The rowids let a change in this
            // transaction (a spend at once) write the new rows unread.
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

    /// `Tx::find_existing`: for each of `rows`, the approval that kept it from being
    /// inserted, in one statement (one hand-off to SQLite's worker) for the batch.
    pub(super) async fn find_requests(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<Vec<Option<ApprovalId>>> {
        let keys: Vec<serde_json::Value> = rows
            .iter()
            .map(|(a, params_sha256)| {
                serde_json::json!([
                    a.token_name.as_deref().unwrap_or_default(),
                    a.idempotency_key,
                    a.tool_name,
                    params_sha256,
                    ts(&a.created_at),
                ])
            })
            .collect();
        // Per row: the approval its idempotency key names first (opened or joined
        // with it); else the newest request with the same tool and parameters, if it
        // is open at the row's creation.
        let found: Vec<(i64, String)> = sqlx::query_as(
            "SELECT key, id FROM (SELECT k.key, COALESCE( \
               (SELECT id FROM pending_approvals \
                WHERE token_name = k.value ->> 0 AND idempotency_key = k.value ->> 1 LIMIT 1), \
               (SELECT approval_id FROM joined_idempotency_keys \
                WHERE token_name = k.value ->> 0 AND idempotency_key = k.value ->> 1), \
               (SELECT CASE WHEN status IN ('pending', 'approved') \
                         AND expires_at > k.value ->> 4 THEN id END \
                FROM pending_approvals INDEXED BY pending_approvals_request \
                WHERE token_name = k.value ->> 0 AND tool_name = k.value ->> 2 \
                  AND params_sha256 = k.value ->> 3 \
                ORDER BY rowid DESC LIMIT 1)) AS id \
             FROM json_each($1) AS k) WHERE id IS NOT NULL",
        )
        .bind(serde_json::Value::Array(keys).to_string())
        .fetch_all(self.conn().await?)
        .await?;
        let found = found
            .into_iter()
            .map(|(n, id)| Ok((n, parse_id(&id)?)))
            .collect::<sqlx::Result<Vec<_>>>()?;
        Ok(by_position(rows.len(), found))
    }

    /// `Tx::bind_joined_key`: see [`bind_key_sql`].
    pub(super) async fn bind_key(
        &mut self,
        token: &str,
        key: &str,
        approval: ApprovalId,
    ) -> sqlx::Result<ApprovalId> {
        // A retry with a key bound before (the usual case) binds nothing again.
        if let Some(named) = self.named_by_key(token, key).await? {
            return Ok(named);
        }
        sqlx::query(bind_key_sql!())
            .bind(token)
            .bind(key)
            .bind(approval.to_string())
            .execute(self.conn().await?)
            .await?;
        let named = self.named_by_key(token, key).await?;
        named.ok_or(sqlx::Error::RowNotFound)
    }

    /// The approval `token`'s `key` names, if any (see [`named_by_key_sql`]).
    async fn named_by_key(&mut self, token: &str, key: &str) -> sqlx::Result<Option<ApprovalId>> {
        let named: Option<String> = sqlx::query_scalar(named_by_key_sql!())
            .bind(token)
            .bind(key)
            .fetch_one(self.conn().await?)
            .await?;
        named.as_deref().map(parse_id).transpose()
    }
}
