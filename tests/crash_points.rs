//! Every crash point of an append batch, deterministically (docs/PROTOCOL.md, "Crash points").
//!
//! For each store call a batch makes, and each kind of fault at that call, a writer appends a
//! batch through the fault-injecting wrapper; then a fresh writer over the same stores plays
//! the restarted process. It must find one valid chain: verification ok, no gap, duplicate or
//! fork, every acknowledged record present with its hash, and the interrupted batch either
//! wholly present (rolled forward) or wholly absent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/aws.rs"]
mod aws_support;

use eleanor_ledger::chain::entry::{IdempotencyKey, LedgerId, Record};
use eleanor_ledger::ledger::{
    Append, Ledger, LedgerError, LedgerMetrics, Options, Receipt, VerifyRange,
};
use eleanor_ledger::store::fault::{self, Fault, FaultHandle};
use eleanor_ledger::store::local::LocalStore;
use eleanor_ledger::store::{BackendMetrics, Stores};

const BATCH: usize = 4;

fn service(stores: &Stores) -> Ledger {
    Ledger::new(
        stores.clone(),
        Options::default(),
        LedgerMetrics::new(&prometheus::Registry::new()).unwrap(),
    )
}

/// A record of ~300 bytes: a batch of [`BATCH`] of them is over the AWS backend's inline
/// bound (`store::aws::pending::INLINE_MAX_BYTES`), so on the emulator its claim writes the
/// pending batch as an object first (the keyed matrix's smaller records stay inline).
fn record(tag: &str, i: usize) -> Record {
    let pad = "p".repeat(260);
    Record::parse(format!(r#"{{"tag":"{tag}","i":{i},"text":"entrée","pad":"{pad}"}}"#).as_bytes())
        .unwrap()
}

fn small_record(tag: &str, i: usize) -> Record {
    Record::parse(format!(r#"{{"tag":"{tag}","i":{i},"text":"entrée"}}"#).as_bytes()).unwrap()
}

/// `BATCH` records as one batch request: one batch of the writer, whatever the timing (a
/// request is never split), so every scenario interrupts the same calls. Each record's answer.
async fn append_batch(
    ledger: &Ledger,
    id: &LedgerId,
    tag: &str,
) -> Vec<Result<Receipt, LedgerError>> {
    let records = (0..BATCH).map(|i| record(tag, i).into()).collect();
    match ledger.append_all(id, records).await {
        Ok(receipts) => receipts.into_iter().map(Ok).collect(),
        Err(e) => vec![Err(e); BATCH],
    }
}

/// How the stores are wrapped: [`fault::wrap`] (the embedded store commits a batch in one
/// step) or [`fault::wrap_in_steps`] (the protocol's separate claim, objects and items).
type Wrap = fn(&Stores) -> (Stores, FaultHandle);

/// Store calls one batch makes on a writer that has just started (cold head cache).
async fn calls_per_batch(make: &impl AsyncFn() -> Stores, wrap: Wrap) -> Vec<&'static str> {
    let base = make().await;
    let id = LedgerId::parse("probe").unwrap();
    let seed = service(&base);
    append_batch(&seed, &id, "seed").await;
    seed.shutdown().await;
    let (faulty, handle) = wrap(&base);
    let writer = service(&faulty);
    for r in append_batch(&writer, &id, "probe").await {
        r.unwrap();
    }
    writer.shutdown().await;
    handle.calls()
}

/// Runs one scenario on ledger `id`, which must not exist yet in `make`'s stores (stores may
/// be shared between scenarios, as on the emulator, where a fresh bucket and table each time
/// would cost more than the scenario).
async fn run_scenario(
    make: &impl AsyncFn() -> Stores,
    wrap: Wrap,
    id: &LedgerId,
    at: usize,
    fault: Fault,
) -> String {
    let base = make().await;
    let seed = service(&base);
    let seeded: Vec<Receipt> = append_batch(&seed, id, "seed")
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    seed.shutdown().await;

    let (faulty, handle) = wrap(&base);
    let writer = service(&faulty);
    handle.plan(at, fault);
    let results = append_batch(&writer, id, "victim").await;
    let acked: Vec<Receipt> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().cloned())
        .collect();
    // The writer is dead (or, for a transient fault, simply done); a new one takes over.
    drop(writer);

    // The restarted process does nothing at startup (it walks no ledger): its first touch of
    // the ledger, a read, must find the interrupted batch whole or absent.
    let restarted = service(&base);
    let first_read = restarted.records(id, 0, 100).await.unwrap();
    let after = restarted.append(id, record("after", 0)).await.unwrap();
    let report = restarted.verify(id, VerifyRange::default()).await.unwrap();
    let case = format!(
        "{id}: fault {fault:?} at call {at} (crashed: {})",
        handle.crashed()
    );
    assert!(
        report.ok,
        "{case}: verification failed: {:?}",
        report.failures
    );

    // Every acknowledged record is there, with the hash it was acknowledged with.
    for receipt in seeded.iter().chain(&acked) {
        let stored = restarted.record(id, receipt.seq).await.unwrap();
        assert_eq!(
            stored.entry_hash, receipt.entry_hash,
            "{case}: seq {} changed",
            receipt.seq
        );
    }
    // The interrupted batch is all there or not there at all; seqs are contiguous.
    let page = restarted.records(id, 0, 100).await.unwrap();
    let victims_in = |page: &eleanor_ledger::ledger::RecordPage| {
        page.records
            .iter()
            .filter(|r| r.record.get().contains("\"victim\""))
            .count()
    };
    let victims = victims_in(&page);
    assert_eq!(
        victims_in(&first_read),
        victims,
        "{case}: the first read after the restart saw the batch as the later one did"
    );
    assert!(
        victims == 0 || victims == BATCH,
        "{case}: {victims} of {BATCH} records of the batch survived"
    );
    assert!(
        victims == BATCH || acked.is_empty(),
        "{case}: acknowledged records were lost"
    );
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=after.seq).collect::<Vec<_>>(),
        "{case}: seqs are not 1..=N"
    );
    assert_eq!(
        after.seq,
        (BATCH + victims + 1) as u64,
        "{case}: unexpected head"
    );
    restarted.shutdown().await;
    format!(
        "{case}: acked {}, batch {}",
        acked.len(),
        if victims > 0 { "present" } else { "absent" }
    )
}

async fn every_crash_point(make: impl AsyncFn() -> Stores, wrap: Wrap, one_step: bool) {
    let calls = calls_per_batch(&make, wrap).await;
    assert!(
        if one_step {
            calls.contains(&"commit_batch") && !calls.contains(&"put_new")
        } else {
            calls.contains(&"compare_and_set_head") && calls.contains(&"put_new")
        },
        "{calls:?}"
    );
    let mut outcomes = Vec::new();
    // One past the end too: a fault planned after the batch's last call must change nothing.
    for at in 0..=calls.len() {
        for fault in [Fault::FailBefore, Fault::CrashAfter, Fault::CrashHalfway] {
            let id = LedgerId::parse(&format!("crash-{at}-{fault:?}")).unwrap();
            outcomes.push(run_scenario(&make, wrap, &id, at, fault).await);
        }
    }
    // Both outcomes of the protocol must have been exercised.
    assert!(
        outcomes.iter().any(|o| o.ends_with("present")),
        "{outcomes:#?}"
    );
    assert!(
        outcomes.iter().any(|o| o.ends_with("absent")),
        "{outcomes:#?}"
    );
    eprintln!("calls per batch: {calls:?}\n{}", outcomes.join("\n"));
}

/// The claim is applied but its answer is lost (a timeout after the request landed): the
/// writer must find its batch and acknowledge it, once, without appending it again.
async fn a_claim_whose_answer_was_lost(make: impl AsyncFn() -> Stores, wrap: Wrap) {
    let claim = calls_per_batch(&make, wrap)
        .await
        .iter()
        .position(|op| *op == "commit_batch" || *op == "compare_and_set_head")
        .expect("a batch has a claim");
    let base = make().await;
    let id = LedgerId::parse(&format!("lost-answer-{:08x}", fastrand::u32(..))).unwrap();
    let seed = service(&base);
    append_batch(&seed, &id, "seed").await;
    seed.shutdown().await;
    let (faulty, handle) = wrap(&base);
    let writer = service(&faulty);
    handle.plan(claim, Fault::LoseAnswer);
    let receipts: Vec<Receipt> = append_batch(&writer, &id, "victim")
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(receipts.iter().all(|r| r.written_out), "{receipts:?}");
    let mut seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (BATCH as u64 + 1..=2 * BATCH as u64).collect::<Vec<_>>()
    );
    writer.shutdown().await;

    let reader = service(&base);
    let report = reader.verify(&id, VerifyRange::default()).await.unwrap();
    assert!(report.ok, "{:?}", report.failures);
    let page = reader.records(&id, 0, 100).await.unwrap();
    assert_eq!(page.records.len(), 2 * BATCH, "the batch is there once");
    for receipt in &receipts {
        let stored = reader.record(&id, receipt.seq).await.unwrap();
        assert_eq!(stored.entry_hash, receipt.entry_hash);
    }
}

/// The victim batch of the keyed matrix: one batch request (committed in one claim, so the
/// batch is deterministic, with no linger), every record with its own key.
fn keyed_batch(id: &LedgerId) -> Vec<Append> {
    (0..BATCH)
        .map(|i| {
            let key = IdempotencyKey::parse(&format!("{id} victim \"{i}\"")).unwrap();
            Append::new(small_record("victim", i), Some(key))
        })
        .collect()
}

/// A keyed batch interrupted at call `at` by `fault`, then retried with the same keys by a
/// restarted writer, as a client does after an error: every key ends with exactly one entry,
/// an acknowledged batch is answered with its original receipts, and the chain verifies.
async fn run_keyed_scenario(
    make: &impl AsyncFn() -> Stores,
    wrap: Wrap,
    id: &LedgerId,
    at: usize,
    fault: Fault,
) -> String {
    let base = make().await;
    let seed = service(&base);
    for r in append_batch(&seed, id, "seed").await {
        r.unwrap();
    }
    seed.shutdown().await;

    let (faulty, handle) = wrap(&base);
    let writer = service(&faulty);
    handle.plan(at, fault);
    let acked = writer.append_all(id, keyed_batch(id)).await.ok();
    drop(writer);
    let case = format!(
        "{id}: fault {fault:?} at call {at} (crashed: {})",
        handle.crashed()
    );

    let restarted = service(&base);
    let retried = restarted.append_all(id, keyed_batch(id)).await.unwrap();
    let again = restarted.append_all(id, keyed_batch(id)).await.unwrap();
    assert!(
        again.iter().all(|r| r.replayed),
        "{case}: a second retry appends nothing"
    );
    let same = |a: &[Receipt], b: &[Receipt]| {
        a.iter()
            .map(|r| (r.seq, r.entry_hash))
            .eq(b.iter().map(|r| (r.seq, r.entry_hash)))
    };
    assert!(same(&retried, &again), "{case}: {retried:?} / {again:?}");
    if let Some(acked) = &acked {
        assert!(
            same(acked, &retried),
            "{case}: acknowledged {acked:?}, retried {retried:?}"
        );
        assert!(retried.iter().all(|r| r.replayed), "{case}");
    }
    let report = restarted.verify(id, VerifyRange::default()).await.unwrap();
    assert!(
        report.ok,
        "{case}: verification failed: {:?}",
        report.failures
    );
    let page = restarted.records(id, 0, 100).await.unwrap();
    let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=2 * BATCH as u64).collect::<Vec<_>>(),
        "{case}: one entry per key"
    );
    for (append, receipt) in keyed_batch(id).iter().zip(&retried) {
        let found = restarted
            .record_by_key(id, append.key.as_ref().unwrap())
            .await;
        assert_eq!(found.unwrap().map(|r| r.seq), Some(receipt.seq), "{case}");
    }
    restarted.shutdown().await;
    format!(
        "{case}: {}",
        if retried[0].replayed {
            "committed before the retry"
        } else {
            "committed by the retry"
        }
    )
}

async fn every_keyed_crash_point(make: impl AsyncFn() -> Stores, wrap: Wrap) {
    // The calls of one keyed batch request on a writer that has just started.
    let probe = LedgerId::parse(&format!("keyed-probe-{:08x}", fastrand::u32(..))).unwrap();
    let (faulty, handle) = wrap(&make().await);
    let writer = service(&faulty);
    writer
        .append_all(&probe, keyed_batch(&probe))
        .await
        .unwrap();
    writer.shutdown().await;
    let calls = handle.calls();
    let mut outcomes = Vec::new();
    for at in 0..=calls.len() {
        for fault in [Fault::FailBefore, Fault::CrashAfter, Fault::LoseAnswer] {
            let id = LedgerId::parse(&format!("keyed-{at}-{fault:?}-{:04x}", fastrand::u16(..)))
                .unwrap();
            outcomes.push(run_keyed_scenario(&make, wrap, &id, at, fault).await);
        }
    }
    for outcome in ["committed before the retry", "committed by the retry"] {
        assert!(
            outcomes.iter().any(|o| o.ends_with(outcome)),
            "{outcomes:#?}"
        );
    }
    eprintln!("calls per keyed batch: {calls:?}\n{}", outcomes.join("\n"));
}

/// A fresh bucket and table on the emulator, shared by the scenarios of one test.
async fn emulator() -> Stores {
    let settings = aws_support::fresh_settings().await;
    aws_support::connect_with(&settings, BackendMetrics::unregistered()).await
}

async fn embedded() -> Stores {
    let dir = tempfile::tempdir().unwrap().keep();
    LocalStore::open(&dir, BackendMetrics::unregistered())
        .unwrap()
        .into_stores()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_batch_heals_on_the_embedded_backend() {
    every_crash_point(embedded, fault::wrap, true).await;
}

/// The embedded store in the protocol's separate steps: how it finishes a batch that an
/// earlier version left pending in `META`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_batch_in_steps_heals_on_the_embedded_backend() {
    every_crash_point(embedded, fault::wrap_in_steps, false).await;
}

/// The same matrix on S3 + DynamoDB (the emulator; fails when it is not configured). One
/// bucket and table serve every scenario, each on a ledger of its own: what a scenario checks
/// is per ledger, and a fresh bucket and table per scenario would cost more than the scenario.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_batch_heals_on_the_emulator() {
    let stores = emulator().await;
    every_crash_point(async || stores.clone(), fault::wrap, false).await;
}

/// A writer killed right after its claim leaves its batch in `META` only. A restarted process
/// does nothing at startup; the first read of the ledger (one record) rolls the batch forward,
/// and every record of it is then served and indexed.
async fn a_batch_left_pending_by_a_crash_after_its_claim(
    make: impl AsyncFn() -> Stores,
    wrap: Wrap,
) {
    let claim = calls_per_batch(&make, wrap)
        .await
        .iter()
        .position(|op| *op == "compare_and_set_head")
        .expect("a batch in steps has a claim");
    let base = make().await;
    let id = LedgerId::parse(&format!("killed-after-claim-{:08x}", fastrand::u32(..))).unwrap();
    let seed = service(&base);
    append_batch(&seed, &id, "seed").await;
    seed.shutdown().await;
    let (faulty, handle) = wrap(&base);
    let writer = service(&faulty);
    handle.plan(claim, Fault::CrashAfter);
    assert!(
        append_batch(&writer, &id, "victim")
            .await
            .iter()
            .all(Result::is_err)
    );
    drop(writer);
    let head = base.index.head(&id).await.unwrap().unwrap();
    assert!(head.pending.is_some(), "the claim is in META");
    let last = 2 * BATCH as u64;
    assert!(
        base.index
            .seq_items(&id, last, last, 1)
            .await
            .unwrap()
            .is_empty(),
        "nothing of the batch is indexed before the restart"
    );

    let registry = prometheus::Registry::new();
    let restarted = Ledger::new(
        base.clone(),
        Options::default(),
        LedgerMetrics::new(&registry).unwrap(),
    );
    let read = restarted.record(&id, last).await.unwrap();
    assert!(
        read.record.get().contains("\"victim\""),
        "{}",
        read.record.get()
    );
    let rolled = registry
        .gather()
        .into_iter()
        .find(|f| f.name() == "ledger_roll_forwards_total")
        .map(|f| f.get_metric()[0].get_counter().value());
    assert_eq!(rolled, Some(1.0), "the read rolled the batch forward");
    let items = base.index.seq_items(&id, 1, last, 100).await.unwrap();
    assert_eq!(
        items.len(),
        2 * BATCH,
        "every seq of the batch is indexed now"
    );
    let report = restarted.verify(&id, VerifyRange::default()).await.unwrap();
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!(report.verified, last);
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_left_pending_by_a_writer_killed_after_its_claim_is_rolled_forward_by_the_first_read_on_the_embedded_backend()
 {
    a_batch_left_pending_by_a_crash_after_its_claim(embedded, fault::wrap_in_steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_left_pending_by_a_writer_killed_after_its_claim_is_rolled_forward_by_the_first_read_on_the_emulator()
 {
    let stores = emulator().await;
    a_batch_left_pending_by_a_crash_after_its_claim(async || stores.clone(), fault::wrap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_claim_answer_was_lost_is_acknowledged_once_on_the_embedded_backend() {
    a_claim_whose_answer_was_lost(embedded, fault::wrap).await;
    a_claim_whose_answer_was_lost(embedded, fault::wrap_in_steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_claim_answer_was_lost_is_acknowledged_once_on_the_emulator() {
    let stores = emulator().await;
    a_claim_whose_answer_was_lost(async || stores.clone(), fault::wrap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_keyed_batch_gives_each_key_one_entry_on_the_embedded_backend() {
    every_keyed_crash_point(embedded, fault::wrap).await;
    every_keyed_crash_point(embedded, fault::wrap_in_steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_crash_point_of_a_keyed_batch_gives_each_key_one_entry_on_the_emulator() {
    let stores = emulator().await;
    every_keyed_crash_point(async || stores.clone(), fault::wrap).await;
}
