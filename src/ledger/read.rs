//! Reads: one record, a page of records, a head, the list of ledgers.
//!
//! A record is read through its `SEQ#` item (the exact object version that was indexed) and
//! re-hashed before it is returned, so a read never serves bytes the chain does not vouch for.

use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;
use serde_json::value::RawValue;

use super::{Ledger, LedgerError};
use crate::chain::entry::{LedgerId, MAX_SEQ, Timestamp, decode};
use crate::chain::hash::Hash;
use crate::chain::verify::Head;
use crate::store::SeqItem;

/// One record as the API returns it.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRecord {
    pub ledger_id: LedgerId,
    pub seq: u64,
    pub entry_hash: Hash,
    pub prev_hash: Hash,
    pub timestamp: Timestamp,
    pub object_key: String,
    pub record: Box<RawValue>,
}

/// A page of records in seq order.
#[derive(Debug, Clone, Serialize)]
pub struct RecordPage {
    pub records: Vec<StoredRecord>,
    /// Pass as `after` for the next page; `None` at the end of the ledger.
    pub next_after: Option<u64>,
}

/// A ledger and its head.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerSummary {
    pub ledger_id: LedgerId,
    pub seq: u64,
    pub last_hash: Hash,
}

/// Object reads a page issues at once.
const READ_CONCURRENCY: usize = 32;

impl Ledger {
    /// The ledger's head: its last seq and that entry's hash.
    pub async fn head(&self, ledger: &LedgerId) -> Result<Head, LedgerError> {
        let meta = self
            .stores()
            .index
            .head(ledger)
            .await?
            .ok_or(LedgerError::LedgerNotFound)?;
        Ok(Head {
            seq: meta.seq_counter,
            last_hash: meta.last_hash,
        })
    }

    /// One record.
    pub async fn record(&self, ledger: &LedgerId, seq: u64) -> Result<StoredRecord, LedgerError> {
        if let Some(item) = self
            .stores()
            .index
            .seq_items(ledger, seq, seq, 1)
            .await?
            .pop()
        {
            return self.load(ledger, item).await;
        }
        let head = self.head(ledger).await?;
        if seq == 0 || seq > head.seq {
            return Err(LedgerError::RecordNotFound);
        }
        // Claimed but not written out yet (a writer crashed or storage failed mid-commit):
        // finish the batch, then read it like any other.
        self.finish_pending(ledger).await?;
        match self
            .stores()
            .index
            .seq_items(ledger, seq, seq, 1)
            .await?
            .pop()
        {
            Some(item) => self.load(ledger, item).await,
            None => Err(LedgerError::RecordNotFound),
        }
    }

    /// Up to `limit` records with seq greater than `after`, in order.
    pub async fn records(
        &self,
        ledger: &LedgerId,
        after: u64,
        limit: usize,
    ) -> Result<RecordPage, LedgerError> {
        let head = self.head(ledger).await?;
        if after >= head.seq {
            return Ok(RecordPage {
                records: Vec::new(),
                next_after: None,
            });
        }
        let to = head
            .seq
            .min(after.saturating_add(limit as u64))
            .min(MAX_SEQ);
        let mut items = self
            .stores()
            .index
            .seq_items(ledger, after + 1, to, limit)
            .await?;
        if items.len() < (to - after) as usize && self.finish_pending(ledger).await? {
            items = self
                .stores()
                .index
                .seq_items(ledger, after + 1, to, limit)
                .await?;
        }
        let records: Vec<StoredRecord> =
            stream::iter(items.into_iter().map(|item| self.load(ledger, item)))
                .buffered(READ_CONCURRENCY)
                .try_collect()
                .await?;
        let last = records.last().map_or(after, |r| r.seq);
        let next_after = (last < head.seq && !records.is_empty()).then_some(last);
        Ok(RecordPage {
            records,
            next_after,
        })
    }

    /// Ledgers with ids after `after`, in id order, with their heads.
    pub async fn ledgers(
        &self,
        after: Option<&LedgerId>,
        limit: usize,
    ) -> Result<Vec<LedgerSummary>, LedgerError> {
        let ids = self.stores().index.ledgers(after, limit).await?;
        stream::iter(ids.into_iter().map(|id| async move {
            let meta = self.stores().index.head(&id).await?;
            // A ledger listed but without META yet (creation interrupted) is empty.
            let (seq, last_hash) =
                meta.map_or((0, Hash::GENESIS), |m| (m.seq_counter, m.last_hash));
            Ok::<_, LedgerError>(LedgerSummary {
                ledger_id: id,
                seq,
                last_hash,
            })
        }))
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
    }

    async fn load(&self, ledger: &LedgerId, item: SeqItem) -> Result<StoredRecord, LedgerError> {
        let corrupt = |detail: String| LedgerError::Corrupt {
            seq: item.seq,
            detail,
        };
        let object = self
            .stores()
            .objects
            .get(&item.object_key, item.version_id.as_deref())
            .await?
            .ok_or_else(|| corrupt(format!("indexed object {} is missing", item.object_key)))?;
        let hash = Hash::of_entry(&object.body);
        if hash != item.entry_hash {
            return Err(corrupt(format!(
                "stored bytes hash to {hash}, the index recorded {}",
                item.entry_hash
            )));
        }
        let entry = decode(&object.body).map_err(|e| corrupt(e.to_string()))?;
        if entry.header.seq != item.seq || entry.header.ledger_id != *ledger {
            return Err(corrupt(
                "the object holds another ledger's or seq's entry".into(),
            ));
        }
        Ok(StoredRecord {
            ledger_id: entry.header.ledger_id,
            seq: item.seq,
            entry_hash: hash,
            prev_hash: entry.header.prev_hash,
            timestamp: entry.header.timestamp,
            object_key: item.object_key,
            record: entry.record.to_owned(),
        })
    }
}

/// One line of an export: an entry's exact stored bytes with what the index records for it.
/// `stored` is `None` when the index names an object that cannot be found.
#[derive(Debug, Clone)]
pub struct ExportedEntry {
    pub item: SeqItem,
    pub stored: Option<bytes::Bytes>,
}

/// Seqs an export reads per index query.
const EXPORT_PAGE: u64 = 256;

impl Ledger {
    /// The entries `from..=to` (clamped to the head), page by page, for offline verification.
    /// Memory stays bounded by one page whatever the range.
    pub async fn export(
        &self,
        ledger: &LedgerId,
        from: u64,
        to: Option<u64>,
    ) -> Result<
        impl futures::Stream<Item = Result<ExportedEntry, LedgerError>> + Send + 'static,
        LedgerError,
    > {
        if from == 0 {
            return Err(LedgerError::InvalidRange("from starts at 1".into()));
        }
        if let Some(to) = to
            && to < from
        {
            return Err(LedgerError::InvalidRange(format!(
                "from ({from}) is greater than to ({to})"
            )));
        }
        let head = self.head(ledger).await?;
        let to = to.unwrap_or(head.seq).min(head.seq);
        let (this, ledger) = (self.clone(), ledger.clone());
        let pages = stream::unfold(from, move |page_from| {
            let (this, ledger) = (this.clone(), ledger.clone());
            async move {
                if page_from > to {
                    return None;
                }
                let page_to = to.min(page_from + EXPORT_PAGE - 1);
                let page = this.export_page(&ledger, page_from, page_to).await;
                Some((page, page_to + 1))
            }
        });
        Ok(pages
            .map_ok(|entries| stream::iter(entries.into_iter().map(Ok)))
            .try_flatten())
    }

    async fn export_page(
        &self,
        ledger: &LedgerId,
        from: u64,
        to: u64,
    ) -> Result<Vec<ExportedEntry>, LedgerError> {
        let items = self
            .stores()
            .index
            .seq_items(ledger, from, to, (to - from + 1) as usize)
            .await?;
        stream::iter(items.into_iter().map(|item| async move {
            let object = self
                .stores()
                .objects
                .get(&item.object_key, item.version_id.as_deref())
                .await?;
            Ok::<_, LedgerError>(ExportedEntry {
                stored: object.map(|o| o.body),
                item,
            })
        }))
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await
    }
}
