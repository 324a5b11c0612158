//! Verification of a whole ledger and of ranges of it.

use crate::helpers::spawn_app;

#[tokio::test]
async fn verify_checks_exactly_the_range_asked_for() {
    let app = spawn_app().await;
    let mut last = None;
    for n in 1..=30 {
        last = Some(app.append_ok("ranges", &format!(r#"{{"n":{n}}}"#)).await);
    }
    let last = last.unwrap();

    for (query, from, to) in [
        ("", 1, 30),
        ("from=10&to=20", 10, 20),
        ("from=1&to=5", 1, 5),
        ("from=2", 2, 30),
        ("to=15", 1, 15),
        ("from=30", 30, 30),
        ("from=17&to=17", 17, 17),
        ("from=1&to=30", 1, 30),
    ] {
        let report = app.verify_ok("ranges", query).await;
        assert!(report.ok, "{query}: {:?}", report.failures);
        assert!(report.failures.is_empty());
        assert_eq!((report.from, report.to), (from, to), "{query}");
        assert_eq!(report.verified, to - from + 1, "{query}");
        assert_eq!(report.head.seq, 30);
        assert_eq!(report.head.last_hash, last.entry_hash);
    }
}

#[tokio::test]
async fn a_ledger_of_one_record_verifies() {
    let app = spawn_app().await;
    let receipt = app.append_ok("single", r#"{"only":1}"#).await;
    let report = app.verify_ok("single", "").await;
    assert!(report.ok);
    assert_eq!((report.from, report.to, report.verified), (1, 1, 1));
    assert_eq!(report.head.last_hash, receipt.entry_hash);
}
