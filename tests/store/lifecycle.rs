//! Requests, duplicates, votes, edits and the single-use execute, on both backends.

use std::time::Duration;

use serde_json::{Value, json};
use signoff::approval::{Decider, Decision, Event, Rejection, Status};
use signoff::clock::Clock;
use signoff::store::StoreError;

use crate::common::TestDb;
use crate::helpers::*;

crate::on_both_backends!(
    a_created_approval_reads_back_with_every_field,
    an_identical_pending_request_returns_the_existing_one,
    a_repeat_the_policy_would_approve_at_once_still_gets_the_pending_one,
    a_repeat_past_the_pending_ones_expiry_opens_a_new_request_before_the_sweep,
    the_same_idempotency_key_returns_the_existing_approval,
    a_key_that_came_with_a_repeat_names_the_approval_it_joined,
    two_calls_with_one_key_in_one_batch_get_one_answer_and_one_refusal,
    approvals_need_the_required_number_of_distinct_votes,
    a_refused_event_changes_nothing,
    an_edit_replaces_parameters_and_resets_approvals,
    execute_succeeds_once_and_only_with_the_approved_parameters,
    a_vote_whose_audit_event_cannot_be_stored_changes_nothing,
);

async fn a_created_approval_reads_back_with_every_field(db: TestDb) {
    let (store, clock) = open(&db).await;
    let mut request = new_request(
        "delete_customer_records",
        json!({"customer_ids": ["c1", "c2"], "n": 2}),
    );
    request.summary = Some("Delete 2 customer records".into());
    request.context = Some("User asked to purge test accounts".into());
    request.callback_url = Some("http://127.0.0.1:9/callback".into());
    let created = store
        .create(request, classify("delete_customer_records"), clock.now())
        .await
        .unwrap();
    assert!(created.created);
    let stored = store
        .get(created.approval.id)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(
        stored, created.approval,
        "what is read back equals what was written"
    );
    assert_eq!(stored.status, Status::Pending);
    assert_eq!(stored.summary.as_deref(), Some("Delete 2 customer records"));
    assert_eq!(stored.routing.channel.as_deref(), Some("C0APPROVALS"));
    assert_eq!(stored.expires_at, clock.now() + chrono::Duration::hours(1));
    assert!(
        store
            .get(signoff::approval::ApprovalId::new())
            .await
            .unwrap()
            .is_none()
    );
}

async fn an_identical_pending_request_returns_the_existing_one(db: TestDb) {
    let (store, clock) = open(&db).await;
    // Same parameters in another key order are the same request.
    let ask = || {
        store.create(
            new_request("deploy_api", json!({"env": "prod", "service": "api"})),
            classify("deploy_api"),
            clock.now(),
        )
    };
    let first = create(
        &store,
        &clock,
        "deploy_api",
        json!({"service": "api", "env": "prod"}),
    )
    .await;
    let again = ask().await.unwrap();
    assert!(!again.created);
    assert_eq!(again.approval.id, first.id);

    let other_token = {
        let mut request = new_request("deploy_api", json!({"service": "api", "env": "prod"}));
        request.token_name = Some("other-agent".into());
        store
            .create(request, classify("deploy_api"), clock.now())
            .await
            .unwrap()
    };
    assert!(other_token.created, "another token's request is its own");

    // Once decided, the same request asks again.
    vote(&store, &clock, first.id, "U1", Decision::Deny)
        .await
        .unwrap();
    let after = ask().await.unwrap();
    assert!(after.created);
    assert_ne!(after.approval.id, first.id);
    let repeat = ask().await.unwrap();
    assert!(!repeat.created, "the newest request is the pending one");
    assert_eq!(repeat.approval.id, after.approval.id);

    // Expired, then asked again and again: each pending one in turn is the one.
    clock.advance(Duration::from_secs(3600));
    signoff::scheduler::Scheduler::new(store.clone())
        .run_once(clock.now())
        .await
        .unwrap();
    let mut latest = after.approval.id;
    for _ in 0..3 {
        let fresh = ask().await.unwrap();
        assert!(fresh.created);
        assert_ne!(fresh.approval.id, latest);
        let repeat = ask().await.unwrap();
        assert_eq!(
            (repeat.created, repeat.approval.id),
            (false, fresh.approval.id)
        );
        let cancel = Event::Cancel {
            caller: Some(TOKEN.into()),
        };
        store
            .apply(fresh.approval.id, cancel, clock.now())
            .await
            .unwrap();
        latest = fresh.approval.id;
    }
}

/// A pending request past its expiry is no longer open, even while the expiry pass has
/// not yet marked it: a repeat in between opens a new request instead of joining one
/// that is about to expire unrun.
async fn a_repeat_past_the_pending_ones_expiry_opens_a_new_request_before_the_sweep(db: TestDb) {
    let (store, clock) = open(&db).await;
    let ask = || {
        store.create(
            new_request("restart", json!({"host": "db1"})),
            classify("restart"),
            clock.now(),
        )
    };
    let first = ask().await.unwrap();
    assert!(first.created);
    clock.advance(Duration::from_secs(3599));
    let joined = ask().await.unwrap();
    assert_eq!(
        (joined.created, joined.approval.id),
        (false, first.approval.id),
        "a second before its expiry it is still open"
    );

    clock.advance(Duration::from_secs(1));
    let fresh = ask().await.unwrap();
    assert!(fresh.created, "at its expiry it is no longer joined");
    assert_ne!(fresh.approval.id, first.approval.id);
    let again = ask().await.unwrap();
    assert_eq!(
        (again.created, again.approval.id),
        (false, fresh.approval.id)
    );

    signoff::scheduler::Scheduler::new(store.clone())
        .run_once(clock.now())
        .await
        .unwrap();
    let expired = store.get(first.approval.id).await.unwrap().unwrap();
    assert_eq!(expired.status, Status::Expired);
    let after = ask().await.unwrap();
    assert_eq!(
        (after.created, after.approval.status),
        (false, Status::Pending),
        "the new one is the open one"
    );
    assert_eq!(after.approval.id, fresh.approval.id);
}

async fn a_repeat_the_policy_would_approve_at_once_still_gets_the_pending_one(db: TestDb) {
    let (store, clock) = open(&db).await;
    let params = json!({"ids": ["c1"]});
    let pending = create(&store, &clock, "purge", params.clone()).await;
    assert_eq!(pending.status, Status::Pending);
    // The same request, classified as approved at once (the requester no longer
    // raised its tier, or the policy changed): the stricter pending one stands.
    let mut at_once = classify("purge");
    at_once.action = signoff::policy::TierAction::AutoApprove;
    let repeat = store
        .create(
            new_request("purge", params.clone()),
            at_once.clone(),
            clock.now(),
        )
        .await
        .unwrap();
    assert!(!repeat.created);
    assert_eq!(repeat.approval.id, pending.id);
    assert_eq!(repeat.approval.status, Status::Pending);

    // Once it is decided, the same request is classified afresh.
    vote(&store, &clock, pending.id, "U1", Decision::Deny)
        .await
        .unwrap();
    let approved = store
        .create(new_request("purge", params.clone()), at_once, clock.now())
        .await
        .unwrap();
    assert!(approved.created);
    assert_eq!(approved.approval.status, Status::Approved);
    // While that approval is open (approved, not yet run), the same request joins it,
    // so that it runs once; once it ran, the next one is asked afresh.
    let joined = store
        .create(
            new_request("purge", params.clone()),
            classify("purge"),
            clock.now(),
        )
        .await
        .unwrap();
    assert!(!joined.created);
    assert_eq!(joined.approval.id, approved.approval.id);
    execute(
        &store,
        &clock,
        approved.approval.id,
        params.clone(),
        "agent",
    )
    .await
    .unwrap();
    let next = create(&store, &clock, "purge", params).await;
    assert_eq!(next.status, Status::Pending);
}

async fn the_same_idempotency_key_returns_the_existing_approval(db: TestDb) {
    let (store, clock) = open(&db).await;
    let mut request = new_request("send_email", json!({"to": "a@example.com"}));
    request.idempotency_key = Some("k-123".into());
    let first = store
        .create(request.clone(), classify("send_email"), clock.now())
        .await
        .unwrap();
    vote(&store, &clock, first.approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    let again = store
        .create(request.clone(), classify("send_email"), clock.now())
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.approval.id, first.approval.id);
    assert_eq!(
        again.approval.status,
        Status::Approved,
        "the key returns the approval as it is now"
    );
    // The key names that call: with other parameters, or another tool, it is refused.
    request.parameters = json!({"to": "b@example.com"});
    let other = store
        .create(request.clone(), classify("send_email"), clock.now())
        .await;
    assert!(
        matches!(other, Err(StoreError::IdempotencyKeyReused(id)) if id == first.approval.id),
        "{other:?}"
    );
    request.parameters = json!({"to": "a@example.com"});
    request.tool_name = "delete_mailbox".into();
    let other = store
        .create(request, classify("delete_mailbox"), clock.now())
        .await;
    assert!(
        matches!(other, Err(StoreError::IdempotencyKeyReused(_))),
        "{other:?}"
    );
}

/// A keyed request that repeats an open one joins it, and its key names that approval
/// from then on, as if it had opened it: another call with the key is refused, and a
/// retry with it once the approval is spent answers that approval, not a new one.
async fn a_key_that_came_with_a_repeat_names_the_approval_it_joined(db: TestDb) {
    let (store, clock) = open(&db).await;
    let keyed = |tool: &str, parameters: serde_json::Value, key: &str| {
        let mut request = new_request(tool, parameters);
        request.idempotency_key = Some(key.into());
        store.create(request, classify(tool), clock.now())
    };
    let unkeyed = create(&store, &clock, "send_email", json!({"to": "a@example.com"})).await;
    let first_key = keyed("send_email", json!({"to": "b@example.com"}), "k-1")
        .await
        .unwrap();
    assert!(first_key.created);

    for (key, joins) in [("k-2", unkeyed.id), ("k-3", first_key.approval.id)] {
        let to = if joins == unkeyed.id { "a" } else { "b" };
        let joined = keyed(
            "send_email",
            json!({"to": format!("{to}@example.com")}),
            key,
        )
        .await
        .unwrap();
        assert_eq!(
            (joined.created, joined.approval.id),
            (false, joins),
            "{key}"
        );
        for other_call in [
            keyed("send_email", json!({"to": "c@example.com"}), key).await,
            keyed("delete_mailbox", json!({"to": "a@example.com"}), key).await,
        ] {
            assert!(
                matches!(other_call, Err(StoreError::IdempotencyKeyReused(id)) if id == joins),
                "{key}: {other_call:?}"
            );
        }
    }
    assert_eq!(
        store
            .get(unkeyed.id)
            .await
            .unwrap()
            .unwrap()
            .idempotency_key,
        None,
        "the approval keeps what it was opened with"
    );

    vote(&store, &clock, unkeyed.id, "U1", Decision::Approve)
        .await
        .unwrap();
    let execute = Event::Execute {
        parameters: json!({"to": "a@example.com"}),
        caller: Some(TOKEN.into()),
        tool_name: None,
        server: None,
    };
    store.apply(unkeyed.id, execute, clock.now()).await.unwrap();
    let retry = keyed("send_email", json!({"to": "a@example.com"}), "k-2")
        .await
        .unwrap();
    assert_eq!(
        (retry.created, retry.approval.id, retry.approval.status),
        (false, unkeyed.id, Status::Executed),
        "a retry after the run answers the call it made, and opens nothing"
    );
    let unkeyed_again = store
        .create(
            new_request("send_email", json!({"to": "a@example.com"})),
            classify("send_email"),
            clock.now(),
        )
        .await
        .unwrap();
    assert!(
        unkeyed_again.created,
        "without the key the same call asks again"
    );

    let other_token = {
        let mut request = new_request("send_email", json!({"to": "z@example.com"}));
        request.idempotency_key = Some("k-2".into());
        request.token_name = Some("other-agent".into());
        store
            .create(request, classify("send_email"), clock.now())
            .await
    };
    assert!(other_token.unwrap().created, "a key is the token's own");
}

/// Two requests of one batch with one key, each repeating another open request: the
/// first binds the key to the one it joins, the second is refused.
async fn two_calls_with_one_key_in_one_batch_get_one_answer_and_one_refusal(db: TestDb) {
    let (store, clock) = open(&db).await;
    let a = create(&store, &clock, "send_email", json!({"to": "a@example.com"})).await;
    let b = create(&store, &clock, "send_email", json!({"to": "b@example.com"})).await;
    let keyed = |to: &str| {
        let mut request = new_request("send_email", json!({"to": to}));
        request.idempotency_key = Some("k-1".into());
        store.create(request, classify("send_email"), clock.now())
    };
    for _ in 0..20 {
        let (first, second) = tokio::join!(keyed("a@example.com"), keyed("b@example.com"));
        let answers = [first, second];
        let joined: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
        assert_eq!(joined.len(), 1, "{answers:?}");
        let bound = joined[0].approval.id;
        assert!(bound == a.id || bound == b.id);
        assert!(
            answers.iter().any(|answer| matches!(
                answer, Err(StoreError::IdempotencyKeyReused(id)) if *id == bound
            )),
            "{answers:?}"
        );
    }
}

async fn approvals_need_the_required_number_of_distinct_votes(db: TestDb) {
    let (store, clock) = open(&db).await;
    let approval = create_needing(&store, &clock, "deploy_api", json!({"service": "api"}), 2).await;
    let one = vote(&store, &clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    assert_eq!(one.status, Status::Pending);
    assert_eq!(one.votes.len(), 1);
    clock.advance(Duration::from_secs(5));
    let two = vote(&store, &clock, approval.id, "U2", Decision::Approve)
        .await
        .unwrap();
    assert_eq!(two.status, Status::Approved);
    assert_eq!(two.decided_by.as_deref(), Some("U1, U2"));
    assert_eq!(two.decision_at, Some(clock.now()));
    let stored = store.get(approval.id).await.unwrap().unwrap();
    assert_eq!(stored, two);
    assert_eq!(
        stored
            .votes
            .iter()
            .map(|v| v.user.as_str())
            .collect::<Vec<_>>(),
        ["U1", "U2"]
    );
}

async fn a_refused_event_changes_nothing(db: TestDb) {
    let (store, clock) = open(&db).await;
    let approval = create_needing(&store, &clock, "deploy_api", json!({"service": "api"}), 2).await;
    let voted = vote(&store, &clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    let (audit_before, _) = store.audit_head().await.unwrap();

    let refusals = [
        (
            vote(&store, &clock, approval.id, "U1", Decision::Approve).await,
            Rejection::AlreadyVoted,
        ),
        (
            vote(&store, &clock, approval.id, REQUESTER, Decision::Approve).await,
            Rejection::RequesterCannotVote,
        ),
        (
            execute(
                &store,
                &clock,
                approval.id,
                json!({"service": "api"}),
                TOKEN,
            )
            .await,
            Rejection::NotApproved(Status::Pending),
        ),
        (
            store
                .apply(
                    approval.id,
                    Event::Cancel {
                        caller: Some("other-agent".into()),
                    },
                    clock.now(),
                )
                .await,
            Rejection::NotOwner,
        ),
    ];
    for (result, expected) in refusals {
        match result {
            Err(StoreError::Rejected { rejection, current }) => {
                assert_eq!(rejection, expected);
                assert_eq!(*current, voted);
            }
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    clock.advance(Duration::from_secs(3600));
    assert!(matches!(
        vote(&store, &clock, approval.id, "U2", Decision::Approve).await,
        Err(StoreError::Rejected {
            rejection: Rejection::Expired,
            ..
        })
    ));
    let unknown = signoff::approval::ApprovalId::new();
    assert!(matches!(
        vote(&store, &clock, unknown, "U2", Decision::Approve).await,
        Err(StoreError::NotFound(id)) if id == unknown
    ));
    assert_eq!(store.get(approval.id).await.unwrap().unwrap(), voted);
    // No audit event for a refusal but the refused execute's, which is on record.
    let added = store.audit_page(audit_before, 10).await.unwrap();
    let added: Vec<(&str, Option<&str>, &Value)> = added
        .iter()
        .map(|e| (e.kind.as_str(), e.actor.as_deref(), &e.data["reason"]))
        .collect();
    assert_eq!(
        added,
        [(
            "execute_refused",
            Some(TOKEN),
            &json!("this request is pending, not approved")
        )]
    );
}

async fn an_edit_replaces_parameters_and_resets_approvals(db: TestDb) {
    let (store, clock) = open(&db).await;
    let approval = create_needing(
        &store,
        &clock,
        "send_email",
        json!({"to": ["a", "b", "c"]}),
        2,
    )
    .await;
    vote(&store, &clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    let edit = Event::EditApprove {
        by: signoff::approval::Decider::approver("U2"),
        parameters: json!({"to": ["a"]}),
        parameters_shown: None,
    };
    let edited = store.apply(approval.id, edit, clock.now()).await.unwrap();
    assert_eq!(edited.status, Status::Pending);
    assert_eq!(edited.parameters, json!({"to": ["a"]}));
    assert_eq!(
        edited.original_parameters,
        Some(json!({"to": ["a", "b", "c"]}))
    );
    assert_eq!(edited.votes.len(), 1);
    assert_eq!(store.get(approval.id).await.unwrap().unwrap(), edited);
    let approved = vote(&store, &clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    assert!(matches!(
        execute(
            &store,
            &clock,
            approval.id,
            json!({"to": ["a", "b", "c"]}),
            TOKEN
        )
        .await,
        Err(StoreError::Rejected {
            rejection: Rejection::ParametersDiffer,
            ..
        })
    ));
    let executed = execute(&store, &clock, approval.id, json!({"to": ["a"]}), TOKEN)
        .await
        .unwrap();
    assert_eq!(executed.status, Status::Executed);
}

async fn execute_succeeds_once_and_only_with_the_approved_parameters(db: TestDb) {
    let (store, clock) = open(&db).await;
    let approval = create(
        &store,
        &clock,
        "refund",
        json!({"amount": 10, "currency": "EUR"}),
    )
    .await;
    vote(&store, &clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    for (params, caller) in [
        (json!({"amount": 1000, "currency": "EUR"}), TOKEN),
        (json!({"amount": 10}), TOKEN),
        (json!({"amount": 10, "currency": "EUR"}), "other-agent"),
    ] {
        assert!(
            execute(&store, &clock, approval.id, params, caller)
                .await
                .is_err()
        );
    }
    assert_eq!(
        store.get(approval.id).await.unwrap().unwrap().status,
        Status::Approved
    );
    let done = execute(
        &store,
        &clock,
        approval.id,
        json!({"currency": "EUR", "amount": 10}),
        TOKEN,
    )
    .await
    .unwrap();
    assert_eq!(done.status, Status::Executed);
    assert_eq!(done.executed_at, Some(clock.now()));
    assert!(matches!(
        execute(
            &store,
            &clock,
            approval.id,
            json!({"amount": 10, "currency": "EUR"}),
            TOKEN
        )
        .await,
        Err(StoreError::Rejected {
            rejection: Rejection::AlreadyDecided(Status::Executed),
            ..
        })
    ));
}

/// The writers keep back the statements whose answers they do not read (the audit
/// events among them) and send them later, with the next read or the commit: one that
/// fails there must still undo everything before it.
async fn a_vote_whose_audit_event_cannot_be_stored_changes_nothing(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    let a = create(&store, &clock, "deploy", json!({ "v": 1 })).await;
    let head = raw_count(&db, "SELECT seq FROM audit_head WHERE id = 1").await;
    let jobs = raw_count(&db, "SELECT COUNT(*) FROM jobs").await;
    let events = raw_count(&db, "SELECT COUNT(*) FROM audit_events").await;
    // A row already at the chain's next place: the vote's event collides with it.
    let squatter = format!(
        "INSERT INTO audit_events (seq, approval_id, kind, actor, at, data, prev_hash, hash) \
         VALUES ({}, NULL, 'squatter', NULL, {}, '{{}}', 'x', 'y')",
        head + 1,
        sql_time(&db, clock.now())
    );
    raw_execute(&db, &squatter).await.unwrap();
    let vote = Event::Vote {
        by: Decider::approver("U0ALICE"),
        decision: Decision::Approve,
        reason: None,
        parameters_shown: None,
    };
    let refused = store.apply(a.id, vote, clock.now()).await;
    assert!(
        matches!(refused, Err(StoreError::Database(_))),
        "{refused:?}"
    );
    let now = store.get(a.id).await.unwrap().expect("still there");
    assert_eq!(now.status, Status::Pending);
    assert!(now.votes.is_empty());
    assert_eq!(raw_count(&db, "SELECT COUNT(*) FROM votes").await, 0);
    assert_eq!(raw_count(&db, "SELECT COUNT(*) FROM jobs").await, jobs);
    assert_eq!(
        raw_count(&db, "SELECT COUNT(*) FROM audit_events").await,
        events + 1,
        "only the squatter"
    );
    assert_eq!(
        raw_count(&db, "SELECT seq FROM audit_head WHERE id = 1").await,
        head
    );
}
