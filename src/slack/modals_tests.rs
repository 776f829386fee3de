use super::*;
use crate::slack::testutil::{all_text, approval, check_limits, find_block};

fn clicked() -> MessageKey {
    MessageKey {
        channel: "C0APPROVALS".into(),
        ts: "1700000000.000100".into(),
    }
}

/// What a modal of `a` opened from [`clicked`] carries back.
fn opened_from(a: &Approval) -> ModalSource {
    ModalSource {
        approval_id: a.id,
        clicked: clicked(),
        shown: Some(crate::approval::parameters_fingerprint(&a.parameters)),
        named: false,
    }
}

#[test]
fn the_deny_modal_asks_for_an_optional_reason() {
    let a = approval();
    let view = deny_modal(&a, &clicked(), false);
    check_limits(&view);
    assert_eq!(view["callback_id"], "deny_reason");
    assert_eq!(
        modal_source(view["private_metadata"].as_str().unwrap()),
        Some(opened_from(&a))
    );
    assert_eq!(view["submit"]["text"], "Deny");
    // Opened from a message its own metadata tied to the approval: the form says so.
    let named = deny_modal(&a, &clicked(), true);
    assert_eq!(
        modal_source(named["private_metadata"].as_str().unwrap()),
        Some(ModalSource {
            named: true,
            ..opened_from(&a)
        })
    );
    assert_eq!(view["close"]["text"], "Cancel");
    let input = find_block(&view, "input").unwrap();
    assert_eq!(input["block_id"], "reason");
    assert_eq!(input["optional"], true);
    assert_eq!(input["element"]["action_id"], "reason");
    assert_eq!(input["element"]["multiline"], true);
}

#[test]
fn the_edit_modal_holds_pretty_json() {
    let a = approval();
    let view = edit_modal(&a, &clicked(), false);
    check_limits(&view);
    assert_eq!(view["callback_id"], "edit_approve");
    assert_eq!(
        modal_source(view["private_metadata"].as_str().unwrap()),
        Some(opened_from(&a))
    );
    assert_eq!(view["submit"]["text"], "Approve edited");
    let input = find_block(&view, "input").unwrap();
    assert_eq!(input["block_id"], "parameters");
    assert_eq!(input["element"]["action_id"], "parameters");
    let initial = input["element"]["initial_value"].as_str().unwrap();
    assert!(
        initial.contains("\n  \"environment\": \"prod\""),
        "{initial}"
    );
    assert_eq!(parse_edited_parameters(initial), Ok(a.parameters.clone()));
}

#[test]
fn the_edit_modal_falls_back_to_compact_json_then_to_a_note() {
    let mut a = approval();
    // Pretty printing adds indentation and line breaks: about 2900 chars compact,
    // well over 3000 pretty.
    let params: serde_json::Map<String, Value> =
        (0..290).map(|i| (format!("k{i:03}"), json!(1))).collect();
    a.parameters = Value::Object(params);
    let compact = serde_json::to_string(&a.parameters).unwrap();
    assert!(
        compact.len() <= 3000 && serde_json::to_string_pretty(&a.parameters).unwrap().len() > 3000
    );
    let view = edit_modal(&a, &clicked(), false);
    check_limits(&view);
    assert_eq!(
        find_block(&view, "input").unwrap()["element"]["initial_value"],
        compact
    );

    a.parameters = json!({"big": "x".repeat(3000)});
    let view = edit_modal(&a, &clicked(), false);
    check_limits(&view);
    assert!(find_block(&view, "input").is_none());
    assert!(view.get("submit").is_none());
    assert_eq!(view["close"]["text"], "Close");
    assert!(all_text(&view).contains("too large to edit in Slack"));
}

#[test]
fn edited_parameters_must_be_a_json_object() {
    assert_eq!(
        parse_edited_parameters(" {\"a\": 1} \n"),
        Ok(json!({"a": 1}))
    );
    let err = parse_edited_parameters("{\"a\": ").unwrap_err();
    assert!(err.starts_with("Not valid JSON: "), "{err}");
    assert_eq!(
        parse_edited_parameters("[1]"),
        Err("Parameters must be a JSON object".into())
    );
    assert_eq!(
        parse_edited_parameters("null"),
        Err("Parameters must be a JSON object".into())
    );
    assert!(
        parse_edited_parameters("")
            .unwrap_err()
            .starts_with("Not valid JSON")
    );
    let curly = parse_edited_parameters("{“a”: 1}").unwrap_err();
    assert!(curly.contains("curly quotes"), "{curly}");
    let twice = parse_edited_parameters(r#"{"to": "a", "to": "b"}"#).unwrap_err();
    assert!(twice.contains("appears twice"), "{twice}");
    let rounded = parse_edited_parameters(r#"{"id": 123456789012345678901234567890}"#).unwrap_err();
    assert!(rounded.contains("cannot be kept exactly"), "{rounded}");
}

#[test]
fn edited_parameters_may_nest_as_deep_as_a_requests_and_no_deeper() {
    let nested = |levels: usize| format!("{}1{}", r#"{"a": "#.repeat(levels), "}".repeat(levels));
    assert!(parse_edited_parameters(&nested(100)).is_ok());
    for levels in [101, 127, 128] {
        let why = parse_edited_parameters(&nested(levels)).unwrap_err();
        assert_eq!(
            why,
            "the parameters are nested deeper than 100 levels of arrays and objects, the most \
             signoff keeps",
            "{levels} levels"
        );
    }
}

#[test]
fn the_edit_modal_shows_numbers_exactly_and_reads_them_back_the_same() {
    let mut a = approval();
    a.parameters = json!({"account": 9_007_199_254_740_993_u64, "rate": 0.1, "huge": 1e300});
    let view = edit_modal(&a, &clicked(), false);
    let shown = view["blocks"][1]["element"]["initial_value"]
        .as_str()
        .unwrap();
    assert!(
        shown.contains("9007199254740993") && shown.contains("1e+300"),
        "{shown}"
    );
    assert_eq!(parse_edited_parameters(shown), Ok(a.parameters.clone()));
}

#[test]
fn modal_errors_name_the_input_block() {
    assert_eq!(
        modal_errors("parameters", "Parameters must be a JSON object"),
        json!({"response_action": "errors", "errors": {"parameters": "Parameters must be a JSON object"}})
    );
}

#[test]
fn a_form_error_names_people_as_plain_text_shows_them() {
    let errors = modal_errors(
        "reason",
        "Only the approvers of this request can decide it: <@U0ALICE>, <!subteam^S0SRE>.",
    );
    assert_eq!(
        errors["errors"]["reason"],
        "Only the approvers of this request can decide it: @U0ALICE, @S0SRE."
    );
    // Anything else that looks like markup is left as it is.
    let kept = "a < b, <@not an id>, <!channel>, <@U1";
    assert_eq!(modal_errors("reason", kept)["errors"]["reason"], kept);
}

/// The text of a modal's sections after its intro, joined.
fn shown_after_intro(view: &Value) -> String {
    let blocks = view["blocks"].as_array().unwrap();
    blocks[1..]
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect()
}

#[test]
fn show_all_opens_every_parameter_as_json_read_only() {
    let mut a = approval();
    a.parameters = crate::slack::testutil::email_behind_attachments();
    a.parameters["note"] = json!("x\u{202E}y\u{2028}• dry_run: true");
    let view = parameters_modal(&a);
    check_limits(&view);
    assert_eq!(view["callback_id"], PARAMETERS_CALLBACK);
    assert!(view.get("submit").is_none(), "read only");
    assert!(
        view["blocks"].as_array().unwrap().len() > 2,
        "more than one section"
    );
    let json = shown_after_intro(&view);
    assert!(!json.chars().any(text::hidden), "{json}");
    assert!(
        json.contains(r#""note": "x\u202ey\u2028• dry_run: true""#),
        "{json}"
    );
    let read_back: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(read_back, a.parameters, "all of it, exactly");
    // Sections end at line ends.
    let blocks = view["blocks"].as_array().unwrap();
    for block in &blocks[1..blocks.len() - 1] {
        assert!(block["text"]["text"].as_str().unwrap().ends_with('\n'));
    }
}

#[test]
fn parameters_past_what_a_modal_holds_say_how_much_is_not_shown_and_where_it_is() {
    let mut a = approval();
    a.parameters = json!({"big": "ü<&>".repeat(100_000), "lines": (0..20_000).collect::<Vec<_>>()});
    let view = parameters_modal(&a);
    check_limits(&view);
    let blocks = view["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 100);
    let note = blocks[99]["text"]["text"].as_str().unwrap();
    let json = serde_json::to_string_pretty(&a.parameters).unwrap();
    let shown: String = blocks[1..99]
        .iter()
        .map(|b| b["text"]["text"].as_str().unwrap())
        .collect();
    let rest = json
        .strip_prefix(shown.as_str())
        .expect("the JSON from its start");
    let counted = format!(
        "Not shown: the last {} characters ({} lines) of the JSON above",
        rest.chars().count(),
        rest.lines().count()
    );
    assert!(note.starts_with(&counted), "{note}");
    assert!(
        note.contains("signoff list --status pending --json"),
        "{note}"
    );
    assert!(
        note.contains(&format!("GET /v1/approvals/{}", a.id)),
        "{note}"
    );
}
