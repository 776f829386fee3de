//! `signoff proxy`, driven as MCP clients drive it (rmcp's client, the official Python
//! SDK, raw JSON-RPC) over stdio, in front of an rmcp fixture server and a published
//! MCP server, with the app on a fake Slack and signed clicks deciding.

#[path = "../common/mod.rs"]
mod common;
mod fuzz;
mod gate;
mod helpers;
mod leaks;
mod lifecycle;
mod memory;
mod progress;
mod python;
mod rounds;
mod tasks;
mod tls;
mod wire;
