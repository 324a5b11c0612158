//! `META`'s pending batch: committed entries whose object or `SEQ#` item a writer may not have
//! written yet. Only a batch that ends exactly at the head stands in for what is missing.

use std::fmt::Display;

use super::super::commit::PendingEntry;
use crate::chain::verify::{Failure, FailureKind, Head};

/// How a seq of the pending batch was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PendingCheck {
    /// Object and `SEQ#` item both stored: checked as any other entry.
    Written,
    /// The object is stored, its `SEQ#` item not yet: the batch stands in for the item.
    Unindexed,
    /// No object yet: the batch's bytes are the evidence.
    Unwritten,
}

impl PendingCheck {
    /// How a seq of the batch is checked, from what is stored for it.
    pub(super) fn of(has_object: bool, has_item: bool) -> PendingCheck {
        match (has_object, has_item) {
            (false, _) => PendingCheck::Unwritten,
            (true, false) => PendingCheck::Unindexed,
            (true, true) => PendingCheck::Written,
        }
    }
}

/// The batch to check unwritten entries from, given `META`'s `head` and its decoded pending
/// batch (`None`: there is none), and the failure when the batch cannot be the one a writer
/// committed on this head.
pub(super) fn accept<E: Display>(
    head: Head,
    decoded: Option<Result<Vec<PendingEntry>, E>>,
) -> (Vec<PendingEntry>, Option<Failure>) {
    let failure = |detail: String| {
        Some(Failure {
            seq: head.seq,
            kind: FailureKind::HeadMismatch,
            detail,
        })
    };
    match decoded {
        None => (Vec::new(), None),
        // Only the batch a writer could have committed on this head stands in for what is
        // not written yet: one that ends exactly at it.
        Some(Ok(entries))
            if entries
                .last()
                .is_some_and(|e| e.seq == head.seq && e.hash == head.last_hash) =>
        {
            (entries, None)
        }
        Some(Ok(_)) => (
            Vec::new(),
            failure("META's pending batch does not end at its head (seq and last_hash)".into()),
        ),
        Some(Err(e)) => (
            Vec::new(),
            failure(format!("META's pending batch is not a piece of chain: {e}")),
        ),
    }
}

/// The batch's entry for `seq`, if the batch holds it.
pub(super) fn entry_at(batch: &[PendingEntry], seq: u64) -> Option<&PendingEntry> {
    let first = batch.first()?.seq;
    batch.get(usize::try_from(seq.checked_sub(first)?).ok()?)
}

/// Says which seqs were taken from `META`'s pending batch because no object held them.
pub(super) fn unwritten_note(unwritten: &[u64]) -> Option<String> {
    let (first, last) = (unwritten.first()?, unwritten.last()?);
    Some(format!(
        "seqs {first}..={last} ({} entries) are committed in META's pending batch but not yet written to object storage; they were checked from META (the service writes them out with its next append, read or restart)",
        unwritten.len()
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::chain::entry::Timestamp;
    use crate::chain::hash::Hash;

    /// A batch of entries `first..=last` (hashes made up; only seqs and hashes matter here).
    pub(in super::super) fn batch(first: u64, last: u64) -> Vec<PendingEntry> {
        (first..=last)
            .map(|seq| PendingEntry {
                seq,
                bytes: bytes::Bytes::from(format!("entry {seq}")),
                hash: Hash([seq as u8; 32]),
                prev_hash: Hash([(seq - 1) as u8; 32]),
                timestamp: Timestamp::from_unix_micros(seq as i64).unwrap(),
                key: format!("entry-{seq}"),
                idempotency_key: None,
            })
            .collect()
    }

    fn head(seq: u64) -> Head {
        Head {
            seq,
            last_hash: Hash([seq as u8; 32]),
        }
    }

    #[test]
    fn a_stored_seq_with_its_item_is_checked_as_written() {
        assert_eq!(PendingCheck::of(true, true), PendingCheck::Written);
    }

    #[test]
    fn a_stored_seq_without_its_item_is_unindexed() {
        assert_eq!(PendingCheck::of(true, false), PendingCheck::Unindexed);
    }

    #[test]
    fn a_seq_without_its_object_is_unwritten_whatever_the_index_says() {
        assert_eq!(PendingCheck::of(false, false), PendingCheck::Unwritten);
        assert_eq!(PendingCheck::of(false, true), PendingCheck::Unwritten);
    }

    #[test]
    fn no_pending_batch_stands_in_for_nothing_and_is_no_failure() {
        let (entries, failure) = accept::<String>(head(5), None);
        assert!(entries.is_empty());
        assert_eq!(failure, None);
    }

    #[test]
    fn a_batch_ending_at_the_head_stands_in() {
        let (entries, failure) = accept::<String>(head(5), Some(Ok(batch(3, 5))));
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(failure, None);
    }

    #[test]
    fn a_batch_ending_elsewhere_is_a_head_mismatch_and_ignored() {
        let (entries, failure) = accept::<String>(head(6), Some(Ok(batch(3, 5))));
        assert!(entries.is_empty());
        let failure = failure.unwrap();
        assert_eq!((failure.seq, failure.kind), (6, FailureKind::HeadMismatch));
    }

    #[test]
    fn a_batch_ending_at_the_head_seq_with_another_hash_is_a_head_mismatch() {
        let other = Head {
            seq: 5,
            last_hash: Hash([0xee; 32]),
        };
        let (entries, failure) = accept::<String>(other, Some(Ok(batch(3, 5))));
        assert!(entries.is_empty());
        assert_eq!(failure.unwrap().kind, FailureKind::HeadMismatch);
    }

    #[test]
    fn a_batch_that_does_not_decode_is_a_head_mismatch_naming_why() {
        let (entries, failure) = accept(head(5), Some(Err("bad link")));
        assert!(entries.is_empty());
        let failure = failure.unwrap();
        assert_eq!(failure.kind, FailureKind::HeadMismatch);
        assert!(failure.detail.ends_with("bad link"));
    }

    #[test]
    fn the_entry_at_a_seq_is_found_by_its_offset_in_the_batch() {
        let entries = batch(3, 5);
        assert_eq!(entry_at(&entries, 4).map(|e| e.seq), Some(4));
        assert_eq!(entry_at(&entries, 2).map(|e| e.seq), None);
        assert_eq!(entry_at(&entries, 6).map(|e| e.seq), None);
        assert_eq!(entry_at(&[], 1).map(|e| e.seq), None);
    }

    #[test]
    fn the_note_names_the_first_and_last_unwritten_seqs() {
        assert_eq!(unwritten_note(&[]), None);
        let note = unwritten_note(&[7, 8, 9]).unwrap();
        assert!(note.starts_with("seqs 7..=9 (3 entries) are committed"));
    }
}
