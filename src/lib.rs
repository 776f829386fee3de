//! signoff: the human checkpoint in front of irreversible actions taken by AI agents.
//!
//! Where each behaviour lives, from the edges in (a module uses only those below it):
//!
//! - [`cli`]: the command line (`serve`, `token`, `policy`, `audit`, …); [`config`]
//!   reads flags and environment once.
//! - [`http`]: the one HTTP edge: [`http::AppState`], the router, the connection
//!   limits and the server loop, with its areas as children: the API for MCP servers
//!   (`http::api`), Slack's signed callbacks (`http::slack`), health and metrics.
//! - [`mcp`]: `signoff proxy`, the approval gate in front of any MCP server, a client
//!   of the HTTP API.
//! - [`scheduler`]: timers (expiry) and the claim of due deliveries, which [`outbox`]
//!   delivers (Slack messages, signed decision callbacks) and reports back.
//! - [`slack`]: Slack itself: signature checks, Block Kit rendering, the Web API
//!   client, who may decide, `/approvals` parsing.
//! - [`store`]: approvals, votes, [`jobs`], tokens and the [`audit`] log on SQLite or
//!   PostgreSQL, written by one group-committing writer.
//! - [`approval`]: the domain and its pure state machine, which decides every
//!   transition; [`policy`] classifies calls.
//! - Plain helpers: [`wire`] (the JSON shapes callers read), [`exact_json`] (reading
//!   parameters exactly), [`canonical`] (one text per JSON value), [`ids`] (Slack's
//!   ids as types), [`logging`] (one line per event, whatever a caller sent),
//!   [`tokens`], [`clock`], [`manifest`], [`egress`] (where a callback may not go),
//!   [`errors`] (error text with its causes), [`tls`] (the TLS settings of the
//!   clients signoff configures), [`shutdown`] (ctrl-c and SIGTERM),
//!   [`signing`] (the Ed25519 key that signs
//!   callbacks and audit checkpoints).

// No function over 80 lines (clippy.toml); CI denies warnings.
#![warn(clippy::too_many_lines)]

pub mod approval;
pub mod audit;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod config;
pub mod egress;
pub mod errors;
pub mod exact_json;
/// How long the fuzz targets run (`SIGNOFF_FUZZ_SECONDS`, `SIGNOFF_FUZZ_CASES`): one file
/// with the integration tests.
#[cfg(test)]
#[path = "../tests/common/fuzz.rs"]
mod fuzz;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod logging;
pub mod manifest;
pub mod mcp;
pub mod outbox;
pub mod policy;
pub mod scheduler;
pub mod shutdown;
pub mod signing;
pub mod slack;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod wire;
