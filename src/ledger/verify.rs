//! Verification over storage: re-read every stored entry, re-hash it and walk the chain with
//! the pure verifier. The index is evidence to check, never a source of truth: objects are
//! read at the keys their seqs determine, and the index's claims are compared against them.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt, stream};
use serde::Serialize;

use super::{Ledger, LedgerError};
use crate::chain::entry::{LedgerId, MAX_SEQ, entries_prefix, entry_key};
use crate::chain::hash::Hash;
use crate::chain::verify::{ChainVerifier, Failure, FailureKind, Head, IndexClaim, check_entry};
use crate::store::SeqItem;

/// Seqs verified per index query.
const PAGE: u64 = 512;
/// Object reads in flight at once.
const FETCH_CONCURRENCY: usize = 32;

/// Which seqs to verify; `None` ends mean the ledger's first entry and its head.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyRange {
    pub from: Option<u64>,
    pub to: Option<u64>,
}

/// The outcome of verifying a ledger (or a range of it).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ledger_id: LedgerId,
    pub ok: bool,
    pub from: u64,
    pub to: u64,
    /// Entries whose stored bytes were read and checked.
    pub verified: u64,
    pub head: Head,
    /// Up to the configured bound, in seq order.
    pub failures: Vec<Failure>,
    /// Every failure found, including those beyond the bound.
    pub failures_total: u64,
}

/// What was read for one seq.
struct Fetched {
    seq: u64,
    key: String,
    body: Option<bytes::Bytes>,
    versions: usize,
    item: Option<SeqItem>,
}

impl Ledger {
    pub async fn verify(
        &self,
        ledger: &LedgerId,
        range: VerifyRange,
    ) -> Result<VerifyReport, LedgerError> {
        // Write out an interrupted batch first so the stored chain is complete. A corrupt one
        // is left for the walk below to report in detail.
        match self.finish_pending(ledger).await {
            Ok(_) | Err(LedgerError::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
        let meta = self
            .stores()
            .index
            .head(ledger)
            .await?
            .ok_or(LedgerError::LedgerNotFound)?;
        let head = Head {
            seq: meta.seq_counter,
            last_hash: meta.last_hash,
        };
        let from = range.from.unwrap_or(1);
        let to = range.to.unwrap_or(head.seq);
        if from == 0 {
            return Err(LedgerError::InvalidRange("from starts at 1".into()));
        }
        if range.from.is_some() || range.to.is_some() {
            if from > to {
                return Err(LedgerError::InvalidRange(format!(
                    "from ({from}) is greater than to ({to})"
                )));
            }
            if to > head.seq {
                return Err(LedgerError::InvalidRange(format!(
                    "to ({to}) is past the head (seq {})",
                    head.seq
                )));
            }
        }
        let anchor = if from == 1 {
            Some(Hash::GENESIS)
        } else {
            self.anchor(ledger, from - 1).await?
        };
        let mut verifier = ChainVerifier::new(from, anchor, self.options().max_verify_failures);
        let mut page_from = from;
        while page_from <= to {
            let page_to = to.min(page_from + PAGE - 1);
            for fetched in self.fetch_page(ledger, page_from, page_to).await? {
                self.check_fetched(ledger, &mut verifier, &fetched);
            }
            page_from = page_to + 1;
        }
        let at_head = to == head.seq;
        if at_head {
            self.check_nothing_beyond(ledger, head.seq, &mut verifier)
                .await?;
        }
        let outcome = verifier.finish(at_head.then_some(head));
        Ok(VerifyReport {
            ledger_id: ledger.clone(),
            ok: outcome.ok(),
            from,
            to,
            verified: outcome.verified,
            head,
            failures: outcome.failures,
            failures_total: outcome.failures_total,
        })
    }

    /// Hash of the stored entry `seq`, the link the first verified entry must point to.
    async fn anchor(&self, ledger: &LedgerId, seq: u64) -> Result<Option<Hash>, LedgerError> {
        let key = entry_key("", ledger, seq);
        let version = self
            .stores()
            .index
            .seq_items(ledger, seq, seq, 1)
            .await?
            .pop()
            .and_then(|i| i.version_id);
        let object = self.stores().objects.get(&key, version.as_deref()).await?;
        Ok(object.map(|o| Hash::of_entry(&o.body)))
    }

    async fn fetch_page(
        &self,
        ledger: &LedgerId,
        from: u64,
        to: u64,
    ) -> Result<Vec<Fetched>, LedgerError> {
        let items = self
            .stores()
            .index
            .seq_items(ledger, from, to, (to - from + 1) as usize)
            .await?;
        let mut by_seq: HashMap<u64, SeqItem> = items.into_iter().map(|i| (i.seq, i)).collect();
        stream::iter((from..=to).map(|seq| {
            let item = by_seq.remove(&seq);
            let key = entry_key("", ledger, seq);
            async move {
                let version = item.as_ref().and_then(|i| i.version_id.clone());
                let (body, versions) = tokio::try_join!(
                    self.stores().objects.get(&key, version.as_deref()),
                    self.stores().objects.version_count(&key),
                )?;
                Ok::<_, LedgerError>(Fetched {
                    seq,
                    key,
                    body: body.map(|o| o.body),
                    versions,
                    item,
                })
            }
        }))
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
    }

    fn check_fetched(&self, ledger: &LedgerId, verifier: &mut ChainVerifier, f: &Fetched) {
        let evidence = check_entry(ledger, f.seq, f.body.as_deref());
        if f.versions > 1 {
            verifier.report(
                f.seq,
                FailureKind::ExtraVersion,
                format!(
                    "object {} has {} versions; an entry is written exactly once",
                    f.key, f.versions
                ),
            );
        }
        let claim = match &f.item {
            None => {
                verifier.report(
                    f.seq,
                    FailureKind::IndexMismatch,
                    "the index has no SEQ# item for this seq".into(),
                );
                None
            }
            Some(item) => {
                if item.object_key != f.key {
                    verifier.report(
                        f.seq,
                        FailureKind::IndexMismatch,
                        format!(
                            "the index names object {} instead of {}",
                            item.object_key, f.key
                        ),
                    );
                }
                Some(IndexClaim {
                    entry_hash: item.entry_hash,
                    prev_hash: item.prev_hash,
                    timestamp: item.timestamp,
                })
            }
        };
        verifier.push(evidence, claim.as_ref());
    }

    /// The head must be the end: no object and no `SEQ#` item may exist past it.
    async fn check_nothing_beyond(
        &self,
        ledger: &LedgerId,
        head_seq: u64,
        verifier: &mut ChainVerifier,
    ) -> Result<(), LedgerError> {
        let entries_prefix = entries_prefix("", ledger);
        let after = entry_key("", ledger, head_seq);
        let objects_beyond = self
            .stores()
            .objects
            .list(&entries_prefix, Some(&after), 1)
            .await?;
        let items_beyond = self
            .stores()
            .index
            .seq_items(ledger, head_seq + 1, MAX_SEQ, 1)
            .await?;
        if let Some(key) = objects_beyond.first() {
            verifier.report(
                head_seq,
                FailureKind::HeadMismatch,
                format!("object {key} exists beyond the head"),
            );
        }
        if let Some(item) = items_beyond.first() {
            verifier.report(
                head_seq,
                FailureKind::HeadMismatch,
                format!("SEQ# item {} exists beyond the head", item.seq),
            );
        }
        Ok(())
    }
}
