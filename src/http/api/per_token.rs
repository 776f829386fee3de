//! How many lasting requests (event streams, long-polls) each token has under way on
//! this server. Each holds one of the server's connections (`Limits::max_connections`)
//! as long as it lasts, so each kind is capped per token: one token cannot take every
//! connection from the others and from Slack's callbacks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The requests of one kind under way on this server, per token name.
#[derive(Debug, Default)]
pub struct PerToken(Mutex<HashMap<String, usize>>);

/// One request of a token, counted until dropped.
pub(super) struct Counted {
    counts: Arc<PerToken>,
    name: String,
}

impl PerToken {
    /// Counts one more request of `name`, unless it has `max` under way already: then
    /// `Err` with how many it has.
    pub(super) fn open(self: &Arc<Self>, name: &str, max: usize) -> Result<Counted, usize> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let open = counts.entry(name.to_owned()).or_default();
        if *open >= max {
            return Err(*open);
        }
        *open += 1;
        Ok(Counted {
            counts: self.clone(),
            name: name.to_owned(),
        })
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = counts.get_mut(&self.name) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_up_to_its_max_and_one_more_once_one_ends() {
        let counts = Arc::new(PerToken::default());
        let first = counts.open("a", 2).unwrap();
        let _second = counts.open("a", 2).unwrap();
        assert_eq!(counts.open("a", 2).err(), Some(2));
        let _other = counts.open("b", 2).expect("another token counts apart");
        drop(first);
        assert!(counts.open("a", 2).is_ok());
    }
}
