//! The tasks extension (`io.modelcontextprotocol/tasks`): a client that declares it
//! gets a task for each call instead of a held request. The task is `working` with
//! the waiting message as its status, then `completed` with the upstream's result (or
//! the refusal as an `isError` result); cancelling the task cancels the approval. A
//! task is `cancelled` when its call did not reach the upstream, or when it did and the
//! cancel was passed on to the upstream before it answered; one the upstream answered
//! completes with the answer, even if the cancel came just before it settled.

use std::sync::Arc;
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolRequestParams, CallToolResult, Task};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::task_manager::{TaskExit, TaskOptions};

use super::calls::{Calls, Reported};
use super::gate::Progress;

/// How long a task lives past the hold (see [`ttl`]).
const KEEP: Duration = Duration::from_secs(3600);

/// A task's TTL: the hold and an hour. `rmcp` fails a task still running a TTL after
/// it began (dropping its call: a call sent upstream is cancelled there), and keeps
/// one that ended, with its result, for a TTL after it ended, reading through every
/// task kept at each `tasks/get`. Past the ask, a call waits for its decision no
/// longer than the hold (then its task completes, saying to call again), and signoff's
/// answers come within 30 s each, so the hour is left to the upstream to run the call
/// and to the client to fetch the result: a busy client's finished tasks are gone an
/// hour or so after they ended, not kept a day.
pub fn ttl(hold: Duration) -> Duration {
    hold.saturating_add(KEEP)
}

/// Starts `params` as a task; its seed state for the `CreateTaskResult`.
pub fn spawn(
    calls: &Arc<Calls>,
    params: CallToolRequestParams,
    context: &RequestContext<RoleServer>,
) -> Task {
    // The request ends at once; the call lives on in a context of its own.
    let mut own = RequestContext::new(context.id.clone(), context.peer.clone());
    own.meta = context.meta.clone();
    own.extensions = context.extensions.clone();
    let calls = calls.clone();
    let options = TaskOptions::new()
        .with_ttl_ms(u64::try_from(calls.task_ttl.as_millis()).unwrap_or(u64::MAX))
        .with_status_message("asking signoff for approval");
    calls.clone().tasks.spawn(options, move |task| {
        Box::pin(async move {
            let cancel = own.ct.clone();
            let watched = task.clone();
            let watcher = tokio::spawn(async move {
                watched.cancelled().await;
                cancel.cancel();
            });
            let reported = calls
                .call_reporting(params, &own, Some(Progress::Task(task.clone())))
                .await;
            watcher.abort();
            settle(reported, task.is_cancel_requested())
        })
    })
}

/// How a task ends. `cancelled` when it was cancelled and its call did not reach the
/// upstream (refused before it was sent), or reached it and the cancel was passed on
/// before it answered (its flight cancelled); a call the upstream answered completes
/// with that answer, cancel or not: it ran, and its approval is spent, so throwing the
/// result away would hide what happened.
fn settle(reported: Reported, cancel_requested: bool) -> Result<CallToolResult, TaskExit> {
    let (sent, ended) = match reported {
        Reported::NotSent(ended) => (false, ended),
        Reported::Sent(ended) => (true, ended),
    };
    let flight_cancelled = |error: &McpError| super::relay::is_cancelled(error);
    match ended {
        _ if cancel_requested && !sent => Err(TaskExit::Cancelled),
        Err(error) if cancel_requested && flight_cancelled(&error) => Err(TaskExit::Cancelled),
        ended => ended.map_err(TaskExit::Error),
    }
}

#[cfg(test)]
mod tests {
    use rmcp::model::ContentBlock;

    use super::*;
    use crate::mcp::proxy::relay;

    fn answer() -> CallToolResult {
        CallToolResult::success(vec![ContentBlock::text("the upstream's answer")])
    }

    fn refusal() -> CallToolResult {
        CallToolResult::error(vec![ContentBlock::text("Cancelled while waiting")])
    }

    fn text(settled: &Result<CallToolResult, TaskExit>) -> String {
        let Ok(result) = settled else {
            panic!("not completed")
        };
        let content = serde_json::to_value(&result.content).unwrap();
        content[0]["text"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_task_cancelled_after_the_upstream_answered_completes_with_the_answer() {
        let settled = settle(Reported::Sent(Ok(answer())), true);
        assert_eq!(text(&settled), "the upstream's answer");
    }

    #[test]
    fn a_task_cancelled_before_its_call_was_sent_or_while_it_flew_is_cancelled() {
        let refused = settle(Reported::NotSent(Ok(refusal())), true);
        assert!(matches!(refused, Err(TaskExit::Cancelled)));
        let failed = Reported::NotSent(Err(McpError::internal_error("tools/list failed", None)));
        assert!(matches!(settle(failed, true), Err(TaskExit::Cancelled)));
        let landed = settle(Reported::Sent(Err(relay::cancelled())), true);
        assert!(matches!(landed, Err(TaskExit::Cancelled)));
    }

    #[test]
    fn a_task_not_cancelled_ends_as_its_call_did() {
        assert_eq!(
            text(&settle(Reported::NotSent(Ok(refusal())), false)),
            "Cancelled while waiting"
        );
        assert_eq!(
            text(&settle(Reported::Sent(Ok(answer())), false)),
            "the upstream's answer"
        );
        let error = McpError::internal_error("the upstream failed", None);
        let failed = settle(Reported::Sent(Err(error.clone())), false);
        assert!(matches!(failed, Err(TaskExit::Error(e)) if e == error));
    }

    #[test]
    fn a_sent_call_that_failed_as_it_was_cancelled_ends_as_the_failure() {
        let error = McpError::internal_error("the upstream failed", None);
        let failed = settle(Reported::Sent(Err(error.clone())), true);
        assert!(matches!(failed, Err(TaskExit::Error(e)) if e == error));
    }
}
