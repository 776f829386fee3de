//! Whether a Slack user is one of an approval's approvers: listed by id, a member of a
//! listed user group (expanded with usergroups.users.list and cached briefly), or
//! anyone when the list is empty (the edge then takes clicks only from the messages
//! signoff posted, so "anyone in the channel"). The state machine gets the answer as
//! data and decides with every other rule (never the requester, one vote each). Where
//! the list alone answers (`Routing::lists`), an Approve click is checked on the
//! store's writer instead and never comes here (`Store::vote`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::{SlackClient, SlackError};
use crate::approval::Approval;
use crate::ids::{Approver, GroupId, UserId};

/// How long a group's member list is trusted.
pub const GROUP_TTL: Duration = Duration::from_secs(60);

/// User group id → (when fetched, members).
type GroupCache = HashMap<GroupId, (Instant, Arc<Vec<String>>)>;

/// Resolves approvers; cheap to clone (the cache is shared).
#[derive(Clone)]
pub struct Approvers {
    slack: SlackClient,
    groups: Arc<Mutex<GroupCache>>,
}

impl Approvers {
    pub fn new(slack: SlackClient) -> Self {
        Self {
            slack,
            groups: Arc::default(),
        }
    }

    /// Whether `user` is one of `approval`'s approvers (see the module doc). `Err`:
    /// a user group could not be read, so membership is unknown; callers refuse
    /// (fail closed).
    pub async fn is_approver(
        &self,
        approval: &Approval,
        user: &UserId,
    ) -> Result<bool, SlackError> {
        match approval.routing.lists(user.as_str()) {
            Some(known) => Ok(known),
            None => self.is_listed(&approval.routing.approvers, user).await,
        }
    }

    /// Whether `user` is listed in `approvers`, directly or through a user group.
    async fn is_listed(&self, approvers: &[Approver], user: &UserId) -> Result<bool, SlackError> {
        let mut unknown = None;
        for approver in approvers {
            match approver {
                Approver::User(listed) if listed == user => return Ok(true),
                Approver::User(_) => {}
                Approver::Group(group) => match self.members(group).await {
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

    /// Whether `user`, typing `/approvals` in `channel`, may see `approval`: its listed
    /// approvers (user groups expanded) anywhere, and anyone in a channel it is posted
    /// to (its channel and escalation channel). Everyone else is told it does not
    /// exist, exactly as for an unknown id. Fails closed when a group cannot be read.
    pub async fn may_see(&self, approval: &Approval, user: &UserId, channel: Option<&str>) -> bool {
        let routing = &approval.routing;
        let posted_here = channel.is_some_and(|channel| {
            routing.channel.as_ref().is_some_and(|c| c == channel)
                || routing
                    .escalation_channel
                    .as_ref()
                    .is_some_and(|c| c == channel)
        });
        posted_here
            || self
                .is_listed(&routing.approvers, user)
                .await
                .unwrap_or(false)
    }

    /// The members of a user group, from the cache when fresh.
    pub async fn members(&self, group: &GroupId) -> Result<Arc<Vec<String>>, SlackError> {
        if let Some(members) = self.cached(group) {
            return Ok(members);
        }
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
        let members = Arc::new(members);
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(group.clone(), (Instant::now(), members.clone()));
        Ok(members)
    }

    fn cached(&self, group: &GroupId) -> Option<Arc<Vec<String>>> {
        let groups = self
            .groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        groups
            .get(group)
            .filter(|(at, _)| at.elapsed() < GROUP_TTL)
            .map(|(_, members)| members.clone())
    }
}

/// `<@U…>` for people, `<!subteam^S…>` for groups.
pub fn mention(approver: &Approver) -> String {
    match approver {
        Approver::User(user) => format!("<@{user}>"),
        Approver::Group(group) => format!("<!subteam^{group}>"),
    }
}
