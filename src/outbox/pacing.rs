//! Pacing of posts: Slack asks for at most one chat.postMessage per second per
//! channel, so a backlog of posts to one channel drains a post a second, each waiting
//! job given a slot of its own.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::jobs::{DueJob, Job};

/// chat.postMessage per channel at most once per this interval (Slack's guidance).
const POST_INTERVAL: chrono::Duration = chrono::Duration::seconds(1);

/// Per channel: the last post, and the first slot not yet promised to a deferred job.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    last: DateTime<Utc>,
    next_free: DateTime<Utc>,
}

/// Paces a post job's channel to one post per [`POST_INTERVAL`]: `None` takes the
/// channel's slot now; `Some(at)` is the next free slot, reserved for this job. Asked
/// before the job reads anything, so a backlog of posts waits without touching the
/// store. A job whose payload is no post target is not paced (posting it reports why).
pub fn post_slot(
    last_post: &Mutex<HashMap<String, Pacing>>,
    job: &DueJob,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match &job.job {
        Job::SlackPost { channel, .. } | Job::SlackThrottled { channel, .. } => {
            pace(last_post, channel.as_str(), now)
        }
        _ => None,
    }
}

/// `None`: post now (the slot is taken). `Some(when)`: the channel got a post less
/// than a second ago; come back at `when`, a slot of its own, so that a backlog
/// drains one post a second instead of every deferred job retrying at once.
fn pace(
    last_post: &Mutex<HashMap<String, Pacing>>,
    channel: &str,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut pacing = last_post
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let slot = pacing.entry(channel.to_owned()).or_insert(Pacing {
        last: now - POST_INTERVAL,
        next_free: now,
    });
    if now < slot.last + POST_INTERVAL {
        let at = slot.next_free.max(slot.last + POST_INTERVAL);
        slot.next_free = at + POST_INTERVAL;
        return Some(at);
    }
    slot.last = now;
    slot.next_free = slot.next_free.max(now + POST_INTERVAL);
    None
}
