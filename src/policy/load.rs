//! Parsing and validating the policy TOML into a [`Policy`]. Everything that
//! can be checked without a call (globs, CEL syntax, durations, Slack ids,
//! ranges) is checked here, so a bad file fails at startup, not mid-request.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::policy::condition::Condition;
use crate::policy::error::PolicyError;
use crate::policy::route::{RawRoute, apply_overrides};
use crate::policy::schedule;
use crate::policy::{Policy, Route, Rule, Tier, TierAction, Tiers};

/// `[tiers]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiers {
    low: Option<TierAction>,
    medium: Option<TierAction>,
    high: Option<TierAction>,
}

/// One `[[rules]]` entry. The route keys are repeated rather than
/// `#[serde(flatten)]`ed because serde ignores `deny_unknown_fields` there.
/// Serialized (as JSON) only for its [`Rule::fingerprint`].
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    tools: Vec<String>,
    servers: Option<Vec<String>>,
    #[serde(default)]
    case_sensitive: bool,
    when: Option<String>,
    tier: Tier,
    summary: Option<String>,
    channel: Option<String>,
    approvers: Option<Vec<String>>,
    required_approvals: Option<i64>,
    max_pending: Option<i64>,
    expires_after: Option<String>,
    remind_after: Option<String>,
    remind_every: Option<String>,
    escalate_after: Option<String>,
    escalation_channel: Option<String>,
    escalation_approvers: Option<Vec<String>>,
    batch_window: Option<String>,
}

impl RawRule {
    /// Splits out the route overrides so they go through the same
    /// validation as `[defaults]`.
    fn route(&self) -> RawRoute {
        RawRoute {
            channel: self.channel.clone(),
            approvers: self.approvers.clone(),
            required_approvals: self.required_approvals,
            max_pending: self.max_pending,
            expires_after: self.expires_after.clone(),
            remind_after: self.remind_after.clone(),
            remind_every: self.remind_every.clone(),
            escalate_after: self.escalate_after.clone(),
            escalation_channel: self.escalation_channel.clone(),
            escalation_approvers: self.escalation_approvers.clone(),
            batch_window: self.batch_window.clone(),
        }
    }
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default)]
    defaults: RawRoute,
    #[serde(default)]
    tiers: RawTiers,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    callbacks: RawCallbacks,
}

/// `[callbacks]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallbacks {
    /// Internal hosts and ranges callbacks may reach.
    #[serde(default)]
    allow: Vec<String>,
}

/// Parses and validates policy TOML. See [`Policy::from_toml_str`].
pub(crate) fn parse(text: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::from_toml(&e, text))?;

    let builtin = Policy::builtin();
    let defaults = apply_overrides(&builtin.defaults, &raw.defaults, "defaults")?;
    let tiers = Tiers {
        low: raw.tiers.low.unwrap_or(builtin.tiers.low),
        medium: raw.tiers.medium.unwrap_or(builtin.tiers.medium),
        high: raw.tiers.high.unwrap_or(builtin.tiers.high),
    };

    let mut rules = Vec::with_capacity(raw.rules.len());
    for (index, raw_rule) in raw.rules.iter().enumerate() {
        rules.push(build_rule(index, raw_rule, &defaults)?);
    }
    let merged = rules
        .iter()
        .zip(&raw.rules)
        .map(|(rule, raw_rule)| (&rule.route, raw_rule.route()));
    schedule::check_defaults(&defaults, &raw.defaults, merged)?;
    let callbacks = crate::egress::Allow::parse(&raw.callbacks.allow)
        .map_err(|why| PolicyError::invalid("callbacks.allow", why))?;
    Ok(Policy {
        defaults,
        tiers,
        rules,
        callbacks,
    })
}

/// Validates one rule and resolves its route against the defaults once, so
/// classification only has to clone a ready `Route`.
fn build_rule(index: usize, raw: &RawRule, defaults: &Route) -> Result<Rule, PolicyError> {
    let at = format!("rules[{index}]");
    if raw.tools.is_empty() {
        return Err(PolicyError::invalid(
            format!("{at}.tools"),
            "must list at least one tool name or glob",
        ));
    }
    let matcher = glob_set(&raw.tools, &format!("{at}.tools"), raw.case_sensitive)?;
    let server_matcher = match &raw.servers {
        Some(servers) if servers.is_empty() => {
            return Err(PolicyError::invalid(
                format!("{at}.servers"),
                "must list at least one server name or glob (leave it out for any server)",
            ));
        }
        Some(servers) => Some(glob_set(
            servers,
            &format!("{at}.servers"),
            raw.case_sensitive,
        )?),
        None => None,
    };

    let when = match &raw.when {
        Some(source) => Some(
            Condition::compile(source)
                .map_err(|message| PolicyError::invalid(format!("{at}.when"), message))?,
        ),
        None => None,
    };

    let raw_route = raw.route();
    let mut route = apply_overrides(defaults, &raw_route, &at)?;
    schedule::check_rule(&route, &raw_route, &at)?;
    route.summary_template = raw.summary.clone();

    Ok(Rule {
        fingerprint: fingerprint(raw),
        tools: raw.tools.clone(),
        matcher,
        servers: raw.servers.clone().unwrap_or_default(),
        server_matcher,
        when,
        tier: raw.tier,
        route,
    })
}

/// [`Rule::fingerprint`]: the first 16 hex digits of the SHA-256 of the rule as
/// written, as JSON (its keys in a fixed order, so TOML's layout and comments play no
/// part).
fn fingerprint(raw: &RawRule) -> String {
    let written = serde_json::to_string(raw).unwrap_or_default();
    hex::encode(&Sha256::digest(written.as_bytes())[..8])
}

/// The globs of one key (`tools` or `servers`) as one set matching whole names. `*`
/// also matches `/` (names are not paths). Any case matches unless the rule says
/// `case_sensitive = true`: `Delete_Users` must not dodge a rule for `delete_*`.
fn glob_set(patterns: &[String], at: &str, case_sensitive: bool) -> Result<GlobSet, PolicyError> {
    let mut builder = GlobSetBuilder::new();
    for (i, pattern) in patterns.iter().enumerate() {
        let field = format!("{at}[{i}]");
        if pattern.trim().is_empty() {
            return Err(PolicyError::invalid(field, "glob is empty"));
        }
        let glob = GlobBuilder::new(pattern)
            .case_insensitive(!case_sensitive)
            .build()
            .map_err(|e| {
                PolicyError::invalid(field, format!("bad glob {pattern:?}: {}", e.kind()))
            })?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| PolicyError::invalid(at, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `text`, expecting failure, and returns the one-line message.
    fn error(text: &str) -> String {
        let message = match parse(text) {
            Ok(_) => panic!("policy unexpectedly valid:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(!message.contains('\n'), "not one line: {message}");
        message
    }

    fn rule(extra: &str) -> String {
        format!("[[rules]]\ntools = [\"a\"]\ntier = \"low\"\n{extra}\n")
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let msg = error("[defaults]\nchannel = \"C1\"\nexpires_after = 4h\n");
        assert!(msg.contains("line 3, column 17"), "{msg}");
    }

    #[test]
    fn unknown_key_in_defaults_is_rejected_with_its_line() {
        let msg = error("[defaults]\nchannel = \"C1\"\nchanel = \"C2\"\n");
        assert!(msg.contains("line 3, column 1 (in defaults)"), "{msg}");
        assert!(msg.contains("unknown field `chanel`"), "{msg}");
    }

    #[test]
    fn unknown_key_in_a_rule_names_the_rule() {
        let text = format!("{}{}", rule(""), rule("colour = \"red\""));
        let msg = error(&text);
        assert!(msg.contains("line 8, column 1 (in rules[1])"), "{msg}");
        assert!(msg.contains("unknown field `colour`"), "{msg}");
    }

    #[test]
    fn unknown_top_level_table_is_rejected() {
        let msg = error("[routing]\nchannel = \"C1\"\n");
        assert!(
            msg.contains("line 1") && msg.contains("unknown field `routing`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_tier_action_names_its_line() {
        let msg = error("[tiers]\nlow = \"auto_approve\"\nhigh = \"maybe\"\n");
        assert!(msg.contains("line 3, column 8 (in tiers)"), "{msg}");
        assert!(msg.contains("unknown variant `maybe`"), "{msg}");
    }

    #[test]
    fn bad_or_missing_rule_tier_is_rejected() {
        let msg = error("[[rules]]\ntools = [\"a\"]\ntier = \"extreme\"\n");
        assert!(
            msg.contains("line 3") && msg.contains("unknown variant `extreme`"),
            "{msg}"
        );
        let msg = error("[[rules]]\ntools = [\"a\"]\n");
        assert!(
            msg.contains("(in rules[0])") && msg.contains("missing field `tier`"),
            "{msg}"
        );
    }

    #[test]
    fn bad_glob_names_the_rule_and_pattern() {
        let text = format!(
            "{}[[rules]]\ntools = [\"ok_*\", \"a[\"]\ntier = \"low\"\n",
            rule("")
        );
        let msg = error(&text);
        assert!(
            msg.starts_with("invalid policy: rules[1].tools[1]: bad glob \"a[\""),
            "{msg}"
        );
    }

    #[test]
    fn empty_tools_or_empty_glob_is_rejected() {
        let msg = error("[[rules]]\ntools = []\ntier = \"low\"\n");
        assert!(
            msg.contains("rules[0].tools: must list at least one"),
            "{msg}"
        );
        let msg = error("[[rules]]\ntools = [\"\"]\ntier = \"low\"\n");
        assert!(msg.contains("rules[0].tools[0]: glob is empty"), "{msg}");
    }

    #[test]
    fn bad_cel_names_the_rules_when() {
        let msg = error(&rule("when = \"size(params.x) >\""));
        assert!(
            msg.starts_with("invalid policy: rules[0].when: CEL does not compile"),
            "{msg}"
        );
        let msg = error(&rule("when = \"parms.x > 1\""));
        assert!(
            msg.contains("rules[0].when: unknown variable `parms`"),
            "{msg}"
        );
        let msg = error(&rule("when = \"params.x.startWith('a')\""));
        assert!(
            msg.starts_with("invalid policy: rules[0].when: unknown function `startWith`"),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn load_names_the_path_of_a_missing_file() {
        let path = std::env::temp_dir().join("signoff-policy-test-does-not-exist.toml");
        let msg = Policy::load(&path).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot read policy file") && msg.contains(&*path.to_string_lossy()),
            "{msg}"
        );
    }

    #[test]
    fn load_names_the_path_and_line_of_an_invalid_file() {
        let path =
            std::env::temp_dir().join(format!("signoff-policy-test-{}.toml", std::process::id()));
        std::fs::write(&path, "[defaults]\nbogus = 1\n").unwrap();
        let result = Policy::load(&path);
        std::fs::remove_file(&path).unwrap();
        let msg = result.unwrap_err().to_string();
        assert!(
            msg.contains(&*path.to_string_lossy()) && msg.contains("line 2, column 1"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }
}
