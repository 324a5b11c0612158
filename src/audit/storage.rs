//! Verification over storage: open the configured stores read-only and run the service's own
//! engine, [`verify_stores`], with a progress bar on a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use super::{AuditError, Report, VerifyArgs, usage};
use crate::chain::checkpoint::{Checkpoint, PublicKey};
use crate::chain::entry::LedgerId;
use crate::chain::verify::{Failure, FailureKind};
use crate::config::StorageArgs;
use crate::ledger::{LedgerError, VerifyOptions, VerifyRange, VerifyReport, verify_stores};
use crate::store::{self, Access, Backend, BackendMetrics, OpenError, Stores};

/// Opens the configured stores read-only; also names the source for the report.
pub(super) async fn open_storage(
    storage: &StorageArgs,
) -> Result<(Stores, &'static str), AuditError> {
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

/// A ledger error that leaves no verdict: the user's mistake, or storage out of reach.
pub(super) fn ledger_error(e: LedgerError, ledger: &LedgerId) -> AuditError {
    match e {
        LedgerError::LedgerNotFound => {
            usage(format!("there is no ledger {ledger} in this storage"))
        }
        LedgerError::InvalidRange(m) => usage(m),
        other => AuditError::Unreachable(other.to_string()),
    }
}

pub(super) async fn verify_storage(
    stores: &Stores,
    source: &'static str,
    ledger: &LedgerId,
    args: &VerifyArgs,
    range: VerifyRange,
    start_from: Option<Checkpoint>,
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
    let result = verify_stores(stores, ledger, range, &options).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let source = if args.objects_only {
        format!("{source} (objects only)")
    } else {
        source.to_owned()
    };
    match result {
        Ok(r) => Ok(storage_report(r, source)),
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
            Ok(Report {
                ledger_id: Some(ledger.to_string()),
                source,
                ok: false,
                from: range.from.unwrap_or(1),
                to: range.to.unwrap_or(0),
                verified: 0,
                head: None,
                failures,
                failures_total: 1,
                checkpoints_checked: 0,
                signatures_checked: !options.trusted_keys.is_empty(),
                end_attested: None,
                elapsed_seconds: 0.0,
                entries_per_second: 0.0,
                notes,
            })
        }
        Err(e) => Err(ledger_error(e, ledger)),
    }
}

/// The engine's report as `ledger-verify` prints it (the timings are filled in by the caller).
fn storage_report(r: VerifyReport, source: String) -> Report {
    Report {
        ledger_id: Some(r.ledger_id.to_string()),
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
        end_attested: None,
        elapsed_seconds: 0.0,
        entries_per_second: 0.0,
        notes: r.notes,
    }
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
