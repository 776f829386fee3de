//! Approval fatigue: `max_pending` per requester. A runaway agent that opens request
//! after request buries the channel, and people then approve without reading. So a
//! request that would wait for people is refused once its requester (API token) has
//! `max_pending` requests waiting (the limit of the rule the new call matches), unless
//! it repeats one of them (it then joins it, as always). Each refusal is an audit event;
//! the first refusal of an episode (until the requester is accepted again) plans one
//! notice to the channel the request was for. Decided in the batch before any insert,
//! so a refused request leaves no row.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};

use serde_json::json;

use super::Done;
use super::work::{self, Opening};
use crate::approval::Status;
use crate::audit::Draft;
use crate::jobs::{Deliveries, Job, NewJob};
use crate::store::StoreError;
use crate::store::backend::Tx;

/// Waiting requests are counted up to the limit, and at least this far.
const COUNT_AT_LEAST: u32 = 100;

/// One requester as this batch sees it.
struct Requester {
    waiting: i64,
    /// Throttled when the batch began.
    throttled: bool,
    /// A request of theirs was under the limit in this batch: the episode is over.
    accepted: bool,
}

/// Refuses the openings whose requester is at its limit: each becomes `Err`.
pub(crate) async fn check<T: Tx>(
    tx: &mut T,
    openings: &mut [Option<Result<Opening, StoreError>>],
    deliveries: Deliveries,
    done: &mut Done,
) -> sqlx::Result<()> {
    // Per requester, the highest limit among its openings: counting stops there (or at
    // a hundred, so that a refusal says how many wait). In one order, so that two
    // PostgreSQL replicas lock requesters without deadlock.
    let mut limits: BTreeMap<&str, u32> = BTreeMap::new();
    let mut newest = None;
    for opening in openings.iter().flatten().flatten() {
        if let Some(token) = counted(opening) {
            let limit = limits.entry(token).or_default();
            *limit = (*limit).max(opening.max_pending);
            newest = newest.max(Some(opening.now));
        }
    }
    // Nothing counted: no statement at all.
    let Some(now) = newest else {
        return Ok(());
    };
    let mut requesters = HashMap::with_capacity(limits.len());
    for (token, limit) in limits {
        let (waiting, throttled) = tx.waiting(token, limit.max(COUNT_AT_LEAST), now).await?;
        let requester = Requester {
            waiting,
            throttled,
            accepted: false,
        };
        requesters.insert(token.to_owned(), requester);
    }
    // The openings at their requester's limit (by position, and each itself), each
    // with the count it met. Neither a refusal nor a join changes a count, so they
    // are found first and looked up together.
    let mut over = Vec::new();
    let mut at_limit = Vec::new();
    for (n, slot) in openings.iter().enumerate() {
        let Some(Ok(opening)) = slot else { continue };
        let Some(token) = counted(opening) else {
            continue;
        };
        let Some(requester) = requesters.get_mut(token) else {
            continue;
        };
        if requester.waiting < i64::from(opening.max_pending) {
            // Counted even if it turns out to repeat a waiting request: the count can
            // only be high, never let one more through.
            requester.waiting += 1;
            requester.accepted = true;
            continue;
        }
        over.push((n, requester.waiting));
        at_limit.push(opening);
    }
    // One that repeats an open request of its requester joins it; the rest are
    // refused. The repeats are looked up in one statement for the whole flood.
    let repeats = work::blockers(tx, &at_limit).await?;
    let refused: Vec<(usize, i64)> = over
        .into_iter()
        .zip(repeats)
        .filter_map(|(over, repeat)| repeat.is_none().then_some(over))
        .collect();
    // Recorded per requester and channel, one statement each; the first refusal of
    // an episode that starts here plans its notice.
    let mut starts = episodes(tx, openings, &refused).await?;
    for (n, waiting) in refused {
        let Some(Ok(opening)) = &openings[n] else {
            continue;
        };
        let first = starts.remove(&episode(opening));
        let refusal = refuse(tx, opening, waiting, first, deliveries, done).await?;
        openings[n] = Some(Err(refusal));
    }
    for (token, requester) in &requesters {
        if requester.accepted && requester.throttled {
            tx.unthrottled(token).await?;
        }
    }
    Ok(())
}

/// The requester whose waiting requests this opening would add to: only a request
/// that waits for people, from an API token, under a limit (not 0), counts.
fn counted(opening: &Opening) -> Option<&str> {
    if opening.approval.status != Status::Pending || opening.max_pending == 0 {
        return None;
    }
    opening.approval.token_name.as_deref()
}

/// The requester and channel ('' for none) whose episode a refusal belongs to.
fn episode(opening: &Opening) -> (String, String) {
    let approval = &opening.approval;
    let token = approval.token_name.clone().unwrap_or_default();
    let channel = approval.routing.channel.as_deref().unwrap_or_default();
    (token, channel.to_owned())
}

/// Records the `refused` openings (by position) per requester and channel, one
/// statement each: those whose refusals start an episode here.
async fn episodes<T: Tx>(
    tx: &mut T,
    openings: &[Option<Result<Opening, StoreError>>],
    refused: &[(usize, i64)],
) -> sqlx::Result<HashSet<(String, String)>> {
    // Per episode: how many refusals, and when the first was.
    let mut counts: BTreeMap<(String, String), (i64, DateTime<Utc>)> = BTreeMap::new();
    for (n, _) in refused {
        if let Some(Ok(opening)) = &openings[*n] {
            let count = counts.entry(episode(opening)).or_insert((0, opening.now));
            count.0 += 1;
            count.1 = count.1.min(opening.now);
        }
    }
    let mut starts = HashSet::new();
    for ((token, channel), (refusals, first)) in counts {
        if tx.throttled(&token, &channel, first, refusals).await? {
            starts.insert((token, channel));
        }
    }
    Ok(starts)
}

/// Records the refusal (audit event; the episode's notice when `first`, the first
/// refusal of an episode that starts in this batch) and answers the error the caller
/// gets.
async fn refuse<T: Tx>(
    tx: &mut T,
    opening: &Opening,
    waiting: i64,
    first: bool,
    deliveries: Deliveries,
    done: &mut Done,
) -> sqlx::Result<StoreError> {
    let approval = &opening.approval;
    let token = approval.token_name.clone().unwrap_or_default();
    let channel = approval.routing.channel.clone();
    let mut notice = false;
    if first
        && deliveries.slack
        && let Some(channel) = channel.clone()
        && let Some(newest) = tx.newest_waiting(&token, opening.now).await?
    {
        let job = Job::SlackThrottled {
            channel,
            requester: token.clone(),
            waiting,
            limit: opening.max_pending,
        };
        let job = NewJob {
            approval_id: newest,
            job,
            due_at: opening.now,
        };
        done.jobs.push((job, opening.now));
        notice = true;
    }
    done.audit.push(Draft {
        approval_id: None,
        kind: "throttled",
        actor: Some(token.clone()),
        at: opening.now,
        data: json!({
            "tool_name": approval.tool_name,
            "server": approval.server,
            "channel": channel,
            "waiting": waiting,
            "max_pending": opening.max_pending,
            "notice": notice,
        }),
    });
    Ok(StoreError::TooManyPending {
        requester: token,
        waiting,
        limit: opening.max_pending,
    })
}
