//! Two writers (as two replicas are) racing on the same approval: one wins.

use serde_json::json;
use signoff::approval::{Decision, Event, Rejection, Status};
use signoff::clock::Clock;
use signoff::store::{Store, StoreError};

use crate::common::TestDb;
use crate::helpers::*;

crate::on_both_backends!(
    concurrent_votes_from_two_processes_produce_exactly_one_decision,
    concurrent_executes_from_two_processes_run_exactly_once,
    concurrent_identical_requests_create_one_approval,
    one_batch_of_new_duplicate_and_idempotent_requests_answers_each,
    a_batch_of_repeats_of_stored_requests_answers_each_with_its_own,
    a_flood_past_the_limit_joins_its_repeats_and_refuses_the_rest,
    a_request_past_its_expiry_does_not_count_against_max_pending,
    votes_sent_together_on_one_approval_each_see_the_ones_before,
    an_edit_and_votes_sent_together_are_stored_as_the_last_one_left_them,
    two_processes_creating_and_voting_together_keep_one_audit_chain,
    an_operation_the_database_refuses_fails_alone_and_the_writer_goes_on,
);

/// A policy under which a requester may have `n` requests waiting, each for an hour.
fn max_pending(n: u32) -> signoff::policy::Policy {
    let text = format!(
        "[defaults]\nchannel = \"C0APPROVALS\"\nexpires_after = \"1h\"\nmax_pending = {n}\n"
    );
    signoff::policy::Policy::from_toml_str(&text).unwrap()
}

/// Asks to wipe `disk`, classified by `policy`, at `now`.
fn wipe<'a>(
    store: &'a Store,
    policy: &signoff::policy::Policy,
    now: chrono::DateTime<chrono::Utc>,
    disk: &str,
) -> impl std::future::Future<Output = Result<signoff::store::Created, StoreError>> + use<'a> {
    let request = new_request("wipe_disk", json!({ "disk": disk }));
    let class = policy.classify("wipe_disk", &request.parameters, None);
    store.create(request, class, now)
}

/// A request past its expiry that the expiry pass has not marked yet waits for
/// nothing: it does not count against `max_pending`, on either store.
async fn a_request_past_its_expiry_does_not_count_against_max_pending(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    let policy = max_pending(1);
    let create = |disk: &str| wipe(&store, &policy, clock.now(), disk);
    create("sda").await.unwrap();
    assert!(matches!(
        create("sdb").await,
        Err(StoreError::TooManyPending { waiting: 1, .. })
    ));
    // Past sda's expiry; no expiry pass runs.
    clock.advance(std::time::Duration::from_secs(3601));
    let sdb = create("sdb").await.expect("sda waits for nothing now");
    assert!(sdb.created);
}

/// A batch from a requester at its `max_pending`: the repeats of its waiting requests
/// (looked up together) join them, each the one it repeats; the rest are refused with
/// the count they met, leave no row, and are recorded together, the first of them
/// starting the episode (its notice), the others not.
async fn a_flood_past_the_limit_joins_its_repeats_and_refuses_the_rest(db: TestDb) {
    let (store, clock) = open_posting(&db).await;
    let policy = max_pending(2);
    let create = |disk: &str| wipe(&store, &policy, clock.now(), disk);
    let sda = create("sda").await.unwrap().approval;
    let sdb = create("sdb").await.unwrap().approval;
    let results = tokio::join!(
        create("sdc"),
        create("sdb"),
        create("sdd"),
        create("sda"),
        create("sdb"),
    );
    let joined = |result: Result<signoff::store::Created, StoreError>| {
        let created = result.unwrap();
        assert!(!created.created);
        created.approval.id
    };
    let refused = |result: Result<signoff::store::Created, StoreError>| {
        assert!(
            matches!(
                result,
                Err(StoreError::TooManyPending {
                    waiting: 2,
                    limit: 2,
                    ..
                })
            ),
            "{result:?}"
        );
    };
    refused(results.0);
    assert_eq!(joined(results.1), sdb.id);
    refused(results.2);
    assert_eq!(joined(results.3), sda.id);
    assert_eq!(joined(results.4), sdb.id);
    assert_eq!(
        raw_count(&db, "SELECT COUNT(*) FROM pending_approvals").await,
        2,
        "refused requests leave no row"
    );
    let notices: Vec<_> = store
        .audit_page(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.kind == "throttled")
        .map(|event| event.data["notice"].clone())
        .collect();
    assert_eq!(notices, [json!(true), json!(false)]);
    assert_eq!(
        raw_count(&db, "SELECT refused FROM throttles").await,
        2,
        "one episode, both refusals"
    );
    let notice = "SELECT COUNT(*) FROM jobs WHERE kind = 'slack_throttled'";
    assert_eq!(raw_count(&db, notice).await, 1);
}

async fn an_edit_and_votes_sent_together_are_stored_as_the_last_one_left_them(db: TestDb) {
    let (store, clock) = open(&db).await;
    let approval = create_needing(&store, &clock, "deploy_api", json!({"x": 1}), 3).await;
    vote(&store, &clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    clock.advance(std::time::Duration::from_secs(1));
    // The edit drops U1's approval; U1 may then approve again (a new vote row).
    let events = [
        Event::EditApprove {
            by: signoff::approval::Decider::approver("U3"),
            parameters: json!({"x": 2}),
            parameters_shown: None,
        },
        Event::Vote {
            by: signoff::approval::Decider::approver("U1"),
            decision: Decision::Approve,
            reason: None,
            parameters_shown: None,
        },
        Event::Vote {
            by: signoff::approval::Decider::approver("U2"),
            decision: Decision::Deny,
            reason: Some("no".into()),
            parameters_shown: None,
        },
    ];
    let mut tasks = Vec::new();
    for event in events {
        let (store, now) = (store.clone(), clock.now());
        tasks.push(tokio::spawn(async move {
            store.apply(approval.id, event, now).await
        }));
    }
    let mut last: Option<signoff::approval::Approval> = None;
    for task in tasks {
        match task.await.unwrap() {
            Ok(after) => {
                if last.as_ref().is_none_or(|l| after.version > l.version) {
                    last = Some(after);
                }
            }
            Err(StoreError::Rejected { .. }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    let mut last = last.expect("at least one event was taken");
    // Stored votes come back in (time, user) order.
    last.votes
        .sort_by(|a, b| (a.at, &a.user).cmp(&(b.at, &b.user)));
    let stored = store.get(approval.id).await.unwrap().unwrap();
    assert_eq!(
        stored, last,
        "the row and the votes table hold what the last event left"
    );
}

async fn votes_sent_together_on_one_approval_each_see_the_ones_before(db: TestDb) {
    let (store, clock) = open(&db).await;
    let approval = create_needing(&store, &clock, "deploy_api", json!({}), 3).await;
    // Sent at once, so the writer takes them in one or a few batches.
    let voters = ["U1", "U1", "U2", "U3", "U4", "U5"];
    let mut tasks = Vec::new();
    for user in voters {
        let (store, now) = (store.clone(), clock.now());
        let event = Event::Vote {
            by: signoff::approval::Decider::approver(user),
            decision: Decision::Approve,
            reason: None,
            parameters_shown: None,
        };
        tasks.push(tokio::spawn(async move {
            store.apply(approval.id, event, now).await
        }));
    }
    let (mut counted, mut twice, mut late) = (Vec::new(), 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(after) => counted.push(after.votes.len()),
            Err(StoreError::Rejected {
                rejection: Rejection::AlreadyVoted,
                ..
            }) => twice += 1,
            Err(StoreError::Rejected {
                rejection: Rejection::AlreadyDecided(Status::Approved),
                ..
            }) => late += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    counted.sort_unstable();
    assert_eq!(
        counted,
        [1, 2, 3],
        "each counted vote saw the ones before it"
    );
    // U1's second vote is refused as a second vote, or as too late if it came after
    // the third counted one; every other vote after the third is too late.
    assert!(twice <= 1, "only U1 voted twice");
    assert_eq!(twice + late, 3);
    let stored = store.get(approval.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.votes.len()), (Status::Approved, 3));
    let mut users: Vec<&str> = stored.votes.iter().map(|v| v.user.as_str()).collect();
    users.dedup();
    assert_eq!(users.len(), 3, "three different people: {users:?}");
    assert_eq!(count_audit(&store, "vote").await, 3);
}

async fn concurrent_votes_from_two_processes_produce_exactly_one_decision(db: TestDb) {
    let (store, clock) = open(&db).await;
    // A second Store is a second writer on the same database, as a second replica is.
    let replica = Store::connect(&db.url).await.unwrap();
    let approval = create(&store, &clock, "delete_repo", json!({"repo": "x"})).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let target = if i % 2 == 0 {
            store.clone()
        } else {
            replica.clone()
        };
        let decision = if i % 3 == 0 {
            Decision::Deny
        } else {
            Decision::Approve
        };
        let now = clock.now();
        tasks.push(tokio::spawn(async move {
            let event = Event::Vote {
                by: signoff::approval::Decider::approver(format!("U{i}")),
                decision,
                reason: None,
                parameters_shown: None,
            };
            target.apply(approval.id, event, now).await
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(approval) => winners.push(approval),
            Err(StoreError::Rejected {
                rejection: Rejection::AlreadyDecided(_),
                ..
            }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one vote decides");
    let stored = store.get(approval.id).await.unwrap().unwrap();
    assert_eq!(stored.status, winners[0].status);
    assert_eq!(stored.votes.len(), 1);
    assert_eq!(count_audit(&store, "vote").await, 1);
}

async fn concurrent_executes_from_two_processes_run_exactly_once(db: TestDb) {
    let (store, clock) = open(&db).await;
    let replica = Store::connect(&db.url).await.unwrap();
    let approval = create(&store, &clock, "transfer", json!({"amount": 5})).await;
    vote(&store, &clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let target = if i % 2 == 0 {
            store.clone()
        } else {
            replica.clone()
        };
        let now = clock.now();
        tasks.push(tokio::spawn(async move {
            let event = Event::Execute {
                parameters: json!({"amount": 5}),
                tool_name: None,
                server: None,
                caller: Some(TOKEN.into()),
            };
            target.apply(approval.id, event, now).await
        }));
    }
    let mut executed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => executed += 1,
            Err(StoreError::Rejected {
                rejection: Rejection::AlreadyDecided(Status::Executed),
                ..
            }) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(executed, 1);
    assert_eq!(count_audit(&store, "executed").await, 1);
}

async fn concurrent_identical_requests_create_one_approval(db: TestDb) {
    let (store, clock) = open(&db).await;
    let replica = Store::connect(&db.url).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let target = if i % 2 == 0 {
            store.clone()
        } else {
            replica.clone()
        };
        let now = clock.now();
        tasks.push(tokio::spawn(async move {
            target
                .create(
                    new_request("wipe_disk", json!({"disk": "sda"})),
                    classify("wipe_disk"),
                    now,
                )
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for task in tasks {
        let result = task.await.unwrap().unwrap();
        created += usize::from(result.created);
        ids.insert(result.approval.id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(count_audit(&store, "requested").await, 1);
}

/// Creates that reach the writer together share one transaction and one multi-row
/// insert; within it, a repeated request or idempotency key still finds the first.
async fn one_batch_of_new_duplicate_and_idempotent_requests_answers_each(db: TestDb) {
    let (store, clock) = open(&db).await;
    let keyed = |key: &str, disk: &str| {
        let mut request = new_request("wipe_disk", json!({"disk": disk}));
        request.idempotency_key = Some(key.into());
        request
    };
    let create = |request| store.create(request, classify("wipe_disk"), clock.now());
    // Polled together: they reach the writer (on its own thread) at once, and it takes
    // them in one batch or a few; the answers are the same either way.
    let results = tokio::join!(
        create(new_request("wipe_disk", json!({"disk": "sda"}))),
        create(new_request("wipe_disk", json!({"disk": "sdb"}))),
        create(new_request("wipe_disk", json!({"disk": "sda"}))),
        create(keyed("k-1", "sdc")),
        create(keyed("k-1", "sdd")),
        create(new_request("wipe_disk", json!({"disk": "sdb"}))),
    );
    // The same key with other parameters names another call: refused.
    let reused = results.4;
    let results: Vec<_> = [results.0, results.1, results.2, results.3, results.5]
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created: Vec<bool> = results.iter().map(|r| r.created).collect();
    assert_eq!(created, [true, true, false, true, false]);
    assert_eq!(results[2].approval.id, results[0].approval.id);
    assert!(
        matches!(reused, Err(StoreError::IdempotencyKeyReused(id)) if id == results[3].approval.id),
        "{reused:?}"
    );
    assert_eq!(results[4].approval.id, results[1].approval.id);
    assert_eq!(count_audit(&store, "requested").await, 3);
    for result in &results {
        let stored = store.get(result.approval.id).await.unwrap().unwrap();
        assert_eq!(stored, result.approval);
    }
}

/// Repeats of stored requests that reach the writer together are looked up for the
/// whole batch at once, and each is answered with the approval it repeats: a pending
/// one, an approved one not yet run, the one with the same idempotency key. A request
/// whose approval was denied is asked afresh, and a reused key with other parameters
/// is refused.
async fn a_batch_of_repeats_of_stored_requests_answers_each_with_its_own(db: TestDb) {
    let (store, clock) = open(&db).await;
    let disk = |disk: &str| new_request("wipe_disk", json!({"disk": disk}));
    let keyed = |key: &str, name: &str| {
        let mut request = disk(name);
        request.idempotency_key = Some(key.into());
        request
    };
    let create = |request| store.create(request, classify("wipe_disk"), clock.now());
    let sda = create(disk("sda")).await.unwrap().approval;
    let sdb = create(disk("sdb")).await.unwrap().approval;
    let key = create(keyed("k-1", "sdc")).await.unwrap().approval;
    let approved = create(disk("sde")).await.unwrap().approval;
    let denied = create(disk("sdf")).await.unwrap().approval;
    for (id, decision) in [
        (approved.id, Decision::Approve),
        (denied.id, Decision::Deny),
    ] {
        vote(&store, &clock, id, "U1", decision).await.unwrap();
    }
    clock.advance(std::time::Duration::from_secs(1));
    let results = tokio::join!(
        create(disk("sdb")),
        create(keyed("k-1", "sdc")),
        create(disk("sdf")),
        create(disk("sda")),
        create(keyed("k-1", "sdz")),
        create(disk("sde")),
        create(disk("sda")),
    );
    let reused = results.4;
    assert!(
        matches!(reused, Err(StoreError::IdempotencyKeyReused(id)) if id == key.id),
        "{reused:?}"
    );
    let results: Vec<_> = [
        results.0, results.1, results.2, results.3, results.5, results.6,
    ]
    .into_iter()
    .map(Result::unwrap)
    .collect();
    let created: Vec<bool> = results.iter().map(|r| r.created).collect();
    assert_eq!(created, [false, false, true, false, false, false]);
    let joined: Vec<_> = results.iter().map(|r| r.approval.id).collect();
    assert_eq!(joined[0], sdb.id);
    assert_eq!(joined[1], key.id);
    assert_ne!(joined[2], denied.id);
    assert_eq!(results[2].approval.status, Status::Pending);
    assert_eq!(joined[3], sda.id);
    assert_eq!(joined[4], approved.id);
    assert_eq!(results[4].approval.status, Status::Approved);
    assert_eq!(joined[5], sda.id);
    for result in &results {
        let stored = store.get(result.approval.id).await.unwrap().unwrap();
        assert_eq!(stored, result.approval);
    }
}

/// Two writers (replicas) creating, repeating and voting at once: each batch locks the
/// audit head along with the rows it writes (on PostgreSQL in the same statement), so
/// their events still form one chain, with each creation and vote in it once.
async fn two_processes_creating_and_voting_together_keep_one_audit_chain(db: TestDb) {
    let (store, clock) = open(&db).await;
    let replica = Store::connect(&db.url).await.unwrap();
    let mut open_ones = Vec::new();
    for i in 0..8 {
        open_ones.push(create(&store, &clock, "transfer", json!({ "n": i })).await);
    }
    let mut tasks = Vec::new();
    for i in 0..48usize {
        let target = if i % 2 == 0 {
            store.clone()
        } else {
            replica.clone()
        };
        let now = clock.now();
        let voted = open_ones[i % 8].id;
        tasks.push(tokio::spawn(async move {
            match i % 3 {
                // New requests: 16 distinct ones, each asked twice (once per writer).
                0 | 1 => {
                    let request = new_request("wipe_disk", json!({ "disk": i / 3 }));
                    let created = target.create(request, classify("wipe_disk"), now).await;
                    (Some(created.unwrap()), None)
                }
                _ => {
                    let by = signoff::approval::Decider::approver(format!("U{i}"));
                    let event = Event::Vote {
                        by,
                        decision: Decision::Approve,
                        reason: None,
                        parameters_shown: None,
                    };
                    (None, Some(target.apply(voted, event, now).await))
                }
            }
        }));
    }
    let (mut created, mut ids, mut votes) = (0, std::collections::HashSet::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            (Some(answer), _) => {
                created += usize::from(answer.created);
                ids.insert(answer.approval.id);
            }
            (_, Some(Ok(_))) => votes += 1,
            (
                _,
                Some(Err(StoreError::Rejected {
                    rejection: Rejection::AlreadyDecided(_),
                    ..
                })),
            ) => {}
            (_, Some(Err(other))) => panic!("unexpected error {other}"),
            (None, None) => unreachable!("each task creates or votes"),
        }
    }
    assert_eq!((created, ids.len()), (16, 16), "each request opened once");
    assert_eq!(votes, 8, "each open approval decided by its first vote");
    assert_one_audit_chain(&replica).await;
    assert_eq!(count_audit(&store, "requested").await, 8 + 16);
    assert_eq!(count_audit(&store, "vote").await, 8);
}

/// The vote a trigger refuses (as a database may refuse any statement) fails its whole
/// batch; the writer rolls it back and runs each operation again alone, so only that
/// vote fails, with the database's error, and leaves nothing behind, while the
/// operations sent with it, and every batch after it, commit as if it had not been
/// sent. Sent together, so batches follow one another with operations waiting (on
/// PostgreSQL the next transaction opens with the last one's commit).
async fn an_operation_the_database_refuses_fails_alone_and_the_writer_goes_on(db: TestDb) {
    let (store, clock) = open(&db).await;
    refuse(
        &db,
        "INSERT",
        "votes",
        "NEW.user_id = 'U0REFUSED'",
        "vote refused by trigger",
    )
    .await;
    let mut open_ones = Vec::new();
    for i in 0..24 {
        open_ones.push(create(&store, &clock, "transfer", json!({ "n": i })).await);
    }
    let refused = |i: usize| i % 8 == 3;
    let mut votes = Vec::new();
    let mut creates = Vec::new();
    for (i, approval) in open_ones.iter().enumerate() {
        let (voter, now, id) = (store.clone(), clock.now(), approval.id);
        let user = if refused(i) {
            "U0REFUSED".to_owned()
        } else {
            format!("U{i}")
        };
        votes.push(tokio::spawn(async move {
            let by = signoff::approval::Decider::approver(user);
            let event = Event::Vote {
                by,
                decision: Decision::Approve,
                reason: None,
                parameters_shown: None,
            };
            voter.apply(id, event, now).await
        }));
        let creator = store.clone();
        creates.push(tokio::spawn(async move {
            let request = new_request("wipe_disk", json!({ "disk": i }));
            creator.create(request, classify("wipe_disk"), now).await
        }));
    }
    for (i, vote) in votes.into_iter().enumerate() {
        match vote.await.unwrap() {
            Ok(after) if !refused(i) => assert_eq!(after.status, Status::Approved),
            Err(StoreError::Database(error)) if refused(i) => assert!(
                error.to_string().contains("vote refused by trigger"),
                "the database's own error: {error}"
            ),
            other => panic!("vote {i}: unexpected answer {other:?}"),
        }
    }
    for create in creates {
        assert!(create.await.unwrap().unwrap().created);
    }
    for (i, approval) in open_ones.iter().enumerate() {
        let stored = store.get(approval.id).await.unwrap().unwrap();
        let expected = if refused(i) {
            (Status::Pending, 0)
        } else {
            (Status::Approved, 1)
        };
        assert_eq!(
            (stored.status, stored.votes.len()),
            expected,
            "approval {i}"
        );
    }
    assert_eq!(
        count_audit(&store, "vote").await,
        21,
        "no event of a refused vote"
    );
    assert_eq!(count_audit(&store, "requested").await, 48);
    // The writer goes on: another approver decides what the refused votes left open.
    let after = vote(&store, &clock, open_ones[3].id, "U1", Decision::Approve)
        .await
        .unwrap();
    assert_eq!(after.status, Status::Approved);
    assert_one_audit_chain(&store).await;
}

/// On PostgreSQL, another writer (a replica, `signoff decide`) commits a vote while
/// this one's read of the approval waits for its lock: the read gets the newest row,
/// and is read again so that its votes are as new (the first read's votes were from
/// before that vote, and two approvals of two needed stayed pending). Likewise an edit
/// that cleared the approve votes before it is not undone.
#[tokio::test]
async fn a_vote_committed_while_the_writer_waits_for_the_lock_is_counted_on_postgres() {
    let Some(db) = crate::common::postgres("vote_while_waiting").await else {
        return;
    };
    let (store, clock) = open(&db).await;
    let approval = create_needing(&store, &clock, "deploy_api", json!({}), 2).await;
    let writer = db.as_signoff_writer();
    let mut other = <sqlx::PgConnection as sqlx::Connection>::connect(&writer.url)
        .await
        .unwrap();
    // The other writer's vote, its transaction open and the row locked.
    let id = approval.id.to_string();
    for sql in [
        "BEGIN".to_owned(),
        format!(
            "INSERT INTO votes (approval_id, user_id, decision, at) \
             VALUES ('{id}', 'U2', 'approve', now())"
        ),
        format!("UPDATE pending_approvals SET version = version + 1 WHERE id = '{id}'"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut other)
            .await
            .unwrap();
    }
    let voting = {
        let (store, now) = (store.clone(), clock.now());
        tokio::spawn(async move { vote_at(&store, now, approval.id, "U1").await })
    };
    // Until the vote's read waits for the lock the other transaction holds.
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                   AND query LIKE '%FOR UPDATE%'";
    let started = std::time::Instant::now();
    while crate::common::raw_count(&db, waiting).await != 1 {
        assert!(
            started.elapsed().as_secs() < 10,
            "the vote waits for the lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let after = voting.await.unwrap().expect("the vote is taken");
    let mut users: Vec<&str> = after.votes.iter().map(|v| v.user.as_str()).collect();
    users.sort_unstable();
    assert_eq!(users, ["U1", "U2"], "both votes counted");
    assert_eq!(after.status, Status::Approved, "two of two");
    let stored = store.get(approval.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.votes.len()), (Status::Approved, 2));
}

/// U1's approving vote on `id` at `now`.
async fn vote_at(
    store: &Store,
    now: chrono::DateTime<chrono::Utc>,
    id: signoff::approval::ApprovalId,
    user: &str,
) -> Result<signoff::approval::Approval, StoreError> {
    let event = Event::Vote {
        by: signoff::approval::Decider::approver(user),
        decision: Decision::Approve,
        reason: None,
        parameters_shown: None,
    };
    store.apply(id, event, now).await
}
