//! Break-glass decisions (`signoff decide`) in the store, from a second process's
//! store on the same database: one decision wins against a click, and the first
//! process hears it.

use std::time::Duration;

use serde_json::json;
use signoff::approval::{Decider, Decision, Event, Rejection, Status};
use signoff::clock::Clock;
use signoff::store::{Store, StoreError};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    break_glass_and_a_click_at_once_make_one_decision,
    another_processs_decision_is_heard,
    writes_after_another_processs_decision_link_onto_its_audit_events,
);

fn glass(decision: Decision) -> Event {
    Event::BreakGlass {
        by: "ops-carol".into(),
        decision,
        reason: Some("Slack is down".into()),
    }
}

async fn break_glass_and_a_click_at_once_make_one_decision(db: TestDb) {
    let (store, clock) = open(&db).await;
    let other = Store::connect(&db.url).await.unwrap();
    for round in 0..5 {
        let a = create(&store, &clock, "deploy", json!({ "round": round })).await;
        let click = Event::Vote {
            by: Decider::approver("U0ALICE"),
            decision: Decision::Deny,
            reason: None,
            parameters_shown: None,
        };
        let (glassed, clicked) = tokio::join!(
            other.apply(a.id, glass(Decision::Approve), clock.now()),
            store.apply(a.id, click, clock.now()),
        );
        let winners = [glassed.is_ok(), clicked.is_ok()];
        assert_eq!(winners.iter().filter(|won| **won).count(), 1, "{winners:?}");
        let loser = if glassed.is_ok() { clicked } else { glassed };
        assert!(matches!(
            loser,
            Err(StoreError::Rejected {
                rejection: Rejection::AlreadyDecided(_),
                ..
            })
        ));
        let now = store.get(a.id).await.unwrap().unwrap();
        if winners[0] {
            assert_eq!(now.status, Status::Approved);
            assert_eq!(now.decided_by.as_deref(), Some("ops-carol"));
            assert!(now.is_break_glass(), "decided_via is stored and read back");
        } else {
            assert_eq!(now.status, Status::Denied);
            assert!(!now.is_break_glass());
        }
    }
    let decisions = raw_count(
        &db,
        "SELECT COUNT(*) FROM audit_events WHERE kind IN ('approved', 'denied')",
    )
    .await;
    assert_eq!(decisions, 5);
}

async fn another_processs_decision_is_heard(db: TestDb) {
    let (store, clock) = open(&db).await;
    store.hearing().await;
    let a = create(&store, &clock, "deploy", json!({})).await;
    let mut changes = store.subscribe();
    let other = Store::connect(&db.url).await.unwrap();
    other
        .apply(a.id, glass(Decision::Deny), clock.now())
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let change = changes.recv().await.unwrap();
            if change.id == a.id {
                return change;
            }
        }
    })
    .await
    .expect("heard within 5 s");
    assert_eq!(heard.status, Status::Denied);
    assert!(!heard.is_local(), "made by another process");
}

/// A writer remembers the audit head it last committed (SQLite) or reads it locked
/// (PostgreSQL); a decision from another process moves the head under it, and its next
/// writes still link after that process's events: one unbroken chain.
async fn writes_after_another_processs_decision_link_onto_its_audit_events(db: TestDb) {
    let (store, clock) = open(&db).await;
    let other = Store::connect(&db.url).await.unwrap();
    for round in 0..3 {
        let a = create(&store, &clock, "deploy", json!({ "round": round })).await;
        other
            .apply(a.id, glass(Decision::Deny), clock.now())
            .await
            .unwrap();
        let b = create(
            &store,
            &clock,
            "deploy",
            json!({ "round": round, "again": 1 }),
        )
        .await;
        assert_eq!(
            store.get(b.id).await.unwrap().unwrap().status,
            Status::Pending
        );
    }
    assert_one_audit_chain(&store).await;
    let events = store.audit_page(0, 100_000).await.unwrap();
    let decided: std::collections::HashSet<_> = events
        .iter()
        .filter(|e| e.actor.as_deref() == Some("ops-carol"))
        .map(|e| e.approval_id)
        .collect();
    assert_eq!(
        decided.len(),
        3,
        "each break-glass decision is in the chain"
    );
}
