//! Signed checkpoints of the audit chain. The hash chain alone shows a changed row,
//! but whoever can write the database can recompute every hash after it, or cut the
//! tail. A checkpoint is the chain's `(seq, hash)` signed with the Ed25519 key file
//! (which the database does not hold): a rewritten chain no longer matches the
//! checkpoints before the rewrite, and a cut tail leaves checkpoints pointing past the
//! end. Events after the newest checkpoint are only as safe as the chain itself.
//!
//! One is appended every [`EVERY_EVENTS`] events and at least every [`INTERVAL`] while
//! events arrive. Checkpoints are numbered from 1 without gaps, and the number is
//! signed too, so removing one shows, unless every one after it goes too: the newest
//! checkpoint's number and hash are logged as it is signed and printed by `audit
//! verify`, so that a later verify can be told to find it ([`LogVerifier::expect`]).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Break, Entry, Verifier, format_time};
use crate::signing::{PublicKey, Signer};

/// A checkpoint is due once this many events are past the newest one…
pub const EVERY_EVENTS: i64 = 1000;
/// …or once the newest one is this old and events arrived since.
pub const INTERVAL: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// An unsigned tail longer than this (from the newest checkpoint's time to its newest
/// event's) is more than a running server leaves: `audit verify` warns of it.
pub const UNSIGNED_WARNING: chrono::TimeDelta = chrono::TimeDelta::seconds(2 * 60);

/// One signed checkpoint; also a line of `signoff audit export` (the line after the
/// event it covers), told from events by its `checkpoint` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Its number: 1, 2, 3…
    #[serde(rename = "checkpoint")]
    pub n: i64,
    /// The last event it covers (events 1 to `seq`).
    pub seq: i64,
    /// That event's chain hash.
    pub hash: String,
    #[serde(serialize_with = "super::serialize_time")]
    pub at: DateTime<Utc>,
    /// base64 Ed25519 signature of [`Checkpoint::signed_text`].
    pub signature: String,
}

impl Checkpoint {
    /// What is signed: `signoff-audit-checkpoint.v1.{n}.{seq}.{hash}.{at}`, the time
    /// as RFC 3339 with microseconds.
    pub fn signed_text(n: i64, seq: i64, hash: &str, at: &DateTime<Utc>) -> String {
        format!(
            "signoff-audit-checkpoint.v1.{n}.{seq}.{hash}.{}",
            format_time(at)
        )
    }

    pub fn sign(signer: &Signer, n: i64, seq: i64, hash: &str, at: DateTime<Utc>) -> Self {
        let signature = signer.sign(Self::signed_text(n, seq, hash, &at).as_bytes());
        Self {
            n,
            seq,
            hash: hash.to_owned(),
            at,
            signature,
        }
    }

    /// Which of `keys` signed it (the index of the newest that did), if any.
    pub fn signed_by(&self, keys: &[PublicKey]) -> Option<usize> {
        let text = Self::signed_text(self.n, self.seq, &self.hash, &self.at);
        keys.iter()
            .rposition(|key| key.verify(text.as_bytes(), &self.signature))
    }
}

/// Whether a checkpoint is due now that the chain ends at `head_seq`, its newest event
/// at `newest_at`, given the newest checkpoint's `(seq, at)`.
pub fn due(newest: Option<(i64, DateTime<Utc>)>, head_seq: i64, newest_at: DateTime<Utc>) -> bool {
    match newest {
        None => head_seq > 0,
        Some((seq, at)) => {
            head_seq > seq && (head_seq - seq >= EVERY_EVENTS || newest_at - at >= INTERVAL)
        }
    }
}

/// What is wrong with the checkpoints. `Display` is what `audit verify` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flaw {
    /// The chain itself is broken.
    Chain(Break),
    /// The signature does not verify with the public key(s).
    Unsigned { n: i64 },
    /// Checkpoint `n` is signed with key `key` (1-based, oldest first), older than
    /// the key that signed checkpoint `newer` before it: a key rotated out (because it
    /// leaked, say) signing again.
    RetiredKey { n: i64, key: usize, newer: i64 },
    /// With keys of a rotation given, the newest checkpoint, `n`, is not signed with
    /// the newest: a log rewritten and signed again with a key rotated out ends so.
    NotNewestKey { n: i64, keys: usize },
    /// Checkpoint numbers skip (one was removed) or events go backwards.
    Misnumbered { n: i64, expected: i64 },
    /// The chain no longer has the hash checkpoint `n` signed at event `seq`.
    Rewritten { n: i64, seq: i64 },
    /// Checkpoint `n`, known from before (`audit verify --checkpoint`), is gone or
    /// holds another hash: checkpoints were removed, and the chain after the newest
    /// one left may have been rewritten.
    Lost { n: i64 },
    /// Checkpoint `n` covers events past the end of the log.
    Truncated {
        after: Option<(i64, i64)>,
        n: i64,
        seq: i64,
        last_seq: i64,
    },
    /// Event `seq` lies outside the chain's numbers, 1 to `head`: a row put beside
    /// the log, where walking the chain never reads it.
    Outside { seq: i64, head: i64 },
}

/// The audit table's numbers as one statement read them: the chain's head and the
/// lowest and highest `seq` of any row (`None` when there are none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub head: i64,
    pub lowest: Option<i64>,
    pub highest: Option<i64>,
}

impl Bounds {
    /// The first row outside 1..=head, if any: the chain's walk from 1 to the head
    /// checks every row only when there is none.
    pub fn outside(&self) -> Option<Flaw> {
        let head = self.head;
        let below = self.lowest.filter(|seq| *seq < 1);
        let above = self.highest.filter(|seq| *seq > head);
        below.or(above).map(|seq| Flaw::Outside { seq, head })
    }
}

impl From<Break> for Flaw {
    fn from(broken: Break) -> Self {
        Flaw::Chain(broken)
    }
}

impl fmt::Display for Flaw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Flaw::Chain(broken) => broken.fmt(f),
            Flaw::Unsigned { n } => write!(
                f,
                "audit checkpoint {n}: its signature does not verify with the public key (forged, or signed by another key)"
            ),
            Flaw::RetiredKey { n, key, newer } => write!(
                f,
                "audit checkpoint {n} is signed with key {key} of the --public-key list, older \
                 than the key that signed checkpoint {newer}: keys are given oldest first, and \
                 one rotated out does not sign again (a leaked key re-signing a rewritten log)"
            ),
            Flaw::NotNewestKey { n, keys } => write!(
                f,
                "the newest audit checkpoint, {n}, is not signed with the newest of the {keys} \
                 keys given (the last --public-key): keys are given oldest first, and after a \
                 rotation the log ends in checkpoints the new key signed (a log rewritten and \
                 re-signed with a key rotated out does not)"
            ),
            Flaw::Misnumbered { n, expected } => write!(
                f,
                "audit checkpoint {expected} is missing or out of order (found checkpoint {n})"
            ),
            Flaw::Rewritten { n, seq } => write!(
                f,
                "audit chain rewritten: event {seq} no longer has the hash signed checkpoint {n} recorded"
            ),
            Flaw::Lost { n } => write!(
                f,
                "audit checkpoint {n}, known from before, is gone or holds another hash: \
                 checkpoints were removed, and the events after the newest one left may be \
                 rewritten"
            ),
            Flaw::Truncated {
                after,
                n,
                seq,
                last_seq,
            } => {
                match after {
                    Some((m, m_seq)) => {
                        write!(f, "events missing after checkpoint {m} (event {m_seq}): ")?
                    }
                    None => write!(f, "events missing from the start: ")?,
                }
                write!(
                    f,
                    "checkpoint {n} signed event {seq}, but the log ends at event {last_seq}"
                )
            }
            Flaw::Outside { seq, head } => write!(
                f,
                "audit event {seq} lies outside the chain, whose events are numbered 1 to {head}: \
                 {}",
                if seq > head {
                    "a row put beside the log, or the chain's head moved back over events still there"
                } else {
                    "a row put beside the log, not appended to it"
                }
            ),
        }
    }
}

/// A verified log: how many events, and how many of them the newest checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub events: i64,
    pub checkpoints: i64,
    /// The newest checkpoint's event (0 without checkpoints).
    pub covered: i64,
    /// The newest checkpoint's number and hash, to keep outside the database and
    /// name in a later verify (`--checkpoint N:HASH`).
    pub newest: Option<(i64, String)>,
    /// How long after the newest checkpoint was signed (without one, after the first
    /// event) the newest event it does not cover came; `None` when it covers them all.
    pub unsigned_for: Option<chrono::TimeDelta>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit chain ok: {} events", self.events)?;
        if self.checkpoints == 0 {
            write!(f, "; no signed checkpoint yet")?;
            return self.warn_of_the_tail(f);
        }
        write!(
            f,
            "; {} signed checkpoints, the newest covers {} of them",
            self.checkpoints, self.covered
        )?;
        let uncovered = self.events - self.covered;
        if uncovered > 0 {
            write!(f, " ({uncovered} newer events are not signed yet)")?;
        }
        if let Some((n, hash)) = &self.newest {
            write!(
                f,
                "\nnewest checkpoint {n}:{hash} (keep it: a later `signoff audit verify \
                 --checkpoint {n}:{hash}` fails if it is removed)"
            )?;
        }
        self.warn_of_the_tail(f)
    }
}

impl Report {
    /// A line when the unsigned events run on longer after the newest checkpoint than a
    /// running server lets them ([`UNSIGNED_WARNING`]): checkpoints removed leave such a
    /// tail, as does a database written while no server ran.
    fn warn_of_the_tail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(span) = self.unsigned_for.filter(|span| *span > UNSIGNED_WARNING) else {
            return Ok(());
        };
        let since = match self.newest {
            Some(_) => "the newest checkpoint was signed",
            None => "the first event, and no checkpoint was ever signed",
        };
        let span = humantime::format_duration(span.to_std().unwrap_or_default());
        write!(
            f,
            "\nwarning: the newest unsigned event came {span} after {since}; a running \
             `signoff serve` signs at least every minute while events arrive, so unless \
             these were written while no server ran (`signoff decide`, `signoff token`), \
             newer checkpoints may have been removed: verify against one kept from before \
             (--checkpoint N:HASH)"
        )
    }
}

/// Checks the chain event by event (as [`Verifier`]) against signed checkpoints.
#[derive(Debug)]
pub struct LogVerifier {
    chain: Verifier,
    checkpoints: Vec<Checkpoint>,
    /// The next checkpoint to meet.
    next: usize,
    /// The first event's time, and the newest time among the events past the newest
    /// checkpoint ([`Report::unsigned_for`]).
    first_at: Option<DateTime<Utc>>,
    newest_unsigned_at: Option<DateTime<Utc>>,
}

impl LogVerifier {
    /// Checks each checkpoint's number and signature first. `keys` are those of a
    /// rotation, oldest first: each checkpoint is signed with one of them, no older
    /// than the one that signed the checkpoint before it, and with more than one the
    /// newest checkpoint with the last (so that a key rotated out, say because it
    /// leaked, cannot re-sign a rewritten log).
    pub fn new(mut checkpoints: Vec<Checkpoint>, keys: &[PublicKey]) -> Result<Self, Flaw> {
        checkpoints.sort_by_key(|c| c.n);
        let mut last_seq = 0;
        // The key that signed the checkpoint before, and that checkpoint.
        let mut newest_key: Option<(usize, i64)> = None;
        for (i, checkpoint) in checkpoints.iter().enumerate() {
            let expected = i as i64 + 1;
            if checkpoint.n != expected || checkpoint.seq <= last_seq {
                return Err(Flaw::Misnumbered {
                    n: checkpoint.n,
                    expected,
                });
            }
            let Some(key) = checkpoint.signed_by(keys) else {
                return Err(Flaw::Unsigned { n: checkpoint.n });
            };
            if let Some((newer_key, newer)) = newest_key
                && key < newer_key
            {
                return Err(Flaw::RetiredKey {
                    n: checkpoint.n,
                    key: key + 1,
                    newer,
                });
            }
            newest_key = Some((key, checkpoint.n));
            last_seq = checkpoint.seq;
        }
        if let Some((key, n)) = newest_key
            && key + 1 < keys.len()
        {
            return Err(Flaw::NotNewestKey {
                n,
                keys: keys.len(),
            });
        }
        Ok(Self {
            chain: Verifier::default(),
            checkpoints,
            next: 0,
            first_at: None,
            newest_unsigned_at: None,
        })
    }

    /// Checkpoint `n` with `hash`, known from before (a previous verify, the server's
    /// log), must still be there: deleting checkpoints is the one way to rewrite the
    /// chain that the checkpoints left cannot show.
    pub fn expect(&self, n: i64, hash: &str) -> Result<(), Flaw> {
        match self.checkpoints.iter().find(|c| c.n == n) {
            Some(checkpoint) if checkpoint.hash == hash => Ok(()),
            _ => Err(Flaw::Lost { n }),
        }
    }

    pub fn check(&mut self, entry: &Entry) -> Result<(), Flaw> {
        self.chain.check(entry)?;
        self.first_at.get_or_insert(entry.at);
        if entry.seq > self.checkpoints.last().map_or(0, |newest| newest.seq) {
            let newest = self.newest_unsigned_at.get_or_insert(entry.at);
            *newest = (*newest).max(entry.at);
        }
        if let Some(checkpoint) = self.checkpoints.get(self.next)
            && checkpoint.seq == entry.seq
        {
            if checkpoint.hash != entry.hash {
                return Err(Flaw::Rewritten {
                    n: checkpoint.n,
                    seq: entry.seq,
                });
            }
            self.next += 1;
        }
        Ok(())
    }

    /// After the last entry: every checkpoint must have been met, and the stored head
    /// (when there is one: not in an export) must point at the last entry.
    pub fn finish(self, head: Option<(i64, &str)>) -> Result<Report, Flaw> {
        let last_seq = self.chain.last_seq;
        if let Some(missing) = self.checkpoints.get(self.next) {
            let after = self.next.checked_sub(1).map(|i| {
                let met = &self.checkpoints[i];
                (met.n, met.seq)
            });
            return Err(Flaw::Truncated {
                after,
                n: missing.n,
                seq: missing.seq,
                last_seq,
            });
        }
        let events = match head {
            Some((seq, hash)) => self.chain.finish(seq, hash)?,
            None => last_seq,
        };
        let newest = self.checkpoints.last();
        let since = newest.map(|c| c.at).or(self.first_at);
        Ok(Report {
            events,
            checkpoints: self.checkpoints.len() as i64,
            covered: newest.map_or(0, |c| c.seq),
            newest: newest.map(|c| (c.n, c.hash.clone())),
            unsigned_for: self
                .newest_unsigned_at
                .zip(since)
                .map(|(at, since)| at - since),
        })
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
