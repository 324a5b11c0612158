//! What `ledger-verify` prints: the [`Report`] of a ledger's check (text or `--json`) and the
//! [`Verdict`] with its exit code.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::{AuditError, usage};
use crate::chain::verify::{Failure, FailureKind, Head};

/// A verdict: the text to print and the exit code (0 intact, 1 integrity failure).
#[derive(Debug)]
pub struct Verdict {
    pub text: String,
    pub exit_code: u8,
}

impl Verdict {
    pub(super) fn new(text: String, ok: bool) -> Verdict {
        Verdict {
            text,
            exit_code: if ok { 0 } else { 1 },
        }
    }
}

/// The machine report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `None`: nothing named the ledger (an empty bundle without `--ledger`).
    pub ledger_id: Option<String>,
    /// `"storage:local"`, `"storage:aws"` (with ` (objects only)` under `--objects-only`) or
    /// `"bundle"`.
    pub source: String,
    pub ok: bool,
    pub from: u64,
    pub to: u64,
    pub verified: u64,
    /// The head the storage states, or the one a bundle's end line states it was cut at.
    pub head: Option<Head>,
    pub failures: Vec<Failure>,
    pub failures_total: u64,
    pub checkpoints_checked: u64,
    pub signatures_checked: bool,
    /// For a bundle: whether it has an end line (checked against its entries); `false` only
    /// under `--allow-unattested-end`. Absent for storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_attested: Option<bool>,
    pub elapsed_seconds: f64,
    pub entries_per_second: f64,
    /// Things the auditor should know that are not failures (an unchecked first link, ...).
    pub notes: Vec<String>,
}

impl Report {
    /// The text report.
    pub(super) fn human(&self, elapsed: Duration) -> String {
        let r = self;
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
            r.ledger_id.as_deref().unwrap_or("(not named)"),
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
        match r.end_attested {
            Some(true) => {
                let _ = writeln!(out, "end: the bundle's end line was checked");
            }
            Some(false) => {
                let _ = writeln!(out, "end: UNATTESTED (the bundle has no end line)");
            }
            None => {}
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
            write_failures(&mut out, &r.failures);
        }
        for note in &r.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }
}

/// `report` as pretty JSON, newline-terminated.
pub(super) fn json(report: &impl Serialize) -> Result<String, AuditError> {
    Ok(serde_json::to_string_pretty(report).map_err(usage)? + "\n")
}

/// One indented line per failure: `  seq N: kind: detail`.
pub(super) fn write_failures(out: &mut String, failures: &[Failure]) {
    for f in failures {
        let _ = writeln!(out, "  seq {}: {}: {}", f.seq, kind_name(f.kind), f.detail);
    }
}

/// The stable name of a failure kind, as its JSON spells it.
fn kind_name(kind: FailureKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
