//! The HTTP API for MCP servers, through real HTTP against the real router.

mod callbacks;
#[path = "../common/mod.rs"]
mod common;
mod connections;
mod decisions;
mod egress;
mod events;
mod fuzz;
mod helpers;
mod hostile;
mod mcp;
mod mcp_fuzz;
mod mcp_tools;
mod operations;
mod requests;
mod spend;
