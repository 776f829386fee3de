//! Batching's statements on SQLite (see `ops::batching`). One writer: a join and the
//! post's close are never at the same time, so nothing needs locking.

use chrono::{DateTime, Utc};

use super::tx::SqliteTx;
use super::{parse_id, parse_ids, ts};
use crate::approval::ApprovalId;
use crate::store::backend::BatchTx;
use crate::store::sql::batches;

impl BatchTx for SqliteTx {
    async fn open_batch(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        max: i64,
    ) -> sqlx::Result<Option<(ApprovalId, i64)>> {
        let row: Option<(String, i64)> = sqlx::query_as(batches::OPEN)
            .bind(key)
            .bind(ts(&now))
            .bind(ts(&expires_at))
            .bind(max)
            .fetch_optional(self.conn().await?)
            .await?;
        row.map(|(leader, size)| Ok((parse_id(&leader)?, size)))
            .transpose()
    }

    async fn start_batch(
        &mut self,
        leader: ApprovalId,
        key: &str,
        closes_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        sqlx::query(batches::START)
            .bind(leader.to_string())
            .bind(key)
            .bind(ts(&closes_at))
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
            .bind(leader.to_string())
            .execute(self.conn().await?)
            .await?;
        member(self, leader, id, position).await
    }

    async fn close_batch(&mut self, leader: ApprovalId) -> sqlx::Result<Vec<ApprovalId>> {
        let leader = leader.to_string();
        sqlx::query(batches::CLOSE)
            .bind(&leader)
            .execute(self.conn().await?)
            .await?;
        let ids: Vec<String> = sqlx::query_scalar(batches::MEMBERS_OF_LEADER)
            .bind(&leader)
            .fetch_all(self.conn().await?)
            .await?;
        parse_ids(&ids)
    }
}

async fn member(
    tx: &mut SqliteTx,
    leader: ApprovalId,
    id: ApprovalId,
    position: i64,
) -> sqlx::Result<()> {
    sqlx::query(batches::MEMBER)
        .bind(id.to_string())
        .bind(leader.to_string())
        .bind(position)
        .execute(tx.conn().await?)
        .await?;
    Ok(())
}
