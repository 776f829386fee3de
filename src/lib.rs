//! signoff: the human checkpoint in front of irreversible actions taken by AI agents.
//!
//! An MCP server (or any program) asks for approval over HTTP ([`api`]); the [`policy`]
//! classifies the call; the [`store`] keeps approvals, votes, [`jobs`] and the
//! hash-chained [`audit`] log on SQLite or PostgreSQL; the pure state machine in
//! [`approval`] decides every transition; the [`scheduler`] fires timers. [`server`]
//! wires it into one process and [`cli`] is the command line.

pub mod api;
pub mod approval;
pub mod audit;
pub mod canonical;
pub mod cli;
pub mod clock;
pub mod config;
pub mod exact_json;
pub mod health;
pub mod jobs;
pub mod manifest;
pub mod metrics;
pub mod outbox;
pub mod policy;
pub mod scheduler;
pub mod server;
pub mod slack;
pub mod store;
pub mod tokens;
