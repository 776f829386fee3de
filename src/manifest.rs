//! The Slack app manifest (`manifest/slack-app.yaml`), printed by `signoff manifest`
//! with the public URL filled in.

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
    if !(url.starts_with("https://") || url.starts_with("http://"))
        || url.contains(char::is_whitespace)
    {
        return Err(format!(
            "SIGNOFF_PUBLIC_URL must be an http(s) URL, not {url:?}"
        ));
    }
    Ok(TEMPLATE.replace(PLACEHOLDER, url.trim_end_matches('/')))
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
    fn a_missing_or_odd_url_is_a_clear_error() {
        assert!(render(None).unwrap_err().contains("SIGNOFF_PUBLIC_URL"));
        assert!(render(Some("  ")).is_err());
        assert!(
            render(Some("signoff.example.com"))
                .unwrap_err()
                .contains("http(s) URL")
        );
    }
}
