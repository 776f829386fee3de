//! Pacing of posts: Slack asks for at most one chat.postMessage per second per
//! channel, replies in a thread included (a reminder under a rule with no approvers
//! list, an escalation's note: each a post to the approval's channel). A backlog of posts to one channel drains a post a second, served round
//! robin across requesters (not first come), and no post is promised a slot more than
//! [`HORIZON`] ahead: whoever asks during a flood from someone else is posted within
//! about that long, not after the whole flood.
//!
//! Each post within the horizon is deferred to a slot of its own (so the backlog
//! drains without touching the store); those beyond it come back in waves of a
//! horizon's worth of posts, a horizon apart (the first at the horizon's end, as the
//! promised slots run out), when they are claimed again and take their turns with
//! whatever came meanwhile. A deep backlog is so claimed again a wave at a time, not
//! all of it at every horizon's end: each claim and each deferral writes the job.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::jobs::{DueJob, Job, Paced};

/// chat.postMessage per channel at most once per this interval (Slack's guidance); the
/// default of `SIGNOFF_SLACK_POST_INTERVAL`.
pub const POST_INTERVAL: chrono::Duration = chrono::Duration::seconds(1);
/// The furthest ahead a post is given a slot of its own.
const HORIZON: chrono::Duration = chrono::Duration::seconds(20);
/// The furthest wave beyond the horizon, in horizons (an hour).
const MAX_WAVES: i32 = 180;

/// Per channel: the last post, and the first slot not yet promised to a deferred job.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    last: DateTime<Utc>,
    next_free: DateTime<Utc>,
}

/// One requester's posts to a channel, in claim order.
type Queue = (Option<String>, Vec<DueJob>);

/// What a paced post is: due now, deferred to a slot of its own, or beyond the horizon.
enum Turn {
    Now,
    At(DateTime<Utc>),
    Beyond,
}

/// Splits due jobs into those to run now and the posts to defer (job id, until):
/// per channel, at most one post per `interval`, taking turns round robin across
/// requesters, in claim order within each requester. Jobs that are no posts run now.
pub fn pace_posts(
    last_post: &Mutex<HashMap<String, Pacing>>,
    jobs: Vec<DueJob>,
    now: DateTime<Utc>,
    interval: chrono::Duration,
) -> Paced {
    let mut ready = Vec::with_capacity(jobs.len());
    // Per channel, per requester, their posts; both in order of first appearance
    // (found through indexes, so a pass over many channels stays linear).
    let mut channels: Vec<(String, Vec<Queue>)> = Vec::new();
    let mut channel_at: HashMap<String, usize> = HashMap::new();
    let mut queue_at: HashMap<(usize, Option<String>), usize> = HashMap::new();
    for job in jobs {
        let Some((channel, requester)) = post_target(&job) else {
            ready.push(job);
            continue;
        };
        let (channel, requester) = (channel.to_owned(), requester.map(str::to_owned));
        let at = *channel_at.entry(channel.clone()).or_insert_with(|| {
            channels.push((channel, Vec::new()));
            channels.len() - 1
        });
        let queues = &mut channels[at].1;
        match queue_at.entry((at, requester.clone())) {
            Entry::Occupied(found) => queues[*found.get()].1.push(job),
            Entry::Vacant(slot) => {
                slot.insert(queues.len());
                queues.push((requester, vec![job]));
            }
        }
    }
    let mut waiting = Vec::new();
    let mut pacing = last_post
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // The posts a horizon holds: a wave beyond it.
    let wave = usize::try_from(HORIZON.num_milliseconds() / interval.num_milliseconds().max(1))
        .unwrap_or(1)
        .max(1);
    for (channel, queues) in channels {
        let slot = pacing.entry(channel).or_insert(Pacing {
            last: now - interval,
            next_free: now,
        });
        let mut beyond = 0;
        for job in round_robin(queues) {
            match turn(slot, now, interval) {
                Turn::Now => ready.push(job),
                Turn::At(at) => waiting.push((job.id, at)),
                Turn::Beyond => {
                    let horizons = i32::try_from(1 + beyond / wave).unwrap_or(MAX_WAVES);
                    waiting.push((job.id, now + HORIZON * horizons.min(MAX_WAVES)));
                    beyond += 1;
                }
            }
        }
    }
    (ready, waiting)
}

/// The requester thread replies take their turns as: no token's name (a space is no
/// character of one), nor the `None` of posts whose requester is not known.
const THREAD_REPLIES: &str = "thread replies";

/// The channel a post job goes to, and who asked; `None` for jobs that are no posts.
/// A reply in an approval's thread (a reminder without an approvers list, an
/// escalation's note) is a post to the approval's channel too; such replies take their
/// turns as one requester of their own.
fn post_target(job: &DueJob) -> Option<(&str, Option<&str>)> {
    match &job.job {
        Job::SlackPost {
            channel, requester, ..
        } => Some((channel.as_str(), requester.as_deref())),
        Job::SlackThrottled {
            channel, requester, ..
        } => Some((channel.as_str(), Some(requester.as_str()))),
        Job::SlackRemind {
            thread_in: Some(channel),
        }
        | Job::SlackEscalationNote {
            thread_in: Some(channel),
            ..
        } => Some((channel.as_str(), Some(THREAD_REPLIES))),
        _ => None,
    }
}

/// One from each queue in turn, until all are empty.
fn round_robin(queues: Vec<Queue>) -> Vec<DueJob> {
    let total = queues.iter().map(|(_, queue)| queue.len()).sum();
    let mut queues: Vec<_> = queues
        .into_iter()
        .map(|(_, queue)| queue.into_iter())
        .collect();
    let mut order = Vec::with_capacity(total);
    while order.len() < total {
        order.extend(queues.iter_mut().filter_map(Iterator::next));
    }
    order
}

/// `Now`: the channel's slot is free and now taken. `At(when)`: a slot of its own, no
/// more than [`HORIZON`] ahead. `Beyond`: past it, with no slot promised.
fn turn(slot: &mut Pacing, now: DateTime<Utc>, interval: chrono::Duration) -> Turn {
    if now >= slot.last + interval {
        slot.last = now;
        slot.next_free = slot.next_free.max(now + interval);
        return Turn::Now;
    }
    let at = slot.next_free.max(slot.last + interval);
    if at > now + HORIZON {
        return Turn::Beyond;
    }
    slot.next_free = at + interval;
    Turn::At(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::ApprovalId;
    use crate::jobs::MessageKind;

    fn post(id: i64, channel: &str, requester: &str) -> DueJob {
        DueJob {
            id,
            approval_id: ApprovalId::new(),
            job: Job::SlackPost {
                channel: channel.into(),
                kind: MessageKind::Main,
                requester: Some(requester.into()),
                batch: false,
            },
            attempts: 1,
            lease_until: None,
        }
    }

    #[test]
    fn a_channel_serves_requesters_in_turn_and_promises_no_slot_past_the_horizon() {
        let now = Utc::now();
        let pacing = Mutex::default();
        // A flood from "a", then two from "b"; another channel is not held up.
        let mut jobs: Vec<DueJob> = (1..=40).map(|id| post(id, "C1", "a")).collect();
        jobs.push(post(41, "C1", "b"));
        jobs.push(post(42, "C1", "b"));
        jobs.push(post(43, "C2", "a"));
        let (ready, waiting) = pace_posts(&pacing, jobs, now, POST_INTERVAL);
        let ready: Vec<i64> = ready.iter().map(|job| job.id).collect();
        assert_eq!(ready, [1, 43]);
        let second = |s: i64| now + chrono::Duration::seconds(s);
        assert_eq!(
            &waiting[..4],
            &[
                (41, second(1)),
                (2, second(2)),
                (42, second(3)),
                (3, second(4))
            ]
        );
        assert_eq!(
            waiting[19],
            (19, second(20)),
            "the last slot within the horizon"
        );
        assert!(
            waiting[20..40].iter().all(|(_, at)| *at == second(20)),
            "the next horizon's worth is claimed again at the horizon, unpromised"
        );
        assert_eq!(
            waiting[40..],
            [(40, second(40))],
            "the rest a horizon later, in the same order"
        );
        assert_eq!(waiting.len(), 41);

        // Someone else asking a moment later is posted within the horizon.
        let later = now + chrono::Duration::milliseconds(500);
        let (ready, waiting) = pace_posts(&pacing, vec![post(44, "C1", "c")], later, POST_INTERVAL);
        assert!(ready.is_empty());
        assert_eq!(waiting, [(44, later + HORIZON)]);
    }

    #[test]
    fn a_deep_backlog_comes_back_a_wave_at_a_time_in_its_order() {
        let now = Utc::now();
        let jobs: Vec<DueJob> = (1..=4000).map(|id| post(id, "C1", "a")).collect();
        let (ready, waiting) = pace_posts(&Mutex::default(), jobs, now, POST_INTERVAL);
        assert_eq!(ready.len(), 1);
        // After the 20 promised slots, the rest in waves of 20, a horizon apart.
        let beyond = &waiting[20..];
        let mut per_time = std::collections::BTreeMap::<DateTime<Utc>, usize>::new();
        for (_, at) in beyond {
            *per_time.entry(*at).or_default() += 1;
        }
        let waves: Vec<_> = per_time.into_iter().collect();
        assert_eq!(waves[0].0, now + HORIZON);
        assert_eq!(waves[1].0, now + HORIZON * 2);
        assert!(
            waves[..waves.len() - 1].iter().all(|(_, n)| *n == 20),
            "a horizon's worth each"
        );
        assert!(
            beyond
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "in claim order"
        );
        assert_eq!(
            waves.last().map(|(at, _)| *at),
            Some(now + HORIZON * MAX_WAVES),
            "none further than the last wave"
        );
    }

    /// Thread replies take turns as a requester of their own, not as the posts whose
    /// requester is not known (rows another program inserted).
    #[test]
    fn thread_replies_take_turns_apart_from_posts_of_no_known_requester() {
        let now = Utc::now();
        let unknown = |id| {
            let mut job = post(id, "C1", "-");
            if let Job::SlackPost { requester, .. } = &mut job.job {
                *requester = None;
            }
            job
        };
        let reply = |id| DueJob {
            job: Job::SlackRemind {
                thread_in: Some("C1".into()),
            },
            ..post(id, "C1", "-")
        };
        let mut jobs: Vec<DueJob> = (1..=10).map(unknown).collect();
        jobs.push(reply(11));
        let (ready, waiting) = pace_posts(&Mutex::default(), jobs, now, POST_INTERVAL);
        assert_eq!(ready.iter().map(|job| job.id).collect::<Vec<_>>(), [1]);
        assert_eq!(
            waiting[0],
            (11, now + chrono::Duration::seconds(1)),
            "the reply's turn comes next, not after the ten"
        );
    }

    #[test]
    fn a_zero_interval_posts_everything_at_once() {
        let now = Utc::now();
        let jobs: Vec<DueJob> = (1..=30).map(|id| post(id, "C1", "a")).collect();
        let (ready, waiting) = pace_posts(&Mutex::default(), jobs, now, chrono::Duration::zero());
        assert_eq!(ready.len(), 30);
        assert!(waiting.is_empty());
    }
}
