//! Signed audit checkpoints, appended in the transaction that appended the events (or
//! by the scheduler's `Store::checkpoint`, so the tail of a burst is signed within a
//! minute). The audit head is locked by then, so replicas never number two
//! checkpoints alike.

use chrono::{DateTime, Utc};

use super::super::backend::Tx;
use crate::audit::checkpoint::{self, Checkpoint};
use crate::signing::Signer;

/// The writer's signer, and the newest checkpoint it knows to be committed, `(seq, at)`:
/// never newer than the table's (it is set after a commit), and a checkpoint that is
/// not due after an older one is not due after a newer one either (both only grow), so
/// the table is read only when the known one says a checkpoint may be due: one
/// statement less in almost every batch.
pub(crate) struct Checkpoints {
    signer: Signer,
    known: Option<(i64, DateTime<Utc>)>,
}

impl Checkpoints {
    pub(crate) fn new(signer: Signer) -> Self {
        Checkpoints {
            signer,
            known: None,
        }
    }

    /// The newest checkpoint after a transaction that committed.
    pub(super) fn committed(&mut self, newest: Option<(i64, DateTime<Utc>)>) {
        if newest.is_some() {
            self.known = newest;
        }
    }
}

/// Appends a checkpoint of the chain as it stands if one is due at `now`; `head` is
/// the chain's head when this transaction just wrote it (else it is read, and locked).
/// Answers the newest checkpoint, for [`Checkpoints::committed`] once this commits.
pub(super) async fn append_if_due<T: Tx>(
    tx: &mut T,
    checkpoints: &Checkpoints,
    now: DateTime<Utc>,
    head: Option<(i64, String)>,
) -> sqlx::Result<Option<(i64, DateTime<Utc>)>> {
    let (seq, hash) = match head {
        Some(head) => head,
        None => tx.audit_head().await?,
    };
    if let Some(known) = checkpoints.known
        && !checkpoint::due(Some(known), seq, now)
    {
        return Ok(Some(known));
    }
    let newest = tx.newest_checkpoint().await?;
    let newest_at = newest.as_ref().map(|c| (c.seq, c.at));
    if !checkpoint::due(newest_at, seq, now) {
        return Ok(newest_at);
    }
    let n = newest.map_or(1, |c| c.n + 1);
    tx.insert_checkpoint(&Checkpoint::sign(&checkpoints.signer, n, seq, &hash, now))
        .await?;
    Ok(Some((seq, now)))
}
