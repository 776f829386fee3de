//! `POST /v1/policy/tools`: which of an MCP server's tools the policy denies whatever
//! their arguments, so that the MCP proxy can leave them out of `tools/list` and a
//! model does not try them. Every call is still classified when it is made.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use crate::approval::names;
use crate::http::AppState;

/// Tools per request at most (an MCP server lists far fewer).
const MAX_TOOLS: usize = 10_000;

#[derive(Debug, Deserialize)]
pub struct ToolsRequest {
    server: Option<String>,
    tools: Vec<ListedTool>,
}

/// One tool as `tools/list` gave it. Its `annotations` may come along; they are hints
/// from the server and play no part in an outright denial, so they are not read.
#[derive(Debug, Deserialize)]
pub struct ListedTool {
    name: String,
}

#[derive(Debug, Serialize)]
pub struct ToolsAnswer {
    pub denied: Vec<DeniedTool>,
}

#[derive(Debug, Serialize)]
pub struct DeniedTool {
    pub name: String,
    pub reason: String,
}

pub async fn tools(
    State(state): State<AppState>,
    _caller: Caller,
    JsonBody(body): JsonBody<ToolsRequest>,
) -> Result<Json<ToolsAnswer>, ApiError> {
    if let Some(Err(why)) = body.server.as_deref().map(names::check_server_name) {
        return Err(ApiError::Unprocessable(why));
    }
    if body.tools.len() > MAX_TOOLS {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_TOOLS} tools per request"
        )));
    }
    let denied = body
        .tools
        .into_iter()
        .filter_map(|tool| {
            // A name the API would refuse is denied too: calling it cannot succeed.
            let reason = match names::check_tool_name(&tool.name) {
                Err(why) => why,
                Ok(()) => {
                    state
                        .policy
                        .denies_every_call(&tool.name, body.server.as_deref())?
                        .reason
                }
            };
            Some(DeniedTool {
                name: tool.name,
                reason,
            })
        })
        .collect();
    Ok(Json(ToolsAnswer { denied }))
}
