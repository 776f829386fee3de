//! The expiry watermark (see `migrations/postgres/0006_hot_updates.sql`): every open
//! approval expires at or after it, so a scheduler pass reads the due ones from there
//! on; what a transaction opens below it moves it down, and a pass moves it up.

use super::*;
use crate::approval::Status;

/// Expiry timers this transaction added or fired, for the watermark (see
/// `migrations/postgres/0006_hot_updates.sql`).
#[derive(Default)]
pub(super) struct Timers {
    /// The earliest expiry among the pending or approved approvals it inserted or
    /// adopted, while the watermark has yet to be moved down to it.
    pub(super) opened: Option<DateTime<Utc>>,
    /// The `now` of the scheduler pass it ran: the watermark moves up to the earliest
    /// expiry still open by then.
    pub(super) swept: Option<DateTime<Utc>>,
}

impl Timers {
    pub(super) fn open<'a>(&mut self, approvals: impl IntoIterator<Item = &'a Approval>) {
        for approval in approvals {
            if matches!(approval.status, Status::Pending | Status::Approved) {
                let at = approval.expires_at;
                self.opened = Some(self.opened.map_or(at, |earliest| earliest.min(at)));
            }
        }
    }
}

impl PgTx {
    /// Keeps the expiry watermark true for what this transaction did, at commit.
    ///
    /// Every signoff writer does this work while holding the audit head's row lock, so
    /// that writers take turns: a pass reads the open approvals after every insert
    /// committed before it, and an insert that waited for a pass sees where the pass
    /// left the mark (and moves it down below its own approvals, kept back to go with
    /// the commit's last statement: no round trip of its own). A pass also locks the
    /// watermark's row, which
    /// another program's trigger (an expiry moved earlier) takes to move it down; a
    /// pass that finds it locked leaves the mark as it is.
    pub(super) async fn settle_watermark(&mut self) -> sqlx::Result<()> {
        let Timers { opened, mut swept } = std::mem::take(&mut self.timers);
        if let Some(now) = swept
            && !self.mark_would_pass_a_closed_approval(now).await?
        {
            swept = None;
        }
        if opened.is_none() && swept.is_none() {
            return Ok(());
        }
        // The head's lock orders every signoff writer's watermark work: held already
        // if this transaction appended to the audit log, else taken now.
        self.audit_head().await?;
        if let Some(opened) = opened {
            self.deferred.push(|q| {
                q.push("UPDATE expiry_watermark SET below = ")
                    .push_bind(opened)
                    .push(" WHERE id = 1 AND below > ")
                    .push_bind(opened);
            });
        }
        let Some(now) = swept else {
            return Ok(());
        };
        // Another program's transaction that moved an expiry earlier holds the row
        // (its trigger moved the mark down) until it ends: the pass then leaves the
        // mark where it is, which is always safe, rather than wait for it while it
        // holds the audit head, which every signoff writer waits for.
        let below: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT below FROM expiry_watermark WHERE id = 1 FOR UPDATE SKIP LOCKED",
        )
        .fetch_optional(self.conn().await?)
        .await?;
        let Some(below) = below else {
            return Ok(());
        };
        // The earliest approval still open up to `now`: one this pass left for later
        // (over its limit, or locked by another transaction). Its own expiries read as
        // expired here. A row not taken in does not count (the expiries leave it out):
        // taking it in moves the mark down to it.
        let open: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT expires_at FROM pending_approvals \
             WHERE expires_at >= $1 AND expires_at <= $2 AND status IN ('pending', 'approved') \
             AND routing IS NOT NULL \
             ORDER BY expires_at LIMIT 1",
        )
        .bind(below)
        .bind(now)
        .fetch_optional(self.conn().await?)
        .await?;
        let settled = below.max(open.unwrap_or(now));
        if settled != below {
            sqlx::query("UPDATE expiry_watermark SET below = $1 WHERE id = 1")
                .bind(settled)
                .execute(self.conn().await?)
                .await?;
        }
        Ok(())
    }

    /// Whether a pass at `now` would move the mark past an approval no longer open,
    /// which is all moving it up is for: the next pass's read of the due ones then
    /// starts after it. Read without a lock, after what this transaction kept back (so
    /// the approvals it just expired count as closed and the mark moves past them in
    /// this same pass): when the first approval between the mark and `now` is open, or
    /// there is none, moving the mark skips nothing, so the pass leaves it, and with
    /// nothing else to write takes no lock and writes nothing (an idle scheduler's
    /// passes commit no write). Leaving the mark lower is always safe, as it only
    /// bounds where that read starts; when this says yes, the pass takes the locks and
    /// decides again on what it reads under them.
    async fn mark_would_pass_a_closed_approval(
        &mut self,
        now: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let first_closed: Option<bool> = sqlx::query_scalar(
            "SELECT status NOT IN ('pending', 'approved') OR routing IS NULL FROM pending_approvals \
             WHERE expires_at >= (SELECT below FROM expiry_watermark WHERE id = 1) \
             AND expires_at <= $1 ORDER BY expires_at LIMIT 1",
        )
        .bind(now)
        .fetch_optional(self.conn().await?)
        .await?;
        Ok(first_closed == Some(true))
    }
}
