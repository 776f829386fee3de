use super::*;
use crate::slack::testutil::approval;
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
         • records.0.id: 1\n• records.1.id: 2\n• regions: eu-1, us-2\n• replicas: 3\n\
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
    assert_eq!(params_plain(&json!(["a", "b"]), 3000), "• a, b");
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
fn a_line_too_long_for_the_room_is_cut_and_counted() {
    let text = params_plain(&json!({"a": "x".repeat(290), "b": 1}), 100);
    assert!(len(&text) <= 100, "{text}");
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
    assert!(text.contains("more)"), "{text}");
}

#[test]
fn a_long_list_of_values_with_reordering_marks_is_cut_between_whole_escapes() {
    for pad in 0..12 {
        let mut items = vec![json!("x".repeat(pad))];
        items.extend((0..200).map(|_| json!("a\u{202E}b")));
        let shown = scalar_or_list(&Value::Array(items));
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
