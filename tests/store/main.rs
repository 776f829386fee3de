//! The store suite: every scenario runs against SQLite and against PostgreSQL
//! (`SIGNOFF_TEST_POSTGRES_URL`), through the public `Store` API.

mod break_glass;
mod checkpoints;
mod clock;
#[path = "../common/mod.rs"]
mod common;
mod concurrency;
mod fences;
mod helpers;
mod idempotency_keys;
mod lifecycle;
mod lost_commits;
mod operations;
mod slack_votes;
