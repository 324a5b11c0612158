//! Verification of a large ledger on the embedded backend: the issue's 1,000,000-entry figure.
//!
//! `cargo bench --bench verify_large` writes `ELEANOR_LEDGER_VERIFY_N` entries (default
//! 1,000,000; 100-byte events) through the service into a temp dir, reopens the store
//! read-only (as `ledger-verify` does), and verifies the whole ledger three times with the
//! engine the endpoint and the CLI share, printing entries/s for each run and the median.
//! A measurement, not a test: it prints figures and asserts only that the ledger verified.
#![allow(clippy::print_stdout)] // The figure on stdout is what this bench is for.

use std::time::Instant;

use eleanor_ledger::chain::entry::{LedgerId, Record};
use eleanor_ledger::ledger::{
    Ledger, LedgerMetrics, Options, VerifyOptions, VerifyRange, verify_stores,
};
use eleanor_ledger::store::BackendMetrics;
use eleanor_ledger::store::local::LocalStore;

/// Appends in flight at once while writing (the committer batches them).
const IN_FLIGHT: u64 = 4096;

fn main() {
    let n: u64 = std::env::var("ELEANOR_LEDGER_VERIFY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ledger_id = LedgerId::parse("big").expect("valid id");
    runtime.block_on(async {
        let started = Instant::now();
        let store = LocalStore::open(dir.path(), BackendMetrics::unregistered()).expect("open store");
        let registry = prometheus::Registry::new();
        let options = Options { batch_max_records: 4096, batch_max_bytes: 4 << 20, ..Options::default() };
        let ledger = Ledger::new(store.into_stores(), options, LedgerMetrics::new(&registry).expect("metrics"));
        let mut done = 0;
        while done < n {
            let chunk = IN_FLIGHT.min(n - done);
            let appends: Vec<_> = (done..done + chunk)
                .map(|i| {
                    let (ledger, id) = (ledger.clone(), ledger_id.clone());
                    let record = Record::parse(
                        format!(r#"{{"n":{i},"actor":"alice","action":"read","resource":"invoices/2025-11"}}"#).as_bytes(),
                    )
                    .expect("valid record");
                    tokio::spawn(async move { ledger.append(&id, record).await })
                })
                .collect();
            for append in appends {
                append.await.expect("task").expect("append");
            }
            done += chunk;
        }
        ledger.shutdown().await;
        ledger.stores().objects.close().await;
        eprintln!("wrote {n} entries in {:.1} s", started.elapsed().as_secs_f64());

        let store = LocalStore::open_read_only(dir.path(), BackendMetrics::unregistered()).expect("reopen");
        let stores = store.into_stores();
        let mut rates = Vec::new();
        for run in 1..=3 {
            let started = Instant::now();
            let report = verify_stores(&stores, &ledger_id, VerifyRange::default(), &VerifyOptions::default())
                .await
                .expect("verification ran");
            let secs = started.elapsed().as_secs_f64();
            assert!(report.ok && report.verified == n, "the ledger did not verify: {:?}", report.failures);
            let rate = n as f64 / secs;
            eprintln!("verify run {run}: {n} entries in {secs:.3} s = {rate:.0} entries/s");
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!("verify_large: {n} entries, median {:.0} entries/s", rates[1]);
    });
}
