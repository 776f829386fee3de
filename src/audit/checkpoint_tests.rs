use chrono::TimeZone;
use serde_json::json;

use super::*;
use crate::audit::{Draft, GENESIS_HASH, link};

fn at(second: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap() + chrono::TimeDelta::seconds(second)
}

fn chain(n: usize) -> Vec<Entry> {
    let drafts = (0..n)
        .map(|i| Draft {
            approval_id: None,
            kind: "vote",
            actor: Some(format!("U{i}")),
            at: at(i as i64),
            data: json!({"n": i}),
        })
        .collect();
    link(0, GENESIS_HASH, drafts)
}

/// Checkpoints at the given events of `entries`, numbered from 1.
fn checkpoints(signer: &Signer, entries: &[Entry], at_seqs: &[i64]) -> Vec<Checkpoint> {
    at_seqs
        .iter()
        .enumerate()
        .map(|(i, &seq)| {
            let e = &entries[seq as usize - 1];
            Checkpoint::sign(signer, i as i64 + 1, seq, &e.hash, e.at)
        })
        .collect()
}

fn verify(entries: &[Entry], cps: Vec<Checkpoint>, key: PublicKey) -> Result<Report, Flaw> {
    let mut v = LogVerifier::new(cps, &[key])?;
    for e in entries {
        v.check(e)?;
    }
    let head = entries.last().map(|e| (e.seq, e.hash.as_str()));
    v.finish(head.or(Some((0, GENESIS_HASH))))
}

#[test]
fn a_checkpointed_chain_verifies_and_reports_what_the_newest_checkpoint_covers() {
    let signer = Signer::generate();
    let entries = chain(10);
    let report = verify(
        &entries,
        checkpoints(&signer, &entries, &[4, 8]),
        signer.public_key(),
    )
    .unwrap();
    assert_eq!(
        report,
        Report {
            events: 10,
            checkpoints: 2,
            covered: 8,
            newest: Some((2, entries[7].hash.clone())),
            // Events 9 and 10, one and two seconds after event 8, which 2 signed.
            unsigned_for: Some(chrono::TimeDelta::seconds(2)),
        }
    );
    assert!(!report.to_string().contains("warning"), "{report}");
    assert!(
        report
            .to_string()
            .contains(&format!("--checkpoint 2:{}", entries[7].hash)),
        "{report}"
    );
    assert!(report.to_string().contains("covers 8"), "{report}");
    assert!(report.to_string().contains("2 newer events"), "{report}");
}

#[test]
fn a_chain_rewritten_with_fresh_hashes_fails_at_the_checkpoint() {
    let signer = Signer::generate();
    let entries = chain(10);
    let cps = checkpoints(&signer, &entries, &[4, 8]);
    // Whoever can write the database changes event 3 and recomputes every hash after.
    let mut drafts: Vec<Draft> = entries
        .iter()
        .map(|e| Draft {
            approval_id: None,
            kind: "vote",
            actor: e.actor.clone(),
            at: e.at,
            data: e.data.clone(),
        })
        .collect();
    drafts[2].actor = Some("mallory".into());
    let rewritten = link(0, GENESIS_HASH, drafts);
    let flaw = verify(&rewritten, cps, signer.public_key()).unwrap_err();
    assert_eq!(flaw, Flaw::Rewritten { n: 1, seq: 4 });
    assert!(flaw.to_string().contains("rewritten"), "{flaw}");
}

#[test]
fn a_cut_tail_is_reported_as_events_missing_after_the_last_checkpoint_met() {
    let signer = Signer::generate();
    let entries = chain(10);
    let cps = checkpoints(&signer, &entries, &[4, 8]);
    let flaw = verify(&entries[..6], cps.clone(), signer.public_key()).unwrap_err();
    assert_eq!(
        flaw.to_string(),
        "events missing after checkpoint 1 (event 4): checkpoint 2 signed event 8, but the log ends at event 6"
    );
    let flaw = verify(&entries[..2], cps, signer.public_key()).unwrap_err();
    assert!(
        flaw.to_string()
            .starts_with("events missing from the start"),
        "{flaw}"
    );
}

#[test]
fn forged_removed_or_foreign_checkpoints_fail() {
    let signer = Signer::generate();
    let entries = chain(10);
    let cps = checkpoints(&signer, &entries, &[4, 8]);
    // Signed by someone else.
    let foreign = checkpoints(&Signer::generate(), &entries, &[4, 8]);
    assert_eq!(
        verify(&entries, foreign, signer.public_key()).unwrap_err(),
        Flaw::Unsigned { n: 1 }
    );
    // A checkpoint moved to a rewritten hash without the key.
    let mut moved = cps.clone();
    moved[1].hash = entries[8].hash.clone();
    moved[1].seq = 9;
    assert_eq!(
        verify(&entries, moved, signer.public_key()).unwrap_err(),
        Flaw::Unsigned { n: 2 }
    );
    // The first one removed.
    assert_eq!(
        verify(&entries, cps[1..].to_vec(), signer.public_key()).unwrap_err(),
        Flaw::Misnumbered { n: 2, expected: 1 }
    );
    // An older key still verifies what it signed (keys oldest first).
    let old = Signer::generate();
    let mut mixed = checkpoints(&old, &entries, &[4]);
    mixed.extend(checkpoints(&signer, &entries, &[4, 8]).into_iter().skip(1));
    let mut v = LogVerifier::new(mixed, &[old.public_key(), signer.public_key()]).unwrap();
    for e in &entries {
        v.check(e).unwrap();
    }
    assert_eq!(v.finish(None).unwrap().covered, 8);
}

#[test]
fn checkpoints_are_due_every_thousand_events_or_each_minute_while_events_arrive() {
    assert!(!due(None, 0, at(0)), "nothing to sign");
    assert!(due(None, 1, at(0)), "the first event");
    assert!(!due(Some((1, at(0))), 1, at(120)), "no new events");
    assert!(!due(Some((1, at(0))), 999, at(59)));
    assert!(due(Some((1, at(0))), 1001, at(1)), "1000 events");
    assert!(due(Some((1, at(0))), 2, at(60)), "a minute");
}

#[test]
fn export_lines_tell_checkpoints_from_events() {
    let signer = Signer::generate();
    let entries = chain(1);
    let cp = checkpoints(&signer, &entries, &[1]).remove(0);
    let line = serde_json::to_string(&cp).unwrap();
    assert!(line.starts_with(r#"{"checkpoint":1,"seq":1,"#), "{line}");
    assert_eq!(serde_json::from_str::<Checkpoint>(&line).unwrap(), cp);
    let event = serde_json::to_string(&entries[0]).unwrap();
    assert_eq!(serde_json::from_str::<Entry>(&event).unwrap(), entries[0]);
    assert!(serde_json::from_str::<Checkpoint>(&event).is_err());
}

#[test]
fn a_checkpoint_known_from_before_must_still_be_there_with_its_hash() {
    let signer = Signer::generate();
    let entries = chain(10);
    let verifier = LogVerifier::new(
        checkpoints(&signer, &entries, &[4, 8]),
        &[signer.public_key()],
    )
    .unwrap();
    assert_eq!(verifier.expect(2, &entries[7].hash), Ok(()));
    // Removed with every checkpoint after it, or another hash in its place.
    assert_eq!(
        verifier.expect(3, &entries[9].hash),
        Err(Flaw::Lost { n: 3 })
    );
    assert_eq!(
        verifier.expect(2, &entries[6].hash),
        Err(Flaw::Lost { n: 2 })
    );
    assert!(
        Flaw::Lost { n: 3 }
            .to_string()
            .contains("checkpoints were removed")
    );
}

/// An unsigned tail that runs on longer after the newest checkpoint than a running
/// server lets it is warned of; one within a minute or two is not.
#[test]
fn a_long_unsigned_tail_is_warned_of() {
    let signer = Signer::generate();
    let drafts = (0..6)
        .map(|i| Draft {
            approval_id: None,
            kind: "vote",
            actor: Some(format!("U{i}")),
            // Events 5 and 6 come an hour after event 4.
            at: at(if i < 4 { i } else { 3600 + i }),
            data: json!({"n": i}),
        })
        .collect();
    let entries = link(0, GENESIS_HASH, drafts);
    let report = verify(
        &entries,
        checkpoints(&signer, &entries, &[4]),
        signer.public_key(),
    )
    .unwrap();
    assert_eq!(report.unsigned_for, Some(chrono::TimeDelta::seconds(3602)));
    let text = report.to_string();
    assert!(
        text.contains(
            "warning: the newest unsigned event came 1h 2s after the newest checkpoint was signed"
        ),
        "{text}"
    );
    // Without a checkpoint: from the first event.
    let unsigned = verify(&entries, vec![], signer.public_key()).unwrap();
    assert!(
        unsigned
            .to_string()
            .contains("no checkpoint was ever signed"),
        "{unsigned}"
    );
    // Covered whole: nothing to warn of.
    let covered = verify(
        &entries,
        checkpoints(&signer, &entries, &[6]),
        signer.public_key(),
    )
    .unwrap();
    assert_eq!(covered.unsigned_for, None);
    assert!(!covered.to_string().contains("warning"), "{covered}");
}

/// A key rotated out (because it leaked, say) cannot re-sign a rewritten log: with
/// the keys of a rotation given oldest first, a checkpoint signed with an older key
/// than the one before it is refused, and so is a log whose newest checkpoint the
/// newest key did not sign (the whole log re-signed with the old key).
#[test]
fn a_key_rotated_out_cannot_re_sign_a_rewritten_log() {
    let (old, new) = (Signer::generate(), Signer::generate());
    let keys = [old.public_key(), new.public_key()];
    let entries = chain(10);
    let rotated = |first: &Signer, second: &Signer| {
        let mut cps = checkpoints(first, &entries, &[4]);
        cps.extend(checkpoints(second, &entries, &[4, 8]).into_iter().skip(1));
        cps
    };
    let verified = |cps: Vec<Checkpoint>, keys: &[PublicKey]| {
        let mut v = LogVerifier::new(cps, keys)?;
        entries.iter().try_for_each(|e| v.check(e))?;
        v.finish(None)
    };
    assert_eq!(verified(rotated(&old, &new), &keys).unwrap().covered, 8);
    // Checkpoint 2 signed again with the old key, after the new one signed it.
    assert_eq!(
        verified(rotated(&new, &old), &keys).unwrap_err(),
        Flaw::RetiredKey {
            n: 2,
            key: 1,
            newer: 1
        }
    );
    // Every checkpoint signed again with the old key (checkpoint 2 over a rewrite).
    let resigned = checkpoints(&old, &entries, &[4, 8]);
    let flaw = verified(resigned.clone(), &keys).unwrap_err();
    assert_eq!(flaw, Flaw::NotNewestKey { n: 2, keys: 2 });
    assert!(flaw.to_string().contains("the last --public-key"), "{flaw}");
    // The keys named the other way round read as a rotation back to the old one.
    assert_eq!(
        verified(rotated(&old, &new), &[new.public_key(), old.public_key()]).unwrap_err(),
        Flaw::RetiredKey {
            n: 2,
            key: 1,
            newer: 1
        }
    );
    // One key alone: whatever it signed verifies (no rotation to hold it to).
    assert!(verified(resigned, &[old.public_key()]).is_ok());
}
