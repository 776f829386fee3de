//! Policy files and CEL conditions come from operators, but a policy check runs on
//! whatever a caller sends: arbitrary files load or are refused with a message, and
//! arbitrary conditions compile or are refused, then classify any call without a panic
//! (an error never auto-approves). `SIGNOFF_FUZZ_CASES` or `SIGNOFF_FUZZ_SECONDS` run
//! longer (see `crate::fuzz`).

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::fuzz;

/// CEL-looking text: fragments of real conditions, operators and junk.
fn condition() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("params".to_owned()),
        Just("tool".to_owned()),
        Just("server".to_owned()),
        Just("annotations".to_owned()),
        "\\.[a-z]{1,6}",
        Just("size(".to_owned()),
        Just("has(".to_owned()),
        Just(")".to_owned()),
        Just(" && ".to_owned()),
        Just(" || ".to_owned()),
        Just(" == ".to_owned()),
        Just(" > ".to_owned()),
        Just("!".to_owned()),
        "[0-9]{1,25}",
        "'[^'\\\\]{0,6}'",
        Just(".startsWith('a')".to_owned()),
        Just("[0]".to_owned()),
        "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 1..10).prop_map(|parts| parts.concat())
}

/// Parameters of any shape a JSON body can carry.
fn params() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|map| json!(map)),
        ]
    });
    prop::collection::btree_map("[a-z]{1,6}", value, 0..5).prop_map(|map| json!(map))
}

#[test]
fn arbitrary_policy_files_load_or_are_refused_with_a_message() {
    fuzz::run(256, &"\\PC{0,300}", |text| {
        if let Err(error) = Policy::from_toml_str(&text) {
            prop_assert!(!error.to_string().is_empty());
        }
        Ok(())
    });
}

/// Under `[tiers]` where every tier auto-approves, only the fail-safe keeps a call
/// whose condition could not be evaluated from being waved through: it must need
/// approval, at no lower tier than the rule's (and at least medium).
#[test]
fn arbitrary_conditions_compile_or_are_refused_and_never_auto_approve_by_error() {
    let tier = prop_oneof![Just(Tier::Low), Just(Tier::Medium), Just(Tier::High)];
    let inputs = (condition(), params(), prop::option::of("[a-z]{1,6}"), tier);
    fuzz::run(256, &inputs, |(when, params, server, tier)| {
        let toml = format!(
            "[tiers]\nlow = \"auto_approve\"\nmedium = \"auto_approve\"\nhigh = \"auto_approve\"\n\n\
             [[rules]]\ntools = [\"*\"]\nwhen = {}\ntier = \"{tier}\"\n",
            toml::Value::String(when.clone())
        );
        let Ok(policy) = Policy::from_toml_str(&toml) else {
            return Ok(());
        };
        let call = Call {
            server: server.as_deref(),
            ..Call::new("tool", &params)
        };
        let class = policy.classify_call(&call, None);
        if class.notes.is_empty() {
            prop_assert_eq!(
                class.action,
                TierAction::AutoApprove,
                "{} on {}",
                when,
                params
            );
        } else {
            // The condition could not be evaluated: a person looks, at the rule's tier.
            prop_assert_eq!(
                class.action,
                TierAction::RequireApproval,
                "{} on {}",
                when,
                params
            );
            prop_assert!(
                class.tier >= tier.max(Tier::Medium),
                "{} on {}",
                when,
                params
            );
        }
        Ok(())
    });
}
