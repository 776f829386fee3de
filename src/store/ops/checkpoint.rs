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

    /// The newest checkpoint after a transaction that committed, and the one it
    /// signed, logged: a record outside the database, with which `audit verify
    /// --checkpoint N:HASH` tells whether checkpoints were removed since.
    pub(super) fn committed(&mut self, looked: Looked) {
        if let Some((n, seq, hash)) = looked.signed {
            tracing::info!(checkpoint = %format!("{n}:{hash}"), event = seq, "audit checkpoint signed");
        }
        if looked.newest.is_some() {
            self.known = looked.newest;
        }
    }
}

/// What [`append_if_due`] found: the newest checkpoint `(seq, at)` when it looked,
/// and `(n, seq, hash)` of the one it signed, if it did.
#[derive(Default)]
pub(crate) struct Looked {
    newest: Option<(i64, DateTime<Utc>)>,
    signed: Option<(i64, i64, String)>,
}

/// Appends a checkpoint of the chain as it stands if one is due at `now`; `head` is
/// the chain's head when this transaction just wrote it (else it is read, and locked).
/// Answers what it found, for [`Checkpoints::committed`] once this commits.
pub(super) async fn append_if_due<T: Tx>(
    tx: &mut T,
    checkpoints: &Checkpoints,
    now: DateTime<Utc>,
    head: Option<(i64, String)>,
) -> sqlx::Result<Looked> {
    let (seq, hash) = match head {
        Some(head) => head,
        None => tx.stored_audit_head().await?,
    };
    if let Some(known) = checkpoints.known
        && !checkpoint::due(Some(known), seq, now)
    {
        return Ok(Looked {
            newest: Some(known),
            signed: None,
        });
    }
    let newest = tx.newest_checkpoint().await?;
    let newest_at = newest.as_ref().map(|c| (c.seq, c.at));
    if !checkpoint::due(newest_at, seq, now) {
        return Ok(Looked {
            newest: newest_at,
            signed: None,
        });
    }
    let n = newest.map_or(1, |c| c.n.saturating_add(1));
    tx.insert_checkpoint(&Checkpoint::sign(&checkpoints.signer, n, seq, &hash, now))
        .await?;
    Ok(Looked {
        newest: Some((seq, now)),
        signed: Some((n, seq, hash)),
    })
}
