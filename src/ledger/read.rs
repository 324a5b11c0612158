//! Reads: one record, a page of records, a head, the list of ledgers.
//!
//! A record is read through its `SEQ#` item (the exact object version that was indexed) and
//! re-hashed before it is returned, so a read never serves bytes the chain does not vouch for.

use base64::Engine;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::VerifyRange;
use super::commit::now;
use super::{Ledger, LedgerError};
use crate::chain::checkpoint::{Checkpoint, ExportEnd, ExportEndBody};
use crate::chain::entry::{IdempotencyKey, LedgerId, MAX_SEQ, Timestamp, decode};
use crate::chain::hash::Hash;
use crate::chain::keys::entry_key;
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
    /// The key it was appended with, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
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

    /// The record appended with `key`: `None` if none is, and none can be without a new
    /// append; [`LedgerError::IdempotencyKeyInFlight`] while a writer is claiming it. Built
    /// from the entry the lookup reads to decide the key.
    pub async fn record_by_key(
        &self,
        ledger: &LedgerId,
        key: &IdempotencyKey,
    ) -> Result<Option<StoredRecord>, LedgerError> {
        match self.writer(ledger).find_key(key).await? {
            Some(entry) => Ok(Some(to_record(
                ledger,
                entry.seq,
                entry.key,
                &entry.bytes,
                None,
            )?)),
            None => Ok(None),
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
        if items.len() < (to - after) as usize {
            // A batch whose SEQ# items are still landing (in any order), or one a crash left
            // unfinished: finish it, then read the index again.
            self.finish_pending(ledger).await?;
            items = self
                .stores()
                .index
                .seq_items(ledger, after + 1, to, limit)
                .await?;
        }
        // Every seq of the range is served, in order: one without an index item is read
        // from the object its seq determines, so a listing never skips a record.
        let mut items = items.into_iter().peekable();
        let loads = (after + 1..=to).map(|seq| {
            let item = items.next_if(|i| i.seq == seq);
            async move {
                match item {
                    Some(item) => self.load(ledger, item).await,
                    None => self.load_unindexed(ledger, seq).await,
                }
            }
        });
        let records: Vec<StoredRecord> = stream::iter(loads)
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        let next_after = (to < head.seq).then_some(to);
        Ok(RecordPage {
            records,
            next_after,
        })
    }

    /// A record whose `SEQ#` item is missing: read from the key its seq determines. The
    /// index is an index; the stored entry is the record.
    async fn load_unindexed(
        &self,
        ledger: &LedgerId,
        seq: u64,
    ) -> Result<StoredRecord, LedgerError> {
        let key = entry_key(ledger, seq);
        let object = self
            .stores()
            .objects
            .get(&key, None)
            .await?
            .ok_or_else(|| LedgerError::Corrupt {
                seq: Some(seq),
                detail:
                    "the head covers this seq but it has neither an index item nor a stored entry"
                        .into(),
            })?;
        to_record(ledger, seq, key, &object.body, None)
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

    /// The ledgers among `ids` that exist and sort after `after`, ascending, at most `limit`:
    /// a listing for a caller that may see only `ids`, which never looks at (or reveals) any
    /// other ledger. The second value is whether ids remain after a full page.
    pub async fn ledgers_among(
        &self,
        ids: &[LedgerId],
        after: Option<&LedgerId>,
        limit: usize,
    ) -> Result<(Vec<LedgerSummary>, bool), LedgerError> {
        let mut ids: Vec<&LedgerId> = ids
            .iter()
            .filter(|id| after.is_none_or(|a| *id > a))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut page = Vec::new();
        let mut rest = ids.as_slice();
        while page.len() < limit && !rest.is_empty() {
            let (chunk, tail) = rest.split_at(READ_CONCURRENCY.min(rest.len()));
            rest = tail;
            let heads =
                futures::future::try_join_all(chunk.iter().map(|id| self.stores().index.head(id)))
                    .await?;
            for (id, meta) in chunk.iter().zip(heads) {
                if let Some(meta) = meta
                    && page.len() < limit
                {
                    page.push(LedgerSummary {
                        ledger_id: (*id).clone(),
                        seq: meta.seq_counter,
                        last_hash: meta.last_hash,
                    });
                }
            }
        }
        let more = page.len() == limit
            && page
                .last()
                .zip(ids.last())
                .is_some_and(|(shown, last)| *last > &shown.ledger_id);
        Ok((page, more))
    }

    async fn load(&self, ledger: &LedgerId, item: SeqItem) -> Result<StoredRecord, LedgerError> {
        let object = self
            .stores()
            .objects
            .get(&item.object_key, item.version_id.as_deref())
            .await?
            .ok_or_else(|| LedgerError::Corrupt {
                seq: Some(item.seq),
                detail: format!("indexed object {} is missing", item.object_key),
            })?;
        to_record(
            ledger,
            item.seq,
            item.object_key,
            &object.body,
            Some(item.entry_hash),
        )
    }
}

/// Decodes a stored entry into the API's record, checking it is this ledger's entry at `seq`
/// and, when the index recorded one, that it hashes to `indexed_hash`.
fn to_record(
    ledger: &LedgerId,
    seq: u64,
    object_key: String,
    body: &[u8],
    indexed_hash: Option<Hash>,
) -> Result<StoredRecord, LedgerError> {
    let corrupt = |detail: String| LedgerError::Corrupt {
        seq: Some(seq),
        detail,
    };
    let hash = Hash::of_entry(body);
    if let Some(indexed) = indexed_hash
        && hash != indexed
    {
        return Err(corrupt(format!(
            "stored bytes hash to {hash}, the index recorded {indexed}"
        )));
    }
    let entry = decode(body).map_err(|e| corrupt(e.to_string()))?;
    if entry.header.seq != seq || entry.header.ledger_id != *ledger {
        return Err(corrupt(
            "the object holds another ledger's or seq's entry".into(),
        ));
    }
    Ok(StoredRecord {
        ledger_id: entry.header.ledger_id,
        seq,
        entry_hash: hash,
        prev_hash: entry.header.prev_hash,
        timestamp: entry.header.timestamp,
        object_key,
        idempotency_key: entry.header.idempotency_key,
        record: entry.record.to_owned(),
    })
}

/// One line of an export: an entry's exact stored bytes with what the index records for it.
/// `stored` is `None` when the index names an object that cannot be found.
#[derive(Debug, Clone)]
pub struct ExportedEntry {
    pub item: SeqItem,
    pub stored: Option<bytes::Bytes>,
}

/// One line of an export's NDJSON (`GET .../export`), the one shape its writer
/// (`http::export`) and its reader (`ledger-verify --bundle`) share; `docs/FORMAT.md` and
/// `scripts/verify_chain.py` read the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExportLine {
    /// `{"checkpoint": {...}}`: the ledger's latest signed checkpoint (an export's first line).
    Checkpoint(ExportCheckpointLine),
    /// `{"seq", "stored", "entry_hash", "prev_hash", "timestamp"}`: one entry.
    Entry(ExportEntryLine),
    /// `{"end": {...}}`: the export's last line, stating its ledger, range and head.
    End(ExportEndLine),
}

impl ExportLine {
    /// Whether `line` has the checkpoint line's shape (the only line starting with that key),
    /// told without parsing it.
    pub fn is_checkpoint(line: &str) -> bool {
        line.starts_with("{\"checkpoint\"")
    }

    /// Whether `line` has the end line's shape, told without parsing it.
    pub fn is_end(line: &str) -> bool {
        line.starts_with("{\"end\"")
    }

    /// Parses one line as the variant its shape names, so an error names what is wrong with
    /// that variant.
    pub fn parse(line: &str) -> serde_json::Result<ExportLine> {
        if Self::is_checkpoint(line) {
            serde_json::from_str(line).map(ExportLine::Checkpoint)
        } else if Self::is_end(line) {
            serde_json::from_str(line).map(ExportLine::End)
        } else {
            serde_json::from_str(line).map(ExportLine::Entry)
        }
    }

    /// The line's JSON, newline-terminated.
    pub fn to_ndjson(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec(self).expect("an export line always serialises");
        out.push(b'\n');
        out
    }
}

/// The checkpoint line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportCheckpointLine {
    pub checkpoint: Checkpoint,
}

/// The end line of an export: written after the last entry line, so an export cut short
/// (or emptied) is told from a whole one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportEndLine {
    pub end: ExportEnd,
}

/// An entry line of an export. The export writes every field; a reader also accepts a line
/// with only `seq` and `stored` (no index claims to compare), as `scripts/verify_chain.py`
/// documents. A line without `stored` means the index names an object that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportEntryLine {
    pub seq: u64,
    /// Base64 (standard alphabet, padded) of the entry's exact stored bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
    /// What the index recorded for the entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_hash: Option<Hash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_hash: Option<Hash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
}

impl ExportEntryLine {
    /// The stored bytes, decoded from base64 (`None` when the line has none).
    pub fn stored_bytes(&self) -> Result<Option<Vec<u8>>, base64::DecodeError> {
        self.stored
            .as_ref()
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
            .transpose()
    }
}

impl From<&ExportedEntry> for ExportEntryLine {
    fn from(entry: &ExportedEntry) -> ExportEntryLine {
        ExportEntryLine {
            seq: entry.item.seq,
            stored: entry
                .stored
                .as_ref()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            entry_hash: Some(entry.item.entry_hash),
            prev_hash: Some(entry.item.prev_hash),
            timestamp: Some(entry.item.timestamp),
        }
    }
}

/// An export as [`Ledger::export`] cuts it: the entries to stream, then the end line.
pub struct Export {
    /// The head the export was cut at.
    pub head: Head,
    /// The end line's statement (signed when the service has a key).
    pub end: ExportEnd,
    /// The entries `end.from..=end.to`, in seq order.
    pub entries: futures::stream::BoxStream<'static, Result<ExportedEntry, LedgerError>>,
}

/// Seqs an export reads per index query.
const EXPORT_PAGE: u64 = 256;

impl Ledger {
    /// An export of `range` (the rule [`VerifyRange::within`] states, shared with
    /// verification): its entries page by page, for offline verification, and the end line
    /// that follows them, signed when the service has a key. Memory stays bounded by one page
    /// whatever the range.
    pub async fn export(
        &self,
        ledger: &LedgerId,
        range: VerifyRange,
    ) -> Result<Export, LedgerError> {
        if range.from == Some(0) {
            return Err(LedgerError::InvalidRange("from starts at 1".into()));
        }
        // Write out the last claimed batch first, so the export reaches the head it reports.
        match self.finish_pending(ledger).await {
            Ok(_) | Err(LedgerError::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
        let head = self.head(ledger).await?;
        let (from, to) = range.within(1, head.seq)?;
        let last_hash = if to == head.seq {
            head.last_hash
        } else {
            self.stores()
                .index
                .seq_items(ledger, to, to, 1)
                .await?
                .pop()
                .filter(|item| item.seq == to)
                .map(|item| item.entry_hash)
                .ok_or_else(|| LedgerError::Corrupt {
                    seq: Some(to),
                    detail: format!("the index holds no item for seq {to}, below the head"),
                })?
        };
        let body = ExportEndBody {
            ledger_id: ledger.clone(),
            from,
            to,
            last_hash,
            head_seq: head.seq,
            head_hash: head.last_hash,
            timestamp: now(),
        };
        let end = match &self.options().signer {
            Some(signer) => signer.sign_export_end(body),
            None => ExportEnd::unsigned(body),
        };
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
        let entries = pages
            .map_ok(|entries| stream::iter(entries.into_iter().map(Ok)))
            .try_flatten()
            .boxed();
        Ok(Export { head, end, entries })
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
