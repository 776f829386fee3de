//! Expiry timers, change notices, the audit log, tokens, health and the shared table.

use std::time::{Duration, Instant};

use serde_json::json;
use signoff::approval::{Decision, Rejection, Status};
use signoff::clock::Clock;
use signoff::jobs::{Due, LEASE};
use signoff::scheduler::Scheduler;
use signoff::store::StoreError;

use crate::common::{self, TestDb};
use crate::helpers::*;

crate::on_both_backends!(
    a_claimed_job_is_leased_and_a_crashed_holder_loses_it,
    timers_fire_in_their_own_transaction_once_across_replicas,
    claims_in_the_shared_table_are_recorded_once_across_replicas,
    nudges_become_jobs_when_due_once_across_replicas_and_never_once_decided,
    an_expiry_timer_follows_an_expiry_moved_in_the_shared_table,
    expiries_behind_the_last_pass_still_fire,
    an_idle_scheduler_pass_writes_and_locks_nothing,
    finished_jobs_are_deleted_and_given_up_ones_kept,
    reports_queued_together_are_each_recorded,
    deferred_jobs_come_back_at_their_own_times_without_counting_an_attempt,
    a_paced_claim_leases_the_ready_and_moves_the_waiting_in_one_step,
    a_backlog_claimed_in_several_writes_is_claimed_whole_and_in_order,
    a_claim_that_fails_part_way_answers_the_jobs_it_leased_and_leaves_the_rest_due,
    a_job_a_newer_signoff_wrote_is_put_off_without_an_attempt_and_never_delivered,
    main_permalinks_are_read_for_many_approvals_at_once,
    the_scheduler_expires_pending_and_approved_approvals,
    decisions_are_announced_to_subscribers,
    the_audit_chain_links_every_event_in_order,
    the_audit_log_refuses_update_and_delete,
    tokens_are_stored_hashed_listed_and_revoked,
    health_counts_pending_and_stale_approvals,
    health_counts_an_overdue_slack_post_but_no_overdue_callback,
    callbacks_due_are_read_in_turns_across_requesters,
    approvals_are_found_by_an_id_prefix,
    many_approvals_are_read_at_once_in_the_order_asked,
);

async fn many_approvals_are_read_at_once_in_the_order_asked(db: TestDb) {
    let (store, clock) = open(&db).await;
    // More than two of get_many's reads (500 each); created together, the writer
    // commits them in a few batches.
    let created = futures_util::future::join_all(
        (0..1_100).map(|i| create(&store, &clock, "a", json!({ "i": i }))),
    )
    .await;
    let voted = vote(&store, &clock, created[7].id, "U1", Decision::Deny)
        .await
        .unwrap();
    assert_eq!(voted.status, Status::Denied);
    let unknown = signoff::approval::ApprovalId::new();
    let mut asked: Vec<_> = created.iter().rev().map(|a| a.id).collect();
    asked.insert(600, unknown);
    let read = store.get_many(&asked).await.unwrap();
    let read_ids: Vec<_> = read.iter().map(|a| a.id).collect();
    asked.retain(|id| *id != unknown);
    assert_eq!(
        read_ids, asked,
        "in the order asked, the unknown id left out"
    );
    let denied = read.iter().find(|a| a.id == voted.id).unwrap();
    assert_eq!(denied, &voted, "with its votes, as one read answers it");
    assert_eq!(denied.votes.len(), 1);
    for approval in read.iter().step_by(97) {
        assert_eq!(
            Some(approval),
            store.get(approval.id).await.unwrap().as_ref()
        );
    }
    assert!(store.get_many(&[]).await.unwrap().is_empty());
    assert!(store.get_many(&[unknown]).await.unwrap().is_empty());

    let pending = store.list_all(Some(Status::Pending)).await.unwrap();
    assert_eq!(pending.len(), 1_099, "all but the denied one");
    assert!(pending.iter().all(|a| a.status == Status::Pending));
    let order = |a: &signoff::approval::Approval| (a.created_at, a.id.to_string());
    assert!(
        pending.windows(2).all(|w| order(&w[0]) <= order(&w[1])),
        "oldest first"
    );
    assert_eq!(store.list_all(None).await.unwrap().len(), 1_100);
}

async fn approvals_are_found_by_an_id_prefix(db: TestDb) {
    let (store, clock) = open(&db).await;
    let mut approvals = Vec::new();
    for i in 0..17 {
        approvals.push(create(&store, &clock, "a", json!({ "i": i })).await);
    }
    let one = &approvals[0];
    assert_eq!(
        store.find_by_prefix(&one.id.short(), 2).await.unwrap(),
        [one.id]
    );
    let full = one.id.to_string();
    assert_eq!(
        store
            .find_by_prefix(&full.to_ascii_uppercase(), 2)
            .await
            .unwrap(),
        [one.id]
    );
    assert_eq!(
        store.find_by_prefix(&full[..11], 2).await.unwrap(),
        [one.id]
    );
    // 17 ids, 16 hex digits: some first digit starts two of them.
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| {
            approvals
                .iter()
                .filter(|a| a.id.to_string().starts_with(d.as_str()))
                .count()
                >= 2
        })
        .unwrap();
    let found = store.find_by_prefix(&digit, 2).await.unwrap();
    assert_eq!(found.len(), 2, "at most as many as asked for");
    assert!(found.iter().all(|id| id.to_string().starts_with(&digit)));
    let unknown = (0..=u32::MAX)
        .map(|n| format!("{n:08x}"))
        .find(|p| !approvals.iter().any(|a| a.id.short() == *p))
        .unwrap();
    assert!(store.find_by_prefix(&unknown, 2).await.unwrap().is_empty());
    assert!(store.find_by_prefix("not-hex", 2).await.unwrap().is_empty());
}

async fn deferred_jobs_come_back_at_their_own_times_without_counting_an_attempt(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    for name in ["a", "b", "c"] {
        create(&store, &clock, name, json!({})).await;
    }
    let claimed = store.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(claimed.iter().all(|job| job.attempts == 1));
    // One goes back a second, one two seconds; the third stays leased.
    let later = |secs| clock.now() + chrono::Duration::seconds(secs);
    store
        .defer_jobs(vec![(&claimed[0], later(1)), (&claimed[1], later(2))])
        .await
        .unwrap();
    assert!(
        store
            .claim_jobs(clock.now(), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    let first = store.claim_jobs(later(1), 10, LEASE).await.unwrap();
    assert_eq!(
        first.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
        [(claimed[0].id, 1)],
        "due at its own time; the deferral was not an attempt"
    );
    let second = store.claim_jobs(later(2), 10, LEASE).await.unwrap();
    assert_eq!(
        second
            .iter()
            .map(|j| (j.id, j.attempts))
            .collect::<Vec<_>>(),
        [(claimed[1].id, 1)]
    );
}

async fn a_paced_claim_leases_the_ready_and_moves_the_waiting_in_one_step(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    let replica =
        signoff::store::Store::connect_with(&db.url, signoff::jobs::Deliveries { slack: true })
            .await
            .unwrap();
    for name in ["a", "b", "c", "d"] {
        create(&store, &clock, name, json!({})).await;
    }
    let now = clock.now();
    let later = |secs| now + chrono::Duration::seconds(secs);
    let due = store.due_jobs(now, 10, Due::All).await.unwrap();
    assert_eq!(due.len(), 4);
    assert!(due.jobs.iter().all(|job| job.attempts == 0), "only read");
    let ids: Vec<i64> = due.jobs.iter().map(|job| job.id).collect();
    // Between the read and the claim, another replica claims the first job.
    let theirs = replica.due_jobs(now, 10, Due::All).await.unwrap();
    let taken = replica
        .claim_due(theirs, now, LEASE, |mut jobs| {
            jobs.retain(|job| job.id == ids[0]);
            (jobs, Vec::new())
        })
        .await
        .unwrap();
    assert_eq!(taken.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[0]]);
    // Ours: the first two (the first in vain) now, in reverse; the others wait, and
    // the replica's job is not moved either.
    let claimed = store
        .claim_due(due, now, LEASE, |jobs| {
            let mut ready: Vec<_> = jobs[..2].to_vec();
            ready.reverse();
            let waiting = vec![(ids[0], later(1)), (ids[2], later(2)), (ids[3], later(3))];
            (ready, waiting)
        })
        .await
        .unwrap();
    assert_eq!(
        claimed
            .iter()
            .map(|j| (j.id, j.attempts))
            .collect::<Vec<_>>(),
        [(ids[1], 1)],
        "the one still free, leased and counted"
    );
    assert!(
        store
            .claim_jobs(later(1), 10, LEASE)
            .await
            .unwrap()
            .is_empty()
    );
    for (secs, id) in [(2, ids[2]), (3, ids[3])] {
        let back = store.claim_jobs(later(secs), 10, LEASE).await.unwrap();
        assert_eq!(
            back.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(),
            [(id, 1)],
            "back at its own time, the wait not counted as an attempt"
        );
    }
}

/// A pass's claim goes to the writer a few hundred jobs at a time (so a backlog does
/// not hold the requests behind it for the whole claim): every job is still claimed
/// once, the ready ones answered in the pacer's order.
async fn a_backlog_claimed_in_several_writes_is_claimed_whole_and_in_order(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    for n in 0..300 {
        create(&store, &clock, "tool", json!({ "n": n })).await;
    }
    let now = clock.now();
    let later = |secs| now + chrono::Duration::seconds(secs);
    let due = store.due_jobs(now, 1000, Due::All).await.unwrap();
    assert_eq!(due.len(), 300);
    let ids: Vec<i64> = due.jobs.iter().map(|job| job.id).collect();
    // The first 200 now, last first; the other 100 wait five seconds.
    let mut ready = ids[..200].to_vec();
    ready.reverse();
    let claimed = store
        .claim_due(due, now, LEASE, |jobs| {
            let mut now_jobs: Vec<_> = jobs[..200].to_vec();
            now_jobs.reverse();
            let waiting = jobs[200..].iter().map(|job| (job.id, later(5))).collect();
            (now_jobs, waiting)
        })
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), ready);
    assert!(claimed.iter().all(|job| job.attempts == 1));
    assert!(
        store
            .claim_jobs(later(4), 1000, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "the leased are leased, the waiting wait"
    );
    // All due at the same time: in no particular order.
    assert_claimable(&store, later(5), &ids[200..], "the waiting, back").await;
}

/// A claim's second write fails (a trigger refuses one of its jobs): the first write's
/// jobs are leased and answered, to run now rather than when their lease runs out;
/// the failed write's jobs and those after it were not claimed and are due for the
/// next pass. A failure of the first write fails the claim.
async fn a_claim_that_fails_part_way_answers_the_jobs_it_leased_and_leaves_the_rest_due(
    db: TestDb,
) {
    let (store, clock) = open_posting(&db).await;
    for n in 0..300 {
        create(&store, &clock, "tool", json!({ "n": n })).await;
    }
    let now = clock.now();
    let due = store.due_jobs(now, 1000, Due::All).await.unwrap();
    let ids: Vec<i64> = due.jobs.iter().map(|job| job.id).collect();
    assert_eq!(ids.len(), 300);
    let refused_job = |id: i64| format!("OLD.id = {id}");
    // The first write refused: nothing is claimed.
    refuse(
        &db,
        "UPDATE",
        "jobs",
        &refused_job(ids[3]),
        "claim refused by trigger",
    )
    .await;
    let first = store.due_jobs(now, 1000, Due::All).await.unwrap();
    let refused = store
        .claim_due(first, now, LEASE, |jobs| (jobs, Vec::new()))
        .await;
    assert!(
        matches!(&refused, Err(StoreError::Database(e)) if e.to_string().contains("claim refused")),
        "{refused:?}"
    );
    assert_eq!(
        store.due_jobs(now, 1000, Due::All).await.unwrap().len(),
        300
    );
    allow(&db, "jobs").await;
    // The second write refused: the first write's 128 are answered, leased.
    refuse(
        &db,
        "UPDATE",
        "jobs",
        &refused_job(ids[200]),
        "claim refused by trigger",
    )
    .await;
    let claimed = store
        .claim_due(due, now, LEASE, |jobs| (jobs, Vec::new()))
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), ids[..128]);
    assert!(claimed.iter().all(|job| job.attempts == 1));
    allow(&db, "jobs").await;
    assert_claimable(&store, now, &ids[128..], "the rest still due, once each").await;
}

/// A job of a kind only a newer signoff knows (a rolling upgrade) is put off by a
/// lease, not leased: an attempt counted here would be one fewer for the version that
/// runs it.
async fn a_job_a_newer_signoff_wrote_is_put_off_without_an_attempt_and_never_delivered(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    let foreign = create(&store, &clock, "a", json!({})).await;
    let ours = create(&store, &clock, "b", json!({})).await;
    let marked = raw_execute(
        &db,
        &format!(
            "UPDATE jobs SET kind = 'teleport' WHERE approval_id = '{}'",
            foreign.id
        ),
    )
    .await
    .unwrap();
    assert_eq!(marked, 1);
    let due = store.due_jobs(clock.now(), 10, Due::All).await.unwrap();
    assert_eq!((due.jobs.len(), due.foreign.len()), (1, 1));
    let claimed = store
        .claim_due(due, clock.now(), LEASE, |jobs| (jobs, Vec::new()))
        .await
        .unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.approval_id).collect::<Vec<_>>(),
        [ours.id]
    );
    assert!(
        store
            .due_jobs(clock.now(), 10, Due::All)
            .await
            .unwrap()
            .is_empty(),
        "put off, so that it does not come back at every pass"
    );
    let untouched = raw_count(
        &db,
        "SELECT COUNT(*) FROM jobs WHERE kind = 'teleport' AND state = 'ready' \
         AND locked_until IS NULL AND attempts = 0",
    )
    .await;
    assert_eq!(
        untouched, 1,
        "left in the table for the version that knows it"
    );
    let later = clock.now() + chrono::Duration::from_std(LEASE).unwrap();
    let due = store.due_jobs(later, 10, Due::All).await.unwrap();
    assert_eq!(due.foreign.len(), 1, "due again a lease later");
}

async fn main_permalinks_are_read_for_many_approvals_at_once(db: TestDb) {
    use signoff::jobs::{Deliveries, Outcome, PostedMessage};
    let store = signoff::store::Store::connect_with(&db.url, Deliveries { slack: true })
        .await
        .unwrap();
    let (_, clock) = open(&db).await;
    let linked = create(&store, &clock, "a", json!({})).await;
    let unlinked = create(&store, &clock, "b", json!({})).await;
    let unposted = create(&store, &clock, "c", json!({})).await;
    let posted =
        |approval: &signoff::approval::Approval, kind: &str, link: Option<&str>| PostedMessage {
            approval_id: approval.id,
            channel: if kind == "dm" {
                "D0ALICE"
            } else {
                "C0APPROVALS"
            }
            .into(),
            ts: format!("1700000000.{}", approval.id.short()),
            kind: signoff::jobs::MessageKind::parse(kind).unwrap(),
            permalink: link.map(str::to_owned),
            rendered_version: approval.version,
        };
    let jobs = store.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    let job_of = |approval: &signoff::approval::Approval| {
        jobs.iter()
            .find(|job| job.approval_id == approval.id)
            .expect("a post job per approval")
            .clone()
    };
    let messages = [
        (
            &linked,
            vec![posted(
                &linked,
                "main",
                Some("https://x.slack.com/archives/C0APPROVALS/p1"),
            )],
        ),
        (
            &unlinked,
            vec![posted(
                &unlinked,
                "dm",
                Some("https://x.slack.com/archives/D0ALICE/p2"),
            )],
        ),
    ];
    for (approval, posted) in messages {
        let outcome = Outcome::Delivered {
            posted,
            rendered: Vec::new(),
            version: approval.version,
            next: None,
        };
        store
            .report(job_of(approval), outcome, clock.now())
            .await
            .unwrap();
    }
    let links = store
        .main_permalinks(&[linked.id, unlinked.id, unposted.id])
        .await
        .unwrap();
    assert_eq!(links.len(), 1, "only main posts with a link: {links:?}");
    assert_eq!(
        links.get(&linked.id).map(String::as_str),
        Some("https://x.slack.com/archives/C0APPROVALS/p1")
    );
    assert!(store.main_permalinks(&[]).await.unwrap().is_empty());

    // A status get reads the approval and its main post's link in one statement.
    let link_of = |id| {
        let store = store.clone();
        async move {
            let (approval, link) = store.get_linked(id).await.unwrap().expect("found");
            assert_eq!(approval.id, id);
            link
        }
    };
    assert_eq!(
        link_of(linked.id).await.as_deref(),
        Some("https://x.slack.com/archives/C0APPROVALS/p1")
    );
    assert_eq!(
        link_of(unlinked.id).await,
        None,
        "a DM is not the main post"
    );
    assert_eq!(link_of(unposted.id).await, None);
    let unknown = signoff::approval::ApprovalId(uuid::Uuid::new_v4());
    assert!(store.get_linked(unknown).await.unwrap().is_none());

    // Gets that arrive together (PostgreSQL reads them in shared statements) are each
    // answered with their own approval and link, or none.
    let link = Some("https://x.slack.com/archives/C0APPROVALS/p1");
    let cases = [
        (linked.id, Some(link)),
        (unlinked.id, Some(None)),
        (unknown, None),
        (unposted.id, Some(None)),
    ];
    let gets = (0..64).map(|i| {
        let (id, expected) = cases[i % cases.len()];
        let store = store.clone();
        async move {
            let found = store.get_linked(id).await.unwrap();
            assert_eq!(
                found.as_ref().map(|(approval, _)| approval.id),
                expected.map(|_| id)
            );
            let link = found.and_then(|(_, link)| link);
            assert_eq!(link.as_deref(), expected.flatten(), "get {i} of {id}");
        }
    });
    futures_util::future::join_all(gets).await;

    // A click reads the approval and whether the clicked message is one of its own in
    // one statement.
    let dm = signoff::jobs::MessageKey {
        channel: "D0ALICE".into(),
        ts: format!("1700000000.{}", unlinked.id.short()),
    };
    let shown_in = |id, message: signoff::jobs::MessageKey| {
        let store = store.clone();
        async move {
            let found = store.get_shown_in(id, &message).await.unwrap();
            found.map(|(approval, shown)| {
                assert_eq!(approval.id, id);
                shown
            })
        }
    };
    assert_eq!(
        shown_in(unlinked.id, dm.clone()).await,
        Some(true),
        "its DM"
    );
    assert_eq!(
        shown_in(linked.id, dm.clone()).await,
        Some(false),
        "another's message"
    );
    assert_eq!(shown_in(unposted.id, dm.clone()).await, Some(false));
    let elsewhere = signoff::jobs::MessageKey {
        channel: "C0OTHER".into(),
        ..dm.clone()
    };
    assert_eq!(
        shown_in(unlinked.id, elsewhere.clone()).await,
        Some(false),
        "the same ts in another channel"
    );
    assert_eq!(shown_in(unknown, dm.clone()).await, None);

    // Clicks that arrive together (PostgreSQL reads them in shared statements), some
    // on the same approval through different messages, are each answered for their
    // own approval and message.
    let cases = [
        (unlinked.id, dm.clone(), Some(true)),
        (unlinked.id, elsewhere, Some(false)),
        (linked.id, dm.clone(), Some(false)),
        (unknown, dm, None),
    ];
    let clicks = (0..64).map(|i| {
        let (id, message, expected) = cases[i % cases.len()].clone();
        let shown_in = &shown_in;
        async move { assert_eq!(shown_in(id, message).await, expected, "click {i}") }
    });
    futures_util::future::join_all(clicks).await;
}

async fn the_scheduler_expires_pending_and_approved_approvals(db: TestDb) {
    let (store, clock) = open(&db).await;
    let scheduler = Scheduler::new(store.clone());
    let pending = create_expiring(&store, &clock, "a", 60).await;
    let approved = create_expiring(&store, &clock, "b", 60).await;
    vote(&store, &clock, approved.id, "U1", Decision::Approve)
        .await
        .unwrap();
    let executed = create_expiring(&store, &clock, "c", 60).await;
    vote(&store, &clock, executed.id, "U1", Decision::Approve)
        .await
        .unwrap();
    execute(&store, &clock, executed.id, json!({"name": "c"}), TOKEN)
        .await
        .unwrap();
    let later = create_expiring(&store, &clock, "d", 3000).await;

    assert_eq!(
        scheduler.run_once(clock.now()).await.unwrap(),
        0,
        "nothing due yet"
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(
        scheduler.run_once(clock.now()).await.unwrap(),
        2,
        "the pending and the approved one were due (the executed one can no longer expire)"
    );
    assert_eq!(
        scheduler.run_once(clock.now()).await.unwrap(),
        0,
        "and each fires once"
    );
    let status = |id| {
        let store = store.clone();
        async move { store.get(id).await.unwrap().unwrap().status }
    };
    assert_eq!(status(pending.id).await, Status::Expired);
    assert_eq!(status(approved.id).await, Status::Expired);
    assert_eq!(
        status(executed.id).await,
        Status::Executed,
        "executed stays executed"
    );
    assert_eq!(status(later.id).await, Status::Pending);
    assert!(matches!(
        execute(&store, &clock, approved.id, json!({"name": "b"}), TOKEN).await,
        Err(StoreError::Rejected {
            rejection: Rejection::AlreadyDecided(Status::Expired),
            ..
        })
    ));
    assert_eq!(count_audit(&store, "expired").await, 2);
}

async fn decisions_are_announced_to_subscribers(db: TestDb) {
    let (store, clock) = open(&db).await;
    let approval = create(&store, &clock, "deploy", json!({})).await;
    let mut changes = store.subscribe();
    vote(&store, &clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), changes.recv())
        .await
        .expect("announced")
        .unwrap();
    assert_eq!(change.id, approval.id);
    assert_eq!(change.status, Status::Approved);
}

async fn the_audit_chain_links_every_event_in_order(db: TestDb) {
    let (store, clock) = open(&db).await;
    let a = create(&store, &clock, "x", json!({"i": 1})).await;
    let b = create(&store, &clock, "x", json!({"i": 2})).await;
    vote(&store, &clock, a.id, "U1", Decision::Approve)
        .await
        .unwrap();
    vote(&store, &clock, b.id, "U1", Decision::Deny)
        .await
        .unwrap();
    execute(&store, &clock, a.id, json!({"i": 1}), TOKEN)
        .await
        .unwrap();
    let events = store.audit_page(0, 100).await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "requested",
            "requested",
            "vote",
            "approved",
            "vote",
            "denied",
            "executed"
        ]
    );
    assert_one_audit_chain(&store).await;
    assert_eq!(events[2].actor.as_deref(), Some("U1"));
    assert_eq!(events[2].approval_id, Some(a.id));
}

async fn the_audit_log_refuses_update_and_delete(db: TestDb) {
    let (store, clock) = open(&db).await;
    create(&store, &clock, "x", json!({})).await;
    let update = raw_execute(&db, "UPDATE audit_events SET actor = 'mallory'").await;
    assert!(update.unwrap_err().contains("append-only"));
    let delete = raw_execute(&db, "DELETE FROM audit_events").await;
    assert!(delete.unwrap_err().contains("append-only"));
    // Nor an insert that takes a number in use: SQLite's REPLACE would delete the row
    // it conflicts with without its delete guard, PostgreSQL's ON CONFLICT update it.
    let columns = "seq, approval_id, kind, actor, at, data, prev_hash, hash";
    let (events, checkpoints) = if db.backend == "sqlite" {
        (
            format!(
                "INSERT OR REPLACE INTO audit_events ({columns}) \
                 SELECT seq, approval_id, kind, 'mallory', at, data, prev_hash, hash \
                 FROM audit_events WHERE seq = 1"
            ),
            "INSERT OR REPLACE INTO audit_checkpoints (n, seq, hash, at, signature) \
             VALUES (1, 1, 'forged', '2026-11-23T12:00:00Z', 'forged')",
        )
    } else {
        (
            format!(
                "INSERT INTO audit_events ({columns}) \
                 SELECT seq, approval_id, kind, 'mallory', at, data, prev_hash, hash \
                 FROM audit_events WHERE seq = 1 ON CONFLICT (seq) DO UPDATE SET actor = 'mallory'"
            ),
            "INSERT INTO audit_checkpoints (n, seq, hash, at, signature) \
             VALUES (1, 1, 'forged', '2026-11-23T12:00:00Z', 'forged') \
             ON CONFLICT (n) DO UPDATE SET hash = 'forged'",
        )
    };
    let replace = raw_execute(&db, &events).await;
    assert!(replace.unwrap_err().contains("append-only"));
    raw_execute(
        &db,
        "INSERT INTO audit_checkpoints (n, seq, hash, at, signature) \
         VALUES (1, 1, 'first', '2026-11-23T12:00:00Z', 'first')",
    )
    .await
    .unwrap();
    let replace = raw_execute(&db, checkpoints).await;
    assert!(replace.unwrap_err().contains("append-only"));
    assert_eq!(
        raw_count(
            &db,
            "SELECT COUNT(*) FROM audit_checkpoints WHERE hash = 'first'"
        )
        .await,
        1
    );
    assert_eq!(store.audit_head().await.unwrap().0, 1);
    let events = store.audit_page(0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_ne!(
        events[0].actor.as_deref(),
        Some("mallory"),
        "{:?}",
        events[0]
    );
}

async fn tokens_are_stored_hashed_listed_and_revoked(db: TestDb) {
    let (store, clock) = open(&db).await;
    let token = signoff::tokens::generate();
    let hash = signoff::tokens::hash(&token);
    assert!(
        store
            .token_insert("billing", &hash, clock.now())
            .await
            .unwrap()
    );
    assert!(
        !store
            .token_insert("billing", "other", clock.now())
            .await
            .unwrap(),
        "names are unique"
    );
    assert_eq!(
        store.token_lookup(&hash).await.unwrap().as_deref(),
        Some("billing")
    );
    assert_eq!(
        store.token_lookup(&token).await.unwrap(),
        None,
        "the token itself is not what is stored"
    );
    let list = store.token_list().await.unwrap();
    assert!(
        list.iter()
            .any(|t| t.name == "billing" && t.revoked_at.is_none())
    );
    assert!(store.token_revoke("billing", clock.now()).await.unwrap());
    assert!(!store.token_revoke("billing", clock.now()).await.unwrap());
    assert_eq!(store.token_lookup(&hash).await.unwrap(), None);
}

async fn health_counts_pending_and_stale_approvals(db: TestDb) {
    let (store, clock) = open(&db).await;
    create_expiring(&store, &clock, "a", 10).await;
    create(&store, &clock, "b", json!({})).await;
    let counts = store.health(clock.now()).await.unwrap();
    assert_eq!(
        (counts.pending, counts.stale_pending, counts.undelivered),
        (2, 0, 0)
    );
    // Past expiry plus the grace period, with no scheduler running: stale.
    clock.advance(Duration::from_secs(200));
    let counts = store.health(clock.now()).await.unwrap();
    assert_eq!(counts.stale_pending, 1);
    assert_eq!(
        counts.undelivered, 0,
        "an overdue expiry is a stale approval, not a delivery"
    );
    Scheduler::new(store.clone())
        .run_once(clock.now())
        .await
        .unwrap();
    let counts = store.health(clock.now()).await.unwrap();
    assert_eq!(
        (counts.pending, counts.stale_pending, counts.undelivered),
        (1, 0, 0)
    );
}

/// A Slack post overdue is undelivered; a callback overdue is not (its receiver is
/// the caller's: any token holder could keep callbacks overdue and the status at 503).
async fn health_counts_an_overdue_slack_post_but_no_overdue_callback(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    let mut request = new_request("job", json!({}));
    request.callback_url = Some("https://hooks.example.com/cb".into());
    let mut class = classify("job");
    class.route.channel = None;
    let created = store.create(request, class, clock.now()).await.unwrap();
    vote(&store, &clock, created.approval.id, "U1", Decision::Deny)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(120));
    let ready = "SELECT COUNT(*) FROM jobs WHERE state = 'ready'";
    assert_eq!(
        raw_count(&db, &format!("{ready} AND kind = 'callback'")).await,
        1,
        "the callback waits, two minutes overdue"
    );
    assert_eq!(raw_count(&db, ready).await, 1, "and nothing else");
    assert_eq!(store.health(clock.now()).await.unwrap().undelivered, 0);

    create(&store, &clock, "b", json!({})).await;
    clock.advance(Duration::from_secs(120));
    assert_eq!(
        store.health(clock.now()).await.unwrap().undelivered,
        1,
        "the post of a request to a channel, two minutes overdue"
    );
}

/// The callbacks due come in turns across requesters (each one's earliest, then each
/// one's second...), so that one requester's backlog, however deep, does not hide
/// another's first from the callbacks' slots (`outbox::slots` picks among them).
async fn callbacks_due_are_read_in_turns_across_requesters(db: TestDb) {
    let (store, clock) = open(&db).await;
    let denied = |token: &'static str, i: usize| {
        let (store, clock) = (store.clone(), clock.clone());
        async move {
            let mut request = new_request("job", json!({ "i": i }));
            request.callback_url = Some("https://hooks.example.com/cb".into());
            request.token_name = Some(token.into());
            let created = store
                .create(request, classify("job"), clock.now())
                .await
                .unwrap();
            vote(&store, &clock, created.approval.id, "U1", Decision::Deny)
                .await
                .unwrap();
            clock.advance(Duration::from_millis(1));
            created.approval.id
        }
    };
    let mut backlog = Vec::new();
    for i in 0..70 {
        backlog.push(denied("flood", i).await);
    }
    let other = denied("other", 0).await;
    let due = store
        .due_jobs(clock.now(), 3, Due::CallbacksInTurns)
        .await
        .unwrap();
    let ids: Vec<_> = due.jobs.iter().map(|job| job.approval_id).collect();
    assert_eq!(ids, [backlog[0], other, backlog[1]]);
    let requesters: Vec<_> = due
        .jobs
        .iter()
        .map(|job| match &job.job {
            signoff::jobs::Job::Callback { requester, .. } => requester.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        requesters,
        [
            Some("flood".into()),
            Some("other".into()),
            Some("flood".into())
        ]
    );
}

// ---- PostgreSQL only ----

#[tokio::test]
async fn reads_survive_the_server_dropping_idle_connections_on_postgres() {
    let Some(db) = common::postgres("dropped_connections").await else {
        return;
    };
    let (store, clock) = open(&db).await;
    let approval = create(&store, &clock, "a", json!({})).await;
    // Several reader connections in the pool, all idle.
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let store = store.clone();
        reads.spawn(async move { store.get(approval.id).await });
    }
    while let Some(read) = reads.join_next().await {
        assert!(read.unwrap().unwrap().is_some());
    }
    // The server drops every connection (as a restart would) while they sit idle.
    let dropped = raw_execute(
        &db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await
    .unwrap();
    assert!(dropped >= 2, "the readers and the writer were connected");
    // Idle past the ping threshold: the pool finds them dead and opens new ones.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..8 {
        let read = store.get(approval.id).await.unwrap().unwrap();
        assert_eq!(read.id, approval.id);
    }
}

// ---- PostgreSQL only: the shared table contract ----

#[tokio::test]
async fn the_shared_table_accepts_direct_inserts_and_refuses_direct_decisions_on_postgres() {
    let Some(db) = common::postgres("shared_table").await else {
        return;
    };
    let (store, clock) = open(&db).await;
    let id: uuid::Uuid = raw_scalar(
        &db,
        "INSERT INTO pending_approvals (tool_name, parameters, risk_tier, requested_by, expires_at) \
         VALUES ('drop_table', '{\"table\": \"users\"}', 'high', 'agent-7', NOW() + INTERVAL '1 hour') RETURNING id",
    )
    .await;
    let row = store
        .get(signoff::approval::ApprovalId(id))
        .await
        .unwrap()
        .expect("readable");
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.tool_name, "drop_table");
    assert_eq!(row.parameters, json!({"table": "users"}));
    assert_eq!(row.requested_by.as_deref(), Some("agent-7"));
    // Another program writes no decision, changes nothing people approve or signoff
    // keeps, and moves no expiry once a row is decided (migration 0020).
    let refused = [
        "status = 'approved', decided_by = 'U0X', decision_at = NOW()",
        "decided_by = 'U0X'",
        "parameters = '{\"table\": \"orders\"}'",
        "tool_name = 'select'",
        "risk_tier = 'low'",
        "routing = '{}'",
        "created_at = NOW() + INTERVAL '1 year'",
        "version = version + 1",
    ];
    for set in refused {
        let sql = format!("UPDATE pending_approvals SET {set} WHERE id = '{id}'");
        let error = raw_execute(&db, &sql).await.unwrap_err();
        assert!(
            error.contains("another program may change only expires_at in pending_approvals"),
            "{set}: {error}"
        );
    }
    let moved = format!(
        "UPDATE pending_approvals SET expires_at = NOW() + INTERVAL '2 hours' WHERE id = '{id}'"
    );
    assert_eq!(
        raw_execute(&db, &moved).await,
        Ok(1),
        "a pending row's expiry moves"
    );
    let row = store
        .get(signoff::approval::ApprovalId(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.decided_by, None);
    assert_eq!(row.parameters, json!({"table": "users"}));
    // signoff's own decisions still go through.
    let decided = vote(&store, &clock, row.id, "U1", Decision::Approve).await;
    assert!(decided.is_ok(), "{decided:?}");
    let row = store.get(row.id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Approved);
    assert_eq!(row.decided_by.as_deref(), Some("U1"));
    let error = raw_execute(&db, &moved).await.unwrap_err();
    assert!(
        error.contains("only a pending row's expires_at may be moved"),
        "{error}"
    );
    let bad = raw_execute(&db, "INSERT INTO pending_approvals (tool_name, risk_tier, expires_at) VALUES ('x', 'extreme', NOW())").await;
    let error = bad.unwrap_err();
    assert!(
        error.contains("pending_approvals_risk_tier_check"),
        "risk_tier is checked: {error}"
    );
}

/// A scheduler that takes in shared-table rows, by a policy that auto-approves the low
/// tier (`get_*`) and asks people in a channel otherwise.
fn intake_scheduler(store: &signoff::store::Store) -> Scheduler {
    let policy = signoff::policy::Policy::from_toml_str(
        "[defaults]\nchannel = \"C0APPROVALS\"\nexpires_after = \"1h\"\nmax_pending = 0\n\
         [tiers]\nlow = \"auto_approve\"\n[[rules]]\ntools = [\"get_*\"]\ntier = \"low\"\n",
    )
    .unwrap();
    Scheduler::new(store.clone()).with_policy(std::sync::Arc::new(policy))
}

/// Parameters nested deeper than signoff's JSON reader goes are refused at the insert
/// (migration 0021); and rows that got in before that check, a hundred of them older
/// than the rest, keep no readable row out of the intake.
#[tokio::test]
async fn unreadable_rows_keep_nothing_out_of_the_intake_on_postgres() {
    let Some(db) = common::postgres("intake_unreadable").await else {
        return;
    };
    let (store, clock) = open(&db).await;
    let deep = |levels: usize| {
        format!("('{{\"a\": ' || repeat('[', {levels}) || repeat(']', {levels}) || '}}')::jsonb")
    };
    let refused = format!(
        "INSERT INTO pending_approvals (tool_name, parameters, expires_at) \
         VALUES ('t', {}, NOW() + INTERVAL '1 hour')",
        deep(200)
    );
    let error = raw_execute(&db, &refused).await.unwrap_err();
    assert!(
        error.contains("signoff: parameters are nested more than 100 levels deep"),
        "{error}"
    );
    // As they got in before the check: pending, unclassified, and first in line.
    let before = format!(
        "INSERT INTO pending_approvals (tool_name, parameters, expires_at, created_at) \
         SELECT 't', {}, NOW() + INTERVAL '1 hour', NOW() - INTERVAL '1 hour' \
         FROM generate_series(1, 100)",
        deep(130)
    );
    assert_eq!(raw_execute(&db.as_signoff_writer(), &before).await, Ok(100));
    let fine = "INSERT INTO pending_approvals (tool_name, parameters, expires_at) \
                VALUES ('deploy', '{\"to\": \"prod\"}', NOW() + INTERVAL '1 hour')";
    assert_eq!(raw_execute(&db, fine).await, Ok(1));
    let scheduler = intake_scheduler(&store);
    assert_eq!(scheduler.intake(clock.now()).await.unwrap(), 1, "taken in");
    assert_eq!(scheduler.intake(clock.now()).await.unwrap(), 0);
    let taken = "SELECT COUNT(*) FROM pending_approvals WHERE routing IS NOT NULL";
    assert_eq!(raw_count(&db, taken).await, 1);
}

/// A row inserted past its expiry (or whose expiry passed while signoff was down) is
/// expired when signoff takes it in: never approved by an auto-approve tier, never
/// put before people.
#[tokio::test]
async fn a_row_taken_in_past_its_expiry_is_expired_on_postgres() {
    let Some(db) = common::postgres("intake_expired").await else {
        return;
    };
    let (store, clock) = open_posting(&db).await;
    for (tool, tier) in [("get_users", "low"), ("drop_table", "medium")] {
        let sql = format!(
            "INSERT INTO pending_approvals (tool_name, parameters, risk_tier, expires_at) \
             VALUES ('{tool}', '{{}}', '{tier}', {})",
            sql_time(&db, clock.now() - chrono::Duration::minutes(5))
        );
        assert_eq!(raw_execute(&db, &sql).await, Ok(1));
    }
    let scheduler = intake_scheduler(&store);
    assert_eq!(scheduler.intake(clock.now()).await.unwrap(), 2);
    for row in store.list_all(None).await.unwrap() {
        assert_eq!(row.status, Status::Expired, "{}", row.tool_name);
        assert_eq!(row.decided_by, None);
    }
    assert_eq!(count_audit(&store, "expired").await, 2);
    assert_eq!(count_audit(&store, "auto_approved").await, 0);
    let posts = "SELECT COUNT(*) FROM jobs";
    assert_eq!(raw_count(&db, posts).await, 0, "nothing posted");
}

/// Another program's row is created when it is inserted, whatever `created_at` it
/// gives (the reminders go by it), and a `risk_tier` given as NULL is 'medium'; an
/// unknown tier is refused by the column's check (migration 0022).
#[tokio::test]
async fn a_direct_insert_gets_its_creation_time_and_a_default_tier_on_postgres() {
    let Some(db) = common::postgres("direct_insert_defaults").await else {
        return;
    };
    let _store = open(&db).await;
    let sql = "INSERT INTO pending_approvals (tool_name, parameters, risk_tier, expires_at, \
               created_at) VALUES ('deploy', '{}', NULL, NOW() + INTERVAL '1 hour', \
               '9999-01-01 00:00:00+00')";
    assert_eq!(raw_execute(&db, sql).await, Ok(1));
    let now = "SELECT COUNT(*) FROM pending_approvals WHERE created_at \
               BETWEEN NOW() - INTERVAL '1 minute' AND NOW() AND risk_tier = 'medium'";
    assert_eq!(raw_count(&db, now).await, 1, "created now, tier medium");
    let bad = "INSERT INTO pending_approvals (tool_name, risk_tier, expires_at) \
               VALUES ('x', 'extreme', NOW())";
    let error = raw_execute(&db, bad).await.unwrap_err();
    assert!(
        error.contains("pending_approvals_risk_tier_check"),
        "{error}"
    );
}

/// A program granted the public columns and the moving of an expiry moves one: the
/// trigger that moves the expiry watermark down runs with signoff's rights (migration
/// 0023), not the program's.
#[tokio::test]
async fn a_role_granted_expires_at_moves_an_expiry_on_postgres() {
    let Some(db) = common::postgres("expiry_grant").await else {
        return;
    };
    let (store, clock) = open(&db).await;
    let approval = create_expiring(&store, &clock, "moved", 3600).await;
    let role = format!("signoff_test_mover_{}", uuid::Uuid::new_v4().simple());
    let grant = format!(
        "CREATE ROLE {role} LOGIN; GRANT INSERT (tool_name, parameters, risk_tier, \
         requested_by, expires_at), SELECT, UPDATE (expires_at) ON pending_approvals TO {role}"
    );
    for statement in grant.split("; ") {
        raw_execute(&db, statement).await.unwrap();
    }
    let at = sql_time(&db, clock.now() + chrono::Duration::minutes(1));
    let sql = format!(
        "UPDATE pending_approvals SET expires_at = {at} WHERE id = '{}'",
        approval.id
    );
    let moved = raw_execute(&db.as_role(&role), &sql).await;
    let revoke = format!("REVOKE ALL ON pending_approvals FROM {role}; DROP ROLE {role}");
    for statement in revoke.split("; ") {
        raw_execute(&db, statement).await.unwrap();
    }
    assert_eq!(moved, Ok(1));
    clock.advance(Duration::from_secs(120));
    assert_eq!(
        store.fire_due(clock.now(), 10).await.unwrap(),
        1,
        "expired at its new time"
    );
}

/// Another program's transaction that moved an expiry earlier holds the expiry
/// watermark's row until it ends; a scheduler pass meanwhile neither waits for it nor
/// keeps signoff's other writers waiting (it held the audit head while it waited).
#[tokio::test]
async fn a_pass_does_not_wait_for_another_programs_open_expiry_move_on_postgres() {
    use sqlx::Connection;
    let Some(db) = common::postgres("watermark_held").await else {
        return;
    };
    let (store, clock) = open(&db).await;
    let closed = create_expiring(&store, &clock, "closed", 10).await;
    vote(&store, &clock, closed.id, "U1", Decision::Deny)
        .await
        .unwrap();
    let moved = create_expiring(&store, &clock, "moved", 3600).await;
    let mut other = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut holding = other.begin().await.unwrap();
    let at = sql_time(&db, clock.now() + chrono::Duration::minutes(30));
    let sql = format!(
        "UPDATE pending_approvals SET expires_at = {at} WHERE id = '{}'",
        moved.id
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut *holding)
        .await
        .unwrap();
    // A pass that would move the mark past the closed approval.
    clock.advance(Duration::from_secs(20));
    let pass = tokio::time::timeout(Duration::from_secs(5), store.fire_due(clock.now(), 10)).await;
    let opened = tokio::time::timeout(
        Duration::from_secs(5),
        store.create(
            new_request("after", json!({})),
            classify("after"),
            clock.now(),
        ),
    )
    .await;
    holding.commit().await.unwrap();
    assert!(matches!(pass, Ok(Ok(_))), "the pass went on: {pass:?}");
    assert!(matches!(opened, Ok(Ok(_))), "so did a request: {opened:?}");
    clock.advance(Duration::from_secs(31 * 60));
    assert_eq!(
        store.fire_due(clock.now(), 10).await.unwrap(),
        1,
        "at its new time"
    );
    assert_eq!(
        store.get(moved.id).await.unwrap().unwrap().status,
        Status::Expired
    );
}

/// Migration 0006 replaces the unique index over pending requests and the index of
/// open approvals (see `expiries_behind_the_last_pass_still_fire`): a store upgraded
/// with rows in it still answers a repeat with its pending request, and still expires
/// what came due.
#[tokio::test]
async fn an_upgraded_store_keeps_its_pending_requests_and_expiries_on_postgres() {
    let Some(db) = common::postgres("upgrade_0006").await else {
        return;
    };
    let migrations =
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"));
    let all = sqlx::migrate::Migrator::new(migrations).await.unwrap();
    let before = sqlx::migrate::Migrator::with_migrations(
        all.iter().filter(|m| m.version <= 5).cloned().collect(),
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    before.run(&mut conn).await.unwrap();
    // As a signoff before it left them: the same request denied, then asked again and
    // still pending, and another one already past its expiry.
    let sha = signoff::canonical::sha256_hex(&json!({"disk": "sda"}));
    let insert = |id: &str, status: &str, created: &str, expires: &str, sha: &str| {
        format!(
            "INSERT INTO pending_approvals (id, tool_name, parameters, status, expires_at, \
               created_at, token_name, params_sha256, routing) \
             VALUES ('{id}', 'wipe_disk', '{{\"disk\": \"sda\"}}', '{status}', \
               '{expires}'::timestamptz, '{created}'::timestamptz, '{TOKEN}', '{sha}', '{{}}')"
        )
    };
    let denied = "00000000-0000-4000-8000-000000000001";
    let pending = "00000000-0000-4000-8000-000000000002";
    let due = "00000000-0000-4000-8000-000000000003";
    for sql in [
        insert(
            denied,
            "denied",
            "2026-11-23T10:00:00Z",
            "2026-11-23T13:00:00Z",
            &sha,
        ),
        insert(
            pending,
            "pending",
            "2026-11-23T11:00:00Z",
            "2026-11-23T14:00:00Z",
            &sha,
        ),
        insert(
            due,
            "pending",
            "2026-11-23T09:00:00Z",
            "2026-11-23T11:30:00Z",
            "other",
        ),
    ] {
        assert_eq!(raw_execute(&db, &sql).await, Ok(1));
    }

    let (store, clock) = open(&db).await;
    let again = store
        .create(
            new_request("wipe_disk", json!({"disk": "sda"})),
            classify("wipe_disk"),
            clock.now(),
        )
        .await
        .unwrap();
    assert!(!again.created, "the pending request from before is found");
    assert_eq!(again.approval.id.to_string(), pending);
    assert_eq!(store.fire_due(clock.now(), 10).await.unwrap(), 1);
    let expired = store
        .get(signoff::approval::ApprovalId(due.parse().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(expired.status, Status::Expired);
    clock.advance(Duration::from_secs(3 * 3600));
    assert_eq!(
        store.fire_due(clock.now(), 10).await.unwrap(),
        1,
        "the pending one, later"
    );
}

/// The writer's connection lives as long as the server, and a plpgsql function keeps
/// its statements' plans for the life of the connection. Planned while `request_keys`
/// was small (a fresh database), the lookup scanned the whole table on every later
/// batch (and, as a join, the approvals too). Migration 0014 looks each key up through
/// `request_keys`' key and then the approvals' own, a plan kept at any size. Counted
/// with this connection's own scan statistics.
#[tokio::test]
async fn the_request_key_lookup_follows_the_table_as_it_grows_on_postgres() {
    use sqlx::{Connection, Row};
    let Some(db) = common::postgres("request_key_plan").await else {
        return;
    };
    let (_store, _clock) = open(&db).await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // As the writer calls it (migration 0026), an idempotency key beside the request.
    let lookup = "SELECT * FROM signoff_open_requests(ARRAY['t'], ARRAY['tool'], ARRAY[$1], \
                  NOW(), ARRAY['t'], ARRAY['k-' || $1])";
    sqlx::query("ANALYZE request_keys")
        .execute(&mut conn)
        .await
        .unwrap();
    // More calls than PostgreSQL plans afresh before it keeps a generic plan.
    for call in 0..8 {
        sqlx::query(lookup)
            .bind(format!("small-{call}"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO request_keys (token_name, tool_name, params_sha256, approval_id) \
         SELECT 't', 'tool', md5(g::text), gen_random_uuid() FROM generate_series(1, 5000) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let stored: String = sqlx::query_scalar("SELECT md5('17')")
        .fetch_one(&mut conn)
        .await
        .unwrap();

    let scans = "SELECT relname::text, seq_scan, COALESCE(idx_scan, 0) AS idx_scan \
                 FROM pg_stat_xact_user_tables \
                 WHERE relname IN ('request_keys', 'pending_approvals') ORDER BY relname";
    let mut tx = conn.begin().await.unwrap();
    let before = sqlx::query(scans).fetch_all(&mut *tx).await.unwrap();
    let found = sqlx::query(lookup)
        .bind(&stored)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let after = sqlx::query(scans).fetch_all(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(
        found.is_empty(),
        "the key is stored, but its approval is not pending"
    );
    // Rows in name order: pending_approvals, then request_keys.
    assert_eq!(before.len(), 2);
    for (before, after) in before.iter().zip(&after) {
        let table: String = after.get("relname");
        let count = |row: &sqlx::postgres::PgRow, column: &str| row.get::<i64, _>(column);
        assert_eq!(
            count(after, "seq_scan") - count(before, "seq_scan"),
            0,
            "no whole-table scan of {table}"
        );
        assert_eq!(
            count(after, "idx_scan") - count(before, "idx_scan"),
            1,
            "one lookup through {table}'s key"
        );
    }
}

/// The writer keeps one plan per statement instead of planning each call (migration
/// 0007's trap, above, for every statement): a plan made while the tables were small
/// scans them whole, so the writer drops its plans every so many transactions. After
/// the approvals and their messages grow, a post's report (whose statement joins its
/// approval, to check the version the message shows, and its message) scans neither
/// table. Counted with
/// the tables' scan statistics (see [`published_scans`] and [`final_scans`]).
#[tokio::test]
async fn the_writers_kept_plans_follow_the_tables_as_they_grow_on_postgres() {
    let Some(db) = common::postgres("writer_plans").await else {
        return;
    };
    let (store, clock) = open_posting(&db).await;
    let mut made = 0;
    let mut post_and_report = async |store: &signoff::store::Store| {
        made += 1;
        let approval = create(store, &clock, "deploy", json!({ "n": made })).await;
        let ts = format!("1700000000.{made}");
        report_posted(store, &clock, &approval, ts, None).await;
    };
    // Planned while each table holds a row or two.
    for _ in 0..3 {
        post_and_report(&store).await;
    }
    let mut conn = grow(
        &db,
        "INSERT INTO slack_messages (approval_id, channel, ts, kind, rendered_version, created_at) \
         SELECT id, 'C0FILLER', md5(id::text), 'main', 0, NOW() FROM pending_approvals \
         WHERE tool_name = 'filler'",
    )
    .await;
    // 150 transactions: more than the 64 the writer keeps its plans for.
    for _ in 0..50 {
        post_and_report(&store).await;
    }
    let tables = ["pending_approvals", "slack_messages"];
    // What the writer and the reader (each report's `due_jobs`) counted so far.
    let publish = async || {
        let published = create(&store, &clock, "publish", json!({})).await;
        store.get(published.id).await.unwrap();
    };
    let before = published_scans(Instant::now(), publish, &mut conn, &tables).await;
    for _ in 0..5 {
        post_and_report(&store).await;
    }
    let after = final_scans(&mut conn, &tables).await;
    assert_eq!(before.len(), 2);
    assert_eq!(after, before, "no whole-table scan of either table");
}

/// The reader pool's connections, unlike the writer's, keep PostgreSQL's default
/// choice: plan each call, or, after five calls whose plans cost no less, keep one
/// generic plan for the life of the connection. A plan kept while the tables were
/// nearly empty must still look rows up through an index once they have grown, or
/// every later read scans them whole (the writer's trap, above). Each keyed read is
/// made often enough on a fresh database for PostgreSQL to keep its plan, the tables
/// grow to 20,000 rows, and the reads made again scan none of them whole. (Listing
/// every approval and `/health/approvals`' counts read whole tables by design.)
/// Counted with the tables' scan statistics (see [`published_scans`] and
/// [`final_scans`]).
#[tokio::test]
async fn the_readers_kept_plans_follow_the_tables_as_they_grow_on_postgres() {
    let Some(db) = common::postgres("reader_plans").await else {
        return;
    };
    let (store, clock) = open_posting(&db).await;
    let approval = create(&store, &clock, "deploy", json!({ "to": "prod" })).await;
    let id = approval.id;
    let link = "https://example.slack.com/archives/C0APPROVALS/p1";
    let ts = "1700000000.000100".to_owned();
    let shown = report_posted(&store, &clock, &approval, ts, Some(link)).await;
    let token = signoff::tokens::hash("sgf_reader_plans");
    assert!(store.token_insert("ci", &token, clock.now()).await.unwrap());

    // One call of each keyed read, each checked for what it found. Run one after the
    // other, they all go to the pool's one idle connection.
    let reads = async || {
        assert_eq!(store.get(id).await.unwrap().map(|a| a.id), Some(id));
        assert_eq!(store.get_many(&[id]).await.unwrap().len(), 1);
        let (_, beside) = store.get_shown_in(id, &shown).await.unwrap().unwrap();
        assert!(beside, "the approval is shown in its post");
        assert_eq!(store.messages(id).await.unwrap().len(), 1);
        assert_eq!(store.main_permalinks(&[id]).await.unwrap().len(), 1);
        assert_eq!(store.batch_members(id).await.unwrap(), Vec::new());
        assert_eq!(store.find_by_prefix(&id.short(), 2).await.unwrap(), [id]);
        // Classified at creation; none of the filler is pending either.
        assert_eq!(store.unclassified(10, &[]).await.unwrap(), Vec::new());
        assert!(
            store
                .due_jobs(clock.now(), 10, Due::All)
                .await
                .unwrap()
                .jobs
                .is_empty()
        );
        assert!(!store.audit_page(0, 10).await.unwrap().is_empty());
        assert_eq!(
            store.token_lookup(&token).await.unwrap().as_deref(),
            Some("ci")
        );
    };
    // More calls than PostgreSQL plans afresh before it may keep a generic plan.
    for _ in 0..8 {
        reads().await;
    }
    let last_read = Instant::now();
    let mut conn = grow(
        &db,
        "INSERT INTO slack_messages (approval_id, channel, ts, kind, permalink, \
           rendered_version, created_at) \
         SELECT id, 'C0FILLER', md5(id::text), 'main', 'https://example.slack.com/x', 0, NOW() \
         FROM pending_approvals WHERE tool_name = 'filler'; \
         INSERT INTO slack_batch_members (approval_id, leader_id, position) \
         SELECT id, id, 0 FROM pending_approvals WHERE tool_name = 'filler'; \
         INSERT INTO jobs (approval_id, kind, payload, due_at, created_at) \
         SELECT id, 'slack_post', '{}', NOW() + interval '1 day', NOW() \
         FROM pending_approvals WHERE tool_name = 'filler'; \
         INSERT INTO audit_events (seq, approval_id, kind, actor, at, data, prev_hash, hash) \
         SELECT 1000000 + g, NULL, 'filler', NULL, NOW(), '{}', md5(g::text), md5(g::text) \
         FROM generate_series(1, 20000) g; \
         INSERT INTO api_tokens (name, token_hash, created_at) \
         SELECT 'filler-' || g, md5(g::text), NOW() FROM generate_series(1, 20000) g",
    )
    .await;
    let tables = [
        "api_tokens",
        "audit_events",
        "jobs",
        "pending_approvals",
        "slack_batch_members",
        "slack_messages",
    ];
    // What the reads' connection and the writer (the setup's) counted so far; a write
    // that plans no delivery (`reads` finds none due).
    let publish = async || {
        store.get(id).await.unwrap();
        let hash = signoff::tokens::hash("sgf_publish");
        assert!(
            store
                .token_insert("publish", &hash, clock.now())
                .await
                .unwrap()
        );
    };
    let before = published_scans(last_read, publish, &mut conn, &tables).await;
    for _ in 0..3 {
        reads().await;
    }
    let after = final_scans(&mut conn, &tables).await;
    assert_eq!(before.len(), tables.len());
    assert_eq!(after, before, "no whole-table scan of any table");
}

/// Claims `approval`'s post (the one job due) and reports it posted to `C0APPROVALS`
/// at `ts`, and (as an update would say) showing the approval's version, so that the
/// report's statement finds the message as well as the approval; the message's key.
async fn report_posted(
    store: &signoff::store::Store,
    clock: &signoff::clock::ManualClock,
    approval: &signoff::approval::Approval,
    ts: String,
    permalink: Option<&str>,
) -> signoff::jobs::MessageKey {
    use signoff::jobs::{MessageKey, MessageKind, Outcome, PostedMessage};
    let post = store
        .claim_jobs(clock.now(), 10, LEASE)
        .await
        .unwrap()
        .remove(0);
    let shown = MessageKey {
        channel: "C0APPROVALS".into(),
        ts,
    };
    let posted = Outcome::Delivered {
        posted: vec![PostedMessage {
            approval_id: approval.id,
            channel: shown.channel.clone(),
            ts: shown.ts.clone(),
            kind: MessageKind::Main,
            permalink: permalink.map(str::to_owned),
            rendered_version: approval.version,
        }],
        rendered: vec![shown.clone()],
        version: approval.version,
        next: None,
    };
    store.report(post, posted, clock.now()).await.unwrap();
    shown
}

/// A connection to `db`'s database after 20,000 decided approvals named `filler` were
/// inserted there, then `more` ran (statements that fill other tables from them); what
/// these statements counted is published as it returns (`pg_stat_force_next_flush()`,
/// in their own session).
async fn grow(db: &TestDb, more: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let sql = format!(
        "SET signoff.writer = 'on'; \
         INSERT INTO pending_approvals (id, tool_name, parameters, status, expires_at, \
           created_at, token_name, params_sha256, routing) \
         SELECT gen_random_uuid(), 'filler', '{{}}', 'denied', NOW() + interval '1 day', \
           NOW(), 'filler', md5(g::text), '{{}}' FROM generate_series(1, 20000) g; {more}; \
         SELECT pg_stat_force_next_flush()"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Each of `tables` with its whole-table scans so far, by name, with everything the
/// store's connections (the writer's, the readers') counted before `since` (when the
/// test last used them): PostgreSQL's backends publish their counts as they go idle,
/// but at most once a second (`PGSTAT_MIN_INTERVAL`), so `publish`, one statement on
/// each connection made a second after `since`, publishes all each one holds. (Only a
/// session itself can be told to publish at once, by `pg_stat_force_next_flush()`, and
/// these sessions are the store's, not the test's.) A count left out here would be in
/// [`final_scans`] and fail the test: it cannot make it pass.
async fn published_scans(
    since: Instant,
    publish: impl AsyncFnOnce(),
    conn: &mut sqlx::PgConnection,
    tables: &[&str],
) -> Vec<(String, i64)> {
    tokio::time::sleep_until((since + Duration::from_millis(1100)).into()).await;
    publish().await;
    seq_scans(conn, tables).await
}

/// Each of `tables` with its whole-table scans, final: every other session on the
/// database (the store's writer, readers and listener) is ended first.
/// `pg_terminate_backend` with a timeout returns once the backend has exited, and a
/// backend publishes what it still holds as it exits, so no scan the store made can be
/// left out, however late its connection would have published it.
async fn final_scans(conn: &mut sqlx::PgConnection, tables: &[&str]) -> Vec<(String, i64)> {
    let ended: Vec<(i32, bool)> = sqlx::query_as(
        "SELECT pid, pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
         WHERE datname = current_database() AND backend_type = 'client backend' \
           AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(ended.len() >= 2, "the store's writer and reader: {ended:?}");
    assert!(
        ended.iter().all(|(_, gone)| *gone),
        "each exited: {ended:?}"
    );
    seq_scans(conn, tables).await
}

/// Each of `tables` with its whole-table scans so far, by name, as the backends last
/// published them (this session's cached snapshot of them dropped first).
async fn seq_scans(conn: &mut sqlx::PgConnection, tables: &[&str]) -> Vec<(String, i64)> {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT relname::text, seq_scan FROM pg_stat_user_tables \
         WHERE relname = ANY($1) ORDER BY relname",
    )
    .bind(tables)
    .fetch_all(conn)
    .await
    .unwrap()
}

async fn a_claimed_job_is_leased_and_a_crashed_holder_loses_it(db: TestDb) {
    use signoff::jobs::{Deliveries, Outcome};
    let (store, clock) = open_posting(&db).await;
    let approval = create(&store, &clock, "a", json!({})).await;
    let first = store.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].job.kind(), first[0].attempts), ("slack_post", 1));
    // The holder "crashes": it never fires or reports the job.
    clock.advance(Duration::from_secs(30));
    assert!(
        store
            .claim_jobs(clock.now(), 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "leased to the first holder"
    );
    let replica = signoff::store::Store::connect_with(&db.url, Deliveries { slack: true })
        .await
        .unwrap();
    assert!(
        replica
            .claim_jobs(clock.now(), 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "another replica skips it too"
    );
    clock.advance(signoff::jobs::LEASE);
    let again = replica.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1, "the lease ran out");
    assert_eq!((again[0].id, again[0].attempts), (first[0].id, 2));
    let delivered = Outcome::Delivered {
        posted: Vec::new(),
        rendered: Vec::new(),
        version: approval.version,
        next: None,
    };
    replica
        .report(again.into_iter().next().unwrap(), delivered, clock.now())
        .await
        .unwrap();
    let expiry = clock.now() + chrono::Duration::hours(1);
    assert!(
        store
            .claim_jobs(expiry, 10, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "done for good, and the expiry timer due by then is not leased"
    );
    assert_eq!(store.fire_due(expiry, 10).await.unwrap(), 1, "it fires");
}

async fn timers_fire_in_their_own_transaction_once_across_replicas(db: TestDb) {
    let (store, clock) = open(&db).await;
    let replica = signoff::store::Store::connect(&db.url).await.unwrap();
    let mut ids = Vec::new();
    for name in 0..40 {
        ids.push(
            create_expiring(&store, &clock, &name.to_string(), 10)
                .await
                .id,
        );
    }
    assert_eq!(
        store.fire_due(clock.now(), 100).await.unwrap(),
        0,
        "not due yet"
    );
    clock.advance(Duration::from_secs(10));
    assert!(
        store
            .claim_jobs(clock.now(), 100, LEASE)
            .await
            .unwrap()
            .is_empty(),
        "timers are never leased"
    );
    assert_eq!(
        store.fire_due(clock.now(), 5).await.unwrap(),
        5,
        "up to the limit"
    );
    // Both processes fire the rest at the same moment: each timer fires exactly once.
    let (mine, theirs) = tokio::join!(
        store.fire_due(clock.now(), 100),
        replica.fire_due(clock.now(), 100)
    );
    assert_eq!(mine.unwrap() + theirs.unwrap(), 35);
    assert_eq!(store.fire_due(clock.now(), 100).await.unwrap(), 0);
    for id in ids {
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            Status::Expired
        );
    }
    assert_eq!(count_audit(&store, "expired").await, 40, "one expiry each");
}

/// Rows a program inserted, approved and claimed itself in the shared table (see
/// migrations/postgres/0025_shared_claim.sql): two processes' timer passes at the same
/// moment record each claim once, and a later pass finds none left.
async fn claims_in_the_shared_table_are_recorded_once_across_replicas(db: TestDb) {
    let (store, clock) = open(&db).await;
    // The claim judges expiry by the database's clock.
    clock.set(chrono::Utc::now());
    let replica = signoff::store::Store::connect(&db.url).await.unwrap();
    let expires = common::sql_time(&db, clock.now() + chrono::Duration::hours(1));
    let mut ids = Vec::new();
    for n in 0..30 {
        let id = signoff::approval::ApprovalId::new();
        let sql = format!(
            "INSERT INTO pending_approvals (id, tool_name, parameters, requested_by, expires_at) \
             VALUES ('{id}', 'transfer', '{{\"n\": {n}}}', 'agent-7', {expires})"
        );
        assert_eq!(raw_execute(&db, &sql).await, Ok(1));
        ids.push(id);
    }
    assert_eq!(
        intake_scheduler(&store).intake(clock.now()).await.unwrap(),
        30
    );
    for id in &ids {
        let approved = vote(&store, &clock, *id, "U1", Decision::Approve).await;
        assert_eq!(approved.unwrap().status, Status::Approved);
        let claim = format!(
            "UPDATE pending_approvals SET status = 'executed' WHERE id = '{id}' AND status = 'approved'"
        );
        assert_eq!(raw_execute(&db, &claim).await, Ok(1));
    }
    let (mine, theirs) = tokio::join!(
        store.fire_due(clock.now(), 100),
        replica.fire_due(clock.now(), 100)
    );
    assert_eq!(mine.unwrap() + theirs.unwrap(), 30);
    assert_eq!(store.fire_due(clock.now(), 100).await.unwrap(), 0);
    assert_eq!(count_audit(&store, "executed").await, 30, "one each");
    for id in ids {
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            Status::Executed
        );
    }
}

/// The first reminder and the escalation are not written when a request opens: its
/// row's `nudge_at` is their timer, which the timer pass turns into jobs when due.
async fn nudges_become_jobs_when_due_once_across_replicas_and_never_once_decided(db: TestDb) {
    use signoff::jobs::{Deliveries, Job, MessageKind};
    let (store, clock) = open_posting(&db).await;
    let replica = signoff::store::Store::connect_with(&db.url, Deliveries { slack: true })
        .await
        .unwrap();
    let policy = signoff::policy::Policy::from_toml_str(
        "[defaults]\nchannel = \"C0APPROVALS\"\nexpires_after = \"4h\"\nmax_pending = 0\n\
         remind_after = \"30m\"\nremind_every = \"1h\"\nescalate_after = \"2h\"\n\
         escalation_channel = \"C0MANAGERS\"\n",
    )
    .unwrap();
    let opened = clock.now();
    let mut ids = Vec::new();
    for n in 0..20 {
        let request = new_request("payout", json!({ "n": n }));
        let class = policy.classify("payout", &request.parameters, None);
        ids.push(
            store
                .create(request, class, opened)
                .await
                .unwrap()
                .approval
                .id,
        );
    }
    let kinds = "SELECT COUNT(*) FROM jobs WHERE kind <> 'slack_post' \
                 OR payload ->> 'kind' <> 'main'";
    assert_eq!(raw_count(&db, kinds).await, 0, "only the posts are written");
    let (decided, waiting) = ids.split_at(5);
    for id in decided {
        vote(&store, &clock, *id, "U1", Decision::Approve)
            .await
            .unwrap();
    }
    assert_eq!(
        store.fire_due(clock.now(), 100).await.unwrap(),
        0,
        "not due yet"
    );

    // The reminders: each replica plans some, together each once.
    clock.advance(Duration::from_secs(30 * 60));
    let (mine, theirs) = tokio::join!(
        store.fire_due(clock.now(), 100),
        replica.fire_due(clock.now(), 100)
    );
    assert_eq!(
        mine.unwrap() + theirs.unwrap(),
        20,
        "decided ones are cleared"
    );
    assert_eq!(store.fire_due(clock.now(), 100).await.unwrap(), 0);
    let due = store.due_jobs(clock.now(), 100, Due::All).await.unwrap();
    let reminded: Vec<_> = due
        .jobs
        .iter()
        .filter(|job| matches!(job.job, Job::SlackRemind { .. }))
        .map(|job| job.approval_id)
        .collect();
    let mut expected = waiting.to_vec();
    let mut got = reminded.clone();
    expected.sort_unstable();
    got.sort_unstable();
    assert_eq!(
        got, expected,
        "one reminder per waiting request, none decided"
    );

    // The escalation, due at its own time even to a pass that comes late.
    clock.advance(Duration::from_secs(95 * 60));
    assert_eq!(store.fire_due(clock.now(), 100).await.unwrap(), 15);
    assert_eq!(
        store.fire_due(clock.now(), 100).await.unwrap(),
        0,
        "none left"
    );
    let escalations = store
        .due_jobs(clock.now(), 100, Due::All)
        .await
        .unwrap()
        .jobs
        .into_iter()
        .filter(|job| {
            matches!(&job.job, Job::SlackPost { kind: MessageKind::Escalation, channel, .. }
                if channel.as_str() == "C0MANAGERS")
        })
        .count();
    assert_eq!(escalations, 15);
    let planned_at = format!(
        "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_post' AND payload ->> 'kind' = 'escalation' \
         AND due_at = {}",
        sql_time(&db, opened + chrono::Duration::hours(2))
    );
    assert_eq!(
        raw_count(&db, &planned_at).await,
        15,
        "due at escalate_after"
    );
    assert_eq!(
        raw_count(
            &db,
            "SELECT COUNT(*) FROM pending_approvals WHERE nudge_at IS NOT NULL"
        )
        .await,
        0
    );
}

async fn finished_jobs_are_deleted_and_given_up_ones_kept(db: TestDb) {
    use signoff::jobs::{Job, Outcome};
    let (store, clock) = open_posting(&db).await;
    let approval = create(&store, &clock, "a", json!({})).await;
    let jobs = |sql: &'static str| raw_count(&db, sql);
    assert_eq!(
        jobs("SELECT COUNT(*) FROM jobs").await,
        1,
        "its post (its expiry timer is its own expires_at)"
    );
    let post = store
        .claim_jobs(clock.now(), 10, LEASE)
        .await
        .unwrap()
        .remove(0);
    let delivered = Outcome::Delivered {
        posted: Vec::new(),
        rendered: Vec::new(),
        version: approval.version,
        next: None,
    };
    store
        .report(post.clone(), delivered.clone(), clock.now())
        .await
        .unwrap();
    assert_eq!(
        jobs("SELECT COUNT(*) FROM jobs").await,
        0,
        "the post is gone"
    );
    store.report(post, delivered, clock.now()).await.unwrap();
    assert_eq!(
        jobs("SELECT COUNT(*) FROM jobs").await,
        0,
        "a repeated report changes nothing"
    );

    clock.advance(Duration::from_secs(3600));
    assert_eq!(store.fire_due(clock.now(), 10).await.unwrap(), 1);
    let update = store
        .claim_jobs(clock.now(), 10, LEASE)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(update.job, Job::SlackUpdate {}, "the expiry is shown");
    assert_eq!(
        jobs("SELECT COUNT(*) FROM jobs").await,
        1,
        "the update is the only job"
    );
    let dead = Outcome::Dead {
        error: "channel_not_found".into(),
        next: None,
    };
    store.report(update, dead, clock.now()).await.unwrap();
    assert_eq!(
        jobs("SELECT COUNT(*) FROM jobs WHERE state = 'dead'").await,
        1,
        "kept for health to report"
    );
    assert_eq!(store.health(clock.now()).await.unwrap().undelivered, 1);
}

/// The writer records a batch's delivery reports together (one statement each for
/// their messages, versions and finished jobs; `ops::report`'s unit tests cover one
/// batch's merging): each report still counts as if alone.
async fn reports_queued_together_are_each_recorded(db: TestDb) {
    use signoff::approval::Approval;
    use signoff::jobs::{MessageKey, MessageKind, Outcome, PostedMessage};
    let (store, clock) = open_posting(&db).await;
    let first = create(&store, &clock, "a", json!({})).await;
    let second = create(&store, &clock, "b", json!({})).await;
    let posts = store.claim_jobs(clock.now(), 10, LEASE).await.unwrap();
    assert_eq!(posts.len(), 2, "a post each");
    let post_of = |approval: &Approval| {
        posts
            .iter()
            .find(|job| job.approval_id == approval.id)
            .expect("its post")
            .clone()
    };
    let message = |approval: &Approval| PostedMessage {
        approval_id: approval.id,
        channel: "C0APPROVALS".into(),
        ts: format!("1700000000.{}", approval.id.short()),
        kind: MessageKind::Main,
        permalink: None,
        rendered_version: approval.version,
    };
    let key = |approval: &Approval| MessageKey {
        channel: "C0APPROVALS".into(),
        ts: format!("1700000000.{}", approval.id.short()),
    };
    let posted = |approval: &Approval| Outcome::Delivered {
        posted: vec![message(approval)],
        rendered: Vec::new(),
        version: approval.version,
        next: None,
    };
    let rendered = |approval: &Approval, version: i64| Outcome::Delivered {
        posted: Vec::new(),
        rendered: vec![key(approval)],
        version,
        next: None,
    };
    let now = clock.now();
    let report = |approval: &Approval, outcome: Outcome| {
        let store = store.clone();
        let job = post_of(approval);
        async move { store.report(job, outcome, now).await.unwrap() }
    };
    let updates = |approval: &Approval| {
        let sql = format!(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_update' AND approval_id = '{}'",
            approval.id
        );
        let db = &db;
        async move { raw_count(db, &sql).await }
    };

    let shown = store.get_with_messages(first.id).await.unwrap().unwrap();
    assert_eq!(shown.approval, store.get(first.id).await.unwrap().unwrap());
    assert_eq!(
        (shown.messages, shown.batch),
        (vec![], vec![]),
        "not posted yet"
    );
    let unknown = signoff::approval::ApprovalId::new();
    assert_eq!(store.get_with_messages(unknown).await.unwrap(), None);

    // Queued together, so the writer (on its own thread) takes them in one batch or
    // a few; each counts as if alone. A post reported twice is recorded once.
    tokio::join!(
        report(&first, posted(&first)),
        report(&second, posted(&second)),
        report(&first, posted(&first)),
    );
    assert_eq!(store.messages(first.id).await.unwrap(), [message(&first)]);
    assert_eq!(store.messages(second.id).await.unwrap(), [message(&second)]);
    let shown = store.get_with_messages(first.id).await.unwrap().unwrap();
    assert_eq!(
        (shown.messages, shown.batch),
        (vec![message(&first)], vec![]),
        "posted alone: its message, no batch"
    );
    assert_eq!(
        raw_count(&db, "SELECT COUNT(*) FROM jobs").await,
        0,
        "both posts done"
    );

    // Two updates of one message finish together, the newer reported first: the
    // message is known to show the newer version, whatever their order or batches.
    let newer = first.version + 4;
    tokio::join!(
        report(&first, rendered(&first, newer)),
        report(&first, rendered(&first, first.version + 2)),
    );
    let shown = store.messages(first.id).await.unwrap();
    assert_eq!(shown[0].rendered_version, newer, "never moves backwards");
    assert_eq!(
        updates(&first).await,
        0,
        "it shows a version newer than the approval's"
    );

    // Two reports that the second message shows an older version than the approval's
    // (it changed while they ran): an update brings it up to date (one per batch).
    tokio::join!(
        report(&second, rendered(&second, second.version - 1)),
        report(&second, rendered(&second, second.version - 1)),
    );
    let shown = store.messages(second.id).await.unwrap();
    assert_eq!(shown[0].rendered_version, second.version, "unchanged");
    let planned = updates(&second).await;
    assert!((1..=2).contains(&planned), "{planned} updates");

    // On PostgreSQL another replica may hold the approval's row while it changes it:
    // a report does not wait for that lock (it compares versions without reading the
    // approval into the batch or locking it), and still plans the update it needs.
    if db.backend == "postgres" {
        use sqlx::Connection;
        let mut replica = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let mut holding = replica.begin().await.unwrap();
        sqlx::query("SELECT 1 FROM pending_approvals WHERE id = $1 FOR UPDATE")
            .bind(second.id.0)
            .execute(&mut *holding)
            .await
            .unwrap();
        let reported = tokio::time::timeout(
            Duration::from_secs(5),
            report(&second, rendered(&second, second.version - 1)),
        )
        .await;
        holding.rollback().await.unwrap();
        assert!(
            reported.is_ok(),
            "the report waited for another replica's lock"
        );
        assert_eq!(updates(&second).await, planned + 1, "one more update");
    }
}

/// On PostgreSQL a pass reads the due approvals from a watermark, which it then moves
/// up to where it left off (migration 0006). An approval still expires when another
/// program moves its expiry behind that point or sets it back to pending, and when a
/// replica whose clock is behind creates one that is due before it.
async fn expiries_behind_the_last_pass_still_fire(db: TestDb) {
    let (store, clock) = open(&db).await;
    let replica = signoff::store::Store::connect(&db.url).await.unwrap();
    let start = clock.now();
    let moved = create_expiring(&store, &clock, "moved", 3600).await;
    let reopened = create_expiring(&store, &clock, "reopened", 10).await;
    let passed = create_expiring(&store, &clock, "passed", 10).await;
    clock.advance(Duration::from_secs(20));
    assert_eq!(store.fire_due(clock.now(), 10).await.unwrap(), 2);

    let mut request = new_request("job", json!({"name": "behind"}));
    request.expires_in = Some(Duration::from_secs(10));
    let behind = replica
        .create(
            request,
            classify("job"),
            start + chrono::Duration::seconds(5),
        )
        .await
        .unwrap()
        .approval;
    assert!(behind.expires_at < clock.now());
    assert_eq!(
        store.fire_due(clock.now(), 10).await.unwrap(),
        1,
        "created behind the last pass"
    );

    let at = sql_time(&db, start + chrono::Duration::seconds(5));
    let sql = format!(
        "UPDATE pending_approvals SET expires_at = {at} WHERE id = '{}'",
        moved.id
    );
    assert_eq!(raw_execute(&db, &sql).await, Ok(1));
    let sql = format!(
        "UPDATE pending_approvals SET status = 'pending', decided_by = NULL, decision_at = NULL \
         WHERE id = '{}'",
        reopened.id
    );
    // Only a session that says it is signoff's may reopen a row on PostgreSQL
    // (migration 0020): an operator's repair, which keeps `version`.
    let operator = if db.backend == "sqlite" {
        None
    } else {
        Some(db.as_signoff_writer())
    };
    assert_eq!(
        raw_execute(operator.as_ref().unwrap_or(&db), &sql).await,
        Ok(1)
    );
    assert_eq!(
        store.fire_due(clock.now(), 10).await.unwrap(),
        2,
        "moved behind the last pass, and reopened"
    );
    for id in [moved.id, reopened.id, passed.id, behind.id] {
        assert_eq!(
            store.get(id).await.unwrap().unwrap().status,
            Status::Expired
        );
    }
    assert_eq!(store.fire_due(clock.now(), 10).await.unwrap(), 0);
}

/// A server nobody uses still runs a scheduler pass twice a second: such a pass must
/// commit no write (on PostgreSQL it moved the expiry watermark up to `now` and locked
/// the audit head and the watermark's row every time, a durable commit per pass and a
/// lock every replica's writer waits for). The watermark still moves past an approval
/// once it is closed and its expiry has gone by.
async fn an_idle_scheduler_pass_writes_and_locks_nothing(db: TestDb) {
    let (store, clock) = open(&db).await;
    let scheduler = Scheduler::new(store.clone());
    let open_one = create_expiring(&store, &clock, "open", 3600).await;
    let closed = create_expiring(&store, &clock, "closed", 60).await;
    vote(&store, &clock, closed.id, "U1", Decision::Deny)
        .await
        .unwrap();
    // The first pass may sign an audit checkpoint for the events so far.
    scheduler.run_once(clock.now()).await.unwrap();
    let mut writes = Writes::watch(&db).await;
    for _ in 0..3 {
        clock.advance(Duration::from_millis(500));
        assert_eq!(scheduler.run_once(clock.now()).await.unwrap(), 0);
    }
    writes
        .assert_none("idle passes before any expiry went by")
        .await;

    clock.advance(Duration::from_secs(60));
    assert_eq!(scheduler.run_once(clock.now()).await.unwrap(), 0);
    if db.backend == "postgres" {
        // The denied approval's expiry went by: the mark moves past it, once.
        let below = raw_count(
            &db,
            "SELECT EXTRACT(EPOCH FROM below)::bigint FROM expiry_watermark",
        )
        .await;
        assert!(
            below > closed.expires_at.timestamp(),
            "the watermark ({below}) moved past the closed approval"
        );
        assert!(below <= open_one.expires_at.timestamp());
    }
    let mut writes = Writes::watch(&db).await;
    for _ in 0..3 {
        clock.advance(Duration::from_millis(500));
        assert_eq!(scheduler.run_once(clock.now()).await.unwrap(), 0);
    }
    writes.assert_none("idle passes after the mark moved").await;
    clock.advance(Duration::from_secs(3600));
    assert_eq!(
        scheduler.run_once(clock.now()).await.unwrap(),
        1,
        "the open approval still expires"
    );
    if db.backend == "postgres" {
        // In the pass that expired it: the next pass's read starts after it.
        let below = raw_count(
            &db,
            "SELECT EXTRACT(EPOCH FROM below)::bigint FROM expiry_watermark",
        )
        .await;
        assert!(below > open_one.expires_at.timestamp(), "moved at once");
    }
}

/// Whether anything wrote to the store since [`Writes::watch`]: on SQLite, the file's
/// `data_version` as one connection sees it (it changes when any other connection
/// commits a change); on PostgreSQL, the versions and lockers of the rows a pass used
/// to write or lock (`xmin` changes with an update, `xmax` with a `FOR UPDATE`).
enum Writes {
    Sqlite(sqlx::SqliteConnection, i64),
    Postgres(sqlx::PgConnection, String),
}

impl Writes {
    const ROWS: &str = "SELECT string_agg(r, ' ') FROM ( \
        SELECT 'watermark ' || xmin || '/' || xmax || ' ' || below AS r FROM expiry_watermark \
        UNION ALL SELECT 'head ' || xmin || '/' || xmax || ' ' || seq FROM audit_head) AS rows";

    async fn watch(db: &TestDb) -> Self {
        use sqlx::Connection;
        if db.backend == "sqlite" {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            let version = Self::sqlite_version(&mut conn).await;
            Writes::Sqlite(conn, version)
        } else {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            let rows = Self::postgres_rows(&mut conn).await;
            Writes::Postgres(conn, rows)
        }
    }

    async fn sqlite_version(conn: &mut sqlx::SqliteConnection) -> i64 {
        sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(conn)
            .await
            .unwrap()
    }

    async fn postgres_rows(conn: &mut sqlx::PgConnection) -> String {
        sqlx::query_scalar(Self::ROWS)
            .fetch_one(conn)
            .await
            .unwrap()
    }

    async fn assert_none(&mut self, what: &str) {
        match self {
            Writes::Sqlite(conn, before) => {
                assert_eq!(Self::sqlite_version(conn).await, *before, "{what}");
            }
            Writes::Postgres(conn, before) => {
                assert_eq!(&Self::postgres_rows(conn).await, before, "{what}");
            }
        }
    }
}

async fn an_expiry_timer_follows_an_expiry_moved_in_the_shared_table(db: TestDb) {
    let (store, clock) = open(&db).await;
    let later = create_expiring(&store, &clock, "later", 10).await;
    let earlier = create_expiring(&store, &clock, "earlier", 3600).await;
    let move_to = |id, at| {
        let at = sql_time(&db, at);
        format!("UPDATE pending_approvals SET expires_at = {at} WHERE id = '{id}'")
    };
    let start = clock.now();
    let sql = move_to(later.id, later.expires_at + chrono::Duration::seconds(50));
    assert_eq!(raw_execute(&db, &sql).await, Ok(1));
    let sql = move_to(earlier.id, start + chrono::Duration::seconds(20));
    assert_eq!(raw_execute(&db, &sql).await, Ok(1));
    let status = |id| {
        let store = store.clone();
        async move { store.get(id).await.unwrap().unwrap().status }
    };

    clock.advance(Duration::from_secs(10));
    assert_eq!(
        store.fire_due(clock.now(), 10).await.unwrap(),
        0,
        "the expiry moved later is not due at its old time"
    );
    assert_eq!(status(later.id).await, Status::Pending, "not expired early");
    clock.advance(Duration::from_secs(10));
    assert_eq!(store.fire_due(clock.now(), 10).await.unwrap(), 1);
    assert_eq!(
        status(earlier.id).await,
        Status::Expired,
        "the expiry moved earlier fires at its new time, not its old one"
    );
    clock.advance(Duration::from_secs(40));
    assert_eq!(store.fire_due(clock.now(), 10).await.unwrap(), 1);
    assert_eq!(status(later.id).await, Status::Expired);
    assert_eq!(store.fire_due(clock.now(), 10).await.unwrap(), 0);
}
