//! Slack's ids as types: a user (`U…`, `W…`), a channel (`C…`, `G…`, `D…`), a user
//! group (`S…`), and an [`Approver`] (a user or a group). Each is checked when it is
//! made and reads and writes as Slack's own text, so stored JSON and the API keep plain
//! strings.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The user a Slack mention names, as programs driven from Slack often write one:
/// `<@U0BOB>`, `<@U0BOB|bob>` or `@U0BOB` name `U0BOB` (in whatever letter case it
/// was written: the requester is compared regardless of case); other text names
/// nobody.
pub fn mentioned_user(text: &str) -> Option<&str> {
    let id = match text.strip_prefix("<@") {
        Some(rest) => {
            let inner = rest.strip_suffix('>')?;
            inner.split_once('|').map_or(inner, |(id, _)| id)
        }
        None => text.strip_prefix('@')?,
    };
    is_slack_id(&id.to_ascii_uppercase(), &['U', 'W']).then_some(id)
}

/// The shape of every Slack id: a prefix letter, then upper-case letters and digits.
fn is_slack_id(id: &str, prefixes: &[char]) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(first) if prefixes.contains(&first))
        && (2..=32).contains(&id.len())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

macro_rules! slack_id {
    ($(#[$doc:meta])* $name:ident, $prefixes:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The id, if `text` has its shape; else what is wrong, in words.
            pub fn parse(text: &str) -> Result<Self, String> {
                if is_slack_id(text, &$prefixes) {
                    Ok(Self(text.to_owned()))
                } else {
                    Err(format!(
                        "{text:?} is not a Slack {} id ({} followed by upper-case letters and digits)",
                        $what,
                        $prefixes.iter().map(|p| format!("{p}…")).collect::<Vec<_>>().join(", ")
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// Reads as the text it is (`Option<Id>::as_deref()` gives an `Option<&str>`).
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> Result<Self, String> {
                Self::parse(&text)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        /// For the unit tests' literals: a bad one fails the test.
        #[cfg(test)]
        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self::parse(text).expect("a valid id in a test")
            }
        }
    };
}

slack_id!(
    /// A person: `U…`, or `W…` on Enterprise Grid.
    UserId,
    ['U', 'W'],
    "user"
);
slack_id!(
    /// A channel: public `C…`, private `G…`, direct message `D…`.
    ChannelId,
    ['C', 'G', 'D'],
    "channel"
);
slack_id!(
    /// A user group (`S…`), such as an on-call rotation.
    GroupId,
    ['S'],
    "user group"
);

/// Who a rule lets decide: a person, or every member of a user group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Approver {
    User(UserId),
    Group(GroupId),
}

impl Approver {
    pub fn parse(text: &str) -> Result<Self, String> {
        UserId::parse(text)
            .map(Approver::User)
            .or_else(|_| GroupId::parse(text).map(Approver::Group))
            .map_err(|_| {
                format!(
                    "{text:?} is not a Slack user or user-group id (U…, W… or S… followed by upper-case letters and digits)"
                )
            })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Approver::User(user) => user.as_str(),
            Approver::Group(group) => group.as_str(),
        }
    }
}

impl fmt::Display for Approver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Approver {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl PartialEq<&str> for Approver {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// For the unit tests' literals: a bad one fails the test.
#[cfg(test)]
impl From<&str> for Approver {
    fn from(text: &str) -> Self {
        Self::parse(text).expect("a valid approver in a test")
    }
}

impl From<Approver> for String {
    fn from(approver: Approver) -> String {
        approver.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ids_take_slack_shapes_only() {
        assert!(UserId::parse("U0ALICE").is_ok() && UserId::parse("W2AB").is_ok());
        assert!(ChannelId::parse("C0APPROVALS").is_ok() && ChannelId::parse("D9").is_ok());
        for bad in [
            "",
            "U",
            "u0ALICE",
            "U0alice",
            "#approvals",
            "C0 X",
            "U0ALICE\n",
        ] {
            assert!(
                UserId::parse(bad).is_err() && ChannelId::parse(bad).is_err(),
                "{bad:?}"
            );
        }
        assert!(ChannelId::parse("U0ALICE").is_err());
        assert_eq!(
            Approver::parse("S0ONCALL"),
            Ok(Approver::Group(GroupId::parse("S0ONCALL").unwrap()))
        );
        assert!(
            Approver::parse("C0X")
                .unwrap_err()
                .contains("user or user-group")
        );
    }

    #[test]
    fn a_mention_names_its_user_and_other_text_nobody() {
        for (text, user) in [
            ("<@U0BOB>", Some("U0BOB")),
            ("<@U0BOB|bob>", Some("U0BOB")),
            ("@W0ALICE", Some("W0ALICE")),
            ("@u0bob", Some("u0bob")),
            ("U0BOB", None),
            ("<@U0BOB", None),
            ("<@C0CHAN>", None),
            ("<@S0SRE|sre>", None),
            ("@bob", None),
            ("<@>", None),
        ] {
            assert_eq!(mentioned_user(text), user, "{text}");
        }
    }

    #[test]
    fn ids_read_and_write_as_plain_strings() {
        let approvers: Vec<Approver> = serde_json::from_str(r#"["U0ALICE", "S0SRE"]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&approvers).unwrap(),
            r#"["U0ALICE","S0SRE"]"#
        );
        assert!(serde_json::from_str::<ChannelId>(r##""#channel""##).is_err());
    }

    proptest! {
        #[test]
        fn whatever_parses_writes_back_the_same(text in "[UWCGDS][A-Z0-9]{0,12}|\\PC{0,12}") {
            if let Ok(approver) = Approver::parse(&text) {
                prop_assert_eq!(approver.as_str(), text.as_str());
            }
            if let Ok(channel) = ChannelId::parse(&text) {
                prop_assert_eq!(String::from(channel), text);
            }
        }
    }
}
