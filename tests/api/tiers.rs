//! The risk tier a caller asks for, under `[tiers]` that are not ordered: it can add
//! review, never take it away.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::app::{self, Options};
use crate::helpers::*;

/// A policy where the higher tiers are the laxer: `medium` is denied, `high`
/// auto-approved, and `deploy_*` is `low`, which needs people.
const LAX_HIGH: &str = "[tiers]\nlow = \"require_approval\"\nmedium = \"deny\"\n\
                        high = \"auto_approve\"\n\n[[rules]]\ntools = [\"deploy_*\"]\n\
                        tier = \"low\"\n";

/// Asking for `high` does not get a call the policy puts before people (or denies)
/// approved at once: the policy's own tier's action is the stricter and stands, and
/// the denial says so.
#[tokio::test]
async fn a_requested_tier_whose_action_is_laxer_does_not_lower_review() {
    let app = TestApp::from(app::spawn(crate::common::sqlite(), Options::new(LAX_HIGH)).await);
    for (tool, status) in [("deploy_api", "pending"), ("drop_table", "denied")] {
        let (code, body) = app
            .post(
                "/v1/approvals",
                &json!({"tool_name": tool, "parameters": {}, "risk_tier": "high"}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{body}");
        assert_eq!(
            (body["status"].as_str(), body["risk_tier"].as_str()),
            (Some(status), Some("high")),
            "{tool}"
        );
    }
    let (_, denied) = app
        .post(
            "/v1/approvals",
            &json!({"tool_name": "drop_index", "parameters": {}, "risk_tier": "high"}),
        )
        .await;
    let id = denied["approval_id"].as_str().unwrap();
    let (_, full) = app.get(&format!("/v1/approvals/{id}")).await;
    assert_eq!(
        full["reason"],
        "denied by policy: risk tier high is denied (no rule matched (medium), raised to \
         high by the caller's request; medium's action, deny, is the stricter and stands)"
    );
}
