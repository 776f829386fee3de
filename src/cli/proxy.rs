//! `signoff proxy`: its flags; the proxy itself is `crate::mcp::proxy`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The signoff server to ask.
    #[arg(long, env = "SIGNOFF_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API token (`signoff token create NAME`).
    #[arg(long, env = "SIGNOFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server name in approvals and policy rules (default: CMD's file name).
    #[arg(long)]
    name: Option<String>,
    /// How long a call waits for a decision before the agent is told to call again.
    #[arg(long, default_value = "50s", value_parser = humantime::parse_duration)]
    hold: std::time::Duration,
    /// How often a held call reports progress; shortened by tests.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, hide = true)]
    progress_every: std::time::Duration,
    /// How long a 2026-07-28 client has to answer the server's requests (sampling,
    /// elicitation, roots) of a running call before the call is cancelled.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration, hide = true)]
    input_within: std::time::Duration,
    /// How long the upstream command has to exit when the proxy ends, once its stdin is
    /// closed and again after SIGTERM, before it is killed; shortened by tests.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration, hide = true)]
    stop_grace: std::time::Duration,
    /// A streamable HTTP MCP server to wrap instead of a command, e.g. https://host/mcp.
    #[arg(long, value_name = "URL", conflicts_with = "command")]
    upstream: Option<String>,
    /// A header for the HTTP upstream, 'Name: value' (repeatable), for its credentials.
    #[arg(
        long = "upstream-header",
        value_name = "NAME: VALUE",
        requires = "upstream"
    )]
    upstream_headers: Vec<String>,
    /// The upstream MCP server: CMD [ARGS...].
    #[arg(last = true, required_unless_present = "upstream", value_name = "CMD")]
    command: Vec<String>,
}

/// Runs the proxy until the client leaves or a stop signal (0), or the upstream dies (1).
pub async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    crate::mcp::proxy::run(crate::mcp::proxy::Options {
        url: args.url,
        token: args.token,
        name: args.name,
        hold: args.hold,
        progress_every: args.progress_every,
        input_within: args.input_within,
        command: args.command,
        upstream: args.upstream,
        upstream_headers: args.upstream_headers,
        stop_grace: args.stop_grace,
    })
    .await
}
