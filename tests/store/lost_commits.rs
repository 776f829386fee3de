//! A write batch whose `COMMIT` got no reply, on PostgreSQL: the connection is cut by a
//! proxy (`common::pg_cut`) after the server received the `COMMIT`, or before. The
//! writer learns what became of the batch before it answers or runs anything again.

use std::time::Duration;

use serde_json::{Value, json};
use signoff::approval::{Approval, Decision, Status};
use signoff::clock::{Clock, ManualClock};
use signoff::policy::{Classification, TierAction};
use signoff::store::{Created, Store, StoreError};

use crate::common::pg_cut::{Cut, PgCut};
use crate::common::{self, TestDb};
use crate::helpers::*;

/// How long the writer may take to learn a lost commit's outcome, when the database
/// is there to ask.
const LEARN_WITHIN: Duration = Duration::from_secs(10);

/// A store on `db` through a proxy that cuts commits, whose writer tries for `within`
/// to learn a lost commit's outcome; its writer's connection is made (by a first
/// request), so that what is armed next cuts a batch of the test's.
async fn open_cut(db: &TestDb, within: Duration) -> (Store, ManualClock, PgCut) {
    let cut = PgCut::start(db).await;
    let store = Store::connect_learning_commits_within(&cut.db(db).url, within)
        .await
        .expect("store opens");
    let clock = clock();
    create(&store, &clock, "warm_up", json!({})).await;
    (store, clock, cut)
}

/// A request the policy approves at once.
fn auto_approved(tool: &str) -> Classification {
    let mut class = classify(tool);
    class.action = TierAction::AutoApprove;
    class
}

/// Asks for `tool` with `parameters`, auto-approved and spent at once (as a request
/// with `execute_if_approved` and no idempotency key).
async fn spend(
    store: &Store,
    clock: &ManualClock,
    tool: &str,
    parameters: Value,
) -> Result<Created, StoreError> {
    let request = new_request(tool, parameters);
    store
        .create_and_execute(request, auto_approved(tool), clock.now())
        .await
}

/// An approved request, ready to execute.
async fn approved(store: &Store, clock: &ManualClock, parameters: Value) -> Approval {
    let approval = create(store, clock, "deploy", parameters).await;
    let approved = vote(store, clock, approval.id, "U1", Decision::Approve)
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    approved
}

/// Counts straight from the database (not through the proxy).
async fn count(db: &TestDb, sql: &str) -> i64 {
    raw_count(db, sql).await
}

const EXECUTED: &str = "SELECT COUNT(*) FROM audit_events WHERE kind = 'executed'";

#[tokio::test]
async fn an_execute_whose_commit_reply_is_lost_is_answered_as_executed_on_postgres() {
    let Some(db) = common::postgres("lost_commit_execute").await else {
        return;
    };
    let (store, clock, cut) = open_cut(&db, LEARN_WITHIN).await;
    let parameters = json!({"to": "prod"});
    let approval = approved(&store, &clock, parameters.clone()).await;
    cut.arm(Cut::ReplyLost);
    let executed = execute(&store, &clock, approval.id, parameters.clone(), TOKEN)
        .await
        .expect("answered as executed, as it was");
    assert_eq!(cut.cuts(), 1, "the execute's COMMIT was cut");
    assert_eq!(executed.status, Status::Executed);
    assert_eq!(executed.parameters, parameters);
    assert_eq!(count(&db, EXECUTED).await, 1);
    let again = execute(&store, &clock, approval.id, parameters, TOKEN).await;
    assert!(
        matches!(&again, Err(StoreError::Rejected { current, .. }) if current.status == Status::Executed),
        "a second execute is refused: {again:?}"
    );
    assert_eq!(count(&db, EXECUTED).await, 1);
    assert_one_audit_chain(&store).await;
}

#[tokio::test]
async fn a_call_spent_at_once_whose_commit_reply_is_lost_is_spent_once_on_postgres() {
    let Some(db) = common::postgres("lost_commit_spend").await else {
        return;
    };
    let (store, clock, cut) = open_cut(&db, LEARN_WITHIN).await;
    cut.arm(Cut::ReplyLost);
    let parameters = json!({"path": "/etc/motd"});
    let spent = spend(&store, &clock, "read_file", parameters.clone())
        .await
        .expect("answered as spent, as it was");
    assert_eq!(cut.cuts(), 1, "the create's COMMIT was cut");
    assert!(spent.created && spent.spent);
    assert_eq!(spent.approval.status, Status::Executed);
    assert_eq!(spent.approval.parameters, parameters);
    let spends = "SELECT COUNT(*) FROM pending_approvals WHERE tool_name = 'read_file'";
    assert_eq!(count(&db, spends).await, 1, "one approval");
    assert_eq!(count(&db, EXECUTED).await, 1, "one executed event");
    assert_one_audit_chain(&store).await;
}

#[tokio::test]
async fn a_commit_that_never_reached_the_server_is_run_again_once_on_postgres() {
    let Some(db) = common::postgres("lost_commit_never_sent").await else {
        return;
    };
    let (store, clock, cut) = open_cut(&db, LEARN_WITHIN).await;
    // The server's side of the cut connection stays open, its transaction holding the
    // audit head's lock: the run again waits for nothing once the writer ended it.
    cut.arm(Cut::NeverSent);
    let parameters = json!({"path": "/etc/motd"});
    let spent = tokio::time::timeout(
        Duration::from_secs(30),
        spend(&store, &clock, "read_file", parameters.clone()),
    )
    .await
    .expect("answered within 30 s")
    .expect("run again, and spent");
    assert_eq!(cut.cuts(), 1, "the create's COMMIT was cut");
    assert!(spent.created && spent.spent);
    assert_eq!(spent.approval.status, Status::Executed);
    let spends = "SELECT COUNT(*) FROM pending_approvals WHERE tool_name = 'read_file'";
    assert_eq!(count(&db, spends).await, 1, "one approval");
    assert_eq!(count(&db, EXECUTED).await, 1, "one executed event");
    assert_one_audit_chain(&store).await;
}

#[tokio::test]
async fn writes_whose_commit_outcome_cannot_be_learned_fail_and_are_not_run_again_on_postgres() {
    let Some(db) = common::postgres("lost_commit_unreachable").await else {
        return;
    };
    let within = Duration::from_millis(300);
    let (store, clock, cut) = open_cut(&db, within).await;
    cut.arm(Cut::ReplyLost);
    // The writer's connection is made; every new one goes unanswered until the answer
    // comes (or long after the writer's bound, when it runs the write again).
    cut.hold(true);
    let parameters = json!({"path": "/etc/motd"});
    let spent = spend(&store, &clock, "read_file", parameters.clone());
    tokio::pin!(spent);
    let answered = tokio::time::timeout(within * 10, &mut spent).await;
    cut.hold(false);
    let answer = match answered {
        Ok(answer) => answer,
        Err(_) => spent.await,
    };
    assert_eq!(cut.cuts(), 1, "the create's COMMIT was cut");
    assert!(
        matches!(&answer, Err(StoreError::Database(_))),
        "failed, neither answered as spent nor run again: {answer:?}"
    );
    let spends = "SELECT COUNT(*) FROM pending_approvals WHERE tool_name = 'read_file'";
    assert_eq!(
        count(&db, spends).await,
        1,
        "committed once, as the reply was lost"
    );
    assert_eq!(count(&db, EXECUTED).await, 1, "spent once");
    // The writer works again once the database is there.
    let next = spend(&store, &clock, "list_files", json!({}))
        .await
        .unwrap();
    assert!(next.spent);
    assert_one_audit_chain(&store).await;
}

/// A batch that appends no audit event (here, a claim of due deliveries) whose `COMMIT`
/// never reached the server: its old session, still holding the jobs' row locks, is
/// ended before the claim runs again, which then takes them (it skipped them, locked,
/// and they waited for a session nobody would end).
#[tokio::test]
async fn a_claim_whose_commit_never_reached_the_server_takes_its_jobs_when_run_again_on_postgres() {
    let Some(db) = common::postgres("lost_commit_claim").await else {
        return;
    };
    let (store, clock, cut) = open_cut(&db, LEARN_WITHIN).await;
    let approval = create(&store, &clock, "deploy", json!({})).await;
    let due = sql_time(&db, clock.now() - chrono::Duration::minutes(1));
    let planned = format!(
        "INSERT INTO jobs (approval_id, kind, payload, due_at, created_at) \
         VALUES ('{}', 'slack_update', '{{}}', {due}, {due})",
        approval.id
    );
    assert_eq!(raw_execute(&db, &planned).await, Ok(1));
    let due = store
        .due_jobs(clock.now(), 10, signoff::jobs::Due::All)
        .await
        .unwrap();
    assert_eq!(due.jobs.len(), 1);
    cut.arm(Cut::NeverSent);
    let claimed = tokio::time::timeout(
        Duration::from_secs(30),
        store.claim_due(due, clock.now(), signoff::jobs::LEASE, |jobs| {
            (jobs, Vec::new())
        }),
    )
    .await
    .expect("answered within 30 s")
    .expect("run again");
    assert_eq!(cut.cuts(), 1, "the claim's COMMIT was cut");
    assert_eq!(claimed.len(), 1, "claimed when run again");
    assert_eq!(claimed[0].attempts, 1);
}

/// A batch whose `COMMIT` never reached the server, and whose outcome could not be
/// learned in time (no new connection answered): its old server process, idle in its
/// transaction and holding the audit head's lock (the server has not noticed the
/// partition), is ended before the writer's next transaction, which would otherwise
/// wait for it until the server noticed, hours later.
#[tokio::test]
async fn a_session_an_unlearned_commit_left_open_is_ended_before_the_next_write_on_postgres() {
    let Some(db) = common::postgres("lost_commit_abandoned").await else {
        return;
    };
    let within = Duration::from_millis(300);
    let (store, clock, cut) = open_cut(&db, within).await;
    cut.arm(Cut::NeverSent);
    cut.hold(true);
    let unlearned = spend(&store, &clock, "read_file", json!({})).await;
    assert!(
        matches!(&unlearned, Err(StoreError::Database(_))),
        "failed as may have been made: {unlearned:?}"
    );
    cut.hold(false);

    let next = spend(&store, &clock, "list_files", json!({}));
    let next = tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .expect("the next write does not wait for the abandoned session")
        .unwrap();
    assert!(next.spent);
    assert_eq!(cut.cuts(), 1);
    let spends = "SELECT COUNT(*) FROM pending_approvals WHERE tool_name = 'read_file'";
    assert_eq!(
        count(&db, spends).await,
        0,
        "rolled back when its session ended"
    );
    assert_eq!(count(&db, EXECUTED).await, 1, "the next one's");
    assert_one_audit_chain(&store).await;
}
