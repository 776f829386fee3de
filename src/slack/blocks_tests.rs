use super::*;
use crate::jobs::MessageKey;
use crate::slack::modals::{deny_modal, edit_modal};
use crate::slack::testutil::{
    all_text, approval, check_limits, email_behind_attachments, find_block, mrkdwn_texts, now, vote,
};
use serde_json::json;

fn clicked() -> MessageKey {
    MessageKey {
        channel: "C0APPROVALS".into(),
        ts: "1700000000.000100".into(),
    }
}

fn block_types(message: &Value) -> Vec<&str> {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect()
}

fn section_texts(message: &Value) -> Vec<String> {
    message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "section" && b.get("text").is_some())
        .map(|b| b["text"]["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_pending_message_has_the_three_buttons_with_ids_and_styles() {
    let a = approval();
    let message = approval_message(&a, now());
    check_limits(&message);
    let actions = find_block(&message, "actions").expect("actions block");
    assert_eq!(actions["block_id"], format!("approval:{}", a.id));
    let buttons = actions["elements"].as_array().unwrap();
    let summary: Vec<(&str, &str, Option<&str>)> = buttons
        .iter()
        .map(|b| {
            (
                b["text"]["text"].as_str().unwrap(),
                b["action_id"].as_str().unwrap(),
                b["style"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("Approve", "approve", Some("primary")),
            ("Deny", "deny", Some("danger")),
            ("Edit & approve", "edit", None),
        ]
    );
    // Approve names the parameters the message shows, so that an approve from a
    // message an edit has overtaken is refused; the others name the approval.
    let shown = parameters_fingerprint(&a.parameters);
    assert_eq!(buttons[0]["value"], format!("{}:{shown}", a.id));
    assert_eq!(
        read_approve_value(buttons[0]["value"].as_str().unwrap()),
        (a.id.to_string().as_str(), shown.as_str())
    );
    assert_eq!(
        read_approve_value(&a.id.to_string()),
        (a.id.to_string().as_str(), "")
    );
    for button in &buttons[1..] {
        assert_eq!(button["value"], a.id.to_string());
    }
}

#[test]
fn a_pending_message_has_header_fields_fallback_and_short_id() {
    let mut a = approval();
    a.votes = vec![vote("U1", Decision::Approve, 1)];
    let message = approval_message(&a, now());
    assert_eq!(block_types(&message)[0], "header");
    assert_eq!(message["blocks"][0]["text"]["text"], "deploy_service");
    assert_eq!(
        message["text"],
        "Approval needed: deploy_service (ID 0123abcd)"
    );
    let fields = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|b| b.get("fields"))
        .unwrap();
    let fields: Vec<&str> = fields
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(fields[0], "*Risk*\n:large_yellow_circle: medium");
    assert_eq!(fields[1], "Requested by\nagent-session-42 (token ci-bot)");
    assert_eq!(
        fields[2], "*Expires*\n<!date^1714572300^{date_short_pretty} {time}|2024-05-01 14:05 UTC>",
        "the date alone: an \"in 2h 5m\" would go stale while the message stays up"
    );
    assert_eq!(fields[3], "*Votes*\n1 of 2 approvals: <@U1>");
    let text = all_text(&message);
    assert!(
        text.contains("ID `0123abcd` · requested <!date^1714564500^{ago}|2024-05-01 11:55 UTC>"),
        "when it was requested, as Slack keeps it current: {text}"
    );
}

#[test]
fn parameters_are_readable_not_a_json_dump() {
    let message = approval_message(&approval(), now());
    let sections = section_texts(&message);
    assert_eq!(
        sections[0],
        "Parameters:\n• environment: prod\n• service: api"
    );
    assert!(
        sections
            .iter()
            .all(|s| !s.contains('{') && !s.contains('"')),
        "{sections:?}"
    );
}

#[test]
fn the_summary_comes_first_and_the_parameters_still_show() {
    let mut a = approval();
    a.summary = Some("Deploy api to prod".into());
    let message = approval_message(&a, now());
    let sections = section_texts(&message);
    assert_eq!(sections[0], "Deploy api to prod");
    assert_eq!(
        sections[1],
        "Parameters:\n• environment: prod\n• service: api"
    );
}

/// A summary on several lines cannot pass for a parameter list of its own above the
/// real one (blank lines pushing that out of sight): it is shown on one line.
#[test]
fn a_summary_cannot_forge_a_parameter_list_above_the_real_one() {
    let mut a = approval();
    a.summary = Some(format!(
        "Rotate logs\r\nParameters:\n• environment: staging\n\t• service: docs{}",
        "\n".repeat(2_900)
    ));
    let message = approval_message(&a, now());
    let sections = section_texts(&message);
    assert_eq!(
        sections[0],
        "Rotate logs Parameters: • environment: staging • service: docs"
    );
    assert_eq!(
        sections[1],
        "Parameters:\n• environment: prod\n• service: api"
    );
    let listing = sections
        .iter()
        .filter(|text| text.lines().any(|line| line.starts_with("Parameters:")))
        .count();
    assert_eq!(listing, 1, "{sections:?}");
}

#[test]
fn context_and_edits_are_noted() {
    let mut a = approval();
    a.context = Some("User asked for it".into());
    a.original_parameters = Some(json!({"service": "web"}));
    let text = all_text(&approval_message(&a, now()));
    assert!(text.contains(":speech_balloon: Context:"), "{text}");
    assert!(text.contains("User asked for it"), "{text}");
    assert!(text.contains(":pencil2: An approver edited"));
}

#[test]
fn high_risk_approvals_ask_for_confirmation() {
    let mut a = approval();
    assert!(
        approval_message(&a, now())["blocks"]
            .to_string()
            .find("confirm")
            .is_none()
    );
    a.risk_tier = Tier::High;
    let message = approval_message(&a, now());
    let actions = find_block(&message, "actions").unwrap();
    assert_eq!(
        actions["elements"][0]["confirm"]["confirm"]["text"],
        "Approve"
    );
    assert!(all_text(&message).contains(":red_circle: high"));
}

#[test]
fn an_overdue_pending_approval_says_so() {
    let a = approval();
    let later = a.expires_at + chrono::Duration::minutes(1);
    assert!(all_text(&approval_message(&a, later)).contains("(overdue)"));
}

#[test]
fn a_settled_approval_never_gets_live_buttons() {
    let mut a = approval();
    a.status = Status::Denied;
    let message = approval_message(&a, now());
    assert!(find_block(&message, "actions").is_none());
    assert_eq!(message, decided_message(&a));
}

fn outcome(a: &Approval) -> String {
    let message = decided_message(a);
    check_limits(&message);
    assert!(
        find_block(&message, "actions").is_none(),
        "no buttons after a decision"
    );
    assert!(message["text"].as_str().is_some_and(|t| !t.is_empty()));
    section_texts(&message).last().unwrap().clone()
}

#[test]
fn decided_messages_say_who_approved_and_when() {
    let mut a = approval();
    a.status = Status::Approved;
    a.decided_by = Some("U1, U2".into());
    a.decision_at = Some(now());
    assert_eq!(
        outcome(&a),
        ":white_check_mark: Approved by <@U1>, <@U2> at <!date^1714564800^{date_short_pretty} {time}|2024-05-01 12:00 UTC>"
    );
    assert!(
        decided_message(&a)["text"]
            .as_str()
            .unwrap()
            .starts_with("Approved: deploy_service")
    );
    a.decided_by = Some("policy".into());
    assert!(outcome(&a).starts_with(":white_check_mark: Approved automatically by policy at"));
}

#[test]
fn decided_messages_say_who_denied_and_why() {
    let mut a = approval();
    a.status = Status::Denied;
    a.decided_by = Some("U3".into());
    a.reason = Some("not on a <Friday>".into());
    let line = outcome(&a);
    assert_eq!(line, ":x: Denied by <@U3> — not on a &lt;Friday&gt;");
    a.reason = None;
    a.decided_by = Some("ops-person".into());
    assert_eq!(outcome(&a), ":x: Denied by ops-person");
}

#[test]
fn expired_messages_say_when_and_that_nothing_ran() {
    let mut a = approval();
    a.status = Status::Expired;
    // The approval's deadline, 2024-05-01 14:05 UTC.
    let when = "<!date^1714572300^{date_short_pretty} {time}|2024-05-01 14:05 UTC>";
    assert_eq!(
        outcome(&a),
        format!(":hourglass: Expired at {when} — nobody decided in time (not executed)")
    );
    a.decided_by = Some("U1".into());
    assert_eq!(
        outcome(&a),
        format!(
            ":hourglass: Expired at {when} — approved by <@U1> but not run in time (not executed)"
        )
    );
}

#[test]
fn cancelled_and_executed_messages_have_their_own_lines() {
    let mut a = approval();
    a.status = Status::Cancelled;
    a.decided_by = Some("ci-bot".into());
    assert_eq!(outcome(&a), ":no_entry_sign: Cancelled by requester");
    a.status = Status::Executed;
    a.decided_by = Some("U1".into());
    a.executed_at = Some(now());
    assert_eq!(
        outcome(&a),
        ":rocket: Executed at <!date^1714564800^{date_short_pretty} {time}|2024-05-01 12:00 UTC> (approved by <@U1>)"
    );
}

/// Every status, with huge input: limits hold everywhere.
fn huge() -> Approval {
    let mut params: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("key{i:05}"), json!(format!("v{i}"))))
        .collect();
    params.insert("aaa_big".into(), json!("ü<&>".repeat(250_000)));
    let mut deep = json!("bottom");
    for i in 0..100 {
        deep = json!({ format!("level{i}"): deep });
    }
    params.insert("aab_deep".into(), deep);
    let mut a = approval();
    a.tool_name = "t".repeat(500);
    a.parameters = Value::Object(params);
    a.summary = Some("s&".repeat(50_000));
    a.context = Some("<c>".repeat(50_000));
    a.requested_by = Some("r".repeat(5_000));
    a.reason = Some("é".repeat(50_000));
    a.required_approvals = 5_000;
    a.votes = (0..5_000)
        .map(|i| vote(&format!("U{i:010}"), Decision::Approve, 1))
        .collect();
    a.decided_by = Some(
        a.votes
            .iter()
            .map(|v| v.user.clone())
            .collect::<Vec<_>>()
            .join(", "),
    );
    a.decision_at = Some(now());
    a.executed_at = Some(now());
    a
}

#[test]
fn block_kit_limits_hold_for_huge_input_in_every_status() {
    let mut a = huge();
    for status in Status::ALL {
        a.status = status;
        let message = approval_message(&a, now());
        check_limits(&message);
        assert!(message["text"].as_str().unwrap().chars().count() <= 300);
        check_limits(&decided_message(&a));
    }
    for tier in [Tier::Low, Tier::Medium, Tier::High] {
        a.status = Status::Pending;
        a.risk_tier = tier;
        check_limits(&approval_message(&a, now()));
    }
    check_limits(&deny_modal(&a, &clicked(), false));
    check_limits(&edit_modal(&a, &clicked(), false));
}

#[test]
fn huge_parameters_say_how_many_lines_were_left_out() {
    let a = huge();
    let message = approval_message(&a, now());
    let params = section_texts(&message)[1].clone();
    assert!(params.starts_with("Parameters:\n"));
    assert!(
        params.lines().last().unwrap().starts_with("… and "),
        "{params}"
    );
    // Past what a section holds, each key's line while they fit: the deep one summarised.
    assert!(params.contains("• aab_deep: (object, 1 key)"), "{params}");
    assert!(action_ids(&message).contains(&ACTION_SHOW_PARAMETERS));
}

#[test]
fn every_key_shows_when_the_parameters_are_cut_and_so_does_show_all() {
    let mut a = approval();
    a.tool_name = "send_email".into();
    a.parameters = email_behind_attachments();
    let message = approval_message(&a, now());
    check_limits(&message);
    let params = section_texts(&message)[0].clone();
    assert!(
        params.starts_with("Parameters:\n• attachments: (60 items)\n• to: attacker@evil.example\n"),
        "{params}"
    );
    assert!(
        params.lines().last().unwrap().starts_with("… and "),
        "{params}"
    );
    let actions = find_block(&message, "actions").unwrap();
    let show = &actions["elements"][3];
    assert_eq!(show["action_id"], ACTION_SHOW_PARAMETERS);
    assert_eq!(show["value"], a.id.to_string());
    assert_eq!(show["text"]["text"], "Show all parameters");
    assert!(show.get("style").is_none(), "not a decision");
    // Settled, no buttons at all.
    a.status = Status::Denied;
    assert!(find_block(&approval_message(&a, now()), "actions").is_none());
}

#[test]
fn parameters_shown_whole_need_no_show_all_button() {
    let message = approval_message(&approval(), now());
    assert_eq!(
        action_ids(&message),
        [ACTION_APPROVE, ACTION_DENY, ACTION_EDIT]
    );
}

fn action_ids(message: &Value) -> Vec<&str> {
    let actions = find_block(message, "actions").expect("actions block");
    let buttons = actions["elements"].as_array().unwrap();
    buttons
        .iter()
        .map(|b| b["action_id"].as_str().unwrap())
        .collect()
}

#[test]
fn requester_text_is_shown_as_plain_text_and_cannot_pose_as_signoff() {
    let mut a = approval();
    a.server = Some("github".into());
    a.summary = Some("*APPROVED by security* hi <!here> <@U123> <https://evil.example|click> https://evil.example".into());
    a.context = Some("<!everyone> _urgent_ ~struck~ `code` > quote".into());
    a.parameters = json!({"to": "<@U999>", "<!subteam^S1>": "x & y *bold*"});
    a.requested_by = Some("U0ALICE".into());
    let asked = [
        "APPROVED",
        "<!here>",
        "<@U123>",
        "evil.example",
        "<!everyone>",
        "_urgent_",
        "~struck~",
        "<@U999>",
        "subteam",
        "*bold*",
        "U0ALICE",
    ];
    for message in [
        approval_message(&a, now()),
        decided_message(&a),
        edit_modal(&a, &clicked(), false),
        deny_modal(&a, &clicked(), false),
    ] {
        check_limits(&message);
        for mrkdwn in mrkdwn_texts(&message) {
            for bad in asked {
                assert!(!mrkdwn.contains(bad), "{bad} is in mrkdwn: {mrkdwn}");
            }
        }
    }
    // Shown, as written, in plain text.
    let text = all_text(&approval_message(&a, now()));
    for shown in [
        "*APPROVED by security*",
        "<!everyone> _urgent_",
        "x & y *bold*",
        "U0ALICE",
    ] {
        assert!(text.contains(shown), "{shown}: {text}");
    }
    assert_eq!(message_header(&a), "deploy_service · github");
}

fn message_header(a: &Approval) -> String {
    approval_message(a, now())["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn truncation_keeps_multi_byte_characters_whole() {
    let mut a = approval();
    a.tool_name = "🚀".repeat(400);
    a.summary = Some("日本".repeat(5_000));
    let message = approval_message(&a, now());
    check_limits(&message);
    let header = message["blocks"][0]["text"]["text"].as_str().unwrap();
    assert_eq!(header.chars().count(), 150);
    assert!(header.ends_with("🚀…"));
}
