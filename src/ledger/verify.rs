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
//! from one of them (`bad_signature`).

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt, stream};
use rayon::prelude::*;
use serde::Serialize;

use super::checkpoint::{checkpoint_key, checkpoints_prefix, seq_of_checkpoint_key};
use super::{Ledger, LedgerError};
use crate::chain::checkpoint::{Checkpoint, PublicKey};
use crate::chain::entry::{LedgerId, MAX_SEQ, entries_prefix, entry_key};
use crate::chain::hash::Hash;
use crate::chain::verify::{
    ChainVerifier, Evidence, Failure, FailureKind, Head, IndexClaim, check_entry,
};
use crate::store::{Retention, ScannedObject, SeqItem, Stores};

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
    /// Called after each page with the number of entries checked so far.
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

impl std::fmt::Debug for VerifyOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("max_failures", &self.max_failures)
            .field("trusted_keys", &self.trusted_keys)
            .field("start_from", &self.start_from)
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
    pub head: Head,
    /// Up to the configured bound, in seq order.
    pub failures: Vec<Failure>,
    /// Every failure found, including those beyond the bound.
    pub failures_total: u64,
    /// Stored checkpoints checked against the chain.
    pub checkpoints_checked: u64,
    /// Whether checkpoint signatures were checked (a trusted key was known).
    pub signatures_checked: bool,
}

/// What was read for one seq.
struct Fetched {
    seq: u64,
    body: Option<bytes::Bytes>,
    versions: usize,
    retention: Retention,
    item: Option<SeqItem>,
    evidence: Option<Evidence>,
}

/// A page read and hashed: its entries in seq order and the checkpoints that fall in it.
struct Page {
    entries: Vec<Fetched>,
    checkpoints: Vec<CheckedCheckpoint>,
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
    /// trusting the service's own signing key.
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
        let options = VerifyOptions {
            max_failures: self.options().max_verify_failures,
            trusted_keys: self
                .options()
                .signer
                .iter()
                .map(|s| s.public_key().clone())
                .collect(),
            ..VerifyOptions::default()
        };
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
    let meta = stores
        .index
        .head(ledger)
        .await?
        .ok_or(LedgerError::LedgerNotFound)?;
    let head = Head {
        seq: meta.seq_counter,
        last_hash: meta.last_hash,
    };
    let max_failures = options.max_failures.max(1);
    let mut early_failures = Vec::new();
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
            if cp.seq > head.seq {
                early_failures.push(Failure {
                    seq: cp.seq,
                    kind: FailureKind::CheckpointMismatch,
                    detail: format!(
                        "the trusted checkpoint is at seq {} but the head is at {}: entries were removed",
                        cp.seq, head.seq
                    ),
                });
            } else {
                let stored = stored_hash(stores, ledger, cp.seq).await?;
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
        None => stored_hash(stores, ledger, from - 1).await?,
    };
    let mut verifier = ChainVerifier::new(from, anchor, max_failures);
    for f in early_failures {
        verifier.report(f.seq, f.kind, f.detail);
    }
    let signatures_checked = !options.trusted_keys.is_empty();
    let keys = Arc::new(options.trusted_keys.clone());
    let mut checkpoints_checked = 0;
    let ranges = page_ranges(from, to);
    let mut pages = stream::iter(ranges.map(|(a, b)| {
        let (stores, ledger, keys) = (stores.clone(), ledger.clone(), keys.clone());
        async move { read_page(&stores, &ledger, a, b, keys).await }
    }))
    .buffered(PAGES_AHEAD);
    while let Some(page) = pages.try_next().await? {
        let mut checkpoints = page.checkpoints.into_iter().peekable();
        for mut fetched in page.entries {
            let evidence = fetched.evidence.take().unwrap_or(Evidence::Missing);
            let hash = match &evidence {
                Evidence::Entry(e) => Some(e.hash),
                Evidence::Malformed { hash, .. } => Some(*hash),
                Evidence::Missing => None,
            };
            check_fetched(&mut verifier, ledger, &fetched, evidence);
            while let Some(cp) = checkpoints.next_if(|c| c.seq <= fetched.seq) {
                checkpoints_checked += 1;
                check_checkpoint(
                    &mut verifier,
                    ledger,
                    &cp,
                    (cp.seq == fetched.seq).then_some(hash),
                );
            }
        }
        for cp in checkpoints {
            checkpoints_checked += 1;
            check_checkpoint(&mut verifier, ledger, &cp, None);
        }
        if let Some(progress) = &options.progress {
            progress(verifier.next_seq() - from);
        }
    }
    let at_head = to == head.seq;
    if at_head {
        checkpoints_checked +=
            check_nothing_beyond(stores, ledger, head.seq, &keys, &mut verifier).await?;
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
        checkpoints_checked,
        signatures_checked,
    })
}

fn page_ranges(from: u64, to: u64) -> impl Iterator<Item = (u64, u64)> + Send + 'static {
    let pages = if from > to { 0 } else { (to - from) / PAGE + 1 };
    (0..pages).map(move |i| {
        let a = from + i * PAGE;
        (a, to.min(a + PAGE - 1))
    })
}

/// Hash of the stored entry `seq` (the version the index names, if any).
async fn stored_hash(
    stores: &Stores,
    ledger: &LedgerId,
    seq: u64,
) -> Result<Option<Hash>, LedgerError> {
    Ok(stored_entry(stores, ledger, seq)
        .await?
        .map(|body| Hash::of_entry(&body)))
}

/// The stored bytes of entry `seq`: the object version the index names, or the current one
/// when the index has no item for it. Read-only.
pub async fn stored_entry(
    stores: &Stores,
    ledger: &LedgerId,
    seq: u64,
) -> Result<Option<bytes::Bytes>, LedgerError> {
    let key = entry_key("", ledger, seq);
    let version = stores
        .index
        .seq_items(ledger, seq, seq, 1)
        .await?
        .pop()
        .and_then(|i| i.version_id);
    let object = stores.objects.get(&key, version.as_deref()).await?;
    Ok(object.map(|o| o.body))
}

/// Reads seqs `from..=to` (objects, index items, checkpoints) and checks each entry and
/// checkpoint on its own, in parallel.
async fn read_page(
    stores: &Stores,
    ledger: &LedgerId,
    from: u64,
    to: u64,
    keys: Arc<Vec<PublicKey>>,
) -> Result<Page, LedgerError> {
    let (objects, items, checkpoints) = tokio::try_join!(
        scan_entries(stores, ledger, from, to),
        async {
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
                .get(&entry_key("", ledger, seq), Some(wanted))
                .await?;
            retention = pinned
                .as_ref()
                .map_or(Retention::Unlocked, |o| o.retention.clone());
            body = pinned.map(|o| o.body);
        }
        entries.push(Fetched {
            seq,
            body,
            versions,
            retention,
            item,
            evidence: None,
        });
    }
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
        }
    })
    .await
    .map_err(|e| LedgerError::Unavailable {
        dependency: "verifier",
        detail: format!("hashing task failed: {e}"),
    })?;
    Ok(checked)
}

/// The seq of an entry key of `ledger` (`{ledger}/entries/{seq:018}.json`), if it is one.
fn seq_of_entry_key(key: &str, ledger: &LedgerId) -> Option<u64> {
    let digits = key
        .strip_prefix(ledger.as_str())?
        .strip_prefix("/entries/")?
        .strip_suffix(".json")?;
    if digits.len() != 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The objects stored under the entry keys from `from` to `to`, in key order, in as few bulk
/// reads as the keys allow (a stray key under the entries prefix only costs another read).
async fn scan_entries(
    stores: &Stores,
    ledger: &LedgerId,
    from: u64,
    to: u64,
) -> Result<Vec<ScannedObject>, LedgerError> {
    let prefix = entries_prefix("", ledger);
    let last = entry_key("", ledger, to);
    let mut after = (from > 1).then(|| entry_key("", ledger, from - 1));
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
        Ok(cp) => match keys.iter().find(|k| k.id() == cp.key_id) {
            Some(k) => cp.verify(k).map_err(|e| e.to_string()),
            None => Err(format!(
                "signed with key {}, which is not a trusted key",
                cp.key_id
            )),
        },
    };
    CheckedCheckpoint {
        seq,
        key,
        parsed,
        signature,
    }
}

/// Checks one stored checkpoint against the hash of the stored entry at its seq
/// (`entry_hash`: `None` when its seq is not in the walk, `Some(None)` when no entry is
/// stored there).
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
        Some(Some(_)) => {}
        Some(None) | None => verifier.report(
            cp.seq,
            FailureKind::CheckpointMismatch,
            format!(
                "checkpoint {key} vouches for seq {} but the stored chain has no entry there",
                cp.seq
            ),
        ),
    }
}

fn check_fetched(verifier: &mut ChainVerifier, ledger: &LedgerId, f: &Fetched, evidence: Evidence) {
    let key = || entry_key("", ledger, f.seq);
    // Only objects that exist can be locked or not; a missing one is reported as missing.
    if matches!(evidence, Evidence::Entry(_) | Evidence::Malformed { .. }) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        match &f.retention {
            Retention::NotSupported => {}
            Retention::Unlocked => verifier.report(
                f.seq,
                FailureKind::NotLocked,
                format!(
                    "object {} is not under Object Lock: it could be deleted or overwritten",
                    key()
                ),
            ),
            Retention::Locked { mode, until_unix } if *until_unix <= now => verifier.report(
                f.seq,
                FailureKind::NotLocked,
                format!(
                    "object {}'s {mode} lock expired at unix time {until_unix}",
                    key()
                ),
            ),
            Retention::Locked { .. } => {}
        }
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

/// The head must be the end: no object, `SEQ#` item or checkpoint may exist past it. Returns
/// the number of checkpoints found past it (each reported).
async fn check_nothing_beyond(
    stores: &Stores,
    ledger: &LedgerId,
    head_seq: u64,
    keys: &[PublicKey],
    verifier: &mut ChainVerifier,
) -> Result<u64, LedgerError> {
    let entries_prefix = entries_prefix("", ledger);
    let after = entry_key("", ledger, head_seq);
    let (objects_beyond, items_beyond, checkpoints_beyond) = tokio::try_join!(
        async {
            Ok::<_, LedgerError>(
                stores
                    .objects
                    .list(&entries_prefix, Some(&after), 1)
                    .await?,
            )
        },
        async {
            Ok::<_, LedgerError>(
                stores
                    .index
                    .seq_items(ledger, head_seq + 1, MAX_SEQ, 1)
                    .await?,
            )
        },
        read_checkpoints(stores, ledger, head_seq + 1, None),
    )?;
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
    let n = checkpoints_beyond.len() as u64;
    for (seq, key, bytes) in checkpoints_beyond {
        let cp = check_signature(seq, key, &bytes, keys);
        check_checkpoint(verifier, ledger, &cp, None);
    }
    Ok(n)
}
