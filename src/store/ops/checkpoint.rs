//! Signed audit checkpoints, appended in the transaction that appended the events (or
//! by the scheduler's `Store::checkpoint`, so the tail of a burst is signed within a
//! minute). The audit head is locked by then, so replicas never number two
//! checkpoints alike.

use chrono::{DateTime, Utc};

use super::super::backend::Tx;
use crate::audit::checkpoint::{self, Checkpoint};
use crate::signing::Signer;

/// Appends a checkpoint of the chain as it stands if one is due at `now`; `head` is
/// the chain's head when this transaction just wrote it (else it is read, and locked).
pub(super) async fn append_if_due<T: Tx>(
    tx: &mut T,
    signer: &Signer,
    now: DateTime<Utc>,
    head: Option<(i64, String)>,
) -> sqlx::Result<()> {
    let (seq, hash) = match head {
        Some(head) => head,
        None => tx.audit_head().await?,
    };
    let newest = tx.newest_checkpoint().await?;
    if !checkpoint::due(newest.as_ref().map(|c| (c.seq, c.at)), seq, now) {
        return Ok(());
    }
    let n = newest.map_or(1, |c| c.n + 1);
    tx.insert_checkpoint(&Checkpoint::sign(signer, n, seq, &hash, now))
        .await
}
