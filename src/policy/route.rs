//! The routing and timing keys shared by `[defaults]` and every rule
//! (channel, approvers, required_approvals, max_pending, the durations,
//! batch_window, escalation channel): their raw TOML form, and their validation into a [`Route`].

use std::time::Duration;

use serde::Deserialize;

use crate::ids::{Approver, ChannelId};
use crate::policy::Route;
use crate::policy::error::PolicyError;

/// Highest `required_approvals` accepted; more is almost surely a typo.
const MAX_REQUIRED_APPROVALS: i64 = 20;
/// Highest `max_pending` accepted: more waiting requests than anyone can read (0
/// turns the limit off).
const MAX_MAX_PENDING: i64 = 10_000;
/// Longest `batch_window`: a batch's first request waits this long to be posted.
const MAX_BATCH_WINDOW: Duration = Duration::from_secs(600);
/// The longest duration a policy may give (`expires_after`, `remind_after`, …): a
/// year. Longer ones would put times past what the stores keep (PostgreSQL's checks
/// stop at the year 9999) or past what a time can hold at all.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// The route keys as written in `[defaults]` or a rule. Fields are optional so "absent" can be told
/// apart from "set", and strings are kept raw so validation can name them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub(crate) channel: Option<String>,
    pub(crate) approvers: Option<Vec<String>>,
    // Wide integer type so a negative number gets our range message.
    pub(crate) required_approvals: Option<i64>,
    pub(crate) max_pending: Option<i64>,
    pub(crate) expires_after: Option<String>,
    pub(crate) remind_after: Option<String>,
    pub(crate) remind_every: Option<String>,
    pub(crate) escalate_after: Option<String>,
    pub(crate) escalation_channel: Option<String>,
    pub(crate) escalation_approvers: Option<Vec<String>>,
    pub(crate) batch_window: Option<String>,
}

/// Returns `base` with every key set in `raw` replaced, validating each.
/// `at` is the field-path prefix used in errors (`defaults` or `rules[N]`).
pub(crate) fn apply_overrides(
    base: &Route,
    raw: &RawRoute,
    at: &str,
) -> Result<Route, PolicyError> {
    let mut route = base.clone();
    if let Some(channel) = &raw.channel {
        route.channel = Some(check_channel(channel, &format!("{at}.channel"))?);
    }
    if let Some(approvers) = &raw.approvers {
        route.approvers = check_approvers(approvers, &format!("{at}.approvers"))?;
    }
    if let Some(approvers) = &raw.escalation_approvers {
        let field = format!("{at}.escalation_approvers");
        route.escalation_approvers = check_approvers(approvers, &field)?;
    }
    if let Some(n) = raw.required_approvals {
        if !(1..=MAX_REQUIRED_APPROVALS).contains(&n) {
            return Err(PolicyError::invalid(
                format!("{at}.required_approvals"),
                format!("must be between 1 and {MAX_REQUIRED_APPROVALS}, got {n}"),
            ));
        }
        // In range 1..=20, so the conversion cannot fail.
        route.required_approvals = u32::try_from(n).unwrap_or(1);
    }
    if let Some(n) = raw.max_pending {
        if !(0..=MAX_MAX_PENDING).contains(&n) {
            return Err(PolicyError::invalid(
                format!("{at}.max_pending"),
                format!("must be between 0 (no limit) and {MAX_MAX_PENDING}, got {n}"),
            ));
        }
        route.max_pending = u32::try_from(n).unwrap_or(0);
    }
    if let Some(text) = &raw.expires_after {
        route.expires_after = parse_duration(text, &format!("{at}.expires_after"))?;
    }
    let optional = [
        (&raw.remind_after, &mut route.remind_after, "remind_after"),
        (&raw.remind_every, &mut route.remind_every, "remind_every"),
        (
            &raw.escalate_after,
            &mut route.escalate_after,
            "escalate_after",
        ),
    ];
    for (text, slot, key) in optional {
        if let Some(text) = text {
            *slot = Some(parse_duration(text, &format!("{at}.{key}"))?);
        }
    }
    if let Some(channel) = &raw.escalation_channel {
        route.escalation_channel =
            Some(check_channel(channel, &format!("{at}.escalation_channel"))?);
    }
    if let Some(text) = &raw.batch_window {
        route.batch_window = parse_batch_window(text, &format!("{at}.batch_window"))?;
    }
    check_enough_approvers(&route, raw, at)?;
    if let Some(window) = route.batch_window
        && window >= route.expires_after
    {
        return Err(PolicyError::invalid(
            format!("{at}.batch_window"),
            format!(
                "must be shorter than expires_after ({}): a batch is posted when its window ends",
                humantime::format_duration(route.expires_after)
            ),
        ));
    }
    Ok(route)
}

/// Each of `ids` as an approver; `field` names the list in errors.
fn check_approvers(ids: &[String], field: &str) -> Result<Vec<Approver>, PolicyError> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| check_approver(id, &format!("{field}[{i}]")))
        .collect()
}

/// Refuses a `required_approvals` the listed approvers can never reach: more than the
/// distinct people listed, when the list names no user group (whose members are only
/// known when a request comes). Every such request could only expire. Checked on the
/// route as merged, so a rule's own approvers are held to an inherited count too.
fn check_enough_approvers(route: &Route, raw: &RawRoute, at: &str) -> Result<(), PolicyError> {
    let groups = route
        .approvers
        .iter()
        .any(|approver| matches!(approver, Approver::Group(_)));
    if route.approvers.is_empty() || groups {
        return Ok(());
    }
    let people: std::collections::HashSet<&Approver> = route.approvers.iter().collect();
    let needed = route.required_approvals;
    if usize::try_from(needed).is_ok_and(|needed| needed <= people.len()) {
        return Ok(());
    }
    let inherited = match raw.required_approvals {
        Some(_) => "",
        None => " (from defaults)",
    };
    Err(PolicyError::invalid(
        format!("{at}.required_approvals"),
        format!(
            "{needed}{inherited} is more than the {} distinct approvers listed, and no user \
             group (S…) is: no request could ever be approved; list more approvers or need \
             fewer approvals",
            people.len()
        ),
    ))
}

/// `batch_window`: a duration up to [`MAX_BATCH_WINDOW`], or `"off"` (also `"0s"`),
/// which a rule uses to turn off a window its `[defaults]` set.
fn parse_batch_window(text: &str, field: &str) -> Result<Option<Duration>, PolicyError> {
    let text = text.trim();
    if text == "off" || humantime::parse_duration(text).is_ok_and(|d| d.is_zero()) {
        return Ok(None);
    }
    let window = parse_duration(text, field)?;
    if window > MAX_BATCH_WINDOW {
        return Err(PolicyError::invalid(
            field,
            format!(
                "at most {} (the first request of a batch waits that long to be posted), got {text:?}",
                humantime::format_duration(MAX_BATCH_WINDOW)
            ),
        ));
    }
    Ok(Some(window))
}

/// Parses a humantime duration ("1s", "30m", "1h 30m"); zero is refused
/// because a zero expiry or reminder interval would fire immediately/forever,
/// anything over [`MAX_DURATION`], and a fraction of a second: approvals keep their
/// times in whole seconds, so `"900ms"` would become 0 (at once) and `"1500ms"` 1s.
fn parse_duration(text: &str, field: &str) -> Result<Duration, PolicyError> {
    let duration = humantime::parse_duration(text.trim()).map_err(|e| {
        PolicyError::invalid(
            field,
            format!("bad duration {text:?}: {e} (use e.g. \"30s\", \"15m\", \"4h\", \"1h 30m\")"),
        )
    })?;
    if duration.is_zero() {
        return Err(PolicyError::invalid(
            field,
            format!("duration {text:?} must be greater than zero"),
        ));
    }
    if duration.subsec_nanos() != 0 {
        return Err(PolicyError::invalid(
            field,
            format!("duration {text:?} is not a whole number of seconds (the shortest is \"1s\")"),
        ));
    }
    if duration > MAX_DURATION {
        return Err(PolicyError::invalid(
            field,
            format!("duration {text:?} is longer than the most a policy may give, 366 days"),
        ));
    }
    Ok(duration)
}

/// Validates a user (U/W) or user-group (S) id.
fn check_approver(id: &str, field: &str) -> Result<Approver, PolicyError> {
    Approver::parse(id).map_err(|why| PolicyError::invalid(field, why))
}

/// Validates a channel id (C public, G private, D direct message).
fn check_channel(id: &str, field: &str) -> Result<ChannelId, PolicyError> {
    ChannelId::parse(id)
        .map_err(|why| PolicyError::invalid(field, format!("{why}; use the id, not #name")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::Policy;

    /// Parses `text`, expecting failure, and returns the one-line message.
    pub(crate) fn error(text: &str) -> String {
        let message = match Policy::from_toml_str(text) {
            Ok(_) => panic!("policy unexpectedly valid:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(!message.contains('\n'), "not one line: {message}");
        message
    }

    fn rule(extra: &str) -> String {
        format!("[[rules]]\ntools = [\"a\"]\ntier = \"low\"\n{extra}\n")
    }

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml_str(text)
    }

    #[test]
    fn bad_duration_names_the_field() {
        let msg = error("[defaults]\nexpires_after = \"soon\"\n");
        assert!(
            msg.starts_with("invalid policy: defaults.expires_after: bad duration \"soon\""),
            "{msg}"
        );
        let msg = error(&rule("remind_every = \"5 parsecs\""));
        assert!(msg.contains("rules[0].remind_every"), "{msg}");
    }

    #[test]
    fn a_duration_over_a_year_is_rejected_before_it_can_overflow_a_time() {
        let msg = error("[defaults]\nexpires_after = \"1000000years\"\n");
        assert!(
            msg.contains("defaults.expires_after") && msg.contains("366 days"),
            "{msg}"
        );
        let msg = error(&rule("remind_every = \"367days\""));
        assert!(msg.contains("rules[0].remind_every"), "{msg}");
        assert!(parse("[defaults]\nexpires_after = \"366days\"\n").is_ok());
    }

    #[test]
    fn zero_duration_is_rejected() {
        let msg = error("[defaults]\nescalate_after = \"0s\"\n");
        assert!(
            msg.contains("defaults.escalate_after") && msg.contains("greater than zero"),
            "{msg}"
        );
    }

    #[test]
    fn durations_must_be_whole_seconds() {
        for (key, bad) in [
            ("escalate_after", "900ms"),
            ("expires_after", "1500ms"),
            ("remind_after", "1s 1ns"),
            ("batch_window", "2s 500ms"),
        ] {
            let msg = error(&format!("[defaults]\n{key} = \"{bad}\"\n"));
            assert!(
                msg.contains(&format!(
                    "defaults.{key}: duration \"{bad}\" is not a whole number of seconds"
                )),
                "{msg}"
            );
        }
        let msg = error(&rule("remind_every = \"10ms\""));
        assert!(msg.contains("rules[0].remind_every"), "{msg}");
        let policy = parse("[defaults]\nexpires_after = \"2000ms\"\n").unwrap();
        assert_eq!(policy.defaults.expires_after, Duration::from_secs(2));
    }

    #[test]
    fn short_and_compound_durations_are_accepted() {
        let policy = parse("[defaults]\nexpires_after = \"1s\"\n").unwrap();
        assert_eq!(policy.defaults.expires_after, Duration::from_secs(1));
        let policy = parse(
            "[defaults]\nchannel = \"C1\"\nexpires_after = \"2h\"\nremind_after = \"1h 30m\"\n",
        )
        .unwrap();
        assert_eq!(
            policy.defaults.remind_after,
            Some(Duration::from_secs(5400))
        );
    }

    #[test]
    fn required_approvals_must_be_between_1_and_20() {
        for bad in ["0", "21", "-1"] {
            let msg = error(&format!("[defaults]\nrequired_approvals = {bad}\n"));
            assert!(
                msg.contains("defaults.required_approvals: must be between 1 and 20"),
                "{msg}"
            );
        }
        let msg = error(&rule("required_approvals = 0"));
        assert!(msg.contains("rules[0].required_approvals"), "{msg}");
        let msg = error("[defaults]\nrequired_approvals = \"two\"\n");
        assert!(
            msg.contains("line 2") && msg.contains("expected an integer"),
            "{msg}"
        );
        assert_eq!(
            parse("[defaults]\nrequired_approvals = 20")
                .unwrap()
                .defaults
                .required_approvals,
            20
        );
    }

    #[test]
    fn batch_window_is_off_unless_set_at_most_10m_and_shorter_than_the_expiry() {
        assert_eq!(parse("").unwrap().defaults.batch_window, None);
        let policy = parse(&format!("[defaults]\nbatch_window = \"30s\"\n{}", rule(""))).unwrap();
        assert_eq!(policy.defaults.batch_window, Some(Duration::from_secs(30)));
        assert_eq!(
            policy.rules[0].route.batch_window,
            Some(Duration::from_secs(30)),
            "a rule inherits the window"
        );
        for off in ["off", "0s"] {
            let text = format!(
                "[defaults]\nbatch_window = \"30s\"\n{}",
                rule(&format!("batch_window = \"{off}\""))
            );
            assert_eq!(
                parse(&text).unwrap().rules[0].route.batch_window,
                None,
                "{off}"
            );
        }
        let msg = error("[defaults]\nbatch_window = \"11m\"\n");
        assert!(msg.contains("defaults.batch_window: at most 10m"), "{msg}");
        let msg = error("[defaults]\nbatch_window = \"soon\"\n");
        assert!(msg.contains("defaults.batch_window: bad duration"), "{msg}");
        let msg = error(&format!(
            "[defaults]\nbatch_window = \"5m\"\n{}",
            rule("expires_after = \"5m\"")
        ));
        assert!(
            msg.contains("rules[0].batch_window: must be shorter than expires_after (5m)"),
            "{msg}"
        );
    }

    #[test]
    fn required_approvals_must_be_reachable_by_the_approvers_listed() {
        let msg = error("[defaults]\napprovers = [\"U1\", \"U2\"]\nrequired_approvals = 3\n");
        assert!(
            msg.contains(
                "defaults.required_approvals: 3 is more than the 2 distinct approvers listed"
            ),
            "{msg}"
        );
        // The same person twice counts once.
        let msg = error(&rule(
            "approvers = [\"U1\", \"U1\"]\nrequired_approvals = 2",
        ));
        assert!(
            msg.contains("rules[0].required_approvals: 2 is more than the 1 distinct"),
            "{msg}"
        );
        // A rule's own approvers against the count it inherits.
        let msg = error(&format!(
            "[defaults]\nrequired_approvals = 2\n{}",
            rule("approvers = [\"U1\"]")
        ));
        assert!(
            msg.contains("rules[0].required_approvals: 2 (from defaults) is more than the 1"),
            "{msg}"
        );
        // A rule's own count against the approvers it inherits.
        let msg = error(&format!(
            "[defaults]\napprovers = [\"U1\", \"W2\"]\n{}",
            rule("required_approvals = 3")
        ));
        assert!(
            msg.contains("rules[0].required_approvals: 3 is more"),
            "{msg}"
        );

        for fine in [
            "[defaults]\napprovers = [\"U1\", \"U2\"]\nrequired_approvals = 2\n",
            // A user group may have any number of members.
            "[defaults]\napprovers = [\"U1\", \"S0ONCALL\"]\nrequired_approvals = 5\n",
            // Anyone in the channel may decide.
            "[defaults]\nrequired_approvals = 5\n",
        ] {
            assert!(parse(fine).is_ok(), "{fine}");
        }
        let text = format!(
            "[defaults]\napprovers = [\"U1\"]\n{}",
            rule("approvers = [\"U1\", \"U2\", \"U3\"]\nrequired_approvals = 3")
        );
        assert!(parse(&text).is_ok(), "a rule may widen the list it needs");
    }

    #[test]
    fn max_pending_is_20_unless_set_and_must_be_between_0_and_10000() {
        assert_eq!(parse("").unwrap().defaults.max_pending, 20);
        for bad in ["10001", "-5"] {
            let msg = error(&format!("[defaults]\nmax_pending = {bad}\n"));
            assert!(
                msg.contains("defaults.max_pending: must be between 0 (no limit) and 10000"),
                "{msg}"
            );
        }
        let msg = error(&rule("max_pending = -1"));
        assert!(msg.contains("rules[0].max_pending"), "{msg}");
        assert_eq!(
            parse("[defaults]\nmax_pending = 0")
                .unwrap()
                .defaults
                .max_pending,
            0
        );
        let policy = parse(&format!("[defaults]\nmax_pending = 3\n{}", rule(""))).unwrap();
        assert_eq!(policy.defaults.max_pending, 3);
        assert_eq!(
            policy.rules[0].route.max_pending, 3,
            "a rule inherits the default"
        );
    }

    #[test]
    fn bad_approver_id_names_its_position() {
        for bad in ["alice", "u0ALICE", "U", "X0ALICE", "U0alice", "@alice"] {
            let msg = error(&format!("[defaults]\napprovers = [\"U0OK\", \"{bad}\"]\n"));
            assert!(
                msg.contains("defaults.approvers[1]") && msg.contains("not a Slack user"),
                "{msg}"
            );
        }
        let msg = error(&rule("approvers = [\"bob\"]"));
        assert!(msg.contains("rules[0].approvers[0]"), "{msg}");
    }

    #[test]
    fn bad_channel_id_is_rejected() {
        let msg = error("[defaults]\nchannel = \"#approvals\"\n");
        assert!(
            msg.contains("defaults.channel") && msg.contains("not a Slack channel id"),
            "{msg}"
        );
        let msg = error(&rule("escalation_channel = \"U0ALICE\""));
        assert!(msg.contains("rules[0].escalation_channel"), "{msg}");
    }

    #[test]
    fn every_slack_id_prefix_is_accepted() {
        let text = "[defaults]\napprovers = [\"U1\", \"W2AB\", \"S3\"]\nchannel = \"G1\"\nescalation_channel = \"D9\"\n";
        let policy = parse(text).unwrap();
        assert_eq!(policy.defaults.approvers, ["U1", "W2AB", "S3"]);
        assert!(parse("[defaults]\nchannel = \"C0ABC123\"\n").is_ok());
    }

    #[test]
    fn rules_can_override_every_defaults_key() {
        let text = rule(
            "channel = \"C2\"\napprovers = [\"U2\", \"S2\"]\nrequired_approvals = 3\nmax_pending = 5\n\
             expires_after = \"2h\"\n\
             remind_after = \"5m\"\nremind_every = \"10m\"\nescalate_after = \"1h\"\n\
             escalation_channel = \"C3\"\nescalation_approvers = [\"U3\", \"S3\"]\n\
             batch_window = \"1m\"\nsummary = \"s\"",
        );
        let base = "[defaults]\nchannel = \"C1\"\napprovers = [\"U1\"]\nremind_after = \"1m\"\n";
        let policy = parse(&format!("{base}{text}")).unwrap();
        let route = &policy.rules[0].route;
        let expected = Route {
            channel: Some("C2".into()),
            approvers: vec!["U2".into(), "S2".into()],
            required_approvals: 3,
            max_pending: 5,
            expires_after: Duration::from_secs(7200),
            remind_after: Some(Duration::from_secs(300)),
            remind_every: Some(Duration::from_secs(600)),
            escalate_after: Some(Duration::from_secs(3600)),
            escalation_channel: Some("C3".into()),
            escalation_approvers: vec!["U3".into(), "S3".into()],
            batch_window: Some(Duration::from_secs(60)),
            summary_template: Some("s".into()),
        };
        assert_eq!(*route, expected);
        // Defaults themselves are untouched by the override.
        assert_eq!(policy.defaults.channel.as_deref(), Some("C1"));
    }
}
