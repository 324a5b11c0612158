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
//! bounded by a few pages whatever the ledger's length.
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

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use rayon::prelude::*;
use serde::Serialize;

use super::commit::{PendingEntry, decode_pending};
use super::{Ledger, LedgerError};
use crate::chain::checkpoint::{Checkpoint, PublicKey};
use crate::chain::entry::{LedgerId, MAX_SEQ};
use crate::chain::hash::Hash;
use crate::chain::keys::{
    checkpoint_key, checkpoints_prefix, entries_prefix, entry_key, seq_of_checkpoint_key,
    seq_of_entry_key,
};
use crate::chain::verify::{
    ChainVerifier, Evidence, Failure, FailureKind, Head, IndexClaim, check_entry,
};
use crate::store::{LockMode, Retention, ScannedObject, SeqItem, Stores};

/// Seqs verified per page (one bulk read, one index query).
const PAGE: u64 = 4096;
/// Pages read and hashed ahead of the one being checked.
const PAGES_AHEAD: usize = 2;
/// Checkpoint objects read at once.
const FETCH_CONCURRENCY: usize = 32;

/// Which seqs to verify; `None` ends mean the ledger's first entry and its head.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyRange {
    pub from: Option<u64>,
    pub to: Option<u64>,
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

/// What was read for one seq.
struct Fetched {
    seq: u64,
    body: Option<bytes::Bytes>,
    versions: usize,
    retention: Retention,
    item: Option<SeqItem>,
    /// The entry is in `META`'s pending batch: committed, and its object or `SEQ#` item may
    /// not be written yet. What is missing is taken from the batch.
    pending: Option<PendingCheck>,
    /// Nothing at all is stored for this seq: no object or version, no item, no pending entry.
    nothing: bool,
    evidence: Option<Evidence>,
}

/// How a seq of the pending batch was checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PendingCheck {
    /// Object and `SEQ#` item both stored: checked as any other entry.
    Written,
    /// The object is stored, its `SEQ#` item not yet: the batch stands in for the item.
    Unindexed,
    /// No object yet: the batch's bytes are the evidence.
    Unwritten,
}

/// A page read and hashed: its entries in seq order and the checkpoints that fall in it.
struct Page {
    entries: Vec<Fetched>,
    checkpoints: Vec<CheckedCheckpoint>,
    /// The page's first and last seqs.
    first: u64,
    last: u64,
    /// Nothing at all is stored for any of its seqs.
    empty: bool,
}

/// A stored checkpoint, parsed and its signature checked.
struct CheckedCheckpoint {
    seq: u64,
    key: String,
    parsed: Result<Checkpoint, String>,
    signature: Result<(), String>,
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
    let mut early_failures = Vec::new();
    let (head, pending, end) = if use_index {
        let meta = stores
            .index
            .head(ledger)
            .await?
            .ok_or(LedgerError::LedgerNotFound)?;
        let head = Head {
            seq: meta.seq_counter,
            last_hash: meta.last_hash,
        };
        let pending = match meta.pending.as_ref().map(|p| decode_pending(ledger, p)) {
            None => Vec::new(),
            // Only the batch a writer could have committed on this head stands in for what
            // is not written yet: one that ends exactly at it.
            Some(Ok(entries))
                if entries
                    .last()
                    .is_some_and(|e| e.seq == head.seq && e.hash == head.last_hash) =>
            {
                entries
            }
            Some(Ok(_)) => {
                early_failures.push(Failure {
                    seq: head.seq,
                    kind: FailureKind::HeadMismatch,
                    detail: "META's pending batch does not end at its head (seq and last_hash)"
                        .into(),
                });
                Vec::new()
            }
            Some(Err(e)) => {
                early_failures.push(Failure {
                    seq: head.seq,
                    kind: FailureKind::HeadMismatch,
                    detail: format!("META's pending batch is not a piece of chain: {e}"),
                });
                Vec::new()
            }
        };
        (Some(head), pending, head.seq)
    } else {
        let last = last_entry_seq(stores, ledger)
            .await?
            .ok_or(LedgerError::LedgerNotFound)?;
        (None, Vec::new(), last)
    };
    let max_failures = options.max_failures.max(1);
    let start = options.start_from.as_ref();
    if let Some(cp) = start
        && cp.ledger_id != *ledger
    {
        return Err(LedgerError::InvalidRange(format!(
            "the checkpoint is for ledger {}, not {ledger}",
            cp.ledger_id
        )));
    }
    let default_from = start.map_or(1, |cp| cp.seq + 1);
    let from = range.from.unwrap_or(default_from);
    let to = range.to.unwrap_or(end);
    if from == 0 {
        return Err(LedgerError::InvalidRange("from starts at 1".into()));
    }
    if range.from.is_some() || range.to.is_some() {
        if from > to {
            return Err(LedgerError::InvalidRange(format!(
                "from ({from}) is greater than to ({to})"
            )));
        }
        if to > end {
            return Err(LedgerError::InvalidRange(format!(
                "to ({to}) is past the head (seq {end})"
            )));
        }
    }
    if let Some(cp) = start
        && range.from.is_some_and(|f| f != cp.seq + 1)
    {
        return Err(LedgerError::InvalidRange(format!(
            "verifying from checkpoint seq {} starts at seq {}",
            cp.seq,
            cp.seq + 1
        )));
    }
    let anchor = match start {
        Some(cp) => {
            // The chain must pass through the checkpoint: the stored entry at its seq hashes
            // to its last_hash. The walk then links to the trusted hash either way.
            if cp.seq > end {
                early_failures.push(Failure {
                    seq: cp.seq,
                    kind: FailureKind::CheckpointMismatch,
                    detail: format!(
                        "the trusted checkpoint is at seq {} but the head is at {end}: entries were removed",
                        cp.seq
                    ),
                });
            } else {
                let stored = stored_hash(stores, ledger, cp.seq, use_index).await?;
                if stored != Some(cp.last_hash) {
                    early_failures.push(Failure {
                        seq: cp.seq,
                        kind: FailureKind::CheckpointMismatch,
                        detail: match stored {
                            Some(h) => format!(
                                "the trusted checkpoint says {} but the stored entry hashes to {h}",
                                cp.last_hash
                            ),
                            None => "no entry is stored at the trusted checkpoint's seq".into(),
                        },
                    });
                }
            }
            Some(cp.last_hash)
        }
        None if from == 1 => Some(Hash::GENESIS),
        None => stored_hash(stores, ledger, from - 1, use_index).await?,
    };
    let mut walk = Walk {
        stores,
        ledger,
        keys: Arc::new(options.trusted_keys.clone()),
        use_index,
        pending: Arc::new(pending),
        lock_mode: stores.lock_mode,
        verifier: ChainVerifier::new(from, anchor, max_failures),
        checkpoints_checked: 0,
        unwritten: Vec::new(),
        progress: options.progress.clone(),
        first: from,
    };
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
    notes.extend(walk.pending_note());
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

/// One verification in progress: what it reads and what it has found.
struct Walk<'a> {
    stores: &'a Stores,
    ledger: &'a LedgerId,
    keys: Arc<Vec<PublicKey>>,
    /// Read `SEQ#` items and compare them (false with [`VerifyOptions::objects_only`]).
    use_index: bool,
    /// The decoded entries of `META`'s pending batch.
    pending: Arc<Vec<PendingEntry>>,
    /// The Object Lock mode every entry object must carry, when the store has Object Lock.
    lock_mode: Option<LockMode>,
    verifier: ChainVerifier,
    checkpoints_checked: u64,
    /// Seqs of the pending batch with no object yet.
    unwritten: Vec<u64>,
    progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    first: u64,
}

/// What [`Walk::beyond_the_end`] found.
struct Beyond {
    /// The last seq walked (past the end when objects were found that no head counts).
    walked_to: u64,
    /// The head the chain must end at.
    head: Option<Head>,
    note: Option<String>,
}

impl Walk<'_> {
    /// Walks seqs `from..=to`, page by page, reading ahead. A page with nothing stored at all
    /// and the run of empty seqs after it are skipped in one step (one `missing_entry`), so
    /// that a stray key far past the end costs a listing, not a walk to it.
    async fn pages(&mut self, from: u64, to: u64) -> Result<(), LedgerError> {
        let mut start = from;
        while start <= to {
            start = self.pages_until_a_gap(start, to).await?;
        }
        Ok(())
    }

    /// Walks pages from `from` until the end or an empty page; returns where to go on.
    async fn pages_until_a_gap(&mut self, from: u64, to: u64) -> Result<u64, LedgerError> {
        let (stores, ledger, keys) = (self.stores.clone(), self.ledger.clone(), self.keys.clone());
        let (use_index, pending) = (self.use_index, self.pending.clone());
        let mut pages = stream::iter(page_ranges(from, to).map(move |(a, b)| {
            let (stores, ledger, keys, pending) = (
                stores.clone(),
                ledger.clone(),
                keys.clone(),
                pending.clone(),
            );
            async move { read_page(&stores, &ledger, a, b, keys, use_index, &pending).await }
        }))
        .buffered(PAGES_AHEAD);
        while let Some(page) = pages.try_next().await? {
            if page.empty {
                let resume = if page.last < to {
                    self.next_stored_after(page.last).await?.min(to + 1)
                } else {
                    to + 1
                };
                self.skip_gap(page.first, resume - 1).await?;
                return Ok(resume);
            }
            let mut checkpoints = page.checkpoints.into_iter().peekable();
            for mut fetched in page.entries {
                // Seqs with nothing stored at all are reported as runs, one failure each.
                if fetched.nothing {
                    while let Some(cp) = checkpoints.next_if(|c| c.seq <= fetched.seq) {
                        self.checkpoints_checked += 1;
                        check_checkpoint(&mut self.verifier, self.ledger, &cp, Some(None));
                    }
                    continue;
                }
                self.verifier.skip_missing(fetched.seq - 1);
                let evidence = fetched.evidence.take().unwrap_or(Evidence::Missing);
                let hash = match &evidence {
                    Evidence::Entry(e) => Some(e.hash),
                    Evidence::Malformed { hash, .. } => Some(*hash),
                    Evidence::Missing => None,
                };
                self.check_fetched(&fetched, evidence);
                while let Some(cp) = checkpoints.next_if(|c| c.seq <= fetched.seq) {
                    self.checkpoints_checked += 1;
                    check_checkpoint(
                        &mut self.verifier,
                        self.ledger,
                        &cp,
                        Some((cp.seq == fetched.seq).then_some(hash).flatten()),
                    );
                }
            }
            for cp in checkpoints {
                self.checkpoints_checked += 1;
                check_checkpoint(&mut self.verifier, self.ledger, &cp, Some(None));
            }
            if let Some(progress) = &self.progress {
                progress(self.verifier.next_seq() - self.first);
            }
        }
        self.verifier.skip_missing(to);
        Ok(to + 1)
    }

    /// The first seq after `seq` with an entry object or (with the index) a `SEQ#` item;
    /// `u64::MAX` when there is none.
    async fn next_stored_after(&self, seq: u64) -> Result<u64, LedgerError> {
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

    /// Checks a stored checkpoint whose seq was not walked: `vouches_for_nothing` when no
    /// entry can exist at its seq, else only its form and signature.
    fn check_unwalked_checkpoint(
        &mut self,
        (seq, key, bytes): (u64, String, bytes::Bytes),
        vouches_for_nothing: bool,
    ) {
        let cp = check_signature(seq, key, &bytes, &self.keys);
        self.checkpoints_checked += 1;
        let entry_hash = vouches_for_nothing.then_some(None);
        check_checkpoint(&mut self.verifier, self.ledger, &cp, entry_hash);
    }

    /// Seqs `first..=last` (from the verifier's next seq) hold nothing: one `missing_entry`
    /// for the run, and every checkpoint in it vouches for an entry that is not there.
    async fn skip_gap(&mut self, first: u64, last: u64) -> Result<(), LedgerError> {
        self.verifier.skip_missing(last);
        if let Some(progress) = &self.progress {
            progress(self.verifier.next_seq() - self.first);
        }
        for checkpoint in read_checkpoints(self.stores, self.ledger, first, Some(last)).await? {
            self.check_unwalked_checkpoint(checkpoint, true);
        }
        Ok(())
    }

    /// After a walk to the end: nothing may exist past it. A ledger that grew meanwhile is
    /// fine: writers claim in `META` before they write objects, `SEQ#` items or checkpoints,
    /// so everything listed here, before the ledger's end is read again, is at or below that
    /// end unless it was put there behind the protocol's back. Entry objects past it are walked
    /// too, so that an index turned back cannot hide them.
    async fn beyond_the_end(
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
        let (now_end, now_head) = if self.use_index {
            match stores.index.head(ledger).await? {
                Some(meta) if meta.seq_counter > end => (
                    meta.seq_counter,
                    Some(Head {
                        seq: meta.seq_counter,
                        last_hash: meta.last_hash,
                    }),
                ),
                _ => (end, head),
            }
        } else {
            (last_listed.unwrap_or(end).max(end), None)
        };
        let mut beyond = Beyond {
            walked_to: end,
            head,
            note: (now_end > end).then(|| {
                format!(
                    "the ledger grew to seq {now_end} while it was verified; the entries after seq {end} were not walked"
                )
            }),
        };
        if self.use_index
            && let Some(last) = last_listed.filter(|last| *last > now_end)
        {
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
                head: now_head,
                note: None,
            };
        }
        if let Some(seq) = item_after
            && seq > now_end
        {
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

    /// Says which seqs were taken from `META`'s pending batch because no object held them.
    fn pending_note(&self) -> Option<String> {
        let (first, last) = (self.unwritten.first()?, self.unwritten.last()?);
        Some(format!(
            "seqs {first}..={last} ({} entries) are committed in META's pending batch but not yet written to object storage; they were checked from META (the service writes them out with its next append, read or restart)",
            self.unwritten.len()
        ))
    }

    fn check_fetched(&mut self, f: &Fetched, evidence: Evidence) {
        let ledger = self.ledger;
        let verifier = &mut self.verifier;
        let key = || entry_key(ledger, f.seq);
        if f.pending == Some(PendingCheck::Unwritten) {
            self.unwritten.push(f.seq);
        }
        // Only objects that exist can be locked or not; a missing one is reported as missing.
        let stored = matches!(evidence, Evidence::Entry(_) | Evidence::Malformed { .. })
            && f.pending != Some(PendingCheck::Unwritten);
        if stored {
            check_lock(verifier, f, self.lock_mode, &key());
        }
        if f.versions > 1 {
            verifier.report(
                f.seq,
                FailureKind::ExtraVersion,
                format!(
                    "object {} has {} versions; an entry is written exactly once",
                    key(),
                    f.versions
                ),
            );
        }
        let pending_claim = || {
            let first = self.pending.first()?.seq;
            let e = self
                .pending
                .get(usize::try_from(f.seq.checked_sub(first)?).ok()?)?;
            Some(IndexClaim {
                entry_hash: e.hash,
                prev_hash: e.prev_hash,
                timestamp: e.timestamp,
            })
        };
        let claim = match &f.item {
            _ if !self.use_index => None,
            None if f.pending.is_some() => pending_claim(),
            None => {
                verifier.report(
                    f.seq,
                    FailureKind::IndexMismatch,
                    "the index has no SEQ# item for this seq".into(),
                );
                None
            }
            Some(item) => {
                if seq_of_entry_key(&item.object_key, ledger) != Some(f.seq) {
                    verifier.report(
                        f.seq,
                        FailureKind::IndexMismatch,
                        format!(
                            "the index names object {} instead of {}",
                            item.object_key,
                            key()
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
}

/// An entry object must be locked, in the mode the store writes, until a time still ahead.
fn check_lock(verifier: &mut ChainVerifier, f: &Fetched, expected: Option<LockMode>, key: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let problem = match &f.retention {
        Retention::NotSupported => None,
        Retention::Unlocked => Some(format!(
            "object {key} is not under Object Lock: it could be deleted or overwritten"
        )),
        Retention::Locked { mode, until_unix } if *until_unix <= now => Some(format!(
            "object {key}'s {mode} lock expired at unix time {until_unix}"
        )),
        Retention::Locked { mode, .. } => match expected {
            Some(expected) if expected != *mode => {
                let lifted = match mode {
                    LockMode::Governance => {
                        " (a GOVERNANCE lock can be lifted by anyone allowed s3:BypassGovernanceRetention)"
                    }
                    LockMode::Compliance => "",
                };
                Some(format!(
                    "object {key} is locked in {mode} mode, not the configured {expected}{lifted}"
                ))
            }
            _ => None,
        },
    };
    if let Some(detail) = problem {
        verifier.report(f.seq, FailureKind::NotLocked, detail);
    }
}

fn page_ranges(from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + Send + 'static {
    let pages = if from > to { 0 } else { (to - from) / PAGE + 1 };
    (0..pages).map(move |i| {
        let a = from + i * PAGE;
        (a, to.min(a + PAGE - 1))
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
async fn last_entry_seq(stores: &Stores, ledger: &LedgerId) -> Result<Option<u64>, LedgerError> {
    // Invariant: an entry exists at `low`, and none after `high`.
    let Some(mut low) = first_entry_after(stores, ledger, 0).await? else {
        return Ok(None);
    };
    let (mut high, mut bounded) = (MAX_SEQ, false);
    while low < high {
        let probe = if bounded {
            low + (high - low).div_ceil(2)
        } else {
            low.saturating_mul(2).clamp(low + 1, high)
        };
        match first_entry_after(stores, ledger, probe - 1).await? {
            Some(seq) => low = seq,
            None => (high, bounded) = (probe - 1, true),
        }
    }
    Ok(Some(low))
}

/// Reads seqs `from..=to` (objects, index items, checkpoints) and checks each entry and
/// checkpoint on its own, in parallel.
async fn read_page(
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
    // Both lists are in seq order: merge them with the seqs, no lookups or key formatting.
    let mut objects = objects
        .into_iter()
        .filter_map(|o| Some((seq_of_entry_key(&o.key, ledger)?, o)))
        .peekable();
    let mut items = items.into_iter().peekable();
    let mut entries = Vec::with_capacity((to - from + 1) as usize);
    for seq in from..=to {
        while items.next_if(|i| i.seq < seq).is_some() {}
        while objects.next_if(|(s, _)| *s < seq).is_some() {}
        let item = items.next_if(|i| i.seq == seq);
        let (mut body, versions, version, mut retention) = match objects.next_if(|(s, _)| *s == seq)
        {
            Some((_, o)) => (o.body, o.versions, o.version, o.retention),
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
        let in_batch = pending
            .first()
            .and_then(|p| usize::try_from(seq.checked_sub(p.seq)?).ok())
            .and_then(|i| pending.get(i));
        let pending = in_batch.map(|entry| match (&body, &item) {
            (None, _) => {
                body = Some(entry.bytes.clone());
                PendingCheck::Unwritten
            }
            (Some(_), None) => PendingCheck::Unindexed,
            (Some(_), Some(_)) => PendingCheck::Written,
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
async fn read_checkpoints(
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

/// Parses a stored checkpoint and checks its signature against the trusted keys.
fn check_signature(seq: u64, key: String, bytes: &[u8], keys: &[PublicKey]) -> CheckedCheckpoint {
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
fn check_checkpoint(
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
