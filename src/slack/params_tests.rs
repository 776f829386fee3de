use super::*;
use crate::slack::testutil::{approval, email_behind_attachments};
use crate::slack::text::hidden;
use serde_json::json;

fn len(s: &str) -> usize {
    s.chars().count()
}

#[test]
fn parameters_render_as_readable_lines() {
    let params = json!({
        "service": "api",
        "replicas": 3,
        "force": true,
        "note": null,
        "regions": ["eu-1", "us-2"],
        "target": {"cluster": {"name": "main"}, "zone": "b"},
        "records": [{"id": 1}, {"id": 2}],
        "empty": "",
        "none": [],
        "blank": {}
    });
    assert_eq!(
        params_plain(&params, 3000),
        "• blank: (empty)\n• empty: \"\"\n• force: true\n• none: (empty list)\n• note: null\n\
         • records.0.id: 1\n• records.1.id: 2\n• regions: [eu-1, us-2]\n• replicas: 3\n\
         • service: api\n• target.cluster.name: main\n• target.zone: b"
    );
}

#[test]
fn empty_parameters_say_so() {
    assert_eq!(params_plain(&json!({}), 3000), "No parameters.");
    assert_eq!(params_plain(&json!(null), 3000), "No parameters.");
    assert_eq!(params_one_line(&json!({}), 100), "no parameters");
}

#[test]
fn non_object_parameters_still_render() {
    assert_eq!(params_plain(&json!(["a", "b"]), 3000), "• [a, b]");
    assert_eq!(params_plain(&json!("x"), 3000), "• x");
}

#[test]
fn parameter_values_stay_as_written_for_plain_text() {
    let text = params_plain(
        &json!({"msg": "hi <!channel> & <@U1> *bold*", "<k>": 1}),
        3000,
    );
    assert!(text.contains("hi <!channel> & <@U1> *bold*"), "{text}");
    assert!(text.contains("<k>: 1"), "{text}");
}

#[test]
fn many_parameters_are_cut_with_a_count_of_what_is_missing() {
    let params: serde_json::Map<String, Value> = (0..10_000)
        .map(|i| (format!("key{i:05}"), json!(i)))
        .collect();
    let text = params_plain(&Value::Object(params), 3000);
    assert!(len(&text) <= 3000);
    let last = text.lines().last().unwrap();
    let missing: usize = last
        .trim_start_matches("… and ")
        .trim_end_matches(" more")
        .parse()
        .unwrap();
    assert_eq!(text.lines().count() - 1 + missing, 10_000);
}

#[test]
fn a_huge_value_is_capped_on_its_line() {
    let big = "é".repeat(1_000_000);
    let text = params_plain(&json!({"a": big, "b": "small"}), 3000);
    assert!(len(&text) < 1000, "{}", len(&text));
    assert!(text.contains("• b: small"));
}

#[test]
fn a_line_too_long_for_the_room_is_shortened_so_that_every_key_still_shows() {
    let rendered = params_rendered(&json!({"a": "x".repeat(290), "b": 1}), 100);
    let text = &rendered.text;
    assert!(len(text) <= 100, "{text}");
    assert!(
        text.starts_with("• a: xxx") && text.contains("…\n• b: 1"),
        "{text}"
    );
    assert!(rendered.cut);
    // With no room for even a short line per key, whole lines while they fit, counted.
    let text = params_plain(&json!({"a": "x".repeat(290), "b": 1}), 20);
    assert!(len(&text) <= 20, "{text}");
    assert!(text.ends_with("… and 2 more"), "{text}");
}

#[test]
fn deep_nesting_is_summarised() {
    let mut value = json!("bottom");
    for i in 0..200 {
        value = json!({ format!("k{i}"): value });
    }
    let text = params_plain(&value, 3000);
    assert!(text.contains("(nested too deep to show)"), "{text}");
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn long_arrays_are_joined_up_to_a_cap() {
    let items: Vec<u32> = (0..10_000).collect();
    let text = params_plain(&json!({ "ids": items }), 3000);
    assert!(len(&text) < 400, "{}", len(&text));
    // The items shown are whole, the list closed, and the count is of the rest.
    let (list, more) = text
        .strip_prefix("• ids: [")
        .and_then(|rest| rest.split_once("] (+"))
        .unwrap_or_else(|| panic!("{text}"));
    let shown: Vec<u32> = list.split(", ").map(|n| n.parse().unwrap()).collect();
    assert_eq!(shown, (0..shown.len() as u32).collect::<Vec<_>>());
    let more: usize = more.trim_end_matches(" more)").parse().unwrap();
    assert_eq!(shown.len() + more, 10_000, "{text}");
}

#[test]
fn a_long_list_of_values_with_reordering_marks_is_cut_between_whole_escapes() {
    for pad in 0..12 {
        let mut items = vec![json!("x".repeat(pad))];
        items.extend((0..200).map(|_| json!("a\u{202E}b")));
        let (shown, cut) = scalar_or_list(&Value::Array(items));
        assert!(cut);
        assert!(shown.ends_with(" more)"), "{shown}");
        assert!(len(&shown) <= MAX_VALUE_CHARS, "{}", len(&shown));
        assert!(!shown.chars().any(hidden), "{shown:?}");
        // Every escape is whole: each `\u{` is closed by its `}`.
        assert_eq!(
            shown.matches(r"\u{").count(),
            shown.matches(r"\u{202e}").count(),
            "{shown}"
        );
    }
}

#[test]
fn one_line_parameters_join_with_semicolons() {
    assert_eq!(
        params_one_line(&json!({"service": "api", "environment": "prod"}), 100),
        "environment: prod; service: api"
    );
    let many: serde_json::Map<String, Value> =
        (0..30).map(|i| (format!("k{i:02}"), json!(i))).collect();
    let line = params_one_line(&Value::Object(many), 1000);
    assert!(line.ends_with("; +18 more"), "{line}");
    assert!(len(&params_one_line(&json!({"a": "x".repeat(500)}), 50)) <= 50);
}

#[test]
fn the_summary_is_preferred_over_parameters() {
    let mut a = approval();
    assert_eq!(
        summary_or_params(&a, 100),
        "environment: prod; service: api"
    );
    a.summary = Some("Deploy api to <prod>".into());
    assert_eq!(summary_or_params(&a, 100), "Deploy api to <prod>");
    a.summary = Some("   ".into());
    assert_eq!(
        summary_or_params(&a, 100),
        "environment: prod; service: api"
    );
    // Edited: the summary told what was asked; what runs is the edited parameters.
    a.summary = Some("Deploy api to prod".into());
    a.original_parameters = Some(a.parameters.clone());
    a.parameters = json!({"environment": "prod", "service": "web"});
    assert_eq!(
        summary_or_params(&a, 100),
        "Edited: environment: prod; service: web"
    );
    assert!(len(&summary_or_params(&a, 20)) <= 20);
}

/// The `N` of a rendering's last line, `… and N more`.
fn missing(text: &str) -> usize {
    let last = text.lines().last().unwrap();
    let n = last
        .strip_prefix("… and ")
        .and_then(|l| l.strip_suffix(" more"));
    n.unwrap_or_else(|| panic!("no count: {text}"))
        .parse()
        .unwrap()
}

#[test]
fn every_top_level_key_gets_a_line_before_the_nested_ones_fill_the_room() {
    let params = email_behind_attachments();
    for max in [3000, 700, 200] {
        let rendered = params_rendered(&params, max);
        let text = &rendered.text;
        assert!(len(text) <= max, "{max}: {}", len(text));
        assert!(rendered.cut, "{max}");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..2],
            ["• attachments: (60 items)", "• to: attacker@evil.example"]
        );
        // The count is honest: the 120 attachment lines, shown or counted.
        let details = lines
            .iter()
            .filter(|l| l.starts_with("• attachments."))
            .count();
        assert_eq!(details + missing(text), 120, "{max}: {text}");
        assert!(
            text.contains("• attachments.0.name: f1.pdf"),
            "{max}: {text}"
        );
    }
    let nested = json!({"a": {"x": 1, "y": [{"z": 1}]}, "b": [1, 2], "c": {"k": "v".repeat(3000)}});
    let text = params_plain(&nested, 200);
    assert!(
        text.starts_with("• a: (object, 2 keys)\n• b: [1, 2]\n• c: (object, 1 key)\n• a.x: 1\n"),
        "{text}"
    );
}

#[test]
fn what_fits_whole_is_shown_whole_and_not_called_cut() {
    let params = json!({"service": "api", "target": {"cluster": "main"}});
    let rendered = params_rendered(&params, 3000);
    assert_eq!(rendered.text, "• service: api\n• target.cluster: main");
    assert!(!rendered.cut);
    assert!(
        params_rendered(&json!({"a": "x".repeat(400)}), 3000).cut,
        "a capped value"
    );
    assert!(!params_rendered(&json!({}), 3000).cut);
}

#[test]
fn a_one_line_rendering_also_names_every_key_first() {
    let line = params_one_line(&email_behind_attachments(), 1000);
    assert!(
        line.starts_with("attachments: (60 items); to: attacker@evil.example; attachments.0"),
        "{line}"
    );
    assert!(line.ends_with(" more"), "{line}");
    assert!(len(&line) <= 1000);
}

#[test]
fn values_and_keys_that_would_read_alike_render_differently() {
    let pairs = [
        (json!({"dry_run": "true"}), json!({"dry_run": true})),
        (json!({"n": "5"}), json!({"n": 5})),
        (json!({"n": "null"}), json!({"n": null})),
        (json!({"l": "(empty list)"}), json!({"l": []})),
        (json!({"o": "(empty)"}), json!({"o": {}})),
        (json!({"o": "(object)"}), json!({"o": [{}]})),
        (json!({"s": "\"\""}), json!({"s": ""})),
        (json!({"l": ["a, b"]}), json!({"l": ["a", "b"]})),
        (json!({"l": "a, b"}), json!({"l": ["a", "b"]})),
        (json!({"l": "a"}), json!({"l": ["a"]})),
        (json!({"l": "[a, b]"}), json!({"l": ["a", "b"]})),
        (json!({"l": ["x (+3 more)"]}), json!({"l": ["x"]})),
        (json!({"a.b": 1}), json!({"a": {"b": 1}})),
        (json!({"a": {"0": {"b": 1}}}), json!({"a": [{"b": 1}]})),
        (
            json!({"to: boss@corp.com; x": 1}),
            json!({"to": "boss@corp.com; x: 1"}),
        ),
        (json!({"•x": 1}), json!({"x": 1})),
        (
            json!({"cmd": "echo\nrm -rf ~"}),
            json!({"cmd": "echo rm -rf ~"}),
        ),
        (json!({"cmd": "a\u{1b}[2Jb"}), json!({"cmd": "a [2Jb"})),
        (json!({"k\nx": 1}), json!({"k x": 1})),
        (json!({"b": "2; x: 1"}), json!({"b": 2, "x": 1})),
        (json!({"b; x": 1}), json!({"b": {"x": 1}})),
        (json!({"": "x"}), json!({"\"\"": "x"})),
        (
            json!({"a": "(1 item)", "b": "x".repeat(400)}),
            json!({"a": [[1]], "b": "x".repeat(400)}),
        ),
    ];
    for (a, b) in pairs {
        for max in [3000, 60] {
            let (shown_a, shown_b) = (params_plain(&a, max), params_plain(&b, max));
            assert_ne!(shown_a, shown_b, "{a} and {b} at {max}");
        }
        assert_ne!(
            params_one_line(&a, 200),
            params_one_line(&b, 200),
            "{a} and {b}"
        );
    }
    assert_eq!(
        params_plain(&json!({"dry_run": "true"}), 100),
        "• dry_run: \"true\""
    );
    assert_eq!(params_plain(&json!({"a.b": 1}), 100), "• \"a.b\": 1");
    assert_eq!(
        params_plain(&json!({"to: boss@corp.com; x": 1}), 100),
        "• \"to: boss@corp.com; x\": 1"
    );
    assert_eq!(
        params_plain(&json!({"l": ["a, b", "c"]}), 100),
        "• l: [\"a, b\", c]"
    );
    assert_eq!(
        params_plain(&json!({"d": "(nested too deep to show)"}), 100),
        "• d: \"(nested too deep to show)\""
    );
}

#[test]
fn ordinary_strings_and_keys_stay_unquoted() {
    let params = json!({
        "to": "bob@example.com", "subject": "Re: the plan, v2", "count": "five",
        "path": "/tmp/a.txt", "list": ["eu-1", "us-2"], "note": "(see the doc) ok",
        "version": "v1.2.3", "snake_case-key": "x",
    });
    let text = params_plain(&params, 3000);
    assert!(!text.contains('"'), "{text}");
}

#[test]
fn no_line_break_in_a_value_or_key_makes_a_line_of_its_own() {
    for c in [
        '\n', '\r', '\u{0B}', '\u{0C}', '\u{85}', '\u{2028}', '\u{2029}', '\u{1E}',
    ] {
        let params = json!({
            "env": format!("prod{c}• dry_run: true"),
            format!("k{c}• dry_run"): "true",
            "list": [format!("a{c}• dry_run: true")],
        });
        for max in [3000, 40] {
            let text = params_plain(&params, max);
            assert!(!text.chars().any(breaks_line_but_lf), "{c:?}: {text:?}");
            assert!(
                text.lines().all(|l| !l.starts_with("• dry_run")),
                "{c:?}: {text}"
            );
        }
        let line = params_one_line(&params, 500);
        assert!(
            !line.chars().any(crate::slack::text::breaks_line),
            "{c:?}: {line:?}"
        );
    }
}

/// A character JSON leaves as it is and a reader takes for a line break (U+2028 ends
/// a JavaScript `//` comment, U+0085 a line for Python's `splitlines`) is shown escaped
/// in a value and a key, not as a space: the code the approver reads is the code that
/// runs, and two values that differ by it never read alike.
#[test]
fn a_line_break_json_leaves_unescaped_shows_escaped_not_as_a_space() {
    for c in ['\u{2028}', '\u{2029}', '\u{85}', '\u{9B}', '\u{7F}'] {
        let code = format!("console.log('dry run') // then:{c}fs.rmSync('/srv')");
        let params = json!({ "code": code, format!("k{c}ey"): 1 });
        for text in [params_plain(&params, 3000), params_one_line(&params, 500)] {
            let escaped = c.escape_unicode().to_string();
            assert!(
                text.contains(&format!("// then:{escaped}fs.rmSync")),
                "{c:?}: {text}"
            );
            assert!(text.contains(&format!("k{escaped}ey")), "{c:?}: {text}");
        }
        let spaced = json!({ "code": "(x y)" });
        let broken = json!({ "code": format!("(x{c}y)") });
        assert_ne!(
            params_plain(&spaced, 3000),
            params_plain(&broken, 3000),
            "{c:?}"
        );
    }
}

fn breaks_line_but_lf(c: char) -> bool {
    c != '\n' && crate::slack::text::breaks_line(c)
}
