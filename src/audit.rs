//! `ledger-verify`: an auditor's check of a ledger without the running service.
//!
//! Sources (one of):
//! - storage, from the same `ELEANOR_LEDGER_*` settings as the server: the embedded data
//!   directory, opened read-only (redb admits no reader beside a running server, so the server
//!   must be stopped first; the tool says so), or S3 + DynamoDB with read-only credentials.
//!   The walk is the service's own engine, [`crate::ledger::verify_stores`].
//! - `--bundle FILE`: an export (`GET /v1/ledgers/{id}/export`, NDJSON), fully offline. The
//!   same pure core ([`crate::chain::verify`]) checks it.
//!
//! `ledger-verify receipt FILE` checks an append's answer: its signature with `--public-key`,
//! and that the ledger (storage or bundle) holds exactly that entry at that seq.
//!
//! Exit codes: 0 intact; 1 an integrity failure (every bad seq and kind is named, up to
//! `--max-failures`); 2 usage or configuration error; 3 storage unreachable.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::chain::checkpoint::{Checkpoint, PublicKey, ReceiptBody, ReceiptSignature};
use crate::chain::entry::{LedgerId, Timestamp, decode};
use crate::chain::hash::Hash;
use crate::chain::verify::{
    ChainVerifier, Evidence, Failure, FailureKind, Head, IndexClaim, check_entry,
};
use crate::config::StorageArgs;
use crate::ledger::{LedgerError, VerifyOptions, VerifyRange, stored_entry, verify_stores};
use crate::store::{self, Access, Backend, BackendMetrics, OpenError, Stores};

/// Flags and environment variables of `ledger-verify`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ledger-verify",
    version,
    about = "Verify a ledger from storage or an export bundle, without the service.",
    after_help = "Exit status: 0 intact, 1 integrity failure, 2 usage or configuration error, 3 storage unreachable."
)]
pub struct VerifyArgs {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The ledger to verify (with --bundle: taken from the bundle when omitted).
    #[arg(long, global = true)]
    pub ledger: Option<String>,
    /// First seq to verify (default 1, or the seq after --checkpoint).
    #[arg(long)]
    pub from: Option<u64>,
    /// Last seq to verify (default: the head).
    #[arg(long)]
    pub to: Option<u64>,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// A trusted checkpoint (JSON, as `GET .../checkpoints/latest` serves it): verify only the
    /// entries after it, and confirm the chain passes through its hash.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// A trusted Ed25519 public key, 64 hex characters or a file holding them (repeatable).
    /// Checkpoint signatures are checked only with one.
    #[arg(long, value_name = "HEX|FILE", global = true)]
    pub public_key: Vec<String>,
    /// Verify from the entry objects alone (S3 or the embedded objects table): META and the
    /// SEQ# items are not read, so no index access is needed and a tampered index can neither
    /// hide nor vouch for anything. The head is the last entry object.
    #[arg(long, global = true, conflicts_with = "bundle")]
    pub objects_only: bool,
    /// Verify an export file (NDJSON) instead of storage.
    #[arg(long, value_name = "FILE", global = true)]
    pub bundle: Option<PathBuf>,
    /// Failures listed before the rest are only counted.
    #[arg(long, default_value_t = 1000, global = true)]
    pub max_failures: usize,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Check an append receipt (the JSON answer of an append) against the ledger and its
    /// signature (needs --public-key).
    Receipt {
        /// The receipt file.
        file: PathBuf,
    },
}

/// Why `ledger-verify` could not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Unreachable(String),
}

impl AuditError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AuditError::Usage(_) => 2,
            AuditError::Unreachable(_) => 3,
        }
    }
}

/// A verdict: the text to print and the exit code (0 intact, 1 integrity failure).
#[derive(Debug)]
pub struct Verdict {
    pub text: String,
    pub exit_code: u8,
}

/// The machine report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ledger_id: String,
    /// `"storage:local"`, `"storage:aws"` (with ` (objects only)` under `--objects-only`) or
    /// `"bundle"`.
    pub source: String,
    pub ok: bool,
    pub from: u64,
    pub to: u64,
    pub verified: u64,
    /// The head the storage states (`None` for a bundle, which has none).
    pub head: Option<Head>,
    pub failures: Vec<Failure>,
    pub failures_total: u64,
    pub checkpoints_checked: u64,
    pub signatures_checked: bool,
    pub elapsed_seconds: f64,
    pub entries_per_second: f64,
    /// Things the auditor should know that are not failures (an unchecked first link, ...).
    pub notes: Vec<String>,
}

fn usage(e: impl std::fmt::Display) -> AuditError {
    AuditError::Usage(e.to_string())
}

/// Runs `ledger-verify`.
pub async fn run(args: VerifyArgs) -> Result<Verdict, AuditError> {
    let keys = args
        .public_key
        .iter()
        .map(|k| read_public_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    let ledger = args
        .ledger
        .as_deref()
        .map(LedgerId::parse)
        .transpose()
        .map_err(|e| usage(format!("--ledger: {e}")))?;
    if let Some(Command::Receipt { file }) = &args.command {
        return check_receipt(&args, file, &keys).await;
    }
    let start_from = args
        .checkpoint
        .as_deref()
        .map(|path| read_checkpoint(path, &keys))
        .transpose()?;
    let started = Instant::now();
    let mut report = match &args.bundle {
        Some(path) => {
            let path = path.clone();
            let (max, ledger, start, keys) = (args.max_failures, ledger, start_from, keys);
            let range = (args.from, args.to);
            tokio::task::spawn_blocking(move || {
                verify_bundle(&path, ledger, range, start.as_ref(), &keys, max)
            })
            .await
            .map_err(|e| usage(format!("the bundle check failed: {e}")))??
        }
        None => {
            let ledger = ledger.ok_or_else(|| usage("--ledger is required"))?;
            let (stores, source) = open_storage(&args.storage).await?;
            verify_storage(&stores, source, &ledger, &args, start_from, keys).await?
        }
    };
    let elapsed = started.elapsed();
    report.elapsed_seconds = elapsed.as_secs_f64();
    report.entries_per_second = report.verified as f64 / elapsed.as_secs_f64().max(1e-9);
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(usage)? + "\n"
    } else {
        human(&report, elapsed)
    };
    Ok(Verdict {
        text,
        exit_code: if report.ok { 0 } else { 1 },
    })
}

fn human(r: &Report, elapsed: Duration) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let sigs = if r.signatures_checked {
        "signatures checked"
    } else {
        "signatures NOT checked (no --public-key)"
    };
    let verdict = if r.ok { "OK" } else { "FAILED" };
    let _ = writeln!(
        out,
        "{verdict}: ledger {} ({}): {} entries verified, seqs {}..{}, in {:.3} s ({:.0} entries/s); {} checkpoint(s) checked, {sigs}",
        r.ledger_id,
        r.source,
        r.verified,
        r.from,
        r.to,
        elapsed.as_secs_f64(),
        r.entries_per_second,
        r.checkpoints_checked,
    );
    if let Some(head) = &r.head {
        let _ = writeln!(out, "head: seq {} last_hash {}", head.seq, head.last_hash);
    }
    if !r.ok {
        let _ = writeln!(
            out,
            "{} failure(s){}:",
            r.failures_total,
            if (r.failures.len() as u64) < r.failures_total {
                format!(", the first {} listed", r.failures.len())
            } else {
                String::new()
            }
        );
        for f in &r.failures {
            let _ = writeln!(out, "  seq {}: {}: {}", f.seq, kind_name(f.kind), f.detail);
        }
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

fn kind_name(kind: FailureKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn read_public_key(arg: &str) -> Result<PublicKey, AuditError> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).map_err(|e| usage(format!("--public-key {arg}: {e}")))?
    } else {
        arg.to_owned()
    };
    PublicKey::from_hex(&text).map_err(|e| usage(format!("--public-key {arg}: {e}")))
}

fn read_checkpoint(path: &Path, keys: &[PublicKey]) -> Result<Checkpoint, AuditError> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| usage(format!("--checkpoint {shown}: {e}")))?;
    // Accept the checkpoint alone or an export's `{"checkpoint": ...}` line.
    let cp = Checkpoint::from_json(&bytes).or_else(|e| {
        #[derive(Deserialize)]
        struct Line {
            checkpoint: Checkpoint,
        }
        serde_json::from_slice::<Line>(&bytes)
            .map(|l| l.checkpoint)
            .map_err(|_| e)
    });
    let cp = cp.map_err(|e| usage(format!("--checkpoint {shown}: {e}")))?;
    // A trusted starting point must be proven when a key is given.
    if !keys.is_empty() {
        cp.verify_trusted(keys)
            .map_err(|e| usage(format!("--checkpoint {shown} is not trustworthy: {e}")))?;
    }
    Ok(cp)
}

async fn open_storage(storage: &StorageArgs) -> Result<(Stores, &'static str), AuditError> {
    let config = storage
        .backend_config(Duration::from_secs(30))
        .map_err(usage)?;
    let source = match config.backend() {
        Backend::Local => "storage:local",
        Backend::Aws => "storage:aws",
    };
    match store::open(&config, Access::ReadOnly, BackendMetrics::unregistered()).await {
        Ok(stores) => Ok((stores, source)),
        Err(OpenError::InUse(dir)) => Err(AuditError::Unreachable(format!(
            "the embedded store in {} is open in a running ledger-server, and redb admits no reader beside it: stop the server, verify a copy of the directory, or use an export bundle (--bundle)",
            dir.display()
        ))),
        Err(e @ OpenError::Io { .. }) => Err(AuditError::Unreachable(e.to_string())),
        Err(e @ OpenError::InvalidSettings(_)) => Err(usage(e)),
    }
}

fn ledger_error(e: LedgerError, ledger: &LedgerId) -> AuditError {
    match e {
        LedgerError::LedgerNotFound => {
            usage(format!("there is no ledger {ledger} in this storage"))
        }
        LedgerError::InvalidRange(m) => usage(m),
        other => AuditError::Unreachable(other.to_string()),
    }
}

async fn verify_storage(
    stores: &Stores,
    source: &'static str,
    ledger: &LedgerId,
    args: &VerifyArgs,
    start_from: Option<crate::chain::checkpoint::Checkpoint>,
    keys: Vec<PublicKey>,
) -> Result<Report, AuditError> {
    let bar = progress_bar();
    let progress = bar
        .clone()
        .map(|bar| Arc::new(move |n: u64| bar.set_position(n)) as Arc<dyn Fn(u64) + Send + Sync>);
    if let Some(bar) = &bar
        && !args.objects_only
        && let Ok(Some(meta)) = stores.index.head(ledger).await
    {
        bar.set_length(meta.seq_counter);
    }
    let options = VerifyOptions {
        max_failures: args.max_failures,
        trusted_keys: keys,
        start_from,
        objects_only: args.objects_only,
        progress,
    };
    let range = VerifyRange {
        from: args.from,
        to: args.to,
    };
    let result = verify_stores(stores, ledger, range, &options).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let source = if args.objects_only {
        format!("{source} (objects only)")
    } else {
        source.to_owned()
    };
    let r = match result {
        Ok(r) => r,
        // Undecodable index data is itself an integrity failure.
        Err(LedgerError::Corrupt { seq, detail }) => {
            // A failure that names no seq is told in a note (no seq stands for "unknown").
            let (failures, notes) = match seq {
                Some(seq) => (
                    vec![Failure {
                        seq,
                        kind: FailureKind::IndexMismatch,
                        detail,
                    }],
                    Vec::new(),
                ),
                None => (
                    Vec::new(),
                    vec![format!(
                        "index data cannot be decoded (seq unknown): {detail}"
                    )],
                ),
            };
            return Ok(Report {
                ledger_id: ledger.to_string(),
                source,
                ok: false,
                from: args.from.unwrap_or(1),
                to: args.to.unwrap_or(0),
                verified: 0,
                head: None,
                failures,
                failures_total: 1,
                checkpoints_checked: 0,
                signatures_checked: !options.trusted_keys.is_empty(),
                elapsed_seconds: 0.0,
                entries_per_second: 0.0,
                notes,
            });
        }
        Err(e) => return Err(ledger_error(e, ledger)),
    };
    Ok(Report {
        ledger_id: r.ledger_id.to_string(),
        source,
        ok: r.ok,
        from: r.from,
        to: r.to,
        verified: r.verified,
        head: r.head,
        failures: r.failures,
        failures_total: r.failures_total,
        checkpoints_checked: r.checkpoints_checked,
        signatures_checked: r.signatures_checked,
        elapsed_seconds: 0.0,
        entries_per_second: 0.0,
        notes: r.notes,
    })
}

fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} entries ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// One line of an export bundle.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryLine {
    seq: u64,
    stored: Option<String>,
    entry_hash: Option<Hash>,
    prev_hash: Option<Hash>,
    timestamp: Option<Timestamp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    checkpoint: Checkpoint,
}

/// Entries decoded and hashed per parallel batch.
const BUNDLE_BATCH: usize = 4096;
/// The largest run of seqs a bundle may skip (each is reported as missing).
const MAX_GAP: u64 = 1_000_000;

struct BundleEntry {
    seq: u64,
    stored: Option<Vec<u8>>,
    claim: Option<IndexClaim>,
}

/// Verifies an export file, streaming: memory is bounded by one batch of lines.
fn verify_bundle(
    path: &Path,
    ledger: Option<LedgerId>,
    range: (Option<u64>, Option<u64>),
    start_from: Option<&Checkpoint>,
    keys: &[PublicKey],
    max_failures: usize,
) -> Result<Report, AuditError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| usage(format!("--bundle {shown}: {e}")))?;
    let mut lines = std::io::BufReader::new(file).lines().enumerate();
    let mut ledger = ledger;
    let mut checkpoints: Vec<Checkpoint> = Vec::new();
    let mut verifier: Option<ChainVerifier> = None;
    let mut notes = Vec::new();
    let mut pending: Vec<BundleEntry> = Vec::with_capacity(BUNDLE_BATCH);
    let mut last_seq: Option<u64> = None;
    let mut first_seq: Option<u64> = None;
    // Hashes of the entries at checkpoint seqs, as walked.
    let mut hashes_at: Vec<(u64, Option<Hash>)> = Vec::new();
    let (from, to) = range;
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
            if line.starts_with("{\"checkpoint\"") {
                let cp: CheckpointLine =
                    serde_json::from_str(&line).map_err(|e| usage(format!("{where_}: {e}")))?;
                if ledger.is_none() {
                    ledger = Some(cp.checkpoint.ledger_id.clone());
                }
                checkpoints.push(cp.checkpoint);
                continue;
            }
            let entry: EntryLine =
                serde_json::from_str(&line).map_err(|e| usage(format!("{where_}: {e}")))?;
            if last_seq.is_some_and(|l| entry.seq <= l) {
                return Err(usage(format!(
                    "{where_}: seq {} is not after the line before; a bundle is in seq order",
                    entry.seq
                )));
            }
            let stored = entry
                .stored
                .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
                .transpose()
                .map_err(|e| usage(format!("{where_}: stored is not base64: {e}")))?;
            if ledger.is_none()
                && let Some(bytes) = &stored
                && let Ok(e) = decode(bytes)
            {
                ledger = Some(e.header.ledger_id);
            }
            let claim = match (entry.entry_hash, entry.prev_hash, entry.timestamp) {
                (Some(entry_hash), Some(prev_hash), Some(timestamp)) => Some(IndexClaim {
                    entry_hash,
                    prev_hash,
                    timestamp,
                }),
                _ => None,
            };
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
                        v.push(check_entry(&ledger, missing, None), None);
                        if checkpoints.iter().any(|c| c.seq == missing) {
                            hashes_at.push((missing, None));
                        }
                    }
                }
                if checkpoints.iter().any(|c| c.seq == entry.seq) {
                    let h = match &evidence {
                        Evidence::Entry(e) => Some(e.hash),
                        Evidence::Malformed { hash, .. } => Some(*hash),
                        Evidence::Missing => None,
                    };
                    hashes_at.push((entry.seq, h));
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
        match start_hash {
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
    let signatures_checked = !keys.is_empty();
    let mut checkpoints_checked = 0;
    for cp in &checkpoints {
        checkpoints_checked += 1;
        if cp.ledger_id != ledger {
            verifier.report(
                cp.seq,
                FailureKind::CheckpointMismatch,
                format!("the bundle's checkpoint is for ledger {}", cp.ledger_id),
            );
            continue;
        }
        if signatures_checked {
            if let Err(e) = cp.verify_trusted(&keys) {
                verifier.report(
                    cp.seq,
                    FailureKind::BadSignature,
                    format!("checkpoint: {e}"),
                );
            }
        }
        match hashes_at.iter().find(|(s, _)| *s == cp.seq) {
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
            None if cp.seq > last_walked && to.is_none() => verifier.report(
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
        checkpoints_checked,
        signatures_checked,
        elapsed_seconds: 0.0,
        entries_per_second: 0.0,
        notes,
    })
}

/// An append's answer, as saved by the client.
#[derive(Deserialize)]
struct ReceiptFile {
    ledger_id: LedgerId,
    seq: u64,
    entry_hash: Hash,
    prev_hash: Hash,
    timestamp: Timestamp,
    receipt: Option<ReceiptSignature>,
}

/// The verdict on one receipt (`--json`).
#[derive(Debug, Serialize)]
struct ReceiptReport {
    ledger_id: String,
    seq: u64,
    ok: bool,
    failures: Vec<Failure>,
}

async fn check_receipt(
    args: &VerifyArgs,
    file: &Path,
    keys: &[PublicKey],
) -> Result<Verdict, AuditError> {
    let shown = file.display();
    if keys.is_empty() {
        return Err(usage(
            "checking a receipt needs the service's --public-key (GET /v1/keys)",
        ));
    }
    let bytes = std::fs::read(file).map_err(|e| usage(format!("{shown}: {e}")))?;
    let receipt: ReceiptFile = serde_json::from_slice(&bytes)
        .map_err(|e| usage(format!("{shown} is not an append receipt: {e}")))?;
    let body = ReceiptBody {
        ledger_id: receipt.ledger_id.clone(),
        seq: receipt.seq,
        entry_hash: receipt.entry_hash,
        prev_hash: receipt.prev_hash,
        timestamp: receipt.timestamp,
    };
    let mut failures = Vec::new();
    let mut fail = |kind, detail: String| {
        failures.push(Failure {
            seq: receipt.seq,
            kind,
            detail,
        })
    };
    match &receipt.receipt {
        None => fail(
            FailureKind::BadSignature,
            "the receipt carries no signature".into(),
        ),
        Some(sig) => {
            let verdict = match keys.iter().find(|k| k.id() == sig.key_id) {
                Some(k) => sig.verify(&body, k).map_err(|e| e.to_string()),
                None => Err(format!(
                    "signed with key {}, which is not a trusted key",
                    sig.key_id
                )),
            };
            if let Err(e) = verdict {
                fail(FailureKind::BadSignature, e);
            }
        }
    }
    let stored = match &args.bundle {
        Some(path) => bundle_entry(path, receipt.seq)?,
        None => {
            let (stores, _) = open_storage(&args.storage).await?;
            stored_entry(&stores, &receipt.ledger_id, receipt.seq, !args.objects_only)
                .await
                .map_err(|e| ledger_error(e, &receipt.ledger_id))?
                .map(|b| b.to_vec())
        }
    };
    match stored {
        None => fail(
            FailureKind::MissingEntry,
            format!("the ledger holds no entry at seq {}", receipt.seq),
        ),
        Some(bytes) => {
            let hash = Hash::of_entry(&bytes);
            if hash != receipt.entry_hash {
                fail(
                    FailureKind::HashMismatch,
                    format!(
                        "the receipt says entry_hash {} but the stored entry hashes to {hash}",
                        receipt.entry_hash
                    ),
                );
            }
            match decode(&bytes) {
                Ok(e)
                    if e.header.ledger_id == receipt.ledger_id
                        && e.header.seq == receipt.seq
                        && e.header.prev_hash == receipt.prev_hash
                        && e.header.timestamp == receipt.timestamp => {}
                Ok(_) => fail(
                    FailureKind::IndexMismatch,
                    "the stored entry's ledger, seq, prev_hash or timestamp differ from the receipt"
                        .into(),
                ),
                Err(e) => fail(FailureKind::MalformedEntry, e.to_string()),
            }
        }
    }
    let report = ReceiptReport {
        ledger_id: receipt.ledger_id.to_string(),
        seq: receipt.seq,
        ok: failures.is_empty(),
        failures,
    };
    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(usage)? + "\n"
    } else if report.ok {
        format!(
            "OK: receipt for ledger {} seq {}: signature valid, entry present with that hash\n",
            report.ledger_id, report.seq
        )
    } else {
        let mut t = format!(
            "FAILED: receipt for ledger {} seq {}:\n",
            report.ledger_id, report.seq
        );
        for f in &report.failures {
            t.push_str(&format!(
                "  seq {}: {}: {}\n",
                f.seq,
                kind_name(f.kind),
                f.detail
            ));
        }
        t
    };
    Ok(Verdict {
        text,
        exit_code: if report.ok { 0 } else { 1 },
    })
}

/// The stored bytes of `seq` in a bundle, read line by line.
fn bundle_entry(path: &Path, seq: u64) -> Result<Option<Vec<u8>>, AuditError> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| usage(format!("--bundle {shown}: {e}")))?;
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| usage(format!("--bundle {shown}: {e}")))?;
        if line.trim().is_empty() || line.starts_with("{\"checkpoint\"") {
            continue;
        }
        let entry: EntryLine =
            serde_json::from_str(&line).map_err(|e| usage(format!("--bundle {shown}: {e}")))?;
        if entry.seq == seq {
            return entry
                .stored
                .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
                .transpose()
                .map_err(|e| usage(format!("--bundle {shown}: {e}")));
        }
    }
    Ok(None)
}
