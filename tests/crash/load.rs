//! The load the crash test runs against a server: creators, a clicker and an
//! executor, each recording what the server acknowledged.

use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::*;
use common::fake_slack::FakeSlack;
use common::slack::{click_on_message, signed};

/// One create the driver sends (and may send again with the same idempotency key).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) key: String,
    pub(crate) tool: &'static str,
    pub(crate) parameters: Value,
    pub(crate) summary: String,
    /// Whether the clicker approves it (the others stay pending to the end).
    pub(crate) click: bool,
}

/// What one round saw, for the summary line.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub(crate) up_ms: u64,
    /// Calls the fake Slack had recorded just after the kill.
    pub(crate) slack_calls_at_kill: usize,
    pub(crate) creates: usize,
    pub(crate) repeats: usize,
    pub(crate) clicks: usize,
    pub(crate) seen_approved: usize,
    pub(crate) executes: usize,
    pub(crate) refused: usize,
    pub(crate) unexpected: usize,
}

/// Everything the driver was told by the servers, across rounds.
#[derive(Default)]
pub(crate) struct Record {
    pub(crate) requests: Vec<Request>,
    /// Key → the approval id its first acknowledged create answered.
    pub(crate) acked: HashMap<String, String>,
    /// Approval id → index in `requests`.
    pub(crate) by_id: HashMap<String, usize>,
    /// Request indexes the creators send again before making new ones.
    pub(crate) repeat: VecDeque<usize>,
    /// Approval id → (round, how) it was first reported approved.
    pub(crate) approved: HashMap<String, (usize, &'static str)>,
    /// Approval id → the rounds in which an execute answered 200.
    pub(crate) executed: HashMap<String, Vec<usize>>,
    pub(crate) new_pending_this_round: usize,
    pub(crate) stats: Vec<Stats>,
    pub(crate) problems: Vec<String>,
}

impl Record {
    pub(crate) fn new_request(&mut self, rng: &mut StdRng) -> usize {
        let n = self.requests.len();
        let key = format!("k{n:04}");
        let pending = self.new_pending_this_round < PENDING_PER_ROUND && rng.random_bool(0.15);
        let request = if pending {
            self.new_pending_this_round += 1;
            Request {
                tool: PENDING_TOOL,
                parameters: json!({"key_id": format!("key-{n}"), "n": n}),
                summary: format!("Rotate the key of crash request {key}"),
                click: rng.random_bool(0.5),
                key,
            }
        } else {
            Request {
                tool: AUTO_TOOL,
                parameters: json!({"service": format!("svc-{n}"), "n": n}),
                summary: format!("Deploy for crash request {key}"),
                click: false,
                key,
            }
        };
        self.requests.push(request);
        n
    }

    pub(crate) fn stats(&mut self, round: usize) -> &mut Stats {
        if self.stats.len() <= round {
            self.stats.resize(round + 1, Stats::default());
        }
        &mut self.stats[round]
    }

    /// A create answered 200 or 201 with `answer`.
    pub(crate) fn acknowledge(&mut self, index: usize, code: u16, answer: &Value, round: usize) {
        let request = self.requests[index].clone();
        let Some(id) = answer["approval_id"].as_str().map(str::to_owned) else {
            self.problems.push(format!(
                "round {round}: create {} answered {code} without an approval_id: {answer}",
                request.key
            ));
            return;
        };
        let status = answer["status"].as_str().unwrap_or("?").to_owned();
        match self.acked.get(&request.key).cloned() {
            Some(first) => {
                self.stats(round).repeats += 1;
                if first != id || code != 200 {
                    self.problems.push(format!(
                        "round {round}: idempotency key {} answered {code} with approval {id}, \
                         but it was first acknowledged as {first}",
                        request.key
                    ));
                }
            }
            None => {
                self.stats(round).creates += 1;
                self.acked.insert(request.key.clone(), id.clone());
                if let Some(other) = self.by_id.insert(id.clone(), index) {
                    self.problems.push(format!(
                        "round {round}: approval {id} was answered for two keys, {} and {}",
                        self.requests[other].key, request.key
                    ));
                }
            }
        }
        let expected: &[&str] = match (request.tool, code) {
            (PENDING_TOOL, 201) => &["pending"],
            (PENDING_TOOL, _) => &["pending", "approved", "executed"],
            (_, 201) => &["approved"],
            _ => &["approved", "executed"],
        };
        if !expected.contains(&status.as_str()) {
            self.problems.push(format!(
                "round {round}: create {} ({}) answered {code} with status {status:?}, \
                 expected one of {expected:?}",
                request.key, request.tool
            ));
        }
        if status == "approved" || status == "executed" {
            self.saw_approved(&id, round, "create answer");
        }
    }

    pub(crate) fn saw_approved(&mut self, id: &str, round: usize, how: &'static str) {
        if !self.approved.contains_key(id) {
            self.approved.insert(id.to_owned(), (round, how));
            self.stats(round).seen_approved += 1;
        }
    }

    /// An answer no request should get (a server error, a refused signature …).
    pub(crate) fn unexpected(&mut self, round: usize, what: String) {
        self.stats(round).unexpected += 1;
        self.problems
            .push(format!("round {round}: unexpected answer: {what}"));
    }

    /// (key, approval id) of every acknowledged request for `tool`, by key.
    pub(crate) fn keys_of(&self, tool: &str) -> Vec<(String, String)> {
        let mut keys: Vec<(String, String)> = self
            .requests
            .iter()
            .filter(|r| r.tool == tool)
            .filter_map(|r| Some((r.key.clone(), self.acked.get(&r.key)?.clone())))
            .collect();
        keys.sort();
        keys
    }
}

/// What the driver tasks share with the test.
pub(crate) struct Driver {
    pub(crate) record: Mutex<Record>,
    pub(crate) http: reqwest::Client,
    pub(crate) token: String,
    /// Where clicks come from: the messages signoff posted.
    pub(crate) slack: FakeSlack,
}

impl Driver {
    pub(crate) fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn create(
        &self,
        address: &str,
        request: &Request,
    ) -> reqwest::Result<(u16, Value)> {
        let answer = self
            .http
            .post(format!("{address}/v1/approvals"))
            .bearer_auth(&self.token)
            .json(&json!({
                "tool_name": request.tool,
                "parameters": request.parameters,
                "summary": request.summary,
                "idempotency_key": request.key,
            }))
            .send()
            .await?;
        let code = answer.status().as_u16();
        Ok((code, answer.json().await?))
    }

    pub(crate) async fn get(&self, address: &str, id: &str) -> reqwest::Result<(u16, Value)> {
        let answer = self
            .http
            .get(format!("{address}/v1/approvals/{id}"))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let code = answer.status().as_u16();
        Ok((code, answer.json().await?))
    }

    /// Clicks Approve on the approval's channel message; `None` while it has none
    /// (nobody can click what is not posted yet).
    pub(crate) async fn click(&self, address: &str, id: &str) -> reqwest::Result<Option<u16>> {
        let Some(message) = self.slack.posted_for(id) else {
            return Ok(None);
        };
        let (body, timestamp, signature) =
            signed(SECRET, &click_on_message(id, APPROVER, "approve", &message));
        let answer = self
            .http
            .post(format!("{address}/slack/interactions"))
            .header("x-slack-request-timestamp", timestamp)
            .header("x-slack-signature", signature)
            .body(body)
            .send()
            .await?;
        let code = answer.status().as_u16();
        // Read the body so that the ack is complete before it counts.
        answer.bytes().await?;
        Ok(Some(code))
    }

    pub(crate) async fn execute(
        &self,
        address: &str,
        id: &str,
        parameters: &Value,
    ) -> reqwest::Result<(u16, Value)> {
        let answer = self
            .http
            .post(format!("{address}/v1/approvals/{id}/execute"))
            .bearer_auth(&self.token)
            .json(&json!({ "parameters": parameters }))
            .send()
            .await?;
        let code = answer.status().as_u16();
        Ok((code, answer.json().await?))
    }
}

/// One driver task's view: the server of its round, a stop flag, its own RNG.
pub(crate) struct Lane {
    pub(crate) driver: Arc<Driver>,
    pub(crate) address: String,
    pub(crate) round: usize,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) rng: StdRng,
}

impl Lane {
    pub(crate) fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    pub(crate) async fn pause(&mut self, ms: std::ops::Range<u64>) {
        tokio::time::sleep(Duration::from_millis(self.rng.random_range(ms))).await;
    }
}

/// Sends creates until stopped: first the keys queued for repeating, then new ones.
pub(crate) async fn creator(mut lane: Lane) {
    let (driver, address, round) = (lane.driver.clone(), lane.address.clone(), lane.round);
    while lane.running() {
        let (index, request) = {
            let mut record = driver.record();
            let index = match record.repeat.pop_front() {
                Some(index) => index,
                None => record.new_request(&mut lane.rng),
            };
            (index, record.requests[index].clone())
        };
        match driver.create(&address, &request).await {
            Ok((code @ (200 | 201), answer)) => {
                driver.record().acknowledge(index, code, &answer, round);
            }
            Ok((code, answer)) => driver.record().unexpected(
                round,
                format!("create {} answered {code}: {answer}", request.key),
            ),
            // The server was killed: unacknowledged; sent again next round.
            Err(_) => {}
        }
        lane.pause(5..25).await;
    }
}

/// Clicks Approve on created `rotate_key` requests picked for clicking; after each ack,
/// reads the approval back and records it if the server says it is approved.
pub(crate) async fn clicker(mut lane: Lane) {
    let (driver, address, round) = (lane.driver.clone(), lane.address.clone(), lane.round);
    while lane.running() {
        let target = {
            let record = driver.record();
            let mut candidates: Vec<&String> = record
                .acked
                .iter()
                .filter(|(key, id)| {
                    let request = &record.requests[record.by_id[*id]];
                    request.click && request.key == **key && !record.approved.contains_key(*id)
                })
                .map(|(_, id)| id)
                .collect();
            // Now and then a click on one already approved: a refusal, acked with 200.
            if candidates.is_empty() || lane.rng.random_bool(0.1) {
                candidates = record
                    .approved
                    .keys()
                    .filter(|id| record.requests[record.by_id[*id]].tool == PENDING_TOOL)
                    .collect();
            }
            candidates.sort();
            (!candidates.is_empty())
                .then(|| candidates[lane.rng.random_range(0..candidates.len())].clone())
        };
        let Some(id) = target else {
            lane.pause(10..20).await;
            continue;
        };
        match driver.click(&address, &id).await {
            Ok(None) => {}
            Ok(Some(200)) => {
                driver.record().stats(round).clicks += 1;
                if let Ok((200, approval)) = driver.get(&address, &id).await
                    && matches!(approval["status"].as_str(), Some("approved" | "executed"))
                {
                    driver
                        .record()
                        .saw_approved(&id, round, "read after a click");
                }
            }
            Ok(Some(code)) => driver
                .record()
                .unexpected(round, format!("click on {id} answered {code}")),
            Err(_) => {}
        }
        lane.pause(10..40).await;
    }
}

/// Executes approved approvals with their parameters; mostly ones not executed yet,
/// sometimes again (which must be refused).
pub(crate) async fn executor(mut lane: Lane) {
    let (driver, address, round) = (lane.driver.clone(), lane.address.clone(), lane.round);
    while lane.running() {
        let target = {
            let record = driver.record();
            let again = lane.rng.random_bool(0.15);
            let mut candidates: Vec<&String> = record
                .approved
                .keys()
                .filter(|id| record.executed.contains_key(*id) == again)
                .collect();
            candidates.sort();
            (!candidates.is_empty()).then(|| {
                let id = candidates[lane.rng.random_range(0..candidates.len())].clone();
                let parameters = record.requests[record.by_id[&id]].parameters.clone();
                (id, parameters)
            })
        };
        let Some((id, parameters)) = target else {
            lane.pause(10..20).await;
            continue;
        };
        match driver.execute(&address, &id, &parameters).await {
            Ok((200, answer)) => {
                let mut record = driver.record();
                record.executed.entry(id.clone()).or_default().push(round);
                record.stats(round).executes += 1;
                if answer["status"] != "executed" {
                    record.problems.push(format!(
                        "round {round}: execute of {id} answered 200 with status {}",
                        answer["status"]
                    ));
                }
            }
            Ok((409, _)) => driver.record().stats(round).refused += 1,
            Ok((code, answer)) => driver
                .record()
                .unexpected(round, format!("execute of {id} answered {code}: {answer}")),
            Err(_) => {}
        }
        lane.pause(10..40).await;
    }
}
