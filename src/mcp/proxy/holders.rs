//! Which calls of one proxy wait for the same approval. Identical calls (the same tool,
//! and arguments that signoff takes for the same: equal as canonical JSON) join one
//! approval, so a call that is cancelled withdraws its approval only when no identical
//! call of this proxy waits for it, or is about to ask signoff and so join it; the last
//! one to go withdraws it.
//!
//! A call counts from before it asks, by its identity rather than by the approval
//! signoff answers with: a cancel followed at once by an identical call (an agent that
//! gave up a call and tried again) must not withdraw the approval that the new call's
//! ask, still on its way, is about to join. The approval is left to the calls about to
//! ask; once signoff answers one of them it is theirs (it joined it, or the approval
//! was no longer open to join), and if all of them go without an answer (signoff
//! unreachable) the last one withdraws it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use serde_json::{Map, Value};

/// A call's identity: its tool, and the SHA-256 of its arguments' canonical text (the
/// parameters signoff compares; a hash, so that large arguments are not kept twice).
type Identity = (String, String);

/// The calls of one proxy that wait for an approval or are about to ask for one, by
/// their identity.
#[derive(Debug, Default)]
pub struct Holders {
    entries: Mutex<HashMap<Identity, Entry>>,
    /// Woken each time a withdrawal ends.
    withdrawn: Notify,
}

#[derive(Debug, Default)]
struct Entry {
    /// Calls whose ask signoff has not answered yet.
    asking: usize,
    /// Calls that signoff answered, by the approval it answered with.
    holding: HashMap<String, usize>,
    /// The approval a cancelled call left to the calls still asking.
    left: Option<String>,
    /// Withdrawals of this identity's approval on their way to signoff: an identical
    /// call asks only once they ended, so that it never joins an approval about to be
    /// cancelled (an agent that gave a call up and at once called again).
    withdrawing: usize,
}

impl Entry {
    fn is_empty(&self) -> bool {
        self.asking == 0 && self.holding.is_empty() && self.left.is_none() && self.withdrawing == 0
    }

    fn holders_of(&self, id: &str) -> usize {
        self.holding.get(id).copied().unwrap_or(0)
    }

    /// A call that held approval `id` withdrew it: `id` to cancel, unless another call
    /// waits for it, or one is asking (and would join it: it is left to them).
    fn withdrawn(&mut self, id: &str) -> Option<String> {
        if self.holders_of(id) > 0 {
            tracing::debug!(approval_id = %id, "another call waits for this approval: not withdrawn");
            None
        } else if self.asking > 0 {
            tracing::debug!(approval_id = %id, "an identical call is asking: the approval is left to it");
            self.left = Some(id.to_owned());
            None
        } else {
            Some(id.to_owned())
        }
    }
}

/// Where a call stands.
#[derive(Debug)]
enum Place {
    Asking,
    /// Signoff answered with this approval.
    Holding(String),
}

/// One call among [`Holders`], from before its ask until [`Holder::leave`].
#[derive(Debug)]
pub struct Holder<'a> {
    holders: &'a Holders,
    identity: Identity,
    place: Place,
    /// The call no longer wants its approval (cancelled, its client gone).
    withdrawing: bool,
    left: bool,
}

impl Holders {
    /// Counts a call of `tool` with `arguments` that is about to ask signoff, once no
    /// withdrawal of its identity's approval is on its way (`Entry::withdrawing`).
    pub async fn hold_settled(&self, tool: &str, arguments: &Map<String, Value>) -> Holder<'_> {
        let identity = identity(tool, arguments);
        loop {
            let withdrawn = self.withdrawn.notified();
            tokio::pin!(withdrawn);
            withdrawn.as_mut().enable();
            let settled = self
                .lock()
                .get(&identity)
                .is_none_or(|entry| entry.withdrawing == 0);
            if settled {
                return self.hold_as(identity);
            }
            withdrawn.await;
        }
    }

    /// Counts a call of `tool` with `arguments` that is about to ask signoff.
    #[cfg(test)]
    pub fn hold(&self, tool: &str, arguments: &Map<String, Value>) -> Holder<'_> {
        self.hold_as(identity(tool, arguments))
    }

    fn hold_as(&self, identity: Identity) -> Holder<'_> {
        self.lock().entry(identity.clone()).or_default().asking += 1;
        Holder {
            holders: self,
            identity,
            place: Place::Asking,
            withdrawing: false,
            left: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Identity, Entry>> {
        // Counters that no panic leaves half-changed.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<'a> Holder<'a> {
    /// Signoff answered the call's ask with approval `id`. An approval a cancelled call
    /// left to the calls asking is theirs now: this one joined it, or it was no longer
    /// open to join (signoff joins an identical open request).
    pub fn answered(&mut self, id: &str) {
        let mut holders = self.holders.lock();
        let entry = holders.entry(self.identity.clone()).or_default();
        if matches!(self.place, Place::Asking) {
            entry.asking = entry.asking.saturating_sub(1);
        }
        *entry.holding.entry(id.to_owned()).or_default() += 1;
        entry.left = None;
        self.place = Place::Holding(id.to_owned());
    }

    /// The call no longer wants its approval: [`Holder::leave`] says whether to
    /// withdraw it.
    pub fn withdraw(&mut self) {
        self.withdrawing = true;
    }

    /// The call is done; the approval to withdraw now, if any: its own when it
    /// withdraws and no identical call waits for it or asks, or one a cancelled call
    /// left to the calls asking when this was the last of them and nobody holds it.
    pub fn leave(mut self) -> Option<Withdrawal<'a>> {
        self.left = true;
        let id = self.step_out(true)?;
        Some(Withdrawal {
            holders: self.holders,
            identity: self.identity.clone(),
            id,
        })
    }

    /// Steps out of its entry: the approval to withdraw, if this call is the one to,
    /// counted as on its way when `withdrawing`.
    fn step_out(&mut self, withdrawing: bool) -> Option<String> {
        let mut holders = self.holders.lock();
        let entry = holders.entry(self.identity.clone()).or_default();
        let mut withdraw = None;
        match &self.place {
            Place::Asking => entry.asking = entry.asking.saturating_sub(1),
            Place::Holding(id) => {
                let count = entry.holding.entry(id.clone()).or_default();
                *count = count.saturating_sub(1);
                if *count == 0 {
                    entry.holding.remove(id);
                }
                if self.withdrawing {
                    withdraw = entry.withdrawn(id);
                }
            }
        }
        if entry.asking == 0 && withdraw.is_none() {
            withdraw = entry.left.take().filter(|id| entry.holders_of(id) == 0);
        }
        if withdrawing && withdraw.is_some() {
            entry.withdrawing += 1;
        }
        if entry.is_empty() {
            holders.remove(&self.identity);
        }
        withdraw
    }
}

impl Drop for Holder<'_> {
    /// A call dropped before it left (its future dropped) is no longer counted; an
    /// approval it should have withdrawn is not (it expires unexecuted).
    fn drop(&mut self) {
        if !self.left
            && let Some(id) = self.step_out(false)
        {
            tracing::debug!(approval_id = %id, "a call dropped unfinished: its approval is not withdrawn");
        }
    }
}

/// The identity of a call to `tool` with `arguments`.
fn identity(tool: &str, arguments: &Map<String, Value>) -> Identity {
    let arguments = Value::Object(arguments.clone());
    (
        tool.to_owned(),
        crate::canonical::value_sha256_hex(&arguments),
    )
}

/// An approval a call withdraws: its cancel is on its way to signoff until this is
/// dropped, and identical calls wait to ask until then.
#[derive(Debug)]
pub struct Withdrawal<'a> {
    holders: &'a Holders,
    identity: Identity,
    pub id: String,
}

impl Withdrawal<'_> {
    /// The approval's id; the withdrawal ends.
    #[cfg(test)]
    pub fn into_id(self) -> String {
        self.id.clone()
    }
}

impl Drop for Withdrawal<'_> {
    fn drop(&mut self) {
        let mut holders = self.holders.lock();
        if let Some(entry) = holders.get_mut(&self.identity) {
            entry.withdrawing = entry.withdrawing.saturating_sub(1);
            if entry.is_empty() {
                holders.remove(&self.identity);
            }
        }
        drop(holders);
        self.holders.withdrawn.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn arguments(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn identical_calls_are_the_same_however_their_arguments_are_written() {
        let holders = Holders::default();
        let mut first = holders.hold("deploy", &arguments(json!({"a": 1, "b": [2.0]})));
        let second = holders.hold("deploy", &arguments(json!({"b": [2], "a": 1})));
        let other = holders.hold("deploy", &arguments(json!({"a": 2, "b": [2]})));
        first.answered("x");
        first.withdraw();
        assert_eq!(
            first.leave().map(Withdrawal::into_id),
            None,
            "the second call is about to join it"
        );
        drop(other);
        assert_eq!(
            second.leave().map(Withdrawal::into_id),
            Some("x".into()),
            "left to the second call, which went without an answer"
        );
        assert!(holders.lock().is_empty());
    }

    #[test]
    fn a_withdrawn_approval_is_left_to_a_call_asking_until_signoff_answers_it() {
        let holders = Holders::default();
        let call = arguments(json!({"ids": [1]}));
        let mut first = holders.hold("delete", &call);
        first.answered("x");
        let mut second = holders.hold("delete", &call);
        first.withdraw();
        assert_eq!(first.leave().map(Withdrawal::into_id), None);
        second.answered("x");
        second.withdraw();
        assert_eq!(
            second.leave().map(Withdrawal::into_id),
            Some("x".into()),
            "withdrawn once, by the last"
        );
        assert!(holders.lock().is_empty());

        // Answered with another approval: the first was no longer open.
        let mut first = holders.hold("delete", &call);
        first.answered("x");
        let mut second = holders.hold("delete", &call);
        first.withdraw();
        assert_eq!(first.leave().map(Withdrawal::into_id), None);
        second.answered("y");
        assert_eq!(
            second.leave().map(Withdrawal::into_id),
            None,
            "done without withdrawing"
        );
        assert!(holders.lock().is_empty());
    }

    #[test]
    fn a_call_that_waits_for_the_approval_keeps_it_and_withdraws_it_last() {
        let holders = Holders::default();
        let call = arguments(json!({}));
        let (mut first, mut second) = (holders.hold("t", &call), holders.hold("t", &call));
        first.answered("x");
        second.answered("x");
        first.withdraw();
        assert_eq!(first.leave().map(Withdrawal::into_id), None);
        second.withdraw();
        assert_eq!(second.leave().map(Withdrawal::into_id), Some("x".into()));

        // A call that leaves without withdrawing (its hold ran out) keeps it open.
        let mut only = holders.hold("t", &call);
        only.answered("x");
        assert_eq!(only.leave().map(Withdrawal::into_id), None);
        assert!(holders.lock().is_empty());
    }
}
