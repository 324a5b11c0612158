//! The commit protocol (`docs/PROTOCOL.md`), written once over the two storage traits.
//!
//! 1. **Claim**: one compare-and-set of `META` moves `seq_counter` past the batch and stores
//!    the batch's entries (their full stored bytes) as `META.pending`. This is the commit
//!    point: the content is durable atomically with the claim, so nothing can ever be
//!    claimed without its bytes.
//! 2. **Roll forward**: write every entry object (write-once), then every `SEQ#` item
//!    (write-once). Both steps are idempotent and derive only from `META.pending`, so any
//!    writer, in any process, can redo them after a crash, and concurrent redos are harmless.
//! 3. The next claim replaces `pending`, but only after the pending batch it finds has been
//!    rolled forward.

use bytes::Bytes;
use futures::future::try_join_all;

use super::LedgerError;
use crate::chain::entry::{EntryHeader, LedgerId, Record, Timestamp, encode, entry_key};
use crate::chain::hash::Hash;
use crate::chain::verify::{Evidence, check_entry};
use crate::store::{Meta, NewObject, PendingBatch, PutOutcome, SeqItem, SeqPut, Stores};

/// Builds the entries of a batch on top of `head`: seqs `head.seq_counter + 1 ..`, chained
/// from `head.last_hash`, all stamped `timestamp`. Returns the `META` that claims them and the
/// entries as roll-forward needs them (what [`decode_pending`] would give, without decoding).
pub(crate) fn build_batch(
    ledger: &LedgerId,
    head: &Meta,
    records: &[Record],
    timestamp: Timestamp,
) -> (Meta, Vec<PendingEntry>) {
    let first_seq = head.seq_counter + 1;
    let mut prev_hash = head.last_hash;
    let entries: Vec<PendingEntry> = records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let seq = first_seq + i as u64;
            let header = EntryHeader {
                ledger_id: ledger.clone(),
                seq,
                prev_hash,
                timestamp,
            };
            let bytes = Bytes::from(encode(&header, record));
            let hash = Hash::of_entry(&bytes);
            let entry = PendingEntry {
                seq,
                bytes,
                hash,
                prev_hash,
                timestamp,
                key: entry_key("", ledger, seq),
            };
            prev_hash = hash;
            entry
        })
        .collect();
    let meta = Meta {
        seq_counter: head.seq_counter + records.len() as u64,
        last_hash: prev_hash,
        pending: Some(PendingBatch {
            first_seq,
            entries: entries.iter().map(|e| e.bytes.clone()).collect(),
        }),
    };
    (meta, entries)
}

/// One entry of a pending batch, decoded for roll-forward.
pub(crate) struct PendingEntry {
    pub seq: u64,
    pub bytes: Bytes,
    pub hash: Hash,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
    pub key: String,
}

impl PendingEntry {
    /// The entry's object.
    fn object(&self) -> NewObject {
        NewObject {
            key: self.key.clone(),
            body: self.bytes.clone(),
        }
    }

    /// The entry's `SEQ#` item, naming object version `version_id`.
    fn seq_item(&self, version_id: Option<String>) -> SeqItem {
        SeqItem {
            seq: self.seq,
            entry_hash: self.hash,
            prev_hash: self.prev_hash,
            timestamp: self.timestamp,
            object_key: self.key.clone(),
            version_id,
        }
    }
}

/// The objects and `SEQ#` items of a batch written out in the same step as its claim
/// ([`crate::store::IndexStore::commit_batch`]; such stores have no object versions).
pub(crate) fn write_out(entries: &[PendingEntry]) -> (Vec<NewObject>, Vec<SeqItem>) {
    entries
        .iter()
        .map(|e| (e.object(), e.seq_item(None)))
        .unzip()
}

/// Decodes a pending batch and checks it is one unbroken piece of chain, so that nothing
/// inconsistent is ever written to write-once storage.
pub(crate) fn decode_pending(
    ledger: &LedgerId,
    pending: &PendingBatch,
) -> Result<Vec<PendingEntry>, LedgerError> {
    if pending.entries.is_empty() {
        return Err(LedgerError::Corrupt {
            seq: pending.first_seq,
            detail: "a pending batch with no entries".into(),
        });
    }
    let mut out: Vec<PendingEntry> = Vec::with_capacity(pending.entries.len());
    for (i, bytes) in pending.entries.iter().enumerate() {
        let seq = pending.first_seq + i as u64;
        let corrupt = |detail: String| LedgerError::Corrupt { seq, detail };
        let entry = match check_entry(ledger, seq, Some(bytes)) {
            Evidence::Entry(entry) => entry,
            Evidence::Malformed { reason, .. } => {
                return Err(corrupt(format!("pending entry is malformed: {reason}")));
            }
            Evidence::Missing => unreachable!("bytes were given"),
        };
        if let Some(prev) = out.last()
            && prev.hash != entry.prev_hash
        {
            return Err(corrupt(
                "pending entry does not link to the one before it".into(),
            ));
        }
        out.push(PendingEntry {
            seq,
            bytes: bytes.clone(),
            hash: entry.hash,
            prev_hash: entry.prev_hash,
            timestamp: entry.timestamp,
            key: entry_key("", ledger, seq),
        });
    }
    Ok(out)
}

/// Whether every entry of `pending` already has its `SEQ#` item (the last step of roll-forward),
/// each agreeing with the entry. One index query; used before redoing a batch someone else
/// (or an earlier run of this process) claimed.
pub(crate) async fn is_rolled_forward(
    stores: &Stores,
    ledger: &LedgerId,
    entries: &[PendingEntry],
) -> Result<bool, LedgerError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(true);
    };
    let items = stores
        .index
        .seq_items(ledger, first.seq, last.seq, entries.len())
        .await?;
    Ok(items.len() == entries.len()
        && items
            .iter()
            .zip(entries)
            .all(|(item, e)| item.entry_hash == e.hash))
}

/// Writes a claimed batch out: entry objects, then `SEQ#` items. Idempotent; safe to run
/// concurrently with other writers doing the same. Existing objects or items that differ from
/// what the batch says are corruption: reported, never overwritten.
pub(crate) async fn roll_forward(
    stores: &Stores,
    ledger: &LedgerId,
    entries: &[PendingEntry],
) -> Result<(), LedgerError> {
    let objects: Vec<NewObject> = entries.iter().map(PendingEntry::object).collect();
    let outcomes = stores.objects.put_new(&objects).await?;
    let versions = try_join_all(
        entries
            .iter()
            .zip(outcomes)
            .map(|(entry, outcome)| async move {
                match outcome {
                    PutOutcome::Created { version } => Ok(version),
                    PutOutcome::AlreadyExists => existing_version(stores, entry).await,
                }
            }),
    )
    .await?;
    let items: Vec<SeqItem> = entries
        .iter()
        .zip(versions)
        .map(|(e, version_id)| e.seq_item(version_id))
        .collect();
    let outcomes = stores.index.put_seq_items(ledger, &items).await?;
    for (item, outcome) in items.iter().zip(outcomes) {
        if let SeqPut::AlreadyExists(existing) = outcome
            && existing != *item
        {
            return Err(LedgerError::Corrupt {
                seq: item.seq,
                detail: format!(
                    "the SEQ# item already stored disagrees with the committed entry ({existing:?})"
                ),
            });
        }
    }
    Ok(())
}

/// An object already exists at an entry's key: it must be exactly this entry (a redo of an
/// earlier write); then its version is the one to index.
async fn existing_version(
    stores: &Stores,
    entry: &PendingEntry,
) -> Result<Option<String>, LedgerError> {
    match stores.objects.get(&entry.key, None).await? {
        Some(object) if object.body == entry.bytes => Ok(object.version),
        Some(_) => Err(LedgerError::Corrupt {
            seq: entry.seq,
            detail: format!(
                "object {} holds different bytes than the committed entry",
                entry.key
            ),
        }),
        None => Err(LedgerError::Corrupt {
            seq: entry.seq,
            detail: format!(
                "object {} was reported to exist but cannot be read",
                entry.key
            ),
        }),
    }
}

/// Checks that a head read from the index is one this protocol could have written, before
/// anything is built on it or written from it: its pending batch ends at `seq_counter` with the
/// hash `last_hash` and links to the stored entry before it (or to genesis), and a head without
/// a pending batch names the hash of the entry stored at `seq_counter`. A head that fails is
/// corruption (an edited `META`): writing on it would lock a broken link into WORM storage.
pub(crate) async fn check_head(
    stores: &Stores,
    ledger: &LedgerId,
    head: &Meta,
) -> Result<(), LedgerError> {
    let seq = head.seq_counter;
    let corrupt = |detail: String| LedgerError::Corrupt { seq, detail };
    let (linked_seq, expected_hash) = match &head.pending {
        None if seq == 0 => {
            return if head.last_hash == Hash::GENESIS {
                Ok(())
            } else {
                Err(corrupt(
                    "META of an empty ledger has a last_hash other than genesis".into(),
                ))
            };
        }
        None => (seq, head.last_hash),
        Some(pending) => {
            let entries = decode_pending(ledger, pending)?;
            let (first, last) = (&entries[0], &entries[entries.len() - 1]);
            if last.seq != seq || last.hash != head.last_hash {
                return Err(corrupt(format!(
                    "META says seq {seq} with hash {} but its pending batch ends at seq {} with hash {}",
                    head.last_hash, last.seq, last.hash
                )));
            }
            if first.seq == 1 {
                return if first.prev_hash == Hash::GENESIS {
                    Ok(())
                } else {
                    Err(corrupt(
                        "the pending batch's first entry does not link to genesis".into(),
                    ))
                };
            }
            (first.seq - 1, first.prev_hash)
        }
    };
    let key = entry_key("", ledger, linked_seq);
    match stores.objects.get(&key, None).await? {
        Some(object) if Hash::of_entry(&object.body) == expected_hash => Ok(()),
        Some(_) => Err(corrupt(format!(
            "META does not link to the entry stored at seq {linked_seq}"
        ))),
        None => Err(corrupt(format!(
            "META links to seq {linked_seq}, which has no stored entry"
        ))),
    }
}
