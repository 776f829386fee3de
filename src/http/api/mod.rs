//! The HTTP API for MCP servers: ask for approval, read or long-poll the decision,
//! follow the decisions on one's approvals as a stream, execute once, cancel. JSON in
//! and out, bearer-token authenticated (DESIGN.md).

pub(super) mod approvals;
pub mod doc;
pub mod error;
pub(super) mod events;
pub(super) mod extract;
pub(super) mod per_token;
pub(super) mod policy;

use axum::Router;
use axum::routing::{get, post};

use crate::http::AppState;

pub use error::ApiError;
pub use per_token::PerToken;

/// The `/v1` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/approvals", post(approvals::create))
        .route("/v1/approvals/events", get(events::events))
        .route("/v1/approvals/{id}", get(approvals::show))
        .route("/v1/approvals/{id}/execute", post(approvals::execute))
        .route("/v1/approvals/{id}/cancel", post(approvals::cancel))
        .route("/v1/policy/tools", post(policy::tools))
}
