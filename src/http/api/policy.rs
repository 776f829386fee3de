//! `POST /v1/policy/tools`: which of an MCP server's tools the policy denies whatever
//! their arguments, so that the MCP proxy can leave them out of `tools/list` and a
//! model does not try them. Every call is still classified when it is made.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::doc;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use crate::approval::names;
use crate::http::AppState;

/// Tools per request at most (an MCP server lists far fewer).
const MAX_TOOLS: usize = 10_000;

/// An MCP server's tools, as its `tools/list` gave them.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"server": "github", "tools": [{"name": "delete_repo"}, {"name": "get_issue"}]}))]
// A field it does not know is refused, not ignored: with `servr` for `server`, rules
// naming servers would not match, and a tool they deny would be listed as allowed.
#[serde(deny_unknown_fields)]
pub struct ToolsRequest {
    /// The MCP server's name, as the approvals' `server`.
    server: Option<String>,
    #[schema(max_items = 10_000)]
    tools: Vec<ListedTool>,
}

/// One tool as `tools/list` gave it. Its `annotations` may come along; they are hints
/// from the server and play no part in an outright denial, so they are not read.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ListedTool {
    name: String,
}

/// The tools whose every call the policy denies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"denied": [{
    "name": "delete_repo",
    "reason": "rules[2] (tools delete_*) sets tier high, which the policy denies"
}]}))]
pub struct ToolsAnswer {
    pub denied: Vec<DeniedTool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeniedTool {
    pub name: String,
    /// Why: the policy's denial, or why the name itself is refused.
    pub reason: String,
}

#[utoipa::path(
    post,
    path = "/v1/policy/tools",
    operation_id = "deniedTools",
    tag = "policy",
    summary = "Which of a server's tools the policy denies outright",
    description = "The MCP proxy leaves these out of `tools/list`. Every call is still \
        classified when it is made.",
    request_body = ToolsRequest,
    responses(
        (status = 200, description = "The denied tools", body = ToolsAnswer),
        (status = 400, response = doc::BadRequest),
        (status = 401, response = doc::Unauthorized),
        (status = 408, response = doc::RequestTimeout),
        (status = 413, response = doc::PayloadTooLarge),
        (status = 422, response = doc::Unprocessable),
        (status = 503, response = doc::Unavailable),
    ),
    security(("bearer" = []))
)]
pub async fn tools(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<ToolsRequest>,
) -> Result<Json<ToolsAnswer>, ApiError> {
    // Checked again once the body is in: a token revoked while it arrived learns nothing.
    caller.verify_again(&state).await?;
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

#[cfg(test)]
mod tests {
    use utoipa::OpenApi;

    use crate::policy::Policy;

    /// The documented example answer is one the endpoint gives, word for word.
    #[test]
    fn the_documented_reason_is_the_policys_own_wording() {
        let policy = Policy::from_toml_str(
            "[tiers]\nhigh = \"deny\"\n\n[[rules]]\ntools = [\"search_*\"]\ntier = \"low\"\n\n\
             [[rules]]\ntools = [\"send_*\"]\ntier = \"medium\"\n\n\
             [[rules]]\ntools = [\"delete_*\"]\ntier = \"high\"\n",
        )
        .unwrap();
        let reason = policy
            .denies_every_call("delete_repo", Some("github"))
            .unwrap()
            .reason;
        let document = serde_json::to_string(&crate::http::openapi::ApiDoc::openapi()).unwrap();
        let quoted = serde_json::to_string(&reason).unwrap();
        assert!(
            document.contains(&quoted),
            "the OpenAPI example does not show {quoted}"
        );
    }
}
