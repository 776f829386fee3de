//! Classification tests: conditions that cannot be evaluated (the rule that might have
//! matched applies, at no lower tier, never auto-approved), and approvers' edits checked
//! against how the request was classified.

use serde_json::json;

use crate::policy::{Classified, Policy, Tier, TierAction};

#[test]
fn a_condition_error_makes_its_rule_apply_at_its_tier_and_leaves_a_note() {
    let text = r#"
[[rules]]
tools = ["send_email"]
when = "size(params.recipients) > 100"
tier = "high"
[[rules]]
tools = ["send_*"]
tier = "low"
"#;
    let policy = Policy::from_toml_str(text).unwrap();
    let c = policy.classify("send_email", &json!({"subject": "hi"}), None);
    // The low rule matched, but the failed condition might have matched: its rule.
    assert_eq!(
        (c.rule, c.policy_tier, c.tier),
        (Some(0), Tier::High, Tier::High)
    );
    assert_eq!(c.action, TierAction::RequireApproval);
    assert_eq!(c.notes.len(), 1);
    assert!(c.notes[0].contains("rules[0].when"), "{}", c.notes[0]);
    assert!(c.notes[0].contains("recipients"), "{}", c.notes[0]);
    assert!(
        c.notes[0].contains("this rule routes the call"),
        "{}",
        c.notes[0]
    );
    assert!(c.notes[0].contains("at least high"), "{}", c.notes[0]);
    assert_eq!(
        c.why,
        "the condition of rules[0] (tools send_email) could not be evaluated, so that rule \
         applies (high)"
    );

    let wrong_type = policy.classify("send_email", &json!({"recipients": 5}), None);
    assert_eq!(wrong_type.tier, Tier::High);
    assert_eq!(wrong_type.notes.len(), 1);
}

/// A transfer rule as an operator writes it, under `[tiers]` where `medium` and `low`
/// need nobody: a string amount must not dodge the rule into an auto-approval.
fn transfers(high: &str) -> Policy {
    Policy::from_toml_str(&format!(
        "[tiers]\nlow = \"auto_approve\"\nmedium = \"auto_approve\"\nhigh = \"{high}\"\n\
         [[rules]]\ntools = [\"transfer_funds\"]\nwhen = \"params.amount > 1000\"\n\
         tier = \"high\"\n"
    ))
    .unwrap()
}

#[test]
fn a_condition_that_fails_raises_to_the_rules_tier_and_never_auto_approves() {
    let policy = transfers("require_approval");
    let small = policy.classify("transfer_funds", &json!({"amount": 10}), None);
    assert_eq!(
        (small.tier, small.action, small.rule),
        (Tier::Medium, TierAction::AutoApprove, None)
    );
    let large = policy.classify("transfer_funds", &json!({"amount": 5000}), None);
    assert_eq!(
        (large.tier, large.action, large.rule),
        (Tier::High, TierAction::RequireApproval, Some(0))
    );
    for dodge in [
        json!({"amount": "5000"}),
        json!({}),
        json!({"amount": null}),
    ] {
        let c = policy.classify("transfer_funds", &dodge, None);
        assert_eq!(
            (c.tier, c.policy_tier, c.action, c.rule),
            (Tier::High, Tier::High, TierAction::RequireApproval, Some(0)),
            "{dodge}"
        );
        assert_eq!(c.notes.len(), 1, "{dodge}");
        assert_eq!(
            c.why,
            "the condition of rules[0] (tools transfer_funds) could not be evaluated, so \
             that rule applies (high)"
        );
    }

    // A deny tier stays a deny: the failed condition does not turn it into a request.
    let denying = transfers("deny");
    let c = denying.classify("transfer_funds", &json!({"amount": "5000"}), None);
    assert_eq!((c.tier, c.action), (Tier::High, TierAction::Deny));

    // Even when every tier auto-approves, a failed condition asks a person.
    let lax = transfers("auto_approve");
    let c = lax.classify("transfer_funds", &json!({"amount": "5000"}), None);
    assert_eq!(
        (c.tier, c.action),
        (Tier::High, TierAction::RequireApproval)
    );
    let c = lax.classify("transfer_funds", &json!({"amount": 5000}), None);
    assert_eq!(
        c.action,
        TierAction::AutoApprove,
        "evaluated: as configured"
    );
}

#[test]
fn a_failed_low_rule_still_raises_to_medium() {
    let text = "[tiers]\nmedium = \"auto_approve\"\n\
                [[rules]]\ntools = [\"t\"]\nwhen = \"params.n > 1\"\ntier = \"low\"\n";
    let c = Policy::from_toml_str(text)
        .unwrap()
        .classify("t", &json!({"n": "x"}), None);
    assert_eq!((c.tier, c.rule), (Tier::Medium, Some(0)));
    assert_eq!(c.action, TierAction::RequireApproval);
    assert_eq!(
        c.why,
        "the condition of rules[0] (tools t) could not be evaluated, so that rule applies \
         (medium)",
        "said even though it raised nothing"
    );
}

/// A stricter rule for production deploys before the everyday one: a call that leaves
/// `environment` out must not get the everyday rule's reviewers.
pub(crate) const STRICT_PROD: &str = r#"
[defaults]
channel = "C0APPROVALS"

[[rules]]
tools = ["deploy_*"]
when = "params.environment == 'prod'"
tier = "medium"
required_approvals = 2
approvers = ["U0ALICE", "U0BOB"]
channel = "C0PROD"

[[rules]]
tools = ["deploy_*"]
tier = "medium"
"#;

#[test]
fn a_rule_whose_condition_cannot_be_evaluated_routes_the_call_to_its_approvers() {
    let policy = Policy::from_toml_str(STRICT_PROD).unwrap();
    let prod = policy.classify("deploy_api", &json!({"environment": "prod"}), None);
    let missing = policy.classify("deploy_api", &json!({"service": "api"}), None);
    for c in [&prod, &missing] {
        assert_eq!(c.rule, Some(0));
        assert_eq!(c.route.required_approvals, 2);
        assert_eq!(c.route.approvers, ["U0ALICE", "U0BOB"]);
        assert_eq!(c.route.channel.as_deref(), Some("C0PROD"));
        assert_eq!(c.action, TierAction::RequireApproval);
    }
    assert!(
        missing.why.contains("could not be evaluated"),
        "{}",
        missing.why
    );
    let staging = policy.classify("deploy_api", &json!({"environment": "staging"}), None);
    assert_eq!(
        (staging.rule, staging.route.required_approvals),
        (Some(1), 1)
    );
}

#[test]
fn the_first_rule_that_might_have_matched_routes_and_the_highest_tier_counts() {
    let text = r#"
[[rules]]
tools = ["t"]
when = "params.a == 1"
tier = "low"
required_approvals = 3
[[rules]]
tools = ["t"]
when = "params.b == 1"
tier = "high"
[[rules]]
tools = ["t"]
tier = "high"
"#;
    let policy = Policy::from_toml_str(text).unwrap();
    let both = policy.classify("t", &json!({}), None);
    assert_eq!((both.rule, both.tier), (Some(0), Tier::High));
    assert_eq!(both.route.required_approvals, 3);
    assert_eq!(both.notes.len(), 2);
    assert_eq!(
        both.why,
        "the condition of rules[0] (tools t) could not be evaluated, so that rule applies \
         (medium), raised to high because the condition of rules[1] (tools t) could not be \
         evaluated and because rules[2] (tools t) matched"
    );
    // Only the later rule, whose tier is as high.
    let matched = policy.classify("t", &json!({"b": 2}), None);
    assert_eq!((matched.rule, matched.tier), (Some(0), Tier::High));
    assert_eq!(
        matched.why,
        "the condition of rules[0] (tools t) could not be evaluated, so that rule applies \
         (medium), raised to high because rules[2] (tools t) matched"
    );
}

/// How `params` of `tool` were classified under `policy`, as an approval keeps it.
fn classified<'a>(policy: &'a Policy, tool: &'a str, params: &serde_json::Value) -> Classified<'a> {
    let class = policy.classify(tool, params, None);
    Classified {
        tool,
        server: None,
        annotations: None,
        tier: class.tier,
        rule: class.rule,
        rule_fingerprint: class
            .rule
            .and_then(|index| policy.rules.get(index))
            .map(|rule| rule.fingerprint.as_str()),
        required_approvals: class.route.required_approvals,
    }
}

#[test]
fn an_edit_that_leaves_out_a_field_a_stricter_rule_needs_is_refused() {
    let policy = Policy::from_toml_str(STRICT_PROD).unwrap();
    let staging = json!({"service": "api", "environment": "staging"});
    let asked = classified(&policy, "deploy_api", &staging);
    assert_eq!(asked.rule, Some(1));
    let why = policy
        .check_edit(&asked, &json!({"service": "api"}))
        .unwrap_err();
    assert!(why.contains("could not be evaluated"), "{why}");
    assert!(why.contains("2 approvals"), "{why}");
    let other = json!({"service": "web", "environment": "staging"});
    assert_eq!(policy.check_edit(&asked, &other), Ok(()));
}

/// The policy file changed after the request: a rule was put before the one that
/// classified it, so its index now names another rule, which the edit would satisfy.
#[test]
fn an_edit_is_refused_when_the_requests_rule_index_names_another_rule_now() {
    let staging = json!({"service": "api", "environment": "staging"});
    let before = Policy::from_toml_str(STRICT_PROD).unwrap();
    let asked = classified(&before, "deploy_api", &staging);
    assert_eq!(asked.rule, Some(1));
    let edited = json!({"service": "web", "environment": "staging"});
    assert_eq!(before.check_edit(&asked, &edited), Ok(()));

    let inserted = STRICT_PROD.replacen(
        "[[rules]]",
        "[[rules]]\ntools = [\"deploy_*\"]\nwhen = \"params.service == 'db'\"\n\
         tier = \"high\"\n\n[[rules]]",
        1,
    );
    let after = Policy::from_toml_str(&inserted).unwrap();
    assert_eq!(after.classify("deploy_api", &edited, None).rule, Some(2));
    let why = after.check_edit(&asked, &edited).unwrap_err();
    assert!(why.starts_with("The policy has changed since"), "{why}");
    assert!(why.contains("rules[1]"), "{why}");

    // Comments and layout are no change; an approval without a fingerprint (kept
    // before there were any) is checked by its index, as before.
    let relaid = Policy::from_toml_str(&STRICT_PROD.replace("\n\n", "\n# a comment\n\n")).unwrap();
    assert_eq!(relaid.check_edit(&asked, &edited), Ok(()));
    let unmarked = Classified {
        rule_fingerprint: None,
        ..asked
    };
    assert!(
        after.check_edit(&unmarked, &edited).is_err(),
        "rules[2] now"
    );
}

#[test]
fn an_edit_that_makes_a_condition_fail_is_refused() {
    for high in ["require_approval", "deny"] {
        let policy = transfers(high);
        let asked = json!({"amount": 500});
        let classified = classified(&policy, "transfer_funds", &asked);
        assert_eq!(classified.tier, Tier::Medium);
        assert_eq!(
            policy.check_edit(&classified, &json!({"amount": 900})),
            Ok(())
        );
        for edited in [json!({"amount": "5000"}), json!({"amount": 5000})] {
            let why = policy.check_edit(&classified, &edited).unwrap_err();
            assert!(why.contains("risk tier high"), "{high}: {edited}: {why}");
        }
    }
}

#[test]
fn non_bool_condition_counts_as_an_error() {
    let text = "[[rules]]\ntools = [\"t\"]\nwhen = \"params.n\"\ntier = \"low\"";
    let c = Policy::from_toml_str(text)
        .unwrap()
        .classify("t", &json!({"n": 1}), None);
    assert_eq!((c.rule, c.tier), (Some(0), Tier::Medium));
    assert!(c.notes[0].contains("instead of bool"), "{}", c.notes[0]);
}
