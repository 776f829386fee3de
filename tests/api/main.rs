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
mod openapi;
mod openapi_spec;
mod operations;
mod requests;
mod revocation;
mod shared_rows;
mod spend;
mod tiers;
