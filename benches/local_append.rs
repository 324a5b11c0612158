//! Durable appends through [`Ledger`] over the embedded backend (redb in a temp dir, every
//! commit fsynced), and verification of what was written.
//!
//! `cargo bench --bench local_append`. For each batch size B (1, 16, 256, 1024) the committer
//! is bounded to B records per batch and each iteration submits `8 × B` (at least 64) 1 KiB
//! appends at once, so after the first batch every batch is full. Criterion prints
//! records/s as elements/s; the mean batch size actually achieved is printed to stderr from
//! the `ledger_batch_size` histogram.

#[path = "support/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eleanor_ledger::chain::entry::{LedgerId, Record};
use eleanor_ledger::ledger::{Ledger, LedgerMetrics, Options, VerifyRange};
use eleanor_ledger::store::BackendMetrics;
use eleanor_ledger::store::local::LocalStore;
use futures::future::join_all;
use tempfile::TempDir;
use tokio::runtime::Runtime;

const BATCH_SIZES: [usize; 4] = [1, 16, 256, 1024];
/// Entries written before the verification bench reads them back.
const VERIFY_LEN: u64 = 20_000;

/// A service over a fresh embedded store, committing at most `batch` records per batch.
struct Bench {
    ledger: Ledger,
    registry: prometheus::Registry,
    _dir: TempDir,
}

impl Bench {
    fn new(batch: usize, in_flight: usize) -> Bench {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = LocalStore::open(dir.path(), BackendMetrics::unregistered())
            .expect("the embedded store opens");
        let registry = prometheus::Registry::new();
        let options = Options {
            batch_max_records: batch,
            // Let the record bound, not the byte bound, decide the batch size.
            batch_max_bytes: batch * 1400,
            queue_depth: in_flight.max(1),
            ..Options::default()
        };
        let ledger = Ledger::new(
            store.into_stores(),
            options,
            LedgerMetrics::new(&registry).expect("fresh registry"),
        );
        Bench {
            ledger,
            registry,
            _dir: dir,
        }
    }

    /// Mean records per committed batch so far, from `ledger_batch_size`.
    fn mean_batch(&self) -> f64 {
        self.registry
            .gather()
            .iter()
            .find(|f| f.name() == "ledger_batch_size")
            .and_then(|f| f.get_metric().first())
            .map(|m| {
                let h = m.get_histogram();
                h.get_sample_sum() / h.get_sample_count().max(1) as f64
            })
            .unwrap_or(0.0)
    }
}

/// Submits all `records` at once and waits for every receipt.
async fn append_all(ledger: &Ledger, id: &LedgerId, records: &[Record]) {
    let receipts = join_all(records.iter().map(|r| ledger.append(id, r.clone()))).await;
    for r in receipts {
        r.expect("append succeeds");
    }
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn local_append(c: &mut Criterion) {
    let rt = runtime();
    let id = LedgerId::parse("bench").expect("a valid ledger id");
    let mut g = c.benchmark_group("local_append_1KiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for batch in BATCH_SIZES {
        let in_flight = (8 * batch).max(64);
        let records: Vec<Record> = (0..in_flight as u64)
            .map(|n| Record::parse(&common::event_body(n)).expect("a valid record"))
            .collect();
        let bench = Bench::new(batch, in_flight);
        let ledger = Arc::new(bench.ledger.clone());
        g.throughput(Throughput::Elements(in_flight as u64));
        g.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, _| {
            b.iter_custom(|iters| {
                let started = Instant::now();
                for _ in 0..iters {
                    rt.block_on(append_all(&ledger, &id, &records));
                }
                started.elapsed()
            })
        });
        eprintln!(
            "local_append_1KiB/batch/{batch}: mean committed batch {:.1} records",
            bench.mean_batch()
        );
        rt.block_on(bench.ledger.shutdown());
    }
    g.finish();
}

fn local_verify(c: &mut Criterion) {
    let rt = runtime();
    let id = LedgerId::parse("bench").expect("a valid ledger id");
    let bench = Bench::new(1024, 4096);
    let chunk: Vec<Record> = (0..4096)
        .map(|n| Record::parse(&common::event_body(n)).expect("a valid record"))
        .collect();
    rt.block_on(async {
        for _ in 0..VERIFY_LEN / chunk.len() as u64 {
            append_all(&bench.ledger, &id, &chunk).await;
        }
    });
    let written = rt
        .block_on(bench.ledger.head(&id))
        .expect("the ledger has a head")
        .seq;
    let mut g = c.benchmark_group("local_verify_1KiB");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Elements(written));
    g.bench_function(BenchmarkId::new("entries", written), |b| {
        b.iter(|| {
            let report = rt
                .block_on(bench.ledger.verify(&id, VerifyRange::default()))
                .expect("verification runs");
            assert!(report.ok && report.verified == written);
        })
    });
    g.finish();
    rt.block_on(bench.ledger.shutdown());
}

criterion_group!(benches, local_append, local_verify);
criterion_main!(benches);
