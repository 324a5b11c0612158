//! The reads of one page of seqs: one bulk object read, one index query and one checkpoint
//! listing, merged by seq and then decoded, hashed and signature-checked off the async
//! runtime (rayon), each entry and checkpoint on its own.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use rayon::prelude::*;

use super::super::commit::PendingEntry;
use super::LedgerError;
use super::checkpoints::{CheckedCheckpoint, check_signature};
use super::pending::{self, PendingCheck};
use crate::chain::checkpoint::PublicKey;
use crate::chain::entry::{LedgerId, MAX_SEQ};
use crate::chain::keys::{
    checkpoint_key, checkpoints_prefix, entries_prefix, entry_key, seq_of_checkpoint_key,
    seq_of_entry_key,
};
use crate::chain::verify::{Evidence, check_entry};
use crate::store::{Retention, ScannedObject, SeqItem, Stores};

/// Seqs verified per page (one bulk read, one index query).
const PAGE: u64 = 4096;
/// Checkpoint objects read at once.
const FETCH_CONCURRENCY: usize = 32;

/// What was read for one seq.
pub(super) struct Fetched {
    pub(super) seq: u64,
    pub(super) body: Option<bytes::Bytes>,
    pub(super) versions: usize,
    pub(super) retention: Retention,
    pub(super) item: Option<SeqItem>,
    /// The entry is in `META`'s pending batch: committed, and its object or `SEQ#` item may
    /// not be written yet. What is missing is taken from the batch.
    pub(super) pending: Option<PendingCheck>,
    /// Nothing at all is stored for this seq: no object or version, no item, no pending entry.
    pub(super) nothing: bool,
    pub(super) evidence: Option<Evidence>,
}

/// A page read and hashed: its entries in seq order and the checkpoints that fall in it.
pub(super) struct Page {
    pub(super) entries: Vec<Fetched>,
    pub(super) checkpoints: Vec<CheckedCheckpoint>,
    /// The page's first and last seqs.
    pub(super) first: u64,
    pub(super) last: u64,
    /// Nothing at all is stored for any of its seqs.
    pub(super) empty: bool,
}

/// The pages of `from..=to`, as `(first, last)` seqs: `PAGE` seqs each, the last one shorter.
pub(super) fn page_ranges(from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + Send + 'static {
    let pages = if from > to { 0 } else { (to - from) / PAGE + 1 };
    (0..pages).map(move |i| {
        let a = from + i * PAGE;
        (a, to.min(a + PAGE - 1))
    })
}

/// Reads seqs `from..=to` (objects, index items, checkpoints) and checks each entry and
/// checkpoint on its own, in parallel.
pub(super) async fn read_page(
    stores: &Stores,
    ledger: &LedgerId,
    from: u64,
    to: u64,
    keys: Arc<Vec<PublicKey>>,
    use_index: bool,
    pending: &[PendingEntry],
) -> Result<Page, LedgerError> {
    let (objects, items, checkpoints) = tokio::try_join!(
        scan_entries(stores, ledger, from, to),
        async {
            if !use_index {
                return Ok(Vec::new());
            }
            Ok::<_, LedgerError>(
                stores
                    .index
                    .seq_items(ledger, from, to, (to - from + 1) as usize)
                    .await?,
            )
        },
        read_checkpoints(stores, ledger, from, Some(to)),
    )?;
    let mut entries = Vec::with_capacity((to - from + 1) as usize);
    for (seq, object, item) in by_seq(ledger, from, to, objects, items) {
        let (mut body, versions, version, mut retention) = match object {
            Some(o) => (o.body, o.versions, o.version, o.retention),
            None => (None, 0, None, Retention::Unlocked),
        };
        // Read exactly the version the index names when the bulk read saw another one.
        if let Some(wanted) = item.as_ref().and_then(|i| i.version_id.as_deref())
            && version.as_deref() != Some(wanted)
        {
            let pinned = stores
                .objects
                .get(&entry_key(ledger, seq), Some(wanted))
                .await?;
            retention = pinned
                .as_ref()
                .map_or(Retention::Unlocked, |o| o.retention.clone());
            body = pinned.map(|o| o.body);
        }
        // A seq of META's pending batch may not be written out yet: what is missing is taken
        // from the batch (the bytes for a missing object; its claim for a missing item).
        let pending = pending::entry_at(pending, seq).map(|entry| {
            let check = PendingCheck::of(body.is_some(), item.is_some());
            if check == PendingCheck::Unwritten {
                body = Some(entry.bytes.clone());
            }
            check
        });
        let nothing = body.is_none() && versions == 0 && item.is_none() && pending.is_none();
        entries.push(Fetched {
            seq,
            body,
            versions,
            retention,
            item,
            pending,
            nothing,
            evidence: None,
        });
    }
    let empty = entries.iter().all(|f| f.nothing);
    let ledger = ledger.clone();
    let checked = tokio::task::spawn_blocking(move || {
        entries.par_iter_mut().for_each(|f| {
            f.evidence = Some(check_entry(&ledger, f.seq, f.body.as_deref()));
            f.body = None;
        });
        let checkpoints: Vec<CheckedCheckpoint> = checkpoints
            .into_iter()
            .map(|(seq, key, bytes)| check_signature(seq, key, &bytes, &keys))
            .collect();
        Page {
            entries,
            checkpoints,
            first: from,
            last: to,
            empty,
        }
    })
    .await
    .map_err(|e| LedgerError::Unavailable {
        dependency: "verifier",
        detail: format!("hashing task failed: {e}"),
    })?;
    Ok(checked)
}

/// Lines up the scanned objects and the `SEQ#` items (both in seq order) with the seqs
/// `from..=to`: one row per seq, with what was found for it. Stray keys under the entries
/// prefix, and anything outside the range, are dropped.
fn by_seq(
    ledger: &LedgerId,
    from: u64,
    to: u64,
    objects: Vec<ScannedObject>,
    items: Vec<SeqItem>,
) -> Vec<(u64, Option<ScannedObject>, Option<SeqItem>)> {
    // Both lists are in seq order: merge them with the seqs, no lookups or key formatting.
    let mut objects = objects
        .into_iter()
        .filter_map(|o| Some((seq_of_entry_key(&o.key, ledger)?, o)))
        .peekable();
    let mut items = items.into_iter().peekable();
    let mut rows = Vec::with_capacity((to - from + 1) as usize);
    for seq in from..=to {
        while items.next_if(|i| i.seq < seq).is_some() {}
        while objects.next_if(|(s, _)| *s < seq).is_some() {}
        let item = items.next_if(|i| i.seq == seq);
        let object = objects.next_if(|(s, _)| *s == seq).map(|(_, o)| o);
        rows.push((seq, object, item));
    }
    rows
}

/// The objects stored under the entry keys from `from` to `to`, in key order, in as few bulk
/// reads as the keys allow (a stray key under the entries prefix only costs another read).
async fn scan_entries(
    stores: &Stores,
    ledger: &LedgerId,
    from: u64,
    to: u64,
) -> Result<Vec<ScannedObject>, LedgerError> {
    let prefix = entries_prefix(ledger);
    let last = entry_key(ledger, to);
    let mut after = (from > 1).then(|| entry_key(ledger, from - 1));
    let want = (to - from + 1) as usize;
    let mut out = Vec::with_capacity(want);
    // Bounded: each round either ends or moves `after` forward past at least one key.
    loop {
        let batch = stores
            .objects
            .scan(&prefix, after.as_deref(), want.max(16))
            .await?;
        let full = batch.len() >= want.max(16);
        let mut past_end = false;
        for o in batch {
            if o.key.as_str() > last.as_str() {
                past_end = true;
                break;
            }
            after = Some(o.key.clone());
            out.push(o);
        }
        if past_end || !full {
            return Ok(out);
        }
    }
}

/// The checkpoint objects with seq in `from..=to` (`to = None`: no upper bound), as
/// `(seq, key, bytes)` in seq order.
pub(super) async fn read_checkpoints(
    stores: &Stores,
    ledger: &LedgerId,
    from: u64,
    to: Option<u64>,
) -> Result<Vec<(u64, String, bytes::Bytes)>, LedgerError> {
    const LIST_PAGE: usize = 1000;
    let prefix = checkpoints_prefix(ledger);
    let mut after = (from > 1).then(|| checkpoint_key(ledger, from - 1));
    let mut keys = Vec::new();
    'pages: loop {
        let page = stores
            .objects
            .list(&prefix, after.as_deref(), LIST_PAGE)
            .await?;
        let full = page.len() == LIST_PAGE;
        for key in page {
            let seq = seq_of_checkpoint_key(&key).unwrap_or(MAX_SEQ);
            if to.is_some_and(|to| seq > to) {
                break 'pages;
            }
            after = Some(key.clone());
            keys.push((seq, key));
        }
        if !full {
            break;
        }
    }
    let objects = stream::iter(keys.into_iter().map(|(seq, key)| async move {
        let object = stores.objects.get(&key, None).await?;
        Ok::<_, LedgerError>(object.map(|o| (seq, key, o.body)))
    }))
    .buffered(FETCH_CONCURRENCY)
    .try_collect::<Vec<_>>()
    .await?;
    Ok(objects.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::entry::Timestamp;
    use crate::chain::hash::Hash;

    fn ledger() -> LedgerId {
        LedgerId::parse("acme").unwrap()
    }

    fn object(key: String) -> ScannedObject {
        ScannedObject {
            key,
            body: Some(bytes::Bytes::from_static(b"entry")),
            version: None,
            versions: 1,
            retention: Retention::NotSupported,
        }
    }

    fn item(seq: u64) -> SeqItem {
        SeqItem {
            seq,
            entry_hash: Hash([1; 32]),
            prev_hash: Hash([0; 32]),
            timestamp: Timestamp::from_unix_micros(0).unwrap(),
            object_key: entry_key(&ledger(), seq),
            version_id: None,
        }
    }

    /// Which seqs of `rows` have an object and which an item.
    fn found(rows: &[(u64, Option<ScannedObject>, Option<SeqItem>)]) -> Vec<(u64, bool, bool)> {
        rows.iter()
            .map(|(seq, o, i)| (*seq, o.is_some(), i.is_some()))
            .collect()
    }

    #[test]
    fn a_range_within_one_page_is_one_page() {
        assert_eq!(page_ranges(1, 10).collect::<Vec<_>>(), [(1, 10)]);
    }

    #[test]
    fn pages_cover_the_range_in_runs_of_page_seqs_and_the_last_is_shorter() {
        let pages: Vec<_> = page_ranges(1, 2 * PAGE + 5).collect();
        assert_eq!(
            pages,
            [
                (1, PAGE),
                (PAGE + 1, 2 * PAGE),
                (2 * PAGE + 1, 2 * PAGE + 5)
            ]
        );
    }

    #[test]
    fn a_range_of_exactly_one_page_is_not_followed_by_an_empty_one() {
        assert_eq!(
            page_ranges(5, PAGE + 4).collect::<Vec<_>>(),
            [(5, PAGE + 4)]
        );
    }

    #[test]
    fn an_empty_range_has_no_pages() {
        assert_eq!(page_ranges(1, 0).count(), 0);
        assert_eq!(page_ranges(9, 3).count(), 0);
    }

    #[test]
    fn every_seq_of_the_range_gets_a_row_with_what_was_found_for_it() {
        let id = ledger();
        let objects = vec![object(entry_key(&id, 2)), object(entry_key(&id, 3))];
        let items = vec![item(1), item(3)];
        let rows = by_seq(&id, 1, 4, objects, items);
        assert_eq!(
            found(&rows),
            [
                (1, false, true),
                (2, true, false),
                (3, true, true),
                (4, false, false)
            ]
        );
    }

    #[test]
    fn stray_keys_and_seqs_outside_the_range_are_dropped() {
        let id = ledger();
        let stray = format!("{}not-an-entry", entries_prefix(&id));
        let objects = vec![
            object(entry_key(&id, 1)),
            object(stray),
            object(entry_key(&id, 3)),
            object(entry_key(&id, 9)),
        ];
        let items = vec![item(1), item(2), item(9)];
        let rows = by_seq(&id, 2, 3, objects, items);
        assert_eq!(found(&rows), [(2, false, true), (3, true, false)]);
    }
}
