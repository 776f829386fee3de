//! New requests on PostgreSQL: the look for an open request with the same key, under
//! its advisory lock, and the insert (see [`crate::store::requests`]).

use super::tx::column;
use super::*;
use crate::store::by_position;
use crate::store::requests::{self, RequestKey, request_key, unrepeated};

impl PgTx {
    /// `Tx::insert_approvals`: inserts the rows that repeat no open request (in the
    /// store or earlier in `rows`) and reuse no idempotency key; answers their ids.
    ///
    /// The look for an open request is part of the insert, one round trip on the
    /// writer's serial path instead of two. Repeats within `rows` are dropped first, so
    /// a row never needs to see one inserted by the same statement. The statement then
    /// locks each idempotency key of the batch and each remaining request key until
    /// commit (advisory locks, taken in one order by every writer; migration 0026's
    /// `signoff_open_requests`), so that a replica inserting the same request, or
    /// using the same idempotency key, waits for this transaction and then sees its row:
    /// the function's lookup, a statement of its own inside it, takes its snapshot
    /// after the locks, and the insert reads no table but through that lookup and its
    /// conflict checks, which see the latest committed rows. The function looks each
    /// key up through unique indexes, a plan it keeps at any table size (migration
    /// 0014; migration 0017 leaves out requests past their expiry).
    pub(super) async fn insert_requests(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<HashSet<ApprovalId>> {
        let now = requests::now_of(rows);
        // Every key of the batch, a repeat's too: `bind_key` later binds it under the
        // lock this statement takes.
        let keys = idempotency_keys(rows);
        let rows = unrepeated(rows);
        let mut inserted = HashSet::with_capacity(rows.len());
        if rows.is_empty() {
            return Ok(inserted);
        }
        let mut query = open_keys(&rows, &keys, now);
        query.push(concat!(
            ")), added AS (",
            insert_approvals_sql!(),
            "SELECT * FROM unnest("
        ));
        // One statement of one shape for any number of rows (each column an array).
        let routings: Vec<serde_json::Value> = rows
            .iter()
            .map(|(a, _)| serde_json::to_value(&a.routing).unwrap_or_default())
            .collect();
        unnest_arrays!(query,
            column(&rows, |(a, _)| a.id.0) => "uuid[]",
            column(&rows, |(a, _)| a.tool_name.as_str()) => "text[]",
            column(&rows, |(a, _)| &a.parameters) => "jsonb[]",
            column(&rows, |(a, _)| a.risk_tier.as_str()) => "text[]",
            column(&rows, |(a, _)| a.status.as_str()) => "text[]",
            column(&rows, |(a, _)| a.requested_by.as_deref()) => "text[]",
            column(&rows, |(a, _)| a.decided_by.as_deref()) => "text[]",
            column(&rows, |(a, _)| a.decision_at) => "timestamptz[]",
            column(&rows, |(a, _)| a.expires_at) => "timestamptz[]",
            column(&rows, |(a, _)| a.created_at) => "timestamptz[]",
            column(&rows, |(a, _)| a.summary.as_deref()) => "text[]",
            column(&rows, |(a, _)| a.context.as_deref()) => "text[]",
            column(&rows, |(a, _)| a.reason.as_deref()) => "text[]",
            column(&rows, |(a, _)| a.original_parameters.as_ref()) => "jsonb[]",
            column(&rows, |(a, _)| a.token_name.as_deref()) => "text[]",
            column(&rows, |(a, _)| a.idempotency_key.as_deref()) => "text[]",
            column(&rows, |(a, _)| a.callback_url.as_deref()) => "text[]",
            column(&rows, |(a, _)| i32::try_from(a.required_approvals)
                .unwrap_or(i32::MAX)) => "int4[]",
            routings => "jsonb[]",
            column(&rows, |(a, _)| a.executed_at) => "timestamptz[]",
            column(&rows, |(a, _)| a.version) => "int8[]",
            column(&rows, |(a, _)| a.server.as_deref()) => "text[]",
            column(&rows, |(_, params_sha256)| *params_sha256) => "text[]",
            column(&rows, |(a, _)| jobs::first_nudge(a)) => "timestamptz[]",
        );
        // Skips a row whose key is open, an idempotency key a repeat joined with (both
        // as `open` found them, after the locks), and one a request opened with (a
        // unique index); each open request inserted becomes the newest of its key in
        // `request_keys`.
        query.push(concat!(
            ") AS r(",
            opening_columns!(),
            ", params_sha256, nudge_at) \
             WHERE NOT EXISTS (SELECT 1 FROM open o WHERE o.token_name = r.token_name \
               AND o.tool_name = r.tool_name AND o.params_sha256 = r.params_sha256) \
             AND (r.idempotency_key IS NULL OR NOT EXISTS (SELECT 1 FROM open o \
               WHERE o.token_name = r.token_name AND o.idempotency_key = r.idempotency_key)) \
             ON CONFLICT DO NOTHING \
             RETURNING id, ctid::text AS loc, token_name, tool_name, params_sha256, status), \
             keyed AS (INSERT INTO request_keys (token_name, tool_name, params_sha256, approval_id) \
               SELECT token_name, tool_name, params_sha256, id FROM added \
               WHERE status IN ('pending', 'approved') AND token_name IS NOT NULL \
               ON CONFLICT (token_name, tool_name, params_sha256) \
               DO UPDATE SET approval_id = excluded.approval_id) \
             SELECT id, loc FROM added",
        ));
        // Where each new row lies lets a change in this transaction (a spend at once)
        // write it unread: the row is this transaction's, locked by its insert.
        let added: Vec<(uuid::Uuid, String)> =
            query.build_query_as().fetch_all(self.conn().await?).await?;
        for (id, location) in added {
            self.locations.insert(ApprovalId(id), location);
            inserted.insert(ApprovalId(id));
        }
        self.timers.open(
            rows.iter()
                .map(|(approval, _)| *approval)
                .filter(|approval| inserted.contains(&approval.id)),
        );
        Ok(inserted)
    }

    /// `Tx::find_existing`: for each of `rows`, the approval that kept it from being
    /// inserted, in one statement for the whole batch.
    pub(super) async fn find_requests(
        &mut self,
        rows: &[(&Approval, &str)],
    ) -> sqlx::Result<Vec<Option<ApprovalId>>> {
        let found: Vec<(i64, Uuid)> = sqlx::query_as(
            // Per row: the approval its idempotency key names first (opened or joined
            // with it); else the newest request with the same tool and parameters, if
            // it is open at the row's creation (its
            // key is locked: see `insert_requests`). Each lookup is an equality on a
            // unique index, so even a plan kept from when the tables were empty reads
            // them through their indexes (a join of `request_keys` to the approvals
            // was planned as a scan of the approvals then).
            "SELECT k.n - 1, found.id \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
               WITH ORDINALITY AS k(token, idempotency_key, tool, sha, at, n) \
             CROSS JOIN LATERAL ( \
               SELECT id FROM ( \
                 SELECT id, 0 AS rank FROM pending_approvals \
                 WHERE token_name = k.token AND idempotency_key = k.idempotency_key \
                 UNION ALL \
                 SELECT approval_id, 1 FROM joined_idempotency_keys \
                 WHERE token_name = k.token AND idempotency_key = k.idempotency_key \
                 UNION ALL \
                 SELECT id, 2 FROM pending_approvals \
                 WHERE id = (SELECT approval_id FROM request_keys \
                             WHERE token_name = k.token AND tool_name = k.tool AND params_sha256 = k.sha) \
                   AND status IN ('pending', 'approved') AND expires_at > k.at) AS one \
               ORDER BY rank LIMIT 1) AS found",
        )
        .bind(column(rows, |(a, _)| a.token_name.as_deref().unwrap_or_default()))
        .bind(column(rows, |(a, _)| a.idempotency_key.as_deref()))
        .bind(column(rows, |(a, _)| a.tool_name.as_str()))
        .bind(column(rows, |(_, params_sha256)| *params_sha256))
        .bind(column(rows, |(a, _)| a.created_at))
        .fetch_all(self.conn().await?)
        .await?;
        Ok(by_position(
            rows.len(),
            found.into_iter().map(|(n, id)| (n, ApprovalId(id))),
        ))
    }

    /// `Tx::bind_joined_key`: see [`bind_key_sql`]. The batch's insert locked the key
    /// until commit (`insert_requests`), so no other writer binds it or opens a request
    /// with it meanwhile: what this sees of the key stays true until the commit.
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
            .bind(approval.0)
            .execute(self.conn().await?)
            .await?;
        let named = self.named_by_key(token, key).await?;
        named.ok_or(sqlx::Error::RowNotFound)
    }

    /// The approval `token`'s `key` names, if any (see [`named_by_key_sql`]).
    async fn named_by_key(&mut self, token: &str, key: &str) -> sqlx::Result<Option<ApprovalId>> {
        let named: Option<Uuid> = sqlx::query_scalar(named_by_key_sql!())
            .bind(token)
            .bind(key)
            .fetch_one(self.conn().await?)
            .await?;
        Ok(named.map(ApprovalId))
    }
}

/// The start of the insert's statement: the clause `open`, the keys among `rows` whose
/// newest request is open and the idempotency `keys` a repeat has bound, each key
/// locked first (`signoff_open_requests`, migration 0026).
fn open_keys(
    rows: &[&(&Approval, &str)],
    keys: &[(&str, &str)],
    now: DateTime<Utc>,
) -> QueryBuilder<Postgres> {
    let requests: Vec<RequestKey> = rows.iter().copied().filter_map(request_key).collect();
    let mut query = QueryBuilder::<Postgres>::new(
        "WITH open AS MATERIALIZED (SELECT * FROM signoff_open_requests(",
    );
    unnest_arrays!(query,
        column(&requests, |k| k.0.as_str()) => "text[]",
        column(&requests, |k| k.1.as_str()) => "text[]",
        column(&requests, |k| k.2.as_str()) => "text[]",
        now => "timestamptz",
        column(keys, |k| k.0) => "text[]",
        column(keys, |k| k.1) => "text[]",
    );
    query
}

/// The idempotency keys of `rows` (token and key), each once.
fn idempotency_keys<'a>(rows: &[(&'a Approval, &str)]) -> Vec<(&'a str, &'a str)> {
    let mut keys: Vec<(&str, &str)> = rows
        .iter()
        .filter_map(|(approval, _)| {
            Some((
                approval.token_name.as_deref()?,
                approval.idempotency_key.as_deref()?,
            ))
        })
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}
