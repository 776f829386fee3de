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
    /// another program's trigger (an expiry moved earlier) takes to move it down.
    pub(super) async fn settle_watermark(&mut self) -> sqlx::Result<()> {
        let Timers { opened, swept } = std::mem::take(&mut self.timers);
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
        let below: DateTime<Utc> =
            sqlx::query_scalar("SELECT below FROM expiry_watermark WHERE id = 1 FOR UPDATE")
                .fetch_one(self.conn().await?)
                .await?;
        // The earliest approval still open up to `now`: one this pass left for later
        // (over its limit, or locked by another transaction). Its own expiries read as
        // expired here.
        let open: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT expires_at FROM pending_approvals \
             WHERE expires_at >= $1 AND expires_at <= $2 AND status IN ('pending', 'approved') \
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
}
