//! `ledger-verify` against the embedded store, and the same tampering seen by the service's
//! verification (`Ledger::verify`, behind `GET .../verify`): both must name the seq and the
//! kind. Tampering edits the redb file directly while no server holds it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/report.rs"]
mod report_support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use eleanor_ledger::chain::checkpoint::{CheckpointBody, Signer};
use eleanor_ledger::chain::entry::{
    EntryHeader, IdempotencyKey, LedgerId, Record, Timestamp, decode, encode,
};
use eleanor_ledger::chain::hash::Hash;
use eleanor_ledger::chain::keys::checkpoint_key;
use eleanor_ledger::ledger::{Append, Ledger, LedgerMetrics, Options, Receipt, VerifyRange};
use eleanor_ledger::store::fault;
use eleanor_ledger::store::local::{DB_FILE, LocalStore};
use eleanor_ledger::store::{BackendMetrics, NewObject};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use tempfile::TempDir;

use report_support::failure_kinds as kinds;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SEQ: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("seq");

const LEDGER: &str = "audited";
const N: u64 = 10;

fn signer() -> Signer {
    Signer::from_seed(&[7; 32])
}

/// The service over the embedded store in `dir`; `in_steps`: committing each batch in the
/// protocol's separate steps (claim with a pending batch, then objects and items), as an
/// earlier version did, instead of in one transaction.
fn ledger_over(dir: &Path, in_steps: bool) -> Ledger {
    let mut stores = LocalStore::open(dir, BackendMetrics::unregistered())
        .unwrap()
        .into_stores();
    if in_steps {
        stores = fault::wrap_in_steps(&stores).0;
    }
    let options = Options {
        signer: Some(Arc::new(signer())),
        ..Options::default()
    };
    Ledger::new(
        stores,
        options,
        LedgerMetrics::new(&prometheus::Registry::new()).unwrap(),
    )
}

fn id() -> LedgerId {
    LedgerId::parse(LEDGER).unwrap()
}

/// A ledger of `N` entries (one batch each) with a signed checkpoint at seq 6; returns the
/// directory (no process holds the store afterwards) and the receipts.
async fn fixture() -> (TempDir, Vec<Receipt>) {
    fixture_with(false).await
}

async fn fixture_with(in_steps: bool) -> (TempDir, Vec<Receipt>) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger_over(dir.path(), in_steps);
    let mut receipts = Vec::new();
    for n in 1..=N {
        let record = Record::parse(format!(r#"{{"n":{n},"who":"alice"}}"#).as_bytes()).unwrap();
        receipts.push(ledger.append(&id(), record).await.unwrap());
        if n == 6 {
            ledger.checkpoint(&id()).await.unwrap();
        }
    }
    ledger.shutdown().await;
    drop(ledger);
    (dir, receipts)
}

struct Run {
    code: i32,
    report: Value,
    stderr: String,
}

fn cli(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-verify"))
        .args(args)
        .env_remove("ELEANOR_LEDGER_BACKEND")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    Run {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(&stdout).unwrap_or(Value::String(stdout)),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn public_key() -> String {
    signer().public_key().to_hex()
}

fn verify_dir(dir: &Path, extra: &[&str]) -> Run {
    let key = public_key();
    let mut args = vec![
        "--data-dir",
        dir.to_str().unwrap(),
        "--ledger",
        LEDGER,
        "--json",
        "--public-key",
        &key,
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

/// What the service's own verification says about the same directory.
async fn endpoint_kinds(dir: &Path) -> Vec<(u64, String)> {
    let ledger = ledger_over(dir, false);
    let report = ledger.verify(&id(), VerifyRange::default()).await.unwrap();
    let value = serde_json::to_value(&report).unwrap();
    assert_eq!(value["ok"], report.failures.is_empty());
    drop(ledger);
    kinds(&value)
}

fn edit(dir: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = Database::open(dir.join(DB_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

fn entry_key(seq: u64) -> String {
    format!("{LEDGER}/entries/{seq:018}.json")
}

fn read_object(dir: &Path, key: &str) -> Vec<u8> {
    let db = Database::open(dir.join(DB_FILE)).unwrap();
    let txn = db.begin_read().unwrap();
    let table = txn.open_table(OBJECTS).unwrap();
    table.get(key).unwrap().unwrap().value().to_vec()
}

fn write_object(dir: &Path, key: &str, body: &[u8]) {
    edit(dir, |txn| {
        txn.open_table(OBJECTS).unwrap().insert(key, body).unwrap();
    });
}

/// Runs both verifiers and checks each names `(seq, kind)`.
async fn both_name(dir: &Path, seq: u64, kind: &str) {
    let run = verify_dir(dir, &[]);
    assert_eq!(
        run.code, 1,
        "exit 1 on tampering: {} {}",
        run.report, run.stderr
    );
    assert_eq!(run.report["ok"], false);
    let cli_kinds = kinds(&run.report);
    assert!(
        cli_kinds.contains(&(seq, kind.to_owned())),
        "the CLI names seq {seq} {kind}: {cli_kinds:?}"
    );
    let endpoint = endpoint_kinds(dir).await;
    assert!(
        endpoint.contains(&(seq, kind.to_owned())),
        "the endpoint names seq {seq} {kind}: {endpoint:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_ledger_verifies_with_exit_0_and_its_checkpoint_checked() {
    let (dir, _) = fixture().await;
    let run = verify_dir(dir.path(), &[]);
    assert_eq!(run.code, 0, "{} {}", run.report, run.stderr);
    assert_eq!(run.report["ok"], true);
    assert_eq!(run.report["verified"], N);
    assert_eq!(run.report["checkpoints_checked"], 1);
    assert_eq!(run.report["signatures_checked"], true);
    assert!(endpoint_kinds(dir.path()).await.is_empty());
    // The human summary names the rate.
    let human = cli(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--ledger",
        LEDGER,
    ]);
    assert_eq!(human.code, 0);
    let text = human.report.as_str().unwrap().to_owned();
    assert!(
        text.starts_with("OK: ledger audited") && text.contains("entries/s"),
        "{text}"
    );
    assert!(text.contains("signatures NOT checked"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_entry_bytes_are_a_hash_mismatch_at_that_seq() {
    let (dir, _) = fixture().await;
    let mut body = read_object(dir.path(), &entry_key(4));
    let at = body.windows(5).position(|w| w == b"alice").unwrap();
    body[at] = b'A';
    write_object(dir.path(), &entry_key(4), &body);
    both_name(dir.path(), 4, "hash_mismatch").await;
    both_name(dir.path(), 5, "chain_break").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_entry_is_a_missing_entry() {
    let (dir, _) = fixture().await;
    edit(dir.path(), |txn| {
        txn.open_table(OBJECTS)
            .unwrap()
            .remove(entry_key(3).as_str())
            .unwrap();
    });
    both_name(dir.path(), 3, "missing_entry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_seq_item_is_named() {
    let (dir, _) = fixture().await;
    edit(dir.path(), |txn| {
        let mut table = txn.open_table(SEQ).unwrap();
        let mut item: Value =
            serde_json::from_slice(table.get((LEDGER, 7)).unwrap().unwrap().value()).unwrap();
        item["entry_hash"] = Value::String("ab".repeat(32));
        item["timestamp"] = Value::String("2001-01-01T00:00:00.000000Z".into());
        table
            .insert((LEDGER, 7), serde_json::to_vec(&item).unwrap().as_slice())
            .unwrap();
    });
    both_name(dir.path(), 7, "hash_mismatch").await;
    both_name(dir.path(), 7, "index_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_meta_is_a_head_mismatch() {
    let (dir, _) = fixture().await;
    edit(dir.path(), |txn| {
        let mut table = txn.open_table(META).unwrap();
        let mut meta = table.get(LEDGER).unwrap().unwrap().value().to_vec();
        // seq_counter (u64 BE), then last_hash: claim one entry fewer.
        meta[..8].copy_from_slice(&(N - 1).to_be_bytes());
        table.insert(LEDGER, meta.as_slice()).unwrap();
    });
    both_name(dir.path(), N - 1, "head_mismatch").await;
    edit(dir.path(), |txn| {
        let mut table = txn.open_table(META).unwrap();
        let mut meta = table.get(LEDGER).unwrap().unwrap().value().to_vec();
        meta[..8].copy_from_slice(&N.to_be_bytes());
        meta[8] ^= 0xff; // last_hash
        table.insert(LEDGER, meta.as_slice()).unwrap();
    });
    both_name(dir.path(), N, "head_mismatch").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapped_entries_are_named_at_both_seqs() {
    let (dir, _) = fixture().await;
    let (a, b) = (
        read_object(dir.path(), &entry_key(2)),
        read_object(dir.path(), &entry_key(3)),
    );
    write_object(dir.path(), &entry_key(2), &b);
    write_object(dir.path(), &entry_key(3), &a);
    both_name(dir.path(), 2, "malformed_entry").await;
    both_name(dir.path(), 3, "malformed_entry").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_checkpoint_is_a_bad_signature_or_a_checkpoint_mismatch() {
    let (dir, _) = fixture().await;
    // Signed by another key, with the right hash: only the signature gives it away.
    let stored = read_object(dir.path(), &checkpoint_key(&id(), 6));
    let mut cp: Value = serde_json::from_slice(&stored).unwrap();
    let entry8 = Hash::of_entry(&read_object(dir.path(), &entry_key(8)));
    let forged = Signer::from_seed(&[9; 32]).sign_checkpoint(CheckpointBody {
        ledger_id: id(),
        seq: 8,
        last_hash: entry8,
        timestamp: Timestamp::parse("2030-01-01T00:00:00.000000Z").unwrap(),
    });
    write_object(dir.path(), &checkpoint_key(&id(), 8), &forged.to_json());
    both_name(dir.path(), 8, "bad_signature").await;
    // The real checkpoint at 6, its hash altered: the signature and the hash both fail.
    cp["last_hash"] = Value::String("cd".repeat(32));
    write_object(
        dir.path(),
        &checkpoint_key(&id(), 6),
        &serde_json::to_vec(&cp).unwrap(),
    );
    both_name(dir.path(), 6, "checkpoint_mismatch").await;
    both_name(dir.path(), 6, "bad_signature").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifying_from_a_trusted_checkpoint_walks_only_the_entries_after_it() {
    let (dir, _) = fixture().await;
    let cp_file = dir.path().join("cp.json");
    std::fs::write(&cp_file, read_object(dir.path(), &checkpoint_key(&id(), 6))).unwrap();
    let run = verify_dir(dir.path(), &["--checkpoint", cp_file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{} {}", run.report, run.stderr);
    assert_eq!(run.report["from"], 7);
    assert_eq!(run.report["verified"], N - 6);
    // An entry before the checkpoint edited: the chain no longer passes through its hash.
    let mut body = read_object(dir.path(), &entry_key(6));
    let at = body.windows(5).position(|w| w == b"alice").unwrap();
    body[at] = b'A';
    write_object(dir.path(), &entry_key(6), &body);
    let run = verify_dir(dir.path(), &["--checkpoint", cp_file.to_str().unwrap()]);
    assert_eq!(run.code, 1);
    assert!(kinds(&run.report).contains(&(6, "checkpoint_mismatch".into())));
    // A checkpoint file signed by an untrusted key is a usage error, not trusted.
    let forged = Signer::from_seed(&[9; 32]).sign_checkpoint(CheckpointBody {
        ledger_id: id(),
        seq: 6,
        last_hash: Hash::of_entry(&body),
        timestamp: Timestamp::parse("2030-01-01T00:00:00.000000Z").unwrap(),
    });
    std::fs::write(&cp_file, forged.to_json()).unwrap();
    let run = verify_dir(dir.path(), &["--checkpoint", cp_file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_verifies_and_an_altered_or_forged_one_is_rejected() {
    let (dir, receipts) = fixture().await;
    let file = dir.path().join("receipt.json");
    let receipt = serde_json::to_value(&receipts[4]).unwrap();
    assert!(receipt["receipt"]["signature"].is_string(), "{receipt}");
    std::fs::write(&file, receipt.to_string()).unwrap();
    let key = public_key();
    let data_dir = dir.path().to_str().unwrap().to_owned();
    let check = |file: &Path| {
        cli(&[
            "--data-dir",
            &data_dir,
            "--json",
            "--public-key",
            &key,
            "receipt",
            file.to_str().unwrap(),
        ])
    };
    let run = check(&file);
    assert_eq!(run.code, 0, "{} {}", run.report, run.stderr);

    let mut altered = receipt.clone();
    altered["entry_hash"] = Value::String("ab".repeat(32));
    std::fs::write(&file, altered.to_string()).unwrap();
    let run = check(&file);
    assert_eq!(run.code, 1);
    let named = kinds(&run.report);
    assert!(named.contains(&(5, "bad_signature".into())), "{named:?}");
    assert!(named.contains(&(5, "hash_mismatch".into())), "{named:?}");

    // Signed by someone else over the true fields: the signature is what fails.
    let mut forged = receipt;
    let other = Signer::from_seed(&[9; 32]).sign_receipt(&receipts[4].body());
    forged["receipt"] = serde_json::to_value(other).unwrap();
    std::fs::write(&file, forged.to_string()).unwrap();
    let run = check(&file);
    assert_eq!(run.code, 1);
    assert_eq!(kinds(&run.report), [(5, "bad_signature".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_holding_the_store_is_exit_3_with_the_reason() {
    let (dir, _) = fixture().await;
    let held = LocalStore::open(dir.path(), BackendMetrics::unregistered()).unwrap();
    let run = verify_dir(dir.path(), &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("stop the server"), "{}", run.stderr);
    drop(held);
    let missing = cli(&["--data-dir", "/nonexistent/eleanor", "--ledger", LEDGER]);
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    let unknown = verify_dir(dir.path(), &["--ledger", "nope"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    let bad_flag = cli(&["--frobnicate"]);
    assert_eq!(bad_flag.code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_never_writes_to_the_store() {
    let (dir, _) = fixture().await;
    let before = std::fs::read(dir.path().join(DB_FILE)).unwrap();
    assert_eq!(verify_dir(dir.path(), &[]).code, 0);
    assert_eq!(std::fs::read(dir.path().join(DB_FILE)).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_past_the_head_is_named() {
    let (dir, _) = fixture().await;
    let forged = signer().sign_checkpoint(CheckpointBody {
        ledger_id: id(),
        seq: N + 5,
        last_hash: Hash([1; 32]),
        timestamp: Timestamp::parse("2030-01-01T00:00:00.000000Z").unwrap(),
    });
    let ledger = ledger_over(dir.path(), false);
    ledger
        .stores()
        .objects
        .put_new(&[NewObject {
            key: checkpoint_key(&id(), N + 5),
            body: forged.to_json().into(),
        }])
        .await
        .unwrap();
    drop(ledger);
    both_name(dir.path(), N + 5, "checkpoint_mismatch").await;
}

/// Sets `META` to `seq_counter = seq`, `last_hash` = the stored entry `seq`'s hash and no
/// pending batch, and removes the `SEQ#` items after `seq`: an index consistently turned back.
fn turn_the_index_back(dir: &Path, seq: u64) {
    let hash = Hash::of_entry(&read_object(dir, &entry_key(seq)));
    edit(dir, |txn| {
        let mut meta = seq.to_be_bytes().to_vec();
        meta.extend_from_slice(&hash.0);
        meta.extend_from_slice(&[0; 12]); // no pending batch
        txn.open_table(META)
            .unwrap()
            .insert(LEDGER, meta.as_slice())
            .unwrap();
        let mut items = txn.open_table(SEQ).unwrap();
        for s in seq + 1..=N {
            items.remove((LEDGER, s)).unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_turned_back_hides_nothing_and_objects_only_needs_no_index() {
    let (dir, _) = fixture().await;
    let run = verify_dir(dir.path(), &["--objects-only"]);
    assert_eq!(run.code, 0, "{} {}", run.report, run.stderr);
    assert_eq!(run.report["verified"], N);
    assert_eq!(run.report["to"], N);
    assert_eq!(run.report["checkpoints_checked"], 1);
    assert_eq!(run.report["source"], "storage:local (objects only)");
    assert!(
        run.report["head"].is_null(),
        "no index, no head: {}",
        run.report
    );

    turn_the_index_back(dir.path(), 5);
    // With the index: the entries it no longer counts are still walked, and named.
    let run = verify_dir(dir.path(), &[]);
    assert_eq!(run.code, 1, "{} {}", run.report, run.stderr);
    assert_eq!(run.report["verified"], N, "{}", run.report);
    assert_eq!(run.report["to"], N);
    let found = kinds(&run.report);
    assert!(found.contains(&(5, "head_mismatch".into())), "{found:?}");
    for seq in 6..=N {
        assert!(found.contains(&(seq, "index_mismatch".into())), "{found:?}");
    }
    let endpoint = endpoint_kinds(dir.path()).await;
    assert!(
        endpoint.contains(&(5, "head_mismatch".into())),
        "{endpoint:?}"
    );
    // From the objects alone the ledger is whole: the index was all that changed.
    let run = verify_dir(dir.path(), &["--objects-only"]);
    assert_eq!(run.code, 0, "{} {}", run.report, run.stderr);
    assert_eq!(run.report["verified"], N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_only_names_hidden_entries_and_truncation() {
    let (dir, _) = fixture().await;
    edit(dir.path(), |txn| {
        let mut objects = txn.open_table(OBJECTS).unwrap();
        objects.remove(entry_key(3).as_str()).unwrap();
        // The last four entries gone: the checkpoint at 6 vouches for an entry no longer there.
        for seq in 7..=N {
            objects.remove(entry_key(seq).as_str()).unwrap();
        }
        objects.remove(entry_key(6).as_str()).unwrap();
    });
    let run = verify_dir(dir.path(), &["--objects-only"]);
    assert_eq!(run.code, 1, "{} {}", run.report, run.stderr);
    assert_eq!(run.report["to"], 5, "the last entry object is the end");
    let found = kinds(&run.report);
    assert!(found.contains(&(3, "missing_entry".into())), "{found:?}");
    assert!(
        found.contains(&(6, "checkpoint_mismatch".into())),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_batch_not_yet_written_out_is_a_note_not_a_failure() {
    let (dir, _) = fixture_with(true).await;
    // The last batch (seq N) as a crash right after its claim leaves it: in META's pending
    // batch only, with no object and no SEQ# item.
    edit(dir.path(), |txn| {
        txn.open_table(OBJECTS)
            .unwrap()
            .remove(entry_key(N).as_str())
            .unwrap();
        txn.open_table(SEQ).unwrap().remove((LEDGER, N)).unwrap();
    });
    let run = verify_dir(dir.path(), &[]);
    assert_eq!(run.code, 0, "{} {}", run.report, run.stderr);
    assert_eq!(run.report["verified"], N);
    let notes = run.report["notes"].to_string();
    assert!(
        notes.contains(&format!("seqs {N}..={N}")) && notes.contains("pending batch"),
        "{notes}"
    );
    // Edited in the batch: the stored head no longer matches what META committed.
    edit(dir.path(), |txn| {
        let mut table = txn.open_table(META).unwrap();
        let mut meta = table.get(LEDGER).unwrap().unwrap().value().to_vec();
        let at = meta.windows(5).rposition(|w| w == b"alice").unwrap();
        meta[at] = b'A';
        table.insert(LEDGER, meta.as_slice()).unwrap();
    });
    let run = verify_dir(dir.path(), &[]);
    assert_eq!(run.code, 1, "{} {}", run.report, run.stderr);
    let found = kinds(&run.report);
    assert!(found.contains(&(N, "head_mismatch".into())), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_entry_object_far_past_the_end_is_named_without_walking_to_it() {
    let (dir, _) = fixture().await;
    const FAR: u64 = 1_000_000_000_000;
    let body = read_object(dir.path(), &entry_key(N));
    write_object(dir.path(), &entry_key(FAR), &body);
    for extra in [&[][..], &["--objects-only"][..]] {
        let run = verify_dir(dir.path(), extra);
        assert_eq!(run.code, 1, "{extra:?}: {} {}", run.report, run.stderr);
        assert_eq!(run.report["to"], FAR, "{extra:?}");
        let found = kinds(&run.report);
        // One failure for the whole run of missing seqs, then the stray object itself.
        assert!(
            found.contains(&(N + 1, "missing_entry".into())),
            "{found:?}"
        );
        assert!(
            found.contains(&(FAR, "malformed_entry".into())),
            "{found:?}"
        );
        assert!(found.len() < 10, "{extra:?}: {found:?}");
    }
    let endpoint = endpoint_kinds(dir.path()).await;
    assert!(
        endpoint.contains(&(N, "head_mismatch".into())),
        "{endpoint:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_stored_in_two_entries_is_a_duplicate_idempotency_key_at_the_later_seq() {
    let (dir, _) = fixture().await;
    let ledger = ledger_over(dir.path(), false);
    for (seq, key) in [(N + 1, "order-1"), (N + 2, "order-2")] {
        let record = Record::parse(format!(r#"{{"n":{seq}}}"#).as_bytes()).unwrap();
        let key = IdempotencyKey::parse(key).unwrap();
        let receipt = ledger
            .append(&id(), Append::new(record, Some(key)))
            .await
            .unwrap();
        assert_eq!(receipt.seq, seq);
    }
    ledger.shutdown().await;
    drop(ledger);
    // The last entry re-written with the key of the one before (as a writer that skipped the
    // key check would have stored it): still linked, so only the key gives it away.
    let last = read_object(dir.path(), &entry_key(N + 2));
    let entry = decode(&last).unwrap();
    let header = EntryHeader {
        idempotency_key: Some(IdempotencyKey::parse("order-1").unwrap()),
        ..entry.header
    };
    let planted = encode(
        &header,
        &Record::parse(entry.record.get().as_bytes()).unwrap(),
    );
    write_object(dir.path(), &entry_key(N + 2), &planted);

    // From the objects alone it is the one failure, and the detail names both seqs.
    let run = verify_dir(dir.path(), &["--objects-only"]);
    assert_eq!(run.code, 1, "{} {}", run.report, run.stderr);
    assert_eq!(
        kinds(&run.report),
        [(N + 2, "duplicate_idempotency_key".to_owned())]
    );
    let detail = format!(
        r#"idempotency key "order-1" is also the key of seq {}"#,
        N + 1
    );
    assert_eq!(run.report["failures"][0]["detail"], detail.as_str());
    let human = cli(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--ledger",
        LEDGER,
        "--objects-only",
    ]);
    assert_eq!(human.code, 1);
    let text = human.report.as_str().unwrap().to_owned();
    assert!(
        text.contains(&format!(
            "seq {}: duplicate_idempotency_key: {detail}",
            N + 2
        )),
        "{text}"
    );
    // With the index (which recorded the bytes first written) and through the service.
    both_name(dir.path(), N + 2, "duplicate_idempotency_key").await;
}

// ---- Bundles (exports) and the tool's own errors ---------------------------------------------

/// The fixture's ledger exported as the service writes it (its end line unsigned), from the
/// service's own export and line types.
async fn bundle_of(dir: &Path, range: VerifyRange) -> String {
    use eleanor_ledger::ledger::{ExportEndLine, ExportLine};
    use futures::StreamExt;
    let ledger = ledger_over(dir, false);
    let export = ledger.export(&id(), range).await.unwrap();
    let mut out = Vec::new();
    let entries: Vec<_> = export.entries.collect().await;
    for entry in entries {
        out.extend(ExportLine::Entry((&entry.unwrap()).into()).to_ndjson());
    }
    out.extend(ExportLine::End(ExportEndLine { end: export.end }).to_ndjson());
    ledger.shutdown().await;
    drop(ledger);
    String::from_utf8(out).unwrap()
}

fn write_bundle(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn verify_bundle(bundle: &str, extra: &[&str]) -> Run {
    let mut args = vec!["--bundle", bundle, "--json"];
    args.extend_from_slice(extra);
    cli(&args)
}

/// An error is one sentence on one line of stderr, prefixed with the tool's name.
fn one_sentence(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(!stderr.contains('\u{1b}'), "no colour codes: {stderr:?}");
    lines[0]
}

#[tokio::test]
async fn an_empty_bundle_fails_with_exit_1_unless_allow_empty() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write_bundle(dir.path(), "empty.jsonl", "");
    let run = verify_bundle(&empty, &["--ledger", LEDGER]);
    assert_eq!(run.code, 1, "{:?} {}", run.report, run.stderr);
    assert!(
        kinds(&run.report).contains(&(1, "missing_entry".into())),
        "{}",
        run.report
    );
    let run = verify_bundle(
        &empty,
        &[
            "--ledger",
            LEDGER,
            "--allow-empty",
            "--allow-unattested-end",
        ],
    );
    assert_eq!(run.code, 0, "{:?} {}", run.report, run.stderr);
    // Without a ledger named anywhere, an empty file is still a failure, not a usage error.
    let run = verify_bundle(&empty, &[]);
    assert_eq!(run.code, 1, "{:?} {}", run.report, run.stderr);

    // An empty ledger's export (only its end line) is an empty bundle too.
    let (fixture, _) = fixture().await;
    let bundle = bundle_of(fixture.path(), VerifyRange::default()).await;
    let end = bundle
        .lines()
        .last()
        .unwrap()
        .replace(&format!(r#""from":1,"to":{N},"#), r#""from":1,"to":0,"#);
    let end: Value = serde_json::from_str(&end).unwrap();
    let mut end: eleanor_ledger::chain::checkpoint::ExportEnd =
        serde_json::from_value(end["end"].clone()).unwrap();
    (end.head_seq, end.last_hash, end.head_hash) = (0, Hash::GENESIS, Hash::GENESIS);
    let only_end = format!("{}\n", serde_json::json!({ "end": end }));
    let only_end = write_bundle(dir.path(), "only-end.jsonl", &only_end);
    let run = verify_bundle(&only_end, &[]);
    assert_eq!(run.code, 1, "{:?}", run.report);
    assert_eq!(kinds(&run.report), [(1, "missing_entry".to_owned())]);
    let run = verify_bundle(&only_end, &["--allow-empty"]);
    assert_eq!(run.code, 0, "{:?} {}", run.report, run.stderr);
    assert_eq!(run.report["head"]["seq"], 0);
}

#[tokio::test]
async fn a_bundle_whose_last_entry_is_short_of_the_head_its_end_line_states_fails() {
    let (dir, _) = fixture().await;
    let bundle = bundle_of(dir.path(), VerifyRange::default()).await;
    let whole = write_bundle(dir.path(), "whole.jsonl", &bundle);
    let run = verify_bundle(&whole, &[]);
    assert_eq!(run.code, 0, "{:?} {}", run.report, run.stderr);
    assert_eq!(run.report["end_attested"], true);
    assert_eq!(run.report["head"]["seq"], N);

    let lines: Vec<&str> = bundle.lines().collect();
    let cut: String = lines[..lines.len() - 3]
        .iter()
        .chain(lines.last())
        .map(|l| format!("{l}\n"))
        .collect();
    let cut = write_bundle(dir.path(), "cut.jsonl", &cut);
    let run = verify_bundle(&cut, &[]);
    assert_eq!(run.code, 1, "{:?}", run.report);
    assert_eq!(kinds(&run.report), [(N - 1, "missing_entry".to_owned())]);
    let detail = run.report["failures"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("cut short"), "{detail}");

    // Its end line gone too: it cannot show it was not cut, so it fails unless the auditor
    // accepts an unattested end (as for an export made before end lines existed).
    let no_end: String = lines[..lines.len() - 3]
        .iter()
        .map(|l| format!("{l}\n"))
        .collect();
    let no_end = write_bundle(dir.path(), "no-end.jsonl", &no_end);
    let run = verify_bundle(&no_end, &[]);
    assert_eq!(run.code, 1, "{:?}", run.report);
    assert_eq!(kinds(&run.report), [(N - 1, "end_mismatch".to_owned())]);
    let run = verify_bundle(&no_end, &["--allow-unattested-end"]);
    assert_eq!(run.code, 0, "{:?}", run.report);
    assert_eq!(run.report["end_attested"], false);
}

#[tokio::test]
async fn a_ledger_other_than_the_bundles_is_a_usage_error_in_one_sentence() {
    let (dir, _) = fixture().await;
    let bundle = bundle_of(dir.path(), VerifyRange::default()).await;
    let bundle = write_bundle(dir.path(), "b.jsonl", &bundle);
    let run = cli(&["--bundle", &bundle, "--ledger", "someone-else"]);
    assert_eq!(run.code, 2, "{:?}", run.report);
    let sentence = one_sentence(&run.stderr);
    assert!(
        sentence.contains("--ledger someone-else does not match")
            && sentence.contains(&format!("export of ledger {LEDGER}")),
        "{sentence}"
    );
}

#[tokio::test]
async fn a_saved_api_error_body_given_as_a_bundle_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let body = serde_json::json!({"error": {"code": "ledger_not_found", "message": "No ledger named x; append to create it."}});
    for (name, text) in [
        ("compact.json", format!("{body}\n")),
        ("pretty.json", format!("{body:#}\n")),
    ] {
        let file = write_bundle(dir.path(), name, &text);
        let run = cli(&["--bundle", &file, "--ledger", "x"]);
        assert_eq!(run.code, 2, "{name}: {:?}", run.report);
        let sentence = one_sentence(&run.stderr);
        assert!(
            sentence.contains("is an error answer of the API, not an export")
                && sentence.contains("ledger_not_found"),
            "{name}: {sentence}"
        );
    }
}

#[tokio::test]
async fn with_json_errors_are_json_on_stdout_too() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jsonl").display().to_string();
    for (args, code) in [
        (vec!["--bundle", missing.as_str(), "--json"], "usage_error"),
        (
            vec!["--bundle", missing.as_str(), "--json", "--from", "x"],
            "usage_error",
        ),
        (
            vec!["--json", "--data-dir", missing.as_str()],
            "usage_error",
        ),
    ] {
        let run = cli(&args);
        assert_eq!(run.code, 2, "{args:?}: {:?} {}", run.report, run.stderr);
        assert_eq!(run.report["ok"], false, "{args:?}: {:?}", run.report);
        assert_eq!(run.report["exit_code"], 2, "{args:?}");
        assert_eq!(
            run.report["error"]["code"], code,
            "{args:?}: {:?}",
            run.report
        );
        let message = run.report["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty() && !message.contains('\n'), "{message}");
    }
}

#[test]
fn an_unreachable_store_is_one_sentence_and_the_sdk_dump_goes_to_the_debug_log_without_colour() {
    // A loopback port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = |rust_log: &str| {
        Command::new(env!("CARGO_BIN_EXE_ledger-verify"))
            .args(["--ledger", LEDGER, "--json"])
            .env("ELEANOR_LEDGER_BACKEND", "aws")
            .env("ELEANOR_LEDGER_S3_BUCKET", "bucket")
            .env("ELEANOR_LEDGER_DDB_TABLE", "table")
            .env("ELEANOR_LEDGER_DDB_REGION", "us-east-1")
            .env(
                "ELEANOR_LEDGER_AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{port}"),
            )
            .env("ELEANOR_LEDGER_REQUEST_TIMEOUT_MS", "2000")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", rust_log)
            .output()
            .unwrap()
    };
    let out = run("off");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let sentence = one_sentence(&stderr);
    assert!(
        sentence.starts_with("ledger-verify: ")
            && !sentence.contains('{')
            && !sentence.contains("Some("),
        "{sentence}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["error"]["code"], "storage_unreachable", "{report}");

    // The full dump is in the debug log, and stderr (a pipe here) has no colour codes.
    let out = run("eleanor_ledger=debug");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("storage call failed") && stderr.contains("DispatchFailure"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log that is no terminal: {stderr:?}"
    );
}

#[test]
fn ledger_init_on_a_fresh_data_dir_says_what_it_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let init = || {
        let out = Command::new(env!("CARGO_BIN_EXE_ledger-init"))
            .args(["--data-dir", data.to_str().unwrap()])
            .env_remove("ELEANOR_LEDGER_BACKEND")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = init();
    assert!(
        first.contains(&format!(
            "embedded store at {}: created the directory",
            data.display()
        )) && first.contains("the store file ledger.redb")
            && first.contains("done: changes made"),
        "{first}"
    );
    let again = init();
    assert!(
        again.contains("already present") && again.contains("done: nothing to change"),
        "{again}"
    );
}
