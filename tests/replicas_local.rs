//! Two appenders in one process sharing one embedded store (the embedded backend allows one
//! process per data directory; inside it, any number of writers): one linear chain, and the
//! compare-and-set conflicts between them are real and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use eleanor_ledger::chain::entry::{LedgerId, Record};
use eleanor_ledger::ledger::{Ledger, LedgerMetrics, Options, VerifyRange};
use eleanor_ledger::store::BackendMetrics;
use eleanor_ledger::store::local::LocalStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_store_make_one_linear_chain() {
    let dir = tempfile::tempdir().unwrap();
    let stores = LocalStore::open(dir.path(), BackendMetrics::unregistered())
        .unwrap()
        .into_stores();
    let registries = [prometheus::Registry::new(), prometheus::Registry::new()];
    let writers: Vec<Ledger> = registries
        .iter()
        .map(|r| {
            Ledger::new(
                stores.clone(),
                Options::default(),
                LedgerMetrics::new(r).unwrap(),
            )
        })
        .collect();
    let id = LedgerId::parse("shared").unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (writer, id) = (writers[i % 2].clone(), id.clone());
            tokio::spawn(async move {
                let record =
                    Record::parse(format!(r#"{{"writer":{},"i":{i}}}"#, i % 2).as_bytes()).unwrap();
                writer.append(&id, record).await.unwrap()
            })
        })
        .collect();
    let mut receipts = Vec::new();
    for t in tasks {
        receipts.push(t.await.unwrap());
    }
    let mut seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "no gap, no duplicate");
    let report = writers[0]
        .verify(&id, VerifyRange::default())
        .await
        .unwrap();
    assert!(report.ok && report.verified == 200, "{:?}", report.failures);
    for receipt in &receipts {
        let stored = writers[1].record(&id, receipt.seq).await.unwrap();
        assert_eq!(stored.entry_hash, receipt.entry_hash);
    }
    let conflicts: f64 = registries
        .iter()
        .flat_map(|r| r.gather())
        .filter(|f| f.name() == "ledger_commit_conflicts_total")
        .map(|f| f.get_metric()[0].get_counter().value())
        .sum();
    assert!(
        conflicts > 0.0,
        "the two writers never raced, so this proved nothing about conflicts"
    );
}

fn committers(registry: &prometheus::Registry) -> i64 {
    registry
        .gather()
        .iter()
        .find(|f| f.name() == "ledger_committers")
        .map(|f| f.get_metric()[0].get_gauge().value() as i64)
        .expect("the gauge is registered")
}

/// A ledger's committer ends after `committer_idle` without appends, and the next append
/// starts another, including appends that race the moment it ends. Time is the subject, so
/// tokio's clock is paused: the sleeps below are exact and cost no wall time.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn idle_committers_end_and_the_next_append_starts_another() {
    let dir = tempfile::tempdir().unwrap();
    let stores = LocalStore::open(dir.path(), BackendMetrics::unregistered())
        .unwrap()
        .into_stores();
    let registry = prometheus::Registry::new();
    let idle = std::time::Duration::from_millis(200);
    let writer = Ledger::new(
        stores,
        Options {
            committer_idle: idle,
            ..Options::default()
        },
        LedgerMetrics::new(&registry).unwrap(),
    );
    let record = |i: usize| Record::parse(format!(r#"{{"i":{i}}}"#).as_bytes()).unwrap();
    let (a, b) = (LedgerId::parse("a").unwrap(), LedgerId::parse("b").unwrap());
    writer.append(&a, record(0)).await.unwrap();
    writer.append(&b, record(0)).await.unwrap();
    assert_eq!(committers(&registry), 2);
    tokio::time::sleep(idle * 5).await;
    assert_eq!(committers(&registry), 0, "both ended, idle");

    // Rounds of appends sent around the moment the committer goes idle.
    let mut sent = 1;
    for round in 0..12u32 {
        tokio::time::sleep(
            idle - std::time::Duration::from_millis(12)
                + round * std::time::Duration::from_millis(2),
        )
        .await;
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let (writer, a) = (writer.clone(), a.clone());
                let record = record(sent + i);
                tokio::spawn(async move { writer.append(&a, record).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        sent += 4;
    }
    let report = writer.verify(&a, VerifyRange::default()).await.unwrap();
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!(report.verified, sent as u64, "every append once, no gap");
    writer.shutdown().await;
    assert_eq!(committers(&registry), 0);
}
