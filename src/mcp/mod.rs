//! MCP: `signoff proxy`, which puts the approval gate in front of any MCP server's
//! `tools/call` and passes everything else through (DESIGN.md, "MCP").

pub mod proxy;
