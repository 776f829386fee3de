//! `tools/call` and `tools/list`: every call goes through the gate before it reaches
//! the upstream; the tool table (each tool's annotations) comes from the upstream's
//! list, less the tools the policy denies outright. The table is read again when a
//! call names a tool it does not hold, and after the upstream said its tool list
//! changed: a tool whose annotations changed (read-only, now destructive) is
//! classified by the new ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResponse, CallToolResult, ClientRequest,
    ContentBlock, InputResponses, ListToolsRequest, ListToolsResult, PaginatedRequestParams,
    ServerResult, Tool,
};
use rmcp::service::{Peer, RequestContext, RoleClient, RoleServer};
use rmcp::task_manager::TaskManager;
use serde_json::Value;
use tokio::sync::Notify;

use super::flight::Flight;
use super::gate::{Call, Gate, Progress, Verdict};
use super::relay::{Relay, Sent, upstream_closed, upstream_error};
use super::rounds::{CarryingTask, Landed, Round, in_rounds};
use super::texts;

/// Pages of the upstream's `tools/list` read at most to find a tool (see
/// [`Calls::refresh`]).
const MOST_TOOL_PAGES: usize = 100;

/// The calls of one proxy.
pub struct Calls {
    pub gate: Gate,
    pub upstream: Peer<RoleClient>,
    pub relay: Relay,
    /// Each listed tool's annotations (as JSON), by name.
    tools: Mutex<HashMap<String, Option<Value>>>,
    /// Held while the table is read again: a call that finds it stale meanwhile waits
    /// for the new table instead of going on with the old one.
    rereading: tokio::sync::Mutex<()>,
    /// The upstream's count of tool list changes the table was read at (see
    /// `Listeners::tools_changed`): stale while it is behind, until a reading ends.
    read_at: AtomicU64,
    /// The calls made as tasks (tasks extension).
    pub tasks: TaskManager,
    /// How long a task is kept (see [`super::tasks::ttl`]).
    pub task_ttl: std::time::Duration,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Calls {
    pub fn new(
        gate: Gate,
        upstream: Peer<RoleClient>,
        relay: Relay,
        task_ttl: std::time::Duration,
    ) -> Self {
        Self {
            task_ttl,
            gate,
            upstream,
            relay,
            tools: Mutex::default(),
            rereading: tokio::sync::Mutex::new(()),
            read_at: AtomicU64::new(0),
            tasks: TaskManager::new(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }

    /// Puts `tools` into the table, which they `replace` when the list changed.
    fn remember(&self, tools: &[Tool], replace: bool) {
        // One lock for both: a call looking its tool up meanwhile never finds the
        // table emptied and not yet filled again.
        let mut table = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        if replace {
            table.clear();
        }
        for tool in tools {
            let annotations = tool
                .annotations
                .as_ref()
                .and_then(|a| serde_json::to_value(a).ok());
            table.insert(tool.name.to_string(), annotations);
        }
    }

    fn annotations(&self, tool: &str) -> Option<Option<Value>> {
        self.tools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tool)
            .cloned()
    }

    /// `tools/list`: the upstream's page, less the tools the policy denies outright.
    pub async fn list(
        &self,
        params: Option<PaginatedRequestParams>,
        context: &RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let request = ClientRequest::ListToolsRequest(ListToolsRequest {
            method: Default::default(),
            params,
            extensions: Default::default(),
        });
        let said = self.changes().0;
        let ServerResult::ListToolsResult(mut page) =
            self.relay.forward(&self.upstream, request, context).await?
        else {
            return Err(McpError::internal_error(
                "the MCP server answered tools/list with something else",
                None,
            ));
        };
        // A page read across a change of the list may be the old one: not kept.
        if self.changes().0 == said {
            self.remember(&page.tools, false);
        }
        let names: Vec<&str> = page.tools.iter().map(|tool| tool.name.as_ref()).collect();
        match self.gate.api.denied_tools(&self.gate.server, &names).await {
            Ok(denied) => page
                .tools
                .retain(|tool| !denied.iter().any(|name| name == tool.name.as_ref())),
            // Calls are still gated one by one; the list only spares the model a try.
            Err(error) => tracing::warn!(%error, "tools/list not filtered by the policy"),
        }
        Ok(page)
    }

    /// The upstream's count of tool list changes, and whether the table is stale: read
    /// before the last of them, or no stream listens for them now (a change would go
    /// unheard, see `Listeners::deaf`).
    fn changes(&self) -> (u64, bool) {
        let listeners = &self.relay.listeners;
        let said = listeners.tools_changed.load(Ordering::SeqCst);
        let deaf = listeners.deaf.load(Ordering::SeqCst);
        (said, deaf || said != self.read_at.load(Ordering::SeqCst))
    }

    /// Reads the table again if the upstream's tool list changed since it was read,
    /// or if it does not hold `tool`; one reading at a time. The table stays stale
    /// until a reading has ended, so a call that comes meanwhile waits for it; a
    /// change said while the list is read is read next time.
    async fn current(&self, tool: &str) -> Result<(), McpError> {
        if !self.changes().1 && self.annotations(tool).is_some() {
            return Ok(());
        }
        let _one_at_a_time = self.rereading.lock().await;
        let (said, stale) = self.changes();
        if !stale && self.annotations(tool).is_some() {
            return Ok(());
        }
        self.refresh(stale).await?;
        self.read_at.store(said, Ordering::SeqCst);
        Ok(())
    }

    /// Every page of the upstream's tools, into the table (which they `replace` when
    /// the list changed, so that a tool it no longer lists is unknown): up to
    /// [`MOST_TOOL_PAGES`], so that an upstream whose list never ends (a cursor on
    /// every page) neither holds the call nor fills the memory; a tool past them is
    /// refused as unknown.
    async fn refresh(&self, replace: bool) -> Result<(), McpError> {
        let mut tools = Vec::new();
        let mut cursor = None;
        for _ in 0..MOST_TOOL_PAGES {
            let asked = PaginatedRequestParams::default().with_cursor(cursor);
            let page = self
                .upstream
                .list_tools(Some(asked))
                .await
                .map_err(upstream_error)?;
            tools.extend(page.tools);
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        if cursor.is_some() {
            tracing::warn!(
                "the MCP server's tools/list goes on past {MOST_TOOL_PAGES} pages: read no further"
            );
        }
        self.remember(&tools, replace);
        Ok(())
    }

    /// `tools/call`: the gate, then (approved and executed only) the upstream. A
    /// 2026-07-28 client's call may come back `input_required` (see [`super::rounds`]).
    /// `params` carry no `requestState` or `inputResponses`: those are the proxy's and
    /// the client's, taken out by the server side, and the upstream gets neither.
    pub async fn call(
        &self,
        params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let _flying = self.flying();
        let progress = context
            .meta
            .get_progress_token()
            .map(|token| Progress::Notify {
                peer: context.peer.clone(),
                token,
                sent: Sent::default(),
            });
        self.gated(params, context, progress, in_rounds(context))
            .await
    }

    /// A call whose waiting is reported to `progress` (a task's status), in one round;
    /// whether it went upstream is told apart (see [`Reported`]).
    pub async fn call_reporting(
        &self,
        params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        progress: Option<Progress>,
    ) -> Reported {
        let _flying = self.flying();
        let (flight, round) = match self.sent(params, context, progress.as_ref(), false).await {
            Ok(Ok(sent)) => sent,
            Ok(Err(refusal)) => return Reported::NotSent(Ok(refusal)),
            Err(error) => return Reported::NotSent(Err(error)),
        };
        let _carrying = self.carrying(progress, context, &flight);
        Reported::Sent(
            match Box::pin(self.land(flight, round, context, false)).await {
                Ok(CallToolResponse::Complete(result)) => Ok(result),
                Ok(_) => Err(McpError::internal_error(
                    "a task's call came back unfinished",
                    None,
                )),
                Err(error) => Err(error),
            },
        )
    }

    /// A 2026-07-28 client's retry of a call that came back `input_required`: its
    /// answers go upstream and it rejoins the running call, without the gate (the call
    /// was approved and spent once). Refused when the round is unknown or the retry
    /// differs from the call.
    pub async fn resume(
        &self,
        params: CallToolRequestParams,
        request_state: &str,
        answers: InputResponses,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let _flying = self.flying();
        let what = tool_round(&params.name);
        let resumed =
            (self.relay.rounds).resume(request_state, &what, true, &params.arguments, answers);
        match resumed {
            Ok((flight, round)) => self.land(flight, round, context, true).await,
            Err(why) => Ok(CallToolResponse::Complete(refusal(why))),
        }
    }

    /// Counts a call in flight until dropped (see [`Calls::settled`]).
    fn flying(&self) -> Flying<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Flying(self)
    }

    async fn gated(
        &self,
        params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        progress: Option<Progress>,
        rounds: bool,
    ) -> Result<CallToolResponse, McpError> {
        let (flight, round) = match self
            .sent(params, context, progress.as_ref(), rounds)
            .await?
        {
            Ok(sent) => sent,
            Err(refusal) => return Ok(refusal.into()),
        };
        let _carrying = self.carrying(progress, context, &flight);
        Box::pin(self.land(flight, round, context, rounds)).await
    }

    /// The call through the gate and, approved and executed, on its way upstream: its
    /// flight and round, or the refusal of a call that was not sent.
    async fn sent(
        &self,
        mut params: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        progress: Option<&Progress>,
        rounds: bool,
    ) -> Result<Result<(Flight, Round), CallToolResult>, McpError> {
        if self.gate.upstream_gone.is_cancelled() {
            return Ok(Err(refusal(texts::upstream_gone())));
        }
        let tool = params.name.to_string();
        Box::pin(self.current(&tool)).await?;
        let Some(annotations) = self.annotations(&tool) else {
            return Err(McpError::invalid_params(
                format!("unknown tool {tool:?}: the MCP server does not list it"),
                None,
            ));
        };
        let sent = rounds.then(|| params.arguments.clone());
        let call = Call {
            tool,
            arguments: params.arguments.take().unwrap_or_default(),
            annotations,
            requested_by: context.client_info().map(|info| info.name),
        };
        // The gate's last look is at `context.ct` and the client (a call cancelled while
        // its approval was spent is refused there); from here nothing waits before the
        // call is on its way upstream.
        let (arguments, note, approval) = match self.gate.decide(&call, &context.ct, progress).await
        {
            Verdict::Run {
                arguments,
                note,
                approval,
            } => (arguments, note, approval),
            Verdict::Refuse(why) => return Ok(Err(refusal(why))),
        };
        params.arguments = Some(arguments);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        // The upstream's progress comes after what the gate reported while it held it.
        let reported = match progress {
            Some(Progress::Notify { sent, .. }) => sent.clone(),
            _ => Sent::default(),
        };
        // Boxed, as the landing: a held call's future keeps only the gate's hold.
        let sending = self.relay.send(&self.upstream, request, context, reported);
        let flight = match Box::pin(sending).await {
            Ok(flight) => flight,
            // Not sent: the upstream never had it.
            Err(error) if self.gate.upstream_gone.is_cancelled() || upstream_closed(&error) => {
                return Ok(Err(refusal(texts::upstream_gone())));
            }
            Err(error) => return Err(error),
        };
        let round = Round {
            what: tool_round(&call.tool),
            arguments: sent.flatten(),
            note,
            approval: Some(approval),
        };
        Ok(Ok((flight, round)))
    }

    /// A 2026-07-28 client's task: the upstream's questions during its call (its
    /// `flight`) go to it.
    fn carrying(
        &self,
        progress: Option<Progress>,
        context: &RequestContext<RoleServer>,
        flight: &Flight,
    ) -> Option<CarryingTask<'_>> {
        match progress {
            Some(Progress::Task(task)) if in_rounds(context) => {
                Some(self.relay.rounds.carry_task(task, flight.origin()))
            }
            _ => None,
        }
    }

    /// Waits for the upstream's answer to a forwarded call, in rounds when `rounds`.
    async fn land(
        &self,
        flight: Flight,
        round: Round,
        context: &RequestContext<RoleServer>,
        rounds: bool,
    ) -> Result<CallToolResponse, McpError> {
        let approval = round.approval.clone();
        let (answer, note) = if rounds {
            match self.relay.rounds.wait(flight, round, &context.ct).await {
                Landed::Input(input) => return Ok(CallToolResponse::InputRequired(input)),
                Landed::Answer { answer, note } => (*answer, note),
            }
        } else {
            (flight.land(&context.ct).await, round.note)
        };
        let mut result = match answer {
            Ok(ServerResult::CallToolResult(result)) => result,
            Ok(_) => {
                return Err(McpError::internal_error(
                    "the MCP server answered tools/call with something else",
                    None,
                ));
            }
            // The call was sent: the upstream may have run it before it died, whether
            // the proxy has seen it go yet or only its connection close.
            Err(error) if self.gate.upstream_gone.is_cancelled() || upstream_closed(&error) => {
                let why = texts::upstream_gone_running(approval.as_deref());
                return Ok(refusal(why).into());
            }
            Err(error) => return Err(error),
        };
        if let Some(note) = note {
            result.content.insert(0, ContentBlock::text(note));
        }
        Ok(result.into())
    }

    /// Resolves once no call is in flight.
    pub async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// A task's call as it ended: whether it went upstream decides what a cancel of its
/// task means (see `super::tasks`).
pub enum Reported {
    /// Refused or failed before it was sent: the upstream never had it.
    NotSent(Result<CallToolResult, McpError>),
    /// Sent upstream: the upstream's answer, or why there is none.
    Sent(Result<CallToolResult, McpError>),
}

/// A tool call's [`Round::what`].
fn tool_round(tool: &str) -> String {
    format!("the tool {tool}")
}

/// A call counted in flight.
struct Flying<'a>(&'a Calls);

impl Drop for Flying<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

fn refusal(why: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(why)])
}
