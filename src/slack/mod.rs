//! Slack: verifying Slack's signed requests ([`verify`]), rendering approvals as Block Kit
//! messages and modals ([`blocks`], with the helpers in [`text`]), parsing `/approvals`
//! slash commands ([`commands`]), the Web API ([`client`]) and who may decide
//! ([`approvers`]). The HTTP handlers that Slack calls are `crate::http::slack`.

pub mod app;
pub mod approvers;
pub mod blocks;
pub mod client;
pub mod commands;
pub mod text;
pub mod verify;

#[cfg(test)]
mod testutil;
