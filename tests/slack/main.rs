//! Slack, end to end: the real router and outbox against a fake Slack Web API, driven
//! by payloads signed and shaped as Slack sends them.

mod batch_nudges;
mod batching;
mod claims;
mod commands;
#[path = "../common/mod.rs"]
mod common;
mod edits;
mod escalation;
mod fatigue;
mod fuzz;
mod helpers;
mod hostile;
mod intake;
mod interactions;
mod leases;
mod lost_posts;
mod messages;
mod parameters;
mod schedule;
mod shutdown;
mod slow_callbacks;
mod slow_slack;
mod socket;
mod socket_link;
mod thread_replies;
mod turns;
mod without_slack;
