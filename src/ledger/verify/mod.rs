//! Verification over storage: re-read every stored entry, re-hash it and walk the chain with
//! the pure verifier. The index is evidence to check, never a source of truth: objects are
//! read at the keys their seqs determine, and the index's claims are compared against them.
//!
//! One engine, [`verify_stores`], serves both `GET /v1/ledgers/{id}/verify` (through
//! [`Ledger::verify`], which first finishes an interrupted batch) and `ledger-verify` (which
//! calls it directly, read-only). It works page by page: per page one bulk object read
//! ([`ObjectStore::scan`](crate::store::ObjectStore::scan)), one index query and one checkpoint
//! listing; the entries are decoded and hashed in parallel (rayon, off the async runtime)
//! while the next page is being read, and the links are then checked in seq order. Memory is
//! bounded by a few pages whatever the ledger's length, except for the idempotency keys: a
//! 32-byte digest and a seq per keyed entry walked, so that a key stored in two entries is
//! named (`duplicate_idempotency_key`). Only keys inside the range walked are compared.
//!
//! Stored checkpoints in the range are checked too: each must hash-match the stored entry at
//! its seq (`checkpoint_mismatch`) and, when trusted keys are given, carry a valid signature
//! from one of them (`bad_signature`). Entry objects must be under Object Lock, in the mode
//! the store writes, until a time still ahead (`not_locked`).
//!
//! The end of the walk is checked against the listing, not only the index: after walking to
//! `META`'s head, entry objects past any head the ledger has reached are walked too (an index
//! turned back cannot hide them), and `SEQ#` items or checkpoints past it are reported. With
//! [`VerifyOptions::objects_only`] the index is not read at all: the end is the last entry
//! object, found by bisecting the listing. Entries of `META`'s pending batch whose object or
//! `SEQ#` item a writer has not written yet are checked from the batch and named in a note.
//!
//! The parts, one job each:
//! - this file: the public API ([`VerifyRange`], [`VerifyOptions`], [`VerifyReport`],
//!   [`verify_stores`], [`stored_entry`], [`Ledger::verify`]) and the order of the steps;
//! - `range.rs`: the walk's extent (`META`'s head and pending batch, or the last entry
//!   object), the range asked for against it, and the hash the first entry must link to;
//! - `pending.rs`: `META`'s pending batch standing in for what a writer has not written yet;
//! - `page.rs`: the reads of one page (entry objects, `SEQ#` items, checkpoint objects),
//!   hashed off the async runtime;
//! - `walk.rs`: the walk page by page, reading ahead and skipping runs of empty seqs;
//! - `entry.rs`: the checks on one entry beyond its hash (Object Lock, versions, the index's
//!   claim about it);
//! - `checkpoints.rs`: the checks on one stored checkpoint (form, signature, hash);
//! - `end.rs`: the ledger's real end, found from the listing past the head.

mod checkpoints;
mod end;
mod entry;
mod page;
mod pending;
mod range;
mod walk;

use std::sync::Arc;

use serde::Serialize;

use super::{Ledger, LedgerError};
use crate::chain::checkpoint::{Checkpoint, PublicKey};
use crate::chain::entry::LedgerId;
use crate::chain::hash::Hash;
use crate::chain::keys::entry_key;
use crate::chain::verify::{Failure, Head};
use crate::store::Stores;
use walk::Walk;

/// Which seqs to verify (or export); `None` ends mean the ledger's first entry and its head.
/// A range sees only its own entries' idempotency keys: a key repeated from outside it is not
/// named.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyRange {
    pub from: Option<u64>,
    pub to: Option<u64>,
}

impl VerifyRange {
    /// The seqs `from..=to` this range names in a ledger whose head is `end`, `from` defaulting
    /// to `default_from` and `to` to `end`. The one rule of verification and export: a `from`
    /// or `to` given must lie within `1..=end`, with `from <= to`; nothing given is the whole
    /// ledger (`(1, 0)` for an empty one).
    pub fn within(self, default_from: u64, end: u64) -> Result<(u64, u64), LedgerError> {
        let from = self.from.unwrap_or(default_from);
        let to = self.to.unwrap_or(end);
        if from == 0 {
            return Err(LedgerError::InvalidRange("from starts at 1".into()));
        }
        if self.from.is_some() || self.to.is_some() {
            if let Some(from) = self.from
                && from > end
            {
                return Err(LedgerError::InvalidRange(format!(
                    "from ({from}) is past the head (seq {end})"
                )));
            }
            if to > end {
                return Err(LedgerError::InvalidRange(format!(
                    "to ({to}) is past the head (seq {end})"
                )));
            }
            if from > to {
                return Err(LedgerError::InvalidRange(format!(
                    "from ({from}) is greater than to ({to})"
                )));
            }
        }
        Ok((from, to))
    }
}

/// How to verify, beyond the range.
#[derive(Clone, Default)]
pub struct VerifyOptions {
    /// Failures recorded before the rest are only counted.
    pub max_failures: usize,
    /// Keys whose signatures on checkpoints are accepted. Empty: signatures are not checked
    /// (and the report says so).
    pub trusted_keys: Vec<PublicKey>,
    /// Start after this checkpoint instead of at seq 1: the entries after it are walked, the
    /// first must link to its `last_hash`, and the stored entry at its seq must hash to it.
    pub start_from: Option<Checkpoint>,
    /// Verify from the entry objects alone: `META` and the `SEQ#` items are not read, the head
    /// is the last entry object, and each key's current version is checked. Needs no index
    /// access at all, and nothing in the index can hide or vouch for anything.
    pub objects_only: bool,
    /// Called after each page with the number of entries checked so far.
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl std::fmt::Debug for VerifyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("max_failures", &self.max_failures)
            .field("trusted_keys", &self.trusted_keys)
            .field("start_from", &self.start_from)
            .field("objects_only", &self.objects_only)
            .finish_non_exhaustive()
    }
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
    /// The head `META` states (`None` only with [`VerifyOptions::objects_only`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
    /// Up to the configured bound, in seq order.
    pub failures: Vec<Failure>,
    /// Every failure found, including those beyond the bound.
    pub failures_total: u64,
    /// Stored checkpoints checked against the chain.
    pub checkpoints_checked: u64,
    /// Whether checkpoint signatures were checked (a trusted key was known).
    pub signatures_checked: bool,
    /// What the auditor should know that is not a failure: entries committed in `META`'s
    /// pending batch but not yet written out, a ledger that grew during the walk.
    pub notes: Vec<String>,
}

impl Ledger {
    /// Verifies through the service: finishes an interrupted batch first (so a crash between
    /// commit and write-out is not reported as missing entries), then runs [`verify_stores`]
    /// trusting the service's own signing key. Progress and the result are metrics.
    pub async fn verify(
        &self,
        ledger: &LedgerId,
        range: VerifyRange,
    ) -> Result<VerifyReport, LedgerError> {
        // A corrupt batch is left for the walk to report in detail.
        match self.finish_pending(ledger).await {
            Ok(_) | Err(LedgerError::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
        let metrics = self.inner_metrics().clone();
        let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let options = VerifyOptions {
            max_failures: self.options().max_verify_failures,
            trusted_keys: self
                .options()
                .signer
                .iter()
                .map(|s| s.public_key().clone())
                .collect(),
            progress: Some(Arc::new(move |n| {
                let before = counted.swap(n, std::sync::atomic::Ordering::Relaxed);
                metrics.verify_progress(n.saturating_sub(before));
            })),
            ..VerifyOptions::default()
        };
        let _running = self.inner_metrics().verify_running();
        let report = verify_stores(self.stores(), ledger, range, &options).await?;
        self.inner_metrics().verified(ledger, report.ok);
        Ok(report)
    }
}

/// Verifies `ledger` in `stores`, read-only. See the module documentation.
pub async fn verify_stores(
    stores: &Stores,
    ledger: &LedgerId,
    range: VerifyRange,
    options: &VerifyOptions,
) -> Result<VerifyReport, LedgerError> {
    let use_index = !options.objects_only;
    // The end to verify up to: META's head, or the last entry object.
    let extent = range::extent(stores, ledger, use_index).await?;
    let (head, end) = (extent.head, extent.end);
    let mut early_failures: Vec<Failure> = extent.failure.into_iter().collect();
    let max_failures = options.max_failures.max(1);
    let start = options.start_from.as_ref();
    let (from, to) = range::resolve(range, start, ledger, end)?;
    let anchor = range::anchor(stores, ledger, from, start, end, use_index).await?;
    early_failures.extend(anchor.failure);
    let mut walk = Walk::new(
        stores,
        ledger,
        options,
        extent.pending,
        from,
        anchor.hash,
        max_failures,
    );
    for f in early_failures {
        walk.verifier.report(f.seq, f.kind, f.detail);
    }
    walk.pages(from, to).await?;
    let mut notes = Vec::new();
    let mut walked_to = to;
    let mut final_head = head;
    if to == end {
        let beyond = walk.beyond_the_end(end, head).await?;
        walked_to = beyond.walked_to;
        final_head = beyond.head;
        notes.extend(beyond.note);
    }
    notes.extend(pending::unwritten_note(&walk.unwritten));
    let signatures_checked = !walk.keys.is_empty();
    let checkpoints_checked = walk.checkpoints_checked;
    let outcome = walk
        .verifier
        .finish(if to == end { final_head } else { None });
    Ok(VerifyReport {
        ledger_id: ledger.clone(),
        ok: outcome.ok(),
        from,
        to: walked_to,
        verified: outcome.verified,
        head,
        failures: outcome.failures,
        failures_total: outcome.failures_total,
        checkpoints_checked,
        signatures_checked,
        notes,
    })
}

/// Hash of the stored entry `seq` (see [`stored_entry`]).
async fn stored_hash(
    stores: &Stores,
    ledger: &LedgerId,
    seq: u64,
    use_index: bool,
) -> Result<Option<Hash>, LedgerError> {
    Ok(stored_entry(stores, ledger, seq, use_index)
        .await?
        .map(|body| Hash::of_entry(&body)))
}

/// The stored bytes of entry `seq`: the object version the index names (with `use_index`),
/// or the current one when the index has no item for it or is not consulted. Read-only.
pub async fn stored_entry(
    stores: &Stores,
    ledger: &LedgerId,
    seq: u64,
    use_index: bool,
) -> Result<Option<bytes::Bytes>, LedgerError> {
    let key = entry_key(ledger, seq);
    let version = if use_index {
        stores
            .index
            .seq_items(ledger, seq, seq, 1)
            .await?
            .pop()
            .and_then(|i| i.version_id)
    } else {
        None
    };
    let object = stores.objects.get(&key, version.as_deref()).await?;
    Ok(object.map(|o| o.body))
}
