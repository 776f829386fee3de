//! The names a caller gives a request, checked before the policy sees them: tool names
//! follow the MCP specification's rule, so that a rule such as `delete_*` cannot be
//! dodged with another case, invisible characters or look-alike letters from other
//! scripts; server names and idempotency keys are kept to plain printable text.

/// Longest tool name (the MCP specification's limit).
pub const MAX_TOOL_NAME: usize = 128;
/// Longest MCP server name.
pub const MAX_SERVER_NAME: usize = 128;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// The rule a tool name must follow, as the refusal states it.
pub const TOOL_NAME_RULE: &str =
    "1-128 characters of A-Z a-z 0-9 _ - . / (the MCP rule for tool names)";
/// The rule a server name must follow.
pub const SERVER_NAME_RULE: &str = "1-128 characters of A-Z a-z 0-9 _ - . :";
/// The rule an idempotency key must follow.
pub const IDEMPOTENCY_KEY_RULE: &str = "1-200 printable ASCII characters (no control characters)";

/// Checks a tool name: `Err` is the sentence the caller reads.
pub fn check_tool_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    if (1..=MAX_TOOL_NAME).contains(&name.len()) && name.chars().all(ok) {
        Ok(())
    } else {
        Err(format!(
            "tool_name {} is not a valid tool name: use {TOOL_NAME_RULE}",
            shown(name)
        ))
    }
}

/// Checks an MCP server name (the proxy's `--name`).
pub fn check_server_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    if (1..=MAX_SERVER_NAME).contains(&name.len()) && name.chars().all(ok) {
        Ok(())
    } else {
        Err(format!(
            "server {} is not a valid server name: use {SERVER_NAME_RULE}",
            shown(name)
        ))
    }
}

/// Checks an idempotency key.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len())
        && key.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(format!(
            "idempotency_key {} is not valid: use {IDEMPOTENCY_KEY_RULE}",
            shown(key)
        ))
    }
}

/// The refused text as the caller sees it in the error: quoted with escapes (so an
/// invisible character shows), cut to a readable length.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(60).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!("{}{more}", serde_json::Value::String(cut))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tool_names_follow_the_mcp_rule() {
        for good in [
            "delete_users",
            "github/create-issue",
            "a",
            "v1.2",
            &"x".repeat(128),
        ] {
            assert!(check_tool_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "delete users",
            "delete_user\u{200b}s",
            "dеlete_users", // Cyrillic е
            "delete_users\n",
            "tool\u{1b}[31m",
            "ｄelete",
            &"x".repeat(129),
        ] {
            let why = check_tool_name(bad).unwrap_err();
            assert!(why.contains("MCP rule"), "{why}");
        }
        let why = check_tool_name("a\u{200b}b").unwrap_err();
        assert!(why.contains("\\u200b") || why.contains('\u{200b}'), "{why}");
    }

    #[test]
    fn server_names_and_keys_are_plain_text() {
        assert!(check_server_name("github.example.com:443").is_ok());
        assert!(check_server_name("git hub").is_err());
        assert!(
            check_server_name("a/b").is_err(),
            "a server name holds no slash"
        );
        assert!(check_idempotency_key("step-1:retry#2").is_ok());
        assert!(check_idempotency_key("step 1").is_ok());
        assert!(check_idempotency_key("tab\there").is_err());
        assert!(check_idempotency_key("ünïcode").is_err());
        assert!(check_idempotency_key(&"k".repeat(201)).is_err());
    }

    proptest! {
        /// Any string is accepted or refused, never both ways: accepted names are
        /// exactly those of the MCP alphabet and length.
        #[test]
        fn tool_names_are_accepted_exactly_when_they_follow_the_rule(name in "\\PC{0,140}") {
            let expected = (1..=128).contains(&name.len())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
            prop_assert_eq!(check_tool_name(&name).is_ok(), expected);
        }

        #[test]
        fn idempotency_keys_are_accepted_exactly_when_printable(key in "\\PC{0,210}") {
            let expected = (1..=200).contains(&key.len()) && key.bytes().all(|b| (0x20..0x7f).contains(&b));
            prop_assert_eq!(check_idempotency_key(&key).is_ok(), expected);
        }
    }
}
