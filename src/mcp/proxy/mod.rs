//! `signoff proxy -- CMD ARGS…`: an MCP server on the proxy's own stdio that starts
//! `CMD` as a child MCP server and passes everything through, except that every
//! `tools/call` first needs an approval from `signoff serve` and a successful execute
//! (DESIGN.md, "MCP"). Exits 0 when the client leaves, 1 when the upstream dies.

mod api;
mod calls;
mod gate;
mod relay;
mod server;
mod stdio;
mod texts;
mod upstream;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use self::api::Api;
use self::calls::Calls;
use self::gate::Gate;
use self::relay::Relay;
use self::server::Proxy;
use self::upstream::Upstream;

/// What `signoff proxy` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `signoff serve` to ask.
    pub url: String,
    pub token: Option<String>,
    /// The approvals' `server` (default: the command's file name).
    pub name: Option<String>,
    /// How long a call is held before the agent is told to call again.
    pub hold: Duration,
    /// How often a held call reports progress.
    pub progress_every: Duration,
    /// The upstream MCP server's command line.
    pub command: Vec<String>,
}

/// How long held calls get to answer after the upstream died.
const SETTLE: Duration = Duration::from_secs(5);

/// The server name: `--name`, else the command's file name.
fn server_name(options: &Options) -> anyhow::Result<String> {
    let name = match &options.name {
        Some(name) => name.clone(),
        None => {
            let program = options.command.first().context("no command after --")?;
            std::path::Path::new(program)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_else(|| program.clone())
        }
    };
    crate::approval::names::check_server_name(&name)
        .map_err(|why| anyhow::anyhow!("--name {name:?}: {why}"))?;
    Ok(name)
}

/// Runs the proxy until the client leaves (exit 0) or the upstream exits (exit 1).
pub async fn run(options: Options) -> anyhow::Result<ExitCode> {
    let server = server_name(&options)?;
    let api = Api::new(&options.url, options.token.clone())?;
    let (transport, tail, copier) = upstream::spawn(&options.command)?;
    let relay = Relay::default();
    let upstream = Upstream {
        relay: relay.clone(),
    }
    .serve(transport)
    .await
    .map_err(|error| {
        anyhow::anyhow!(
            "the MCP server did not start: {error}\n{}",
            tail.lines().join("\n")
        )
    })?;
    let upstream_peer = upstream.peer().clone();
    let stop_upstream = upstream.cancellation_token();
    let upstream_gone = CancellationToken::new();
    let client_gone = CancellationToken::new();
    let gate = Gate {
        api,
        server,
        hold: options.hold,
        interval: options.progress_every,
        client_gone: client_gone.clone(),
        upstream_gone: upstream_gone.clone(),
    };
    let calls = Arc::new(Calls::new(gate, upstream_peer, relay));
    let upstream_done = tokio::spawn(upstream.waiting());
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    let stdin = stdio::Watched::new(stdin, client_gone.clone());
    let proxy = Proxy {
        calls: calls.clone(),
    };
    let serving = tokio::spawn(async move {
        match proxy.serve((stdin, stdout)).await {
            Ok(running) => drop(running.waiting().await),
            Err(error) => tracing::info!(%error, "the MCP client left before the handshake"),
        }
    });
    tokio::select! {
        _ = serving => {
            stop_upstream.cancel();
            Ok(ExitCode::SUCCESS)
        }
        _ = upstream_done => {
            upstream_gone.cancel();
            let _ = tokio::time::timeout(SETTLE, calls.settled()).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), copier).await;
            eprintln!("signoff proxy: the MCP server exited; its last stderr lines:");
            for line in tail.lines() {
                eprintln!("  {line}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
