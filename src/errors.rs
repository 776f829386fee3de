//! Error text that keeps the cause: an error's message followed by each of its
//! `source()`s that adds something ("client error (Connect)" alone does not say that
//! a certificate or the connection was refused).

use std::error::Error;

/// `error`'s message and, after `: `, every cause in its `source()` chain whose text
/// the message so far does not already hold.
pub fn with_causes(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn every_cause_is_named_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            with_causes(&Outer(refused)),
            "client error (Connect): refused"
        );
        let plain = std::io::Error::other("no cause");
        assert_eq!(with_causes(&plain), "no cause");
    }
}
