//! API tokens: random secrets handed out once by `signoff token create NAME`, stored
//! only as their SHA-256. The token's NAME is the requester identity.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Every token starts with this, so a leaked one is easy to recognise in logs and scanners.
pub const PREFIX: &str = "so_";

/// A new random token (256 bits).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", hex::encode(bytes))
}

/// What the store keeps: hex SHA-256 of the token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Token names appear in the audit log and in `requested_by`: keep them plain.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
        return Err(format!(
            "invalid token name {name:?}: use 1-64 letters, digits or - _ . @ :"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hashed() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 64);
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("billing-mcp").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
