//! `ledger-verify receipt FILE`: an append's answer checked on both counts: its signature
//! verifies with a trusted key, and the ledger (storage or a bundle) holds exactly that entry
//! at that seq.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::bundle::bundle_entry;
use super::report::{self, Verdict};
use super::storage::{ledger_error, open_storage};
use super::{AuditError, VerifyArgs, usage};
use crate::chain::checkpoint::{PublicKey, ReceiptBody, ReceiptSignature};
use crate::chain::entry::{LedgerId, Timestamp, decode};
use crate::chain::hash::Hash;
use crate::chain::verify::{Failure, FailureKind};
use crate::ledger::stored_entry;

/// An append's answer, as saved by the client (its other fields, such as `object_key`, are
/// not checked). `crate::ledger::Receipt` is the type the service writes; it has no
/// `Deserialize`, so this reader's copy stays until it has.
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

pub(super) async fn check_receipt(
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
    let file: ReceiptFile = serde_json::from_slice(&bytes)
        .map_err(|e| usage(format!("{shown} is not an append receipt: {e}")))?;
    let (body, receipt) = (
        ReceiptBody {
            ledger_id: file.ledger_id,
            seq: file.seq,
            entry_hash: file.entry_hash,
            prev_hash: file.prev_hash,
            timestamp: file.timestamp,
        },
        file.receipt,
    );
    let mut failures = Vec::new();
    let mut fail = |kind, detail: String| {
        failures.push(Failure {
            seq: body.seq,
            kind,
            detail,
        })
    };
    match &receipt {
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
        Some(path) => bundle_entry(path, body.seq)?,
        None => {
            let (stores, _) = open_storage(&args.storage).await?;
            stored_entry(&stores, &body.ledger_id, body.seq, !args.objects_only)
                .await
                .map_err(|e| ledger_error(e, &body.ledger_id))?
                .map(|b| b.to_vec())
        }
    };
    match stored {
        None => fail(
            FailureKind::MissingEntry,
            format!("the ledger holds no entry at seq {}", body.seq),
        ),
        Some(bytes) => {
            let hash = Hash::of_entry(&bytes);
            if hash != body.entry_hash {
                fail(
                    FailureKind::HashMismatch,
                    format!(
                        "the receipt says entry_hash {} but the stored entry hashes to {hash}",
                        body.entry_hash
                    ),
                );
            }
            match decode(&bytes) {
                Ok(e)
                    if e.header.ledger_id == body.ledger_id
                        && e.header.seq == body.seq
                        && e.header.prev_hash == body.prev_hash
                        && e.header.timestamp == body.timestamp => {}
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
        ledger_id: body.ledger_id.to_string(),
        seq: body.seq,
        ok: failures.is_empty(),
        failures,
    };
    let text = if args.json {
        report::json(&report)?
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
        report::write_failures(&mut t, &report.failures);
        t
    };
    Ok(Verdict::new(text, report.ok))
}
