//! The three `/mcp` tools. Each takes the fields of its API endpoint, runs the same
//! operation (`http::api::approvals`), and answers with one line for the model, then
//! the API's JSON (as structured content, and as text for clients that read only
//! `content`); a refusal is an `isError` result carrying the API's error JSON the same
//! way, so the model reads why and nothing changed. An unknown tool is a protocol
//! error (JSON-RPC -32602), as MCP asks.

use std::sync::Arc;
use std::time::Duration;

use axum::http::request::Parts;
use rmcp::ErrorData;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{InexactArguments, texts};
use crate::approval::ApprovalId;
use crate::http::AppState;
use crate::http::api::ApiError;
use crate::http::api::approvals::{self, CreateRequest, ExecuteRequest};
use crate::http::api::extract::Caller;
use crate::wire::{ApprovalView, CreatedView, ExecutedView};

/// Longest `wait` of `check_approval_status`, below common client time-outs.
pub const MAX_WAIT_SECS: f64 = 50.0;

pub const REQUEST: &str = "request_approval";
pub const CHECK: &str = "check_approval_status";
pub const EXECUTE: &str = "execute_approved";

/// The `/mcp` server: the app's state, and the tool list (built once).
#[derive(Clone)]
pub struct Tools {
    state: AppState,
    list: Arc<Vec<Tool>>,
}

impl Tools {
    pub fn new(state: AppState) -> Self {
        Self {
            state,
            list: Arc::new(list()),
        }
    }

    async fn call(
        &self,
        caller: Caller,
        tool: Named,
        args: Value,
    ) -> Result<CallToolResult, ApiError> {
        let state = &self.state;
        match tool {
            Named::Request => {
                let body: CreateRequest = arguments(args)?;
                let created = approvals::ask(state, &caller, body).await?;
                let text = texts::created(&created, state.slack.is_some());
                Ok(answer(text, &CreatedView::new(&created)))
            }
            Named::Check => {
                let args: CheckArgs = arguments(args)?;
                let wait = match args.wait {
                    None => Duration::ZERO,
                    Some(secs) if secs.is_finite() && secs >= 0.0 => {
                        Duration::from_secs_f64(secs.min(MAX_WAIT_SECS))
                    }
                    Some(secs) => {
                        return Err(ApiError::Unprocessable(format!(
                            "wait must be a number of seconds from 0 to {MAX_WAIT_SECS}, not {secs}"
                        )));
                    }
                };
                let (approval, link) = approvals::read(state, &caller, args.id()?, wait).await?;
                let text = texts::state(&approval, link.as_deref(), state.slack.is_some());
                Ok(answer(text, &ApprovalView::new(&approval, link.as_deref())))
            }
            Named::Execute => {
                let args: ExecuteArgs = arguments(args)?;
                let id = args.id()?;
                let execute = ExecuteRequest {
                    parameters: args.parameters,
                    tool_name: args.tool_name,
                    server: args.server,
                };
                let approval = approvals::run(state, caller, id, execute).await?;
                Ok(answer(
                    texts::executed(&approval),
                    &ExecutedView::new(&approval),
                ))
            }
        }
    }
}

/// The three tools, by name.
#[derive(Debug, Clone, Copy)]
enum Named {
    Request,
    Check,
    Execute,
}

impl Named {
    fn of(name: &str) -> Option<Self> {
        match name {
            REQUEST => Some(Named::Request),
            CHECK => Some(Named::Check),
            EXECUTE => Some(Named::Execute),
            _ => None,
        }
    }
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("signoff", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Ask a person before an irreversible action: request_approval, then \
                 check_approval_status until it is decided, then execute_approved with the \
                 approved parameters, and run the action only if that succeeds.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.list.to_vec()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.list.iter().find(|tool| tool.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        // An unknown tool is a protocol error (MCP's tools/call: "Unknown tool"), not a
        // refusal of the call.
        let Some(tool) = Named::of(&request.name) else {
            return Err(ErrorData::invalid_params(
                format!(
                    "Unknown tool: {:?}; this server has {REQUEST}, {CHECK} and {EXECUTE}",
                    request.name
                ),
                None,
            ));
        };
        // Both put there by `mcp::guard`, which refused the request without a caller.
        let parts = context.extensions.get::<Parts>();
        let caller = parts
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("request without a caller", None))?;
        if let Some(InexactArguments(detail)) = parts.and_then(|parts| parts.extensions.get()) {
            // Arguments that cannot be kept as sent: refused as the API refuses such a
            // body (422), before anything reads what rmcp made of them.
            return Ok(refusal(&ApiError::Unprocessable(detail.clone())).into());
        }
        let args = Value::Object(request.arguments.unwrap_or_default());
        let result = match self.call(caller, tool, args).await {
            Ok(result) => result,
            Err(error) => refusal(&error),
        };
        Ok(result.into())
    }
}

/// A success: the one line for the model, then the API's JSON, as structured content
/// and as a text block (MCP: a tool that returns structured content SHOULD return it as
/// text too, for clients that read only `content`).
fn answer(line: String, view: &impl serde::Serialize) -> CallToolResult {
    line_first(CallToolResult::structured(json!(view)), line)
}

/// A refusal: `isError`, "Refused: " and the detail, then the API's error JSON (as
/// [`answer`] gives its JSON).
fn refusal(error: &ApiError) -> CallToolResult {
    line_first(
        CallToolResult::structured_error(error.body()),
        format!("Refused: {error}"),
    )
}

/// `result` (whose content is its structured content as JSON text) with `line` before.
fn line_first(mut result: CallToolResult, line: String) -> CallToolResult {
    result.content.insert(0, ContentBlock::text(line));
    result
}

/// The tool's arguments in its shape; a wrong shape is refused like the API's 422.
fn arguments<T: DeserializeOwned>(args: Value) -> Result<T, ApiError> {
    serde_json::from_value(args).map_err(|error| ApiError::Unprocessable(error.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckArgs {
    approval_id: String,
    wait: Option<f64>,
}

/// `execute_approved`'s arguments: the execute request's fields beside the id, spelt
/// out (a flattened struct would take unknown fields, and a misspelt `tool_name`
/// would silently skip the tool check).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteArgs {
    approval_id: String,
    parameters: Value,
    tool_name: Option<String>,
    server: Option<String>,
}

impl CheckArgs {
    fn id(&self) -> Result<ApprovalId, ApiError> {
        crate::http::api::error::parse_id(&self.approval_id)
    }
}

impl ExecuteArgs {
    fn id(&self) -> Result<ApprovalId, ApiError> {
        crate::http::api::error::parse_id(&self.approval_id)
    }
}

/// The tools as `tools/list` shows them.
fn list() -> Vec<Tool> {
    let request = Tool::new(
        REQUEST,
        "Ask people in Slack to approve a call before it runs. Give the tool's name and the \
         exact parameters it will run with. The answer says whether it is approved at once, \
         denied, or waiting; nothing may run until execute_approved succeeds.",
        schema(json!({
            "tool_name": {"type": "string", "description": "The tool the call is for (1-128 of A-Z a-z 0-9 _ - . /)."},
            "parameters": {"type": "object", "description": "The exact arguments the call will run with."},
            "server": {"type": "string", "description": "The MCP server the tool belongs to."},
            "annotations": {"type": "object", "description": "The tool's MCP annotations, as listed."},
            "summary": {"type": "string", "description": "One line for the approvers: what and why."},
            "context": {"type": "string", "description": "Background for the approvers."},
            "requested_by": {"type": "string"},
            "risk_tier": {"type": "string", "enum": ["low", "medium", "high"], "description": "Raise the policy's tier (never lower it)."},
            "expires_in": {"type": "integer", "minimum": 1, "description": "Seconds; can shorten the policy's expiry."},
            "idempotency_key": {"type": "string"},
            "callback_url": {"type": "string"},
            "execute_if_approved": {"type": "boolean", "default": false, "description": "Spend an approved answer (approved by policy, or the approved request this one repeats) in the same write: the answer is executed, with the parameters to run now and spent_by_this_request. Anything else is answered as without it."}
        }), &["tool_name", "parameters"]),
    )
    .with_annotations(ToolAnnotations::new().read_only(false).destructive(false).idempotent(true).open_world(false));
    let check = Tool::new(
        CHECK,
        "Read an approval's state; with wait (up to 50 seconds) answer as soon as it is decided.",
        schema(json!({
            "approval_id": {"type": "string"},
            "wait": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECS, "description": "Seconds to wait for a decision."}
        }), &["approval_id"]),
    )
    .with_annotations(ToolAnnotations::new().read_only(true).open_world(false));
    let execute = Tool::new(
        EXECUTE,
        "Spend an approved approval on the call about to run: succeeds once, only with the \
         approved parameters (and tool). Run the call only when this succeeds, with the \
         parameters it returns.",
        schema(json!({
            "approval_id": {"type": "string"},
            "parameters": {"type": "object", "description": "Exactly the approved parameters."},
            "tool_name": {"type": "string", "description": "The tool about to run; must be the approved one."},
            "server": {"type": "string", "description": "The MCP server about to run it; must be the one the approval was asked for."}
        }), &["approval_id", "parameters"]),
    )
    .with_annotations(ToolAnnotations::new().read_only(false).destructive(false).idempotent(false).open_world(false));
    vec![request, check, execute]
}

fn schema(properties: Value, required: &[&str]) -> JsonObject {
    let mut schema = JsonObject::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), properties);
    schema.insert("required".into(), json!(required));
    schema
}
