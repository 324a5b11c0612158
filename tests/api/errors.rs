//! Every bad input gets its 4xx and stable error code, in the API's error shape, and leaves
//! nothing behind. Nothing here may get a 5xx.

use reqwest::{Method, StatusCode};

use crate::helpers::{Head, LedgerList, TestApp, expect_error, spawn_app_with};

/// An app with one ledger, `errs`, holding one record; and its state to compare against.
async fn seeded_app(args: &[&str]) -> (TestApp, Head, LedgerList) {
    let app = spawn_app_with(args).await;
    app.append_ok("errs", r#"{"seed":true}"#).await;
    let head = app.head_ok("errs").await;
    let list = app.ledgers_ok("").await;
    (app, head, list)
}

/// The bad requests changed nothing: same head, same ledgers, the chain still verifies.
async fn assert_nothing_changed(app: &TestApp, head: &Head, list: &LedgerList) {
    assert_eq!(&app.head_ok("errs").await, head);
    assert_eq!(app.ledgers_ok("").await.ledgers, list.ledgers);
    let report = app.verify_ok("errs", "").await;
    assert!(report.ok && report.verified == head.seq, "{report:?}");
    expect_error(
        app.head("never").await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;
}

#[tokio::test]
async fn appends_without_a_json_content_type_get_415() {
    let (app, head, list) = seeded_app(&[]).await;
    let body = br#"{"action":"login"}"#.to_vec();
    for ledger in ["errs", "never"] {
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonx"),
            Some("json"),
            Some("text/json"),
            Some(""),
        ] {
            let response = app.append_as(ledger, content_type, body.clone()).await;
            expect_error(
                response,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .await;
        }
    }
    assert_nothing_changed(&app, &head, &list).await;
}

fn padded(len: usize) -> String {
    let overhead = r#"{"pad":""}"#.len();
    format!(r#"{{"pad":"{}"}}"#, "x".repeat(len - overhead))
}

/// A chunked `POST` (no `Content-Length`) of `body` in chunks of at most 1000 bytes.
fn chunked_append(ledger: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v1/ledgers/{ledger}/records HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

#[tokio::test]
async fn bodies_over_the_default_limit_get_413_with_or_without_a_content_length() {
    let (app, head, list) = seeded_app(&[]).await;
    let limit = 262_144;
    for ledger in ["errs", "never"] {
        expect_error(
            app.append(ledger, &padded(limit + 1)).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "record_too_large",
        )
        .await;
        // Too large is reported before "not JSON".
        let junk = vec![b'!'; limit + 1];
        expect_error(
            app.append_as(ledger, Some("application/json"), junk).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "record_too_large",
        )
        .await;
        app.raw(&chunked_append(ledger, padded(limit + 1).as_bytes()))
            .await
            .expect_error(413, "record_too_large");
    }
    assert_nothing_changed(&app, &head, &list).await;
}

#[tokio::test]
async fn a_small_configured_limit_is_exact_with_or_without_a_content_length() {
    let (app, head, list) = seeded_app(&["--max-record-bytes", "64"]).await;

    expect_error(
        app.append("errs", &padded(65)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "record_too_large",
    )
    .await;
    app.raw(&chunked_append("errs", padded(65).as_bytes()))
        .await
        .expect_error(413, "record_too_large");
    assert_nothing_changed(&app, &head, &list).await;

    // Exactly at the limit is fine, both ways.
    app.append_ok("errs", &padded(64)).await;
    let response = app
        .raw(&chunked_append("errs", padded(64).as_bytes()))
        .await;
    assert_eq!(response.status, 201, "{}", response.body);
    assert_eq!(app.head_ok("errs").await.seq, head.seq + 2);
}

#[tokio::test]
async fn bodies_that_are_not_exactly_one_json_object_get_400_invalid_record() {
    let (app, head, list) = seeded_app(&[]).await;
    let nested_dup = r#"{"o":{"k":1,"k":2}}"#;
    let cases: Vec<Vec<u8>> = [
        "",
        "   ",
        "not json",
        "{",
        r#"{"a":1"#,
        "[]",
        r#"[{"a":1}]"#,
        r#""a string""#,
        "42",
        "null",
        "true",
        "{} {}",
        r#"{"a":1} trailing"#,
        r#"{"a":1}}"#,
        r#"{"a":1},"#,
        r#"{"a":1,"a":2}"#,
        r#"{"a":1,"\u0061":2}"#,
        nested_dup,
        r#"{"a":NaN}"#,
        r#"{"a":Infinity}"#,
        r#"{"a":1e400}"#,
        r#"{"a":"\ud800"}"#,
        "{\"a\":\"raw\u{1}control\"}",
        r#"{'a':1}"#,
        r#"{"a":01}"#,
        "\u{feff}{}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        vec![b'{', b'"', b'a', b'"', b':', b'"', 0xff, b'"', b'}'],
        format!(r#"{{"n":{}}}"#, "9".repeat(310)).into_bytes(),
    ])
    .collect();
    for body in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(60)
            .collect::<String>();
        for ledger in ["errs", "never"] {
            let response = app
                .append_as(ledger, Some("application/json"), body.clone())
                .await;
            let status = response.status();
            let text = response.text().await.unwrap();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{shown:?}: {text}");
            let value: serde_json::Value = serde_json::from_str(&text).unwrap();
            crate::helpers::assert_error_shape(&value, "invalid_record");
        }
    }
    assert_nothing_changed(&app, &head, &list).await;
}

#[tokio::test]
async fn invalid_ledger_ids_get_400_invalid_ledger_id_on_every_route() {
    let (app, head, list) = seeded_app(&[]).await;
    let too_long = "a".repeat(65);
    let ids = [
        "",
        "a.b",
        too_long.as_str(),
        "..%2Fx",
        "a%2Fb",
        "%C3%A9t%C3%A9",
        "caf%C3%A9",
        "%FF",
        "a%20b",
        "a%00b",
        "a+b",
        "%F0%9F%98%80",
    ];
    // 64 characters is still fine.
    expect_error(
        app.head(&"b".repeat(64)).await,
        StatusCode::NOT_FOUND,
        "ledger_not_found",
    )
    .await;
    for id in ids {
        let response = app.append(id, r#"{"action":"login"}"#).await;
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_ledger_id").await;
        for path in [
            format!("/v1/ledgers/{id}/records/1"),
            format!("/v1/ledgers/{id}/records"),
            format!("/v1/ledgers/{id}/head"),
            format!("/v1/ledgers/{id}/verify"),
            format!("/v1/ledgers/{id}/export"),
        ] {
            expect_error(
                app.get(&path).await,
                StatusCode::BAD_REQUEST,
                "invalid_ledger_id",
            )
            .await;
        }
    }
    assert_nothing_changed(&app, &head, &list).await;
}

#[tokio::test]
async fn seqs_that_are_not_positive_integers_get_400_invalid_seq() {
    let (app, head, list) = seeded_app(&[]).await;
    for seq in [
        "0",
        "00",
        "-1",
        "abc",
        "1.5",
        "1e3",
        "+1",
        "%201",
        "1%20",
        "0x1",
        "99999999999999999999",
        "18446744073709551616",
        "%EF%BC%91",
    ] {
        for ledger in ["errs", "never"] {
            expect_error(
                app.get_record(ledger, seq).await,
                StatusCode::BAD_REQUEST,
                "invalid_seq",
            )
            .await;
        }
    }
    assert_nothing_changed(&app, &head, &list).await;
}

#[tokio::test]
async fn unknown_records_and_ledgers_get_404_with_their_own_codes() {
    let (app, head, list) = seeded_app(&[]).await;
    for seq in ["2", "1000", "18446744073709551615", "999999999999999999"] {
        expect_error(
            app.get_record("errs", seq).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    expect_error(
        app.get_record("never", 1).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for response in [
        app.head("never").await,
        app.list("never", "").await,
        app.verify("never", "").await,
        app.export("never", "").await,
    ] {
        expect_error(response, StatusCode::NOT_FOUND, "ledger_not_found").await;
    }
    assert_nothing_changed(&app, &head, &list).await;
}

#[tokio::test]
async fn bad_query_parameters_get_400_invalid_query_and_bad_ranges_invalid_range() {
    let (app, _, _) = seeded_app(&[]).await;
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=",
        "after=-1",
        "after=x",
        "after=1.5",
        "limt=5",
        "after=0&offset=3",
    ] {
        expect_error(
            app.list("errs", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    for query in ["limit=0", "limit=1001", "limit=x", "page=2"] {
        expect_error(
            app.ledgers(query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    for query in ["from=x", "to=-1", "form=1", "from=1&too=1", "from=1.0"] {
        expect_error(
            app.verify("errs", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
        expect_error(
            app.export("errs", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    app.append_ok("errs", r#"{"second":true}"#).await;
    let head = app.head_ok("errs").await;
    for query in [
        "from=2&to=1",
        "from=0",
        "from=0&to=1",
        "to=3",
        "from=3",
        "from=5&to=9",
    ] {
        expect_error(
            app.verify("errs", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_range",
        )
        .await;
    }
    for query in ["from=2&to=1", "from=0"] {
        expect_error(
            app.export("errs", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_range",
        )
        .await;
    }
    let list = app.ledgers_ok("").await;
    assert_nothing_changed(&app, &head, &list).await;
}

#[tokio::test]
async fn a_query_parameter_given_twice_gets_400_invalid_query_not_the_last_one() {
    let (app, head, list) = seeded_app(&[]).await;
    app.append_ok("errs", r#"{"second":true}"#).await;
    let head2 = app.head_ok("errs").await;
    for query in ["from=1&from=2", "to=1&to=2", "from=1&to=2&from=1"] {
        let message = expect_error(
            app.verify("errs", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
        assert!(message.contains("more than once"), "{query}: {message}");
        expect_error(
            app.export("errs", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    for query in ["limit=1&limit=2", "after=0&after=1"] {
        expect_error(
            app.list("errs", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    for query in ["limit=1&limit=1", "after=a&after=b"] {
        expect_error(
            app.ledgers(query).await,
            StatusCode::BAD_REQUEST,
            "invalid_query",
        )
        .await;
    }
    // Each once is still fine.
    assert!(app.verify_ok("errs", "from=1&to=2").await.ok);
    let _ = (head, list);
    let list = app.ledgers_ok("").await;
    assert_nothing_changed(&app, &head2, &list).await;
}

#[tokio::test]
async fn unknown_routes_get_404_and_wrong_methods_get_405() {
    let (app, head, list) = seeded_app(&[]).await;
    for path in [
        "/",
        "/v1",
        "/v2/ledgers",
        "/v1/ledger/errs/head",
        "/v1/ledgers/errs",
        "/v1/ledgers/errs/records/1/extra",
        "/v1/ledgers/errs/tail",
        "/healthz",
    ] {
        expect_error(
            app.get(path).await,
            StatusCode::NOT_FOUND,
            "route_not_found",
        )
        .await;
    }
    for (method, path) in [
        (Method::DELETE, "/v1/ledgers/errs/records/1"),
        (Method::PUT, "/v1/ledgers/errs/records/1"),
        (Method::POST, "/v1/ledgers/errs/records/1"),
        (Method::PUT, "/v1/ledgers/errs/records"),
        (Method::DELETE, "/v1/ledgers/errs/records"),
        (Method::PATCH, "/v1/ledgers/errs/records"),
        (Method::POST, "/v1/ledgers/errs/head"),
        (Method::POST, "/v1/ledgers/errs/verify"),
        (Method::DELETE, "/v1/ledgers/errs/export"),
        (Method::POST, "/v1/ledgers"),
        (Method::POST, "/health"),
        (Method::POST, "/metrics"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .header("content-type", "application/json")
            .body(r#"{"x":1}"#)
            .send()
            .await
            .unwrap();
        expect_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
    assert_nothing_changed(&app, &head, &list).await;
}
