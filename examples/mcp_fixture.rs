//! An MCP server on stdio for the proxy's tests and bench, written with `rmcp`: tools
//! that echo, run slowly with progress (`slow`, and `migrate`, destructive, with a
//! total), name the environment variables the server sees (`environment`), read the
//! proxy's `/proc` files as its child can (`parent`), fail, crash
//! the process, ask the client's model
//! (sampling), ask the user (elicitation), ask both at different times (`ask_twice`),
//! read the client's roots, log, change the
//! tool list (`add_tool`, and `harden`, which turns `flip` from read-only to
//! destructive), tell that a resource changed (`touch`), end every listen stream
//! (`end_streams`) and write lots of stderr (`shout`); one resource (subscribable) and
//! one prompt. Every tool call, every resource (un)subscription and every listen
//! stream opened (`subscriptions/listen`) is appended to the file `FIXTURE_LOG` names (one JSON
//! line each), so a test can tell what ran and how often. With `--http` it serves
//! streamable HTTP instead.
// Sampling and logging are deprecated by SEP-2577; the fixture still exercises them.
#![allow(deprecated)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::response::IntoResponse;
use rmcp::model::*;
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler, ServiceExt};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Fixture {
    extra_tool: Arc<AtomicBool>,
    /// `flip` is listed as destructive (at first: read-only).
    hardened: Arc<AtomicBool>,
    /// 2026-07-28 clients' `subscriptions/listen` streams, where list changes go.
    streams: Arc<std::sync::Mutex<Vec<rmcp::service::SubscriptionSink>>>,
    /// Ends every listen stream open (`end_streams`).
    end_streams: Arc<tokio::sync::Notify>,
    /// How many listen streams are open.
    listening: Arc<std::sync::atomic::AtomicUsize>,
}

fn tool(name: &str, annotations: Option<ToolAnnotations>) -> Tool {
    let schema = json!({"type": "object"});
    let Value::Object(schema) = schema else {
        unreachable!()
    };
    let tool = Tool::new(
        name.to_owned(),
        format!("fixture tool {name}"),
        Arc::new(schema),
    );
    match annotations {
        Some(annotations) => tool.with_annotations(annotations),
        None => tool,
    }
}

fn log_call(name: &str, arguments: &Value) {
    let Ok(path) = std::env::var("FIXTURE_LOG") else {
        return;
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    // One `write` per line: `writeln!` writes a line in pieces, and a test reading
    // the file meanwhile would see half of one.
    let line = format!("{}\n", json!({"tool": name, "arguments": arguments}));
    file.write_all(line.as_bytes()).unwrap();
}

/// A tool result's first text.
fn first_text(result: &CallToolResult) -> String {
    serde_json::to_value(&result.content).unwrap()[0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// What the fixture, as any process of its parent's user, reads of its parent's
/// (the proxy's) `environ` and `cmdline` in `/proc`: each file's text (NULs as spaces),
/// or why it could not.
fn parent_proc_files() -> Value {
    #[cfg(unix)]
    let parent = std::os::unix::process::parent_id();
    #[cfg(not(unix))]
    let parent = 0;
    let read = |file: &str| match std::fs::read(format!("/proc/{parent}/{file}")) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).replace('\0', " "),
        Err(error) => format!("unreadable: {error}"),
    };
    json!({"environ": read("environ"), "cmdline": read("cmdline")})
}

fn text(text: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(text)])
}

impl Fixture {
    /// Progress 1, 2, … `steps` (of `steps` when `total`), then done.
    async fn slow(
        &self,
        arguments: &Value,
        context: &RequestContext<RoleServer>,
        total: bool,
    ) -> CallToolResult {
        let steps = arguments["steps"].as_u64().unwrap_or(3);
        for step in 1..=steps {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(token) = context.meta.get_progress_token() {
                let mut params = ProgressNotificationParam::new(token, step as f64);
                params.total = total.then_some(steps as f64);
                params.message = Some(format!("step {step} of {steps}"));
                let _ = context.peer.notify_progress(params).await;
            }
        }
        text(format!("slow done after {steps} steps"))
    }

    async fn ask_model(&self, context: &RequestContext<RoleServer>) -> CallToolResult {
        let params = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": {"type": "text", "text": "Say hello"}}],
            "maxTokens": 20,
        }))
        .unwrap();
        match context.peer.create_message(params).await {
            Ok(answer) => text(format!(
                "the model said: {}",
                serde_json::to_value(&answer.message.content).unwrap()
            )),
            Err(error) => {
                log_call(
                    "ask_model: sampling failed",
                    &json!({"error": error.to_string()}),
                );
                CallToolResult::error(vec![ContentBlock::text(format!(
                    "sampling failed: {error}"
                ))])
            }
        }
    }
}

impl Fixture {
    /// Ends every open listen stream, and answers once they have ended (and a little
    /// later, for their final results to go out before this answer).
    async fn end_streams(&self) -> CallToolResult {
        self.streams.lock().unwrap().clear();
        self.end_streams.notify_waiters();
        for _ in 0..100 {
            if self.listening.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text("ended every listen stream")
    }

    /// Tells the client that the tool list changed.
    async fn tools_changed(&self, context: &RequestContext<RoleServer>) {
        // On 2026-07-28 list changes go only on the listen streams.
        if !modern_only() {
            let _ = context.peer.notify_tool_list_changed().await;
        }
        let streams = self.streams.lock().unwrap().clone();
        for stream in streams {
            let _ = stream.notify_tool_list_changed().await;
        }
    }

    async fn ask_user(&self, context: &RequestContext<RoleServer>) -> CallToolResult {
        let params = serde_json::from_value(json!({
            "mode": "form",
            "message": "Which environment?",
            "requestedSchema": {"type": "object", "properties": {"env": {"type": "string"}}},
        }))
        .unwrap();
        // rmcp's typed helper needs its `elicitation` feature; the request is the same.
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        match context.peer.send_request(request).await {
            Ok(ClientResult::ElicitResult(answer)) => text(format!(
                "the user answered: {}",
                serde_json::to_value(&answer).unwrap()
            )),
            Ok(other) => CallToolResult::error(vec![ContentBlock::text(format!(
                "elicitation answered with {other:?}"
            ))]),
            Err(error) => CallToolResult::error(vec![ContentBlock::text(format!(
                "elicitation failed: {error}"
            ))]),
        }
    }

    /// Asks the client's model and, `after_ms` later (default 300) and without waiting
    /// for that answer, the user; the user's answer (or the error) is logged as the
    /// call `ask_twice: elicitation`, whenever it comes.
    async fn ask_twice(
        &self,
        arguments: &Value,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let after = Duration::from_millis(arguments["after_ms"].as_u64().unwrap_or(300));
        let (fixture, later) = (self.clone(), context.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let answer = fixture.ask_user(&later).await;
            let outcome = json!({"is_error": answer.is_error, "text": first_text(&answer)});
            log_call("ask_twice: elicitation", &outcome);
        });
        self.ask_model(context).await
    }

    async fn roots(&self, context: &RequestContext<RoleServer>) -> CallToolResult {
        match context.peer.list_roots().await {
            Ok(roots) => text(format!(
                "the client's roots: {}",
                serde_json::to_value(&roots.roots).unwrap()
            )),
            Err(error) => {
                CallToolResult::error(vec![ContentBlock::text(format!("roots failed: {error}"))])
            }
        }
    }
}

/// `FIXTURE_PROTOCOL=2026-07-28`: the fixture speaks that protocol only (no
/// `initialize`), and `ask_model` asks for its sampling in an `input_required` result.
fn modern_only() -> bool {
    std::env::var("FIXTURE_PROTOCOL").is_ok_and(|version| version == "2026-07-28")
}

/// `ask_model` on 2026-07-28: the sampling request goes back in an `input_required`
/// result, and the retry brings the model's answer.
fn ask_model_in_rounds(request: &CallToolRequestParams) -> CallToolResponse {
    match request
        .input_responses
        .as_ref()
        .and_then(|answers| answers.get("model"))
    {
        Some(answer) => text(format!("the model said: {}", answer["content"])).into(),
        None => {
            let params = serde_json::from_value(json!({
                "messages": [{"role": "user", "content": {"type": "text", "text": "Say hello"}}],
                "maxTokens": 20,
            }))
            .unwrap();
            let ask = InputRequest::CreateMessage(CreateMessageRequest::new(params));
            let requests = [("model".to_owned(), ask)].into_iter().collect();
            InputRequiredResult::new(Some(requests), Some("asked-the-model".into())).into()
        }
    }
}

impl ServerHandler for Fixture {
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [ProtocolVersion]> {
        if modern_only() {
            return std::borrow::Cow::Owned(vec![ProtocolVersion::V_2026_07_28]);
        }
        std::borrow::Cow::Borrowed(ProtocolVersion::KNOWN_VERSIONS)
    }

    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tools()
            .enable_tool_list_changed()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("mcp-fixture", "1.0.0"))
            .with_instructions("a fixture for signoff's tests")
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut tools = vec![
            tool("echo", None),
            tool("slow", Some(ToolAnnotations::new().read_only(true))),
            tool("fail", None),
            tool("crash", None),
            tool(
                "delete_things",
                Some(ToolAnnotations::new().destructive(true)),
            ),
            tool("drop_table", None),
            tool("ask_model", None),
            tool("ask_user", None),
            tool("ask_twice", None),
            tool("roots", None),
            tool("chatty", None),
            tool("add_tool", None),
            tool("touch", None),
            tool("shout", None),
            tool("harden", None),
            tool("environment", Some(ToolAnnotations::new().read_only(true))),
            tool("parent", Some(ToolAnnotations::new().read_only(true))),
            tool("migrate", Some(ToolAnnotations::new().destructive(true))),
            tool("end_streams", None),
        ];
        let flip = if self.hardened.load(Ordering::SeqCst) {
            ToolAnnotations::new().destructive(true)
        } else {
            ToolAnnotations::new().read_only(true)
        };
        tools.push(tool("flip", Some(flip)));
        if self.extra_tool.load(Ordering::SeqCst) {
            tools.push(tool("extra", None));
        }
        // `FIXTURE_ENDLESS_PAGES`: a list that never ends, a cursor on every page (the
        // first page as above, then one tool a page).
        if std::env::var_os("FIXTURE_ENDLESS_PAGES").is_some() {
            let page: u64 = _request
                .and_then(|request| request.cursor)
                .and_then(|cursor| cursor.parse().ok())
                .unwrap_or(0);
            if page > 0 {
                tools = vec![tool(&format!("page_{page}"), None)];
            }
            let mut result = ListToolsResult::with_all_items(tools);
            result.next_cursor = Some((page + 1).to_string());
            return Ok(result);
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let arguments = Value::Object(request.arguments.clone().unwrap_or_default());
        if request.input_responses.is_some() {
            log_call(
                &format!("{} (retried with answers)", request.name),
                &arguments,
            );
        } else {
            log_call(&request.name, &arguments);
        }
        if request.name == "ask_model" && modern_only() {
            return Ok(ask_model_in_rounds(&request));
        }
        let result = match request.name.as_ref() {
            "slow" => self.slow(&arguments, &context, false).await,
            "migrate" => self.slow(&arguments, &context, true).await,
            // The names only: values may be secrets, and the result is logged.
            "environment" => {
                let mut names: Vec<String> = std::env::vars_os()
                    .map(|(name, _)| name.to_string_lossy().into_owned())
                    .collect();
                names.sort();
                text(json!(names).to_string())
            }
            "parent" => text(parent_proc_files().to_string()),
            "fail" => {
                CallToolResult::error(vec![ContentBlock::text("the fixture failed on purpose")])
            }
            "crash" => {
                eprintln!("fixture: crashing on purpose");
                std::process::exit(3);
            }
            "ask_model" => self.ask_model(&context).await,
            "ask_user" => self.ask_user(&context).await,
            "ask_twice" => self.ask_twice(&arguments, &context).await,
            "roots" => self.roots(&context).await,
            "chatty" => {
                let log = serde_json::from_value(
                    json!({"level": "info", "logger": "fixture", "data": "hello from the fixture"}),
                )
                .unwrap();
                let _ = context.peer.notify_logging_message(log).await;
                text("logged")
            }
            // `kib` lines of 1 KiB each on stderr.
            "shout" => {
                let kib = arguments["kib"].as_u64().unwrap_or(1);
                let line = format!("{}\n", "!".repeat(1023));
                let mut stderr = std::io::stderr().lock();
                for _ in 0..kib {
                    stderr.write_all(line.as_bytes()).unwrap();
                }
                text(format!("wrote {kib} KiB to stderr"))
            }
            "add_tool" => {
                self.extra_tool.store(true, Ordering::SeqCst);
                self.tools_changed(&context).await;
                text("added")
            }
            "harden" => {
                self.hardened.store(true, Ordering::SeqCst);
                self.tools_changed(&context).await;
                text("flip is destructive now")
            }
            "end_streams" => self.end_streams().await,
            "touch" => {
                let uri = arguments["uri"].as_str().unwrap_or("fixture://note");
                let updated = ResourceUpdatedNotificationParam::new(uri);
                // On 2026-07-28 updates go only on the listen streams that name the URI.
                if !modern_only() {
                    let _ = context.peer.notify_resource_updated(updated.clone()).await;
                }
                let streams = self.streams.lock().unwrap().clone();
                for stream in streams {
                    let _ = stream.notify_resource_updated(uri).await;
                }
                text(format!("touched {uri}"))
            }
            name => text(format!("{name} ran with {arguments}")),
        };
        Ok(CallToolResponse::Complete(result))
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.clone())
    }

    /// Until the client cancels the stream, or `end_streams` ends it (the server's end
    /// of it: the final result).
    async fn listen(&self, stream: rmcp::service::SubscriptionContext) -> Result<(), McpError> {
        let filter = serde_json::to_value(stream.accepted()).unwrap();
        log_call("subscriptions/listen", &filter);
        let ended = self.end_streams.notified();
        self.listening.fetch_add(1, Ordering::SeqCst);
        self.streams.lock().unwrap().push(stream.sink().clone());
        tokio::select! {
            () = stream.cancelled() => {}
            () = ended => {}
        }
        self.listening.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let resource =
            serde_json::from_value(json!({"uri": "fixture://note", "name": "note"})).unwrap();
        Ok(ListResourcesResult::with_all_items(vec![resource]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        // `fixture://roots` asks the client for its roots first.
        let text = match request.uri.as_str() {
            "fixture://roots" => first_text(&self.roots(&context).await),
            _ => "the note's text".to_owned(),
        };
        let contents = ResourceContents::text(text, request.uri);
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        log_call("resources/subscribe", &json!({"uri": request.uri}));
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        log_call("resources/unsubscribe", &json!({"uri": request.uri}));
        Ok(())
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let prompt =
            serde_json::from_value(json!({"name": "greet", "description": "a greeting"})).unwrap();
        Ok(ListPromptsResult::with_all_items(vec![prompt]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        // `ask_user` asks the user (elicitation) first.
        let text = match request.name.as_str() {
            "ask_user" => first_text(&self.ask_user(&context).await),
            name => format!("hello from {name}"),
        };
        let message = PromptMessage::new_text(Role::User, text);
        Ok(GetPromptResult::new(vec![message]).into())
    }
}

/// `--http`: streamable HTTP on 127.0.0.1 (its URL printed on stdout) instead of
/// stdio, refusing requests without the header `x-fixture-key: $FIXTURE_KEY` when set.
async fn serve_http() -> anyhow::Result<()> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let service = StreamableHttpService::new(
        || Ok(Fixture::default()),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let key = std::env::var("FIXTURE_KEY").ok();
    let router =
        axum::Router::new()
            .nest_service("/mcp", service)
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    let allowed = key.as_deref().is_none_or(|key| {
                        request
                            .headers()
                            .get("x-fixture-key")
                            .is_some_and(|v| v == key)
                    });
                    async move {
                        if allowed {
                            next.run(request).await
                        } else {
                            axum::http::StatusCode::UNAUTHORIZED.into_response()
                        }
                    }
                },
            ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}/mcp", listener.local_addr()?);
    axum::serve(listener, router).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|arg| arg == "--http") {
        return serve_http().await;
    }
    eprintln!("fixture: started");
    let running = Fixture::default().serve(rmcp::transport::stdio()).await?;
    running.waiting().await?;
    Ok(())
}
