//! Reading verification reports: the service's `GET .../verify` and `ledger-verify --json`
//! print one shape, `{"failures": [{"seq", "kind", "detail"}], ...}`.
//!
//! Include it with `#[path = "support/report.rs"] mod report_support;`.

use serde_json::Value;

/// `(seq, kind)` of each failure in a report, in its order.
pub fn failure_kinds(report: &Value) -> Vec<(u64, String)> {
    report["failures"]
        .as_array()
        .unwrap_or_else(|| panic!("a report: {report}"))
        .iter()
        .map(|f| {
            (
                f["seq"].as_u64().expect("a failure names its seq"),
                f["kind"]
                    .as_str()
                    .expect("a failure names its kind")
                    .to_owned(),
            )
        })
        .collect()
}
