//! The approval flow of one `tools/call`: ask signoff, hold the call while a person
//! decides (long-polls, no polling loop), then pass the single-use gate. Fails closed:
//! anything but a successful execute is a refusal, and the call does not run.

use std::time::Duration;

use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::{Peer, RoleServer};
use rmcp::task_manager::TaskContext;
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Api, ApiError, View};
use super::holders::{Holder, Holders};
use super::relay::Sent;
use super::texts;
use super::watch::Watch;

/// Larger arguments are refused before signoff is asked (its body limit is 1 MiB).
const MAX_ARGUMENTS: usize = 1024 * 1024 - 4096;

/// One call as the gate sees it.
#[derive(Debug)]
pub struct Call {
    pub tool: String,
    pub arguments: Map<String, Value>,
    pub annotations: Option<Value>,
    pub requested_by: Option<String>,
}

/// What happens to a call.
#[derive(Debug)]
pub enum Verdict {
    /// Run it with these (the approved) arguments; `note` says what an approver changed,
    /// `approval` is the approval it spends (named if the upstream dies under the call).
    Run {
        arguments: Map<String, Value>,
        note: Option<String>,
        approval: String,
    },
    /// Do not run it; the text says why.
    Refuse(String),
}

/// Where a held call reports that it waits.
pub enum Progress {
    /// `notifications/progress` under the request's progress token; `sent` keeps the
    /// values, so that the upstream's progress once the call runs comes after them.
    Notify {
        peer: Peer<RoleServer>,
        token: ProgressToken,
        sent: Sent,
    },
    /// The status message of the call's task (tasks extension).
    Task(TaskContext),
}

/// Why a call no longer wants an approval.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// The client cancelled it, or went away.
    Cancelled,
    /// The upstream server is gone.
    UpstreamGone,
}

impl Stop {
    /// The refusal of a call stopped while it waited for its approval (withdrawn).
    fn held(self) -> String {
        match self {
            Stop::Cancelled => texts::cancelled(),
            Stop::UpstreamGone => texts::upstream_gone(),
        }
    }

    /// The refusal of a call stopped before it asked for one.
    fn unasked(self) -> String {
        match self {
            Stop::Cancelled => texts::cancelled_unasked(),
            Stop::UpstreamGone => texts::upstream_gone(),
        }
    }
}

/// The gate, shared by every call of one proxy.
pub struct Gate {
    pub api: Api,
    /// Where held calls learn of their decisions.
    pub watch: Watch,
    pub server: String,
    /// How long one call is held before the agent is told to call again.
    pub hold: Duration,
    /// How often a held call reports progress.
    pub interval: Duration,
    /// Cancelled when the client goes away: held calls withdraw their approvals.
    pub client_gone: CancellationToken,
    /// Cancelled when the upstream server exits.
    pub upstream_gone: CancellationToken,
    /// The calls waiting for each approval, or about to ask for one.
    pub holders: Holders,
}

impl Gate {
    /// Decides `call`; `cancelled` fires when the client cancels this request. The call
    /// counts among the [`Holders`] from before it asks until it is decided, and a
    /// call that no longer wants its approval withdraws it here, when no identical
    /// call waits for it or is about to ask. A call stopped before it asks (while an
    /// identical call's withdrawal is on its way) never asks.
    pub async fn decide(
        &self,
        call: &Call,
        cancelled: &CancellationToken,
        progress: Option<&Progress>,
    ) -> Verdict {
        let mut holder = tokio::select! {
            holder = self.holders.hold_settled(&call.tool, &call.arguments) => holder,
            stop = self.stop(cancelled) => return Verdict::Refuse(stop.unasked()),
        };
        let verdict = self
            .decide_held(call, &mut holder, cancelled, progress)
            .await;
        // Identical calls wait to ask until this withdrawal has ended.
        if let Some(withdrawal) = holder.leave()
            && let Err(error) = Box::pin(self.api.cancel(&withdrawal.id)).await
        {
            tracing::warn!(approval_id = %withdrawal.id, %error, "could not cancel the approval");
        }
        verdict
    }

    async fn decide_held(
        &self,
        call: &Call,
        holder: &mut Holder<'_>,
        cancelled: &CancellationToken,
        progress: Option<&Progress>,
    ) -> Verdict {
        // Nobody wants it any more: nothing is asked (no Slack message, and no
        // auto-approval spent for a call that would not run).
        if let Some(stop) = self.stopped(cancelled) {
            return Verdict::Refuse(stop.unasked());
        }
        // The one-off requests are boxed: a held call's future keeps only the hold.
        let view = match Box::pin(self.ask(call)).await {
            Ok(view) => view,
            Err(refusal) => return Verdict::Refuse(refusal),
        };
        holder.answered(&view.approval_id);
        if view.status == "executed" {
            // Run only what this request spent: an approval executed earlier ran then.
            // A server from before the field says nothing; the proxy sends no
            // idempotency key, so there an executed answer is its own spend.
            return match view.spent_by_this_request {
                Some(false) => Verdict::Refuse(texts::decided(&view)),
                Some(true) | None => self.run(view, cancelled),
            };
        }
        let view = match self.hold(view, holder, cancelled, progress).await {
            Ok(view) => view,
            Err(refusal) => return Verdict::Refuse(refusal),
        };
        match view.status.as_str() {
            // Decided as the client cancelled or went away: nobody wants it run, so the
            // approval is not spent (it expires unexecuted) and nothing runs.
            "approved" if cancelled.is_cancelled() || self.client_gone.is_cancelled() => {
                tracing::info!(approval_id = %view.approval_id, "approved as its call was cancelled: not executed");
                Verdict::Refuse(texts::cancelled_when_approved())
            }
            "approved" => Box::pin(self.execute(&call.tool, &view, cancelled)).await,
            _ => Verdict::Refuse(texts::decided(&view)),
        }
    }

    /// Asks signoff about `call`; its answer, or a refusal. The request body lives only
    /// here, not for as long as the call is held.
    async fn ask(&self, call: &Call) -> Result<View, String> {
        let parameters = Value::Object(call.arguments.clone());
        let size = parameters.to_string().len();
        if size > MAX_ARGUMENTS {
            return Err(format!(
                "The arguments are too large to ask for approval ({size} bytes, over 1 MiB). The call was not run."
            ));
        }
        let body = json!({
            "tool_name": call.tool,
            "parameters": parameters,
            "server": self.server,
            "annotations": call.annotations.clone().unwrap_or_else(|| json!({})),
            "requested_by": call.requested_by,
            // An approved answer is spent at once: an auto-approved call is one request.
            "execute_if_approved": true,
        });
        self.api
            .create(&body)
            .await
            .map_err(|error| texts::api_failed(&error))
    }

    /// Waits while `view` is pending, up to the hold; the decided view, or a refusal
    /// (the `holder` then withdraws the approval when the call was cancelled, its
    /// client left or the upstream went, also while the proxy starts to follow the
    /// decision). The decision comes from the proxy's one event stream ([`Watch`]),
    /// read once after it listens in case it came before.
    async fn hold(
        &self,
        view: View,
        holder: &mut Holder<'_>,
        cancelled: &CancellationToken,
        progress: Option<&Progress>,
    ) -> Result<View, String> {
        if view.status != "pending" {
            return Ok(view);
        }
        let id = view.approval_id.clone();
        // No deadline (a hold past the clock's range) is no limit.
        let deadline = Instant::now().checked_add(self.hold);
        // Past the ask, a failure leaves the approval open for the same call again.
        let watched = tokio::select! {
            watched = Box::pin(self.watch.watch(&id)) => watched,
            stop = self.stop(cancelled) => return Err(withdrawn(holder, stop)),
        };
        let mut waiting = match watched {
            Ok(waiting) => waiting,
            Err(error) => return Err(self.lost(&view, &error, holder, cancelled)),
        };
        let read = tokio::select! {
            read = Box::pin(self.api.get(&id)) => read,
            stop = self.stop(cancelled) => return Err(withdrawn(holder, stop)),
        };
        let view = match read {
            Ok(now) if now.status != "pending" => return Ok(now),
            Ok(now) => now,
            Err(error) => return Err(self.lost(&view, &error, holder, cancelled)),
        };
        loop {
            let left = deadline.map_or(Duration::MAX, |deadline| {
                deadline.saturating_duration_since(Instant::now())
            });
            if left.is_zero() {
                return Err(texts::still_pending(&view));
            }
            if let Some(progress) = progress {
                Box::pin(report(progress, texts::waiting(&view))).await;
            }
            let stop = tokio::select! {
                decided = waiting.decided() => return match decided {
                    Ok(decided) => Ok(decided),
                    Err(error) => Err(self.lost(&view, &error, holder, cancelled)),
                },
                _ = tokio::time::sleep(left.min(self.interval)) => continue,
                stop = self.stop(cancelled) => stop,
            };
            return Err(withdrawn(holder, stop));
        }
    }

    /// Why the call should stop now, if it should.
    fn stopped(&self, cancelled: &CancellationToken) -> Option<Stop> {
        if cancelled.is_cancelled() || self.client_gone.is_cancelled() {
            Some(Stop::Cancelled)
        } else if self.upstream_gone.is_cancelled() {
            Some(Stop::UpstreamGone)
        } else {
            None
        }
    }

    /// Resolves once the call should stop: cancelled, its client gone, or the
    /// upstream gone.
    async fn stop(&self, cancelled: &CancellationToken) -> Stop {
        tokio::select! {
            _ = cancelled.cancelled() => Stop::Cancelled,
            _ = self.client_gone.cancelled() => Stop::Cancelled,
            _ = self.upstream_gone.cancelled() => Stop::UpstreamGone,
        }
    }

    /// The refusal of a held call whose decision the proxy lost track of (`error`):
    /// the approval stays open for the same call again, unless the call was stopped
    /// meanwhile, which withdraws it.
    fn lost(
        &self,
        view: &View,
        error: &ApiError,
        holder: &mut Holder<'_>,
        cancelled: &CancellationToken,
    ) -> String {
        match self.stopped(cancelled) {
            Some(stop) => withdrawn(holder, stop),
            None => texts::lost_track(view, error),
        }
    }

    /// A call whose approval signoff spent as it answered: run what it answered.
    fn run(&self, view: View, cancelled: &CancellationToken) -> Verdict {
        let parameters = view.parameters.clone();
        self.run_with(&view, parameters, cancelled)
    }

    async fn execute(&self, tool: &str, view: &View, cancelled: &CancellationToken) -> Verdict {
        if self.upstream_gone.is_cancelled() {
            return Verdict::Refuse(texts::upstream_gone());
        }
        match self
            .api
            .execute(&view.approval_id, tool, &view.parameters)
            .await
        {
            Ok(parameters) => self.run_with(view, parameters, cancelled),
            Err(error) => Verdict::Refuse(texts::not_executable(view, &error)),
        }
    }

    /// Runs the call with `parameters`, the ones its spent approval allows, unless the
    /// upstream has gone meanwhile, or the client cancelled the call or went away while
    /// signoff spent the approval (in the create of an auto-approved call, or in the
    /// execute): nobody wants it run any more. Spending cannot be undone, so the
    /// approval stays used up, and the refusal and the log say that it was.
    fn run_with(&self, view: &View, parameters: Value, cancelled: &CancellationToken) -> Verdict {
        if self.upstream_gone.is_cancelled() {
            return Verdict::Refuse(texts::upstream_gone());
        }
        if cancelled.is_cancelled() || self.client_gone.is_cancelled() {
            tracing::warn!(approval_id = %view.approval_id, "approval spent as its call was cancelled: the call was not run");
            return Verdict::Refuse(texts::cancelled_when_spent());
        }
        match parameters {
            Value::Object(arguments) => Verdict::Run {
                note: texts::edited(view, &Value::Object(arguments.clone())),
                arguments,
                approval: view.approval_id.clone(),
            },
            other => Verdict::Refuse(format!(
                "signoff returned parameters that are not an object ({other}). The call was not run."
            )),
        }
    }
}

/// A held call's approval is withdrawn as it stops; the refusal.
fn withdrawn(holder: &mut Holder<'_>, stop: Stop) -> String {
    holder.withdraw();
    stop.held()
}

/// Reports that the call still waits: progress 1, 2, 3… under its token, or its task's
/// status.
async fn report(progress: &Progress, message: String) {
    match progress {
        Progress::Notify { peer, token, sent } => {
            let value = sent.held();
            let mut params = ProgressNotificationParam::new(token.clone(), value);
            params.message = Some(message);
            if let Err(error) = peer.notify_progress(params).await {
                tracing::debug!(%error, "progress not delivered");
            }
        }
        Progress::Task(task) => task.set_status_message(message),
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
