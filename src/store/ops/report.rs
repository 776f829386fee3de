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
    let mut delivered = Delivered::default();
    let version_of = |id| current.get(id).map(|approval| approval.version);
    for op in ops.iter() {
        let Op::Report {
            job, outcome, now, ..
        } = op
        else {
            continue;
        };
        match &**outcome {
            Outcome::Delivered { .. } => {
                delivered.add(job, outcome, *now, deliveries.slack.then_some(&version_of));
            }
            Outcome::Retry { at, error } => tx.retry_job(job.id, *at, error).await?,
            Outcome::Dead { error } => tx.kill_job(job.id, error).await?,
        }
    }
    tx.insert_messages(&delivered.posted).await?;
    tx.mark_rendered(&delivered.rendered_rows()).await?;
    tx.finish_jobs(&delivered.finished).await?;
    done.jobs.extend(delivered.follow_ups);
    for op in ops.iter_mut() {
        if let Op::Report { reply, .. } = op {
            reply.set(Ok(()));
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
    finished: Vec<i64>,
    /// The jobs that follow, with one update at most per approval.
    follow_ups: Vec<(NewJob, DateTime<Utc>)>,
}

impl<'a> Delivered<'a> {
    /// Adds `job`'s delivery reported at `now`; with `version_of` (Slack is on), an
    /// approval it shows at an older version than its current one gets an update.
    fn add(
        &mut self,
        job: &'a DueJob,
        outcome: &'a Outcome,
        now: DateTime<Utc>,
        version_of: Option<&dyn Fn(ApprovalId) -> Option<i64>>,
    ) {
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
        self.finished.push(job.id);
        self.follow_ups
            .extend(next.iter().map(|next| (next.clone(), now)));
        let Some(version_of) = version_of else {
            return;
        };
        for (id, shown) in shows(job, outcome) {
            let stale = version_of(id).is_some_and(|current| current > shown);
            let planned = self.follow_ups.iter().any(|(job, _)| is_update_of(job, id));
            if stale && !planned {
                let update = NewJob {
                    approval_id: id,
                    job: Job::SlackUpdate {},
                    due_at: now,
                };
                self.follow_ups.push((update, now));
            }
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

fn is_update_of(job: &NewJob, id: ApprovalId) -> bool {
    job.approval_id == id && matches!(job.job, Job::SlackUpdate {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(approval_id: ApprovalId, id: i64) -> DueJob {
        DueJob {
            id,
            approval_id,
            job: Job::SlackUpdate {},
            attempts: 1,
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

    #[test]
    fn a_message_row_is_written_once_at_the_newest_version_reported() {
        let id = ApprovalId::new();
        let (first, second) = (job(id, 1), job(id, 2));
        let (newer, older) = (rendered(5), rendered(3));
        let mut delivered = Delivered::default();
        let now = Utc::now();
        delivered.add(&first, &newer, now, None);
        delivered.add(&second, &older, now, None);
        let key = key();
        assert_eq!(delivered.rendered_rows(), [(&key, id, 5)]);
        assert_eq!(delivered.finished, [1, 2]);
        assert!(delivered.follow_ups.is_empty(), "Slack is off");
    }

    #[test]
    fn an_approval_shown_out_of_date_gets_one_update_however_many_reports_say_so() {
        let (id, other) = (ApprovalId::new(), ApprovalId::new());
        let current = |asked: ApprovalId| Some(if asked == id { 4 } else { 1 });
        let jobs = [job(id, 1), job(id, 2), job(other, 3)];
        let outcomes = [rendered(3), rendered(2), rendered(1)];
        let mut delivered = Delivered::default();
        for (job, outcome) in jobs.iter().zip(&outcomes) {
            delivered.add(job, outcome, Utc::now(), Some(&current));
        }
        let updates: Vec<ApprovalId> = delivered
            .follow_ups
            .iter()
            .map(|(job, _)| job.approval_id)
            .collect();
        assert_eq!(updates, [id], "the other shows its current version");
        assert_eq!(delivered.follow_ups[0].0.job, Job::SlackUpdate {});
    }
}
