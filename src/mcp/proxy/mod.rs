//! `signoff proxy -- CMD ARGS…`: an MCP server on the proxy's own stdio that starts
//! `CMD` as a child MCP server and passes everything through, except that every
//! `tools/call` first needs an approval from `signoff serve` and a successful execute
//! (DESIGN.md, "MCP"). Exits 0 when the client leaves (or on ctrl-c or SIGTERM), having
//! stopped a child upstream, and 1 when the upstream dies.

mod api;
mod calls;
mod child;
mod flight;
mod gate;
mod holders;
mod http_client;
mod listen;
mod relay;
mod rounds;
mod server;
mod stdio;
mod tasks;
mod texts;
mod upstream;
mod watch;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rmcp::ServiceExt;
use rmcp::model::{ErrorCode, ProtocolVersion};
use rmcp::service::{
    ClientInitializeError, ClientLifecycleMode, ClientServiceExt, RoleClient, RunningService,
};
use tokio_util::sync::CancellationToken;

use self::api::Api;
use self::calls::Calls;
use self::child::{Child, Children};
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
    /// The upstream MCP server's command line (when there is no `upstream` URL).
    pub command: Vec<String>,
    /// How long a 2026-07-28 client has to come back with its answers to the
    /// upstream's requests before the call is given up.
    pub input_within: Duration,
    /// A streamable HTTP upstream instead of a child.
    pub upstream: Option<String>,
    /// `Name: value` headers for the HTTP upstream (its credentials).
    pub upstream_headers: Vec<String>,
    /// How long a child upstream has to exit when the proxy ends, once its stdin is
    /// closed and again after `SIGTERM`, before it is killed.
    pub stop_grace: Duration,
    /// How long a task lives, instead of [`tasks::ttl`] of the hold (`--task-ttl`).
    pub task_ttl: Option<Duration>,
}

/// How long held calls get to answer after the upstream died or the client left.
const SETTLE: Duration = Duration::from_secs(5);

/// The server name: `--name`, else the upstream's host, else the command's file name.
fn server_name(options: &Options) -> anyhow::Result<String> {
    let name = match (&options.name, &options.upstream) {
        (Some(name), _) => name.clone(),
        (None, Some(url)) => reqwest::Url::parse(url)
            .ok()
            .and_then(|url| url.host_str().map(str::to_owned))
            .with_context(|| {
                let url = http_client::redact_url(url);
                format!("--upstream {url:?} is not an http(s) URL with a host")
            })?,
        (None, None) => {
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

/// Commands that start another program rather than being the MCP server themselves.
const LAUNCHERS: &[&str] = &[
    "npx", "npm", "pnpm", "pnpx", "yarn", "bunx", "bun", "deno", "node", "uvx", "uv", "pipx",
    "python", "python3", "docker", "podman", "java", "sh", "bash", "env",
];

/// A warning when the server name was taken from a command that launches the server
/// (`npx`, `uvx`, `docker`, …): every server started that way gets the same name, and
/// policy rules with `servers = ["github*"]` never match it.
fn launcher_warning(options: &Options, server: &str) -> Option<String> {
    let named_by_command = options.name.is_none() && options.upstream.is_none();
    (named_by_command && LAUNCHERS.contains(&server)).then(|| {
        format!(
            "signoff proxy: the server is named {server:?} after its command, as is every \
             server started with {server}; give --name (say --name github) so that policy \
             rules with servers = [...] tell it apart"
        )
    })
}

/// Connects to the upstream: the HTTP server at `--upstream`, else a child started
/// from the command. The session protocol's `initialize` first, which nearly every
/// server speaks; an upstream that refuses it as too old is connected again (a new
/// child) with `server/discover` on 2026-07-28.
async fn connect(
    options: &Options,
    relay: Relay,
    children: &Children,
) -> anyhow::Result<(RunningService<RoleClient, Upstream>, Option<Child>)> {
    let handler = Upstream { relay };
    let initialize = ClientLifecycleMode::Initialize;
    let connected = connect_with(options, handler.clone(), initialize, children).await?;
    match connected {
        Ok(connected) => Ok(connected),
        Err((error, child)) if refuses_initialize(&error) => {
            // Its stdin is closed with the failed handshake's transport.
            if let Some(mut child) = child {
                tokio::spawn(async move { child.stop().await });
            }
            let modern = ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            };
            match connect_with(options, handler, modern, children).await? {
                Ok(connected) => Ok(connected),
                Err((error, child)) => Err(not_connected(options, &error, child).await),
            }
        }
        Err((error, child)) => Err(not_connected(options, &error, child).await),
    }
}

/// A connection that failed at the handshake, with the child's stderr if any.
type Refused = (ClientInitializeError, Option<Child>);

/// One try to connect with `lifecycle`.
async fn connect_with(
    options: &Options,
    handler: Upstream,
    lifecycle: ClientLifecycleMode,
    children: &Children,
) -> anyhow::Result<Result<(RunningService<RoleClient, Upstream>, Option<Child>), Refused>> {
    if let Some(url) = &options.upstream {
        let transport = upstream::connect_http(url, &options.upstream_headers)?;
        return Ok(
            match handler.serve_with_lifecycle(transport, lifecycle).await {
                Ok(running) => Ok((running, None)),
                Err(error) => Err((error, None)),
            },
        );
    }
    let (transport, child) = Child::spawn(&options.command, options.stop_grace, children)?;
    Ok(
        match handler.serve_with_lifecycle(transport, lifecycle).await {
            Ok(running) => Ok((running, Some(child))),
            Err(error) => Err((error, Some(child))),
        },
    )
}

/// Whether the upstream refused the session protocol's `initialize` for its version.
fn refuses_initialize(error: &ClientInitializeError) -> bool {
    match error {
        ClientInitializeError::JsonRpcError(error) => {
            error.code == ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        }
        ClientInitializeError::NoCompatibleProtocolVersion { .. } => true,
        _ => false,
    }
}

/// Why the upstream could not be used, with how a child ended and its last stderr
/// lines.
async fn not_connected(
    options: &Options,
    error: &ClientInitializeError,
    child: Option<Child>,
) -> anyhow::Error {
    match (&options.upstream, child) {
        (Some(url), _) => {
            let url = http_client::redact_url(url);
            anyhow::anyhow!("cannot connect to the MCP server at {url}: {error}")
        }
        (None, Some(child)) => {
            let obituary = child.obituary().await;
            anyhow::anyhow!("the MCP server did not start: {error}. It {obituary}")
        }
        (None, None) => anyhow::anyhow!("the MCP server did not start: {error}"),
    }
}

/// Says on stderr that the upstream is gone: how a child ended (stopped, if it
/// closed its stdout and still runs) and its last stderr lines.
async fn report_exit(child: Option<Child>) {
    let stderr = crate::logging::lossy::stderr();
    match child {
        Some(child) => stderr.line(&format!(
            "signoff proxy: the MCP server {}",
            child.obituary().await
        )),
        None => stderr.line("signoff proxy: the MCP server closed the connection"),
    }
}

/// Linux: the proxy is no longer "dumpable", so that its `/proc/PID` files that
/// show its memory and environment (`environ`, with `SIGNOFF_TOKEN`; `mem`) belong to
/// root and no process of the same user (the upstream it starts, running someone
/// else's code) can read them or trace the proxy. The child gets the default back as
/// it starts its program. Its command line stays readable by every user: hence the
/// warning about `--token` (see `crate::cli::proxy`).
#[cfg(target_os = "linux")]
fn keep_secrets_from_same_user() {
    let off: libc::c_ulong = 0;
    // SAFETY: prctl(2) with PR_SET_DUMPABLE reads its integer arguments only, and
    // changes only this process's dumpable flag.
    let set = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, off, off, off, off) };
    if set == -1 {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "the proxy's environment stays readable by its user's processes");
    }
}

#[cfg(not(target_os = "linux"))]
fn keep_secrets_from_same_user() {}

/// Runs the proxy until the client leaves or ctrl-c or SIGTERM stops it (exit 0,
/// once a child upstream is stopped), or the upstream exits (exit 1). Whichever way
/// it ends, every child it started is stopped first, with what it left running in
/// its process group.
pub async fn run(options: Options) -> anyhow::Result<ExitCode> {
    // Before any child exists.
    keep_secrets_from_same_user();
    let children = Children::default();
    let ran = run_until_done(options, &children).await;
    children.stop_all().await;
    ran
}

async fn run_until_done(options: Options, children: &Children) -> anyhow::Result<ExitCode> {
    let stop_signal = crate::shutdown::signal();
    tokio::pin!(stop_signal);
    let server = server_name(&options)?;
    if let Some(warning) = launcher_warning(&options, &server) {
        crate::logging::lossy::stderr().line(&warning);
    }
    let api = Api::new(&options.url, options.token.clone())?;
    let relay = Relay::new(rounds::Rounds::new(options.input_within));
    // An upstream may take its time to answer the handshake (`npx` fetching a package),
    // or never answer: a stop then is a stop all the same, not ignored until SIGKILL.
    // The child is stopped with the rest (its stdin closed with the dropped handshake).
    let (upstream, child) = tokio::select! {
        connected = connect(&options, relay.clone(), children) => connected?,
        () = &mut stop_signal => {
            crate::logging::lossy::stderr()
                .line("signoff proxy: stopped before the MCP server answered its handshake");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let upstream_peer = upstream.peer().clone();
    let stop_upstream = upstream.cancellation_token();
    let upstream_gone = CancellationToken::new();
    let client_gone = CancellationToken::new();
    let gate = Gate {
        watch: watch::Watch::new(api.clone(), watch::SILENT),
        api,
        server,
        hold: options.hold,
        interval: options.progress_every,
        client_gone: client_gone.clone(),
        upstream_gone: upstream_gone.clone(),
        holders: holders::Holders::default(),
    };
    if flight::modern(&upstream_peer) {
        relay.listeners.hear_list_changes(upstream_peer.clone());
    }
    let task_ttl = options.task_ttl.unwrap_or_else(|| tasks::ttl(options.hold));
    let calls = Arc::new(Calls::new(gate, upstream_peer, relay, task_ttl));
    let mut upstream_done = tokio::spawn(upstream.waiting());
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
    let stopped = tokio::select! {
        _ = serving => true,
        () = &mut stop_signal => true,
        _ = &mut upstream_done => false,
    };
    if stopped {
        // Held calls cancel their approvals, parked rounds are given up and calls under
        // way finish; then the upstream's session ends, which closes a child's stdin,
        // and the child is stopped.
        client_gone.cancel();
        calls.relay.rounds.close();
        let _ = tokio::time::timeout(SETTLE, calls.settled()).await;
        stop_upstream.cancel();
        let _ = tokio::time::timeout(SETTLE, upstream_done).await;
        if let Some(mut child) = child {
            child.stop().await;
        }
        return Ok(ExitCode::SUCCESS);
    }
    upstream_gone.cancel();
    let _ = tokio::time::timeout(SETTLE, calls.settled()).await;
    report_exit(child).await;
    Ok(ExitCode::FAILURE)
}
