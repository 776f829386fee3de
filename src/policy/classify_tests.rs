//! Classification tests: the design document's example, globs, servers, conditions.

use std::time::Duration;

use serde_json::json;

use crate::policy::{Call, Classification, Policy, Tier, TierAction};

/// The example from the design document, verbatim.
pub(crate) const DESIGN_EXAMPLE: &str = r#"
[defaults]
channel = "C0APPROVALS"
approvers = ["U0ALICE", "S0ONCALL"]
required_approvals = 1
expires_after = "4h"
remind_after = "30m"
remind_every = "1h"
escalate_after = "2h"
escalation_channel = "C0MANAGERS"

[tiers]
low = "auto_approve"
medium = "require_approval"
high = "deny"                  # or "require_approval"

[[rules]]
tools = ["search_*", "get_*", "list_*"]
tier = "low"

[[rules]]
tools = ["send_email"]
when = "size(params.recipients) > 100"   # CEL condition on the parameters
tier = "high"

[[rules]]
tools = ["deploy_*"]
tier = "medium"
required_approvals = 2
channel = "C0DEPLOYS"
summary = "Deploy {service} to {environment}"
"#;

fn design() -> Policy {
    Policy::from_toml_str(DESIGN_EXAMPLE).unwrap()
}

#[test]
fn design_example_parses_with_its_defaults() {
    let policy = design();
    assert_eq!(policy.rules_len(), 3);
    let d = policy.defaults();
    assert_eq!(d.channel.as_deref(), Some("C0APPROVALS"));
    assert_eq!(d.approvers, ["U0ALICE", "S0ONCALL"]);
    assert_eq!(d.expires_after, Duration::from_secs(4 * 3600));
    assert_eq!(d.remind_after, Some(Duration::from_secs(30 * 60)));
    assert_eq!(d.remind_every, Some(Duration::from_secs(3600)));
    assert_eq!(d.escalate_after, Some(Duration::from_secs(7200)));
    assert_eq!(d.escalation_channel.as_deref(), Some("C0MANAGERS"));
    assert_eq!(policy.tiers().high, TierAction::Deny);
}

#[test]
fn search_tools_are_low_and_auto_approved() {
    let c = design().classify("search_orders", &json!({}), None);
    assert_eq!(
        (c.tier, c.action, c.rule),
        (Tier::Low, TierAction::AutoApprove, Some(0))
    );
    assert!(c.notes.is_empty());
}

#[test]
fn mass_email_is_high_and_denied() {
    let recipients: Vec<String> = (0..101).map(|i| format!("user{i}@example.com")).collect();
    let c = design().classify("send_email", &json!({ "recipients": recipients }), None);
    assert_eq!(
        (c.tier, c.action, c.rule),
        (Tier::High, TierAction::Deny, Some(1))
    );
}

#[test]
fn small_email_matches_no_rule_and_is_medium() {
    let params = json!({"recipients": ["a@example.com", "b@example.com"]});
    let c = design().classify("send_email", &params, None);
    assert_eq!(c.rule, None);
    assert_eq!((c.tier, c.policy_tier), (Tier::Medium, Tier::Medium));
    assert_eq!(c.action, TierAction::RequireApproval);
    assert!(c.notes.is_empty());
    assert_eq!(c.route, *design().defaults());
}

#[test]
fn deploy_uses_the_rule_overrides_and_keeps_other_defaults() {
    let c = design().classify("deploy_api", &json!({"service": "api"}), None);
    assert_eq!(
        (c.tier, c.action, c.rule),
        (Tier::Medium, TierAction::RequireApproval, Some(2))
    );
    assert_eq!(c.route.required_approvals, 2);
    assert_eq!(c.route.channel.as_deref(), Some("C0DEPLOYS"));
    assert_eq!(
        c.route.summary_template.as_deref(),
        Some("Deploy {service} to {environment}")
    );
    // Keys the rule does not set still come from [defaults].
    assert_eq!(c.route.approvers, ["U0ALICE", "S0ONCALL"]);
    assert_eq!(c.route.expires_after, Duration::from_secs(4 * 3600));
}

#[test]
fn unknown_tool_is_medium_with_default_route() {
    let c = design().classify("drop_database", &json!({}), None);
    assert_eq!(
        (c.tier, c.policy_tier, c.rule),
        (Tier::Medium, Tier::Medium, None)
    );
    assert_eq!(c.route.channel.as_deref(), Some("C0APPROVALS"));
    assert_eq!(c.route.summary_template, None);
}

#[test]
fn globs_match_the_whole_name_in_any_case_unless_the_rule_says_otherwise() {
    let policy = design();
    assert_eq!(
        policy.classify("xsearch_orders", &json!({}), None).rule,
        None
    );
    assert_eq!(
        policy.classify("Search_ORDERS", &json!({}), None).rule,
        Some(0),
        "another case must not dodge a rule"
    );
    assert_eq!(policy.classify("deploy_", &json!({}), None).rule, Some(2));
    let strict = Policy::from_toml_str(
        "[[rules]]\ntools = [\"Deploy_*\"]\ncase_sensitive = true\ntier = \"high\"",
    )
    .unwrap();
    assert_eq!(strict.classify("Deploy_x", &json!({}), None).rule, Some(0));
    assert_eq!(strict.classify("deploy_x", &json!({}), None).rule, None);
}

const MCP_POLICY: &str = r#"
[tiers]
high = "deny"

[[rules]]
tools = ["delete_*"]
servers = ["git", "github*"]
tier = "high"

[[rules]]
tools = ["push"]
when = "server == 'git' && has(annotations.destructiveHint) && annotations.destructiveHint"
tier = "high"

[[rules]]
tools = ["*"]
servers = ["memory"]
when = "params.size > 10"
tier = "high"

[[rules]]
tools = ["*"]
servers = ["memory"]
tier = "low"
"#;

fn mcp(tool: &str, server: Option<&str>, annotations: serde_json::Value) -> Classification {
    let params = json!({"size": 1});
    let call = Call {
        tool,
        server,
        params: &params,
        annotations: Some(&annotations),
    };
    Policy::from_toml_str(MCP_POLICY)
        .unwrap()
        .classify_call(&call, None)
}

#[test]
fn rules_with_servers_match_only_calls_from_those_servers() {
    assert_eq!(
        mcp("delete_repo", Some("github.com"), json!({})).rule,
        Some(0)
    );
    assert_eq!(mcp("DELETE_repo", Some("Git"), json!({})).rule, Some(0));
    assert_eq!(mcp("delete_repo", Some("gitlab"), json!({})).rule, None);
    assert_eq!(
        mcp("delete_repo", None, json!({})).rule,
        None,
        "not an MCP call"
    );
    let denied = mcp("delete_repo", Some("git"), json!({}));
    assert_eq!(denied.action, TierAction::Deny);
    assert_eq!(
        denied.why,
        "rules[0] (tools delete_*; servers git, github*)"
    );
}

#[test]
fn conditions_see_the_server_and_the_annotations() {
    let destructive = json!({"destructiveHint": true});
    assert_eq!(mcp("push", Some("git"), destructive.clone()).rule, Some(1));
    assert_eq!(mcp("push", Some("other"), destructive).rule, None);
    let no_hints = mcp("push", Some("git"), json!({}));
    assert_eq!(no_hints.rule, None);
    assert!(no_hints.notes.is_empty(), "{:?}", no_hints.notes);
    let without_server = design().classify("x", &json!({}), None);
    assert_eq!(without_server.rule, None);
}

#[test]
fn a_tool_is_denied_outright_only_when_no_call_of_it_can_pass() {
    let policy = Policy::from_toml_str(MCP_POLICY).unwrap();
    let denied = policy
        .denies_every_call("delete_repo", Some("git"))
        .unwrap();
    assert!(
        denied.reason.starts_with("rules[0] (tools delete_*"),
        "{denied:?}"
    );
    assert_eq!(
        policy.denies_every_call("delete_repo", Some("gitlab")),
        None
    );
    // A `when` rule might not match, and the next rule lets the call through.
    assert_eq!(policy.denies_every_call("push", Some("git")), None);
    assert_eq!(policy.denies_every_call("read", Some("memory")), None);
    let strict = Policy::from_toml_str(
        "[tiers]\nmedium = \"deny\"\n[[rules]]\ntools = [\"x\"]\nwhen = \"params.a == 1\"\ntier = \"high\"\n",
    )
    .unwrap();
    assert!(strict.denies_every_call("anything", None).is_some());
    assert!(
        strict.denies_every_call("x", None).is_none(),
        "high is not denied, so a call matching the when passes"
    );
}

#[test]
fn question_mark_matches_exactly_one_character() {
    let policy = Policy::from_toml_str("[[rules]]\ntools = [\"get_v?\"]\ntier = \"low\"").unwrap();
    assert_eq!(policy.classify("get_v1", &json!({}), None).rule, Some(0));
    assert_eq!(policy.classify("get_v10", &json!({}), None).rule, None);
}

#[test]
fn first_matching_rule_wins() {
    let text = r#"
[[rules]]
tools = ["deploy_staging"]
tier = "low"
[[rules]]
tools = ["deploy_*"]
tier = "high"
"#;
    let policy = Policy::from_toml_str(text).unwrap();
    let staging = policy.classify("deploy_staging", &json!({}), None);
    assert_eq!((staging.tier, staging.rule), (Tier::Low, Some(0)));
    let prod = policy.classify("deploy_prod", &json!({}), None);
    assert_eq!((prod.tier, prod.rule), (Tier::High, Some(1)));
}

#[test]
fn a_false_condition_falls_through_to_later_rules() {
    let text = r#"
[[rules]]
tools = ["deploy"]
when = "params.env == 'prod'"
tier = "high"
[[rules]]
tools = ["deploy"]
tier = "low"
"#;
    let policy = Policy::from_toml_str(text).unwrap();
    assert_eq!(
        policy
            .classify("deploy", &json!({"env": "prod"}), None)
            .rule,
        Some(0)
    );
    assert_eq!(
        policy.classify("deploy", &json!({"env": "dev"}), None).rule,
        Some(1)
    );
}

#[test]
fn requested_tier_raises_but_never_lowers() {
    let policy = design();
    let raised = policy.classify("search_orders", &json!({}), Some(Tier::High));
    assert_eq!((raised.tier, raised.policy_tier), (Tier::High, Tier::Low));
    assert_eq!(raised.action, TierAction::Deny);
    let not_lowered = policy.classify("deploy_api", &json!({}), Some(Tier::Low));
    assert_eq!(
        (not_lowered.tier, not_lowered.policy_tier),
        (Tier::Medium, Tier::Medium)
    );
    let same = policy.classify("search_orders", &json!({}), Some(Tier::Low));
    assert_eq!(same.tier, Tier::Low);
}

/// `[tiers]` where a higher tier has a laxer action: the caller's tier, or a failed
/// condition's, can add review but never take it away.
#[test]
fn a_raised_tier_never_makes_the_action_laxer() {
    let policy = Policy::from_toml_str(
        "[tiers]\nlow = \"require_approval\"\nmedium = \"deny\"\nhigh = \"auto_approve\"\n\
         [[rules]]\ntools = [\"deploy_*\"]\ntier = \"low\"\n\
         [[rules]]\ntools = [\"send\"]\nwhen = \"params.n > 1\"\ntier = \"high\"\n",
    )
    .unwrap();
    let deploy = policy.classify("deploy_api", &json!({}), Some(Tier::High));
    assert_eq!(
        (deploy.tier, deploy.policy_tier, deploy.action),
        (Tier::High, Tier::Low, TierAction::RequireApproval)
    );
    assert_eq!(
        deploy.why,
        "rules[0] (tools deploy_*) sets low, raised to high by the caller's request; low's \
         action, require_approval, is the stricter and stands"
    );
    let unknown = policy.classify("drop_table", &json!({}), Some(Tier::High));
    assert_eq!(
        (unknown.tier, unknown.action),
        (Tier::High, TierAction::Deny)
    );
    // Had the condition held, high; had it not, no rule: medium, which is denied.
    let failed = policy.classify("send", &json!({}), None);
    assert_eq!((failed.tier, failed.action), (Tier::High, TierAction::Deny));
    // Asked as they are, or raised to a stricter tier, the tier's own action.
    let asked = policy.classify("deploy_api", &json!({}), None);
    assert_eq!(asked.action, TierAction::RequireApproval);
    let raised = policy.classify("deploy_api", &json!({}), Some(Tier::Medium));
    assert_eq!(raised.action, TierAction::Deny);
    let held = policy.classify("send", &json!({"n": 2}), None);
    assert_eq!(held.action, TierAction::AutoApprove);
}

#[test]
fn the_stricter_action_is_deny_then_require_approval_then_auto_approve() {
    let [auto, ask, deny] = [
        TierAction::AutoApprove,
        TierAction::RequireApproval,
        TierAction::Deny,
    ];
    for (a, b, stricter) in [(auto, ask, ask), (ask, deny, deny), (auto, deny, deny)] {
        assert_eq!((a.stricter(b), b.stricter(a)), (stricter, stricter));
    }
    assert_eq!(auto.stricter(auto), auto);
}

#[test]
fn the_why_says_when_the_caller_raised_the_tier() {
    let policy = design();
    let c = policy.classify("search_orders", &json!({}), Some(Tier::High));
    assert_eq!(
        c.why,
        "rules[0] (tools search_*, get_*, list_*) sets low, raised to high by the caller's request"
    );
    let c = policy.classify("unknown", &json!({}), Some(Tier::High));
    assert_eq!(
        c.why,
        "no rule matched (medium), raised to high by the caller's request"
    );
    let plain = policy.classify("search_orders", &json!({}), Some(Tier::Low));
    assert_eq!(plain.why, "rules[0] (tools search_*, get_*, list_*)");
    let failed = policy.classify("send_email", &json!({}), Some(Tier::High));
    assert_eq!(
        failed.why,
        "the condition of rules[1] (tools send_email) could not be evaluated, so that rule \
         applies (high)"
    );
}

#[test]
fn builtin_policy_requires_approval_for_everything() {
    let policy = Policy::builtin();
    assert_eq!(policy.rules_len(), 0);
    let c = policy.classify("anything", &json!({}), None);
    assert_eq!(
        (c.tier, c.action, c.rule),
        (Tier::Medium, TierAction::RequireApproval, None)
    );
    assert_eq!(c.route.required_approvals, 1);
    assert_eq!(c.route.expires_after, Duration::from_secs(3600));
    assert_eq!(c.route.channel, None);
    assert!(c.route.approvers.is_empty());
    let high = policy.classify("anything", &json!({}), Some(Tier::High));
    assert_eq!(high.action, TierAction::RequireApproval);
}

#[test]
fn empty_file_equals_builtin() {
    let empty = Policy::from_toml_str("").unwrap();
    assert_eq!(empty.defaults(), Policy::builtin().defaults());
    assert_eq!(empty.tiers(), Policy::builtin().tiers());
}

#[test]
fn policy_is_send_and_sync_and_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Policy>();
    let shared = std::sync::Arc::new(design());
    let worker = std::thread::spawn({
        let shared = std::sync::Arc::clone(&shared);
        move || shared.classify("deploy_api", &json!({}), None).tier
    });
    assert_eq!(worker.join().unwrap(), Tier::Medium);
}

#[test]
fn tier_names_round_trip() {
    for tier in [Tier::Low, Tier::Medium, Tier::High] {
        assert_eq!(tier.as_str().parse::<Tier>().unwrap(), tier);
        assert_eq!(tier.to_string(), tier.as_str());
    }
    assert!("urgent".parse::<Tier>().is_err());
    assert!(Tier::Low < Tier::Medium && Tier::Medium < Tier::High);
    for action in [
        TierAction::AutoApprove,
        TierAction::RequireApproval,
        TierAction::Deny,
    ] {
        assert_eq!(action.as_str().parse::<TierAction>().unwrap(), action);
    }
    assert_eq!(
        serde_json::to_string(&TierAction::AutoApprove).unwrap(),
        "\"auto_approve\""
    );
    assert_eq!(serde_json::to_string(&Tier::High).unwrap(), "\"high\"");
}

proptest::proptest! {
    #[test]
    fn effective_tier_is_never_below_requested_or_policy_tier(
        tool in "(search|send|deploy)_[a-z]{0,6}",
        recipients in proptest::option::of(0usize..150),
        requested in proptest::option::of(0u8..3),
    ) {
        let requested = requested.map(|r| [Tier::Low, Tier::Medium, Tier::High][usize::from(r)]);
        let params = match recipients {
            Some(n) => json!({ "recipients": vec!["a@x"; n] }),
            None => json!({}),
        };
        let c = design().classify(&tool, &params, requested);
        proptest::prop_assert!(c.tier >= c.policy_tier);
        proptest::prop_assert!(requested.is_none_or(|r| c.tier >= r));
        if c.notes.is_empty() {
            proptest::prop_assert_eq!(c.action, design().tiers().action(c.tier));
        } else {
            proptest::prop_assert!(c.tier >= Tier::Medium);
            proptest::prop_assert_ne!(c.action, TierAction::AutoApprove);
        }
    }
}
