//! Fuzzing the API from its own OpenAPI document, bounded for CI: proptest generates requests
//! for every documented operation (valid and hostile path parameters, known and unknown query
//! parameters with garbage values, JSON and non-JSON bodies, any content type, now and then a
//! wrong method), sends them to the real app, and checks the contract: no response is a 5xx,
//! every error has the API's error body, and the server still answers afterwards.
//!
//! 300 cases against one app; a failure prints the request (shrunk) that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{Api, spawn_app_with};

const CASES: u32 = 300;

/// One documented operation.
#[derive(Debug)]
struct Operation {
    method: Method,
    path: String,
    /// Names of its query parameters.
    query: Vec<String>,
}

/// The operations of the document, with `$ref`s to parameters resolved.
fn operations(doc: &Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match p["$ref"].as_str() {
                    Some(r) => doc.pointer(&r[1..]).expect("a parameter $ref resolves"),
                    None => p,
                })
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().expect("a parameter name").to_owned())
                .collect();
            ops.push(Operation {
                method: Method::from_bytes(method.to_uppercase().as_bytes()).expect("a method"),
                path: path.clone(),
                query,
            });
        }
    }
    ops
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &[u8]) -> String {
    text.iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Text that is already URL-safe and stands for itself in a path or query: ids and seqs good
/// and bad, and hostile escapes (an encoded slash, NUL, invalid UTF-8, broken escapes).
const HOSTILE: &[&str] = &[
    "fuzz",
    "other",
    "0",
    "1",
    "2",
    "3",
    "-1",
    "+1",
    "1e3",
    "0x10",
    "01",
    "1.0",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999999",
    "-9223372036854775808",
    "%2F",
    "a%2Fb",
    "%00",
    "%ff",
    "%C0%AF",
    "%",
    "%zz",
    "%25",
    "..",
    ".",
    "%2E%2E",
    "null",
    "true",
    "%20",
    "a%20b",
    "%E2%80%AE",
    "%F0%9F%92%A9",
];

/// A path segment or query value.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&["fuzz", "1", "2", "3"][..]).prop_map(str::to_owned),
        3 => prop::sample::select(HOSTILE).prop_map(str::to_owned),
        2 => "[A-Za-z0-9_-]{1,64}",
        1 => "[A-Za-z0-9_-]{65,80}",
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => "[0-9]{19,40}",
        2 => prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| encode(&b)),
        1 => ".{0,30}".prop_map(|s| encode(s.as_bytes())),
    ]
}

/// A query parameter's name: one the operation knows, or not.
#[derive(Debug, Clone)]
enum Name {
    Known(Index),
    Other(String),
}

fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        4 => any::<Index>().prop_map(Name::Known),
        1 => "[a-z_]{1,10}".prop_map(Name::Other),
        1 => prop::sample::select(&["", "%zz", "a%5Bb%5D", "limit%00", "LIMIT"][..])
            .prop_map(|s| Name::Other(s.to_owned())),
    ]
}

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A request body: valid records, other JSON, and what is not JSON or not acceptable.
fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    let some = prop_oneof![
        4 => prop::collection::btree_map(".{0,8}", json(), 0..6)
            .prop_map(|m| serde_json::to_vec(&Value::Object(m.into_iter().collect())).unwrap()),
        2 => json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        1 => (0usize..400, any::<bool>()).prop_map(|(depth, arrays)| {
            let (open, close) = if arrays { ("[", "]") } else { (r#"{"a":"#, "}") };
            format!("{{\"deep\":{}1{}}}", open.repeat(depth), close.repeat(depth)).into_bytes()
        }),
        1 => prop::sample::select(&[
            r#"{"n":1e400}"#, r#"{"n":-1e400}"#, r#"{"n":1e-400}"#, r#"{"a":1,"a":2}"#,
            r#"{"n":123456789012345678901234567890123456789012345678901234567890}"#,
            r#"{"s":"\ud800"}"#, r#"{"s":"\u0000"}"#, "{}", "[]", "null", "", " ", "{", "{}{}",
            "\u{feff}{}", r#"{"a":NaN}"#, r#"{"a":Infinity}"#,
        ][..]).prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
            let mut body = br#"{"bytes":""#.to_vec();
            body.extend(b);
            body.extend_from_slice(br#""}"#);
            body
        }),
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => Just(format!(r#"{{"pad":"{}"}}"#, "x".repeat(300_000)).into_bytes()),
    ];
    prop_oneof![1 => Just(None), 3 => some.prop_map(Some)]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(Some("application/json".to_owned())),
        1 => Just(None),
        2 => prop::sample::select(&[
            "application/problem+json", "APPLICATION/JSON", "application/json; charset=utf-8",
            "application/json; charset=utf-16", "text/plain", "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x", "application/", "+json", ";", "",
        ][..]).prop_map(|s| Some(s.to_owned())),
        1 => "[ -~]{0,30}".prop_map(Some),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    op: Index,
    /// Another method than the documented one, now and then.
    method: Option<Method>,
    /// The values of the path parameters, in order.
    segments: Vec<String>,
    query: Vec<(Name, String)>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
}

fn case() -> impl Strategy<Value = Case> {
    let method = prop_oneof![
        12 => Just(None),
        1 => prop::sample::select(&[Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::PATCH][..])
            .prop_map(Some),
    ];
    (
        any::<Index>(),
        method,
        prop::collection::vec(text(), 2),
        prop::collection::vec((name(), text()), 0..3),
        content_type(),
        body(),
    )
        .prop_map(|(op, method, segments, query, content_type, body)| Case {
            op,
            method,
            segments,
            query,
            content_type,
            body,
        })
}

/// How many responses of each status each operation got: evidence the run was not degenerate.
type Seen = Mutex<BTreeMap<(String, u16), u32>>;

/// Sends the case and checks the contract, or says how it was broken.
async fn check(api: &Api, ops: &[Operation], seen: &Seen, case: Case) -> Result<(), String> {
    let op = case.op.get(ops);
    let mut segments = case.segments.iter();
    let path = op
        .path
        .split('/')
        .map(|part| match part.starts_with('{') {
            true => segments
                .next()
                .expect("two values cover every path")
                .as_str(),
            false => part,
        })
        .collect::<Vec<_>>()
        .join("/");
    let query = case
        .query
        .iter()
        .map(|(name, value)| {
            let name = match name {
                Name::Known(_) if op.query.is_empty() => "limit",
                Name::Known(i) => i.get(&op.query).as_str(),
                Name::Other(n) => n.as_str(),
            };
            format!("{name}={value}")
        })
        .collect::<Vec<_>>()
        .join("&");
    let url = match query.is_empty() {
        true => api.url(&path),
        false => api.url(&format!("{path}?{query}")),
    };
    let method = case.method.clone().unwrap_or_else(|| op.method.clone());
    let mut request = api.client.request(method.clone(), &url);
    if let Some(ct) = case
        .content_type
        .as_deref()
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        request = request.header(CONTENT_TYPE, ct);
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    let what = format!("{method} {url}");
    let response = request
        .send()
        .await
        .map_err(|e| format!("{what}: no answer: {e:?}"))?;
    let status = response.status();
    *seen
        .lock()
        .unwrap()
        .entry((format!("{} {}", op.method, op.path), status.as_u16()))
        .or_default() += 1;
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("{what}: {status} with a broken body: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    if status.is_server_error() {
        return Err(format!("{what}: {status} {text}"));
    }
    if !status.is_success() {
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{what}: {status} without a JSON error body ({e}): {text}"))?;
        let shape_ok = body.as_object().is_some_and(|o| o.len() == 1)
            // `code` and `message`, and for a batch item at fault its `index`.
            && body["error"].as_object().is_some_and(|e| {
                e.len() == 2 || (e.len() == 3 && e.get("index").is_some_and(Value::is_u64))
            })
            && body["error"]["code"].as_str().is_some_and(|c| {
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.trim().is_empty());
        if !shape_ok {
            return Err(format!(
                "{what}: {status} with a malformed error body: {text}"
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_generated_from_the_openapi_document_get_no_5xx_and_well_formed_errors() {
    // A signing key, so that checkpoints are made rather than refused with 503.
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("signing.key");
    eleanor_ledger::keyfile::write_new_key(&key).unwrap();
    let key = key.display().to_string();
    let app = spawn_app_with(&["--signing-key-file", &key, "--checkpoint-interval", "0"]).await;
    for n in 1..=3 {
        let response = app.append("fuzz", &format!(r#"{{"n":{n}}}"#)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let ops = operations(&doc);
    assert!(ops.len() >= 10, "{ops:?}");

    // One connection per request: the server may close a connection whose request body it did
    // not read (a refused upload), and a pooled client would race that close with its next
    // request. Every case gets its own answer this way, and a dropped connection is a finding.
    let api = Api {
        address: app.address.clone(),
        client: reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    let seen = Seen::default();
    let runtime = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        });
        runner
            .run(&case(), |case| {
                runtime
                    .block_on(check(&api, &ops, &seen, case))
                    .map_err(TestCaseError::fail)
            })
            .map_err(|e| e.to_string())
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    let seen = seen.into_inner().unwrap();
    eprintln!("responses by operation and status: {seen:#?}");
    let operations: BTreeSet<&str> = seen.keys().map(|(op, _)| op.as_str()).collect();
    assert_eq!(operations.len(), ops.len(), "every operation was exercised");
    for class in [200..300, 400..500] {
        assert!(
            seen.keys().any(|(_, status)| class.contains(status)),
            "some responses were {class:?}"
        );
    }

    // The server is still up, and the seeded ledger intact.
    assert_eq!(app.health().await.status(), StatusCode::OK);
    let report = app.verify_ok("fuzz", "").await;
    assert!(report.ok && report.verified >= 3, "{report:?}");
}
