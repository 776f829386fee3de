//! The Slack app manifest (`manifest/slack-app.yaml`), printed by `signoff manifest`
//! with the public URL filled in, or by `signoff manifest --socket-mode` for Socket
//! Mode (no URLs at all).

/// The manifest as shipped, with `{{SIGNOFF_PUBLIC_URL}}` placeholders.
pub const TEMPLATE: &str = include_str!("../manifest/slack-app.yaml");

const PLACEHOLDER: &str = "{{SIGNOFF_PUBLIC_URL}}";

/// The manifest for a server Slack reaches at `public_url` (e.g. `https://signoff.example.com`).
pub fn render(public_url: Option<&str>) -> Result<String, String> {
    let url = public_url
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .ok_or(
            "set SIGNOFF_PUBLIC_URL to the https:// address where Slack can reach this server",
        )?;
    let url = crate::config::parse_public_url(url)?;
    Ok(TEMPLATE.replace(PLACEHOLDER, url.trim_end_matches('/')))
}

/// The manifest for Socket Mode: `socket_mode_enabled: true`, and no request URLs
/// (Slack sends interactions and `/approvals` over the socket signoff opens).
pub fn render_socket_mode() -> String {
    let mut out = String::with_capacity(TEMPLATE.len());
    for line in TEMPLATE.lines() {
        if line.contains(PLACEHOLDER) {
            continue;
        }
        if line.trim() == "socket_mode_enabled: false" {
            out.push_str(&line.replace("false", "true"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_url_fills_every_endpoint() {
        let manifest = render(Some("https://signoff.example.com/")).unwrap();
        assert!(!manifest.contains("{{"), "{manifest}");
        assert!(manifest.contains("request_url: https://signoff.example.com/slack/interactions"));
        assert!(manifest.contains("url: https://signoff.example.com/slack/commands"));
    }

    #[test]
    fn the_manifest_asks_for_exactly_the_scopes_signoff_uses() {
        for scope in [
            "chat:write",
            "im:write",
            "commands",
            "users:read",
            "usergroups:read",
            "channels:history",
            "groups:history",
            "im:history",
        ] {
            assert!(
                TEMPLATE.contains(&format!("- {scope}\n")),
                "missing {scope}"
            );
        }
        assert!(TEMPLATE.contains("command: /approvals"));
        assert!(TEMPLATE.contains("is_enabled: true"));
    }

    #[test]
    fn the_socket_mode_manifest_turns_it_on_and_names_no_url() {
        let manifest = render_socket_mode();
        assert!(
            manifest.contains("  socket_mode_enabled: true\n"),
            "{manifest}"
        );
        assert!(!manifest.contains("socket_mode_enabled: false"));
        assert!(!manifest.contains("url:"), "{manifest}");
        assert!(!manifest.contains("{{"), "{manifest}");
        // Everything else stays: the command, interactivity, the scopes.
        assert!(manifest.contains("command: /approvals"));
        assert!(manifest.contains("is_enabled: true"));
        assert!(manifest.contains("- usergroups:read\n"));
        assert_eq!(
            manifest.lines().count(),
            TEMPLATE.lines().count() - 2,
            "only the two URL lines go"
        );
    }

    #[test]
    fn a_missing_or_odd_url_is_a_clear_error() {
        assert!(render(None).unwrap_err().contains("SIGNOFF_PUBLIC_URL"));
        assert!(render(Some("  ")).is_err());
        for odd in [
            "signoff.example.com",
            "https://",
            "https://sign off.example.com",
        ] {
            assert!(
                render(Some(odd)).unwrap_err().contains("http(s) URL"),
                "{odd}"
            );
        }
    }
}
