//! Restarts, graceful shutdown, and one process per data dir.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eleanor_ledger::app::StartError;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::append::event;
use crate::helpers::{Api, Receipt, spawn_app, spawn_app_in, try_build};

/// Every record of a ledger, as the API serves them (raw JSON).
async fn all_records(api: &Api, ledger: &str) -> Vec<Value> {
    let response = api.list(ledger, "limit=1000").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["next_after"], Value::Null);
    page["records"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart_and_appending_continues_on_the_chain() {
    let app = spawn_app().await;
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (api, next) = (app.fresh(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= 200 {
                        return;
                    }
                    api.append_ok("durable", &event(i)).await;
                    if i % 10 == 0 {
                        api.append_ok("other", &format!(r#"{{"i":{i}}}"#)).await;
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let records = all_records(&app, "durable").await;
    let other = all_records(&app, "other").await;
    let head = app.head_ok("durable").await;
    let ledgers = app.ledgers_ok("").await.ledgers;
    assert_eq!((records.len(), other.len(), head.seq), (200, 20, 200));

    let app = app.restart().await;

    assert_eq!(all_records(&app, "durable").await, records);
    assert_eq!(all_records(&app, "other").await, other);
    assert_eq!(app.head_ok("durable").await, head);
    assert_eq!(app.ledgers_ok("").await.ledgers, ledgers);
    let report = app.verify_ok("durable", "").await;
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!(report.verified, 200);

    let receipt = app.append_ok("durable", r#"{"after":"restart"}"#).await;
    assert_eq!(receipt.seq, 201);
    assert_eq!(receipt.prev_hash, head.last_hash);
    let report = app.verify_ok("durable", "").await;
    assert!(report.ok && report.verified == 201, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_answered_2xx_during_a_graceful_shutdown_are_all_there_after_restart() {
    let mut app = spawn_app().await;
    let ledger = "shutdown";
    app.append_ok(ledger, r#"{"warm":"up"}"#).await;
    // 50 clients append continuously until the server stops answering; each reports every
    // receipt as soon as it has it.
    let (tx, mut receipts) = mpsc::unbounded_channel::<(String, Receipt)>();
    let clients: Vec<_> = (0..50)
        .map(|c| {
            let (api, tx) = (app.fresh(), tx.clone());
            tokio::spawn(async move {
                for i in 0..10_000 {
                    let body = format!(r#"{{"client":{c},"i":{i}}}"#);
                    let Ok(response) = api
                        .client
                        .post(api.url(&format!("/v1/ledgers/{ledger}/records")))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                    else {
                        return; // refused or closed: the server is stopping
                    };
                    let status = response.status();
                    if !status.is_success() {
                        // Nothing but "shutting down" may refuse an append here.
                        let text = response.text().await.unwrap_or_default();
                        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
                        return;
                    }
                    let Ok(receipt) = response.json::<Receipt>().await else {
                        return;
                    };
                    let _ = tx.send((body, receipt));
                }
                panic!("client {c} was still appending after 10000 appends");
            })
        })
        .collect();
    drop(tx);
    // Shut down once appends are flowing, so that some are in flight from many clients.
    let mut answered: Vec<(String, Receipt)> = Vec::new();
    while answered.len() < 100 {
        answered.push(receipts.recv().await.expect("appends are being answered"));
    }

    app.begin_shutdown();

    // The server finishes what is in flight and exits (stop() fails if it does not).
    let data_dir = app.stop().await;
    for client in clients {
        client.await.expect("client task");
    }
    while let Some(r) = receipts.recv().await {
        answered.push(r);
    }
    let app = spawn_app_in(data_dir, &[]).await;
    let head = app.head_ok(ledger).await;
    assert!(!answered.is_empty());
    let mut by_seq = BTreeMap::new();
    for (body, receipt) in &answered {
        assert!(
            by_seq.insert(receipt.seq, receipt).is_none(),
            "seq {} answered twice",
            receipt.seq
        );
        assert!(
            receipt.seq <= head.seq,
            "seq {} is past the head",
            receipt.seq
        );
        let (stored, _) = app.get_record_ok(ledger, receipt.seq).await;
        assert_eq!(stored.entry_hash, receipt.entry_hash, "seq {}", receipt.seq);
        assert_eq!(stored.record, serde_json::from_str::<Value>(body).unwrap());
    }
    let report = app.verify_ok(ledger, "").await;
    assert!(report.ok, "{:?}", report.failures);
}

#[tokio::test]
async fn a_second_app_on_a_data_dir_in_use_fails_to_start_with_a_clear_error() {
    let app = spawn_app().await;
    app.append_ok("busy", r#"{"n":1}"#).await;

    let second = try_build(app.data_dir.path(), &[]).await;

    match second {
        Err(StartError::Config(message)) => assert!(
            message.contains("in use by another ledger process"),
            "{message}"
        ),
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("a second app started on a data dir in use"),
    }
    // The first app is unaffected.
    assert_eq!(app.append_ok("busy", r#"{"n":2}"#).await.seq, 2);

    // Once the first has stopped, the directory is free again.
    let data_dir = app.stop().await;
    let third = try_build(data_dir.path(), &[]).await;
    assert!(third.is_ok(), "{:?}", third.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_free_as_soon_as_a_stopped_app_has_returned() {
    let mut data_dir = tempfile::tempdir().unwrap();
    for round in 0..40 {
        let app = spawn_app_in(data_dir, &[]).await;
        app.append_ok("reopen", r#"{"round":"start"}"#).await;
        // Clients with requests in flight (and connections open) when the app stops.
        let clients: Vec<_> = (0..8)
            .map(|_| {
                let api = app.fresh();
                tokio::spawn(async move {
                    for i in 0..10_000 {
                        let sent = api
                            .client
                            .post(api.url("/v1/ledgers/reopen/records"))
                            .header("content-type", "application/json")
                            .body(format!(r#"{{"i":{i}}}"#))
                            .send()
                            .await;
                        if !sent.is_ok_and(|r| r.status().is_success()) {
                            return;
                        }
                    }
                })
            })
            .collect();
        app.append_ok("reopen", r#"{"round":"running"}"#).await;

        data_dir = app.stop().await;

        // run_until has returned: nothing of the stopped app may still hold the store open.
        match try_build(data_dir.path(), &[]).await {
            Ok(reopened) => drop(reopened),
            Err(e) => panic!("round {round}: the stopped app still holds its data dir: {e}"),
        }
        for client in clients {
            client.await.unwrap();
        }
    }
}
