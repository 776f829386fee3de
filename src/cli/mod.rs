//! The command line (`signoff serve|migrate|token|policy|audit|key`), flags and env vars as
//! DESIGN.md lists them. Every failure is one line on stderr and a non-zero exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::approval::names;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, DEFAULT_DATABASE_URL, DEFAULT_LISTEN};
use crate::http::{self, AppState};
use crate::jobs::Deliveries;
use crate::store::{Schema, Store, redact};
use crate::{policy, signing, tokens};

mod audit;
mod operate;
mod proxy;
mod slack;

use slack::{SlackArgs, connect_slack};

#[derive(Debug, Parser)]
#[command(
    name = "signoff",
    version,
    about = "Human approval for AI agents' irreversible actions, in Slack"
)]
pub struct Cli {
    #[command(flatten)]
    db: Database,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Args)]
struct Database {
    /// sqlite://FILE (created if missing) or postgres://USER@HOST/DB
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, global = true, hide_env_values = true)]
    database_url: String,
    /// The Ed25519 key that signs callbacks and audit checkpoints (default with
    /// SQLite: signoff-signing.key beside the database; required with PostgreSQL).
    #[arg(long, env = "SIGNOFF_SIGNING_KEY_FILE", global = true)]
    signing_key_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bot: HTTP API, Slack endpoints and the scheduler.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "SIGNOFF_LISTEN", default_value = DEFAULT_LISTEN, value_parser = config::parse_listen)]
        listen: SocketAddr,
        /// Policy file (default: ./signoff.toml if it exists, else built-in defaults).
        #[arg(long, env = "SIGNOFF_POLICY", value_parser = config::parse_policy_path)]
        policy: Option<PathBuf>,
        #[command(flatten)]
        slack: SlackArgs,
        /// Where Slack and MCP clients reach this server, e.g. https://signoff.example.com
        /// (`/mcp` accepts its host besides localhost).
        #[arg(long, env = "SIGNOFF_PUBLIC_URL", value_parser = config::parse_public_url_setting)]
        public_url: Option<String>,
        /// How long a claimed delivery is this server's before another may run it
        /// (after a crash); a delivery starts in its first half. Shortened by tests;
        /// 2 s to 1 h.
        #[arg(long, env = "SIGNOFF_DELIVERY_LEASE", default_value = "60s", value_parser = config::parse_delivery_lease, hide = true)]
        delivery_lease: std::time::Duration,
        /// At most one Slack post per channel per this long (Slack asks for 1 s); `0s`
        /// turns pacing off, for Slack fakes and load tests; at most 1 min.
        #[arg(long, env = "SIGNOFF_SLACK_POST_INTERVAL", default_value = "1s", value_parser = config::parse_post_interval, hide = true)]
        slack_post_interval: std::time::Duration,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Print the Slack app manifest with SIGNOFF_PUBLIC_URL filled in.
    Manifest {
        /// Where Slack reaches this server, e.g. https://signoff.example.com
        #[arg(long, env = "SIGNOFF_PUBLIC_URL")]
        public_url: Option<String>,
        /// For Socket Mode (SLACK_APP_TOKEN): Slack connects over signoff's WebSocket,
        /// so the manifest has no URLs and needs no public URL.
        #[arg(long)]
        socket_mode: bool,
    },
    /// Check or export the audit log.
    Audit {
        #[command(subcommand)]
        action: audit::AuditAction,
    },
    /// Gate an MCP server: serve MCP on stdio, start CMD as the upstream server, and
    /// ask signoff before every tools/call.
    Proxy(proxy::ProxyArgs),
    /// Manage the signing key (callbacks, audit checkpoints).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// List approvals, oldest first, as /approvals shows them (default: the pending ones).
    List {
        /// Which approvals: pending (the default), approved, denied, expired, executed,
        /// cancelled, or all.
        #[arg(long, value_enum, default_value = "pending")]
        status: operate::StatusArg,
        /// Print a JSON array of approvals as the API shows them.
        #[arg(long)]
        json: bool,
    },
    /// Decide a pending approval outside Slack (break-glass, for an operator with
    /// access to the database): audited as a break-glass decision by NAME, and its
    /// Slack messages say so.
    Decide {
        /// The approval's id, or its first 4 or more hex digits (`signoff list`).
        id: String,
        #[arg(value_enum)]
        decision: operate::DecisionArg,
        /// Who decides (recorded as the decider and in the audit log).
        #[arg(long = "as", value_name = "NAME")]
        name: String,
        /// Why (shown to the requester and in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Write a new signing key to FILE (mode 0600; an existing file is never replaced).
    Generate { file: PathBuf },
    /// Print the public key (whpk_ + base64 of its 32 bytes), what callback receivers
    /// and `audit verify --public-key` check signatures with.
    Public,
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token; prints it once on stdout. NAME becomes the requester identity
    /// (the name of a revoked token may be used again).
    Create { name: String },
    /// Give the token NAME a new secret (printed once); the old one stops working.
    Rotate { name: String },
    /// List tokens (names and dates, never the secrets).
    List,
    /// Revoke the token NAME.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// Write a commented starting policy (every key, with its meaning) to FILE; an
    /// existing file is never replaced.
    Init {
        #[arg(default_value = config::DEFAULT_POLICY_FILE)]
        file: PathBuf,
    },
    /// Validate FILE and show how sample tool calls would be classified.
    Check {
        file: PathBuf,
        /// An extra sample call: TOOL, TOOL=JSON_OBJECT, or SERVER/TOOL=JSON_OBJECT
        /// for a tool of an MCP server (repeatable).
        #[arg(long = "call", value_name = "[SERVER/]TOOL[=JSON]")]
        calls: Vec<String>,
    },
}

/// Parses the command line, runs the command, and turns any error into one line.
pub async fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error),
    };
    let format = match crate::logging::Format::from_env() {
        Ok(format) => format,
        Err(error) => {
            // A setting refused before anything runs, as clap refuses one.
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    // One-shot commands print their own results; only `serve` logs at info.
    let proxy = matches!(cli.command, Command::Proxy(_));
    if !proxy && !matches!(cli.command, Command::Serve { .. }) {
        end_quietly_when_stdout_closes();
    }
    let default = if matches!(cli.command, Command::Serve { .. }) {
        "signoff=info,tower_http=info,warn"
    } else if proxy {
        "signoff=warn,error"
    } else {
        "error"
    };
    // The proxy runs on one thread, which a stderr nobody reads must not stop.
    let stderr = if proxy {
        crate::logging::Stderr::Lossy
    } else {
        crate::logging::Stderr::Blocking
    };
    crate::logging::init(default, format, stderr);
    match run(cli).await {
        Ok(code) => code,
        Err(error) if proxy => {
            crate::logging::lossy::stderr().line(&format!("error: {error:#}"));
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command line, with what clap alone does not keep: whether `signoff proxy` was
/// given its token on the command line (where every user of the host can read it).
fn parse() -> Result<Cli, clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().try_get_matches()?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Command::Proxy(args) = &mut cli.command {
        let source = (matches.subcommand_matches("proxy")).and_then(|m| m.value_source("token"));
        args.token_on_command_line = source == Some(clap::parser::ValueSource::CommandLine);
    }
    Ok(cli)
}

/// A command line or setting clap refuses, as one `error: …` line and exit code 2
/// (clap's own text adds a usage block and a hint on lines of their own); help and
/// the version print as clap prints them.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        error.exit();
    }
    eprintln!("{}", one_line(&error.render().to_string()));
    ExitCode::from(2)
}

/// clap's message on one line: its usage block and closing hint left out, its tips
/// kept (`tip: a similar argument exists: '--reason'`), each line joined with the next.
fn one_line(rendered: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut in_usage = false;
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") {
            in_usage = true;
        } else if line.is_empty() {
            in_usage = false;
        } else if !in_usage && !line.starts_with("For more information") {
            let shown: String = line
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            let joint = if line.starts_with("tip:") { "; " } else { " " };
            if !parts.is_empty() {
                parts.push(joint.to_owned());
            }
            parts.push(shown);
        }
    }
    format!("{} (see --help)", parts.concat())
}

/// A one-shot command whose reader stops early (`signoff audit export | head -1`)
/// ends there, as other Unix tools do, instead of panicking in `println!`: Rust
/// starts every program with SIGPIPE ignored. `serve` and `proxy` keep it ignored (a
/// peer that goes away is theirs to handle); sockets are written with MSG_NOSIGNAL
/// either way.
fn end_quietly_when_stdout_closes() {
    // SAFETY: puts the signal's default disposition back; no handler is installed.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

async fn connect(db: &Database) -> anyhow::Result<Store> {
    Store::connect(&db.database_url)
        .await
        .with_context(|| format!("cannot open database {}", redact(&db.database_url)))
}

/// Opens a database that must exist already, for the commands that read or decide
/// what is in it: a mistyped SQLite path would otherwise be created empty (and
/// `audit verify` find nothing wrong with it). The commands that only inspect it take
/// its schema as found ([`Schema::AsFound`]), so that looking changes nothing.
async fn connect_existing(db: &Database, schema: Schema) -> anyhow::Result<Store> {
    if let Some(file) = crate::store::sqlite_file(&db.database_url)
        && !file.exists()
    {
        bail!(
            "no database at {}: check DATABASE_URL (signoff serve or signoff migrate creates one)",
            file.display()
        );
    }
    match schema {
        Schema::Migrate => connect(db).await,
        Schema::AsFound => Store::connect_as_found(&db.database_url)
            .await
            .with_context(|| format!("cannot inspect database {}", redact(&db.database_url))),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let db = cli.db;
    match cli.command {
        Command::Serve {
            listen,
            policy,
            slack,
            public_url,
            delivery_lease,
            slack_post_interval,
        } => {
            let args = ServeArgs {
                listen,
                policy,
                slack,
                public_url,
                delivery: http::Delivery {
                    lease: delivery_lease,
                    post_interval: slack_post_interval,
                },
            };
            serve(&db, clock, args).await?;
        }
        Command::Migrate => {
            let store = connect(&db).await?;
            println!("migrations applied ({})", store.backend_name());
        }
        Command::Token { action } => {
            // Only a new token may start a database (before the first `serve`), and
            // only once its name is valid: a refused name leaves no database behind.
            let store = if let TokenAction::Create { name } = &action {
                tokens::validate_name(name).map_err(anyhow::Error::msg)?;
                connect(&db).await?
            } else {
                connect_existing(&db, Schema::Migrate).await?
            };
            token(action, &store, clock.as_ref()).await?;
        }
        Command::Policy { action } => policy_command(action)?,
        Command::List { status, json } => {
            operate::list(
                &connect_existing(&db, Schema::AsFound).await?,
                status,
                json,
                clock.now(),
            )
            .await?;
        }
        Command::Decide {
            id,
            decision,
            name,
            reason,
        } => {
            let store = connect_existing(&db, Schema::Migrate).await?;
            let approval =
                operate::decide(&store, &id, decision, &name, reason.as_deref(), clock.now())
                    .await?;
            println!(
                "{} {} ({}) as {} outside Slack (break-glass, audited)",
                approval.status,
                approval.id,
                operate::terminal_safe(&approval.tool_name, 60),
                approval.decided_by.as_deref().unwrap_or("-")
            );
        }
        Command::Manifest {
            socket_mode: true, ..
        } => print!("{}", crate::manifest::render_socket_mode()),
        Command::Manifest { public_url, .. } => return Ok(manifest(public_url.as_deref())),
        Command::Key { action } => key(action, &db)?,
        Command::Audit { action } => return audit::run(action, &db).await,
        Command::Proxy(args) => return proxy::run(args).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// `signoff manifest`: a public URL missing or refused is a setting refused before
/// anything runs, as clap refuses one (exit code 2).
fn manifest(public_url: Option<&str>) -> ExitCode {
    match crate::manifest::render(public_url) {
        Ok(manifest) => {
            print!("{manifest}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(2)
        }
    }
}

/// What `signoff serve` was given.
struct ServeArgs {
    listen: SocketAddr,
    policy: Option<PathBuf>,
    slack: SlackArgs,
    public_url: Option<String>,
    delivery: http::Delivery,
}

/// Warns when this host's clock and PostgreSQL's are apart by more than
/// [`clock_offset_warning`] of the deliveries' `lease`: replicas judge job leases and
/// expiries by their own clocks, so two of them apart by a tenth of the lease may send
/// a reminder twice, and one behind accepts an execute past its expiry. The start goes
/// on.
async fn warn_of_clock_offset(store: &Store, clock: &dyn Clock, lease: std::time::Duration) {
    let most = clock_offset_warning(lease);
    match store.clock_offset(clock).await {
        Ok(Some(offset)) if offset.abs() > most => tracing::warn!(
            database_ahead_ms = offset.num_milliseconds(),
            "this host's clock and the database's differ by {:.1} s: replicas whose \
             clocks differ by more than {:.1} s (a tenth of the {} s lease) may send a \
             reminder twice or accept an execute past its expiry; keep every replica's \
             clock in sync (NTP)",
            offset.num_milliseconds().abs() as f64 / 1000.0,
            lease.as_secs_f64() / 10.0,
            lease.as_secs_f64(),
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "could not read the database's clock"),
    }
}

/// How far this host's clock may be from the database's before `serve` warns, with
/// deliveries leased for `lease`: a twentieth of it (half the tenth that two replicas'
/// clocks may differ by, each from the database's), at most 2 s.
pub fn clock_offset_warning(lease: std::time::Duration) -> chrono::Duration {
    let twentieth = chrono::Duration::from_std(lease / 20).unwrap_or(chrono::Duration::MAX);
    twentieth.min(chrono::Duration::seconds(2))
}

/// `signoff serve`: the store, the policy, Slack if configured, and the HTTP server
/// with its scheduler until a shutdown signal.
async fn serve(db: &Database, clock: Arc<dyn Clock>, args: ServeArgs) -> anyhow::Result<()> {
    let delivery = args.delivery;
    // Listen for SIGTERM before anything can answer, so a stop sent as soon as
    // the port is open is a clean shutdown; one sent while starting (a database that
    // never answers, Slack slow to) stops the start, which has no time limit of its own.
    let mut shutdown = Box::pin(crate::shutdown::signal());
    let (listener, state) = tokio::select! {
        started = start(db, clock, args) => started?,
        () = &mut shutdown => {
            tracing::info!("stopped before it was serving");
            return Ok(());
        }
    };
    http::serve(listener, state, delivery, shutdown).await?;
    Ok(())
}

/// What `signoff serve` serves: the policy, the signing key, Slack, the store and the
/// listening socket, ready.
async fn start(
    db: &Database,
    clock: Arc<dyn Clock>,
    args: ServeArgs,
) -> anyhow::Result<(tokio::net::TcpListener, AppState)> {
    let ServeArgs {
        listen,
        policy,
        slack,
        public_url,
        delivery,
    } = args;
    // Blank is unset; anything else is a URL whose host and origin `/mcp` can accept
    // (clap checked it with `config::parse_public_url_setting`, as `signoff manifest`
    // checks it), or every remote call to it would be refused without a word.
    let public_url = public_url.filter(|url| !url.is_empty());
    let (policy, source) = config::load_policy(policy.as_deref())?;
    let signer = signing::for_serve(&db.database_url, db.signing_key_file.as_deref())?;
    let (slack, socket_mode) = connect_slack(&slack).await?;
    let deliveries = Deliveries {
        slack: slack.is_some(),
    };
    let store = Store::connect_signing(&db.database_url, deliveries, Some(signer.clone()))
        .await
        .with_context(|| format!("cannot open database {}", redact(&db.database_url)))?;
    warn_of_clock_offset(&store, clock.as_ref(), delivery.lease).await;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        store = store.backend_name(),
        database = %redact(&db.database_url),
        policy = %source,
        public_key = %signer.public_key(),
        "signoff serving"
    );
    let mut state = AppState::new(store, policy, clock)
        .with_signer(signer)
        .with_public_url(public_url);
    if let Some(slack) = slack {
        state = state.with_slack(slack);
    }
    if let Some(mode) = socket_mode {
        state = state.with_socket_mode(mode);
    }
    Ok((listener, state))
}

async fn token(action: TokenAction, store: &Store, clock: &dyn Clock) -> anyhow::Result<()> {
    match action {
        TokenAction::Create { name } => {
            let token = tokens::generate();
            let tokens = store.token_list().await?;
            let was_revoked = tokens
                .iter()
                .any(|t| t.name == name && t.revoked_at.is_some());
            if !store
                .token_insert(&name, &tokens::hash(&token), clock.now())
                .await?
            {
                bail!(
                    "an active token named {name:?} already exists (`signoff token rotate {name}` gives it a new secret)"
                );
            }
            println!("{token}");
            eprintln!("token {name:?} created; it is shown only once");
            if was_revoked {
                eprintln!(
                    "warning: {name:?} names a revoked token: the new one takes over its \
                     approvals still open (it may execute the approved ones); give another \
                     agent a name of its own"
                );
            }
        }
        TokenAction::Rotate { name } => {
            let token = tokens::generate();
            if !store
                .token_rotate(&name, &tokens::hash(&token), clock.now())
                .await?
            {
                bail!("no active token named {name:?} (`signoff token create {name}` makes one)");
            }
            println!("{token}");
            eprintln!(
                "token {name:?} rotated: the old secret no longer works; the new one is shown only once"
            );
        }
        TokenAction::List => {
            for info in store.token_list().await? {
                let state = match info.revoked_at {
                    Some(at) => format!("revoked {}", at.to_rfc3339()),
                    None => "active".to_owned(),
                };
                println!(
                    "{}\tcreated {}\t{state}",
                    info.name,
                    info.created_at.to_rfc3339()
                );
            }
        }
        TokenAction::Revoke { name } => {
            if !store.token_revoke(&name, clock.now()).await? {
                bail!("no active token named {name:?}");
            }
            println!("token {name:?} revoked");
        }
    }
    Ok(())
}

fn policy_command(action: PolicyAction) -> anyhow::Result<()> {
    match action {
        PolicyAction::Check { file, calls } => {
            let policy = policy::Policy::load(&file)?;
            let mut samples = policy::sample_calls(&policy);
            for call in &calls {
                samples.push(parse_call(call)?);
            }
            print!("{}", policy::check_report(&policy, &samples));
            println!("policy {} is valid", file.display());
        }
        PolicyAction::Init { file } => {
            operate::policy_init(&file)?;
            println!(
                "wrote {0}: set your Slack channel and approvers in it, then `signoff policy check {0}`",
                file.display()
            );
        }
    }
    Ok(())
}

fn key(action: KeyAction, db: &Database) -> anyhow::Result<()> {
    match action {
        KeyAction::Generate { file } => {
            let signer = signing::Signer::create(&file)?;
            println!("{}", signer.public_key());
            eprintln!(
                "signing key written to {} (mode 0600); its public key is above",
                file.display()
            );
        }
        KeyAction::Public => {
            let (path, _) = signing::key_path(&db.database_url, db.signing_key_file.as_deref())?;
            println!("{}", signing::Signer::load(&path)?.public_key());
        }
    }
    Ok(())
}

/// `[SERVER/]TOOL[=JSON_OBJECT]`. The server is what comes before the first `/`
/// (server names have none); `/TOOL` names a tool with a `/` and no server.
fn parse_call(raw: &str) -> anyhow::Result<policy::SampleCall> {
    let (name, params) = match raw.split_once('=') {
        Some((name, json)) => {
            let params: serde_json::Value = serde_json::from_str(json)
                .with_context(|| format!("--call {raw:?}: parameters are not valid JSON"))?;
            if !params.is_object() {
                bail!("--call {raw:?}: parameters must be a JSON object");
            }
            (name.trim(), params)
        }
        None => (raw.trim(), serde_json::json!({})),
    };
    let (server, tool) = match name.split_once('/') {
        Some(("", tool)) => (None, tool),
        Some((server, tool)) => (Some(server), tool),
        None => (None, name),
    };
    names::check_tool_name(tool).map_err(|why| anyhow::anyhow!("--call {raw:?}: {why}"))?;
    if let Some(server) = server {
        names::check_server_name(server).map_err(|why| anyhow::anyhow!("--call {raw:?}: {why}"))?;
    }
    Ok(policy::SampleCall {
        server: server.map(str::to_owned),
        tool: tool.to_owned(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sample_calls_parse_server_tool_and_json() {
        assert_eq!(parse_call("search_orders").unwrap().tool, "search_orders");
        let call = parse_call(r#"send_email={"recipients":["a"]}"#).unwrap();
        assert_eq!((call.server, call.tool.as_str()), (None, "send_email"));
        assert_eq!(call.params["recipients"][0], "a");
        let call = parse_call(r#"github/delete_repo={"repo":"x/y"}"#).unwrap();
        assert_eq!(call.server.as_deref(), Some("github"));
        assert_eq!(
            (call.tool.as_str(), &call.params["repo"]),
            ("delete_repo", &json!("x/y"))
        );
        let call = parse_call("/fs/read").unwrap();
        assert_eq!((call.server, call.tool.as_str()), (None, "fs/read"));
        assert_eq!(parse_call("git/fs/read").unwrap().tool, "fs/read");
        for bad in [
            "x=[1]",
            "x={",
            "=",
            "",
            "a b",
            "git hub/x",
            "git/",
            "git/x y",
        ] {
            assert!(parse_call(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn the_command_line_parses() {
        Cli::command_for_tests().debug_assert();
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
