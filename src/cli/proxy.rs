//! `signoff proxy`: its flags; the proxy itself is `crate::mcp::proxy`.

use std::process::ExitCode;
use std::time::Duration;

/// The shortest hold, progress interval, time to answer and task TTL: below this a
/// proxy would mostly spin.
const SHORTEST: Duration = Duration::from_millis(100);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

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
    /// How long a call waits for a decision before the agent is told to call again
    /// (100ms to 1h).
    #[arg(long, default_value = "50s", value_parser = duration_between(SHORTEST, HOUR))]
    hold: Duration,
    /// How often a held call reports progress; shortened by tests.
    #[arg(long, default_value = "15s", value_parser = duration_between(SHORTEST, HOUR), hide = true)]
    progress_every: Duration,
    /// How long a 2026-07-28 client has to answer the server's requests (sampling,
    /// elicitation, roots) of a running call before the call is cancelled.
    #[arg(long, default_value = "10m", value_parser = duration_between(SHORTEST, 24 * HOUR), hide = true)]
    input_within: Duration,
    /// How long the upstream command has to exit when the proxy ends, once its stdin is
    /// closed and again after SIGTERM, before it is killed; shortened by tests.
    #[arg(long, default_value = "3s", value_parser = duration_between(Duration::ZERO, 10 * MINUTE), hide = true)]
    stop_grace: Duration,
    /// How long a task (tasks extension) is kept, running or ended (default: the hold
    /// and an hour); shortened by tests.
    #[arg(long, value_parser = duration_between(SHORTEST, 24 * HOUR), hide = true)]
    task_ttl: Option<Duration>,
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

/// A duration flag's parser (humantime: `50s`, `1m 30s`): one from `least` to `most`,
/// so that none spins (a progress report every 0 s) or overflows a deadline.
fn duration_between(
    least: Duration,
    most: Duration,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
        if duration < least || duration > most {
            let shown = |d| humantime::format_duration(d).to_string();
            return Err(format!(
                "must be between {} and {}",
                shown(least),
                shown(most)
            ));
        }
        Ok(duration)
    }
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
        task_ttl: args.task_ttl,
    })
    .await
}
