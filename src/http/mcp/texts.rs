//! The one line of text each `/mcp` tool result carries for the model before the
//! API's JSON (which follows it as text, and as structured content): what happened and
//! which tool to call next. "The parameters below" are the JSON's `parameters`.

use chrono::{DateTime, Utc};

use crate::approval::{Approval, Status};
use crate::store::Created;

/// What a request's answer means for the caller, in one line: as [`state`], except
/// for an approval this request executed (`execute_if_approved`), which is to run now.
pub fn created(created: &Created, slack: bool) -> String {
    let a = &created.approval;
    if created.spent {
        return format!(
            "Approval {} is approved and this request executed it: run the call now, with exactly the parameters below{} (do not call execute_approved).",
            a.id,
            edited(a)
        );
    }
    state(a, None, slack)
}

/// What an approval's state means for the caller, in one line. A pending one names
/// its Slack channel (and message) when this server has `slack`: without it, the
/// route's channel is where nobody is asked.
pub fn state(a: &Approval, permalink: Option<&str>, slack: bool) -> String {
    let id = a.id;
    match a.status {
        Status::Pending => {
            let channel = a.routing.channel.as_ref().filter(|_| slack);
            let place = match (channel, permalink) {
                (Some(channel), Some(link)) => {
                    format!(" in Slack channel {} ({link})", channel.as_str())
                }
                (Some(channel), None) => format!(" in Slack channel {}", channel.as_str()),
                (None, _) => String::new(),
            };
            format!(
                "Approval {id} is waiting for a decision{place} until {}. Call check_approval_status with this approval_id (and wait up to 50 s) to learn the decision; do not run the call yet.",
                time(a.expires_at)
            )
        }
        Status::Approved => format!(
            "Approval {id} is approved{}. Call execute_approved with this approval_id and exactly the parameters below{} before {}, then run the call with them.",
            by(a.decided_by.as_deref()),
            edited(a),
            time(a.expires_at)
        ),
        Status::Denied => match a.reason.as_deref() {
            Some(reason) if !reason.trim().is_empty() => format!(
                "Approval {id} is denied{}: {reason}. Do not run the call.",
                by(a.decided_by.as_deref())
            ),
            _ => format!(
                "Approval {id} is denied{}. Do not run the call.",
                by(a.decided_by.as_deref())
            ),
        },
        Status::Expired => format!(
            "Nobody decided approval {id} before {}. Do not run the call; ask again if it is still needed.",
            time(a.expires_at)
        ),
        Status::Executed => {
            format!("Approval {id} was already used. Do not run the call again.")
        }
        Status::Cancelled => format!("Approval {id} was cancelled. Do not run the call."),
    }
}

/// After a successful `execute_approved`.
pub fn executed(a: &Approval) -> String {
    format!(
        "Approval {} is spent on this call: run {} now, once, with exactly the parameters below{}.",
        a.id,
        a.tool_name,
        edited(a)
    )
}

/// After *Edit & approve*: that the parameters to run are not the ones asked for.
fn edited(a: &Approval) -> &'static str {
    match a.original_parameters {
        Some(_) => " (an approver edited them: they are not the ones asked for)",
        None => "",
    }
}

fn by(who: Option<&str>) -> String {
    who.map_or(String::new(), |who| format!(" by {who}"))
}

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}
