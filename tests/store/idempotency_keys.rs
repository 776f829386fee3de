//! One idempotency key used by two replicas at once (PostgreSQL): a repeat that binds
//! the key to the approval it joins, and a new request that opens an approval with it,
//! take turns, so the key names one call everywhere and a client's retry gets the
//! answer its first try got.
//!
//! The other replica's batch is played on a connection of its own, its transaction
//! held open after it has locked the key (as a writer's insert does, through
//! `signoff_open_requests`) and written what it writes.

use serde_json::json;
use signoff::approval::{Approval, ApprovalId};
use signoff::clock::Clock;
use signoff::store::{Store, StoreError};
use sqlx::{Connection, PgConnection};

use crate::common::TestDb;
use crate::helpers::*;

const KEY: &str = "k-shared";

/// A replica binds `KEY` to an open approval (a repeat of it came with the key) and
/// has not committed yet: a new request for another call under `KEY` waits, and is
/// then refused as reusing it, naming that approval; nothing is opened with the key.
#[tokio::test]
async fn a_new_request_waits_for_a_replica_binding_its_key_and_is_refused_as_reusing_it() {
    let Some(db) = crate::common::postgres("key_bound_by_replica").await else {
        return;
    };
    let (store, clock) = open(&db).await;
    let joined = create(&store, &clock, "wipe_disk", json!({"disk": "sda"})).await;
    let mut replica = locking_key(&db).await;
    let bind = format!(
        "INSERT INTO joined_idempotency_keys (token_name, idempotency_key, approval_id) \
         VALUES ('{TOKEN}', '{KEY}', '{}')",
        joined.id
    );
    run(&mut replica, &bind).await;

    let creating = spawn_create(&store, &clock, json!({"disk": "sdb"}));
    wait_for_the_key_lock(&db, &creating).await;
    run(&mut replica, "COMMIT").await;

    let refused = creating.await.unwrap();
    assert!(
        matches!(refused, Err(StoreError::IdempotencyKeyReused(id)) if id == joined.id),
        "refused as a reused key naming the joined approval: {refused:?}"
    );
    let opened = format!("SELECT COUNT(*) FROM pending_approvals WHERE idempotency_key = '{KEY}'");
    assert_eq!(
        raw_count(&db, &opened).await,
        0,
        "nothing opened with the key"
    );
    // The retry gets the same answer.
    let retry = create_keyed(&store, clock.now(), json!({"disk": "sdb"})).await;
    assert!(matches!(retry, Err(StoreError::IdempotencyKeyReused(id)) if id == joined.id));
}

/// A replica opens an approval with `KEY` and has not committed yet: a repeat of
/// another open approval under `KEY` waits, and is then refused as reusing it, naming
/// the replica's approval (before, it joined, bound nothing that stuck, and its
/// client's retry was refused); the key stays unbound to the joined approval.
#[tokio::test]
async fn a_repeat_waits_for_a_replica_opening_with_its_key_and_is_refused_as_reusing_it() {
    let Some(db) = crate::common::postgres("key_opened_by_replica").await else {
        return;
    };
    let (store, clock) = open(&db).await;
    let open_one = create(&store, &clock, "wipe_disk", json!({"disk": "sda"})).await;
    let mut replica = locking_key(&db).await;
    let theirs = ApprovalId::new();
    // The replica's new row: another call (other parameters) with the key.
    for sql in [
        format!(
            "CREATE TEMP TABLE theirs AS SELECT * FROM pending_approvals WHERE id = '{}'",
            open_one.id
        ),
        format!(
            "UPDATE theirs SET id = '{theirs}', idempotency_key = '{KEY}', \
             parameters = '{{\"disk\": \"sdc\"}}', params_sha256 = 'another call'"
        ),
        "INSERT INTO pending_approvals SELECT * FROM theirs".to_owned(),
    ] {
        run(&mut replica, &sql).await;
    }

    let repeating = spawn_create(&store, &clock, json!({"disk": "sda"}));
    wait_for_the_key_lock(&db, &repeating).await;
    run(&mut replica, "COMMIT").await;

    let refused = repeating.await.unwrap();
    assert!(
        matches!(refused, Err(StoreError::IdempotencyKeyReused(id)) if id == theirs),
        "refused as a reused key naming the replica's approval: {refused:?}"
    );
    let bound = "SELECT COUNT(*) FROM joined_idempotency_keys";
    assert_eq!(
        raw_count(&db, bound).await,
        0,
        "the key is bound to nothing"
    );
    let retry = create_keyed(&store, clock.now(), json!({"disk": "sda"})).await;
    assert!(matches!(retry, Err(StoreError::IdempotencyKeyReused(id)) if id == theirs));
}

/// A replica's writer connection with a transaction open that holds `KEY`'s lock, taken
/// as every writer's insert takes it.
async fn locking_key(db: &TestDb) -> PgConnection {
    let mut replica = PgConnection::connect(&db.as_signoff_writer().url)
        .await
        .unwrap();
    run(&mut replica, "BEGIN").await;
    let lock = format!(
        "SELECT COUNT(*) FROM signoff_open_requests(ARRAY[]::text[], ARRAY[]::text[], \
         ARRAY[]::text[], now(), ARRAY['{TOKEN}'], ARRAY['{KEY}'])"
    );
    run(&mut replica, &lock).await;
    replica
}

async fn run(connection: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(connection)
        .await
        .unwrap();
}

type Creating = tokio::task::JoinHandle<Result<Approval, StoreError>>;

/// A request for `wipe_disk` with `parameters` under `KEY`, sent on a task of its own.
fn spawn_create(store: &Store, clock: &impl Clock, parameters: serde_json::Value) -> Creating {
    let (store, now) = (store.clone(), clock.now());
    tokio::spawn(async move { create_keyed(&store, now, parameters).await })
}

async fn create_keyed(
    store: &Store,
    now: chrono::DateTime<chrono::Utc>,
    parameters: serde_json::Value,
) -> Result<Approval, StoreError> {
    let mut request = new_request("wipe_disk", parameters);
    request.idempotency_key = Some(KEY.into());
    let created = store.create(request, classify("wipe_disk"), now).await?;
    Ok(created.approval)
}

/// Until the store's writer waits for the key's lock, which the other replica holds
/// (a create that does not wait answers first, and fails the test).
async fn wait_for_the_key_lock(db: &TestDb, creating: &Creating) {
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity \
                   WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND wait_event = 'advisory'";
    let started = std::time::Instant::now();
    while raw_count(db, waiting).await != 1 {
        assert!(
            !creating.is_finished(),
            "the create waits for the key's lock"
        );
        assert!(
            started.elapsed().as_secs() < 10,
            "the create waits for the key's lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
