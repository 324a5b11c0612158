//! Reading: pages of records, the list of ledgers, records at the format's limits.

use std::collections::BTreeMap;

use reqwest::StatusCode;

use crate::helpers::{Api, Receipt, expect_error, spawn_app};

async fn append_n(api: &Api, ledger: &str, n: u64) -> Vec<Receipt> {
    let mut receipts = Vec::new();
    for i in 1..=n {
        receipts.push(api.append_ok(ledger, &format!(r#"{{"n":{i}}}"#)).await);
    }
    receipts
}

/// Follows `next_after` from the start; returns the seqs of every page.
async fn walk(api: &Api, ledger: &str, limit: u64) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let page = api
            .list_ok(ledger, &format!("after={after}&limit={limit}"))
            .await;
        assert!(page.records.len() as u64 <= limit);
        for record in &page.records {
            let n = record.record["n"].as_u64().unwrap();
            assert_eq!(n, record.seq, "each record is the one appended at its seq");
        }
        pages.push(page.records.iter().map(|r| r.seq).collect());
        match page.next_after {
            Some(next) => {
                assert_eq!(Some(next), page.records.last().map(|r| r.seq));
                after = next;
            }
            None => return pages,
        }
        assert!(pages.len() < 100, "paging does not end");
    }
}

#[tokio::test]
async fn paging_with_next_after_walks_the_whole_ledger_and_ends_with_null() {
    let app = spawn_app().await;
    let receipts = append_n(&app, "paged", 25).await;

    let pages = walk(&app, "paged", 7).await;
    assert_eq!(
        pages,
        vec![
            (1..=7).collect::<Vec<u64>>(),
            (8..=14).collect(),
            (15..=21).collect(),
            (22..=25).collect()
        ]
    );
    // A last page that is exactly full ends the walk too, without an empty page after it.
    assert_eq!(walk(&app, "paged", 5).await.len(), 5);

    let all = app.list_ok("paged", "").await;
    assert_eq!(all.records.len(), 25, "limit defaults to 100");
    assert_eq!(all.next_after, None);
    for (record, receipt) in all.records.iter().zip(&receipts) {
        assert_eq!(record.seq, receipt.seq);
        assert_eq!(record.entry_hash, receipt.entry_hash);
        assert_eq!(record.prev_hash, receipt.prev_hash);
        assert_eq!(record.timestamp, receipt.timestamp);
    }
    let middle = app.list_ok("paged", "after=10&limit=3").await;
    assert_eq!(
        middle.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [11, 12, 13]
    );
    assert_eq!(middle.next_after, Some(13));
    for after in [25, 26, 1_000_000] {
        let past = app.list_ok("paged", &format!("after={after}")).await;
        assert!(past.records.is_empty());
        assert_eq!(past.next_after, None);
    }
    assert_eq!(app.list_ok("paged", "limit=1000").await.records.len(), 25);
}

#[tokio::test]
async fn the_ledger_list_names_every_ledger_with_its_head() {
    let app = spawn_app().await;
    assert!(app.ledgers_ok("").await.ledgers.is_empty());
    for (ledger, n) in [("gamma", 2), ("alpha", 3), ("beta", 1), ("Delta-9_x", 4)] {
        append_n(&app, ledger, n).await;
    }

    let list = app.ledgers_ok("").await;

    assert_eq!(list.next_after, None);
    let listed: BTreeMap<String, (u64, String)> = list
        .ledgers
        .iter()
        .map(|l| (l.ledger_id.clone(), (l.seq, l.last_hash.clone())))
        .collect();
    assert_eq!(listed.len(), 4, "each ledger once: {:?}", list.ledgers);
    for (ledger, n) in [("gamma", 2), ("alpha", 3), ("beta", 1), ("Delta-9_x", 4)] {
        let head = app.head_ok(ledger).await;
        assert_eq!(head.seq, n);
        assert_eq!(listed[ledger], (head.seq, head.last_hash), "{ledger}");
    }

    // Pages of the list cover every ledger exactly once.
    let first = app.ledgers_ok("limit=2").await;
    assert_eq!(first.ledgers.len(), 2);
    let after = first.next_after.clone().expect("more ledgers follow");
    let rest = app.ledgers_ok(&format!("after={after}&limit=2")).await;
    let mut ids: Vec<String> = first
        .ledgers
        .iter()
        .chain(&rest.ledgers)
        .map(|l| l.ledger_id.clone())
        .collect();
    if let Some(after) = rest.next_after {
        let last = app.ledgers_ok(&format!("after={after}&limit=2")).await;
        assert!(last.ledgers.is_empty() && last.next_after.is_none());
    }
    ids.sort();
    assert_eq!(ids, listed.keys().cloned().collect::<Vec<_>>());
}

#[tokio::test]
async fn records_at_the_formats_limits_are_accepted_and_read_back() {
    let app = spawn_app().await;
    // docs/FORMAT.md: objects and arrays may nest 127 deep, the record counting as 1.
    let deepest = format!(r#"{{"a":{}1{}}}"#, "[".repeat(126), "]".repeat(126));
    let cases = [
        deepest.as_str(),
        r#"{"tiny":1e-400,"max":1.7976931348623157e308,"neg":-1.5E-7}"#,
        r#"{"big":123456789012345678901234567890,"zero":-0.0}"#,
        r#"{"pair":"\ud83d\ude00","raw":"😀","slash":"\/","ctl":"\u0001"}"#,
        r#"{}"#,
    ];
    for (i, body) in cases.iter().enumerate() {
        let response = app.append("limits", body).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "case {i} {body:.60}: {text}");
        let seq = i as u64 + 1;
        let response = app.get_record("limits", seq).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "case {i} {body:.60} reads back: {text}"
        );
        assert!(
            text.contains(&format!(r#""record":{body}"#)),
            "case {i}: {text:.200}"
        );
    }
    let report = app.verify_ok("limits", "").await;
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!(report.verified, cases.len() as u64);
}

#[tokio::test]
async fn a_record_one_level_too_deep_is_refused() {
    let app = spawn_app().await;
    let too_deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(127), "]".repeat(127));
    expect_error(
        app.append("deep", &too_deep).await,
        StatusCode::BAD_REQUEST,
        "invalid_record",
    )
    .await;
    expect_error(
        app.head("deep").await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;
}
