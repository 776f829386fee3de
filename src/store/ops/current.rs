//! The approvals a batch's events and timers change, kept once in memory.

use std::collections::HashMap;
use std::sync::Arc;

use crate::approval::{Approval, ApprovalId, Vote};
use crate::jobs::MessageKey;
use crate::store::backend::Tx;

/// The approvals a batch's events and timers change: read together (the events'
/// before the first request runs, each timer batch's as it fires), kept up to date
/// in memory as each change lands (so a second change to the same approval sees the
/// first one's result), and written together after the last request
/// ([`Current::write`]): one statement for all their rows, one for their new votes.
/// Each approval is held once, behind an `Arc` that its change notice shares.
#[derive(Default)]
pub(crate) struct Current {
    /// As read: what the write compares against.
    read: HashMap<ApprovalId, AsRead>,
    /// As the batch's events left them.
    now: HashMap<ApprovalId, Arc<Approval>>,
    /// Changed ones, in the order of their first change.
    changed: Vec<ApprovalId>,
}

/// What the write needs of an approval as it was read.
struct AsRead {
    /// The version its compare-and-set expects.
    version: i64,
    /// The votes its new votes are told apart from.
    votes: Vec<Vote>,
    changed: bool,
}

impl Current {
    /// Reads (and on Postgres locks) the approvals `ids` name, in one statement; with
    /// it, for each of `pairs`, whether the message is one of the approval's recorded
    /// messages (see `Tx::load_many_shown`).
    pub(crate) async fn load<T: Tx>(
        tx: &mut T,
        ids: &[ApprovalId],
        pairs: &[(ApprovalId, &MessageKey)],
    ) -> sqlx::Result<(Self, Vec<bool>)> {
        let mut current = Current::default();
        if pairs.is_empty() {
            current.load_more(tx, ids).await?;
            return Ok((current, Vec::new()));
        }
        let (approvals, shown) = tx.load_many_shown(&current.unread(ids), pairs).await?;
        current.join(approvals);
        Ok((current, shown))
    }

    /// Reads (and on Postgres locks) those of `ids` not read yet, in one statement.
    /// An id that names no approval stays absent.
    pub(super) async fn load_more<T: Tx>(
        &mut self,
        tx: &mut T,
        ids: &[ApprovalId],
    ) -> sqlx::Result<()> {
        let ids = self.unread(ids);
        if ids.is_empty() {
            return Ok(());
        }
        self.join(tx.load_many(&ids).await?);
        Ok(())
    }

    /// Those of `ids` not read yet, in id order, each once (the order replicas lock
    /// rows in).
    fn unread(&self, ids: &[ApprovalId]) -> Vec<ApprovalId> {
        let mut ids: Vec<ApprovalId> = ids
            .iter()
            .filter(|id| !self.read.contains_key(id))
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Adds approvals read by the caller, except those read already (which stay as the
    /// batch left them); answers all their ids, in the order given.
    pub(super) fn join(&mut self, approvals: Vec<Approval>) -> Vec<ApprovalId> {
        let mut ids = Vec::with_capacity(approvals.len());
        for approval in approvals {
            ids.push(approval.id);
            if let std::collections::hash_map::Entry::Vacant(entry) = self.read.entry(approval.id) {
                entry.insert(AsRead {
                    version: approval.version,
                    votes: approval.votes.clone(),
                    changed: false,
                });
                self.now.insert(approval.id, Arc::new(approval));
            }
        }
        ids
    }

    pub(super) fn get(&self, id: ApprovalId) -> Option<&Arc<Approval>> {
        self.now.get(&id)
    }

    pub(super) fn set(&mut self, after: Arc<Approval>) {
        debug_assert!(self.read.contains_key(&after.id), "set before read");
        if let Some(read) = self.read.get_mut(&after.id)
            && !read.changed
        {
            read.changed = true;
            self.changed.push(after.id);
        }
        self.now.insert(after.id, after);
    }

    /// Writes every changed approval with compare-and-set on the version it was read
    /// at, and the votes it gained or lost. `RowNotFound` if another writer changed
    /// one since (another replica): the batch is then retried one request at a time,
    /// each deciding against the new state.
    pub(crate) async fn write<T: Tx>(self, tx: &mut T) -> sqlx::Result<()> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(self.changed.len());
        let mut added = Vec::new();
        for id in &self.changed {
            let (before, after) = (&self.read[id], &self.now[id]);
            for vote in &before.votes {
                if !after.votes.contains(vote) {
                    tx.delete_vote(*id, &vote.user).await?;
                }
            }
            added.extend(
                after
                    .votes
                    .iter()
                    .filter(|vote| !before.votes.contains(vote))
                    .map(|vote| (*id, vote.clone())),
            );
            rows.push((&**after, before.version));
        }
        if tx.update_approvals(&rows).await? != rows.len() as u64 {
            return Err(sqlx::Error::RowNotFound);
        }
        if !added.is_empty() {
            tx.insert_votes(&added).await?;
        }
        Ok(())
    }
}
