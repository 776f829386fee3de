//! What must hold after the crashes: approvals and decisions kept, one post per
//! approval, messages kept up to date, nothing executed twice.

use common::server::eventually;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::load::*;
use crate::*;
use common::fake_slack::FakeSlack;

/// One call the fake Slack recorded that shows an approval: a top-level post to the
/// channel or an update; with the `ts` the fake gave it or that it targets.
#[derive(Debug)]
pub(crate) struct Rendering {
    /// Its number among all the fake's calls, from 1.
    pub(crate) call: usize,
    pub(crate) post: bool,
    pub(crate) ts: String,
    pub(crate) buttons: bool,
    /// The approval id in the buttons, when it has them.
    pub(crate) button_id: Option<String>,
}

/// The key of the crash request a message shows (its summary names it).
pub(crate) fn key_in(message: &Value) -> Option<String> {
    let text = message["blocks"].to_string();
    let marker = "crash request k";
    let start = text.find(marker)? + marker.len() - 1;
    let key: String = text[start..].chars().take(5).collect();
    (key.len() == 5 && key[1..].chars().all(|c| c.is_ascii_digit())).then_some(key)
}

pub(crate) fn has_buttons(message: &Value) -> bool {
    message["blocks"]
        .as_array()
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "actions"))
}

/// The approval id carried by a message's buttons.
pub(crate) fn button_id(message: &Value) -> Option<String> {
    let text = message["blocks"].to_string();
    let start = text.find("approval:")? + "approval:".len();
    text.get(start..start + 36).map(str::to_owned)
}

/// Renderings per request key, in call order; and messages nobody can attribute.
pub(crate) fn renderings(slack: &FakeSlack) -> (BTreeMap<String, Vec<Rendering>>, Vec<String>) {
    let mut by_key: BTreeMap<String, Vec<Rendering>> = BTreeMap::new();
    let mut strays = Vec::new();
    for (index, call) in slack.calls().into_iter().enumerate() {
        let post = call.method == "chat.postMessage";
        if !(post || call.method == "chat.update") {
            continue;
        }
        if post && (call.body["channel"] != CHANNEL || !call.body["thread_ts"].is_null()) {
            strays.push(format!("unexpected post: {}", call.body));
            continue;
        }
        // The fake answers its call number n with this ts.
        let ts = if post {
            format!("1700000000.{:06}", index + 1)
        } else {
            call.body["ts"].as_str().unwrap_or_default().to_owned()
        };
        match key_in(&call.body) {
            Some(key) => by_key.entry(key).or_default().push(Rendering {
                call: index + 1,
                post,
                ts,
                buttons: has_buttons(&call.body),
                button_id: button_id(&call.body),
            }),
            None => strays.push(format!(
                "{} without a crash request key: {}",
                call.method, call.body
            )),
        }
    }
    (by_key, strays)
}

/// No approval lost, no decision lost, no execution lost, none executed twice.
/// Answers every approval's status now.
pub(crate) async fn check_approvals(
    driver: &Arc<Driver>,
    address: &str,
) -> HashMap<String, String> {
    let ids: Vec<String> = driver.record().by_id.keys().cloned().collect();
    let answers = in_parallel(
        ids.into_iter()
            .map(|id| {
                let (driver, address) = (driver.clone(), address.to_owned());
                async move {
                    let answer = driver.get(&address, &id).await;
                    (id, answer)
                }
            })
            .collect(),
    )
    .await;
    let mut status = HashMap::new();
    let mut record = driver.record();
    for (id, answer) in answers {
        let request = record.requests[record.by_id[&id]].clone();
        match answer {
            Ok((200, approval)) => {
                if approval["tool_name"] != request.tool
                    || approval["parameters"] != request.parameters
                {
                    record.problems.push(format!(
                        "approval {id} (key {}) reads back as {} {}, created as {} {}",
                        request.key,
                        approval["tool_name"],
                        approval["parameters"],
                        request.tool,
                        request.parameters
                    ));
                }
                status.insert(id, approval["status"].as_str().unwrap_or("?").to_owned());
            }
            Ok((code, answer)) => record.problems.push(format!(
                "approval lost: {id} (key {}) was acknowledged, GET answers {code}: {answer}",
                request.key
            )),
            Err(error) => panic!("GET {id}: {error}"),
        }
    }
    let now = |id: &str| status.get(id).map_or("missing", String::as_str).to_owned();
    let mut problems = Vec::new();
    for (id, (round, how)) in &record.approved {
        let now = now(id);
        if now != "approved" && now != "executed" {
            problems.push(format!(
                "decision lost: {id} (key {}) was approved in round {round} ({how}), now {now}",
                record.requests[record.by_id[id]].key
            ));
        }
    }
    for (id, rounds) in &record.executed {
        if rounds.len() > 1 {
            problems.push(format!(
                "executed twice: {id} answered execute 200 in rounds {rounds:?}"
            ));
        }
        let now = now(id);
        if now != "executed" {
            problems.push(format!(
                "execution lost: {id} answered execute 200 in round {}, now {now}",
                rounds[0]
            ));
        }
    }
    record.problems.extend(problems);
    status
}

/// Waits until every request that waits for people has its message in the channel,
/// then checks that each has exactly one and that nothing else was posted. Answers how
/// long that took.
pub(crate) async fn check_posts(
    driver: &Arc<Driver>,
    slack: &FakeSlack,
    status: &HashMap<String, String>,
    kills: &[usize],
) -> Duration {
    let (pending, auto) = {
        let record = driver.record();
        (record.keys_of(PENDING_TOOL), record.keys_of(AUTO_TOOL))
    };
    let started = Instant::now();
    let all_posted = || {
        let (by_key, _) = renderings(slack);
        pending
            .iter()
            .all(|(key, _)| by_key.get(key).is_some_and(|r| r.iter().any(|r| r.post)))
    };
    let posted_in_time = eventually(DELIVERY_LIMIT, all_posted).await;
    let settled_after = started.elapsed();
    let (by_key, strays) = renderings(slack);
    let mut record = driver.record();
    record.problems.extend(strays);
    for (key, id) in &pending {
        let posts: Vec<&Rendering> = by_key
            .get(key)
            .map(|r| r.iter().filter(|r| r.post).collect())
            .unwrap_or_default();
        let now = status.get(id).map_or("missing", String::as_str);
        if posts.len() > 1 || (posts.is_empty() && !posted_in_time) {
            record.problems.push(format!(
                "approval {id} (key {key}, now {now}) has {} posts to {CHANNEL} (calls {:?} of \
                 the fake Slack; the servers were killed after its calls {kills:?}), expected one",
                posts.len(),
                posts.iter().map(|p| p.call).collect::<Vec<_>>()
            ));
        }
        for post in posts
            .iter()
            .filter(|p| p.button_id.as_ref().is_some_and(|b| b != id))
        {
            record.problems.push(format!(
                "the post of key {key} (call {}) has buttons for {:?}, the approval is {id}",
                post.call, post.button_id
            ));
        }
    }
    for (key, _) in &auto {
        if let Some(shown) = by_key.get(key) {
            record.problems.push(format!(
                "auto-approved request {key} was shown in Slack (calls {:?})",
                shown.iter().map(|r| r.call).collect::<Vec<_>>()
            ));
        }
    }
    settled_after
}

/// Approves everything still pending; then every message must lose its buttons. A
/// message Slack took but signoff never recorded (a kill between Slack's answer and
/// the record) must be found in the channel's history once its job's lease runs out,
/// and updated, not posted again. Answers how many were still pending.
pub(crate) async fn decide_the_rest(
    driver: &Arc<Driver>,
    slack: &FakeSlack,
    address: &str,
    status: &HashMap<String, String>,
    kills: &[usize],
) -> usize {
    let pending = driver.record().keys_of(PENDING_TOOL);
    let posts = |by_key: &BTreeMap<String, Vec<Rendering>>, key: &str| {
        by_key
            .get(key)
            .map_or(0, |r| r.iter().filter(|r| r.post).count())
    };
    let (before, _) = renderings(slack);
    let still_pending: Vec<&String> = pending
        .iter()
        .filter(|(_, id)| status.get(id).is_some_and(|s| s == "pending"))
        .map(|(_, id)| id)
        .collect();
    for id in &still_pending {
        assert_eq!(
            driver.click(address, id).await.unwrap(),
            Some(200),
            "final click on {id} (its message is posted by now)"
        );
        let (code, approval) = driver.get(address, id).await.unwrap();
        assert_eq!(
            (code, approval["status"].as_str()),
            (200, Some("approved")),
            "{id} after the final click: {approval}"
        );
    }
    let with_buttons = || -> Vec<&(String, String)> {
        let (by_key, _) = renderings(slack);
        pending
            .iter()
            .filter(|(key, _)| {
                by_key
                    .get(key)
                    .and_then(|r| r.last())
                    .is_none_or(|last| last.buttons)
            })
            .collect()
    };
    let up_to_date = eventually(DELIVERY_LIMIT, || with_buttons().is_empty()).await;
    let (by_key, _) = renderings(slack);
    let mut record = driver.record();
    if !up_to_date {
        for (key, id) in with_buttons() {
            record.problems.push(format!(
                "the message of decided approval {id} (key {key}) still has its buttons; \
                 renderings: {:?}",
                by_key.get(key)
            ));
        }
    }
    for (key, renderings) in &by_key {
        let posted: HashSet<&str> = renderings
            .iter()
            .filter(|r| r.post)
            .map(|r| r.ts.as_str())
            .collect();
        for update in renderings.iter().filter(|r| !r.post) {
            if !posted.contains(update.ts.as_str()) {
                record.problems.push(format!(
                    "chat.update (call {}) for key {key} targets ts {}, not its post {posted:?}",
                    update.call, update.ts
                ));
            }
        }
        if posts(&by_key, key) > posts(&before, key).max(1) {
            record.problems.push(format!(
                "key {key} was posted again after the final decisions (the servers were \
                 killed after calls {kills:?}): {renderings:?}"
            ));
        }
    }
    still_pending.len()
}

/// An approval executed once is never executed again, after every restart.
pub(crate) async fn check_executed_stay_executed(driver: &Arc<Driver>, address: &str) {
    let executed: Vec<(String, Value)> = {
        let record = driver.record();
        record
            .executed
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    record.requests[record.by_id[id]].parameters.clone(),
                )
            })
            .collect()
    };
    for (id, parameters) in executed {
        let (code, answer) = driver.execute(address, &id, &parameters).await.unwrap();
        if code != 409 {
            driver.record().problems.push(format!(
                "{id} was executed already; executing it again answered {code}: {answer}"
            ));
        }
    }
}
