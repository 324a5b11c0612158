//! The checks on one stored checkpoint: it parses, names its own ledger and seq, carries a
//! signature from a trusted key (when keys are given), and hash-matches the stored entry at
//! its seq.

use crate::chain::checkpoint::{Checkpoint, PublicKey};
use crate::chain::entry::LedgerId;
use crate::chain::hash::Hash;
use crate::chain::verify::{ChainVerifier, FailureKind};

/// A stored checkpoint, parsed and its signature checked.
pub(super) struct CheckedCheckpoint {
    pub(super) seq: u64,
    pub(super) key: String,
    pub(super) parsed: Result<Checkpoint, String>,
    pub(super) signature: Result<(), String>,
}

/// Parses a stored checkpoint and checks its signature against the trusted keys.
pub(super) fn check_signature(
    seq: u64,
    key: String,
    bytes: &[u8],
    keys: &[PublicKey],
) -> CheckedCheckpoint {
    let parsed = Checkpoint::from_json(bytes).map_err(|e| e.to_string());
    let signature = match &parsed {
        Err(_) => Ok(()),
        Ok(_) if keys.is_empty() => Ok(()),
        Ok(cp) => cp.verify_trusted(keys).map_err(|e| e.to_string()),
    };
    CheckedCheckpoint {
        seq,
        key,
        parsed,
        signature,
    }
}

/// Checks one stored checkpoint: it parses, names its own ledger and seq, carries a trusted
/// signature, and matches the stored entry at its seq. `entry_hash`: `None` when that seq was
/// not walked (nothing to compare), `Some(None)` when no entry is stored there.
pub(super) fn check_checkpoint(
    verifier: &mut ChainVerifier,
    ledger: &LedgerId,
    cp: &CheckedCheckpoint,
    entry_hash: Option<Option<Hash>>,
) {
    let key = &cp.key;
    let parsed = match &cp.parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            verifier.report(
                cp.seq,
                FailureKind::CheckpointMismatch,
                format!("{key} is not a checkpoint: {e}"),
            );
            return;
        }
    };
    if parsed.seq != cp.seq || parsed.ledger_id != *ledger {
        verifier.report(
            cp.seq,
            FailureKind::CheckpointMismatch,
            format!(
                "{key} holds a checkpoint for ledger {} seq {}",
                parsed.ledger_id, parsed.seq
            ),
        );
    }
    if let Err(e) = &cp.signature {
        verifier.report(
            cp.seq,
            FailureKind::BadSignature,
            format!("checkpoint {key}: {e}"),
        );
    }
    match entry_hash {
        Some(Some(h)) if h != parsed.last_hash => verifier.report(
            cp.seq,
            FailureKind::CheckpointMismatch,
            format!(
                "checkpoint {key} says last_hash {} but the stored entry hashes to {h}",
                parsed.last_hash
            ),
        ),
        Some(Some(_)) | None => {}
        Some(None) => verifier.report(
            cp.seq,
            FailureKind::CheckpointMismatch,
            format!(
                "checkpoint {key} vouches for seq {} but the stored chain has no entry there",
                cp.seq
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::checkpoint::{CheckpointBody, Signer};
    use crate::chain::entry::Timestamp;

    const HASH: Hash = Hash([4; 32]);

    fn ledger() -> LedgerId {
        LedgerId::parse("acme").unwrap()
    }

    fn signed(signer: &Signer, ledger: &LedgerId, seq: u64) -> Vec<u8> {
        signer
            .sign_checkpoint(CheckpointBody {
                ledger_id: ledger.clone(),
                seq,
                last_hash: HASH,
                timestamp: Timestamp::from_unix_micros(0).unwrap(),
            })
            .to_json()
    }

    /// The kinds of failure `check_checkpoint` reports for `cp`.
    fn failures(cp: &CheckedCheckpoint, entry_hash: Option<Option<Hash>>) -> Vec<FailureKind> {
        let mut verifier = ChainVerifier::new(1, Some(Hash::GENESIS), 100);
        check_checkpoint(&mut verifier, &ledger(), cp, entry_hash);
        let outcome = verifier.finish(None);
        outcome.failures.into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_checkpoint_signed_by_a_trusted_key_over_the_stored_entry_passes() {
        let signer = Signer::from_seed(&[1; 32]);
        let bytes = signed(&signer, &ledger(), 4);
        let cp = check_signature(4, "cp".into(), &bytes, &[signer.public_key().clone()]);
        assert_eq!(failures(&cp, Some(Some(HASH))), []);
    }

    #[test]
    fn signatures_are_not_checked_without_trusted_keys() {
        let bytes = signed(&Signer::from_seed(&[1; 32]), &ledger(), 4);
        let cp = check_signature(4, "cp".into(), &bytes, &[]);
        assert_eq!(cp.signature, Ok(()));
    }

    #[test]
    fn a_checkpoint_signed_by_an_untrusted_key_is_a_bad_signature() {
        let bytes = signed(&Signer::from_seed(&[1; 32]), &ledger(), 4);
        let other = Signer::from_seed(&[2; 32]).public_key().clone();
        let cp = check_signature(4, "cp".into(), &bytes, &[other]);
        assert_eq!(failures(&cp, None), [FailureKind::BadSignature]);
    }

    #[test]
    fn bytes_that_are_not_a_checkpoint_are_one_mismatch_and_nothing_else() {
        let cp = check_signature(4, "cp".into(), b"not json", &[]);
        assert_eq!(failures(&cp, Some(None)), [FailureKind::CheckpointMismatch]);
    }

    #[test]
    fn a_checkpoint_stored_under_another_seq_or_ledger_is_a_mismatch() {
        let signer = Signer::from_seed(&[1; 32]);
        let elsewhere = check_signature(5, "cp".into(), &signed(&signer, &ledger(), 4), &[]);
        assert_eq!(
            failures(&elsewhere, None),
            [FailureKind::CheckpointMismatch]
        );
        let other = LedgerId::parse("other").unwrap();
        let foreign = check_signature(4, "cp".into(), &signed(&signer, &other, 4), &[]);
        assert_eq!(failures(&foreign, None), [FailureKind::CheckpointMismatch]);
    }

    #[test]
    fn a_checkpoint_over_another_hash_or_no_entry_is_a_mismatch_and_unwalked_is_not() {
        let bytes = signed(&Signer::from_seed(&[1; 32]), &ledger(), 4);
        let cp = check_signature(4, "cp".into(), &bytes, &[]);
        let mismatch = [FailureKind::CheckpointMismatch];
        assert_eq!(failures(&cp, Some(Some(Hash([9; 32])))), mismatch);
        assert_eq!(failures(&cp, Some(None)), mismatch);
        assert_eq!(failures(&cp, None), []);
    }
}
