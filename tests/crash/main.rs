//! Crash safety: a real `signoff serve` under a load of requests, clicks and executes is
//! killed with SIGKILL at random moments, several times, and restarted on the same
//! database. Afterwards: no acknowledged approval is lost, an idempotency key always
//! names the same approval, no decision is lost, no Slack message is posted twice (and
//! every posted message is still known to signoff: it loses its buttons once its
//! approval is decided), no approval is executed twice, and the audit chain verifies.
//!
//! The random choices (kill moments, tools, which requests get clicked) come from one
//! seed, printed at the start; `SIGNOFF_CRASH_SEED=N` replays them (the interleaving
//! with the server still varies from run to run). `SIGNOFF_CRASH_ROUNDS=N` kills N
//! servers instead of 4.

mod checks;
#[path = "../common/mod.rs"]
mod common;
mod load;

use checks::*;
use load::*;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fake_slack::{Failure, FakeSlack};
use common::server::{Server, eventually, signoff};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

pub(crate) const SECRET: &str = "crash-test-secret";
pub(crate) const CHANNEL: &str = "C0APPROVALS";
pub(crate) const APPROVER: &str = "U0APPROVER";
/// Needs a click: medium, posted to the channel.
pub(crate) const PENDING_TOOL: &str = "rotate_key";
/// Low: approved by policy at once, never posted.
pub(crate) const AUTO_TOOL: &str = "auto_deploy";

pub(crate) const POLICY: &str = r#"
[defaults]
channel = "C0APPROVALS"
expires_after = "1h"

[[rules]]
tools = ["auto_*"]
tier = "low"
"#;

/// Servers killed mid-load before the last one is started (`SIGNOFF_CRASH_ROUNDS`
/// overrides it, for a longer soak).
pub(crate) const ROUNDS: usize = 4;
/// How long each round's server runs under load before it is killed (ms).
pub(crate) const UP_MS: std::ops::Range<u64> = 300..1500;
/// New `rotate_key` requests per round at most: each is posted, and posts are paced to
/// one per second per channel, so this bounds how long the last server needs to settle.
pub(crate) const PENDING_PER_ROUND: usize = 4;
/// Acknowledged keys sent again at the start of each later round (besides every key
/// whose create was in flight at the kill).
pub(crate) const REPEATS_PER_ROUND: usize = 8;
/// How long a server's claim on a delivery lasts here (the servers run with
/// `SIGNOFF_DELIVERY_LEASE`): a job claimed by a killed server runs again after it.
pub(crate) const LEASE: &str = "2s";
/// The longest wait for deliveries to catch up (a lease, then posts paced to one per
/// second per channel); waits end as soon as what they wait for holds.
pub(crate) const DELIVERY_LIMIT: Duration = Duration::from_secs(30);

crate::on_both_backends!(crash_and_restart);

/// `signoff serve` on `db_url`, started off the async thread.
pub(crate) async fn start(db_url: &str, env: &[(String, String)]) -> Server {
    let (db_url, env) = (db_url.to_owned(), env.to_vec());
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Server::start(&db_url, &env)
    })
    .await
    .expect("server start")
}

/// A fake Slack on its own thread and runtime: it keeps answering while the test's
/// thread is blocked (a server's start calls auth.test before it listens).
pub(crate) fn fake_slack() -> FakeSlack {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            sender.send(FakeSlack::start().await).unwrap();
            std::future::pending::<()>().await
        });
    });
    receiver.recv().expect("fake Slack started")
}

/// Runs `futures` eight at a time; answers in completion order.
pub(crate) async fn in_parallel<T: Send + 'static>(
    futures: Vec<impl Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let mut answers = Vec::with_capacity(futures.len());
    let mut queue = futures.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < 8 {
            let Some(future) = queue.next() else { break };
            running.spawn(future);
        }
        match running.join_next().await {
            Some(answer) => answers.push(answer.expect("task")),
            None => return answers,
        }
    }
}

/// A migrated database with an API token, a fake Slack, and the environment that
/// points `signoff serve` at both.
struct Fixture {
    slack: FakeSlack,
    env: Vec<(String, String)>,
    driver: Arc<Driver>,
    /// Holds the policy file.
    _dir: tempfile::TempDir,
}

fn fixture(db_url: &str) -> Fixture {
    let slack = fake_slack();
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    signoff(&["migrate"], db_url);
    let token = signoff(&["token", "create", "agent"], db_url);
    let env = [
        ("SLACK_BOT_TOKEN", "xoxb-crash"),
        ("SLACK_SIGNING_SECRET", SECRET),
        ("SLACK_API_URL", slack.url.as_str()),
        ("SIGNOFF_POLICY", policy.to_str().unwrap()),
        ("SIGNOFF_DELIVERY_LEASE", LEASE),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let driver = Arc::new(Driver {
        record: Mutex::default(),
        http: crate::common::server::http_builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        token,
        slack: slack.clone(),
    });
    Fixture {
        slack,
        env,
        driver,
        _dir: dir,
    }
}

async fn crash_and_restart(db: common::TestDb) {
    let seed = std::env::var("SIGNOFF_CRASH_SEED")
        .ok()
        .map(|s| s.parse::<u64>().expect("SIGNOFF_CRASH_SEED is a number"))
        .unwrap_or_else(rand::random);
    let rounds = std::env::var("SIGNOFF_CRASH_ROUNDS")
        .ok()
        .map_or(ROUNDS, |n| {
            n.parse().expect("SIGNOFF_CRASH_ROUNDS is a number")
        });
    println!(
        "crash test on {}: seed {seed} (replay with SIGNOFF_CRASH_SEED={seed}), {rounds} kills",
        db.backend
    );
    let started = Instant::now();
    let Fixture {
        slack,
        env,
        driver,
        _dir,
    } = fixture(&db.url);

    let kills = load_and_kill(&driver, &slack, &db.url, &env, rounds, seed).await;

    // The last server: nobody kills it until the checks are done.
    let mut server = start(&db.url, &env).await;
    let address = server.address.clone();
    send_every_key_again(&driver, &address, rounds).await;
    let status = check_approvals(&driver, &address).await;
    let pending = driver.record().keys_of(PENDING_TOOL);
    let settled_after = check_posts(&driver, &slack, &status, &kills).await;
    let left_pending = decide_the_rest(&driver, &slack, &address, &status, &kills).await;
    check_executed_stay_executed(&driver, &address).await;
    server.kill();
    let verified = signoff(&["audit", "verify"], &db.url);

    let record = driver.record();
    println!(
        "{}: {} approvals ({} {PENDING_TOOL}, {left_pending} of them left pending to the end), \
         {} seen approved, {} executed; posts settled {:.1} s after the last start; \
         total {:.1} s; audit: {verified}",
        db.backend,
        record.by_id.len(),
        pending.len(),
        record.approved.len(),
        record.executed.len(),
        settled_after.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert!(
        record.problems.is_empty(),
        "crash test on {} (seed {seed}, replay with SIGNOFF_CRASH_SEED={seed}) found {} problems:\n{}",
        db.backend,
        record.problems.len(),
        record.problems.join("\n")
    );
    assert!(
        verified.contains("audit chain ok"),
        "audit verify: {verified}"
    );
}

/// Runs `rounds` servers, each under load for a random while and then SIGKILLed with
/// the driver still sending. Answers how many calls the fake Slack had after each kill.
async fn load_and_kill(
    driver: &Arc<Driver>,
    slack: &FakeSlack,
    db_url: &str,
    env: &[(String, String)],
    rounds: usize,
    seed: u64,
) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = Vec::with_capacity(rounds);
    for round in 0..rounds {
        {
            let mut record = driver.record();
            record.stats(round);
            record.new_pending_this_round = 0;
            // Every create that was in flight at the last kill, and some acknowledged ones.
            let (mut acked, mut repeat): (Vec<usize>, Vec<usize>) = (0..record.requests.len())
                .partition(|i| record.acked.contains_key(&record.requests[*i].key));
            for _ in 0..REPEATS_PER_ROUND.min(acked.len()) {
                repeat.push(acked.swap_remove(rng.random_range(0..acked.len())));
            }
            record.repeat = repeat.into();
        }
        let mut server = start(db_url, env).await;
        let stop = Arc::new(AtomicBool::new(false));
        let lane = |number: u64| Lane {
            driver: driver.clone(),
            address: server.address.clone(),
            round,
            stop: stop.clone(),
            rng: StdRng::seed_from_u64(seed ^ (((round as u64) << 8) | number)),
        };
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(creator(lane(0)));
        tasks.spawn(creator(lane(1)));
        tasks.spawn(clicker(lane(2)));
        tasks.spawn(executor(lane(3)));

        let up_ms = rng.random_range(UP_MS);
        tokio::time::sleep(Duration::from_millis(up_ms)).await;
        // Mid-load: the driver is still sending.
        server.kill();
        kills.push(slack.calls().len());
        stop.store(true, Ordering::Relaxed);
        while let Some(done) = tasks.join_next().await {
            done.expect("driver task");
        }
        let mut record = driver.record();
        record.stats(round).up_ms = up_ms;
        record.stats(round).slack_calls_at_kill = kills[round];
        println!("round {round}: {:?}", record.stats[round]);
    }
    kills
}

/// Sends every key again: acknowledged ones must answer 200 with the same approval;
/// the ones never acknowledged get their approval now, so that every approval in the
/// database is one the test knows.
async fn send_every_key_again(driver: &Arc<Driver>, address: &str, round: usize) {
    let requests = driver.record().requests.clone();
    let answers = in_parallel(
        requests
            .iter()
            .enumerate()
            .map(|(index, request)| {
                let (driver, address, request) =
                    (driver.clone(), address.to_owned(), request.clone());
                async move { (index, driver.create(&address, &request).await) }
            })
            .collect(),
    )
    .await;
    let mut record = driver.record();
    for (index, answer) in answers {
        let key = &requests[index].key;
        match answer {
            Ok((code @ (200 | 201), answer)) => record.acknowledge(index, code, &answer, round),
            Ok((code, answer)) => record.problems.push(format!(
                "final: create {key} sent again answered {code}: {answer}"
            )),
            Err(error) => panic!("final: create {key} sent again failed: {error}"),
        }
    }
}

/// Regression test for a double post the scenario above found: the server is killed
/// while it waits on the Slack call that follows chat.postMessage (here a hanging
/// chat.getPermalink). The post is recorded before any further call, so when the
/// job's lease runs out the next server finds it and does not post again.
#[tokio::test]
async fn a_post_in_flight_at_a_crash_is_not_posted_again() {
    killed_while_posting("chat.getPermalink", Failure::Hang).await;
}

/// The other side of that window, which the scenario above also hit: Slack took the
/// message, and the server died before its answer came back (here it never comes), so
/// nothing was recorded. After the lease the next server finds the message in the
/// channel's history by its metadata and records it instead of posting again.
#[tokio::test]
async fn a_post_slack_took_as_the_server_died_is_not_posted_again() {
    killed_while_posting("chat.postMessage", Failure::PostThenHang).await;
}

/// Kills the server while `method` hangs during an approval's first post, restarts
/// it, and checks that the approval is never posted again and that its decision
/// updates the one message Slack has.
async fn killed_while_posting(method: &str, failure: Failure) {
    let db = common::sqlite();
    let Fixture {
        slack,
        env,
        driver,
        _dir,
    } = fixture(&db.url);
    let mut server = start(&db.url, &env).await;
    slack.fail_next(method, failure);
    let request = Request {
        key: "k0000".into(),
        tool: PENDING_TOOL,
        parameters: json!({"key_id": "key-0"}),
        summary: "Rotate the key of crash request k0000".into(),
        click: false,
    };
    let (code, answer) = driver.create(&server.address, &request).await.unwrap();
    assert_eq!(code, 201);
    let id = answer["approval_id"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || !slack
            .calls_to(method)
            .is_empty())
        .await,
        "posted, and waiting on {method}"
    );
    server.kill();
    let started = Instant::now();
    let server = start(&db.url, &env).await;
    let posts = || slack.calls_to("chat.postMessage").len();
    // A post job the killed server held is due again once its claim ran out: wait that
    // out (there is nothing to watch for), so that it is due before the update the
    // click below plans, and claimed no later.
    tokio::time::sleep(humantime::parse_duration(LEASE).unwrap()).await;
    // The message Slack has is the approval's: the decision updates it.
    let posted_ts = slack.post_ts(0);
    assert_eq!(driver.click(&server.address, &id).await.unwrap(), Some(200));
    let updated = eventually(Duration::from_secs(10), || {
        slack
            .calls_to("chat.update")
            .iter()
            .any(|update| update.body["ts"] == posted_ts.as_str())
    })
    .await;
    assert!(
        updated,
        "the decision updates the message posted before the crash"
    );
    assert_eq!(
        posts(),
        1,
        "posted again {:.0} s after the restart",
        started.elapsed().as_secs_f64()
    );
}
