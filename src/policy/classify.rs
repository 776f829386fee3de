//! Classifying a tool call against a loaded policy: first matching rule
//! wins, and every uncertainty (no match, condition error) errs towards
//! asking a human.

use crate::policy::condition::Scope;
use crate::policy::{Call, Classification, Policy, Rule, Tier, TierAction};

/// A tool the policy denies whatever its arguments (see [`Policy::denies_every_call`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Which rule, in words, and that its tier's action is `deny`.
    pub reason: String,
}

impl Rule {
    /// Whether the rule's globs take this tool on this server (its `when` aside).
    pub(crate) fn names(&self, tool: &str, server: Option<&str>) -> bool {
        self.matcher.is_match(tool)
            && match (&self.server_matcher, server) {
                (None, _) => true,
                (Some(servers), Some(server)) => servers.is_match(server),
                (Some(_), None) => false,
            }
    }

    /// The rule in words, for reasons: `rules[2] (tools delete_*, servers git)`.
    fn describe(&self, index: usize) -> String {
        let mut text = format!("rules[{index}] (tools {}", self.tools.join(", "));
        if !self.servers.is_empty() {
            text.push_str(&format!("; servers {}", self.servers.join(", ")));
        }
        text.push(')');
        text
    }
}

impl Policy {
    /// Classifies a call of `tool_name` with `params`, outside MCP (no server, no
    /// annotations). See [`Policy::classify_call`].
    pub fn classify(
        &self,
        tool_name: &str,
        params: &serde_json::Value,
        requested: Option<Tier>,
    ) -> Classification {
        self.classify_call(&Call::new(tool_name, params), requested)
    }

    /// Classifies one call.
    ///
    /// The first rule (in file order) whose globs match the tool (and the server,
    /// when the rule names servers) and whose `when`, if any, evaluates to `true`
    /// decides the policy tier and route; no match means `Medium` with the default
    /// route. `requested` can only raise the tier. A `when` that errors adds a note,
    /// and as its rule might have matched, it is taken the fail-safe way on every
    /// count: the first such rule decides the route and is the one recorded (it
    /// comes before any rule that matched, so it would have won had its condition
    /// held: its approvers and approval count must not be dodged by leaving a field
    /// out); the effective tier is at least each such rule's tier (and at least
    /// `Medium`) and at least the matched rule's; and the call is never auto-approved
    /// (it needs approval, unless its tier is denied).
    pub fn classify_call(&self, call: &Call<'_>, requested: Option<Tier>) -> Classification {
        let mut notes = Vec::new();
        // Each rule whose condition could not be evaluated, in file order, and the
        // tier it raises the call to.
        let mut failed: Vec<(usize, Tier)> = Vec::new();
        let mut matched = None;
        // Built at the first condition, for all of them.
        let mut scope = None;

        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.names(call.tool, call.server) {
                continue;
            }
            if let Some(condition) = &rule.when {
                match condition.evaluate_in(scope.get_or_insert_with(|| Scope::of(call))) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(reason) => {
                        let floor = rule.tier.max(Tier::Medium);
                        tracing::warn!(
                            rule = index,
                            tool = ?call.tool,
                            condition = condition.source(),
                            %reason,
                            "policy condition failed to evaluate; the rule routes the call"
                        );
                        let routes = if failed.is_empty() {
                            "this rule routes the call (it might have matched), "
                        } else {
                            ""
                        };
                        notes.push(format!(
                            "rules[{index}].when ({}) could not be evaluated: {reason}; \
                             {routes}the tier is raised to at least {floor} (the rule's tier, \
                             at least medium) and the call is not auto-approved",
                            condition.source()
                        ));
                        failed.push((index, floor));
                        continue;
                    }
                }
            }
            matched = Some(index);
            break;
        }
        self.outcome(matched, requested, &failed, notes)
    }

    /// The classification once the rules were tried: `matched`, the rule that
    /// matched; `failed`, each rule whose condition could not be evaluated (all
    /// before `matched`, in file order) and the tier it raises the call to.
    fn outcome(
        &self,
        matched: Option<usize>,
        requested: Option<Tier>,
        failed: &[(usize, Tier)],
        notes: Vec<String>,
    ) -> Classification {
        // Fail-safe: an unlisted tool is neither waved through nor denied.
        let matched_tier = matched
            .and_then(|index| self.rules.get(index))
            .map_or(Tier::Medium, |rule| rule.tier);
        let policy_tier = failed
            .iter()
            .map(|&(_, tier)| tier)
            .fold(matched_tier, Tier::max);
        // The first rule that might have matched comes before the one that did.
        let decider = failed.first().map(|&(index, _)| index).or(matched);
        let route = decider
            .and_then(|index| self.rules.get(index))
            .map_or_else(|| self.defaults.clone(), |rule| rule.route.clone());
        let requested = requested.unwrap_or(Tier::Low);
        let tier = policy_tier.max(requested);

        // A higher tier can have a laxer action (`high = "auto_approve"`): the
        // strictest action of every tier the call might be taken at stands, so that
        // neither the caller's tier nor a failed condition makes review laxer.
        let mut tiers = [tier, matched_tier]
            .into_iter()
            .chain(failed.iter().map(|&(_, floor)| floor));
        let strictest = tiers
            .clone()
            .map(|tier| self.tiers.action(tier))
            .fold(TierAction::AutoApprove, TierAction::stricter);
        let mut why = self.why(matched, failed, requested, tier);
        if strictest != self.tiers.action(tier)
            && let Some(source) = tiers.find(|&t| self.tiers.action(t) == strictest)
        {
            why.push_str(&format!(
                "; {source}'s action, {strictest}, is the stricter and stands"
            ));
        }
        let mut action = strictest;
        if !failed.is_empty() && action == TierAction::AutoApprove {
            // The policy could not tell what this call is: a person must look.
            action = TierAction::RequireApproval;
        }

        Classification {
            tier,
            policy_tier,
            action,
            rule: decider,
            rule_fingerprint: decider
                .and_then(|index| self.rules.get(index))
                .map(|rule| rule.fingerprint.clone()),
            why,
            route,
            notes,
        }
    }

    /// [`Classification::why`]: the rule that applies (or none), and what raised the
    /// tier above that rule's own.
    fn why(
        &self,
        matched: Option<usize>,
        failed: &[(usize, Tier)],
        requested: Tier,
        tier: Tier,
    ) -> String {
        let rule_at = |index: usize| self.rules.get(index).map(|rule| rule.describe(index));
        let matched = matched.and_then(|index| {
            let rule = self.rules.get(index)?;
            Some((rule.describe(index), rule.tier))
        });
        let (decided, own_tier) = match (failed.first(), &matched) {
            (Some(&(index, floor)), _) => (
                format!(
                    "the condition of {} could not be evaluated, so that rule applies",
                    rule_at(index).unwrap_or_default()
                ),
                floor,
            ),
            (None, Some((rule, rule_tier))) => (rule.clone(), *rule_tier),
            (None, None) => ("no rule matched".to_owned(), Tier::Medium),
        };
        // A matched rule's name says it all; otherwise the tier goes with it.
        let plain = failed.is_empty() && matched.is_some();
        if tier == own_tier {
            return if failed.is_empty() {
                decided
            } else {
                format!("{decided} ({tier})")
            };
        }
        let mut causes = Vec::new();
        if requested == tier {
            causes.push("by the caller's request".to_owned());
        }
        if let Some(&(index, _)) = failed.iter().skip(1).find(|&&(_, raised)| raised == tier) {
            causes.push(format!(
                "because the condition of {} could not be evaluated",
                rule_at(index).unwrap_or_default()
            ));
        }
        if let Some((rule, _)) = matched.filter(|&(_, rule_tier)| rule_tier == tier && !plain) {
            causes.push(format!("because {rule} matched"));
        }
        let decided = if plain {
            format!("{decided} sets {own_tier}")
        } else {
            format!("{decided} ({own_tier})")
        };
        format!("{decided}, raised to {tier} {}", causes.join(" and "))
    }

    /// `Some` when every call of `tool` on `server` is denied, whatever its
    /// arguments: the first rule naming it without a `when` has a tier whose action
    /// is `deny`, and every rule with a `when` before it denies too (or no rule names
    /// the tool and `medium` is denied). The MCP proxy leaves such tools out of
    /// `tools/list`, so that a model does not try them. Annotations are hints from the
    /// server and play no part in this.
    pub fn denies_every_call(&self, tool: &str, server: Option<&str>) -> Option<Denied> {
        let denies = |tier: Tier| self.tiers.action(tier) == TierAction::Deny;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.names(tool, server) {
                continue;
            }
            match (&rule.when, denies(rule.tier)) {
                // A rule that may let some calls through.
                (Some(_), false) => return None,
                // Denies the calls it takes; the rest go on to later rules.
                (Some(_), true) => continue,
                (None, true) => {
                    return Some(Denied {
                        reason: format!(
                            "{} sets tier {}, which the policy denies",
                            rule.describe(index),
                            rule.tier
                        ),
                    });
                }
                (None, false) => return None,
            }
        }
        denies(Tier::Medium).then(|| Denied {
            reason: "no rule names this tool, and tier medium is denied".into(),
        })
    }
}

#[cfg(test)]
#[path = "classify_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "classify_failed_tests.rs"]
mod failed_tests;

/// How a request was classified, as its approval keeps it: what an approver's edit of
/// its parameters must stay within ([`Policy::check_edit`]).
#[derive(Debug, Clone, Copy)]
pub struct Classified<'a> {
    pub tool: &'a str,
    pub server: Option<&'a str>,
    /// The annotations the request came with (an MCP tool's), classified again with
    /// the edited parameters.
    pub annotations: Option<&'a serde_json::Value>,
    pub tier: Tier,
    /// The rule that matched the request; `None`: none did (the defaults).
    pub rule: Option<usize>,
    /// That rule's fingerprint as the request was classified; `None` for an approval
    /// from before fingerprints were kept.
    pub rule_fingerprint: Option<&'a str>,
    pub required_approvals: u32,
}

impl Policy {
    /// Whether an approver's edit of a request's parameters to `edited` stays within
    /// how the request was classified: the edited call must be classified by the same
    /// rule, at no higher tier and needing no more approvals, and not denied.
    /// Otherwise the edit would run a call the policy denies, or one it sends to other
    /// people, or to more of them, with this request's weaker review. `Err`: why, for
    /// the editor. A policy changed since the request (its rules renumbered, say) also
    /// refuses an edit, which is the safe way to be wrong: the rule's index may name
    /// another rule now, so its fingerprint must still be the one the request kept.
    pub fn check_edit(
        &self,
        asked: &Classified<'_>,
        edited: &serde_json::Value,
    ) -> Result<(), String> {
        let call = Call {
            tool: asked.tool,
            server: asked.server,
            params: edited,
            annotations: asked.annotations,
        };
        if let (Some(index), Some(kept)) = (asked.rule, asked.rule_fingerprint)
            && self
                .rules
                .get(index)
                .is_none_or(|rule| rule.fingerprint != kept)
        {
            return Err(format!(
                "The policy has changed since this request was classified: its rules[{index}] \
                 is not the rule that classified it, so an edit cannot be checked against it. \
                 Approve or deny the request as it is, or deny it and have it asked again."
            ));
        }
        let class = self.classify_call(&call, Some(asked.tier));
        if class.action == TierAction::Deny {
            return Err(format!(
                "The policy denies this call with these parameters (risk tier {}: {}), so it \
                 cannot be approved. Edit it differently, or deny the request.",
                class.tier, class.why
            ));
        }
        let stricter = class.tier > asked.tier
            || class.route.required_approvals.max(1) > asked.required_approvals;
        if class.rule != asked.rule || stricter {
            let named = |rule: Option<usize>| match rule.and_then(|i| Some((i, self.rules.get(i)?)))
            {
                Some((index, rule)) => rule.describe(index),
                None => "no rule matched".to_owned(),
            };
            let now = named(class.rule);
            // The why when it says more than the rule's name: a failed condition, say.
            let because = if class.why == now {
                String::new()
            } else {
                format!("; {}", class.why)
            };
            return Err(format!(
                "With these parameters the call is classified by {now} (risk tier {}, {} \
                 approvals{because}), not as this request was ({}, risk tier {}, {} \
                 approvals): it needs a request of its own. Edit it differently, or deny \
                 this one.",
                class.tier,
                class.route.required_approvals.max(1),
                named(asked.rule),
                asked.tier,
                asked.required_approvals
            ));
        }
        Ok(())
    }
}
