//! Slack: verifying Slack's signed requests ([`verify`]), rendering approvals as Block Kit
//! messages and modals ([`blocks`], with the escaping and truncation helpers in
//! [`text`]), and parsing `/approvals` slash commands ([`commands`]). Everything here is
//! pure; the Web API calls and HTTP handlers live beside it.

pub mod app;
pub mod approvers;
pub mod blocks;
pub mod client;
pub mod commands;
pub mod routes;
pub mod text;
pub mod verify;

#[cfg(test)]
mod testutil;
