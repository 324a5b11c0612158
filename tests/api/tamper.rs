//! One byte of a stored entry edited on disk: verification names the seq, reads refuse to
//! serve it.

use reqwest::StatusCode;

use crate::helpers::{TestApp, expect_error, spawn_app, spawn_app_in};
use crate::observability::sample;

const LEDGER: &str = "tampered";
/// The seq whose stored bytes get edited.
const TARGET: u64 = 5;
/// A record text that appears nowhere else in the store.
const MARKER: &str = r#"{"marker":"tamper-target-5c1f9e","n":5}"#;

/// Appends seqs 1..=10, each in its own request (so its own batch), seq 5 holding
/// [`MARKER`]. Later batches replace seq 5's batch in META, so its bytes then live only in
/// its entry object.
async fn ledger_with_a_marked_entry() -> TestApp {
    let app = spawn_app().await;
    for n in 1..=10u64 {
        let body = if n == TARGET {
            MARKER.to_owned()
        } else {
            format!(r#"{{"n":{n},"note":"filler"}}"#)
        };
        let receipt = app.append_ok(LEDGER, &body).await;
        assert_eq!(receipt.seq, n);
    }
    app
}

/// Stops the app, flips the case of one letter of [`MARKER`] (still valid JSON, so only the
/// hash can tell) wherever the redb file holds it, and starts a new app on the same data dir.
async fn edit_the_marked_entry_on_disk(app: TestApp) -> TestApp {
    let data_dir = app.stop().await;
    let path = data_dir.path().join(eleanor_ledger::store::local::DB_FILE);
    let mut bytes = std::fs::read(&path).expect("read ledger.redb");
    let needle = MARKER.as_bytes();
    let at = MARKER.find("target").expect("marker has 'target'");
    let found: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert!(
        !found.is_empty(),
        "the record text is stored verbatim in {}",
        path.display()
    );
    // Copies in pages redb has freed are harmless to edit; the live one must be edited.
    for offset in found {
        bytes[offset + at] ^= 0x20;
    }
    std::fs::write(&path, &bytes).expect("write ledger.redb");
    spawn_app_in(data_dir, &[]).await
}

#[tokio::test]
async fn a_byte_edited_on_disk_fails_verification_at_that_seq() {
    let app = ledger_with_a_marked_entry().await;
    let before = app.verify_ok(LEDGER, "").await;
    assert!(before.ok, "{:?}", before.failures);

    let app = edit_the_marked_entry_on_disk(app).await;

    let report = app.verify_ok(LEDGER, "").await;
    assert!(!report.ok);
    let failures = report.failure_kinds();
    assert!(
        failures.contains(&(TARGET, "hash_mismatch")),
        "names seq {TARGET}: {failures:?}"
    );
    assert!(
        failures
            .iter()
            .all(|(seq, _)| *seq == TARGET || *seq == TARGET + 1),
        "only seq {TARGET} (and the link after it) fail: {failures:?}"
    );
    assert_eq!(report.head.seq, 10);
    assert!(report.failures.iter().all(|f| !f.detail.is_empty()));
}

/// Verification metrics carry no ledger label (a million ledgers would be a million series):
/// a failure is counted, and the failing ledger is counted until it verifies intact again.
#[tokio::test]
async fn a_failed_verification_is_counted_in_metrics_without_the_ledger_s_id() {
    let app = ledger_with_a_marked_entry().await;
    app.append_ok("intact-ledger-3x", r#"{"n":1}"#).await;
    let app = edit_the_marked_entry_on_disk(app).await;
    assert!(!app.verify_ok(LEDGER, "").await.ok);
    assert!(app.verify_ok("intact-ledger-3x", "").await.ok);
    assert!(!app.verify_ok(LEDGER, "").await.ok, "still failing");

    let metrics = app.metrics().await;
    let value = |name: &str, labels: &[&str]| {
        sample(&metrics, name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{metrics}"))
    };
    assert_eq!(value("ledger_verify_failing_ledgers", &[]), 1.0);
    let failed = r#"outcome="failed""#;
    assert_eq!(value("ledger_verifications_total", &[failed]), 2.0);
    assert_eq!(
        value("ledger_verifications_total", &[r#"outcome="ok""#]),
        1.0
    );
    assert!(value("ledger_verify_last_timestamp_seconds", &[]) > 1.7e9);
    for id in [LEDGER, "intact-ledger-3x"] {
        assert!(
            !metrics.contains(id),
            "{id} leaked into the metrics:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_record_edited_on_disk_is_refused_with_500_integrity_error_not_served() {
    let app = ledger_with_a_marked_entry().await;
    let app = edit_the_marked_entry_on_disk(app).await;

    expect_error(
        app.get_record(LEDGER, TARGET).await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "integrity_error",
    )
    .await;
    // A page holding it is refused too, rather than served with the edited record.
    expect_error(
        app.list(LEDGER, "after=3&limit=5").await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "integrity_error",
    )
    .await;
    // Its neighbours are untouched and still served.
    for seq in [TARGET - 1, TARGET + 1] {
        let (record, _) = app.get_record_ok(LEDGER, seq).await;
        assert_eq!(record.record["n"], seq);
    }
}

#[tokio::test]
async fn a_verify_range_starting_after_seq_1_anchors_on_the_stored_entry_before_it() {
    let app = ledger_with_a_marked_entry().await;
    let app = edit_the_marked_entry_on_disk(app).await;

    // The range starts right after the edited entry: its first link is checked against the
    // stored (edited) entry before the range.
    let after = app.verify_ok(LEDGER, &format!("from={}", TARGET + 1)).await;
    assert!(!after.ok);
    assert_eq!(after.failure_kinds(), [(TARGET + 1, "chain_break")]);

    let just_it = app
        .verify_ok(LEDGER, &format!("from={TARGET}&to={TARGET}"))
        .await;
    assert!(!just_it.ok);
    assert!(just_it.failure_kinds().contains(&(TARGET, "hash_mismatch")));

    for query in ["from=1&to=4", "from=7", "from=7&to=9"] {
        let clean = app.verify_ok(LEDGER, query).await;
        assert!(clean.ok, "{query}: {:?}", clean.failures);
    }
}

#[tokio::test]
async fn an_object_planted_past_the_head_stops_appends_with_500_integrity_error_and_commits_nothing()
 {
    const PLANTED: &str = "planted";
    let app = spawn_app().await;
    for n in 1..=3u64 {
        app.append_ok(PLANTED, &format!(r#"{{"n":{n}}}"#)).await;
    }
    let data_dir = app.stop().await;
    {
        let path = data_dir.path().join(eleanor_ledger::store::local::DB_FILE);
        let db = redb::Database::open(path).expect("open ledger.redb");
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<&str, &[u8]>::new("objects"))
            .unwrap()
            .insert(
                format!("{PLANTED}/entries/{:018}.json", 4).as_str(),
                b"not the entry".as_slice(),
            )
            .unwrap();
        txn.commit().unwrap();
    }
    let app = spawn_app_in(data_dir, &[]).await;

    let body = expect_error(
        app.append(PLANTED, r#"{"n":4}"#).await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "integrity_error",
    )
    .await;
    assert!(!body.contains("not the entry"), "{body}");
    assert_eq!(app.head_ok(PLANTED).await.seq, 3, "nothing was committed");
    let (record, _) = app.get_record_ok(PLANTED, 3).await;
    assert_eq!(record.record["n"], 3);
}
