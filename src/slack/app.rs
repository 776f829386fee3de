//! What the Slack side of the server needs, built once at start from the environment.

use std::sync::Arc;

use super::approvers::Approvers;
use super::client::SlackClient;

/// The Slack client, the approver resolver and the signing secret; cheap to clone.
#[derive(Clone)]
pub struct SlackApp {
    pub client: SlackClient,
    pub approvers: Approvers,
    /// `None`: the `/slack/*` endpoints answer 503 instead of trusting anything.
    pub signing_secret: Option<Arc<str>>,
}

impl SlackApp {
    pub fn new(client: SlackClient, signing_secret: Option<String>) -> Self {
        Self {
            approvers: Approvers::new(client.clone()),
            client,
            signing_secret: signing_secret.filter(|s| !s.is_empty()).map(Arc::from),
        }
    }
}
