use super::*;
use crate::slack::testutil::{approval, now};
use serde_json::json;

fn len(s: &str) -> usize {
    s.chars().count()
}

#[test]
fn mrkdwn_control_characters_are_escaped() {
    assert_eq!(
        escape("a & b <!channel> <@U1> <http://x|y>"),
        "a &amp; b &lt;!channel&gt; &lt;@U1&gt; &lt;http://x|y&gt;"
    );
    assert_eq!(escape("plain *bold* _it_"), "plain *bold* _it_");
}

#[test]
fn short_text_is_kept_whole() {
    assert_eq!(fit("hello", 5), "hello");
    assert_eq!(fit("", 5), "");
}

#[test]
fn long_text_is_cut_with_an_ellipsis_within_the_limit() {
    assert_eq!(fit("hello world", 5), "hell…");
    assert_eq!(fit("hello", 0), "");
    assert_eq!(fit("hello", 1), "…");
}

#[test]
fn cutting_respects_multi_byte_characters() {
    let text = "日本語のテキスト🎉🎉🎉";
    for max in 0..15 {
        let cut = fit(text, max);
        assert!(len(&cut) <= max, "{cut:?} longer than {max}");
        assert!(text.starts_with(cut.trim_end_matches('…')));
    }
    assert_eq!(fit("🎉🎉🎉", 2), "🎉…");
}

#[test]
fn escapes_count_towards_the_limit_and_are_never_split() {
    assert_eq!(fit("<<<", 15), "&lt;&lt;&lt;");
    // "&lt;" is 4 chars: 6 leaves room for one entity plus the ellipsis, not two.
    assert_eq!(fit("<<<", 6), "&lt;…");
    assert_eq!(fit("<<<", 4), "…");
    for max in 0..20 {
        let cut = fit("a&b<c>d&&", max);
        assert!(len(&cut) <= max);
        let body = cut.trim_end_matches('…');
        assert!(!body.ends_with('&') && !body.ends_with("&l") && !body.ends_with("&am"));
    }
}

#[test]
fn marks_that_reorder_text_are_shown_as_escapes_counted_whole() {
    let text = "a\u{202E}cba\u{2066}x\u{200F}";
    assert_eq!(fit_plain(text, 100), r"a\u{202e}cba\u{2066}x\u{200f}");
    assert_eq!(fit(text, 100), r"a\u{202e}cba\u{2066}x\u{200f}");
    // `\u{202e}` is 8 chars: it fits whole or not at all.
    assert_eq!(fit_plain(text, 9), "a…");
    assert_eq!(fit_plain(text, 11), r"a\u{202e}c…");
    for max in 0..30 {
        let cut = fit_plain(text, max);
        assert!(len(&cut) <= max);
        assert!(!cut.chars().any(hidden), "{cut:?}");
        let body = cut.trim_end_matches('…');
        assert!(
            !body.contains(r"\u{") || body.matches(r"\u{").count() == body.matches('}').count()
        );
    }
    let json = json_showing_hidden("{\"f\": \"x\u{202E}y\"}".into());
    assert_eq!(json, r#"{"f": "x\u202ey"}"#);
}

#[test]
fn characters_that_show_nothing_are_shown_as_escapes_and_json_keeps_their_value() {
    let text = "a\u{200B}b\u{FEFF}c\u{E0041}\u{AD}";
    assert_eq!(fit_plain(text, 100), r"a\u{200b}b\u{feff}c\u{e0041}\u{ad}");
    let value = json!({"k\u{2060}": "v\u{E0041}\u{E0100}"});
    let shown = json_showing_hidden(value.to_string());
    assert_eq!(shown, r#"{"k\u2060":"v\udb40\udc41\udb40\udd00"}"#);
    let read_back: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(read_back, value, "the same value");
    // Format characters outside the common blocks show nothing either.
    assert_eq!(
        fit_plain("prod\u{1D173}\u{1BCA0}", 100),
        r"prod\u{1d173}\u{1bca0}"
    );
    // What people write every day stays as it is.
    for plain in ["café", "日本語", "❤\u{FE0F}", "a-b", "tab\there"] {
        assert!(!plain.chars().any(hidden), "{plain:?}");
    }
}

#[test]
fn single_line_helpers_flatten_line_breaks() {
    assert_eq!(fit_line("a\nb\tc\r\nd", 10), "a b c d");
    // A carriage return alone is no line feed: shown for what it is.
    assert_eq!(fit_line("a\rb", 10), "a\\u{d}b");
    assert_eq!(fit_plain("a <b>\nc", 10), "a <b> c");
}

#[test]
fn slack_user_ids_become_mentions_and_other_names_are_escaped() {
    assert_eq!(person("U2CERLKJA"), "<@U2CERLKJA>");
    assert_eq!(person("W0ADMIN"), "<@W0ADMIN>");
    assert_eq!(person("agent-42"), "agent-42");
    assert_eq!(person("Ualice"), "Ualice");
    assert_eq!(person("U<!channel>"), "U&lt;!channel&gt;");
    assert_eq!(person("policy"), "policy");
}

#[test]
fn decided_by_lists_become_several_mentions() {
    assert_eq!(people("U1, U2", 100), "<@U1>, <@U2>");
    assert_eq!(people("ci-bot", 100), "ci-bot");
}

#[test]
fn long_lists_keep_whole_items_and_say_how_many_are_missing() {
    let ids: Vec<String> = (0..500).map(|i| format!("U{i:08}")).collect();
    let joined = people(&ids.join(", "), 200);
    assert!(len(&joined) <= 200);
    assert!(joined.ends_with(" more"), "{joined}");
    let missing: usize = joined
        .rsplit(" and ")
        .next()
        .unwrap()
        .trim_end_matches(" more")
        .parse()
        .unwrap();
    assert_eq!(joined.matches("<@U").count() + missing, 500);
    assert!(!joined.contains("<@U0000>"), "no cut mentions");
}

#[test]
fn tier_badges_have_colours() {
    assert_eq!(tier_badge(Tier::Low), ":large_green_circle: low");
    assert_eq!(tier_badge(Tier::Medium), ":large_yellow_circle: medium");
    assert_eq!(tier_badge(Tier::High), ":red_circle: high");
}

#[test]
fn durations_are_short_and_readable() {
    assert_eq!(duration_short(0), "0s");
    assert_eq!(duration_short(45), "45s");
    assert_eq!(duration_short(300), "5m");
    assert_eq!(duration_short(7500), "2h 5m");
    assert_eq!(duration_short(7200), "2h");
    assert_eq!(duration_short(86_400 * 3 + 3600 * 4 + 61), "3d 4h");
    assert_eq!(duration_short(86_400), "1d");
    assert_eq!(duration_short(-5), "0s");
}

#[test]
fn relative_times_read_in_and_ago() {
    let now = now();
    assert_eq!(
        relative(now + chrono::Duration::minutes(125), now),
        "in 2h 5m"
    );
    assert_eq!(relative(now - chrono::Duration::minutes(5), now), "5m ago");
}

#[test]
fn slack_dates_carry_a_utc_fallback() {
    assert_eq!(
        slack_date(now()),
        "<!date^1714564800^{date_short_pretty} {time}|2024-05-01 12:00 UTC>"
    );
}

#[test]
fn the_requester_falls_back_to_the_token_name_and_is_never_a_mention() {
    let mut a = approval();
    assert_eq!(
        requester(&a),
        "agent-session-42 (token ci-bot)",
        "what the caller says, and the token it cannot choose"
    );
    a.requested_by = Some("U0BOB".into());
    assert_eq!(
        requester(&a),
        "U0BOB (token ci-bot)",
        "the caller chose it: no ping"
    );
    a.requested_by = Some("ci-bot".into());
    assert_eq!(requester(&a), "ci-bot");
    a.requested_by = None;
    assert_eq!(requester(&a), "token ci-bot");
    a.token_name = None;
    assert_eq!(requester(&a), "unknown");
}

#[test]
fn a_decision_outside_slack_says_so_in_plain_words() {
    use crate::approval::{BREAK_GLASS_VIA, Status};
    use crate::slack::blocks::outcome_line;
    let mut a = approval();
    a.status = Status::Denied;
    a.decided_by = Some("<!channel> carol".into());
    a.decided_via = Some(BREAK_GLASS_VIA.into());
    a.reason = Some("freeze".into());
    a.decision_at = Some(now());
    let line = outcome_line(&a);
    assert!(
        line.starts_with(":x: Denied by &lt;!channel&gt; carol outside Slack (signoff decide)"),
        "{line}"
    );
    assert!(line.ends_with("— freeze"), "{line}");
    a.status = Status::Executed;
    a.decided_by = Some("U0CAROL".into());
    assert!(
        outcome_line(&a).contains("(approved by U0CAROL outside Slack (signoff decide))"),
        "an operator's name is never a mention: {}",
        outcome_line(&a)
    );
    a.decided_via = None;
    assert!(outcome_line(&a).contains("<@U0CAROL>"));
}

#[test]
fn no_character_that_breaks_a_line_survives_and_text_on_lines_shows_it_escaped() {
    let breakers = [
        '\n', '\r', '\t', '\u{0B}', '\u{0C}', '\u{85}', '\u{2028}', '\u{2029}', '\u{0}', '\u{1B}',
        '\u{7F}', '\u{9B}',
    ];
    for c in breakers {
        assert!(breaks_line(c), "{c:?}");
        let text = format!("prod{c}• dry_run: true");
        let lines = fit_plain_lines(&text, 100);
        match c {
            '\n' | '\t' => {
                assert_eq!(fit_plain(&text, 100), "prod • dry_run: true", "{c:?}");
                assert_eq!(fit_line(&text, 100), "prod • dry_run: true", "{c:?}");
                assert_eq!(lines, text, "kept where lines are kept");
            }
            c => {
                // Escaped, on one line as on several: a space would read as other text.
                let escaped = format!("prod{}• dry_run: true", c.escape_unicode());
                assert_eq!(fit_plain(&text, 100), escaped, "{c:?}");
                assert_eq!(fit_line(&text, 100), escaped, "{c:?}");
                assert!(!lines.chars().any(breaks_line), "{c:?}: {lines:?}");
                assert_eq!(lines, escaped);
            }
        }
    }
    // A Windows line end is one line break.
    assert_eq!(fit_plain_lines("a\r\nb", 10), "a\nb");
    // In JSON they are written as escapes, as the hidden ones are.
    let json = json_showing_hidden(json!({"k": "a\u{2028}b\u{85}c\u{9B}"}).to_string());
    assert_eq!(json, r#"{"k":"a\u2028b\u0085c\u009b"}"#);
    let pretty = json_showing_hidden(serde_json::to_string_pretty(&json!({"k": 1})).unwrap());
    assert_eq!(pretty, "{\n  \"k\": 1\n}", "its own line breaks stay");
}
