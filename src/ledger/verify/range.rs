//! Where the walk starts and ends: the ledger's extent (`META`'s head and its pending batch,
//! or the last entry object), the range asked for checked against it, and the hash the first
//! entry walked must link to.

use super::super::commit::{PendingEntry, decode_pending};
use super::{LedgerError, VerifyRange, end, pending, stored_hash};
use crate::chain::checkpoint::Checkpoint;
use crate::chain::entry::LedgerId;
use crate::chain::hash::Hash;
use crate::chain::verify::{Failure, FailureKind, Head};
use crate::store::Stores;

/// What the walk is to reach.
pub(super) struct Extent {
    /// The head `META` states (`None` without the index).
    pub(super) head: Option<Head>,
    /// The decoded entries of `META`'s pending batch, when it stands in for what is unwritten.
    pub(super) pending: Vec<PendingEntry>,
    /// The last seq: `META`'s head, or the last entry object.
    pub(super) end: u64,
    /// What is wrong with `META`'s pending batch, if anything.
    pub(super) failure: Option<Failure>,
}

/// Reads the ledger's extent: `META` (with `use_index`), else the listing's last entry object.
pub(super) async fn extent(
    stores: &Stores,
    ledger: &LedgerId,
    use_index: bool,
) -> Result<Extent, LedgerError> {
    if !use_index {
        let last = end::last_entry_seq(stores, ledger)
            .await?
            .ok_or(LedgerError::LedgerNotFound)?;
        return Ok(Extent {
            head: None,
            pending: Vec::new(),
            end: last,
            failure: None,
        });
    }
    let meta = stores
        .index
        .head(ledger)
        .await?
        .ok_or(LedgerError::LedgerNotFound)?;
    let head = Head {
        seq: meta.seq_counter,
        last_hash: meta.last_hash,
    };
    let decoded = meta.pending.as_ref().map(|p| decode_pending(ledger, p));
    let (pending, failure) = pending::accept(head, decoded);
    Ok(Extent {
        head: Some(head),
        pending,
        end: head.seq,
        failure,
    })
}

/// The seqs `from..=to` to walk, from the range asked for, the checkpoint to start after and
/// the ledger's `end`; refuses a range that does not fit them.
pub(super) fn resolve(
    range: VerifyRange,
    start: Option<&Checkpoint>,
    ledger: &LedgerId,
    end: u64,
) -> Result<(u64, u64), LedgerError> {
    if let Some(cp) = start
        && cp.ledger_id != *ledger
    {
        return Err(LedgerError::InvalidRange(format!(
            "the checkpoint is for ledger {}, not {ledger}",
            cp.ledger_id
        )));
    }
    let default_from = start.map_or(1, |cp| cp.seq + 1);
    let (from, to) = range.within(default_from, end)?;
    if let Some(cp) = start
        && range.from.is_some_and(|f| f != cp.seq + 1)
    {
        return Err(LedgerError::InvalidRange(format!(
            "verifying from checkpoint seq {} starts at seq {}",
            cp.seq,
            cp.seq + 1
        )));
    }
    Ok((from, to))
}

/// What the first entry walked must link to.
pub(super) struct Anchor {
    /// The hash of the entry before `from` (`None`: unknown, nothing is stored there).
    pub(super) hash: Option<Hash>,
    /// The trusted checkpoint the walk starts after does not match the stored chain.
    pub(super) failure: Option<Failure>,
}

/// The anchor for a walk from `from`: after `start`, its trusted `last_hash` (and the stored
/// entry at its seq must hash to it); else genesis for seq 1, or the stored entry before.
pub(super) async fn anchor(
    stores: &Stores,
    ledger: &LedgerId,
    from: u64,
    start: Option<&Checkpoint>,
    end: u64,
    use_index: bool,
) -> Result<Anchor, LedgerError> {
    Ok(match start {
        Some(cp) => {
            // The chain must pass through the checkpoint: the stored entry at its seq hashes
            // to its last_hash. The walk then links to the trusted hash either way.
            let failure = if cp.seq > end {
                Some(checkpoint_past_end(cp, end))
            } else {
                let stored = stored_hash(stores, ledger, cp.seq, use_index).await?;
                checkpoint_mismatch(cp, stored)
            };
            Anchor {
                hash: Some(cp.last_hash),
                failure,
            }
        }
        None if from == 1 => Anchor {
            hash: Some(Hash::GENESIS),
            failure: None,
        },
        None => Anchor {
            hash: stored_hash(stores, ledger, from - 1, use_index).await?,
            failure: None,
        },
    })
}

/// The trusted checkpoint is past the ledger's end: entries were removed.
fn checkpoint_past_end(cp: &Checkpoint, end: u64) -> Failure {
    Failure {
        seq: cp.seq,
        kind: FailureKind::CheckpointMismatch,
        detail: format!(
            "the trusted checkpoint is at seq {} but the head is at {end}: entries were removed",
            cp.seq
        ),
    }
}

/// The trusted checkpoint against the hash of the stored entry at its seq (`None`: none).
fn checkpoint_mismatch(cp: &Checkpoint, stored: Option<Hash>) -> Option<Failure> {
    if stored == Some(cp.last_hash) {
        return None;
    }
    Some(Failure {
        seq: cp.seq,
        kind: FailureKind::CheckpointMismatch,
        detail: match stored {
            Some(h) => format!(
                "the trusted checkpoint says {} but the stored entry hashes to {h}",
                cp.last_hash
            ),
            None => "no entry is stored at the trusted checkpoint's seq".into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::checkpoint::{CheckpointBody, Signer};
    use crate::chain::entry::Timestamp;

    fn ledger() -> LedgerId {
        LedgerId::parse("acme").unwrap()
    }

    fn checkpoint(ledger: &LedgerId, seq: u64) -> Checkpoint {
        Signer::from_seed(&[7; 32]).sign_checkpoint(CheckpointBody {
            ledger_id: ledger.clone(),
            seq,
            last_hash: Hash([seq as u8; 32]),
            timestamp: Timestamp::from_unix_micros(0).unwrap(),
        })
    }

    fn range(from: Option<u64>, to: Option<u64>) -> VerifyRange {
        VerifyRange { from, to }
    }

    fn refusal(result: Result<(u64, u64), LedgerError>) -> String {
        match result {
            Err(LedgerError::InvalidRange(why)) => why,
            other => panic!("expected InvalidRange, got {other:?}"),
        }
    }

    #[test]
    fn an_open_range_runs_from_seq_1_to_the_end() {
        assert_eq!(
            resolve(range(None, None), None, &ledger(), 10).unwrap(),
            (1, 10)
        );
    }

    #[test]
    fn an_open_range_of_an_empty_ledger_is_empty() {
        assert_eq!(
            resolve(range(None, None), None, &ledger(), 0).unwrap(),
            (1, 0)
        );
    }

    #[test]
    fn a_given_range_is_walked_as_given() {
        let resolved = resolve(range(Some(3), Some(7)), None, &ledger(), 10).unwrap();
        assert_eq!(resolved, (3, 7));
    }

    #[test]
    fn a_range_from_seq_0_is_refused() {
        let why = refusal(resolve(range(Some(0), None), None, &ledger(), 10));
        assert_eq!(why, "from starts at 1");
    }

    #[test]
    fn a_range_that_ends_before_it_starts_is_refused() {
        let why = refusal(resolve(range(Some(5), Some(4)), None, &ledger(), 10));
        assert_eq!(why, "from (5) is greater than to (4)");
    }

    #[test]
    fn a_range_past_the_end_is_refused() {
        let why = refusal(resolve(range(None, Some(11)), None, &ledger(), 10));
        assert_eq!(why, "to (11) is past the head (seq 10)");
    }

    #[test]
    fn a_range_starting_past_the_end_is_refused_as_past_the_head() {
        let why = refusal(resolve(range(Some(11), None), None, &ledger(), 10));
        assert_eq!(why, "from (11) is past the head (seq 10)");
        let why = refusal(resolve(range(Some(1), None), None, &ledger(), 0));
        assert_eq!(why, "from (1) is past the head (seq 0)");
    }

    #[test]
    fn a_walk_after_a_checkpoint_starts_at_the_seq_after_it() {
        let cp = checkpoint(&ledger(), 4);
        let resolved = resolve(range(None, None), Some(&cp), &ledger(), 10).unwrap();
        assert_eq!(resolved, (5, 10));
    }

    #[test]
    fn a_walk_after_a_checkpoint_may_not_start_elsewhere() {
        let cp = checkpoint(&ledger(), 4);
        let why = refusal(resolve(range(Some(3), None), Some(&cp), &ledger(), 10));
        assert_eq!(why, "verifying from checkpoint seq 4 starts at seq 5");
    }

    #[test]
    fn a_checkpoint_of_another_ledger_is_refused() {
        let cp = checkpoint(&LedgerId::parse("other").unwrap(), 4);
        let why = refusal(resolve(range(None, None), Some(&cp), &ledger(), 10));
        assert_eq!(why, "the checkpoint is for ledger other, not acme");
    }

    #[test]
    fn a_checkpoint_matching_the_stored_entry_is_no_failure() {
        let cp = checkpoint(&ledger(), 4);
        assert_eq!(checkpoint_mismatch(&cp, Some(cp.last_hash)), None);
    }

    #[test]
    fn a_checkpoint_over_another_hash_or_no_entry_is_a_mismatch() {
        let cp = checkpoint(&ledger(), 4);
        for stored in [Some(Hash([9; 32])), None] {
            let failure = checkpoint_mismatch(&cp, stored).unwrap();
            assert_eq!(
                (failure.seq, failure.kind),
                (4, FailureKind::CheckpointMismatch)
            );
        }
    }

    #[test]
    fn a_checkpoint_past_the_end_says_entries_were_removed() {
        let failure = checkpoint_past_end(&checkpoint(&ledger(), 12), 10);
        assert_eq!(
            (failure.seq, failure.kind),
            (12, FailureKind::CheckpointMismatch)
        );
        assert!(failure.detail.contains("entries were removed"));
    }
}
