//! Delivery reports, recorded for a whole batch at once. A delivered job records the
//! messages it posted, moves the messages it updated to the version they now show and
//! deletes the job; the batch's reports do each of these in one statement, because a
//! batch of clicks carries about as many `chat.update` reports as clicks. An approval
//! that changed while its message was being posted or updated gets one more update, in
//! one statement too, which compares the versions shown with the approvals' own
//! without reading them into the batch (`Tx::update_if_newer`). A retry or a job given
//! up (rare) is one statement each.
//!
//! Every change to a job is fenced by the lease of the claim that ran it
//! ([`DueJob::lease_until`]): a holder whose lease ran out, and whose job another
//! replica has claimed since (or finished), neither finishes, retries nor kills it, and
//! its follow-up (the next reminder, planned by a reminder delivered or given up) is
//! not planned; what it did in Slack (the messages it posted, the versions they show)
//! is recorded all the same, since it happened.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{Done, Op};
use crate::approval::ApprovalId;
use crate::jobs::{Deliveries, DueJob, MessageKey, NewJob, Outcome, PostedMessage};
use crate::store::backend::Tx;

/// Records every report of `ops` and answers each whether its job still held its
/// claim's lease (and so was finished, retried or given up). With Slack on, an
/// approval one of them shows at an older version than its own (it changed while its
/// message was being posted or updated; a batch's post shows several approvals) gets
/// an update: compared with the approval as the batch found it, since the reports are
/// recorded before any approval is written (one this batch changes gets its update
/// from that change).
pub(super) async fn record<T: Tx>(
    tx: &mut T,
    ops: &mut [Op],
    deliveries: Deliveries,
    done: &mut Done,
) -> sqlx::Result<()> {
    let mut delivered = Delivered::default();
    // Retries and jobs given up answer here; delivered jobs once they are finished.
    let mut held = Vec::with_capacity(ops.len());
    for op in ops.iter() {
        let Op::Report {
            job, outcome, now, ..
        } = op
        else {
            held.push(None);
            continue;
        };
        held.push(match &**outcome {
            Outcome::Delivered { .. } => {
                delivered.add(job, outcome, *now, deliveries.slack);
                None
            }
            Outcome::Retry { at, error } => {
                Some(tx.retry_job(job.id, job.lease_until, *at, error).await?)
            }
            Outcome::Dead { error, next } => {
                let held = tx.kill_job(job.id, job.lease_until, error, *now).await?;
                // Its follow-up only when this report gave it up.
                done.jobs
                    .extend(next.iter().filter(|_| held).map(|n| (n.clone(), *now)));
                Some(held)
            }
        });
    }
    tx.insert_messages(&delivered.posted).await?;
    tx.mark_rendered(&delivered.rendered_rows()).await?;
    let mut finished: HashSet<i64> = tx
        .finish_jobs(&delivered.finished)
        .await?
        .into_iter()
        .collect();
    tx.update_if_newer(&delivered.shown).await?;
    // A job's follow-up only when this report finished it, and once.
    let mut followed = HashSet::new();
    done.jobs.extend(
        delivered
            .follow_ups
            .into_iter()
            .filter(|(job, ..)| finished.contains(job) && followed.insert(*job))
            .map(|(_, next, at)| (next, at)),
    );
    for (op, held) in ops.iter_mut().zip(held) {
        if let Op::Report { job, reply, .. } = op {
            reply.set(Ok(held.unwrap_or_else(|| finished.remove(&job.id))));
        }
    }
    Ok(())
}

/// What a batch's delivered jobs leave to write, gathered report by report.
#[derive(Default)]
struct Delivered<'a> {
    posted: Vec<(&'a PostedMessage, DateTime<Utc>)>,
    /// Each approval's row of a message once, at the newest version any report saw
    /// (one statement cannot move a row twice).
    rendered: HashMap<(&'a MessageKey, ApprovalId), i64>,
    /// The jobs to finish, each with the lease of the claim that ran it.
    finished: Vec<(i64, Option<DateTime<Utc>>)>,
    /// The approvals the delivered messages show, each with the version shown and when
    /// it was reported (Slack on only): compared with the approvals' own.
    shown: Vec<(ApprovalId, i64, DateTime<Utc>)>,
    /// The jobs that follow (the next reminder), each with the job it follows.
    follow_ups: Vec<(i64, NewJob, DateTime<Utc>)>,
}

impl<'a> Delivered<'a> {
    /// Adds `job`'s delivery reported at `now`; with `slack` on, the approvals its
    /// messages show are compared with their own versions.
    fn add(&mut self, job: &'a DueJob, outcome: &'a Outcome, now: DateTime<Utc>, slack: bool) {
        let Outcome::Delivered {
            posted,
            rendered,
            version,
            next,
        } = outcome
        else {
            return;
        };
        self.posted
            .extend(posted.iter().map(|message| (message, now)));
        for key in rendered {
            let shows = self
                .rendered
                .entry((key, job.approval_id))
                .or_insert(*version);
            *shows = (*shows).max(*version);
        }
        self.finished.push((job.id, job.lease_until));
        self.follow_ups
            .extend(next.iter().map(|next| (job.id, next.clone(), now)));
        if slack {
            let shows = shows(job, outcome).map(|(id, shown)| (id, shown, now));
            self.shown.extend(shows);
        }
    }

    fn rendered_rows(&self) -> Vec<(&'a MessageKey, ApprovalId, i64)> {
        self.rendered
            .iter()
            .map(|(&(key, id), &version)| (key, id, version))
            .collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Job;

    fn job(approval_id: ApprovalId, id: i64) -> DueJob {
        DueJob {
            id,
            approval_id,
            job: Job::SlackUpdate {},
            attempts: 1,
            lease_until: None,
        }
    }

    fn key() -> MessageKey {
        MessageKey {
            channel: "C1".into(),
            ts: "1.2".into(),
        }
    }

    fn rendered(version: i64) -> Outcome {
        Outcome::Delivered {
            posted: Vec::new(),
            rendered: vec![key()],
            version,
            next: None,
        }
    }

    fn posted(approval_id: ApprovalId, rendered_version: i64) -> PostedMessage {
        PostedMessage {
            approval_id,
            channel: "C1".into(),
            ts: format!("1.{rendered_version}"),
            kind: crate::jobs::MessageKind::Main,
            permalink: None,
            rendered_version,
        }
    }

    #[test]
    fn a_message_row_is_written_once_at_the_newest_version_reported() {
        let id = ApprovalId::new();
        let (first, second) = (job(id, 1), job(id, 2));
        let (newer, older) = (rendered(5), rendered(3));
        let mut delivered = Delivered::default();
        let now = Utc::now();
        delivered.add(&first, &newer, now, false);
        delivered.add(&second, &older, now, false);
        let key = key();
        assert_eq!(delivered.rendered_rows(), [(&key, id, 5)]);
        assert_eq!(delivered.finished, [(1, None), (2, None)]);
        assert!(
            delivered.shown.is_empty(),
            "Slack is off: nothing to compare"
        );
    }

    #[test]
    fn every_approval_a_delivered_message_shows_is_compared_at_the_version_shown() {
        let (leader, member, updated) = (ApprovalId::new(), ApprovalId::new(), ApprovalId::new());
        // A batch's post shows its leader and a member; an update shows its own approval.
        let post = Outcome::Delivered {
            posted: vec![posted(leader, 1), posted(member, 2)],
            rendered: Vec::new(),
            version: 1,
            next: None,
        };
        let failed = Outcome::Retry {
            at: Utc::now(),
            error: "later".into(),
        };
        let (first, second, third) = (job(leader, 1), job(updated, 2), job(member, 3));
        let (posted_at, updated_at) = (Utc::now(), Utc::now() + chrono::Duration::seconds(1));
        let update = rendered(7);
        let mut delivered = Delivered::default();
        delivered.add(&first, &post, posted_at, true);
        delivered.add(&second, &update, updated_at, true);
        delivered.add(&third, &failed, updated_at, true);
        assert_eq!(
            delivered.shown,
            [
                (leader, 1, posted_at),
                (member, 2, posted_at),
                (updated, 7, updated_at)
            ],
            "a retry shows nothing"
        );
        assert_eq!(delivered.finished, [(1, None), (2, None)]);
    }
}
