//! Verification of an export bundle (`GET .../export`, NDJSON), fully offline and streaming:
//! lines are read in batches, each batch's entries are decoded and hashed in parallel with
//! [`check_entry`], and the links are checked in seq order by the same [`ChainVerifier`] the
//! storage engine uses. Memory is bounded by one batch of lines.
//!
//! Each line is a [`ExportLine`], the type the export writes. The bundle's checkpoint lines
//! are checked after the walk: for this ledger, signed by a trusted key (with `--public-key`),
//! and hash-matching the bundle's entry at their seq. So is its end line: it must be the last
//! line, for this ledger, signed by a trusted key (with `--public-key`), and the bundle's
//! entries must run exactly from its `from` to its `to`, the last one hashing to its
//! `last_hash`. A bundle without one (an export made before end lines existed, or one cut
//! short) fails unless `--allow-unattested-end`, and then the report says its end is
//! unattested. A bundle with no entries fails unless `--allow-empty`.

use std::io::{BufRead, BufReader, Lines};
use std::iter::Enumerate;
use std::path::Path;

use rayon::prelude::*;

use super::{AuditError, Report, usage};
use crate::chain::checkpoint::{Checkpoint, ExportEnd, PublicKey};
use crate::chain::entry::{LedgerId, decode};
use crate::chain::hash::Hash;
use crate::chain::verify::{ChainVerifier, Evidence, FailureKind, Head, IndexClaim, check_entry};
use crate::ledger::{ExportEntryLine, ExportLine, VerifyRange};

/// Entries decoded and hashed per parallel batch.
const BUNDLE_BATCH: usize = 4096;
/// The largest run of seqs a bundle may skip (each is reported as missing).
const MAX_GAP: u64 = 1_000_000;

/// How strict the bundle check is, beyond the range.
#[derive(Debug, Clone, Copy)]
pub(super) struct BundleFlags {
    pub(super) max_failures: usize,
    /// A bundle with no entry lines is no failure.
    pub(super) allow_empty: bool,
    /// A bundle without an end line is no failure (the report says its end is unattested).
    pub(super) allow_unattested_end: bool,
}

/// The API's error body (`{"error": {"code", "message"}}`), to name a saved one given as a
/// bundle.
#[derive(serde::Deserialize)]
struct ApiErrorBody {
    error: ApiErrorFields,
}

#[derive(serde::Deserialize)]
struct ApiErrorFields {
    code: String,
    message: String,
}

/// The sentence naming `path` as a saved API error answer, if it is one (compact on one line
/// or pretty-printed over several).
fn api_error(path: &Path, first_line: &str) -> Option<String> {
    let body = serde_json::from_str::<ApiErrorBody>(first_line)
        .ok()
        .or_else(|| {
            let bytes = std::fs::read(path).ok().filter(|b| b.len() <= 1 << 16)?;
            serde_json::from_slice::<ApiErrorBody>(&bytes).ok()
        })?;
    Some(format!(
        "{} is an error answer of the API, not an export: {} ({}); export again once that is fixed",
        path.display(),
        body.error.code,
        body.error.message.trim_end_matches('.')
    ))
}

/// The ledger the bundle names must be the one `--ledger` named.
fn same_ledger(given: &LedgerId, named: &LedgerId, path: &str) -> Result<(), AuditError> {
    if given == named {
        Ok(())
    } else {
        Err(usage(format!(
            "--ledger {given} does not match the bundle {path}, which is an export of ledger {named}"
        )))
    }
}

/// Takes the ledger the bundle's first line naming one names: `ledger` unless `--ledger` gave
/// it, which must then be the same.
fn name_ledger(
    named: &mut bool,
    ledger: &mut Option<LedgerId>,
    found: &LedgerId,
    path: &str,
) -> Result<(), AuditError> {
    if std::mem::replace(named, true) {
        return Ok(());
    }
    match ledger {
        Some(given) => same_ledger(given, found, path),
        None => {
            *ledger = Some(found.clone());
            Ok(())
        }
    }
}

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
    flags: BundleFlags,
) -> Result<Report, AuditError> {
    let max_failures = flags.max_failures;
    let shown = path.display().to_string();
    let mut lines = open_lines(path)?;
    let mut ledger = ledger;
    // Whether a line of the bundle has named its ledger yet (checked against `--ledger`).
    let mut named = false;
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut end: Option<ExportEnd> = None;
    let mut verifier: Option<ChainVerifier> = None;
    let mut notes = Vec::new();
    let mut pending: Vec<BundleEntry> = Vec::with_capacity(BUNDLE_BATCH);
    let mut first_line_seq: Option<u64> = None;
    // The last entry line: its seq and stored bytes.
    let mut last_line: Option<(u64, Option<Vec<u8>>)> = None;
    let mut first_seq: Option<u64> = None;
    let mut seen_lines = 0u64;
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
            seen_lines += 1;
            if end.is_some() {
                return Err(usage(format!(
                    "{where_}: a line after the end line; an export ends with its end line"
                )));
            }
            let entry = match ExportLine::parse(&line) {
                Err(e) => {
                    if seen_lines == 1
                        && let Some(sentence) = api_error(path, &line)
                    {
                        return Err(usage(sentence));
                    }
                    return Err(usage(format!("{where_}: {e}")));
                }
                Ok(ExportLine::Checkpoint(cp)) => {
                    name_ledger(&mut named, &mut ledger, &cp.checkpoint.ledger_id, &shown)?;
                    checkpoints.push(cp.checkpoint);
                    continue;
                }
                Ok(ExportLine::End(line)) => {
                    name_ledger(&mut named, &mut ledger, &line.end.ledger_id, &shown)?;
                    end = Some(line.end);
                    continue;
                }
                Ok(ExportLine::Entry(entry)) => entry,
            };
            if last_line.as_ref().is_some_and(|(l, _)| entry.seq <= *l) {
                return Err(usage(format!(
                    "{where_}: seq {} is not after the line before; a bundle is in seq order",
                    entry.seq
                )));
            }
            let stored = entry
                .stored_bytes()
                .map_err(|e| usage(format!("{where_}: stored is not base64: {e}")))?;
            if !named
                && let Some(bytes) = &stored
                && let Ok(e) = decode(bytes)
            {
                name_ledger(&mut named, &mut ledger, &e.header.ledger_id, &shown)?;
            }
            let claim = claim(&entry);
            first_line_seq.get_or_insert(entry.seq);
            last_line = Some((entry.seq, stored.clone()));
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
                        "the walk starts at seq {first} with no trusted hash of seq {}: the first entry's prev_hash is taken as that hash, unchecked",
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
    let mut verifier = match verifier {
        Some(v) => v,
        None => ChainVerifier::new(start_seq.map_or(1, |s| s + 1), None, max_failures.max(1)),
    };
    let last_walked = verifier.next_seq() - 1;
    if let Some(cp) = start_from {
        check_start(&mut verifier, &mut notes, cp, start_hash);
    }
    if first_line_seq.is_none() && !flags.allow_empty {
        verifier.report(
            end.as_ref().map_or(1, |e| e.from),
            FailureKind::MissingEntry,
            "the bundle holds no entries (an empty export is accepted only with --allow-empty)"
                .into(),
        );
    }
    let Some(ledger) = ledger else {
        // Nothing names the ledger: an empty file (or one of blank lines).
        if flags.allow_empty {
            return Err(usage(
                "the bundle holds no entries and names no ledger; give --ledger",
            ));
        }
        let outcome = verifier.finish(None);
        return Ok(bundle_report(None, outcome, 1, 0, None, keys, 0, notes));
    };
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
    let lines = BundleLines {
        first: first_line_seq,
        last: last_line,
    };
    let end_attested = match &end {
        Some(end) => {
            check_end(&mut verifier, &mut notes, &ledger, keys, end, &lines);
            true
        }
        None => {
            let after = lines.last.as_ref().map_or(0, |(s, _)| *s);
            if flags.allow_unattested_end {
                notes.push(format!(
                    "the bundle has no end line (an export made before end lines existed): its end is unattested, and entries after seq {after} may have been cut off"
                ));
            } else {
                verifier.report(
                    after + 1,
                    FailureKind::EndMismatch,
                    format!(
                        "the bundle has no end line, so it may have been cut short after seq {after}; an export made before end lines existed is checked with --allow-unattested-end"
                    ),
                );
            }
            false
        }
    };
    let from_seq = first_seq.unwrap_or(last_walked + 1);
    let outcome = verifier.finish(None);
    let head = end.as_ref().map(|e| Head {
        seq: e.head_seq,
        last_hash: e.head_hash,
    });
    let mut report = bundle_report(
        Some(&ledger),
        outcome,
        from_seq,
        last_walked,
        head,
        keys,
        checkpoints.len() as u64,
        notes,
    );
    report.signatures_checked = signatures_checked;
    report.end_attested = Some(end_attested);
    Ok(report)
}

/// The report of a bundle check (the timings are filled in by the caller).
#[allow(clippy::too_many_arguments)] // One call site each; a struct would only rename them.
fn bundle_report(
    ledger: Option<&LedgerId>,
    outcome: crate::chain::verify::Outcome,
    from: u64,
    to: u64,
    head: Option<Head>,
    keys: &[PublicKey],
    checkpoints_checked: u64,
    notes: Vec<String>,
) -> Report {
    Report {
        ledger_id: ledger.map(LedgerId::to_string),
        source: "bundle".into(),
        ok: outcome.ok(),
        from,
        to,
        verified: outcome.verified,
        head,
        failures: outcome.failures,
        failures_total: outcome.failures_total,
        checkpoints_checked,
        signatures_checked: !keys.is_empty(),
        end_attested: None,
        elapsed_seconds: 0.0,
        entries_per_second: 0.0,
        notes,
    }
}

/// The entry lines a bundle holds, as its end line must describe them.
struct BundleLines {
    /// The first entry line's seq (`None`: no entry lines).
    first: Option<u64>,
    /// The last entry line's seq and stored bytes.
    last: Option<(u64, Option<Vec<u8>>)>,
}

/// The end line must describe the bundle: this ledger, signed by a trusted key (with
/// `--public-key`), the entry lines running from its `from` to its `to`, the last one hashing
/// to its `last_hash`.
fn check_end(
    verifier: &mut ChainVerifier,
    notes: &mut Vec<String>,
    ledger: &LedgerId,
    keys: &[PublicKey],
    end: &ExportEnd,
    lines: &BundleLines,
) {
    let at = end.to.max(1);
    if let Err(e) = end.check_form() {
        verifier.report(at, FailureKind::EndMismatch, e.to_string());
        return;
    }
    if end.ledger_id != *ledger {
        verifier.report(
            at,
            FailureKind::EndMismatch,
            format!("the end line is for ledger {}", end.ledger_id),
        );
        return;
    }
    if !keys.is_empty()
        && let Err(e) = end.verify_trusted(keys)
    {
        verifier.report(at, FailureKind::BadSignature, format!("end line: {e}"));
    }
    let empty = end.to + 1 == end.from;
    match lines.first {
        None if empty => {}
        None => verifier.report(
            end.from,
            FailureKind::MissingEntry,
            format!(
                "the end line says the export holds seqs {}..={}, but the bundle holds no entries",
                end.from, end.to
            ),
        ),
        Some(first) if first > end.from => verifier.report(
            end.from,
            FailureKind::MissingEntry,
            format!(
                "the end line says the export starts at seq {}, but the bundle's first entry is seq {first}: the entries before it are missing",
                end.from
            ),
        ),
        Some(first) if first < end.from => verifier.report(
            first,
            FailureKind::EndMismatch,
            format!(
                "the end line says the export starts at seq {}, but the bundle's first entry is seq {first}",
                end.from
            ),
        ),
        Some(_) => {}
    }
    match &lines.last {
        None => {}
        Some((last, _)) if *last < end.to => verifier.report(
            last + 1,
            FailureKind::MissingEntry,
            format!(
                "the end line says the export runs to seq {}, but the bundle ends at seq {last}: it was cut short",
                end.to
            ),
        ),
        Some((last, _)) if *last > end.to => verifier.report(
            *last,
            FailureKind::EndMismatch,
            format!(
                "the end line says the export runs to seq {}, but the bundle holds seq {last}",
                end.to
            ),
        ),
        Some((last, Some(bytes))) => {
            let hash = Hash::of_entry(bytes);
            if hash != end.last_hash {
                verifier.report(
                    *last,
                    FailureKind::EndMismatch,
                    format!(
                        "the end line says entry {last} hashes to {}, but the bundle's entry hashes to {hash}",
                        end.last_hash
                    ),
                );
            }
        }
        // No bytes for the last entry: its missing_entry is reported by the walk.
        Some((_, None)) => {}
    }
    if end.to < end.head_seq {
        notes.push(format!(
            "the export holds seqs {}..={}; the ledger's head was seq {} when it was cut",
            end.from, end.to, end.head_seq
        ));
    }
    if end.key_id.is_none() {
        notes.push("the end line is not signed (the service had no signing key)".into());
    }
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
        if line.trim().is_empty() || ExportLine::is_checkpoint(&line) || ExportLine::is_end(&line) {
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
