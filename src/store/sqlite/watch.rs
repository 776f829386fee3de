//! Hearing other processes on one SQLite file: `signoff decide` (or anything else that
//! writes through signoff) commits from its own process, and a `serve` on the same file
//! must wake its long-polls. SQLite has no NOTIFY, so a watcher polls
//! `PRAGMA data_version` (which moves when another connection commits) and, when it
//! moved, reads the audit events appended since: every status change appends one, in
//! the same transaction. Each becomes a change notice without a snapshot, as a notice
//! heard from another PostgreSQL replica does (waiters read the approval back).
//! Changes this process made itself are skipped: the watcher hears them on the same
//! broadcast (as notices with a snapshot) and remembers them until it reads their
//! events, so each change is announced once, whoever made it. This process's writer
//! announces a commit once it is durable (`store::durable`), so the watcher, having
//! read the events, waits for the fence and hears the announcements again before it
//! tells its own changes from others'.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Row, SqlitePool};
use tokio::sync::broadcast;

use super::parse_id;
use crate::approval::Status;
use crate::store::StatusChange;
use crate::store::durable::Fence;

/// How often the watcher looks; what a long-poll waits at most for another
/// process's decision to show.
const EVERY: Duration = Duration::from_millis(200);

/// The status an audit event of `kind` leaves its approval in, for those that move it.
fn status_after(kind: &str) -> Option<Status> {
    match kind {
        "approved" => Some(Status::Approved),
        "denied" => Some(Status::Denied),
        "expired" => Some(Status::Expired),
        "executed" => Some(Status::Executed),
        "cancelled" => Some(Status::Cancelled),
        _ => None,
    }
}

/// How many looks a change this process made is remembered for, waiting for its event.
const REMEMBER: u32 = 50;

/// The changes this process announced itself, by approval and status: the look that
/// made each one, so that it is forgotten after [`REMEMBER`] looks.
#[derive(Default)]
struct Own {
    changes: HashMap<(String, Status), u32>,
    looks: u32,
}

impl Own {
    /// Takes in what this process announced since the last look.
    fn hear(&mut self, local: &mut broadcast::Receiver<StatusChange>) {
        self.looks += 1;
        let looks = self.looks;
        self.changes.retain(|_, at| looks - *at < REMEMBER);
        loop {
            match local.try_recv() {
                Ok(change) if change.is_local() => {
                    self.changes
                        .insert((change.id.to_string(), change.status), looks);
                }
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    }

    /// Whether this process announced the change already (forgetting it).
    fn made(&mut self, id: &str, status: Status) -> bool {
        self.changes.remove(&(id.to_owned(), status)).is_some()
    }
}

/// The newest audit event's number (0 with none).
const HEAD: &str = "SELECT COALESCE(MAX(seq), 0) FROM audit_events";

/// The newest audit event's number: where [`watch`] starts.
pub(crate) async fn head(pool: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar(HEAD).fetch_one(pool).await
}

/// Runs until the process ends, announcing what other processes change after the
/// audit event `from`; a failed look is retried on the next. `local` hears this
/// process's announcements: subscribed when `from` was read, before this process could
/// write (a change of its own made before the task first ran would otherwise be
/// announced again as another's).
pub(crate) async fn watch(
    pool: SqlitePool,
    changes: broadcast::Sender<StatusChange>,
    mut local: broadcast::Receiver<StatusChange>,
    fence: Arc<Fence>,
    from: i64,
) {
    let mut seen = from;
    let mut version = None;
    let mut own = Own::default();
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        own.hear(&mut local);
        let mut heard = Heard {
            own: &mut own,
            local: &mut local,
            fence: &fence,
        };
        match look(&pool, &changes, &mut heard, &mut seen, &mut version).await {
            Ok(()) => {}
            Err(error) => tracing::debug!(%error, "SQLite change watcher: retrying"),
        }
    }
}

/// What tells this process's changes from others': its own announcements, heard once
/// the fence released every commit the watcher may have read.
struct Heard<'a> {
    own: &'a mut Own,
    local: &'a mut broadcast::Receiver<StatusChange>,
    fence: &'a Fence,
}

async fn look(
    pool: &SqlitePool,
    changes: &broadcast::Sender<StatusChange>,
    heard: &mut Heard<'_>,
    seen: &mut i64,
    version: &mut Option<i64>,
) -> sqlx::Result<()> {
    let mut conn = pool.acquire().await?;
    let now: i64 = sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(&mut *conn)
        .await?;
    if *version == Some(now) {
        return Ok(());
    }
    let head: i64 = sqlx::query_scalar(HEAD).fetch_one(&mut *conn).await?;
    let after = *seen;
    // Only the events that move a status, of those appended since the last look.
    let rows = sqlx::query(
        "SELECT approval_id, kind FROM audit_events WHERE seq > $1 AND seq <= $2 \
         AND kind IN ('approved', 'denied', 'expired', 'executed', 'cancelled') ORDER BY seq",
    )
    .bind(after)
    .bind(head)
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    heard.fence.settle().await?;
    heard.own.hear(heard.local);
    let own = &mut *heard.own;
    for row in &rows {
        let (Some(id), Some(status)) = (
            row.try_get::<Option<&str>, _>("approval_id")?,
            status_after(row.try_get("kind")?),
        ) else {
            continue;
        };
        if own.made(id, status) {
            continue;
        }
        let change = StatusChange {
            id: parse_id(id)?,
            status,
            after: None,
        };
        // Nobody listening is fine.
        let _ = changes.send(change);
    }
    (*seen, *version) = (head, Some(now));
    Ok(())
}
