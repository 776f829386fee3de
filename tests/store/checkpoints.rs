//! Signed audit checkpoints as the store appends them: every 1,000 events and at least
//! once a minute while events arrive (the clock moved by hand), in the same numbering
//! on both backends, each verifying with the public key alone.

use std::time::Duration;

use serde_json::json;
use signoff::audit::checkpoint::{Checkpoint, LogVerifier};
use signoff::clock::Clock;
use signoff::signing::Signer;
use signoff::store::Store;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    two_writers_number_and_time_checkpoints_as_one,
    checkpoints_come_every_thousand_events_and_each_minute_while_events_arrive,
    the_tail_of_a_burst_is_signed_a_minute_later_by_the_scheduler,
);

async fn signing(db: &TestDb, signer: &Signer) -> Store {
    Store::connect_signing(&db.url, Default::default(), Some(signer.clone()))
        .await
        .expect("store opens")
}

/// Checks the whole log against the checkpoints; answers how many events the newest
/// covers.
async fn verify(store: &Store, signer: &Signer) -> i64 {
    let checkpoints = store.audit_checkpoints().await.unwrap();
    let mut verifier = LogVerifier::new(checkpoints, &[signer.public_key()]).unwrap();
    for entry in store.audit_page(0, 100_000).await.unwrap() {
        verifier.check(&entry).unwrap();
    }
    let (seq, hash) = store.audit_head().await.unwrap();
    verifier.finish(Some((seq, &hash))).unwrap().covered
}

async fn newest(store: &Store) -> Checkpoint {
    store.audit_checkpoints().await.unwrap().pop().unwrap()
}

async fn checkpoints_come_every_thousand_events_and_each_minute_while_events_arrive(db: TestDb) {
    let signer = Signer::generate();
    let (_, clock) = open(&db).await;
    let store = signing(&db, &signer).await;
    assert!(store.audit_checkpoints().await.unwrap().is_empty());

    create(&store, &clock, "x", json!({"i": 0})).await;
    assert_eq!(newest(&store).await.seq, 1, "the first event is signed");
    clock.advance(Duration::from_secs(30));
    create(&store, &clock, "x", json!({"i": 1})).await;
    assert_eq!(newest(&store).await.n, 1, "not yet: half a minute");
    clock.advance(Duration::from_secs(30));
    create(&store, &clock, "x", json!({"i": 2})).await;
    let minute = newest(&store).await;
    assert_eq!((minute.n, minute.seq), (2, 3), "a minute after the first");
    assert_eq!(minute.at, clock.now());

    // 1,200 events within the minute: one checkpoint once 1,000 are past the last.
    let mut creating = tokio::task::JoinSet::new();
    for i in 0..1200 {
        let (store, now) = (store.clone(), clock.now());
        creating.spawn(async move {
            let request = new_request("burst", json!({"i": i}));
            store.create(request, classify("burst"), now).await.unwrap();
        });
    }
    while let Some(done) = creating.join_next().await {
        done.unwrap();
    }
    let all = store.audit_checkpoints().await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(
        (1003..1003 + 128).contains(&all[2].seq),
        "at the batch that reached 1,000 more: {}",
        all[2].seq
    );
    assert_eq!(verify(&store, &signer).await, all[2].seq);
}

async fn the_tail_of_a_burst_is_signed_a_minute_later_by_the_scheduler(db: TestDb) {
    let signer = Signer::generate();
    let (_, clock) = open(&db).await;
    let store = signing(&db, &signer).await;
    for i in 0..3 {
        create(&store, &clock, "x", json!({"i": i})).await;
    }
    assert_eq!(newest(&store).await.seq, 1);
    let scheduler = signoff::scheduler::Scheduler::new(store.clone());
    scheduler.run_once(clock.now()).await.unwrap();
    assert_eq!(newest(&store).await.seq, 1, "within the minute");
    clock.advance(Duration::from_secs(60));
    scheduler.run_once(clock.now()).await.unwrap();
    let tail = newest(&store).await;
    assert_eq!((tail.n, tail.seq), (2, 3), "the tail, a minute on");
    clock.advance(Duration::from_secs(600));
    scheduler.run_once(clock.now()).await.unwrap();
    assert_eq!(newest(&store).await.n, 2, "nothing new to sign");
    assert_eq!(verify(&store, &signer).await, 3);

    // A store without the key signs nothing.
    let unsigned = Store::connect(&db.url).await.unwrap();
    create(&unsigned, &clock, "x", json!({"i": 9})).await;
    unsigned
        .checkpoint(clock.now() + chrono::TimeDelta::hours(1))
        .await
        .unwrap();
    assert_eq!(newest(&store).await.n, 2);
}

/// Two writers on one database (replicas) take turns: each remembers the newest
/// checkpoint it saw, which the other's make stale, yet checkpoints stay numbered one
/// after the other, come each minute, and verify.
async fn two_writers_number_and_time_checkpoints_as_one(db: TestDb) {
    let signer = Signer::generate();
    let (_, clock) = open(&db).await;
    let one = signing(&db, &signer).await;
    let two = signing(&db, &signer).await;
    for minute in 0..6 {
        let store = if minute % 2 == 0 { &one } else { &two };
        create(store, &clock, "x", json!({"minute": minute, "i": 0})).await;
        clock.advance(Duration::from_secs(30));
        create(store, &clock, "x", json!({"minute": minute, "i": 1})).await;
        clock.advance(Duration::from_secs(31));
    }
    create(&two, &clock, "x", json!({"last": true})).await;
    let all = one.audit_checkpoints().await.unwrap();
    let numbers: Vec<i64> = all.iter().map(|c| c.n).collect();
    assert_eq!(
        numbers,
        (1..=7).collect::<Vec<_>>(),
        "one a minute: {all:?}"
    );
    assert_eq!(verify(&two, &signer).await, 13);
}
