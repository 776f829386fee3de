//! Votes clicked in Slack, checked on the writer (`Store::vote`): the message clicked,
//! the approver list, then the state machine; each refusal changes nothing.

use serde_json::json;
use signoff::approval::{Approval, ApprovalId, Decision, Rejection, Status};
use signoff::clock::{Clock, ManualClock};
use signoff::ids::{Approver, UserId};
use signoff::jobs::{LEASE, MessageKey, MessageKind, Outcome, PostedMessage};
use signoff::store::{Store, StoreError, Voted};

use crate::common::TestDb;
use crate::helpers::*;

crate::on_both_backends!(
    a_slack_vote_is_checked_against_the_approval_as_the_writer_reads_it,
    slack_votes_queued_together_each_get_their_own_answer,
);

const CHANNEL: &str = "C0APPROVALS";

/// A pending approval that lists `approvers`.
async fn listing(store: &Store, clock: &ManualClock, tool: &str, approvers: &[&str]) -> Approval {
    let mut class = classify(tool);
    class.route.approvers = approvers
        .iter()
        .map(|a| Approver::parse(a).unwrap())
        .collect();
    store
        .create(new_request(tool, json!({})), class, clock.now())
        .await
        .unwrap()
        .approval
}

/// Where each approval's post is recorded.
fn key(approval: &Approval) -> MessageKey {
    MessageKey {
        channel: CHANNEL.into(),
        ts: format!("1700000000.{}", approval.id.short()),
    }
}

/// Runs every due post and records its message at [`key`].
async fn post_all(store: &Store, clock: &ManualClock) {
    let posts = store.claim_jobs(clock.now(), 1000, LEASE).await.unwrap();
    for job in posts {
        let approval = store.get(job.approval_id).await.unwrap().unwrap();
        let MessageKey { channel, ts } = key(&approval);
        let message = PostedMessage {
            approval_id: approval.id,
            channel,
            ts,
            kind: MessageKind::Main,
            permalink: None,
            rendered_version: approval.version,
        };
        let outcome = Outcome::Delivered {
            posted: vec![message],
            rendered: Vec::new(),
            version: approval.version,
            next: None,
        };
        store.report(job, outcome, clock.now()).await.unwrap();
    }
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

async fn approve(
    store: &Store,
    clock: &ManualClock,
    approval: &Approval,
    by: &str,
    shown_in: Option<&MessageKey>,
) -> Result<Voted, StoreError> {
    store
        .vote(
            approval.id,
            &user(by),
            Decision::Approve,
            (shown_in, None),
            clock.now(),
        )
        .await
}

async fn a_slack_vote_is_checked_against_the_approval_as_the_writer_reads_it(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    let anyone = listing(&store, &clock, "anyone", &[]).await;
    let people = listing(&store, &clock, "people", &["U0ALICE", "U0BOB"]).await;
    let group = listing(&store, &clock, "group", &["U0ALICE", "S0SRE"]).await;
    post_all(&store, &clock).await;
    let people = store.get(people.id).await.unwrap().unwrap();
    let group = store.get(group.id).await.unwrap().unwrap();
    let (head, _) = store.audit_head().await.unwrap();

    // A user group's members are Slack's to tell: nothing is decided here.
    let asked = approve(&store, &clock, &group, "U0CAROL", Some(&key(&group))).await;
    assert_eq!(asked.unwrap(), Voted::AskSlack);
    // Another approval's message, or one signoff never recorded, counts for nothing,
    // even for someone the list names.
    let elsewhere = approve(&store, &clock, &people, "U0ALICE", Some(&key(&anyone))).await;
    assert_eq!(elsewhere.unwrap(), Voted::NotShownThere);
    let unknown_message = MessageKey {
        channel: CHANNEL.into(),
        ts: "1700000000.999999".into(),
    };
    let unrecorded = approve(&store, &clock, &people, "U0ALICE", Some(&unknown_message)).await;
    assert_eq!(unrecorded.unwrap(), Voted::NotShownThere);
    // The message is checked before the list: a group does not let it through.
    let stray = approve(&store, &clock, &group, "U0CAROL", Some(&unknown_message)).await;
    assert_eq!(stray.unwrap(), Voted::NotShownThere);
    // Someone the list does not name is refused with the approval as read.
    match approve(&store, &clock, &people, "U0MALLORY", Some(&key(&people))).await {
        Err(StoreError::Rejected { rejection, current }) => {
            assert_eq!(rejection, Rejection::NotAnApprover);
            assert_eq!(*current, people);
        }
        other => panic!("expected NotAnApprover, got {other:?}"),
    }
    // So is the requester, where nobody is listed.
    match approve(&store, &clock, &anyone, REQUESTER, None).await {
        Err(StoreError::Rejected { rejection, .. }) => {
            assert_eq!(rejection, Rejection::RequesterCannotVote)
        }
        other => panic!("expected RequesterCannotVote, got {other:?}"),
    }
    let nowhere = Approval {
        id: ApprovalId::new(),
        ..people.clone()
    };
    assert!(matches!(
        approve(&store, &clock, &nowhere, "U0ALICE", None).await,
        Err(StoreError::NotFound(id)) if id == nowhere.id
    ));
    assert_eq!(store.get(people.id).await.unwrap().unwrap(), people);
    assert_eq!(store.get(group.id).await.unwrap().unwrap(), group);
    assert_eq!(
        store.audit_head().await.unwrap().0,
        head,
        "no audit event for a vote that did not count"
    );

    // Counted: on the approval's own message, on a message whose metadata names it
    // (no check), by a name listed beside a group, by anyone where nobody is listed.
    let counted = approve(&store, &clock, &people, "U0ALICE", Some(&key(&people))).await;
    let Ok(Voted::Counted(approved)) = counted else {
        panic!("Alice's vote counts: {counted:?}");
    };
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("U0ALICE"));
    assert_eq!(store.get(people.id).await.unwrap().unwrap(), *approved);
    let beside_group = approve(&store, &clock, &group, "U0ALICE", None).await;
    assert!(
        matches!(&beside_group, Ok(Voted::Counted(a)) if a.status == Status::Approved),
        "{beside_group:?}"
    );
    let by_anyone = approve(&store, &clock, &anyone, "U0WHOEVER", Some(&key(&anyone))).await;
    assert!(
        matches!(&by_anyone, Ok(Voted::Counted(a)) if a.decided_by.as_deref() == Some("U0WHOEVER")),
        "{by_anyone:?}"
    );
    assert_eq!(count_audit(&store, "approved").await, 3);
    // A second vote on a decided request is refused as any other event.
    let again = approve(&store, &clock, &people, "U0BOB", None).await;
    assert!(
        matches!(
            again,
            Err(StoreError::Rejected {
                rejection: Rejection::AlreadyDecided(Status::Approved),
                ..
            })
        ),
        "{again:?}"
    );
}

async fn slack_votes_queued_together_each_get_their_own_answer(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    let mut approvals = Vec::new();
    for n in 0..24 {
        approvals.push(listing(&store, &clock, &format!("tool_{n}"), &["U0ALICE"]).await);
    }
    post_all(&store, &clock).await;
    // Every third on another approval's message, every third by someone not listed:
    // queued at once, so the writer takes them in one batch or a few.
    let votes = approvals.iter().enumerate().map(|(n, approval)| {
        let store = store.clone();
        let clock = clock.clone();
        let approval = approval.clone();
        let neighbour = approvals[(n + 1) % approvals.len()].clone();
        async move {
            let (by, on) = match n % 3 {
                0 => ("U0ALICE", key(&approval)),
                1 => ("U0ALICE", key(&neighbour)),
                _ => ("U0MALLORY", key(&approval)),
            };
            approve(&store, &clock, &approval, by, Some(&on)).await
        }
    });
    let answers = futures_util::future::join_all(votes).await;
    for (n, (approval, answer)) in approvals.iter().zip(answers).enumerate() {
        let stored = store.get(approval.id).await.unwrap().unwrap();
        match (n % 3, answer) {
            (0, Ok(Voted::Counted(after))) => {
                assert_eq!(after.id, approval.id);
                assert_eq!(stored.status, Status::Approved);
            }
            (1, Ok(Voted::NotShownThere)) => assert_eq!(stored.status, Status::Pending),
            (
                2,
                Err(StoreError::Rejected {
                    rejection: Rejection::NotAnApprover,
                    current,
                }),
            ) => {
                assert_eq!(current.id, approval.id);
                assert_eq!(stored.status, Status::Pending);
            }
            (kind, other) => panic!("vote {n} (kind {kind}): {other:?}"),
        }
    }
    assert_eq!(count_audit(&store, "approved").await, 8);
}
