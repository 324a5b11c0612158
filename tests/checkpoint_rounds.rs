//! Periodic checkpoint rounds cost in proportion to the ledgers whose heads moved, and a moved
//! ledger is checkpointed once per interval across replicas (issue 20; `docs/PROTOCOL.md`,
//! "Checkpoint rounds"). Replicas are [`Ledger`]s in one process over one embedded store;
//! store calls are counted through the fault-injecting wrapper (with no fault planned).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use eleanor_ledger::chain::checkpoint::Signer;
use eleanor_ledger::chain::entry::{LedgerId, Record};
use eleanor_ledger::chain::keys::checkpoints_prefix;
use eleanor_ledger::ledger::{Ledger, LedgerMetrics, Options};
use eleanor_ledger::store::fault::{self, FaultHandle};
use eleanor_ledger::store::local::LocalStore;
use eleanor_ledger::store::{BackendMetrics, Stores};

/// A replica with rounds on (a signing key and an interval; the test runs the rounds).
fn replica(stores: &Stores) -> Ledger {
    Ledger::new(
        stores.clone(),
        Options {
            signer: Some(Arc::new(Signer::from_seed(&[9; 32]))),
            checkpoint_interval: Duration::from_secs(300),
            ..Options::default()
        },
        LedgerMetrics::new(&prometheus::Registry::new()).unwrap(),
    )
}

fn id(name: &str) -> LedgerId {
    LedgerId::parse(name).unwrap()
}

async fn append(ledger: &Ledger, id: &LedgerId) -> u64 {
    let record = Record::parse(br#"{"event":"moved"}"#).unwrap();
    ledger.append(id, record).await.unwrap().seq
}

/// Seqs of the ledger's stored checkpoints.
async fn checkpoints(stores: &Stores, id: &LedgerId) -> Vec<String> {
    stores
        .objects
        .list(&checkpoints_prefix(id), None, 1000)
        .await
        .unwrap()
}

/// Store calls made by `round`, by name.
async fn calls_of(
    handle: &FaultHandle,
    round: impl Future<Output = u64>,
) -> (u64, Vec<&'static str>) {
    let before = handle.calls().len();
    let written = round.await;
    (written, handle.calls()[before..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_does_nothing_without_moved_ledgers_and_a_few_calls_per_moved_one() {
    let dir = tempfile::tempdir().unwrap();
    let base = LocalStore::open(dir.path(), BackendMetrics::unregistered())
        .unwrap()
        .into_stores();
    let (counted, handle) = fault::wrap(&base);
    let ledger = replica(&counted);
    let ids: Vec<LedgerId> = (0..200).map(|i| id(&format!("l{i:03}"))).collect();
    for i in &ids {
        append(&ledger, i).await;
    }
    let (written, _) = calls_of(&handle, async {
        ledger.checkpoint_moved_ledgers().await.unwrap()
    })
    .await;
    assert_eq!(written, 200, "every ledger moved");

    let (written, calls) = calls_of(&handle, async {
        ledger.checkpoint_moved_ledgers().await.unwrap()
    })
    .await;
    assert_eq!((written, calls.len()), (0, 0), "no ledger moved: {calls:?}");

    for i in &ids[..10] {
        append(&ledger, i).await;
    }
    let (written, calls) = calls_of(&handle, async {
        ledger.checkpoint_moved_ledgers().await.unwrap()
    })
    .await;
    eprintln!(
        "a round over 10 moved ledgers of 200: {} store calls: {calls:?}",
        calls.len()
    );
    assert_eq!(written, 10);
    assert!(!calls.contains(&"ledgers"), "no ledger listing: {calls:?}");
    assert!(
        calls.len() <= 10 * 6,
        "{} calls for 10 moved ledgers of 200: {calls:?}",
        calls.len()
    );
    for i in &ids[..10] {
        assert_eq!(checkpoints(&base, i).await.len(), 2, "{i}");
    }
    for i in &ids[10..] {
        assert_eq!(checkpoints(&base, i).await.len(), 1, "{i}");
    }
    ledger.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_moved_on_two_replicas_is_checkpointed_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let base = LocalStore::open(dir.path(), BackendMetrics::unregistered())
        .unwrap()
        .into_stores();
    let (counted, handle) = fault::wrap(&base);
    let (a, b) = (replica(&base), replica(&counted));
    let shared = id("shared");

    // Both replicas append before either round: the first round's checkpoint covers both.
    append(&a, &shared).await;
    append(&b, &shared).await;
    assert_eq!(a.checkpoint_moved_ledgers().await.unwrap(), 1);
    let (written, calls) = calls_of(&handle, async {
        b.checkpoint_moved_ledgers().await.unwrap()
    })
    .await;
    assert_eq!(written, 0, "covered by the other replica's checkpoint");
    assert_eq!(calls, ["list"], "one listing decides it");
    assert_eq!(checkpoints(&base, &shared).await.len(), 1);

    // A replica that did not write the ledger does nothing for it.
    append(&a, &shared).await;
    let (written, calls) = calls_of(&handle, async {
        b.checkpoint_moved_ledgers().await.unwrap()
    })
    .await;
    assert_eq!((written, calls.len()), (0, 0), "{calls:?}");
    assert_eq!(a.checkpoint_moved_ledgers().await.unwrap(), 1);

    // B appends, A appends and checkpoints, B appends again: A's checkpoint of this interval
    // does not cover B's last seq, and B waits for its next round instead of making a second
    // checkpoint in the same interval; that round then covers it.
    append(&b, &shared).await;
    append(&a, &shared).await;
    assert_eq!(a.checkpoint_moved_ledgers().await.unwrap(), 1);
    let last = append(&b, &shared).await;
    assert_eq!(b.checkpoint_moved_ledgers().await.unwrap(), 0, "deferred");
    assert_eq!(checkpoints(&base, &shared).await.len(), 3);
    assert_eq!(
        b.checkpoint_moved_ledgers().await.unwrap(),
        1,
        "the next round"
    );
    let latest = b.latest_checkpoint(&shared).await.unwrap().unwrap();
    assert_eq!(latest.seq, last);
    assert_eq!(
        b.checkpoint_moved_ledgers().await.unwrap(),
        0,
        "nothing left"
    );
    a.shutdown().await;
    b.shutdown().await;
}
