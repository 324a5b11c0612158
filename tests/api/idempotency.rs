//! Exactly-once appends with `Idempotency-Key`, lookups by key, and batch appends.

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::helpers::{Api, expect_error, expect_json, spawn_app, spawn_app_with};

impl Api {
    /// `POST .../records` with `Idempotency-Key: key` (the header value as given).
    async fn append_keyed(&self, ledger: &str, key: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/ledgers/{ledger}/records")))
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(body.to_owned())
            .send()
            .await
            .expect("append is answered")
    }

    /// `POST .../records:batch` with `body` as `content_type`.
    async fn append_batch(
        &self,
        ledger: &str,
        content_type: &str,
        body: String,
    ) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/ledgers/{ledger}/records:batch")))
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .expect("batch append is answered")
    }

    async fn by_key(&self, ledger: &str, key: &str) -> reqwest::Response {
        let mut url = reqwest::Url::parse(&self.url(&format!("/v1/ledgers/{ledger}/records")))
            .expect("a valid URL");
        url.query_pairs_mut().append_pair("idempotency_key", key);
        self.client
            .get(url)
            .send()
            .await
            .expect("lookup is answered")
    }

    async fn count(&self, ledger: &str) -> u64 {
        self.head_ok(ledger).await.seq
    }
}

/// The status, the `Idempotent-Replayed` header and the JSON body of an answer.
async fn answer(response: reqwest::Response) -> (StatusCode, Option<String>, Value) {
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, replayed, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_gets_the_original_receipt_and_appends_nothing() {
    let app = spawn_app().await;
    let (status, replayed, first) =
        answer(app.append_keyed("idem", "order-1", r#"{"a":1}"#).await).await;
    assert_eq!((status, replayed), (StatusCode::CREATED, None));
    // The same record, spelled with other whitespace (compared compacted).
    let (status, replayed, again) =
        answer(app.append_keyed("idem", "order-1", "{ \"a\" : 1 }\n").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replayed.as_deref(), Some("true"));
    assert_eq!(
        again, first,
        "the original receipt: same seq, hash, timestamp"
    );
    assert_eq!(app.count("idem").await, 1);

    // Another record under the same key: refused, nothing appended.
    let message = expect_error(
        app.append_keyed("idem", "order-1", r#"{"a":2}"#).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    assert!(message.contains("seq 1"), "{message}");
    assert_eq!(app.count("idem").await, 1);

    // Keys are per ledger, and a record without a key is always new.
    let other = app
        .append_keyed("idem-other", "order-1", r#"{"a":2}"#)
        .await;
    assert_eq!(other.status(), StatusCode::CREATED);
    app.append_ok("idem", r#"{"a":1}"#).await;
    assert_eq!(app.count("idem").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_found_by_its_key_and_an_unused_key_is_not_found() {
    let app = spawn_app().await;
    let key = r#"weird "key" \ with spaces & = ?"#;
    let receipt: Value = expect_json(
        app.append_keyed("lookup", key, r#"{"who":"alice"}"#).await,
        StatusCode::CREATED,
    )
    .await;
    let found: Value = expect_json(app.by_key("lookup", key).await, StatusCode::OK).await;
    assert_eq!(found["seq"], receipt["seq"]);
    assert_eq!(found["entry_hash"], receipt["entry_hash"]);
    assert_eq!(found["idempotency_key"], key);
    assert_eq!(found["record"], json!({"who": "alice"}));
    // The record read by seq shows its key too.
    let by_seq: Value = expect_json(app.get_record("lookup", 1).await, StatusCode::OK).await;
    assert_eq!(by_seq, found);

    expect_error(
        app.by_key("lookup", "never-used").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.by_key("no-such-ledger", "k").await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.by_key("lookup", &"x".repeat(256)).await,
        StatusCode::BAD_REQUEST,
        "invalid_idempotency_key",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_by_key_honours_after_and_limit_as_a_page_does() {
    let app = spawn_app().await;
    app.append_ok("lookup-after", "{}").await;
    expect_json::<Value>(
        app.append_keyed("lookup-after", "k", r#"{"n":2}"#).await,
        StatusCode::CREATED,
    )
    .await;
    let url = |query: &str| format!("/v1/ledgers/lookup-after/records?idempotency_key=k&{query}");
    // The record (seq 2) is past `after=1`, and within any valid limit.
    let found: Value = expect_json(app.get(&url("after=1&limit=1")).await, StatusCode::OK).await;
    assert_eq!(found["seq"], 2);
    assert_eq!(found["record"], json!({"n": 2}));
    // Not past `after=2`: not found, as a page after 2 would not hold it.
    expect_error(
        app.get(&url("after=2")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    expect_error(
        app.get(&url("limit=0")).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    expect_error(
        app.get(&url("after=-1")).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    expect_error(
        app.get(&url("from=1")).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_outside_1_to_255_printable_ascii_are_refused_and_nothing_is_appended() {
    let app = spawn_app().await;
    for bad in [
        String::new(),
        "x".repeat(256),
        "tab\there".into(),
        "\"unclosed \\q\"".into(),
    ] {
        expect_error(
            app.append_keyed("badkey", &bad, "{}").await,
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
        )
        .await;
    }
    let two = app
        .client
        .post(app.url("/v1/ledgers/badkey/records"))
        .header(CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(two, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    let raw = app
        .raw(b"POST /v1/ledgers/badkey/records HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nIdempotency-Key: caf\xc3\xa9\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .await;
    raw.expect_error(400, "invalid_idempotency_key");
    expect_error(
        app.head("badkey").await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;

    // The draft's Structured Field string form is the same key as its content.
    let (status, _, first) = answer(app.append_keyed("sf", "abc \"1\"", "{}").await).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, replayed, again) =
        answer(app.append_keyed("sf", r#""abc \"1\"""#, "{}").await).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (StatusCode::OK, Some("true"))
    );
    assert_eq!(again, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_clients_racing_with_one_key_make_one_entry_and_all_get_its_receipt() {
    let app = spawn_app().await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let api = app.fresh();
            tokio::spawn(async move {
                answer(api.append_keyed("race", "once", r#"{"n":1}"#).await).await
            })
        })
        .collect();
    let mut created = 0;
    let mut receipts = Vec::new();
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("{other}: {body}"),
        }
        receipts.push(body);
    }
    assert_eq!(created, 1);
    assert!(receipts.iter().all(|r| *r == receipts[0]), "{receipts:?}");
    assert_eq!(app.count("race").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_receipt_is_signed_exactly_as_the_original_and_survives_a_restart() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("signing.key");
    eleanor_ledger::keyfile::write_new_key(&key).unwrap();
    let key = key.display().to_string();
    let app = spawn_app_with(&["--signing-key-file", &key]).await;
    let (_, _, first) = answer(app.append_keyed("signed", "k", r#"{"x":1}"#).await).await;
    assert!(first["receipt"]["signature"].is_string(), "{first}");
    let app = app.restart().await;
    let (status, replayed, again) =
        answer(app.append_keyed("signed", "k", r#"{"x":1}"#).await).await;
    assert_eq!(
        (status, replayed.as_deref()),
        (StatusCode::OK, Some("true"))
    );
    assert_eq!(again, first, "same seq, hash, timestamp and signature");
}

/// Items `{"record": {"i": i}}`, keyed `k-i` when `keyed`.
fn items(range: std::ops::Range<usize>, keyed: bool) -> Vec<Value> {
    range
        .map(|i| match keyed {
            true => json!({"record": {"i": i}, "idempotency_key": format!("k-{i}")}),
            false => json!({"record": {"i": i}}),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_committed_at_consecutive_seqs_in_request_order_as_json_or_ndjson() {
    let app = spawn_app().await;
    app.append_ok("batch", "{}").await;
    let body = Value::Array(items(0..100, false)).to_string();
    let (status, _, answer1) =
        answer(app.append_batch("batch", "application/json", body).await).await;
    assert_eq!(status, StatusCode::CREATED, "{answer1}");
    let receipts = answer1["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 100);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(r["seq"], 2 + i as u64);
        assert_eq!(r["replayed"], false);
        assert_eq!(r["ledger_id"], "batch");
    }
    for pair in receipts.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["entry_hash"]);
    }
    let (record, _) = app.get_record_ok("batch", 51).await;
    assert_eq!(record.record, json!({"i": 49}));

    let ndjson: String = items(0..3, true)
        .iter()
        .map(|v| format!("{v}\r\n"))
        .chain(["\n".to_owned()])
        .collect();
    let (status, _, answer2) = answer(
        app.append_batch("batch", "application/x-ndjson", ndjson.clone())
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer2}");
    assert_eq!(answer2["receipts"][2]["seq"], 104);
    // The same batch again: every record replayed, nothing new.
    let (status, _, answer3) = answer(
        app.append_batch("batch", "application/x-ndjson", ndjson)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        answer3["receipts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["replayed"] == true)
    );
    assert_eq!(answer3["receipts"][0]["seq"], answer2["receipts"][0]["seq"]);
    // Some replayed, some new: the new ones at the next seqs, in order.
    let mixed = Value::Array(items(1..5, true)).to_string();
    let (status, _, answer4) =
        answer(app.append_batch("batch", "application/json", mixed).await).await;
    assert_eq!(status, StatusCode::CREATED);
    let seqs: Vec<(u64, bool)> = answer4["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["seq"].as_u64().unwrap(), r["replayed"].as_bool().unwrap()))
        .collect();
    assert_eq!(seqs, [(103, true), (104, true), (105, false), (106, false)]);
    assert_eq!(app.count("batch").await, 106);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_any_bad_record_is_refused_whole_naming_its_index() {
    let app = spawn_app_with(&[
        "--batch-request-max-records",
        "10",
        "--batch-request-max-bytes",
        "4096",
    ])
    .await;
    app.append_ok("refuse", "{}").await;
    let json_batch = |items: Vec<Value>| Value::Array(items).to_string();
    let mut bad = items(0..5, false);
    bad[3] = json!({"record": [1, 2]});
    let cases: Vec<(String, StatusCode, &str, Option<u64>)> = vec![
        (
            json_batch(bad),
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            Some(3),
        ),
        (
            json_batch(vec![
                json!({"record": {}}),
                json!({"record": {}, "extra": 1}),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            Some(1),
        ),
        (
            json_batch(vec![json!({"record": {}, "idempotency_key": ""})]),
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            Some(0),
        ),
        // A key is a string or absent: a null is a client bug, not "no key".
        (
            json_batch(vec![
                json!({"record": {}}),
                json!({"record": {}, "idempotency_key": null}),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            Some(1),
        ),
        (
            json_batch(vec![
                json!({"record": {"a": 1}, "idempotency_key": "same"}),
                json!({"record": {"a": 2}, "idempotency_key": "same"}),
            ]),
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            Some(1),
        ),
        (
            "{\"record\":{}}".into(),
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            None,
        ),
        ("[]".into(), StatusCode::BAD_REQUEST, "invalid_batch", None),
        (
            json_batch(items(0..11, false)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            None,
        ),
        (
            json_batch(vec![json!({"record": {"pad": "x".repeat(5000)}})]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            None,
        ),
    ];
    for (body, status, code, index) in cases {
        let response = app
            .append_batch("refuse", "application/json", body.clone())
            .await;
        let (got, _, error) = answer(response).await;
        assert_eq!(got, status, "{body}: {error}");
        assert_eq!(error["error"]["code"], code, "{body}: {error}");
        assert_eq!(error["error"]["index"].as_u64(), index, "{body}: {error}");
    }
    // A key committed with another record refuses the whole batch it is in.
    app.append_keyed("refuse", "taken", r#"{"a":1}"#).await;
    let reuse = json_batch(vec![
        json!({"record": {"b": 1}}),
        json!({"record": {"a": 2}, "idempotency_key": "taken"}),
    ]);
    let (status, _, error) =
        answer(app.append_batch("refuse", "application/json", reuse).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"]["code"], "idempotency_key_reused");
    assert_eq!(error["error"]["index"], 1);
    let other_type = app.append_batch("refuse", "text/plain", "[]".into()).await;
    expect_error(
        other_type,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    assert_eq!(
        app.count("refuse").await,
        2,
        "nothing of any refused batch was appended"
    );
}
