//! Reminders and escalations that could never happen: any of them on a route with no
//! `channel` (its requests are never posted), `remind_every` without a
//! `remind_after` to start from, `escalate_after` without an `escalation_channel` to
//! post to, `escalation_approvers` on a route that never escalates, and a
//! `remind_after` or `escalate_after` at or past `expires_after`. Each
//! is refused where it is set, judged on the routes that take it once defaults and
//! rules are merged.
//!
//! A rule's own key is judged on the rule's route. A key of `[defaults]` is judged on
//! the defaults' route and on every rule that takes it without setting its own, and is
//! refused only when it is idle on all of them: a rule may complete a shared setting
//! (its own `escalation_channel` for a default `escalate_after`, its own longer
//! `expires_after`). A key a rule inherits is never held against the rule: a rule with
//! a short expiry that inherits a two-hour escalation simply expires first.

use std::time::Duration;

use crate::policy::Route;
use crate::policy::error::PolicyError;
use crate::policy::route::RawRoute;

/// A reminder or escalation key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timing {
    RemindAfter,
    RemindEvery,
    EscalateAfter,
    /// Not a time, but idle exactly when the escalation it waits for is.
    EscalationApprovers,
}

impl Timing {
    const ALL: [Timing; 4] = [
        Timing::RemindAfter,
        Timing::RemindEvery,
        Timing::EscalateAfter,
        Timing::EscalationApprovers,
    ];

    fn key(self) -> &'static str {
        match self {
            Timing::RemindAfter => "remind_after",
            Timing::RemindEvery => "remind_every",
            Timing::EscalateAfter => "escalate_after",
            Timing::EscalationApprovers => "escalation_approvers",
        }
    }

    /// Whether `raw` sets the key itself.
    pub(crate) fn is_set(self, raw: &RawRoute) -> bool {
        match self {
            Timing::RemindAfter => raw.remind_after.is_some(),
            Timing::RemindEvery => raw.remind_every.is_some(),
            Timing::EscalateAfter => raw.escalate_after.is_some(),
            // An empty list turns off the one it would inherit: never idle.
            Timing::EscalationApprovers => raw
                .escalation_approvers
                .as_ref()
                .is_some_and(|approvers| !approvers.is_empty()),
        }
    }

    /// Why the key can never take effect on `route` (merged), if it cannot.
    /// `expiry_note` says where the route's `expires_after` comes from, for the message.
    fn idle(self, route: &Route, expiry_note: &str) -> Option<String> {
        self.never_fires(route, expiry_note).or_else(|| {
            route.channel.is_none().then(|| {
                "is set on a route with no channel: its requests are posted nowhere, so none \
                 would be reminded or escalated; set channel too"
                    .to_owned()
            })
        })
    }

    /// Why the key can never take effect on `route`, even were it posted.
    fn never_fires(self, route: &Route, expiry_note: &str) -> Option<String> {
        match self {
            Timing::RemindAfter => {
                late(route, route.remind_after, "the first reminder", expiry_note)
            }
            Timing::RemindEvery => route.remind_after.is_none().then(|| {
                "is set without remind_after: reminders start remind_after after the request \
                 and then come every remind_every, so none would be sent; set remind_after too"
                    .to_owned()
            }),
            Timing::EscalateAfter if route.escalation_channel.is_none() => Some(
                "is set without an escalation_channel to post to, so nothing would be \
                 escalated; set escalation_channel too"
                    .to_owned(),
            ),
            Timing::EscalateAfter => late(
                route,
                route.escalate_after,
                "it would be escalated",
                expiry_note,
            ),
            Timing::EscalationApprovers if route.escalate_after.is_none() => Some(
                "is set without escalate_after: the request is never escalated, so they would                  never decide; set escalate_after and escalation_channel too"
                    .to_owned(),
            ),
            Timing::EscalationApprovers => Timing::EscalateAfter.never_fires(route, expiry_note),
        }
    }
}

/// Why a reminder or escalation `after` this long never comes on `route`: the request
/// expires first. `what` names it, `expiry_note` says where the expiry comes from.
fn late(route: &Route, after: Option<Duration>, what: &str, expiry_note: &str) -> Option<String> {
    let expires = route.expires_after;
    (after? >= expires).then(|| {
        format!(
            "must be shorter than expires_after ({}{expiry_note}): the request expires before \
             {what}",
            humantime::format_duration(expires)
        )
    })
}

/// Refuses the reminder and escalation keys a rule sets that its route never fires.
/// `at` is `rules[N]`.
pub(crate) fn check_rule(route: &Route, raw: &RawRoute, at: &str) -> Result<(), PolicyError> {
    let expiry_note = if raw.expires_after.is_some() {
        ""
    } else {
        ", inherited"
    };
    for timing in Timing::ALL.into_iter().filter(|t| t.is_set(raw)) {
        if let Some(why) = timing.idle(route, expiry_note) {
            return Err(PolicyError::invalid(format!("{at}.{}", timing.key()), why));
        }
    }
    Ok(())
}

/// Refuses the reminder and escalation keys `[defaults]` sets that no route fires:
/// neither the defaults' own nor any of `rules`, given as each rule's merged route and
/// what the rule sets itself.
pub(crate) fn check_defaults<'a>(
    defaults: &Route,
    raw: &RawRoute,
    rules: impl Iterator<Item = (&'a Route, RawRoute)> + Clone,
) -> Result<(), PolicyError> {
    let expiry_note = if raw.expires_after.is_some() {
        ""
    } else {
        ", the built-in default"
    };
    for timing in Timing::ALL.into_iter().filter(|t| t.is_set(raw)) {
        let Some(why) = timing.idle(defaults, expiry_note) else {
            continue;
        };
        let mut inheriting = rules.clone().filter(|(_, own)| !timing.is_set(own));
        let used = inheriting
            .clone()
            .any(|(route, _)| timing.idle(route, "").is_none());
        if used {
            continue;
        }
        let nor_rules = if inheriting.next().is_some() {
            " (nor for any rule that takes it from [defaults])"
        } else {
            ""
        };
        return Err(PolicyError::invalid(
            format!("defaults.{}", timing.key()),
            format!("{why}{nor_rules}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::policy::Policy;
    use crate::policy::route::tests::error;

    fn rule(extra: &str) -> String {
        format!("[[rules]]\ntools = [\"a\"]\ntier = \"medium\"\n{extra}\n")
    }

    fn valid(text: &str) -> Policy {
        Policy::from_toml_str(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
    }

    #[test]
    fn remind_every_needs_a_remind_after() {
        let msg = error("[defaults]\nchannel = \"C0\"\nremind_every = \"1h\"\n");
        assert!(
            msg.contains("defaults.remind_every: is set without remind_after"),
            "{msg}"
        );
        let msg = error(&rule("remind_every = \"1h\""));
        assert!(
            msg.contains("rules[0].remind_every: is set without remind_after"),
            "{msg}"
        );
        valid(&format!(
            "[defaults]\nchannel = \"C0\"\nremind_after = \"5m\"\n{}",
            rule("remind_every = \"1h\"")
        ));
        // A shared interval that a rule starts with its own remind_after.
        let shared = valid(&format!(
            "[defaults]\nchannel = \"C0\"\nremind_every = \"1h\"\n{}",
            rule("remind_after = \"10m\"")
        ));
        assert_eq!(
            shared.rules[0].route.remind_every,
            Some(Duration::from_secs(3600))
        );
    }

    #[test]
    fn escalation_approvers_need_an_escalation() {
        let msg = error(&rule("escalation_approvers = [\"U0MGR\"]"));
        assert!(
            msg.contains("rules[0].escalation_approvers: is set without escalate_after"),
            "{msg}"
        );
        let msg = error(&rule("escalation_approvers = [\"bob\"]"));
        assert!(msg.contains("rules[0].escalation_approvers[0]"), "{msg}");
        // Shared managers, for the rules that escalate; an empty list turns them off.
        let shared = valid(&format!(
            "[defaults]\nchannel = \"C0\"\nescalation_approvers = [\"S0MGRS\"]\n\
             escalation_channel = \"C9\"\n{}{}",
            rule("escalate_after = \"30m\""),
            rule("escalation_approvers = []")
        ));
        assert_eq!(shared.rules[0].route.escalation_approvers, ["S0MGRS"]);
        assert!(shared.rules[1].route.escalation_approvers.is_empty());
    }

    #[test]
    fn escalate_after_needs_an_escalation_channel() {
        let msg = error("[defaults]\nchannel = \"C0\"\nescalate_after = \"30m\"\n");
        assert!(
            msg.contains("defaults.escalate_after: is set without an escalation_channel"),
            "{msg}"
        );
        let msg = error(&rule("escalate_after = \"30m\""));
        assert!(
            msg.contains("rules[0].escalate_after: is set without an escalation_channel"),
            "{msg}"
        );
        let msg = error(&format!(
            "[defaults]\nchannel = \"C0\"\nescalate_after = \"30m\"\n{}",
            rule("channel = \"C1\"")
        ));
        assert!(
            msg.contains("defaults.escalate_after") && msg.contains("nor for any rule"),
            "{msg}"
        );
        valid(&format!(
            "[defaults]\nchannel = \"C0\"\nescalation_channel = \"C9\"\n{}",
            rule("escalate_after = \"30m\"")
        ));
        // A shared delay that a rule sends to its own managers' channel.
        valid(&format!(
            "[defaults]\nchannel = \"C0\"\nescalate_after = \"30m\"\n{}",
            rule("escalation_channel = \"C9\"")
        ));
    }

    #[test]
    fn a_reminder_or_escalation_set_at_or_past_the_expiry_is_refused() {
        let msg = error(
            "[defaults]\nchannel = \"C0\"\nexpires_after = \"1h\"\nremind_after = \"1h\"\nremind_every = \"1h\"\n",
        );
        assert!(
            msg.contains(
                "defaults.remind_after: must be shorter than expires_after (1h): the request \
                 expires before the first reminder"
            ),
            "{msg}"
        );
        let msg = error(
            "[defaults]\nchannel = \"C0\"\nescalate_after = \"2h\"\nescalation_channel = \"C9\"\n",
        );
        assert!(
            msg.contains(
                "defaults.escalate_after: must be shorter than expires_after (1h, the built-in \
                 default)"
            ),
            "{msg}"
        );
        let msg = error(&format!(
            "[defaults]\nchannel = \"C0\"\nexpires_after = \"30m\"\n{}",
            rule("escalate_after = \"45m\"\nescalation_channel = \"C9\"")
        ));
        assert!(
            msg.contains(
                "rules[0].escalate_after: must be shorter than expires_after (30m, inherited)"
            ),
            "{msg}"
        );
        let msg = error(&rule("expires_after = \"10m\"\nremind_after = \"10m\""));
        assert!(
            msg.contains("rules[0].remind_after: must be shorter than expires_after (10m)"),
            "{msg}"
        );
    }

    #[test]
    fn a_rule_with_a_short_expiry_may_inherit_a_later_reminder_or_escalation() {
        // The DESIGN defaults, and a rule that expires before they would come.
        let policy = valid(&format!(
            "[defaults]\nchannel = \"C0\"\nexpires_after = \"4h\"\nremind_after = \"30m\"\n\
             remind_every = \"1h\"\nescalate_after = \"2h\"\nescalation_channel = \"C9\"\n{}",
            rule("expires_after = \"15m\"")
        ));
        assert_eq!(
            policy.rules[0].route.escalate_after,
            Some(Duration::from_secs(7200))
        );
        // A default the defaults' own expiry never reaches, which a rule's longer
        // expiry does: it takes effect there.
        valid(&format!(
            "[defaults]\nchannel = \"C0\"\nescalate_after = \"2h\"\nescalation_channel = \"C9\"\n{}",
            rule("expires_after = \"4h\"")
        ));
        let msg = error(&format!(
            "[defaults]\nchannel = \"C0\"\nescalate_after = \"2h\"\nescalation_channel = \"C9\"\n{}",
            rule("expires_after = \"90m\"")
        ));
        assert!(
            msg.contains("defaults.escalate_after: must be shorter than expires_after")
                && msg.contains("nor for any rule"),
            "{msg}"
        );
    }

    #[test]
    fn a_reminder_or_escalation_on_a_route_with_no_channel_is_refused() {
        let no_channel = "[defaults]\nremind_after = \"5m\"\n";
        let msg = error(no_channel);
        assert!(
            msg.contains("defaults.remind_after: is set on a route with no channel"),
            "{msg}"
        );
        let msg = error(&rule(
            "escalate_after = \"30m\"\nescalation_channel = \"C9\"",
        ));
        assert!(
            msg.contains("rules[0].escalate_after: is set on a route with no channel"),
            "{msg}"
        );
        // A shared reminder that only the rules with a channel take.
        valid(&format!("{no_channel}{}", rule("channel = \"C1\"")));
    }
}
