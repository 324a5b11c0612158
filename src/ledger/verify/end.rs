//! The ledger's real end, found from the listing rather than taken from the index: the last
//! entry object (by doubling and bisecting one-key listings), the first object or `SEQ#` item
//! after a seq, and what lies past the head once the walk has reached it.

use std::future::Future;

use super::walk::Walk;
use super::{LedgerError, page::read_checkpoints};
use crate::chain::entry::{LedgerId, MAX_SEQ};
use crate::chain::keys::{entries_prefix, entry_key, seq_of_entry_key};
use crate::chain::verify::{FailureKind, Head};
use crate::store::Stores;

/// What [`Walk::beyond_the_end`] found.
pub(super) struct Beyond {
    /// The last seq walked (past the end when objects were found that no head counts).
    pub(super) walked_to: u64,
    /// The head the chain must end at.
    pub(super) head: Option<Head>,
    pub(super) note: Option<String>,
}

/// The seq of the first entry object after `seq`, if any (stray keys under the entries
/// prefix are skipped). Keys hidden by a delete marker count: they were written.
async fn first_entry_after(
    stores: &Stores,
    ledger: &LedgerId,
    seq: u64,
) -> Result<Option<u64>, LedgerError> {
    const LIST_PAGE: usize = 16;
    let prefix = entries_prefix(ledger);
    let mut after = (seq > 0).then(|| entry_key(ledger, seq));
    // Bounded: each round either ends or moves `after` forward past LIST_PAGE keys.
    loop {
        let keys = stores
            .objects
            .list_versioned(&prefix, after.as_deref(), LIST_PAGE)
            .await?;
        if let Some(found) = keys
            .iter()
            .filter_map(|k| seq_of_entry_key(k, ledger))
            .find(|s| *s > seq)
        {
            return Ok(Some(found));
        }
        if keys.len() < LIST_PAGE {
            return Ok(None);
        }
        after = keys.last().cloned();
    }
}

/// The highest seq with an entry object, found from one-key listings by doubling and then
/// bisecting (about 2·log2(n) listings, whatever the ledger's length); `None` when there is
/// none. Depends on the listing only, never on the index.
pub(super) async fn last_entry_seq(
    stores: &Stores,
    ledger: &LedgerId,
) -> Result<Option<u64>, LedgerError> {
    last_seq(|seq| first_entry_after(stores, ledger, seq)).await
}

/// The search of [`last_entry_seq`], over `first_after(seq)`: the first seq stored after
/// `seq`, if any.
async fn last_seq<F, Fut, E>(mut first_after: F) -> Result<Option<u64>, E>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<Option<u64>, E>>,
{
    // Invariant: an entry exists at `low`, and none after `high`.
    let Some(mut low) = first_after(0).await? else {
        return Ok(None);
    };
    let (mut high, mut bounded) = (MAX_SEQ, false);
    while low < high {
        let probe = if bounded {
            low + (high - low).div_ceil(2)
        } else {
            low.saturating_mul(2).clamp(low + 1, high)
        };
        match first_after(probe - 1).await? {
            Some(seq) => low = seq,
            None => (high, bounded) = (probe - 1, true),
        }
    }
    Ok(Some(low))
}

/// The ledger's end as read again after a walk to `end`, and what lies past `end` that the
/// walk must answer for.
#[derive(Debug, PartialEq, Eq)]
struct PastTheEnd {
    /// The ledger's end now: `META`'s head, or (objects only) the last entry object.
    end: u64,
    /// The head the chain must end at if the walk goes on to `end`.
    head: Option<Head>,
    /// The last entry object beyond the end that no head counts (only with the index).
    uncounted_objects: Option<u64>,
    /// A `SEQ#` item beyond the end.
    stray_item: Option<u64>,
}

/// Judges what was listed past the walked `end` (`last_listed`: the last entry object after
/// it; `item_after`: the first `SEQ#` item after it) against the ledger's end read again
/// (`head_now`: `META`'s head now, with the index).
fn past_the_end(
    end: u64,
    head: Option<Head>,
    use_index: bool,
    last_listed: Option<u64>,
    head_now: Option<Head>,
    item_after: Option<u64>,
) -> PastTheEnd {
    let (now_end, now_head) = if use_index {
        match head_now {
            Some(now) if now.seq > end => (now.seq, Some(now)),
            _ => (end, head),
        }
    } else {
        (last_listed.unwrap_or(end).max(end), None)
    };
    PastTheEnd {
        end: now_end,
        head: now_head,
        uncounted_objects: last_listed.filter(|last| use_index && *last > now_end),
        stray_item: item_after.filter(|seq| *seq > now_end),
    }
}

impl Walk<'_> {
    /// The first seq after `seq` with an entry object or (with the index) a `SEQ#` item;
    /// `u64::MAX` when there is none.
    pub(super) async fn next_stored_after(&self, seq: u64) -> Result<u64, LedgerError> {
        let (stores, ledger) = (self.stores, self.ledger);
        let (object, item) = tokio::try_join!(
            first_entry_after(stores, ledger, seq),
            self.first_item_after(seq)
        )?;
        Ok(object.into_iter().chain(item).min().unwrap_or(u64::MAX))
    }

    /// The seq of the first `SEQ#` item after `seq` (`None` without one, or without the index).
    async fn first_item_after(&self, seq: u64) -> Result<Option<u64>, LedgerError> {
        if !self.use_index {
            return Ok(None);
        }
        let items = self
            .stores
            .index
            .seq_items(self.ledger, seq + 1, MAX_SEQ, 1);
        Ok(items.await?.pop().map(|i| i.seq))
    }

    /// After a walk to the end: nothing may exist past it. A ledger that grew meanwhile is
    /// fine: writers claim in `META` before they write objects, `SEQ#` items or checkpoints,
    /// so everything listed here, before the ledger's end is read again, is at or below that
    /// end unless it was put there behind the protocol's back. Entry objects past it are walked
    /// too, so that an index turned back cannot hide them.
    pub(super) async fn beyond_the_end(
        &mut self,
        end: u64,
        head: Option<Head>,
    ) -> Result<Beyond, LedgerError> {
        let (stores, ledger) = (self.stores, self.ledger);
        // 1. Everything past the walked end, as listed now.
        let (last_listed, item_after, checkpoints) = tokio::try_join!(
            async {
                Ok::<_, LedgerError>(match first_entry_after(stores, ledger, end).await? {
                    Some(seq) => Some(
                        last_entry_seq(stores, ledger)
                            .await?
                            .unwrap_or(seq)
                            .max(seq),
                    ),
                    None => None,
                })
            },
            self.first_item_after(end),
            read_checkpoints(stores, ledger, end + 1, None),
        )?;
        // 2. The ledger's end now: META's head, or (objects only) the last entry object.
        let head_now = if self.use_index {
            stores.index.head(ledger).await?.map(|meta| Head {
                seq: meta.seq_counter,
                last_hash: meta.last_hash,
            })
        } else {
            None
        };
        let past = past_the_end(end, head, self.use_index, last_listed, head_now, item_after);
        let now_end = past.end;
        let mut beyond = Beyond {
            walked_to: end,
            head,
            note: (now_end > end).then(|| {
                format!(
                    "the ledger grew to seq {now_end} while it was verified; the entries after seq {end} were not walked"
                )
            }),
        };
        if let Some(last) = past.uncounted_objects {
            // Objects that no head counts: walk them, with the index as a second opinion.
            self.verifier.report(
                end,
                FailureKind::HeadMismatch,
                format!(
                    "entry objects exist beyond the head (seq {now_end}) up to seq {last}: the index does not count them"
                ),
            );
            self.pages(end + 1, last).await?;
            beyond = Beyond {
                walked_to: last,
                head: past.head,
                note: None,
            };
        }
        if let Some(seq) = past.stray_item {
            self.verifier.report(
                end,
                FailureKind::HeadMismatch,
                format!("SEQ# item {seq} exists beyond the head (seq {now_end})"),
            );
        }
        // Checkpoints past the walk: up to the ledger's end they are checked without an entry
        // to compare (it was not walked); past it they vouch for nothing stored.
        for checkpoint in checkpoints {
            let seq = checkpoint.0;
            if seq > beyond.walked_to {
                // Not walked (those at or below were, by the pages above).
                self.check_unwalked_checkpoint(checkpoint, seq > now_end);
            }
        }
        Ok(beyond)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeSet;
    use std::convert::Infallible;

    use super::*;
    use crate::chain::hash::Hash;

    /// Runs [`last_seq`] over `stored`; returns what it found and how many listings it took.
    fn search(stored: &[u64]) -> (Option<u64>, u32) {
        let stored: BTreeSet<u64> = stored.iter().copied().collect();
        let listings = Cell::new(0);
        let first_after = |seq: u64| {
            listings.set(listings.get() + 1);
            let found = stored.range(seq + 1..).next().copied();
            std::future::ready(Ok::<_, Infallible>(found))
        };
        let found = futures::executor::block_on(last_seq(first_after)).unwrap();
        (found, listings.get())
    }

    fn head(seq: u64) -> Head {
        Head {
            seq,
            last_hash: Hash([seq as u8; 32]),
        }
    }

    #[test]
    fn a_ledger_without_entry_objects_has_no_last_seq() {
        assert_eq!(search(&[]), (None, 1));
    }

    #[test]
    fn a_ledger_of_one_entry_ends_at_it() {
        assert_eq!(search(&[1]).0, Some(1));
        assert_eq!(search(&[MAX_SEQ]).0, Some(MAX_SEQ));
    }

    #[test]
    fn the_last_seq_of_a_dense_ledger_is_found() {
        for n in [2, 3, 4096, 4097, 100_000] {
            let stored: Vec<u64> = (1..=n).collect();
            assert_eq!(search(&stored).0, Some(n), "{n} entries");
        }
    }

    #[test]
    fn the_last_seq_past_gaps_and_far_strays_is_found() {
        assert_eq!(search(&[3, 1000, 1_000_000]).0, Some(1_000_000));
        assert_eq!(search(&[1, 2, MAX_SEQ - 1]).0, Some(MAX_SEQ - 1));
    }

    #[test]
    fn the_search_takes_about_two_listings_per_doubling() {
        let stored: Vec<u64> = (1..=1_000_000).collect();
        let (found, listings) = search(&stored);
        assert_eq!(found, Some(1_000_000));
        // 2·log2(10^6) is about 40.
        assert!(listings <= 45, "{listings} listings");
    }

    #[test]
    fn nothing_past_the_end_leaves_the_end_and_head_as_they_were() {
        let past = past_the_end(10, Some(head(10)), true, None, Some(head(10)), None);
        assert_eq!(
            past,
            PastTheEnd {
                end: 10,
                head: Some(head(10)),
                uncounted_objects: None,
                stray_item: None,
            }
        );
    }

    #[test]
    fn a_ledger_that_grew_ends_at_its_new_head_and_its_objects_are_counted() {
        let past = past_the_end(10, Some(head(10)), true, Some(12), Some(head(12)), Some(11));
        assert_eq!((past.end, past.head), (12, Some(head(12))));
        assert_eq!((past.uncounted_objects, past.stray_item), (None, None));
    }

    #[test]
    fn objects_and_items_past_a_head_that_did_not_move_are_reported() {
        let past = past_the_end(10, Some(head(10)), true, Some(15), Some(head(10)), Some(11));
        assert_eq!(past.end, 10);
        assert_eq!(past.uncounted_objects, Some(15));
        assert_eq!(past.stray_item, Some(11));
    }

    #[test]
    fn a_head_turned_back_does_not_move_the_end_back() {
        let past = past_the_end(10, Some(head(10)), true, None, Some(head(7)), None);
        assert_eq!((past.end, past.head), (10, Some(head(10))));
    }

    #[test]
    fn objects_beyond_a_grown_head_are_still_uncounted() {
        let past = past_the_end(10, Some(head(10)), true, Some(20), Some(head(12)), None);
        assert_eq!(past.end, 12);
        assert_eq!(past.uncounted_objects, Some(20));
    }

    #[test]
    fn without_the_index_the_end_is_the_last_object_listed_and_none_is_uncounted() {
        let past = past_the_end(10, None, false, Some(14), None, None);
        assert_eq!(
            past,
            PastTheEnd {
                end: 14,
                head: None,
                uncounted_objects: None,
                stray_item: None,
            }
        );
        assert_eq!(past_the_end(10, None, false, None, None, None).end, 10);
    }
}
