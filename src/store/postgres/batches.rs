//! Batching's statements on PostgreSQL (see `ops::batching`). Replicas share the
//! table: a join locks the open batch it joins until commit, and the post closes a
//! batch by deleting its row, which waits for that lock. So either the join commits
//! first and the post lists it, or the join no longer finds the batch.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::tx::PgTx;
use crate::approval::ApprovalId;
use crate::store::backend::BatchTx;
use crate::store::sql::batches;

impl BatchTx for PgTx {
    async fn open_batch(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        max: i64,
    ) -> sqlx::Result<Option<(ApprovalId, i64)>> {
        let row: Option<(Uuid, i64)> = sqlx::query_as(batches::OPEN_LOCKED)
            .bind(key)
            .bind(now)
            .bind(expires_at)
            .bind(max)
            .fetch_optional(self.conn().await?)
            .await?;
        Ok(row.map(|(leader, size)| (ApprovalId(leader), size)))
    }

    async fn start_batch(
        &mut self,
        leader: ApprovalId,
        key: &str,
        closes_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        sqlx::query(batches::START)
            .bind(leader.0)
            .bind(key)
            .bind(closes_at)
            .execute(self.conn().await?)
            .await?;
        member(self, leader, leader, 0).await
    }

    async fn join_batch(
        &mut self,
        leader: ApprovalId,
        id: ApprovalId,
        position: i64,
    ) -> sqlx::Result<()> {
        sqlx::query(batches::GROW)
            .bind(leader.0)
            .execute(self.conn().await?)
            .await?;
        member(self, leader, id, position).await
    }

    async fn close_batch(&mut self, leader: ApprovalId) -> sqlx::Result<Vec<ApprovalId>> {
        sqlx::query(batches::CLOSE)
            .bind(leader.0)
            .execute(self.conn().await?)
            .await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(batches::MEMBERS_OF_LEADER)
            .bind(leader.0)
            .fetch_all(self.conn().await?)
            .await?;
        Ok(ids.into_iter().map(ApprovalId).collect())
    }
}

async fn member(
    tx: &mut PgTx,
    leader: ApprovalId,
    id: ApprovalId,
    position: i64,
) -> sqlx::Result<()> {
    sqlx::query(batches::MEMBER)
        .bind(id.0)
        .bind(leader.0)
        .bind(position)
        .execute(tx.conn().await?)
        .await?;
    Ok(())
}
