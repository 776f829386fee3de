//! Who may decide an approval: its approvers (user IDs, and user groups expanded with
//! usergroups.users.list and cached briefly), or anyone when the list is empty — never
//! the requester. The state machine enforces one vote per person and refuses the
//! requester too; this check comes first so a refused click opens no modal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::client::SlackClient;
use super::text;
use crate::approval::Approval;

/// How long a group's member list is trusted.
pub const GROUP_TTL: Duration = Duration::from_secs(60);

/// User group id → (when fetched, members).
type GroupCache = HashMap<String, (Instant, Arc<Vec<String>>)>;

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

    /// `Ok` if `user` may vote on `approval`, else the sentence to show them.
    pub async fn may_decide(&self, approval: &Approval, user: &str) -> Result<(), String> {
        if approval.requested_by.as_deref() == Some(user) {
            return Err("You asked for this one, so someone else has to decide it.".into());
        }
        let approvers = &approval.routing.approvers;
        if approvers.is_empty() || approvers.iter().any(|id| id == user) {
            return Ok(());
        }
        for group in approvers.iter().filter(|id| id.starts_with('S')) {
            match self.members(group).await {
                Ok(members) if members.iter().any(|member| member == user) => return Ok(()),
                Ok(_) => {}
                // Fail closed: without the member list we cannot say yes.
                Err(error) => {
                    tracing::warn!(%error, group, "cannot expand user group");
                    return Err("I could not check your approver group membership with Slack just now; please try again in a minute.".into());
                }
            }
        }
        let who: Vec<String> = approvers.iter().map(|id| mention(id)).collect();
        Err(format!(
            "Only the approvers of this request can decide it: {}.",
            who.join(", ")
        ))
    }

    /// Whether `user`, typing `/approvals` in `channel`, may see `approval`: its listed
    /// approvers (user groups expanded) anywhere, and anyone in a channel it is posted
    /// to (its channel and escalation channel). Everyone else is told it does not
    /// exist, exactly as for an unknown id. Fails closed when a group cannot be read.
    pub async fn may_see(&self, approval: &Approval, user: &str, channel: Option<&str>) -> bool {
        let routing = &approval.routing;
        let posted_here = channel.is_some_and(|channel| {
            routing.channel.as_deref() == Some(channel)
                || routing.escalation_channel.as_deref() == Some(channel)
        });
        if posted_here || routing.approvers.iter().any(|id| id == user) {
            return true;
        }
        for group in routing.approvers.iter().filter(|id| id.starts_with('S')) {
            match self.members(group).await {
                Ok(members) if members.iter().any(|member| member == user) => return true,
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, group, "cannot expand user group"),
            }
        }
        false
    }

    /// The members of a user group, from the cache when fresh.
    pub async fn members(
        &self,
        group: &str,
    ) -> Result<Arc<Vec<String>>, super::client::SlackError> {
        if let Some(members) = self.cached(group) {
            return Ok(members);
        }
        let answer = self
            .slack
            .get("usergroups.users.list", &[("usergroup", group)])
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
            .insert(group.to_owned(), (Instant::now(), members.clone()));
        Ok(members)
    }

    fn cached(&self, group: &str) -> Option<Arc<Vec<String>>> {
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
fn mention(id: &str) -> String {
    if id.starts_with('S') {
        format!("<!subteam^{id}>")
    } else if text::is_user_id(id) {
        format!("<@{id}>")
    } else {
        text::escape(id)
    }
}
