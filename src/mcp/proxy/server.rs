//! The client side: the proxy as an MCP server on its own stdio. `tools/call` and
//! `tools/list` go to [`Calls`]; everything else passes through to the upstream,
//! `prompts/get` and `resources/read` in rounds for a 2026-07-28 client (see
//! [`super::rounds`]), and resource subscriptions to a 2026-07-28 upstream as listen
//! streams (see [`super::listen`]).
// Logging, roots and resource subscriptions are deprecated by SEP-2577, yet clients
// and servers still use them: the proxy passes them through.
#![allow(deprecated)]

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::ServerHandler;
use rmcp::model::*;
use rmcp::service::{NotificationContext, RequestContext, RoleServer, SubscriptionContext};

use super::calls::Calls;
use super::flight;
use super::relay::Sent;
use super::rounds::{Landed, Round, in_rounds};

/// The proxy's server handler.
#[derive(Clone)]
pub struct Proxy {
    pub calls: Arc<Calls>,
}

/// A retry's `requestState` and answers, taken out of its request (the upstream gets
/// neither: the state is the proxy's, the answers go to the upstream's own requests).
fn retry(
    state: &mut Option<String>,
    answers: &mut Option<InputResponses>,
) -> Option<(String, InputResponses)> {
    let answers = answers.take().unwrap_or_default();
    state.take().map(|state| (state, answers))
}

fn unexpected(method: &str) -> McpError {
    McpError::internal_error(
        format!("the MCP server answered {method} with something else"),
        None,
    )
}

impl Proxy {
    /// Passes `request` (a `prompts/get` or `resources/read`) through; for a
    /// 2026-07-28 client in rounds when the upstream asks the client something
    /// meanwhile (see [`super::rounds`]). `retry` is the client's `requestState` and
    /// answers when the request continues a round.
    async fn forward_in_rounds(
        &self,
        request: ClientRequest,
        round: Round,
        retry: Option<(String, InputResponses)>,
        context: &RequestContext<RoleServer>,
    ) -> Result<Result<ServerResult, InputRequiredResult>, McpError> {
        if !in_rounds(context) {
            return self.forward(request, context).await.map(Ok);
        }
        let relay = &self.calls.relay;
        let (flight, round) = match retry {
            Some((state, answers)) => relay
                .rounds
                .resume(&state, &round.what, false, &round.arguments, answers)
                .map_err(|why| McpError::invalid_params(why, None))?,
            None => (
                Box::pin(relay.send(&self.calls.upstream, request, context, Sent::default()))
                    .await?,
                round,
            ),
        };
        match relay.rounds.wait(flight, round, &context.ct).await {
            Landed::Input(input) => Ok(Err(input)),
            Landed::Answer { answer, .. } => answer.map(Ok),
        }
    }

    async fn forward(
        &self,
        request: ClientRequest,
        context: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        self.calls
            .relay
            .forward(&self.calls.upstream, request, context)
            .await
    }
}

macro_rules! pass {
    ($self:ident, $context:ident, $request:expr, $variant:ident, $method:literal) => {
        match $self.forward($request, &$context).await? {
            ServerResult::$variant(result) => Ok(result.into()),
            _ => Err(unexpected($method)),
        }
    };
}

impl ServerHandler for Proxy {
    /// The upstream's capabilities and identity, as the upstream declared them.
    fn get_info(&self) -> ServerConfig {
        let upstream = self.calls.upstream.peer_info();
        let mut info = ServerConfig::default();
        if let Some(upstream) = upstream {
            info.capabilities = upstream.capabilities.clone();
            info.instructions = upstream.instructions.clone();
            if let Some(server) = &upstream.server_info {
                info.server_info = server.clone();
            }
        }
        // Calls may run as tasks, whatever the upstream does.
        info.capabilities
            .extensions
            .get_or_insert_with(Default::default)
            .insert(TASKS_EXTENSION_ID.to_owned(), Default::default());
        info
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        let _ = self.calls.relay.client.set(context.peer.clone());
        self.calls.relay.listeners.set_legacy();
        self.negotiate_initialize(&request)
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.calls.list(request, &context).await
    }

    async fn call_tool(
        &self,
        mut request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // A retry continues its parked round (or is refused), whatever capabilities it
        // declares: made a task, it would be gated anew as another call, a second
        // approval, and the tool would run twice.
        if let Some((state, answers)) =
            retry(&mut request.request_state, &mut request.input_responses)
        {
            return self.calls.resume(request, &state, answers, &context).await;
        }
        if context
            .client_capabilities()
            .is_some_and(|capabilities| capabilities.supports_tasks())
        {
            let task = super::tasks::spawn(&self.calls, request, &context);
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
        }
        self.calls.call(request, &context).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        self.calls
            .tasks
            .get_task(&request.task_id)
            .map(GetTaskResult::new)
    }

    /// A 2026-07-28 client's answers to its task's input requests (the upstream's
    /// questions during the call).
    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        (self.calls.tasks).update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.calls.tasks.cancel_task(&request.task_id)
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        pass!(
            self,
            context,
            CompleteRequest::new(request).into(),
            CompleteResult,
            "completion/complete"
        )
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.forward(SetLevelRequest::new(request).into(), &context)
            .await
            .map(drop)
    }

    async fn get_prompt(
        &self,
        mut request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let retry = retry(&mut request.request_state, &mut request.input_responses);
        let round = Round {
            what: format!("the prompt {}", request.name),
            arguments: request.arguments.clone(),
            note: None,
            approval: None,
        };
        let request = GetPromptRequest::new(request).into();
        match self
            .forward_in_rounds(request, round, retry, &context)
            .await?
        {
            Ok(ServerResult::GetPromptResult(result)) => Ok(result.into()),
            Ok(_) => Err(unexpected("prompts/get")),
            Err(input) => Ok(input.into()),
        }
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let request = ListPromptsRequest {
            method: Default::default(),
            params: request,
            extensions: Default::default(),
        };
        pass!(
            self,
            context,
            request.into(),
            ListPromptsResult,
            "prompts/list"
        )
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let request = ListResourcesRequest {
            method: Default::default(),
            params: request,
            extensions: Default::default(),
        };
        pass!(
            self,
            context,
            request.into(),
            ListResourcesResult,
            "resources/list"
        )
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let request = ListResourceTemplatesRequest {
            method: Default::default(),
            params: request,
            extensions: Default::default(),
        };
        pass!(
            self,
            context,
            request.into(),
            ListResourceTemplatesResult,
            "resources/templates/list"
        )
    }

    async fn read_resource(
        &self,
        mut request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let retry = retry(&mut request.request_state, &mut request.input_responses);
        let round = Round {
            what: format!("the resource {}", request.uri),
            arguments: None,
            note: None,
            approval: None,
        };
        let request = ReadResourceRequest::new(request).into();
        match self
            .forward_in_rounds(request, round, retry, &context)
            .await?
        {
            Ok(ServerResult::ReadResourceResult(result)) => Ok(result.into()),
            Ok(_) => Err(unexpected("resources/read")),
            Err(input) => Ok(input.into()),
        }
    }

    /// A 2026-07-28 client's `subscriptions/listen`: whatever it asks for, narrowed by
    /// the SDK to what the upstream advertises.
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, stream: SubscriptionContext) -> Result<(), McpError> {
        let listeners = &self.calls.relay.listeners;
        listeners.listen(&self.calls.upstream, stream).await;
        Ok(())
    }

    /// A session client's resource subscription: passed through, or on a 2026-07-28
    /// upstream a listen stream of the proxy's (see
    /// [`super::listen::Listeners::subscribe_upstream`]).
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let upstream = &self.calls.upstream;
        if flight::modern(upstream) {
            let listeners = &self.calls.relay.listeners;
            return listeners.subscribe_upstream(upstream, &request.uri).await;
        }
        self.forward(SubscribeRequest::new(request).into(), &context)
            .await
            .map(drop)
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let upstream = &self.calls.upstream;
        if flight::modern(upstream) {
            let listeners = &self.calls.relay.listeners;
            return listeners.unsubscribe_upstream(upstream, &request.uri).await;
        }
        self.forward(UnsubscribeRequest::new(request).into(), &context)
            .await
            .map(drop)
    }

    /// Methods `rmcp` does not know pass through; a `tools/call` that landed here did
    /// not parse (its arguments are not an object) and is refused.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        if request.method == "tools/call" {
            return Err(McpError::invalid_params(
                "tools/call: arguments must be a JSON object",
                None,
            ));
        }
        pass!(
            self,
            context,
            ClientRequest::CustomRequest(request),
            CustomResult,
            "a custom request"
        )
    }

    async fn on_roots_list_changed(&self, _context: NotificationContext<RoleServer>) {
        let _ = self.calls.upstream.notify_roots_list_changed().await;
    }
}
