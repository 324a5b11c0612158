//! Appending: seqs, chaining, exact round trips, auto-create.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{GENESIS, Receipt, expect_error, spawn_app, spawn_app_with};

/// Event `i`, compact, with keys out of alphabetical order, number spellings a float parser
/// would change, escapes, non-ASCII text and nesting.
pub fn event(i: usize) -> String {
    format!(
        r#"{{"z_first":"keeps its place","i":{i},"amount":1.50,"big":12345678901234567890123,"exp":6.02E23,"neg":-0,"text":"caf\u00e9 – 日本 \"q\" \/","nested":{{"list":[1,2.0,{{"deep":[null,true,false]}}],"empty":{{}}}}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_appends_from_sixteen_concurrent_clients_form_one_gapless_chain() {
    let app = spawn_app().await;
    let ledger = "concurrent";
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (api, next) = (app.fresh(), next.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= 200 {
                        return mine;
                    }
                    let body = event(i);
                    mine.push((body.clone(), api.append_ok(ledger, &body).await));
                }
            })
        })
        .collect();
    let mut appended: Vec<(String, Receipt)> = Vec::new();
    for client in clients {
        appended.extend(client.await.unwrap());
    }
    appended.sort_by_key(|(_, r)| r.seq);

    let seqs: Vec<u64> = appended.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "no gap, no duplicate"
    );
    let mut prev = GENESIS.to_owned();
    for (_, receipt) in &appended {
        assert_eq!(
            receipt.prev_hash, prev,
            "seq {} links to the seq before",
            receipt.seq
        );
        assert!(
            receipt
                .object_key
                .ends_with(&format!("/entries/{:018}.json", receipt.seq)),
            "{receipt:?}"
        );
        prev = receipt.entry_hash.clone();
    }

    for (body, receipt) in &appended {
        let (stored, text) = app.get_record_ok(ledger, receipt.seq).await;
        assert_eq!(stored.seq, receipt.seq);
        assert_eq!(stored.ledger_id, ledger);
        assert_eq!(stored.entry_hash, receipt.entry_hash);
        assert_eq!(stored.prev_hash, receipt.prev_hash);
        assert_eq!(stored.timestamp, receipt.timestamp);
        assert_eq!(stored.object_key, receipt.object_key);
        let sent: Value = serde_json::from_str(body).unwrap();
        assert_eq!(stored.record, sent, "seq {}", receipt.seq);
        // The record comes back as the very text that was sent: number spellings, escapes and
        // key order included.
        assert!(
            text.contains(&format!(r#""record":{body}"#)),
            "seq {}: {text}",
            receipt.seq
        );
        assert!(text.contains(r#""amount":1.50"#) && text.contains("12345678901234567890123"));
    }

    let report = app.verify_ok(ledger, "").await;
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!((report.from, report.to, report.verified), (1, 200, 200));
    assert!(report.failures.is_empty());
    let head = app.head_ok(ledger).await;
    assert_eq!(head.seq, 200);
    assert_eq!(head.last_hash, appended[199].1.entry_hash);
    assert_eq!(report.head.seq, 200);
    assert_eq!(report.head.last_hash, head.last_hash);
}

#[tokio::test]
async fn the_first_append_creates_the_ledger_at_seq_1_chained_on_genesis() {
    let app = spawn_app().await;
    expect_error(
        app.head("fresh").await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;

    let receipt = app.append_ok("fresh", r#"{"action":"login"}"#).await;

    assert_eq!(receipt.seq, 1);
    assert_eq!(receipt.prev_hash, GENESIS);
    assert_eq!(receipt.object_key, "fresh/entries/000000000000000001.json");
    assert!(
        receipt.timestamp.len() == 27 && receipt.timestamp.ends_with('Z'),
        "UTC, microseconds: {}",
        receipt.timestamp
    );
    let head = app.head_ok("fresh").await;
    assert_eq!((head.seq, head.last_hash), (1, receipt.entry_hash));
}

#[tokio::test]
async fn ledgers_are_independent_chains() {
    let app = spawn_app().await;
    let a1 = app.append_ok("ledger-a", r#"{"n":1}"#).await;
    let b1 = app.append_ok("ledger_b", r#"{"n":1}"#).await;
    let a2 = app.append_ok("ledger-a", r#"{"n":2}"#).await;

    assert_eq!((a1.seq, b1.seq, a2.seq), (1, 1, 2));
    assert_eq!(b1.prev_hash, GENESIS);
    assert_eq!(a2.prev_hash, a1.entry_hash);
    assert_ne!(a1.entry_hash, b1.entry_hash, "the ledger id is hashed");
}

#[tokio::test]
async fn json_content_types_with_parameters_or_any_case_are_accepted() {
    let app = spawn_app().await;
    for (i, content_type) in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/cloudevents+json",
    ]
    .into_iter()
    .enumerate()
    {
        let response = app
            .append_as("types", Some(content_type), br#"{"ok":true}"#.to_vec())
            .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{content_type}");
        assert_eq!(app.head_ok("types").await.seq, i as u64 + 1);
    }
}

#[tokio::test]
async fn insignificant_whitespace_is_removed_and_nothing_else_changes() {
    let app = spawn_app().await;
    let sent = "\r\n {\t\"b\" : [ 1.50 , \"a  b\\t\" ],\n \"a\" : { } } \n";

    let receipt = app.append_ok("spaces", sent).await;

    let (stored, text) = app.get_record_ok("spaces", receipt.seq).await;
    assert!(
        text.contains(r#""record":{"b":[1.50,"a  b\t"],"a":{}}"#),
        "{text}"
    );
    assert_eq!(stored.record, serde_json::from_str::<Value>(sent).unwrap());
}

#[tokio::test]
async fn with_auto_create_off_an_append_to_an_unknown_ledger_is_404_and_creates_nothing() {
    let app = spawn_app_with(&["--auto-create", "false"]).await;

    expect_error(
        app.append("unknown", r#"{"action":"login"}"#).await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;
    // Asking twice must not find a ledger the first attempt half-created.
    expect_error(
        app.append("unknown", r#"{"action":"login"}"#).await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;

    expect_error(
        app.head("unknown").await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;
    expect_error(
        app.get_record("unknown", 1).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert!(app.ledgers_ok("").await.ledgers.is_empty());
    let app = app.restart().await;
    expect_error(
        app.head("unknown").await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;
    assert!(app.ledgers_ok("").await.ledgers.is_empty());
}
