use super::*;
use crate::slack::testutil::{all_text, approval, check_limits, now, other_id, vote};

fn status(id: &str) -> Command {
    Command::Status(id.to_string())
}

fn is_unknown(command: &Command) -> bool {
    matches!(command, Command::Unknown(_))
}

#[test]
fn empty_text_lists_pending_requests() {
    assert_eq!(parse(""), Command::Pending);
    assert_eq!(parse("   \t "), Command::Pending);
}

#[test]
fn pending_and_list_are_keywords_for_the_list() {
    assert_eq!(parse("pending"), Command::Pending);
    assert_eq!(parse("list"), Command::Pending);
    assert_eq!(parse("  PENDING  "), Command::Pending);
    assert_eq!(parse("List"), Command::Pending);
}

#[test]
fn pending_with_arguments_is_not_understood() {
    assert_eq!(
        parse("pending now"),
        Command::Unknown("`pending` takes no arguments".into())
    );
}

#[test]
fn status_takes_a_short_id() {
    assert_eq!(parse("status 0123abcd"), status("0123abcd"));
    assert_eq!(parse("  status    0123abcd  "), status("0123abcd"));
    assert_eq!(parse("STATUS 0123ABCD"), status("0123abcd"));
}

#[test]
fn status_takes_a_full_uuid() {
    let id = "0123abcd-0000-4000-8000-000000000001";
    assert_eq!(parse(&format!("status {id}")), status(id));
    assert_eq!(parse(&format!("status {}", id.to_uppercase())), status(id));
}

#[test]
fn status_ids_are_between_4_and_36_characters() {
    assert_eq!(parse("status abcd"), status("abcd"));
    assert!(is_unknown(&parse("status abc")));
    let long = "0".repeat(37);
    assert!(is_unknown(&parse(&format!("status {long}"))));
    assert_eq!(
        parse(&format!("status {}", "0".repeat(36))),
        status(&"0".repeat(36))
    );
}

#[test]
fn status_ids_must_be_hex() {
    for bad in [
        "xyz12345",
        "0123abcg",
        "01;drop",
        "----",
        "ab--",
        "0123abcd!",
        "ünï1234",
    ] {
        let command = parse(&format!("status {bad}"));
        assert!(is_unknown(&command), "{bad}: {command:?}");
    }
}

#[test]
fn a_bad_id_is_explained_and_escaped() {
    let Command::Unknown(message) = parse("status <!channel>") else {
        panic!()
    };
    assert!(message.contains("is not an approval id"), "{message}");
    assert!(message.contains("&lt;!channel&gt;"), "{message}");
    assert!(!message.contains('<'));
}

#[test]
fn status_without_an_id_says_what_is_missing() {
    let Command::Unknown(message) = parse("status") else {
        panic!()
    };
    assert!(message.contains("needs an approval id"));
}

#[test]
fn status_with_two_ids_is_not_understood() {
    assert!(is_unknown(&parse("status abcd1234 ef567890")));
}

#[test]
fn help_has_several_spellings() {
    for text in ["help", "HELP", "-h", "--help", "?", " help status "] {
        assert_eq!(parse(text), Command::Help, "{text}");
    }
}

#[test]
fn anything_else_is_unknown_and_named() {
    assert_eq!(
        parse("approve 1234"),
        Command::Unknown("I don't know the command `approve`".into())
    );
    assert_eq!(
        parse("pendingx"),
        Command::Unknown("I don't know the command `pendingx`".into())
    );
    assert!(is_unknown(&parse("0123abcd")));
}

#[test]
fn unknown_words_cannot_break_out_of_code_formatting() {
    let Command::Unknown(message) = parse("`<@U1>`") else {
        panic!()
    };
    assert_eq!(message, "I don't know the command `'&lt;@U1&gt;'`");
}

#[test]
fn very_long_unknown_words_are_cut() {
    let Command::Unknown(message) = parse(&"x".repeat(10_000)) else {
        panic!()
    };
    assert!(message.chars().count() < 100);
}

#[test]
fn the_unknown_reply_includes_the_usage_line() {
    let reply = unknown_reply("I don't know the command `foo`");
    assert_eq!(
        reply,
        "I don't know the command `foo`. Usage: `/approvals [pending | status ID | help]`"
    );
}

#[test]
fn usage_has_examples_for_every_command() {
    let text = usage();
    for example in [
        "`/approvals pending`",
        "`/approvals status 0123abcd`",
        "`/approvals help`",
    ] {
        assert!(text.contains(example), "{example}");
    }
}

#[test]
fn an_empty_pending_list_says_nothing_is_waiting() {
    let reply = pending_list_reply(&[], now());
    assert_eq!(reply["response_type"], "ephemeral");
    assert_eq!(reply["text"], "Nothing is waiting for you.");
    check_limits(&reply);
}

#[test]
fn the_pending_list_shows_tool_summary_age_and_short_id() {
    let mut a = approval();
    a.summary = Some("Deploy api to prod".into());
    let reply = pending_list_reply(&[&a], now());
    check_limits(&reply);
    assert_eq!(reply["response_type"], "ephemeral");
    assert_eq!(reply["text"], "1 request is waiting for you");
    assert_eq!(
        reply["blocks"][1]["text"]["text"],
        "*`deploy_service`*\n:large_yellow_circle: medium · `0123abcd` · \
         requested 5m ago · expires in 2h 5m"
    );
    let asked = &reply["blocks"][2]["elements"][0];
    assert_eq!(
        asked["type"], "plain_text",
        "the requester's words are plain text"
    );
    assert_eq!(asked["text"], "Deploy api to prod");
}

#[test]
fn pending_items_without_a_summary_show_readable_parameters() {
    let reply = pending_list_reply(&[&approval()], now());
    let item = reply["blocks"][2]["elements"][0]["text"].as_str().unwrap();
    assert_eq!(item, "environment: prod; service: api");
}

#[test]
fn the_pending_list_stops_at_20_and_counts_the_rest() {
    let items: Vec<Approval> = (0..45)
        .map(|i| {
            let mut a = approval();
            a.id = other_id(i);
            a
        })
        .collect();
    let refs: Vec<&Approval> = items.iter().collect();
    let reply = pending_list_reply(&refs, now());
    check_limits(&reply);
    let blocks = reply["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 1 + 2 * 20 + 1);
    assert_eq!(blocks[41]["elements"][0]["text"], "… and 25 more");
    assert_eq!(reply["text"], "45 requests are waiting for you");
    // Only the first were kept of a longer scan: the count is the scan's.
    let first: Vec<(&Approval, Option<&str>)> = refs[..20].iter().map(|a| (*a, None)).collect();
    let found = Found {
        total: 45,
        unchecked: 0,
    };
    let scanned = pending_list_reply_linked(&first, found, now());
    assert_eq!(scanned, reply);
}

#[test]
fn pending_items_link_to_their_message_when_the_link_is_safe() {
    let a = approval();
    let good = "https://example.slack.com/archives/C1/p123";
    let items = [(&a, Some(good)), (&a, Some("https://x|<!channel>"))];
    let found = Found {
        total: 2,
        unchecked: 0,
    };
    let reply = pending_list_reply_linked(&items, found, now());
    let first = reply["blocks"][1]["text"]["text"].as_str().unwrap();
    assert!(first.ends_with(&format!(" · <{good}|open>")), "{first}");
    let second = reply["blocks"][3]["text"]["text"].as_str().unwrap();
    assert!(!second.contains("open>"), "{second}");
}

#[test]
fn the_status_reply_shows_votes_and_expiry() {
    let mut a = approval();
    a.votes = vec![vote("U1", Decision::Approve, 3)];
    let reply = status_reply(&a, now());
    check_limits(&reply);
    assert_eq!(reply["response_type"], "ephemeral");
    assert_eq!(reply["text"], "deploy_service (0123abcd) is pending");
    let text = all_text(&reply);
    assert!(
        text.contains("*Status*\n:hourglass_flowing_sand: pending"),
        "{text}"
    );
    assert!(text.contains("*Approvals*\n1 of 2"));
    assert!(text.contains("(in 2h 5m)"));
    assert!(text.contains("• <@U1> approved 3m ago"));
    assert!(
        !text.contains("Waiting for a decision"),
        "no outcome line while pending"
    );
}

#[test]
fn the_status_reply_shows_who_decided_and_why() {
    let mut a = approval();
    let mut deny = vote("U3", Decision::Deny, 1);
    deny.reason = Some("too risky".into());
    a.votes = vec![vote("U1", Decision::Approve, 3), deny];
    a.status = Status::Denied;
    a.decided_by = Some("U3".into());
    a.reason = Some("too risky".into());
    let text = all_text(&status_reply(&a, now()));
    assert!(text.contains("• <@U3> denied 1m ago — too risky"), "{text}");
    assert!(text.contains(":x: Denied by <@U3> — too risky"), "{text}");
}

#[test]
fn the_status_reply_stays_within_limits_with_many_votes() {
    let mut a = approval();
    a.votes = (0..2_000)
        .map(|i| vote(&format!("U{i:09}"), Decision::Approve, i))
        .collect();
    a.tool_name = "t".repeat(1_000);
    a.status = Status::Expired;
    a.expires_at = now() - chrono::Duration::minutes(1);
    let reply = status_reply(&a, now());
    check_limits(&reply);
    assert!(all_text(&reply).contains(" more"));
    assert!(
        all_text(&reply).contains("(passed)"),
        "{}",
        all_text(&reply)
    );
}

#[test]
fn text_replies_are_ephemeral() {
    let reply = text_reply(usage());
    check_limits(&reply);
    assert_eq!(reply["response_type"], "ephemeral");
    assert_eq!(reply["text"], usage());
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Words a person might type, and anything else.
    fn text() -> impl Strategy<Value = String> {
        let word = prop_oneof![
            Just("pending".to_string()),
            Just("STATUS".to_string()),
            Just("help".to_string()),
            "[0-9a-fA-F-]{0,40}",
            "\\PC{0,30}",
            "[<>&*_~`|@!#]{1,10}",
        ];
        prop::collection::vec(word, 0..5).prop_map(|words| words.join(" "))
    }

    /// Every text is one of the commands; an id is only ever hex digits and dashes,
    /// lower-cased; and whatever was typed, the reply stays within Slack's limits and
    /// cannot mention anyone. (A fuzz target: `crate::fuzz` sets how long it runs.)
    #[test]
    fn any_text_parses_to_a_command_with_a_safe_reply() {
        crate::fuzz::run(256, &text(), |raw| {
            match parse(&raw) {
                Command::Status(id) => {
                    prop_assert!(id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
                    prop_assert!(!id.chars().any(|c| c.is_ascii_uppercase()));
                    prop_assert!((4..=36).contains(&id.len()));
                }
                Command::Unknown(problem) => {
                    let reply = text_reply(&unknown_reply(&problem));
                    check_limits(&reply);
                    let shown = all_text(&reply);
                    prop_assert!(!shown.contains("<!") && !shown.contains("<@"), "{shown}");
                }
                Command::Pending | Command::Help => {}
            }
            Ok(())
        });
    }

    proptest! {
        /// Case and spacing do not matter to the keywords.
        #[test]
        fn keywords_ignore_case_and_spacing(spaces in "[ \t]{0,4}", upper in any::<bool>()) {
            let word = if upper { "PENDING" } else { "pending" };
            prop_assert_eq!(parse(&format!("{spaces}{word}{spaces}")), Command::Pending);
        }
    }
}
