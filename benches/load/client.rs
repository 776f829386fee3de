//! The HTTP client side: one keep-alive connection pool per client task, and the API
//! calls the phases make.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

/// Unknown to the policy, so `medium`: pending.
pub const PENDING_TOOL: &str = "delete_customer_records";
/// Matched by the bench policy's `low` rule, so auto-approved.
pub const AUTO_TOOL: &str = "bench_auto_refund";
pub const LONG_POLL_WAIT_SECS: u32 = 30;

/// One client connection to the API: cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct Api {
    /// The backend's name, for the raw output lines.
    pub label: &'static str,
    pub http: reqwest::Client,
    pub base: Arc<str>,
    pub token: Arc<str>,
}

#[derive(Deserialize)]
struct CreatedAnswer {
    approval_id: String,
    status: String,
}

#[derive(Deserialize)]
struct StatusAnswer {
    status: String,
}

/// A request's time limit: a long-poll's wait and then some.
const HTTP_TIMEOUT: Duration = Duration::from_secs(LONG_POLL_WAIT_SECS as u64 + 30);

impl Api {
    pub fn new(label: &'static str, base: String, token: String) -> Api {
        Api {
            label,
            http: crate::server::http_client(HTTP_TIMEOUT),
            base: base.into(),
            token: token.into(),
        }
    }

    /// The same server and token over a new connection pool (one per client task).
    pub fn reconnect(&self) -> Api {
        Api {
            http: crate::server::http_client(HTTP_TIMEOUT),
            ..self.clone()
        }
    }

    /// `POST /v1/approvals`; the new approval's id. Anything but a new approval in
    /// `expect` status is an error.
    pub async fn create(&self, tool: &str, parameters: Value, expect: &str) -> Result<String> {
        let answer = self
            .http
            .post(format!("{}/v1/approvals", self.base))
            .bearer_auth(&*self.token)
            .json(&json!({ "tool_name": tool, "parameters": parameters }))
            .send()
            .await?;
        let status = answer.status();
        ensure!(status == StatusCode::CREATED, "create answered {status}");
        let created: CreatedAnswer = answer.json().await?;
        ensure!(
            created.status == expect,
            "create answered status {:?}, expected {expect:?}",
            created.status
        );
        Ok(created.approval_id)
    }

    /// `GET /v1/approvals/{id}`, body read and dropped.
    pub async fn get(&self, id: &str) -> Result<()> {
        let answer = self
            .http
            .get(format!("{}/v1/approvals/{id}", self.base))
            .bearer_auth(&*self.token)
            .send()
            .await?;
        let status = answer.status();
        answer.bytes().await?;
        ensure!(status == StatusCode::OK, "get answered {status}");
        Ok(())
    }

    /// `GET /v1/approvals/{id}`: the approval's status.
    pub async fn status(&self, id: &str) -> Result<String> {
        let answer = self
            .http
            .get(format!("{}/v1/approvals/{id}", self.base))
            .bearer_auth(&*self.token)
            .send()
            .await?;
        let status = answer.status();
        ensure!(status == StatusCode::OK, "get answered {status}");
        Ok(answer.json::<StatusAnswer>().await?.status)
    }

    /// `GET /v1/approvals/{id}?wait=N`: the status it answers with.
    pub async fn wait(&self, id: &str, seconds: u32) -> Result<String> {
        let answer = self
            .http
            .get(format!("{}/v1/approvals/{id}?wait={seconds}", self.base))
            .bearer_auth(&*self.token)
            .send()
            .await?;
        let status = answer.status();
        ensure!(status == StatusCode::OK, "long-poll answered {status}");
        Ok(answer.json::<StatusAnswer>().await?.status)
    }

    /// `POST /v1/approvals/{id}/execute`: the HTTP status and the approval status.
    pub async fn execute(&self, id: &str, parameters: Value) -> Result<(StatusCode, String)> {
        let answer = self
            .http
            .post(format!("{}/v1/approvals/{id}/execute", self.base))
            .bearer_auth(&*self.token)
            .json(&json!({ "parameters": parameters }))
            .send()
            .await?;
        let status = answer.status();
        Ok((status, answer.json::<StatusAnswer>().await?.status))
    }

    pub async fn pending_count(&self) -> Result<i64> {
        #[derive(Deserialize)]
        struct Health {
            pending_count: i64,
        }
        let answer = self
            .http
            .get(format!("{}/health/approvals", self.base))
            .send()
            .await?;
        Ok(answer.json::<Health>().await?.pending_count)
    }
}

/// Unique parameters for request `i` of the batch `batch` (so nothing is deduplicated).
pub fn parameters(batch: u64, i: usize) -> Value {
    json!({ "customer_ids": [format!("c-{batch:x}-{i}")], "reason": "load test", "seq": i })
}
