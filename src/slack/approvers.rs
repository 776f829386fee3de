//! Whether a Slack user is one of an approval's approvers: listed by id, a member of a
//! listed user group (expanded with usergroups.users.list and cached briefly), or
//! anyone when the list is empty (the edge then takes clicks only from the messages
//! signoff posted, so "anyone in the channel"). The state machine gets the answer as
//! data and decides with every other rule (never the requester, one vote each). Where
//! the list alone answers (`Routing::lists`), an Approve click is checked on the
//! store's writer instead and never comes here (`Store::vote`). A group is fetched
//! once however many ask at the same moment, and a click waits for it only as long as
//! Slack's 3-second answer allows ([`INTERACTIVE_WAIT`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::client::{SlackClient, SlackError};
use crate::approval::Approval;
use crate::ids::{Approver, GroupId, UserId};
use crate::jobs::{MessageKind, PostedMessage};

/// How long a group's member list is trusted.
pub const GROUP_TTL: Duration = Duration::from_secs(60);

/// How long a click or a command waits for a user group's members: Slack wants its
/// answer within 3 s (and a modal's trigger expires then). The fetch goes on after
/// it, so that a try a moment later finds the members cached.
pub const INTERACTIVE_WAIT: Duration = Duration::from_secs(2);

/// A group's members, or why Slack did not say.
type Fetched = Result<Arc<Vec<String>>, SlackError>;

#[derive(Default)]
struct Groups {
    /// User group id → (when fetched, members).
    known: HashMap<GroupId, (Instant, Arc<Vec<String>>)>,
    /// Fetches under way, one per group however many wait on it: each turns `Some`
    /// when Slack has answered.
    fetching: HashMap<GroupId, watch::Receiver<Option<Fetched>>>,
}

/// Resolves approvers; cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct Approvers {
    slack: SlackClient,
    groups: Arc<Mutex<Groups>>,
    /// How long a click or a command waits for a user group ([`INTERACTIVE_WAIT`]).
    interactive_wait: Duration,
}

impl Approvers {
    pub fn new(slack: SlackClient) -> Self {
        Self {
            slack,
            groups: Arc::default(),
            interactive_wait: INTERACTIVE_WAIT,
        }
    }

    /// Clicks and commands wait `wait` for a user group instead of
    /// [`INTERACTIVE_WAIT`] (tests shorten it).
    pub fn with_interactive_wait(mut self, wait: Duration) -> Self {
        self.interactive_wait = wait;
        self
    }

    /// When user groups must have answered by, for a click or a command that starts
    /// now to answer Slack in time.
    pub fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.interactive_wait
    }

    /// Whether `user` is one of `approval`'s approvers at `now` (see the module doc;
    /// its escalation approvers too once it is escalated), known by `by`. `Err`: a
    /// user group could not be read in time, so membership is unknown; callers refuse
    /// (fail closed).
    pub async fn is_approver(
        &self,
        approval: &Approval,
        user: &UserId,
        (now, by): (DateTime<Utc>, tokio::time::Instant),
    ) -> Result<bool, SlackError> {
        match approval.lists(user.as_str(), now) {
            Some(known) => Ok(known),
            None => self.is_listed(approval, now, user, by).await,
        }
    }

    /// Whether `user` is listed among `approval`'s approvers at `now`, directly or
    /// through a user group.
    async fn is_listed(
        &self,
        approval: &Approval,
        now: DateTime<Utc>,
        user: &UserId,
        by: tokio::time::Instant,
    ) -> Result<bool, SlackError> {
        let mut unknown = None;
        let escalated = approval.escalated_by(now);
        for approver in approval.routing.approvers_when(escalated) {
            match approver {
                Approver::User(listed) if listed == user => return Ok(true),
                Approver::User(_) => {}
                Approver::Group(group) => match self.members_by(group, Some(by)).await {
                    Ok(members) if members.iter().any(|member| user == member.as_str()) => {
                        return Ok(true);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, group = %group, "cannot expand user group");
                        unknown = Some(error);
                    }
                },
            }
        }
        unknown.map_or(Ok(false), Err)
    }

    /// Whether `user`, typing `/approvals` at `now` where `shown_here` says whether the
    /// channel shows `approval` to everyone in it ([`posted_in`] for any approval,
    /// [`routed_to`] for a pending one), may see it: its listed approvers (its
    /// escalation approvers too once it is escalated; user groups expanded, known by
    /// `by`) anywhere, and anyone in such a channel. Everyone else is told it does not
    /// exist, exactly as for an unknown id. Fails closed when a group cannot be read in
    /// time.
    pub async fn may_see(
        &self,
        approval: &Approval,
        user: &UserId,
        shown_here: bool,
        at: (DateTime<Utc>, tokio::time::Instant),
    ) -> bool {
        let checked = self.may_see_checked(approval, user, shown_here, at).await;
        checked.unwrap_or(false)
    }

    /// [`Approvers::may_see`], `Err` when a user group could not be read in time to
    /// say (the caller may tell the user so, rather than only fail closed).
    pub async fn may_see_checked(
        &self,
        approval: &Approval,
        user: &UserId,
        shown_here: bool,
        (now, by): (DateTime<Utc>, tokio::time::Instant),
    ) -> Result<bool, SlackError> {
        if shown_here {
            return Ok(true);
        }
        self.is_listed(approval, now, user, by).await
    }

    /// The members of a user group, from the cache when fresh, else as Slack answers
    /// (however long its client allows).
    pub async fn members(&self, group: &GroupId) -> Fetched {
        self.members_by(group, None).await
    }

    /// The members of a user group, from the cache when fresh, else from the fetch
    /// under way for it or a new one, waited for until `by` at most.
    async fn members_by(&self, group: &GroupId, by: Option<tokio::time::Instant>) -> Fetched {
        let mut answer = {
            let mut groups = self.lock();
            if let Some((at, members)) = groups.known.get(group)
                && at.elapsed() < GROUP_TTL
            {
                return Ok(members.clone());
            }
            match groups.fetching.get(group) {
                Some(under_way) => under_way.clone(),
                None => {
                    let under_way = self.fetch(group.clone());
                    groups.fetching.insert(group.clone(), under_way.clone());
                    under_way
                }
            }
        };
        let answered = answer.wait_for(Option::is_some);
        let answered = match by {
            Some(by) => tokio::time::timeout_at(by, answered).await.map_err(|_| {
                SlackError::Transport("usergroups.users.list did not answer in time".into())
            })?,
            None => answered.await,
        };
        let stopped = || SlackError::Transport("the user group fetch stopped".into());
        match answered {
            Ok(fetched) => fetched.clone().unwrap_or_else(|| Err(stopped())),
            Err(_) => Err(stopped()),
        }
    }

    /// Starts fetching `group`'s members in a task of its own, which caches them and
    /// answers on the channel returned, whoever still waits.
    fn fetch(&self, group: GroupId) -> watch::Receiver<Option<Fetched>> {
        let (answer, answered) = watch::channel(None);
        let approvers = self.clone();
        tokio::spawn(async move {
            let fetched = approvers.ask_slack(&group).await;
            let mut groups = approvers.lock();
            groups.fetching.remove(&group);
            if let Ok(members) = &fetched {
                groups
                    .known
                    .insert(group.clone(), (Instant::now(), members.clone()));
            }
            answer.send_replace(Some(fetched));
        });
        answered
    }

    async fn ask_slack(&self, group: &GroupId) -> Fetched {
        let answer = self
            .slack
            .get("usergroups.users.list", &[("usergroup", group.as_str())])
            .await?;
        let members: Vec<String> = answer["users"]
            .as_array()
            .map(|users| {
                users
                    .iter()
                    .filter_map(|u| u.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Arc::new(members))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `<@U…>` for people, `<!subteam^S…>` for groups.
pub fn mention(approver: &Approver) -> String {
    match approver {
        Approver::User(user) => format!("<@{user}>"),
        Approver::Group(group) => format!("<!subteam^{group}>"),
    }
}

/// Whether a channel message or escalation message of the approval's, among
/// `messages` (its recorded ones), was posted in `channel`: what shows it there. A
/// request decided as it was made (auto-approved, denied by policy) was never posted,
/// so its rule's channel does not show it.
pub fn posted_in(messages: &[PostedMessage], channel: Option<&str>) -> bool {
    channel.is_some_and(|channel| {
        messages
            .iter()
            .any(|m| m.kind != MessageKind::Dm && m.channel == channel)
    })
}

/// Whether a pending `approval` is posted, or is to be, in `channel` by `now`: its
/// channel, and its escalation channel once escalated there.
pub fn routed_to(approval: &Approval, channel: Option<&str>, now: DateTime<Utc>) -> bool {
    let routing = &approval.routing;
    channel.is_some_and(|channel| {
        routing.channel.as_ref().is_some_and(|c| c == channel)
            || (routing
                .escalation_channel
                .as_ref()
                .is_some_and(|c| c == channel)
                && approval.escalated_by(now))
    })
}
