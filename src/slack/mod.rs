//! Slack: verifying Slack's signed requests ([`verify`]), rendering approvals as Block Kit
//! messages ([`blocks`], a batch of look-alike requests in [`batch`]) and modals
//! ([`modals`]), with the helpers in [`text`] and the parameters' rendering in
//! [`params`]), parsing `/approvals`
//! slash commands ([`commands`]), the Web API ([`client`]) and who may decide
//! ([`approvers`]). The HTTP handlers that Slack calls are `crate::http::slack`.

pub mod app;
pub mod approvers;
pub mod batch;
pub mod blocks;
pub mod client;
pub mod commands;
pub mod modals;
pub mod params;
pub mod text;
pub mod verify;

#[cfg(test)]
mod testutil;
