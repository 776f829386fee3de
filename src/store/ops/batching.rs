//! Slack batches (`batch_window`), not to be confused with the writer's batches of
//! operations: requests that are alike but for their parameter values (one requester,
//! server, tool and routing, the same parameter names, one channel) and arrive within the
//! window of the first are posted as one message listing them. Each stays its own
//! approval, with its own decision, execute, audit events and expiry.
//!
//! The first request leads the batch: its post is due when the window ends. A request
//! that arrives while the batch is open joins it and gets no post of its own. The
//! leader's post closes the batch before it reads the members, in a transaction of its
//! own (`Op::CloseBatch`); a join happens inside the create's transaction under the batch's
//! lock (PostgreSQL), so every member is listed by the message it joined.

use serde_json::json;

use crate::approval::Approval;
use crate::jobs::{Job, MessageKind, NewJob};
use crate::store::backend::Tx;

/// Most requests in one message: each takes up to three of the 50 blocks Slack allows.
pub const MAX_BATCH: i64 = 10;

/// Where a new approval's channel post goes, given the post `jobs::plan` planned for
/// it: into an open batch of look-alike requests (the post is dropped: the batch's
/// message lists it), or leading a new batch (the post waits for the window and becomes
/// the batch's). Alone, as planned, when its policy has no window, nobody is to post
/// it, it has no requester, or it expires before a window would end.
pub(crate) async fn place<T: Tx>(
    tx: &mut T,
    approval: &Approval,
    jobs: &mut Vec<NewJob>,
) -> sqlx::Result<()> {
    let (Some(window_ms), Some(token)) = (
        approval.routing.batch_window_ms,
        approval.token_name.as_deref(),
    ) else {
        return Ok(());
    };
    let Some(post) = jobs.iter().position(is_channel_post) else {
        return Ok(());
    };
    let now = approval.created_at;
    let key = batch_key(approval, token);
    if let Some((leader, size)) = tx
        .open_batch(&key, now, approval.expires_at, MAX_BATCH)
        .await?
    {
        tx.join_batch(leader, approval.id, size).await?;
        jobs.remove(post);
        return Ok(());
    }
    let window = chrono::Duration::milliseconds(i64::try_from(window_ms).unwrap_or(i64::MAX));
    let closes_at = now + window;
    if closes_at >= approval.expires_at {
        return Ok(());
    }
    tx.start_batch(approval.id, &key, closes_at).await?;
    let job = &mut jobs[post];
    job.due_at = closes_at;
    if let Job::SlackPost { batch, .. } = &mut job.job {
        *batch = true;
    }
    Ok(())
}

fn is_channel_post(job: &NewJob) -> bool {
    matches!(
        job.job,
        Job::SlackPost {
            kind: MessageKind::Main,
            ..
        }
    )
}

/// What look-alike requests share, hashed: the channel, requester, server, tool, the
/// routing (the rule that matched, as it was then: its approvers, reminders and
/// escalation, so that the batch is nudged as one) and the parameter names (their
/// values may differ).
fn batch_key(approval: &Approval, token: &str) -> String {
    let mut names: Vec<&str> = approval
        .parameters
        .as_object()
        .map(|object| object.keys().map(String::as_str).collect())
        .unwrap_or_default();
    names.sort_unstable();
    let shared = json!([
        approval.routing.channel,
        token,
        approval.server,
        approval.tool_name,
        approval.routing,
        names,
    ]);
    crate::canonical::sha256_hex(&shared)
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::approval::machine;
    use crate::approval::{ApprovalId, NewApproval};
    use crate::policy::Policy;

    fn opened(tool: &str, parameters: serde_json::Value) -> Approval {
        let policy =
            Policy::from_toml_str("[defaults]\nchannel = \"C1\"\nbatch_window = \"30s\"\n")
                .unwrap();
        let mut request = NewApproval::new(tool, parameters);
        request.token_name = Some("agent".into());
        let class = policy.classify(tool, &request.parameters, None);
        machine::open(ApprovalId::new(), request, &class, Utc::now()).next
    }

    #[test]
    fn requests_alike_but_for_values_share_a_key_and_others_do_not() {
        let key = |a: &Approval| batch_key(a, "agent");
        let first = opened("send_email", json!({"to": "a@x", "body": "hi"}));
        let same = opened("send_email", json!({"body": "other", "to": "b@x"}));
        assert_eq!(key(&first), key(&same));
        let more_names = opened("send_email", json!({"to": "a@x", "body": "hi", "cc": 1}));
        let other_tool = opened("send_sms", json!({"to": "a@x", "body": "hi"}));
        for other in [more_names, other_tool] {
            assert_ne!(key(&first), key(&other));
        }
        assert_ne!(key(&first), batch_key(&same, "other-agent"));
        let mut elsewhere = same.clone();
        elsewhere.routing.channel = Some("C2".into());
        assert_ne!(key(&first), key(&elsewhere));
        let mut on_server = same.clone();
        on_server.server = Some("mail".into());
        assert_ne!(key(&first), key(&on_server));
        // The rule as another replica's policy has it (another escalation): a batch of
        // its own, so that a batch's members are reminded and escalated alike.
        let mut other_version = same;
        other_version.routing.escalate_after_secs = Some(3600);
        assert_ne!(key(&first), key(&other_version));
    }
}
