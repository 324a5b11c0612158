//! Verification of an export bundle (`GET .../export`, NDJSON), fully offline and streaming:
//! lines are read in batches, each batch's entries are decoded and hashed in parallel with
//! [`check_entry`], and the links are checked in seq order by the same [`ChainVerifier`] the
//! storage engine uses. Memory is bounded by one batch of lines.
//!
//! Each line is a [`ExportLine`], the type the export writes. The bundle's checkpoint lines
//! are checked after the walk: for this ledger, signed by a trusted key (with `--public-key`),
//! and hash-matching the bundle's entry at their seq.

use std::io::{BufRead, BufReader, Lines};
use std::iter::Enumerate;
use std::path::Path;

use rayon::prelude::*;

use super::{AuditError, Report, usage};
use crate::chain::checkpoint::{Checkpoint, PublicKey};
use crate::chain::entry::{LedgerId, decode};
use crate::chain::hash::Hash;
use crate::chain::verify::{ChainVerifier, Evidence, FailureKind, IndexClaim, check_entry};
use crate::ledger::{ExportEntryLine, ExportLine, VerifyRange};

/// Entries decoded and hashed per parallel batch.
const BUNDLE_BATCH: usize = 4096;
/// The largest run of seqs a bundle may skip (each is reported as missing).
const MAX_GAP: u64 = 1_000_000;

/// An entry line, its bytes decoded, waiting for its batch.
struct BundleEntry {
    seq: u64,
    stored: Option<Vec<u8>>,
    claim: Option<IndexClaim>,
}

/// The bundle's lines, numbered from 0.
fn open_lines(path: &Path) -> Result<Enumerate<Lines<BufReader<std::fs::File>>>, AuditError> {
    let file = std::fs::File::open(path)
        .map_err(|e| usage(format!("--bundle {}: {e}", path.display())))?;
    Ok(BufReader::new(file).lines().enumerate())
}

/// What an entry line says the index recorded, when it says all of it.
fn claim(line: &ExportEntryLine) -> Option<IndexClaim> {
    match (line.entry_hash, line.prev_hash, line.timestamp) {
        (Some(entry_hash), Some(prev_hash), Some(timestamp)) => Some(IndexClaim {
            entry_hash,
            prev_hash,
            timestamp,
        }),
        _ => None,
    }
}

/// The hash of the stored bytes behind `evidence` (`None`: no bytes).
fn evidence_hash(evidence: &Evidence) -> Option<Hash> {
    match evidence {
        Evidence::Entry(e) => Some(e.hash),
        Evidence::Malformed { hash, .. } => Some(*hash),
        Evidence::Missing => None,
    }
}

/// Verifies an export file, streaming: memory is bounded by one batch of lines.
pub(super) fn verify_bundle(
    path: &Path,
    ledger: Option<LedgerId>,
    range: VerifyRange,
    start_from: Option<&Checkpoint>,
    keys: &[PublicKey],
    max_failures: usize,
) -> Result<Report, AuditError> {
    let shown = path.display().to_string();
    let mut lines = open_lines(path)?;
    let mut ledger = ledger;
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut verifier: Option<ChainVerifier> = None;
    let mut notes = Vec::new();
    let mut pending: Vec<BundleEntry> = Vec::with_capacity(BUNDLE_BATCH);
    let mut last_seq: Option<u64> = None;
    let mut first_seq: Option<u64> = None;
    // Hashes of the entries at checkpoint seqs, as walked.
    let mut hashes_at: Vec<(u64, Option<Hash>)> = Vec::new();
    let VerifyRange { from, to } = range;
    let start_seq = start_from.map(|cp| cp.seq);
    let mut start_hash: Option<Option<Hash>> = None;
    loop {
        let next = lines.next();
        let done = next.is_none();
        if let Some((number, line)) = next {
            let where_ = format!("{shown}:{}", number + 1);
            let line = line.map_err(|e| usage(format!("{where_}: {e}")))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry = match ExportLine::parse(&line) {
                Err(e) => return Err(usage(format!("{where_}: {e}"))),
                Ok(ExportLine::Checkpoint(cp)) => {
                    if ledger.is_none() {
                        ledger = Some(cp.checkpoint.ledger_id.clone());
                    }
                    checkpoints.push(cp.checkpoint);
                    continue;
                }
                Ok(ExportLine::Entry(entry)) => entry,
            };
            if last_seq.is_some_and(|l| entry.seq <= l) {
                return Err(usage(format!(
                    "{where_}: seq {} is not after the line before; a bundle is in seq order",
                    entry.seq
                )));
            }
            let stored = entry
                .stored_bytes()
                .map_err(|e| usage(format!("{where_}: stored is not base64: {e}")))?;
            if ledger.is_none()
                && let Some(bytes) = &stored
                && let Ok(e) = decode(bytes)
            {
                ledger = Some(e.header.ledger_id);
            }
            let claim = claim(&entry);
            last_seq = Some(entry.seq);
            if from.is_some_and(|f| entry.seq < f) || to.is_some_and(|t| entry.seq > t) {
                continue;
            }
            if start_seq.is_some_and(|s| entry.seq < s) {
                continue;
            }
            if start_seq == Some(entry.seq) {
                start_hash = Some(stored.as_deref().map(Hash::of_entry));
                continue;
            }
            first_seq.get_or_insert(entry.seq);
            pending.push(BundleEntry {
                seq: entry.seq,
                stored,
                claim,
            });
            if pending.len() < BUNDLE_BATCH {
                continue;
            }
        }
        if !pending.is_empty() {
            let ledger = ledger
                .clone()
                .ok_or_else(|| usage("the bundle names no ledger; give --ledger"))?;
            let v = verifier.get_or_insert_with(|| {
                let first = pending[0].seq;
                let anchor = match start_from {
                    Some(cp) if cp.seq + 1 == first => Some(cp.last_hash),
                    _ if first == 1 => Some(Hash::GENESIS),
                    _ => checkpoints
                        .iter()
                        .find(|cp| cp.seq + 1 == first)
                        .map(|cp| cp.last_hash),
                };
                if anchor.is_none() {
                    notes.push(format!(
                        "the bundle starts at seq {first} with no trusted hash of seq {}: the first link is not checked",
                        first - 1
                    ));
                }
                ChainVerifier::new(first, anchor, max_failures.max(1))
            });
            let batch = std::mem::take(&mut pending);
            let evidence: Vec<Evidence> = batch
                .par_iter()
                .map(|e| check_entry(&ledger, e.seq, e.stored.as_deref()))
                .collect();
            for (entry, evidence) in batch.iter().zip(evidence) {
                let next = v.next_seq();
                if entry.seq > next {
                    if entry.seq - next > MAX_GAP {
                        return Err(usage(format!(
                            "the bundle skips from seq {} to {}",
                            next - 1,
                            entry.seq
                        )));
                    }
                    for missing in next..entry.seq {
                        v.push(Evidence::Missing, None);
                        if checkpoints.iter().any(|c| c.seq == missing) {
                            hashes_at.push((missing, None));
                        }
                    }
                }
                if checkpoints.iter().any(|c| c.seq == entry.seq) {
                    hashes_at.push((entry.seq, evidence_hash(&evidence)));
                }
                v.push(evidence, entry.claim.as_ref());
            }
        }
        if done {
            break;
        }
    }
    let ledger = ledger.ok_or_else(|| usage("the bundle holds no entries and names no ledger"))?;
    let mut verifier = match verifier {
        Some(v) => v,
        None => ChainVerifier::new(start_seq.map_or(1, |s| s + 1), None, max_failures.max(1)),
    };
    let last_walked = verifier.next_seq() - 1;
    if let Some(cp) = start_from {
        check_start(&mut verifier, &mut notes, cp, start_hash);
    }
    let signatures_checked = !keys.is_empty();
    let checks = BundleCheckpoints {
        ledger: &ledger,
        keys,
        hashes_at: &hashes_at,
        last_walked,
        to_the_end: to.is_none(),
    };
    for cp in &checkpoints {
        checks.check(&mut verifier, &mut notes, cp);
    }
    let from_seq = first_seq.unwrap_or(last_walked + 1);
    let outcome = verifier.finish(None);
    Ok(Report {
        ledger_id: ledger.to_string(),
        source: "bundle".into(),
        ok: outcome.ok(),
        from: from_seq,
        to: last_walked,
        verified: outcome.verified,
        head: None,
        failures: outcome.failures,
        failures_total: outcome.failures_total,
        checkpoints_checked: checkpoints.len() as u64,
        signatures_checked,
        elapsed_seconds: 0.0,
        entries_per_second: 0.0,
        notes,
    })
}

/// The chain must pass through the trusted starting checkpoint: the bundle's entry at its seq
/// hashes to its `last_hash`. `found`: `None` when the bundle has no line for that seq,
/// `Some(None)` when its line has no bytes.
fn check_start(
    verifier: &mut ChainVerifier,
    notes: &mut Vec<String>,
    cp: &Checkpoint,
    found: Option<Option<Hash>>,
) {
    match found {
        Some(Some(h)) if h == cp.last_hash => {}
        Some(found) => verifier.report(
            cp.seq,
            FailureKind::CheckpointMismatch,
            format!(
                "the trusted checkpoint says {} but the bundle's entry hashes to {}",
                cp.last_hash,
                found.map_or("nothing (no bytes)".into(), |h| h.to_hex())
            ),
        ),
        None => notes.push(format!(
            "the bundle has no entry at the trusted checkpoint's seq {}",
            cp.seq
        )),
    }
}

/// What a checkpoint line of the bundle is checked against, after the walk.
struct BundleCheckpoints<'a> {
    ledger: &'a LedgerId,
    /// Empty: signatures are not checked.
    keys: &'a [PublicKey],
    /// The hash of the walked entry at each checkpoint's seq (`None`: no bytes there).
    hashes_at: &'a [(u64, Option<Hash>)],
    last_walked: u64,
    /// The walk had no `--to`: it ran to the bundle's end.
    to_the_end: bool,
}

impl BundleCheckpoints<'_> {
    /// One checkpoint: for this ledger, signed by a trusted key, and matching the walked entry
    /// at its seq (or vouching for one past the bundle's end).
    fn check(&self, verifier: &mut ChainVerifier, notes: &mut Vec<String>, cp: &Checkpoint) {
        if cp.ledger_id != *self.ledger {
            verifier.report(
                cp.seq,
                FailureKind::CheckpointMismatch,
                format!("the bundle's checkpoint is for ledger {}", cp.ledger_id),
            );
            return;
        }
        if !self.keys.is_empty()
            && let Err(e) = cp.verify_trusted(self.keys)
        {
            verifier.report(
                cp.seq,
                FailureKind::BadSignature,
                format!("checkpoint: {e}"),
            );
        }
        let last_walked = self.last_walked;
        match self.hashes_at.iter().find(|(s, _)| *s == cp.seq) {
            Some((_, Some(h))) if *h == cp.last_hash => {}
            Some((_, found)) => verifier.report(
                cp.seq,
                FailureKind::CheckpointMismatch,
                format!(
                    "the checkpoint says last_hash {} but the bundle's entry hashes to {}",
                    cp.last_hash,
                    found.map_or("nothing (no bytes)".into(), |h| h.to_hex())
                ),
            ),
            None if cp.seq > last_walked && self.to_the_end => verifier.report(
                cp.seq,
                FailureKind::CheckpointMismatch,
                format!(
                    "the checkpoint vouches for seq {} but the bundle ends at seq {last_walked}: entries are missing from it",
                    cp.seq
                ),
            ),
            None => notes.push(format!(
                "the checkpoint at seq {} is outside the verified range and was not compared",
                cp.seq
            )),
        }
    }
}

/// The stored bytes of `seq` in a bundle, read line by line (checkpoint lines are skipped
/// unread).
pub(super) fn bundle_entry(path: &Path, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
    let shown = path.display();
    for (_, line) in open_lines(path)? {
        let line = line.map_err(|e| usage(format!("--bundle {shown}: {e}")))?;
        if line.trim().is_empty() || ExportLine::is_checkpoint(&line) {
            continue;
        }
        let entry: ExportEntryLine =
            serde_json::from_str(&line).map_err(|e| usage(format!("--bundle {shown}: {e}")))?;
        if entry.seq == seq {
            return entry
                .stored_bytes()
                .map_err(|e| usage(format!("--bundle {shown}: {e}")));
        }
    }
    Ok(None)
}
