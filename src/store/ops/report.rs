//! Delivery reports, recorded for a whole batch at once. A delivered job records the
//! messages it posted, moves the messages it updated to the version they now show and
//! deletes the job; the batch's reports do each of these in one statement, because a
//! batch of clicks carries about as many `chat.update` reports as clicks. A retry or a
//! job given up (rare) is one statement each.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::current::Current;
use super::{Done, Op};
use crate::approval::ApprovalId;
use crate::jobs::{Deliveries, DueJob, Job, MessageKey, NewJob, Outcome, PostedMessage};
use crate::store::backend::Tx;

/// The approvals whose versions the batch's reports compare with what their messages
/// show: the batch reads them with the approvals its events name.
pub(super) fn shown(ops: &[Op], deliveries: Deliveries) -> Vec<ApprovalId> {
    if !deliveries.slack {
        return Vec::new();
    }
    ops.iter()
        .filter_map(|op| match op {
            Op::Report { job, outcome, .. } => Some(shows(job, outcome)),
            _ => None,
        })
        .flatten()
        .map(|(id, _)| id)
        .collect()
}

/// Records every report of `ops` and answers them. `current` holds, as the batch read
/// them, the approvals [`shown`] named: one changed while its message was being
/// posted or updated gets an update (a batch's post shows several approvals).
pub(super) async fn record<T: Tx>(
    tx: &mut T,
    ops: &mut [Op],
    current: &Current,
    deliveries: Deliveries,
    done: &mut Done,
) -> sqlx::Result<()> {
    let mut posted: Vec<(&PostedMessage, DateTime<Utc>)> = Vec::new();
    let mut rendered: HashMap<(&MessageKey, ApprovalId), i64> = HashMap::new();
    let mut finished = Vec::new();
    let mut follow_ups: Vec<(NewJob, DateTime<Utc>)> = Vec::new();
    for op in ops.iter() {
        let Op::Report {
            job, outcome, now, ..
        } = op
        else {
            continue;
        };
        match &**outcome {
            Outcome::Delivered {
                posted: messages,
                rendered: keys,
                version,
                next,
            } => {
                posted.extend(messages.iter().map(|message| (message, *now)));
                for key in keys {
                    let shows = rendered.entry((key, job.approval_id)).or_insert(*version);
                    *shows = (*shows).max(*version);
                }
                finished.push(job.id);
                follow_ups.extend(next.iter().map(|next| (next.clone(), *now)));
                let stale = shows(job, outcome).filter(|&(id, version)| {
                    deliveries.slack && current.get(id).is_some_and(|a| a.version > version)
                });
                for (id, _) in stale {
                    if !follow_ups
                        .iter()
                        .any(|(planned, _)| is_update_of(planned, id))
                    {
                        let update = NewJob {
                            approval_id: id,
                            job: Job::SlackUpdate {},
                            due_at: *now,
                        };
                        follow_ups.push((update, *now));
                    }
                }
            }
            Outcome::Retry { at, error } => tx.retry_job(job.id, *at, error).await?,
            Outcome::Dead { error } => tx.kill_job(job.id, error).await?,
        }
    }
    tx.insert_messages(&posted).await?;
    let rendered: Vec<_> = rendered
        .into_iter()
        .map(|((key, id), version)| (key, id, version))
        .collect();
    tx.mark_rendered(&rendered).await?;
    tx.finish_jobs(&finished).await?;
    done.jobs.extend(follow_ups);
    for op in ops.iter_mut() {
        if let Op::Report { reply, .. } = op {
            reply.set(Ok(()));
        }
    }
    Ok(())
}

/// The approvals a delivered job's messages show, each with the version shown: those
/// of the messages it posted, and its own when it updated messages.
fn shows<'a>(
    job: &'a DueJob,
    outcome: &'a Outcome,
) -> impl Iterator<Item = (ApprovalId, i64)> + 'a {
    let (posted, updated) = match outcome {
        Outcome::Delivered {
            posted,
            rendered,
            version,
            ..
        } => (
            &posted[..],
            (!rendered.is_empty()).then_some((job.approval_id, *version)),
        ),
        _ => (&[][..], None),
    };
    posted
        .iter()
        .map(|message| (message.approval_id, message.rendered_version))
        .chain(updated)
}

fn is_update_of(job: &NewJob, id: ApprovalId) -> bool {
    job.approval_id == id && matches!(job.job, Job::SlackUpdate {})
}
