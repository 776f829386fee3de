//! Support for `signoff policy check FILE`: sample calls derived from the
//! rules and a plain-text report of how each one would be classified, so an
//! operator can see the effect of a policy before deploying it.

use serde_json::Value;

use crate::policy::{Call, Policy, render_summary};

/// Tool name used to show what happens to a tool no rule mentions.
const UNKNOWN_TOOL: &str = "unknown_tool";

/// One call to classify: `TOOL`, `TOOL=JSON`, `SERVER/TOOL=JSON` on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleCall {
    /// The MCP server's name, when the call names one.
    pub server: Option<String>,
    pub tool: String,
    pub params: Value,
}

impl SampleCall {
    fn named(server: Option<String>, tool: String) -> Self {
        SampleCall {
            server,
            tool,
            params: Value::Object(serde_json::Map::new()),
        }
    }

    /// `SERVER/TOOL` when the call names a server, else `TOOL`.
    pub fn label(&self) -> String {
        match &self.server {
            Some(server) => format!("{server}/{}", self.tool),
            None => self.tool.clone(),
        }
    }
}

/// Sample calls: for each rule, a tool name made from its first glob (`*` →
/// `example`, `?` → `x`, a `[class]` → its first character, `{a,b}` → `a`)
/// with `{}` params, on a server made the same way from its first `servers` glob
/// when it has one, then `unknown_tool`. Duplicates are dropped, keeping the first.
pub fn sample_calls(policy: &Policy) -> Vec<SampleCall> {
    let mut calls: Vec<SampleCall> = Vec::new();
    let from_rules = policy.rules.iter().filter_map(|rule| {
        let tool = example_name(rule.tools.first()?);
        let server = rule.servers.first().map(|glob| example_name(glob));
        Some(SampleCall::named(server, tool))
    });
    for call in from_rules.chain([SampleCall::named(None, UNKNOWN_TOOL.to_string())]) {
        if !calls.contains(&call) {
            calls.push(call);
        }
    }
    calls
}

/// Builds one concrete name that `glob` matches (best effort for the
/// rarer glob syntax; `*` and `?` are the documented ones).
fn example_name(glob: &str) -> String {
    let mut out = String::new();
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                // `**` is the same as `*` for a name without separators.
                while chars.peek() == Some(&'*') {
                    chars.next();
                }
                out.push_str("example");
            }
            '?' => out.push('x'),
            '\\' => out.extend(chars.next()),
            '[' => {
                let class: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let negated = class.starts_with(['!', '^']);
                match class.chars().next() {
                    // A negated class matches nearly anything; `x` is a guess.
                    Some(_) if negated => out.push('x'),
                    Some(first) => out.push(first),
                    None => {}
                }
            }
            '{' => {
                let group: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let first = group.split(',').next().unwrap_or_default();
                out.push_str(&example_name(first));
            }
            other => out.push(other),
        }
    }
    out
}

/// A readable report, one line per call:
///
/// `[SERVER/]TOOL PARAMS -> tier=T action=A rule=rules[N] channel=C approvers=X,Y
/// required_approvals=N expires_after=D`, with `(policy T)` after the tier
/// when the effective tier differs, `rule=none (no rule: default medium)`
/// for unmatched tools, and a `summary="..."` when the rule has a template.
/// Each note of a call follows on its own line, indented, as `  note: ...`.
pub fn check_report(policy: &Policy, calls: &[SampleCall]) -> String {
    let mut report = String::new();
    for call in calls {
        let params = &call.params;
        let c = policy.classify_call(
            &Call {
                server: call.server.as_deref(),
                ..Call::new(&call.tool, params)
            },
            None,
        );
        let tier = if c.tier == c.policy_tier {
            c.tier.to_string()
        } else {
            format!("{} (policy {})", c.tier, c.policy_tier)
        };
        let rule = match c.rule {
            Some(index) => format!("rules[{index}]"),
            None => "none (no rule: default medium)".to_string(),
        };
        let channel = c.route.channel.as_ref().map_or("none", |c| c.as_str());
        let approvers = if c.route.approvers.is_empty() {
            "none".to_string()
        } else {
            c.route
                .approvers
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut line = format!(
            "{} {params} -> tier={tier} action={} rule={rule} channel={channel} \
             approvers={approvers} required_approvals={} expires_after={}",
            call.label(),
            c.action,
            c.route.required_approvals,
            humantime::format_duration(c.route.expires_after),
        );
        if let Some(template) = &c.route.summary_template {
            line.push_str(&format!(" summary={:?}", render_summary(template, params)));
        }
        report.push_str(&line);
        report.push('\n');
        for note in &c.notes {
            report.push_str("  note: ");
            report.push_str(note);
            report.push('\n');
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::classify::tests::DESIGN_EXAMPLE;
    use serde_json::json;

    #[test]
    fn example_names_replace_wildcards() {
        assert_eq!(example_name("search_*"), "search_example");
        assert_eq!(example_name("get_v?"), "get_vx");
        assert_eq!(example_name("send_email"), "send_email");
        assert_eq!(example_name("a[bc]d"), "abd");
        assert_eq!(example_name("a[!b]"), "ax");
        assert_eq!(example_name("{read,write}_*"), "read_example");
        assert_eq!(example_name(r"lit\*"), "lit*");
    }

    #[test]
    fn example_names_match_their_globs() {
        for glob in [
            "search_*",
            "get_v?",
            "a[bc]d",
            "{read,write}_*",
            "x**y",
            "*",
        ] {
            let matcher = globset::Glob::new(glob).unwrap().compile_matcher();
            assert!(matcher.is_match(example_name(glob)), "{glob}");
        }
    }

    #[test]
    fn sample_calls_cover_each_rule_and_an_unknown_tool() {
        let policy = Policy::from_toml_str(DESIGN_EXAMPLE).unwrap();
        let names: Vec<String> = sample_calls(&policy).into_iter().map(|c| c.tool).collect();
        assert_eq!(
            names,
            [
                "search_example",
                "send_email",
                "deploy_example",
                "unknown_tool"
            ]
        );
        assert!(sample_calls(&policy).iter().all(|c| c.params == json!({})));
    }

    #[test]
    fn sample_calls_of_builtin_is_just_the_unknown_tool() {
        let calls = sample_calls(&Policy::builtin());
        assert_eq!(calls, [SampleCall::named(None, "unknown_tool".to_string())]);
    }

    #[test]
    fn check_report_has_one_line_per_call_plus_notes() {
        let policy = Policy::from_toml_str(DESIGN_EXAMPLE).unwrap();
        let report = check_report(&policy, &sample_calls(&policy));
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 5, "{report}");
        assert_eq!(
            lines[0],
            "search_example {} -> tier=low action=auto_approve rule=rules[0] channel=C0APPROVALS \
             approvers=U0ALICE,S0ONCALL required_approvals=1 expires_after=4h"
        );
        // send_email with {} params: the condition cannot be evaluated, so the call is
        // taken by the rule that might have matched, at its tier, which is denied.
        assert!(
            lines[1].starts_with("send_email {} -> tier=high action=deny rule=rules[1]"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("  note: rules[1].when"),
            "{}",
            lines[2]
        );
        assert_eq!(
            lines[3],
            "deploy_example {} -> tier=medium action=require_approval rule=rules[2] \
             channel=C0DEPLOYS approvers=U0ALICE,S0ONCALL required_approvals=2 \
             expires_after=4h summary=\"Deploy {service} to {environment}\""
        );
        assert!(
            lines[4].starts_with("unknown_tool {} -> tier=medium"),
            "{}",
            lines[4]
        );
        assert!(lines[4].contains("rule=none (no rule: default medium)"));
    }

    #[test]
    fn check_report_renders_params_and_summaries() {
        let policy = Policy::from_toml_str(DESIGN_EXAMPLE).unwrap();
        let calls = vec![SampleCall {
            params: json!({"service": "api", "environment": "prod"}),
            ..SampleCall::named(None, "deploy_api".to_string())
        }];
        let report = check_report(&policy, &calls);
        assert!(
            report.starts_with(r#"deploy_api {"environment":"prod","service":"api"} -> "#),
            "{report}"
        );
        assert!(
            report.contains(r#"summary="Deploy api to prod""#),
            "{report}"
        );
    }

    #[test]
    fn check_report_shows_builtin_defaults() {
        let report = check_report(&Policy::builtin(), &sample_calls(&Policy::builtin()));
        assert_eq!(
            report,
            "unknown_tool {} -> tier=medium action=require_approval rule=none (no rule: default medium) \
             channel=none approvers=none required_approvals=1 expires_after=1h\n"
        );
    }
}
