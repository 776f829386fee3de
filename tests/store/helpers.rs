//! Helpers for the store suite: a store on a test database with a manual clock, and
//! short ways to create and decide approvals.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use signoff::approval::{Approval, ApprovalId, Decision, Event, NewApproval};
use signoff::clock::{Clock, ManualClock};
use signoff::policy::{Classification, Policy};
use signoff::store::{Store, StoreError};

pub use crate::common::{TestDb, allow, raw_count, raw_execute, raw_scalar, refuse, sql_time};

pub const TOKEN: &str = "agent";
pub const REQUESTER: &str = "U0AGENT";

pub async fn open(db: &TestDb) -> (Store, ManualClock) {
    let store = Store::connect(&db.url).await.expect("store opens");
    (store, clock())
}

/// The suite's manual clock, at its starting time.
pub fn clock() -> ManualClock {
    ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .unwrap(),
    )
}

/// A store that also plans Slack deliveries (as with a bot token), so every new
/// request gets a post job due at once; with the same manual clock as [`open`].
pub async fn open_posting(db: &TestDb) -> (Store, ManualClock) {
    let deliveries = signoff::jobs::Deliveries { slack: true };
    let store = Store::connect_with(&db.url, deliveries)
        .await
        .expect("store opens");
    (store, clock())
}

/// Classification by a policy that routes everything to one channel and needs one approval.
pub fn classify(tool: &str) -> Classification {
    let policy = Policy::from_toml_str(
        "[defaults]\nchannel = \"C0APPROVALS\"\nexpires_after = \"1h\"\nmax_pending = 0\n",
    )
    .unwrap();
    policy.classify(tool, &serde_json::json!({}), None)
}

pub fn new_request(tool: &str, parameters: Value) -> NewApproval {
    {
        let mut request = NewApproval::new(tool, parameters);
        request.requested_by = Some(REQUESTER.into());
        request.token_name = Some(TOKEN.into());
        request
    }
}

pub async fn create(store: &Store, clock: &ManualClock, tool: &str, parameters: Value) -> Approval {
    let created = store
        .create(new_request(tool, parameters), classify(tool), clock.now())
        .await
        .unwrap();
    assert!(created.created);
    created.approval
}

/// Creates a request that needs `approvals` approving votes.
pub async fn create_needing(
    store: &Store,
    clock: &ManualClock,
    tool: &str,
    parameters: Value,
    approvals: u32,
) -> Approval {
    let mut class = classify(tool);
    class.route.required_approvals = approvals;
    store
        .create(new_request(tool, parameters), class, clock.now())
        .await
        .unwrap()
        .approval
}

pub async fn create_expiring(
    store: &Store,
    clock: &ManualClock,
    name: &str,
    secs: u64,
) -> Approval {
    let mut request = new_request("job", serde_json::json!({ "name": name }));
    request.expires_in = Some(std::time::Duration::from_secs(secs));
    store
        .create(request, classify("job"), clock.now())
        .await
        .unwrap()
        .approval
}

pub async fn vote(
    store: &Store,
    clock: &ManualClock,
    id: ApprovalId,
    user: &str,
    decision: Decision,
) -> Result<Approval, StoreError> {
    let event = Event::Vote {
        by: signoff::approval::Decider::approver(user),
        decision,
        reason: None,
        parameters_shown: None,
    };
    store.apply(id, event, clock.now()).await
}

pub async fn execute(
    store: &Store,
    clock: &ManualClock,
    id: ApprovalId,
    parameters: Value,
    caller: &str,
) -> Result<Approval, StoreError> {
    let event = Event::Execute {
        parameters,
        tool_name: None,
        server: None,
        caller: Some(caller.into()),
    };
    store.apply(id, event, clock.now()).await
}

/// Asserts that the jobs free to claim at `at` are exactly `expected`, in any order
/// (claiming them).
pub async fn assert_claimable(store: &Store, at: DateTime<Utc>, expected: &[i64], why: &str) {
    let mut claimed: Vec<i64> = store
        .claim_jobs(at, 1000, signoff::jobs::LEASE)
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    claimed.sort_unstable();
    let mut expected = expected.to_vec();
    expected.sort_unstable();
    assert_eq!(claimed, expected, "{why}");
}

/// The whole audit log verifies as one chain that ends at the head `store` reads.
pub async fn assert_one_audit_chain(store: &Store) {
    let events = store.audit_page(0, 100_000).await.unwrap();
    let mut verifier = signoff::audit::Verifier::default();
    for event in &events {
        verifier.check(event).unwrap();
    }
    let (seq, hash) = store.audit_head().await.unwrap();
    assert_eq!(verifier.finish(seq, &hash), Ok(events.len() as i64));
}

pub async fn count_audit(store: &Store, kind: &str) -> usize {
    store
        .audit_page(0, 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind)
        .count()
}
