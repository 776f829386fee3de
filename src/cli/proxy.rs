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
    /// API token (`signoff token create NAME`). On the command line it is visible to
    /// every user of the host: prefer SIGNOFF_TOKEN or SIGNOFF_TOKEN_FILE.
    #[arg(long, env = "SIGNOFF_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file that holds the API token (surrounding whitespace ignored).
    #[arg(
        long = "token-file",
        env = "SIGNOFF_TOKEN_FILE",
        value_name = "PATH",
        value_parser = token_from_file,
        conflicts_with = "token"
    )]
    token_from_file: Option<String>,
    /// Whether `--token` was given on the command line (set once parsed).
    #[arg(skip)]
    pub token_on_command_line: bool,
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
    /// How long a task (tasks extension) lives, running or ended (default: the hold
    /// and an hour): longer for tools that run longer, at most a day.
    #[arg(long, value_parser = duration_between(SHORTEST, 24 * HOUR))]
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

/// The token in the file at `path`, without surrounding whitespace (its final line
/// break); a file that cannot be read or holds nothing is refused. The error never
/// shows what the file holds.
fn token_from_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read it: {error}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(token.to_owned())
}

/// Says on stderr that a token on the command line is there for every user to read.
fn warn_of_token_on_command_line() {
    crate::logging::lossy::stderr().line(
        "signoff proxy: warning: --token on the command line is visible to every user of \
         this host (ps, /proc/PID/cmdline); give it as SIGNOFF_TOKEN or SIGNOFF_TOKEN_FILE",
    );
}

/// Runs the proxy until the client leaves or a stop signal (0), or the upstream dies (1).
pub async fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    if args.token_on_command_line {
        warn_of_token_on_command_line();
    }
    crate::mcp::proxy::run(crate::mcp::proxy::Options {
        url: args.url,
        token: args.token.or(args.token_from_file),
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
