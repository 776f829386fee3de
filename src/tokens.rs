//! API tokens: random secrets handed out once by `signoff token create NAME`, stored
//! only as their SHA-256. The token's NAME is the requester identity.
//!
//! Revocation is immediate: [`Cache`] keeps a verified token for at most [`CACHE_TTL`]
//! counted from *before* the lookup that verified it, and revoking or rotating a token
//! (`Store::token_revoke`/`token_rotate`) returns only [`CACHE_TTL`] after its commit.
//! So once revoke returns, every entry any replica made from before the revocation has
//! run out, and the next request on every replica looks the token up again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The longest a verified token is trusted without a lookup; revoke and rotate wait it
/// out before they return.
pub const CACHE_TTL: Duration = Duration::from_millis(500);

/// Entries at most; past it the cache starts over (a flood of distinct tokens cannot
/// grow memory).
const CACHE_MAX: usize = 10_000;

/// Verified token hashes → their name, each until its deadline. Unknown tokens are
/// never cached (each such request looks up again).
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, (String, Instant)>>,
}

impl Cache {
    /// The name of a token verified less than [`CACHE_TTL`] ago.
    pub fn get(&self, hash: &str, now: Instant) -> Option<String> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(hash)
            .filter(|(_, until)| now < *until)
            .map(|(name, _)| name.clone())
    }

    /// Remembers a token a lookup that started at `asked` verified.
    pub fn insert(&self, hash: &str, name: String, asked: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_MAX {
            entries.clear();
        }
        entries.insert(hash.to_owned(), (name, asked + CACHE_TTL));
    }
}

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
    fn a_cached_token_runs_out_ttl_after_the_lookup_started() {
        let cache = Cache::default();
        let asked = Instant::now();
        cache.insert("h", "agent".into(), asked);
        assert_eq!(cache.get("h", asked), Some("agent".into()));
        assert_eq!(
            cache.get("h", asked + CACHE_TTL - Duration::from_millis(1)),
            Some("agent".into())
        );
        assert_eq!(cache.get("h", asked + CACHE_TTL), None);
        assert_eq!(cache.get("other", asked), None);
    }

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
