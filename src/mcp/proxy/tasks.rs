//! The tasks extension (`io.modelcontextprotocol/tasks`): a client that declares it
//! gets a task for each call instead of a held request. The task is `working` with
//! the waiting message as its status, then `completed` with the upstream's result (or
//! the refusal as an `isError` result); cancelling the task cancels the approval.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, Task};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::task_manager::{TaskExit, TaskOptions};

use super::calls::Calls;
use super::gate::Progress;

/// Tasks outlive any approval (`rmcp` aborts a task when its TTL runs out).
const TTL: Duration = Duration::from_secs(24 * 3600);

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
        .with_ttl_ms(TTL.as_millis() as u64)
        .with_status_message("asking signoff for approval");
    calls.clone().tasks.spawn(options, move |task| {
        Box::pin(async move {
            let cancel = own.ct.clone();
            let watched = task.clone();
            let watcher = tokio::spawn(async move {
                watched.cancelled().await;
                cancel.cancel();
            });
            let result = calls
                .call_reporting(params, &own, Some(Progress::Task(task.clone())))
                .await;
            watcher.abort();
            if task.is_cancel_requested() {
                return Err(TaskExit::Cancelled);
            }
            result.map_err(TaskExit::Error)
        })
    })
}
