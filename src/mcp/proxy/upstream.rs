//! The upstream side: the child MCP server the proxy starts (`child`) or a streamable
//! HTTP server, seen through `rmcp`'s client. Its requests to the client (sampling,
//! elicitation, roots) and its notifications (progress, logs, list changes) are
//! relayed to the client.

// Sampling, roots and logging are deprecated by SEP-2577, yet servers still use them:
// the proxy relays them.
#![allow(deprecated)]

use rmcp::ClientHandler;
use rmcp::ErrorData as McpError;
use rmcp::model::{
    ClientCapabilities, ClientConfig, CreateMessageRequest, CreateMessageRequestParams,
    CreateMessageResult, ElicitRequest, ElicitRequestParams, ElicitResult, Implementation,
    InputRequest, ListRootsRequest, ListRootsResult, LoggingMessageNotification,
    LoggingMessageNotificationParam, ProgressNotificationParam, ProtocolVersion,
    ResourceUpdatedNotification, ResourceUpdatedNotificationParam, ServerNotification,
};
use rmcp::service::{NotificationContext, RequestContext, RoleClient};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde::de::DeserializeOwned;

use super::http_client::Quiet;
use super::relay::Relay;

/// A streamable HTTP upstream at `url`, with `headers` (`Name: value`, its
/// credentials) on every request to it and to no other host (see [`Quiet`]).
pub fn connect_http(
    url: &str,
    headers: &[String],
) -> anyhow::Result<StreamableHttpClientTransport<Quiet>> {
    let mut map = reqwest::header::HeaderMap::new();
    for header in headers {
        // Neither error repeats what was given: it may be the credential itself.
        let (name, value) = header.split_once(':').ok_or_else(|| {
            anyhow::anyhow!("--upstream-header: expected 'Name: value' (no ':' in what was given)")
        })?;
        let name =
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                anyhow::anyhow!("--upstream-header: what comes before ':' is not a header name")
            })?;
        let mut value = reqwest::header::HeaderValue::from_str(value.trim()).map_err(|_| {
            anyhow::anyhow!("--upstream-header {name}: the value is not a valid header value")
        })?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    let client = Quiet::build(
        reqwest::Client::builder()
            .tls_backend_preconfigured(
                crate::tls::client_config_for(url).map_err(anyhow::Error::msg)?,
            )
            .default_headers(map),
    )?;
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned());
    Ok(StreamableHttpClientTransport::with_client(client, config))
}

/// The proxy as the upstream's client.
#[derive(Clone)]
pub struct Upstream {
    pub relay: Relay,
}

impl Upstream {
    /// Asks the client `request` for the upstream (see [`Relay::ask`]); its answer as
    /// the expected kind of result.
    async fn ask<T: DeserializeOwned>(&self, request: InputRequest) -> Result<T, McpError> {
        let answer = self.relay.ask(request, None).await?;
        serde_json::from_value(answer).map_err(|error| {
            McpError::invalid_params(format!("the MCP client's answer: {error}"), None)
        })
    }

    async fn tell_client(&self, notification: ServerNotification) {
        self.relay.listeners.tell(notification).await;
    }
}

impl ClientHandler for Upstream {
    fn get_info(&self) -> ClientConfig {
        // The client's own abilities are known only later; requests it cannot serve
        // come back to the upstream as errors.
        let capabilities = ClientCapabilities::builder()
            .enable_roots()
            .enable_sampling()
            .enable_elicitation()
            .build();
        let mut config = ClientConfig::new(
            capabilities,
            Implementation::new("signoff-proxy", env!("CARGO_PKG_VERSION")),
        );
        // The session model (initialize, server-to-client requests) every server speaks.
        config.protocol_version = ProtocolVersion::V_2025_11_25;
        config
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        let request = CreateMessageRequest::new(params);
        self.ask(InputRequest::CreateMessage(request)).await
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, McpError> {
        let request = ListRootsRequest {
            method: Default::default(),
            extensions: Default::default(),
        };
        self.ask(InputRequest::ListRoots(request)).await
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        let request = ElicitRequest::new(request);
        self.ask(InputRequest::Elicitation(request)).await
    }

    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.relay.progress(params).await;
    }

    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.tell_client(LoggingMessageNotification::new(params).into())
            .await;
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.tell_client(ResourceUpdatedNotification::new(params).into())
            .await;
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tell_client(ServerNotification::ResourceListChangedNotification(
            Default::default(),
        ))
        .await;
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tell_client(ServerNotification::ToolListChangedNotification(
            Default::default(),
        ))
        .await;
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tell_client(ServerNotification::PromptListChangedNotification(
            Default::default(),
        ))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::connect_http;

    #[test]
    fn a_malformed_upstream_header_is_refused_without_repeating_its_credential() {
        for given in ["Bearer sk-live-secret", "Bearer sk-live:secret"] {
            let error = connect_http("http://127.0.0.1:9/mcp", &[given.to_owned()])
                .err()
                .expect("refused")
                .to_string();
            assert!(error.starts_with("--upstream-header: "), "{error}");
            assert!(!error.contains("sk-live"), "{error}");
        }
    }
}
