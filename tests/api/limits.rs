//! Limits and the API contract: the in-flight cap sheds load at once with `503 server_busy`
//! and no side effect, slow requests are answered by how far they got (`408` for a body still
//! arriving, `503 timeout` before anything was queued, `503 outcome_unknown` after), page
//! sizes are capped, and
//! `/openapi.json` documents exactly the routes the router serves.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{expect_error, spawn_app, spawn_app_with, spawn_faulty_app};

/// The `Retry-After` seconds of a response, if it has one.
fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_in_flight_cap_requests_get_503_server_busy_at_once_and_change_nothing() {
    // Each append waits up to a second for its batch to fill, so two of them hold both slots.
    let app = spawn_app_with(&["--max-in-flight", "2", "--batch-linger-us", "1000000"]).await;
    let held: Vec<_> = (0..2)
        .map(|i| {
            let api = app.fresh();
            tokio::spawn(async move { api.append("busy", &format!(r#"{{"held":{i}}}"#)).await })
        })
        .collect();
    // Real time, not a paused clock: the two appends travel over real sockets and are held by
    // the server's own linger timer; this only gives them time to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Every counted route is refused at once, appends included, while the slots are held.
    for _ in 0..8 {
        let started = std::time::Instant::now();
        let response = app.append("busy", r#"{"shed":true}"#).await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "shed, not queued"
        );
        assert_eq!(retry_after(&response), Some(1));
        expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "server_busy").await;
    }
    for path in ["/v1/keys", "/v1/ledgers", "/v1/ledgers/busy/verify"] {
        let response = app.get(path).await;
        assert_eq!(retry_after(&response), Some(1), "{path}");
        expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "server_busy").await;
    }
    // Probes, scrapes and the API document are not counted.
    for path in ["/health", "/livez", "/metrics", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }

    for task in held {
        assert_eq!(task.await.unwrap().status(), StatusCode::CREATED);
    }
    // Only the two held appends were written; the slots are free again.
    assert_eq!(app.head_ok("busy").await.seq, 2);
    let report = app.verify_ok("busy", "").await;
    assert!(report.ok && report.verified == 2, "{report:?}");
    assert!(
        app.metrics()
            .await
            .lines()
            .any(|l| l.starts_with("eleanor_requests_total")
                && l.contains(r#"status="503""#)
                && l.contains(r#"outcome="error""#)),
        "shed requests are counted by route"
    );
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_before_anything_is_queued_gets_503_timeout() {
    let (app, faults) = spawn_faulty_app(&["--request-timeout-ms", "100"]).await;
    app.append_ok("slow", r#"{"n":1}"#).await;
    faults.stall("ledgers", Duration::from_millis(400));
    let response = app.ledgers("").await;
    assert_eq!(retry_after(&response), Some(1));
    let message = expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "timeout").await;
    assert!(
        message.contains("before anything was appended"),
        "{message}"
    );
    // Fast requests are unaffected.
    assert_eq!(app.get("/v1/keys").await.status(), StatusCode::OK);
    assert_eq!(app.health().await.status(), StatusCode::OK);
}

/// Issue 14, section 2: an append answered `503 timeout` was committed afterwards. Once an
/// append is queued its batch cannot be taken back, so the timeout says the outcome is unknown,
/// and the retry with the same key finds the one entry.
#[tokio::test]
async fn an_append_whose_batch_outlasts_the_timeout_is_outcome_unknown_and_its_retry_finds_it() {
    let (app, faults) = spawn_faulty_app(&["--request-timeout-ms", "100"]).await;
    faults.stall("commit_batch", Duration::from_millis(500));
    let send = || {
        app.client
            .post(app.url("/v1/ledgers/late/records"))
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", "late-1")
            .body(r#"{"late":true}"#)
            .send()
    };
    let response = send().await.expect("the request is answered");
    assert_eq!(retry_after(&response), Some(1));
    let message = expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown").await;
    assert!(
        message.contains("may still be committed") && message.contains("Idempotency-Key"),
        "{message}"
    );
    // The batch finishes after the answer: the record is committed.
    faults.stall("commit_batch", Duration::ZERO);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let head = app.head("late").await;
        if head.status() == StatusCode::OK && app.head_ok("late").await.seq == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the queued append never committed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let retry = send().await.expect("the retry is answered");
    assert_eq!(retry.status(), StatusCode::OK, "the retry is a replay");
    assert_eq!(app.head_ok("late").await.seq, 1, "one entry for the key");
}

/// A body that stops arriving is the client's fault: `408 request_timeout`, not a 5xx.
#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_request_timeout() {
    let app = spawn_app_with(&["--request-timeout-ms", "200"]).await;
    let response = app
        .raw(
            b"POST /v1/ledgers/trickle/records HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"half\":",
        )
        .await;
    response.expect_error(408, "request_timeout");
    assert_eq!(app.head("trickle").await.status(), StatusCode::NOT_FOUND);
}

#[test]
fn a_linger_not_shorter_than_the_request_timeout_is_refused_at_startup() {
    use clap::Parser;
    let args = eleanor_ledger::config::ServerArgs::try_parse_from([
        "ledger-server",
        "--request-timeout-ms",
        "100",
        "--batch-linger-us",
        "100000",
    ])
    .unwrap();
    let err = args.into_config().unwrap_err();
    assert!(
        err.0
            .starts_with("ELEANOR_LEDGER_BATCH_LINGER_US (100000 µs) must be shorter than"),
        "{err}"
    );
}

#[tokio::test]
async fn page_sizes_outside_1_to_1000_get_400_invalid_query() {
    let app = spawn_app().await;
    app.append_ok("pages", r#"{"n":1}"#).await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=18446744073709551616",
        "limit=-1",
    ] {
        for response in [app.list("pages", query).await, app.ledgers(query).await] {
            let message = expect_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
            assert!(!message.is_empty());
        }
    }
    for query in ["limit=1", "limit=1000", ""] {
        assert_eq!(app.list_ok("pages", query).await.records.len(), 1);
        assert_eq!(app.ledgers_ok(query).await.ledgers.len(), 1);
    }
}

#[test]
fn a_zero_in_flight_cap_is_refused_at_startup() {
    use clap::Parser;
    let args = eleanor_ledger::config::ServerArgs::try_parse_from([
        "ledger-server",
        "--max-in-flight",
        "0",
    ])
    .unwrap();
    let err = args.into_config().unwrap_err();
    assert!(
        err.0
            .starts_with("ELEANOR_LEDGER_MAX_IN_FLIGHT must be between 1 and"),
        "{err}"
    );
}

/// The `(METHOD, path template)` operations of an OpenAPI document.
pub fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("the document has paths") {
        for method in item.as_object().expect("a path item is an object").keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

#[tokio::test]
async fn openapi_json_documents_every_route_the_router_serves_and_no_other() {
    let app = spawn_app().await;
    app.append_ok("doc", r#"{"n":1}"#).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );

    let documented = documented_operations(&doc);
    let served: BTreeSet<(String, String)> = eleanor_ledger::http::route_list()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_owned(), path.to_owned()))
        .collect();
    assert_eq!(documented, served, "the document and the router differ");

    // And the live server answers each documented operation from a route, not the fallbacks.
    for (method, path) in &documented {
        let url = app.url(&path.replace("{ledger_id}", "doc").replace("{seq}", "1"));
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app.client.request(method.clone(), &url);
        if method == Method::POST {
            request = request.header(CONTENT_TYPE, "application/json").body("{}");
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let code = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|b| b["error"]["code"].clone());
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && code != Some("route_not_found".into()),
            "{method} {path}: {status} {text}"
        );
    }
}

#[tokio::test]
async fn beyond_the_ledger_cap_new_ledgers_get_403_ledger_limit_reached_and_existing_ones_still_take_appends()
 {
    let app = spawn_app_with(&["--max-ledgers", "2"]).await;
    app.append_ok("cap-a", r#"{"n":1}"#).await;
    app.append_ok("cap-b", r#"{"n":1}"#).await;
    let message = expect_error(
        app.append("cap-c", r#"{"n":1}"#).await,
        StatusCode::FORBIDDEN,
        "ledger_limit_reached",
    )
    .await;
    assert!(message.contains("ELEANOR_LEDGER_MAX_LEDGERS"), "{message}");
    let batch = app
        .client
        .post(app.url("/v1/ledgers/cap-d/records:batch"))
        .json(&serde_json::json!([{"record": {"n": 1}}]))
        .send()
        .await
        .unwrap();
    expect_error(batch, StatusCode::FORBIDDEN, "ledger_limit_reached").await;
    app.append_ok("cap-a", r#"{"n":2}"#).await;
    app.append_ok("cap-b", r#"{"n":2}"#).await;
    expect_error(
        app.head("cap-c").await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;
    let listed: Vec<String> = app
        .ledgers_ok("")
        .await
        .ledgers
        .into_iter()
        .map(|l| l.ledger_id)
        .collect();
    assert_eq!(
        listed,
        ["cap-a", "cap-b"],
        "the refused ledgers were not created"
    );

    // After a restart the count comes from the store (startup recovery lists the ledgers).
    let app = app.restart().await;
    expect_error(
        app.append("cap-c", r#"{"n":1}"#).await,
        StatusCode::FORBIDDEN,
        "ledger_limit_reached",
    )
    .await;
    assert_eq!(app.append_ok("cap-a", r#"{"n":3}"#).await.seq, 3);
}

#[tokio::test]
async fn the_ledger_cap_counts_ledgers_made_before_the_first_creation_of_a_run() {
    // Three ledgers made under a higher cap, then a restart with a cap of three: full.
    let app = spawn_app_with(&["--max-ledgers", "5"]).await;
    for ledger in ["x1", "x2", "x3"] {
        app.append_ok(ledger, "{}").await;
    }
    let dir = app.stop().await;
    let app = crate::helpers::spawn_app_in(dir, &["--max-ledgers", "3"]).await;
    expect_error(
        app.append("x4", "{}").await,
        StatusCode::FORBIDDEN,
        "ledger_limit_reached",
    )
    .await;
    app.append_ok("x3", "{}").await;
}
