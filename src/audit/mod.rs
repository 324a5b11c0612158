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
//! `--max-failures`); 2 usage or configuration error; 3 storage unreachable. An error is one
//! sentence on stderr and, with `--json`, also `{"ok": false, "exit_code", "error": {"code",
//! "message"}}` on stdout, where the report would have been.
//!
//! The parts:
//! - this file: the flags ([`VerifyArgs`]), the trusted inputs they name (public keys, a
//!   starting checkpoint) and [`run`], which picks the source and renders the verdict;
//! - `storage`: opening the configured stores read-only and running the service's engine;
//! - `bundle`: the streaming check of an export file (its lines are
//!   [`crate::ledger::ExportLine`], the type the export writes);
//! - `receipt`: the check of one append receipt against either source;
//! - `report`: the [`Report`] and [`Verdict`], as text and JSON.

mod bundle;
mod receipt;
mod report;
mod storage;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;

use crate::chain::checkpoint::{Checkpoint, PublicKey};
use crate::chain::entry::LedgerId;
use crate::config::StorageArgs;
use crate::ledger::VerifyRange;
pub use report::{Report, Verdict};

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
    /// With --bundle: a bundle with no entries is no failure.
    #[arg(long, requires = "bundle")]
    pub allow_empty: bool,
    /// With --bundle: a bundle without an end line (an export made before end lines existed)
    /// is no failure; the report says its end is unattested.
    #[arg(long, requires = "bundle")]
    pub allow_unattested_end: bool,
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

    /// The stable code `--json` names the error by.
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Usage(_) => "usage_error",
            AuditError::Unreachable(_) => "storage_unreachable",
        }
    }

    /// A command line clap refused, as one sentence (clap's first line, without its
    /// `error: ` and the usage and help lines that follow).
    pub fn from_clap(e: &clap::Error) -> AuditError {
        let rendered = e.render().to_string();
        let first = rendered.lines().next().unwrap_or_default();
        AuditError::Usage(first.strip_prefix("error: ").unwrap_or(first).to_owned())
    }

    /// What `--json` prints on stdout for an error, newline-terminated:
    /// `{"ok": false, "exit_code": n, "error": {"code", "message"}}`.
    pub fn to_json(&self) -> String {
        let body = serde_json::json!({
            "ok": false,
            "exit_code": self.exit_code(),
            "error": {"code": self.code(), "message": self.to_string()},
        });
        format!("{body:#}\n")
    }
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
        return receipt::check_receipt(&args, file, &keys).await;
    }
    let start_from = args
        .checkpoint
        .as_deref()
        .map(|path| read_checkpoint(path, &keys))
        .transpose()?;
    let range = VerifyRange {
        from: args.from,
        to: args.to,
    };
    let started = Instant::now();
    let mut report = match &args.bundle {
        Some(path) => {
            let path = path.clone();
            let flags = bundle::BundleFlags {
                max_failures: args.max_failures,
                allow_empty: args.allow_empty,
                allow_unattested_end: args.allow_unattested_end,
            };
            tokio::task::spawn_blocking(move || {
                bundle::verify_bundle(&path, ledger, range, start_from.as_ref(), &keys, flags)
            })
            .await
            .map_err(|e| usage(format!("the bundle check failed: {e}")))??
        }
        None => {
            let ledger = ledger.ok_or_else(|| usage("--ledger is required"))?;
            let (stores, source) = storage::open_storage(&args.storage).await?;
            storage::verify_storage(&stores, source, &ledger, &args, range, start_from, keys)
                .await?
        }
    };
    let elapsed = started.elapsed();
    report.elapsed_seconds = elapsed.as_secs_f64();
    report.entries_per_second = report.verified as f64 / elapsed.as_secs_f64().max(1e-9);
    let text = if args.json {
        report::json(&report)?
    } else {
        report.human(elapsed)
    };
    Ok(Verdict::new(text, report.ok))
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
        // Laxer than the export's `ExportCheckpointLine` (other keys beside `checkpoint` are
        // ignored), as this flag has always been; kept so that no accepted file is refused.
        #[derive(serde::Deserialize)]
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
