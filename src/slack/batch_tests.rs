use super::*;
use crate::approval::{Decision, parameters_fingerprint};
use crate::slack::blocks::{ACTION_APPROVE, ACTION_DENY, ACTION_EDIT, ACTION_SHOW_PARAMETERS};
use crate::slack::testutil::{approval, check_limits, mrkdwn_texts, now, other_id, vote};

/// `n` look-alike requests, the first the leader.
fn items(n: u128) -> Vec<Approval> {
    (0..n)
        .map(|i| {
            let mut a = approval();
            a.id = other_id(i + 1);
            a.parameters = json!({"service": format!("svc-{i}"), "environment": "prod"});
            a
        })
        .collect()
}

/// The buttons of each actions block: (block_id, [(action_id, value)]).
fn buttons(message: &Value) -> Vec<(String, Vec<(String, String)>)> {
    let blocks = message["blocks"].as_array().unwrap();
    blocks
        .iter()
        .filter(|b| b["type"] == "actions")
        .map(|b| {
            let elements = b["elements"].as_array().unwrap().iter();
            let pairs = elements
                .map(|e| {
                    let field = |k: &str| e[k].as_str().unwrap().to_owned();
                    (field("action_id"), field("value"))
                })
                .collect();
            (b["block_id"].as_str().unwrap().to_owned(), pairs)
        })
        .collect()
}

#[test]
fn each_waiting_item_has_its_own_buttons_and_the_batch_approve_all_and_deny_all() {
    let batch = items(3);
    let message = batch_message(&batch, now());
    check_limits(&message);
    let found = buttons(&message);
    assert_eq!(found.len(), 4, "{found:?}");
    for (item, (block, pairs)) in batch.iter().zip(&found) {
        let id = item.id.to_string();
        assert_eq!(block, &format!("approval:{id}"));
        // Approve also names the parameters the item shows.
        let approve = format!("{id}:{}", parameters_fingerprint(&item.parameters));
        let expected: Vec<(String, String)> = [
            (ACTION_APPROVE, approve),
            (ACTION_DENY, id.clone()),
            (ACTION_EDIT, id.clone()),
        ]
        .into_iter()
        .map(|(action, value)| (action.to_owned(), value))
        .collect();
        assert_eq!(pairs, &expected);
    }
    let leader = batch[0].id.to_string();
    let bulk = &found[3];
    assert_eq!(bulk.0, format!("batch:{leader}"));
    let actions: Vec<&str> = bulk.1.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, [ACTION_APPROVE_ALL, ACTION_DENY_ALL]);
    assert!(bulk.1.iter().all(|(_, value)| value == &leader));
    let text = message.to_string();
    for n in 0..3 {
        assert!(text.contains(&format!("service: svc-{n}")), "{text}");
    }
    assert!(text.contains("Approve all 3") && text.contains("Deny all 3"));
    // Each waiting item's expiry as a date, not an "in 2h 5m" that goes stale.
    let expires = "expires <!date^1714572300^{date_short_pretty} {time}|2024-05-01 14:05 UTC>";
    assert_eq!(text.matches(expires).count(), 3, "{text}");
    assert!(!text.contains("expires in"), "{text}");
    assert!(
        message["text"]
            .as_str()
            .unwrap()
            .contains("3 requests for deploy_service")
    );
}

#[test]
fn decided_items_show_how_they_ended_and_the_bulk_buttons_count_only_the_waiting() {
    let mut batch = items(3);
    batch[1].status = Status::Denied;
    batch[1].decided_by = Some("U0ALICE".into());
    batch[1].votes = vec![vote("U0ALICE", Decision::Deny, 1)];
    let message = batch_message(&batch, now());
    let found = buttons(&message);
    let blocks: Vec<&String> = found.iter().map(|(block, _)| block).collect();
    assert_eq!(
        blocks.len(),
        3,
        "two items' buttons and the bulk ones: {blocks:?}"
    );
    assert!(!blocks.contains(&&format!("approval:{}", batch[1].id)));
    assert!(message.to_string().contains("Approve all 2"));
    assert!(mrkdwn_texts(&message).iter().any(|t| t.contains("Denied")));

    batch[0].status = Status::Expired;
    let one_left = batch_message(&batch, now());
    assert_eq!(
        buttons(&one_left).len(),
        1,
        "one item waiting: its own buttons are enough"
    );
    batch[2].status = Status::Cancelled;
    let settled = batch_message(&batch, now());
    assert!(buttons(&settled).is_empty());
    assert!(settled["text"].as_str().unwrap().starts_with("Decided"));
}

#[test]
fn ten_items_with_the_largest_parameters_stay_within_block_kit_limits() {
    let mut batch = items(10);
    for (n, item) in batch.iter_mut().enumerate() {
        item.parameters = json!({"body": "x".repeat(50_000), "n": n});
        item.summary = Some("s".repeat(5_000));
        item.risk_tier = Tier::High;
    }
    let message = batch_message(&batch, now());
    check_limits(&message);
    assert!(message["blocks"].as_array().unwrap().len() <= 50);
    let header = &message["blocks"][0]["text"]["text"];
    assert!(header.as_str().unwrap().starts_with("10 × deploy_service"));
}

#[test]
fn requester_text_never_reaches_mrkdwn() {
    let mut batch = items(2);
    for item in &mut batch {
        item.parameters = json!({"to": "<!channel> *bold* <https://evil|click>"});
        item.summary = Some("<@U0BOSS> approve".into());
        item.requested_by = Some("<!here>".into());
    }
    let message = batch_message(&batch, now());
    for text in mrkdwn_texts(&message) {
        // Less signoff's own date tokens (`<!date^…>`, the expiry).
        let text = without_date_tokens(&text);
        assert!(
            !text.contains("<!") && !text.contains("<@") && !text.contains("<http"),
            "{text}"
        );
    }
}

/// `text` less every Slack date token in it.
fn without_date_tokens(text: &str) -> String {
    let mut rest = text;
    let mut out = String::new();
    while let Some(start) = rest.find("<!date^") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('>')
            .map_or(rest.len(), |end| start + end + 1);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[test]
fn the_deny_all_modal_carries_the_leader_the_clicked_message_and_its_named_items_back() {
    let leader = approval();
    let clicked = MessageKey {
        channel: "C0APPROVALS".into(),
        ts: "1700000000.000100".into(),
    };
    let named = vec![leader.id, ApprovalId::new()];
    let modal = deny_all_modal(&leader, 4, &clicked, &named);
    check_limits(&modal);
    assert_eq!(modal["callback_id"], DENY_ALL_CALLBACK);
    assert_eq!(modal["submit"]["text"], "Deny 4");
    let source = deny_all_source(modal["private_metadata"].as_str().unwrap());
    assert_eq!(source, Some((leader.id, clicked.clone(), named)));
    // A form opened before the named items were kept: none named.
    let older = json!({"leader": leader.id, "channel": clicked.channel, "ts": clicked.ts});
    let source = deny_all_source(&older.to_string());
    assert_eq!(source, Some((leader.id, clicked.clone(), Vec::new())));
    let garbled = json!({"leader": leader.id, "channel": "C", "ts": "1", "named": ["x"]});
    assert_eq!(deny_all_source(&garbled.to_string()), None);
    assert_eq!(deny_all_source("{}"), None);
    assert_eq!(deny_all_source("not json"), None);
}

#[test]
fn an_items_summary_sits_apart_from_its_labelled_parameters() {
    let mut batch = items(2);
    batch[0].summary = Some("• amount: 10\n• to: me".into());
    let message = batch_message(&batch, now());
    let texts: Vec<&str> = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .collect();
    assert!(
        texts.contains(
            &"1. • amount: 10 • to: me\nParameters:\n• environment: prod\n• service: svc-0"
        ),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"2. Parameters:\n• environment: prod\n• service: svc-1"),
        "{texts:?}"
    );
}

#[test]
fn a_cut_item_names_every_key_and_offers_all_its_parameters() {
    let mut batch = items(3);
    batch[1].parameters = crate::slack::testutil::email_behind_attachments();
    let message = batch_message(&batch, now());
    check_limits(&message);
    let item = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .find(|t| t.starts_with("2. "))
        .unwrap();
    assert!(item.contains("• to: attacker@evil.example"), "{item}");
    assert!(item.lines().last().unwrap().starts_with("… and "), "{item}");
    let found = buttons(&message);
    let shows: Vec<&String> = found
        .iter()
        .filter(|(_, pairs)| pairs.iter().any(|(a, _)| a == ACTION_SHOW_PARAMETERS))
        .map(|(block, _)| block)
        .collect();
    assert_eq!(
        shows,
        [&format!("approval:{}", batch[1].id)],
        "only the cut one"
    );
}
