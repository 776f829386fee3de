//! Leases fence delivery reports: a holder whose lease ran out, its job claimed again
//! by another replica, neither finishes, retries, kills nor puts back that job, and
//! plans no follow-up; the holder of the lease does, once.

use std::time::Duration;

use serde_json::json;
use signoff::clock::Clock;
use signoff::jobs::{DueJob, Job, LEASE, NewJob, Outcome};

use crate::helpers::*;

crate::on_both_backends!(
    a_holder_whose_lease_ran_out_changes_nothing_of_the_job_another_claimed,
    a_job_reported_done_twice_plans_its_follow_up_once,
    a_job_given_up_plans_its_follow_up_when_it_holds_the_lease,
);

/// A reminder's report: delivered, with the next reminder an hour on.
fn reminded(job: &DueJob, now: chrono::DateTime<chrono::Utc>) -> Outcome {
    Outcome::Delivered {
        posted: Vec::new(),
        rendered: Vec::new(),
        version: 1,
        next: Some(next_reminder(job, now)),
    }
}

/// A reminder's report: given up, with the next reminder an hour on all the same.
fn given_up(job: &DueJob, now: chrono::DateTime<chrono::Utc>) -> Outcome {
    Outcome::Dead {
        error: "missing_scope".into(),
        next: Some(next_reminder(job, now)),
    }
}

fn next_reminder(job: &DueJob, now: chrono::DateTime<chrono::Utc>) -> NewJob {
    NewJob {
        approval_id: job.approval_id,
        job: Job::SlackRemind { thread_in: None },
        due_at: now + chrono::Duration::hours(1),
    }
}

async fn a_holder_whose_lease_ran_out_changes_nothing_of_the_job_another_claimed(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    create(&store, &clock, "a", json!({})).await;
    let first = store.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    let first = first.into_iter().next().expect("its post");
    // The first holder overruns its lease; another replica claims the job.
    clock.advance(LEASE + Duration::from_secs(1));
    let replica = signoff::store::Store::connect(&db.url).await.unwrap();
    let second = replica.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    assert_eq!(second.len(), 1, "the lease ran out");
    let second = second.into_iter().next().unwrap();
    assert_eq!(second.id, first.id);
    assert_ne!(second.lease_until, first.lease_until);
    let now = clock.now();
    let jobs = || raw_count(&db, "SELECT COUNT(*) FROM jobs");

    let retry = Outcome::Retry {
        at: now,
        error: "timed out".into(),
    };
    let recorded = store.report(first.clone(), retry, now).await.unwrap();
    assert_claimable(&store, now, &[], "still leased to the second holder").await;
    assert!(!recorded, "the first holder's retry is fenced out");

    let dead = given_up(&first, now);
    assert!(!store.report(first.clone(), dead, now).await.unwrap());
    let dead = "SELECT COUNT(*) FROM jobs WHERE state = 'dead'";
    assert_eq!(raw_count(&db, dead).await, 0, "not given up");
    assert_eq!(jobs().await, 1, "and no follow-up planned");

    store.defer_jobs(vec![(&first, now)]).await.unwrap();
    assert_claimable(&store, now, &[], "not put back either").await;

    let done = store.report(first.clone(), reminded(&first, now), now);
    assert!(!done.await.unwrap(), "nor finished");
    assert_eq!(
        jobs().await,
        1,
        "the job stays, and no follow-up is planned"
    );

    // The holder of the lease finishes it, and plans the next reminder.
    let done = replica.report(second.clone(), reminded(&second, now), now);
    assert!(done.await.unwrap());
    let reminders = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind'";
    assert_eq!(jobs().await, 1, "the job is gone");
    assert_eq!(raw_count(&db, reminders).await, 1, "one next reminder");

    // The first holder's report arriving only now plans no second one.
    let late = store.report(first.clone(), reminded(&first, now), now);
    assert!(!late.await.unwrap());
    assert_eq!(raw_count(&db, reminders).await, 1, "still one");
}

async fn a_job_reported_done_twice_plans_its_follow_up_once(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    create(&store, &clock, "a", json!({})).await;
    let job = store.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    let job = job.into_iter().next().expect("its post");
    let now = clock.now();
    // Queued together: the writer may take both in one batch.
    let (one, two) = tokio::join!(
        store.report(job.clone(), reminded(&job, now), now),
        store.report(job.clone(), reminded(&job, now), now),
    );
    let reminders = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind'";
    assert_eq!(raw_count(&db, reminders).await, 1, "one next reminder");
    assert_eq!(raw_count(&db, "SELECT COUNT(*) FROM jobs").await, 1);
    let recorded = [one.unwrap(), two.unwrap()];
    assert_eq!(
        recorded.iter().filter(|r| **r).count(),
        1,
        "one of them finished it: {recorded:?}"
    );
}

/// A reminder given up (dead-lettered) by the holder of its lease plans the next
/// reminder in the same report: one refusal does not end the chain.
async fn a_job_given_up_plans_its_follow_up_when_it_holds_the_lease(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    create(&store, &clock, "a", json!({})).await;
    let claimed = store.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    let job = claimed.into_iter().next().expect("its post");
    let now = clock.now();
    assert!(
        store
            .report(job.clone(), given_up(&job, now), now)
            .await
            .unwrap()
    );
    let dead = "SELECT COUNT(*) FROM jobs WHERE state = 'dead'";
    assert_eq!(raw_count(&db, dead).await, 1, "kept for health to report");
    let reminders = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_remind' AND state = 'ready'";
    assert_eq!(raw_count(&db, reminders).await, 1, "the next reminder");
    assert_claimable(&store, now, &[], "due an hour on").await;
}
