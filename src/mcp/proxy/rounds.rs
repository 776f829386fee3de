//! Multi-round-trip requests (MRTR) for 2026-07-28 clients. Such a client takes no
//! requests from a server, yet an upstream still asks for sampling, elicitation or the
//! client's roots in the middle of a tool call, prompt or resource read (as requests on
//! the session protocol, or as `input_required` answers that [`super::flight`] turns
//! into questions). The proxy then answers the client's request with an
//! `input_required` result that carries those questions, and keeps the upstream request
//! running. The client's retry (the same request again, with `inputResponses` and the
//! `requestState`) brings the answers: they go to the upstream, and the retry waits for
//! the result or the next round.
//!
//! A retry never passes the gate again. The approval was spent once, when the call was
//! forwarded; the retry only rejoins that running call, and must repeat its tool and
//! arguments. A round the client does not come back for is given up after a while: the
//! upstream's requests get an error and the upstream request is cancelled. A late
//! retry of a tool round that ended so, or that an earlier retry took, is told that
//! the call may have run ([`Spent`]), not to send it again as if nothing ran. A
//! 2026-07-28 client's task carries the questions as the task's own input requests
//! instead (`tasks/get` shows them, `tasks/update` answers them). An upstream on
//! 2026-07-28 asks in its answer to one request: its questions go to that request's
//! round or task only ([`Origin`]). One on the session protocol asks tied to no
//! request, and any call may carry its questions.
//!
//! Every question the upstream asks is answered, by the client or with an error: one
//! that waits for a call to carry it when no call is left that could (the last carrier
//! ended, the last parked call was given up) is handed back to be asked another way (a
//! task's input request) or refused, and when the client leaves every parked call is
//! given up and every question refused.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    InputRequest, InputRequiredResult, InputResponses, JsonObject, ProtocolVersion, ServerResult,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::task_manager::{TaskContext, TaskExit};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::flight::Flight;
use super::texts;

/// A request that went upstream (a tool call, a prompt, a resource read), as its
/// retries must repeat it.
pub struct Round {
    /// What it asks for: "the tool echo", "the prompt greet", "the resource …".
    pub what: String,
    /// The arguments as the client sent them (before any edit by an approver).
    pub arguments: Option<JsonObject>,
    /// What an approver changed: the first text of the call's result.
    pub note: Option<String>,
    /// The approval a tool call spent as it went upstream (none for a prompt or a
    /// resource read): named if the upstream dies under the call.
    pub approval: Option<String>,
}

/// How a call's wait for the upstream ended.
pub enum Landed {
    /// The upstream answered (or the client cancelled); `note` as in [`Round`].
    Answer {
        answer: Box<Result<ServerResult, McpError>>,
        note: Option<String>,
    },
    /// The upstream asked the client something: the call is parked, and this is
    /// what the client gets now.
    Input(InputRequiredResult),
}

/// The client request whose upstream request asked a question: an upstream on
/// 2026-07-28 asks in its answer to one request, so its question goes to that
/// request (or its task) only. An upstream on the session protocol asks on its own,
/// tied to no request (`None`): any request of the client's may carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin(u64);

/// Whether a call from `carrier` may carry a question from `asker`.
fn carries(carrier: Option<Origin>, asker: Option<Origin>) -> bool {
    asker.is_none() || asker == carrier
}

/// One request of the upstream's for the client.
struct Question {
    /// Its key in `inputRequests` / `inputResponses`.
    key: String,
    /// The client request it was asked in, when known.
    origin: Option<Origin>,
    request: InputRequest,
    /// Dropped unanswered: the upstream hears an error.
    answer: oneshot::Sender<Carried>,
}

/// What became of an upstream's question that waited for a call to carry it.
#[derive(Debug)]
pub enum Carried {
    /// The client's answer, in a retry.
    Answered(Value),
    /// No call was left to carry it to the client: to be asked another way.
    Uncarried,
}

/// How long a tool round that ended is remembered ([`Spent`]) for a late retry.
const SPENT_KEPT: Duration = Duration::from_secs(60 * 60);

/// How many ended tool rounds are remembered at most (the oldest is forgotten first).
const MOST_SPENT: usize = 1024;

/// A tool round that ended after its call went upstream (given up, or taken by a
/// retry): a later retry with its `requestState` is told the call may have run, not
/// that nothing was run.
struct Spent {
    request_state: String,
    approval: String,
    /// Given up for want of the client's answers (else taken by a retry).
    given_up: bool,
    until: Instant,
}

/// A call handed back to the client as `input_required`, until its retry.
struct Parked {
    flight: Flight,
    round: Round,
    questions: Vec<Question>,
}

#[derive(Default)]
struct State {
    /// Calls of 2026-07-28 clients waiting on the upstream right now, by their
    /// origin (one entry each).
    carriers: Vec<Option<Origin>>,
    /// The upstream's requests no call has carried to the client yet.
    unasked: Vec<Question>,
    /// Parked calls, by their `requestState`.
    parked: HashMap<String, Parked>,
    /// Tool rounds that ended, oldest first.
    spent: VecDeque<Spent>,
    /// Tasks of 2026-07-28 clients waiting on the upstream (tasks extension): where a
    /// question goes when no call can carry it. It shows in `tasks/get` as
    /// `input_required`, and the client's `tasks/update` answers it.
    tasks: Vec<(u64, Option<Origin>, TaskContext)>,
    /// Numbers the tasks' registrations.
    next_task: u64,
    /// Numbers the questions' keys.
    asked: u64,
    /// The client has gone: nothing is carried any more.
    closed: bool,
}

impl State {
    /// A fresh key for `request` in `inputRequests` (`sampling-1`, `roots-2`, …).
    fn key(&mut self, request: &InputRequest) -> String {
        self.asked += 1;
        format!("{}-{}", kind(request), self.asked)
    }

    /// Remembers `round`, under `request_state`, as ended (see [`Spent`]) when it is
    /// a tool call's.
    fn spend(&mut self, request_state: &str, round: &Round, given_up: bool) {
        let Some(approval) = &round.approval else {
            return;
        };
        let now = Instant::now();
        while (self.spent.front()).is_some_and(|spent| spent.until <= now)
            || self.spent.len() >= MOST_SPENT
        {
            self.spent.pop_front();
        }
        self.spent.push_back(Spent {
            request_state: request_state.to_owned(),
            approval: approval.clone(),
            given_up,
            until: now + SPENT_KEPT,
        });
    }

    /// Why a retry naming `request_state`, which no parked call has, is refused; `tool`
    /// when it is a tool call's.
    fn unknown(&self, request_state: &str, within: Duration, tool: bool) -> String {
        let now = Instant::now();
        let spent = self
            .spent
            .iter()
            .find(|spent| spent.request_state == request_state && spent.until > now);
        match spent {
            Some(spent) => texts::spent_round(&spent.approval, spent.given_up.then_some(within)),
            None => texts::unknown_round(within, tool),
        }
    }

    /// Whether a call waiting on the upstream, or parked for a retry, may carry a
    /// question asked from `origin`.
    fn can_carry(&self, origin: Option<Origin>) -> bool {
        (self.carriers.iter()).any(|carrier| carries(*carrier, origin))
            || (self.parked.values()).any(|parked| carries(parked.flight.origin(), origin))
    }

    /// Hands the questions waiting for a call back to their askers when no call is
    /// left to carry them: none that may waits on the upstream, none is parked for a
    /// retry.
    fn hand_back_uncarried(&mut self) {
        let (carried, uncarried): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unasked)
            .into_iter()
            .partition(|question| self.can_carry(question.origin));
        self.unasked = carried;
        if uncarried.is_empty() {
            return;
        }
        tracing::info!(
            count = uncarried.len(),
            "no MCP client's call is left to carry the server's requests: asked another way"
        );
        for question in uncarried {
            let _ = question.answer.send(Carried::Uncarried);
        }
    }
}

struct Inner {
    state: Mutex<State>,
    /// Wakes the carriers when the upstream asks something.
    asked: Notify,
    /// How long a parked call waits for the client's retry.
    answer_within: Duration,
    /// Numbers the origins.
    origins: AtomicU64,
}

/// The rounds of one proxy.
#[derive(Clone)]
pub struct Rounds(Arc<Inner>);

/// Keeps a task registered (see `State::tasks`) while it waits.
pub struct CarryingTask<'a>(&'a Rounds, u64);

impl Drop for CarryingTask<'_> {
    fn drop(&mut self) {
        self.0.lock().tasks.retain(|(n, ..)| *n != self.1);
    }
}

/// Counts a carrier, from its origin, while it waits.
struct Carrying<'a>(&'a Rounds, Option<Origin>);

impl Drop for Carrying<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        if let Some(at) = state.carriers.iter().position(|origin| *origin == self.1) {
            state.carriers.swap_remove(at);
        }
        state.hand_back_uncarried();
    }
}

impl Rounds {
    pub fn new(answer_within: Duration) -> Self {
        Self(Arc::new(Inner {
            state: Mutex::default(),
            asked: Notify::new(),
            answer_within,
            origins: AtomicU64::new(0),
        }))
    }

    /// A fresh origin, for a client request's upstream request (see [`Origin`]).
    pub fn origin(&self) -> Origin {
        Origin(self.0.origins.fetch_add(1, Ordering::Relaxed))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The upstream asks the client `request`, in the client request `origin` when
    /// known. `None` when no call of a 2026-07-28 client could carry it (the request
    /// then goes to a task, or to the client as a request of its own, as on the
    /// session protocol); else what became of it ([`Carried`]), or an error when the
    /// round it went in was given up.
    pub fn ask(
        &self,
        request: &InputRequest,
        origin: Option<Origin>,
    ) -> Option<oneshot::Receiver<Carried>> {
        let (answer, answered) = oneshot::channel();
        {
            let mut state = self.lock();
            if state.closed || !state.can_carry(origin) {
                return None;
            }
            let key = state.key(request);
            state.unasked.push(Question {
                key,
                origin,
                request: request.clone(),
                answer,
            });
        }
        self.0.asked.notify_waiters();
        Some(answered)
    }

    /// Registers a task's call from `origin`, waiting on the upstream, to carry the
    /// upstream's questions asked in it (and those tied to no request, when no call
    /// does) until the guard is dropped.
    pub fn carry_task(&self, task: TaskContext, origin: Option<Origin>) -> CarryingTask<'_> {
        let mut state = self.lock();
        state.next_task += 1;
        let n = state.next_task;
        state.tasks.push((n, origin, task));
        CarryingTask(self, n)
    }

    /// Asks `request` as an input request of the registered task whose call asked it
    /// (`origin`), or of any task when the origin is unknown; `None` when no such task
    /// is waiting. The client's answer, or an error when the task ended first.
    pub fn ask_in_task(
        &self,
        request: &InputRequest,
        origin: Option<Origin>,
    ) -> Option<impl std::future::Future<Output = Result<Value, McpError>> + use<>> {
        let (task, key) = {
            let mut state = self.lock();
            let task = (state.tasks.iter())
                .find(|(_, from, _)| origin.is_none() || *from == origin)?
                .2
                .clone();
            (task, state.key(request))
        };
        let request = request.clone();
        Some(async move {
            task.request_input(key, request)
                .await
                .map_err(|exit| match exit {
                    TaskExit::Error(error) => error,
                    _ => {
                        McpError::internal_error("the task ended before the client answered", None)
                    }
                })
        })
    }

    /// Waits for `flight`'s answer, or parks the request when the upstream asks the
    /// client something first. `cancelled` fires when the client cancels the request
    /// (the upstream request is then cancelled too).
    pub async fn wait(
        &self,
        mut flight: Flight,
        round: Round,
        cancelled: &CancellationToken,
    ) -> Landed {
        let origin = flight.origin();
        self.lock().carriers.push(origin);
        let _carrying = Carrying(self, origin);
        loop {
            let asked = self.0.asked.notified();
            // A cancelled call is not parked: it is cancelled upstream (below), and the
            // questions wait for another call.
            if !cancelled.is_cancelled()
                && let Some(state) = self.questions_waiting(origin)
            {
                return Landed::Input(self.park(state, flight, round));
            }
            let answer = tokio::select! {
                biased;
                answer = flight.answer() => answer,
                _ = cancelled.cancelled() => {
                    flight.abandon("cancelled by the client");
                    Err(super::relay::cancelled())
                }
                _ = asked => continue,
            };
            return Landed::Answer {
                answer: Box::new(answer),
                note: round.note,
            };
        }
    }

    /// The state, locked, when the upstream's questions a call from `origin` may
    /// carry are waiting for a call.
    fn questions_waiting(&self, origin: Option<Origin>) -> Option<MutexGuard<'_, State>> {
        let state = self.lock();
        let waiting = (state.unasked.iter()).any(|question| carries(origin, question.origin));
        waiting.then_some(state)
    }

    /// Parks the call with the questions waiting that it may carry, under a fresh
    /// `requestState`; the client's `input_required` result.
    fn park(
        &self,
        mut state: MutexGuard<'_, State>,
        flight: Flight,
        round: Round,
    ) -> InputRequiredResult {
        let origin = flight.origin();
        let (questions, others): (Vec<_>, Vec<_>) = std::mem::take(&mut state.unasked)
            .into_iter()
            .partition(|question| carries(origin, question.origin));
        state.unasked = others;
        let requests = questions
            .iter()
            .map(|question| (question.key.clone(), question.request.clone()))
            .collect::<BTreeMap<_, _>>();
        let request_state = uuid::Uuid::new_v4().simple().to_string();
        let parked = Parked {
            flight,
            round,
            questions,
        };
        state.parked.insert(request_state.clone(), parked);
        drop(state);
        self.give_up_later(request_state.clone());
        InputRequiredResult::new(Some(requests), Some(request_state))
    }

    /// Gives the parked call up when its retry has not come within `answer_within`.
    fn give_up_later(&self, request_state: String) {
        let rounds = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(rounds.0.answer_within).await;
            let parked = {
                let mut state = rounds.lock();
                let parked = state.parked.remove(&request_state);
                if let Some(parked) = &parked {
                    state.spend(&request_state, &parked.round, true);
                }
                state.hand_back_uncarried();
                parked
            };
            if let Some(Parked {
                flight,
                round,
                questions,
            }) = parked
            {
                tracing::info!(what = %round.what, "an MCP client did not come back for a request's next round; the request is cancelled");
                // Their answers' senders go: the upstream hears an error for each.
                drop(questions);
                flight.abandon("the MCP client did not answer the server's requests in time");
            }
        });
    }

    /// The client has gone: every parked call is given up (the upstream request
    /// cancelled) and every question of the upstream's waiting for the client gets an
    /// error; later ones are not carried in rounds.
    pub fn close(&self) {
        let (parked, unasked) = {
            let mut state = self.lock();
            state.closed = true;
            let parked: Vec<Parked> = state.parked.drain().map(|(_, parked)| parked).collect();
            (parked, std::mem::take(&mut state.unasked))
        };
        // Their answers' senders go: the upstream hears an error for each.
        drop(unasked);
        for parked in parked {
            drop(parked.questions);
            parked.flight.abandon("the MCP client has gone");
        }
    }

    /// A retry of a parked call: its answers go to the upstream, and the running call
    /// is handed back to wait again. Refused (the text says why) when the state is
    /// unknown, or the retry names another tool or other arguments; the parked call
    /// then stays as it was. `tool` when the retry is a tool call's (whose round, once
    /// forgotten, may have spent an approval).
    pub fn resume(
        &self,
        request_state: &str,
        what: &str,
        tool: bool,
        arguments: &Option<JsonObject>,
        mut responses: InputResponses,
    ) -> Result<(Flight, Round), String> {
        let mut state = self.lock();
        let Some(parked) = state.parked.get(request_state) else {
            return Err(state.unknown(request_state, self.0.answer_within, tool));
        };
        if parked.round.what != what || parked.round.arguments != *arguments {
            return Err(texts::other_round(&parked.round.what));
        }
        let parked = state.parked.remove(request_state).expect("looked up above");
        state.spend(request_state, &parked.round, false);
        for question in parked.questions {
            match responses.remove(&question.key) {
                Some(answer) => drop(question.answer.send(Carried::Answered(answer))),
                // Unanswered: asked again in the next round.
                None => state.unasked.push(question),
            }
        }
        Ok((parked.flight, parked.round))
    }
}

/// Whether `context`'s request is on 2026-07-28 or later, so that the upstream's
/// requests reach the client in rounds.
pub fn in_rounds(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|version| version >= ProtocolVersion::V_2026_07_28)
}

/// A question's kind, for its key.
fn kind(request: &InputRequest) -> &'static str {
    match request {
        InputRequest::CreateMessage(_) => "sampling",
        InputRequest::Elicitation(_) => "elicitation",
        InputRequest::ListRoots(_) => "roots",
        _ => "input",
    }
}

// Roots are deprecated by SEP-2577; still the simplest question to ask.
#[allow(deprecated)]
#[cfg(test)]
mod tests {
    use rmcp::model::ListRootsRequest;

    use super::*;

    fn roots() -> InputRequest {
        InputRequest::ListRoots(ListRootsRequest {
            method: Default::default(),
            extensions: Default::default(),
        })
    }

    /// A call of `rounds` waiting on an upstream request that never answers; the
    /// stand-in for that request's driver.
    async fn carrier(
        rounds: &Rounds,
        cancelled: &CancellationToken,
    ) -> (tokio::task::JoinHandle<Landed>, tokio::task::JoinHandle<()>) {
        carrier_from(rounds, cancelled, None).await
    }

    /// A [`carrier`] whose upstream request asks its questions from `origin`.
    async fn carrier_from(
        rounds: &Rounds,
        cancelled: &CancellationToken,
        origin: Option<Origin>,
    ) -> (tokio::task::JoinHandle<Landed>, tokio::task::JoinHandle<()>) {
        let (mut flight, driver) = Flight::never_answered();
        if let Some(origin) = origin {
            flight = flight.asked_from(origin);
        }
        let before = rounds.lock().carriers.len();
        let round = tool_round();
        let (waiter, cancelled) = (rounds.clone(), cancelled.clone());
        let waiting = tokio::spawn(async move { waiter.wait(flight, round, &cancelled).await });
        while rounds.lock().carriers.len() == before {
            tokio::task::yield_now().await;
        }
        (waiting, driver)
    }

    /// What became of a question, if anything has within a second.
    async fn fate(
        asked: oneshot::Receiver<Carried>,
    ) -> Option<Result<Carried, oneshot::error::RecvError>> {
        tokio::time::timeout(Duration::from_secs(1), asked)
            .await
            .ok()
    }

    /// A round of a call of the tool `t`, no arguments, no approval.
    fn tool_round() -> Round {
        Round {
            what: "the tool t".into(),
            arguments: None,
            note: None,
            approval: None,
        }
    }

    /// The keys of a parked call's questions.
    fn keys(landed: Landed) -> Vec<String> {
        let Landed::Input(input) = landed else {
            panic!("not parked");
        };
        input
            .input_requests
            .unwrap_or_default()
            .into_keys()
            .collect()
    }

    /// A 2026-07-28 upstream asks in its answer to one call's request: that call
    /// carries the question, not another call waiting meanwhile (which keeps waiting,
    /// and carries only its own).
    #[tokio::test]
    async fn a_question_asked_in_one_call_is_carried_by_that_call_only() {
        let rounds = Rounds::new(Duration::from_secs(600));
        let (deploy, delete) = (rounds.origin(), rounds.origin());
        let never = CancellationToken::new();
        let (first, _first) = carrier_from(&rounds, &never, Some(deploy)).await;
        let (second, _second) = carrier_from(&rounds, &never, Some(delete)).await;
        let _asked = rounds.ask(&roots(), Some(delete)).expect("its call waits");
        let second = tokio::time::timeout(Duration::from_secs(1), second).await;
        let second = second.expect("the asking call is parked").unwrap();
        assert_eq!(keys(second), ["roots-1"]);
        let _asked = rounds.ask(&roots(), Some(deploy)).expect("its call waits");
        assert_eq!(keys(first.await.unwrap()), ["roots-2"], "only its own");
    }

    /// The upstream asks just as the only call that could carry its question is
    /// cancelled: the question is handed back to be asked another way, not left
    /// waiting for a call that will never come.
    #[tokio::test]
    async fn a_question_asked_as_the_last_carrier_goes_is_handed_back() {
        let rounds = Rounds::new(Duration::from_secs(600));
        let cancelled = CancellationToken::new();
        let (waiting, _driver) = carrier(&rounds, &cancelled).await;
        cancelled.cancel();
        let asked = rounds
            .ask(&roots(), None)
            .expect("a call waits to carry it");
        assert!(
            matches!(waiting.await.unwrap(), Landed::Answer { .. }),
            "the call ended cancelled, not parked"
        );
        let fate = fate(asked).await;
        assert!(matches!(fate, Some(Ok(Carried::Uncarried))), "{fate:?}");
    }

    /// The upstream asks again while its call is parked; the parked call is given up
    /// and no call is left to carry the second question: it is handed back too.
    #[tokio::test]
    async fn a_question_queued_behind_a_parked_call_is_handed_back_when_that_call_is_given_up() {
        let rounds = Rounds::new(Duration::from_millis(100));
        let (waiting, driver) = carrier(&rounds, &CancellationToken::new()).await;
        let first = rounds.ask(&roots(), None).unwrap();
        assert!(matches!(waiting.await.unwrap(), Landed::Input(_)), "parked");
        let second = rounds
            .ask(&roots(), None)
            .expect("queued for the parked call's retry");
        assert!(
            matches!(fate(first).await, Some(Err(_))),
            "given up: an error"
        );
        let fate = fate(second).await;
        assert!(matches!(fate, Some(Ok(Carried::Uncarried))), "{fate:?}");
        assert!(
            driver.await.unwrap_err().is_cancelled(),
            "its request cancelled"
        );
    }

    /// The upstream asks while the client's call is already cancelled: the call is
    /// cancelled upstream, not parked, and the question is left for another call.
    #[tokio::test]
    async fn a_cancelled_call_is_cancelled_not_parked_when_a_question_waits() {
        let rounds = Rounds::new(Duration::from_secs(600));
        let (parked, _parked_driver) = carrier(&rounds, &CancellationToken::new()).await;
        let _first = rounds.ask(&roots(), None).unwrap();
        assert!(matches!(parked.await.unwrap(), Landed::Input(_)), "parked");
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        let second = rounds
            .ask(&roots(), None)
            .expect("queued for the parked call's retry");
        let (flight, driver) = Flight::never_answered();
        let round = tool_round();
        let landed = rounds.wait(flight, round, &cancelled).await;
        assert!(
            matches!(&landed, Landed::Answer { answer, .. } if answer.is_err()),
            "cancelled, not parked"
        );
        assert!(
            driver.await.unwrap_err().is_cancelled(),
            "its request cancelled"
        );
        assert_eq!(rounds.lock().unasked.len(), 1, "left for another call");
        drop(second);
    }

    /// A retry under a state no round has: a tool call's may have spent its approval
    /// upstream before its round was forgotten; a prompt's or resource read's spent
    /// nothing, and is told so.
    #[test]
    fn an_unknown_round_is_told_nothing_ran_only_when_it_spends_nothing() {
        let rounds = Rounds::new(Duration::from_secs(600));
        let resume = |what, tool| {
            let refused = rounds.resume("never-issued", what, tool, &None, Default::default());
            refused.err().expect("refused")
        };
        let prompt = resume("the prompt p", false);
        assert!(prompt.contains("Nothing was run"), "{prompt}");
        let tool = resume("the tool t", true);
        assert!(!tool.contains("Nothing was run"), "{tool}");
        assert!(tool.contains("it may have run"), "{tool}");
    }

    /// The client left: parked calls are given up (their upstream requests cancelled),
    /// their questions and those queued get an error, and nothing is carried any more.
    #[tokio::test]
    async fn a_client_that_leaves_gives_every_parked_call_up() {
        let rounds = Rounds::new(Duration::from_secs(600));
        let (waiting, driver) = carrier(&rounds, &CancellationToken::new()).await;
        let first = rounds.ask(&roots(), None).unwrap();
        assert!(matches!(waiting.await.unwrap(), Landed::Input(_)), "parked");
        let second = rounds.ask(&roots(), None).unwrap();
        rounds.close();
        assert!(matches!(fate(first).await, Some(Err(_))));
        assert!(matches!(fate(second).await, Some(Err(_))));
        assert!(
            driver.await.unwrap_err().is_cancelled(),
            "its request cancelled"
        );
        assert!(
            rounds.ask(&roots(), None).is_none(),
            "not carried in rounds any more"
        );
    }
}
