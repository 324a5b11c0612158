//! Dependencies that fail: a TCP proxy between the service and the S3/DynamoDB emulator cuts,
//! stalls and delays connections in the middle of appends. Appends must fail with
//! `503 dependency_unavailable` within the request timeout (never hang, never 500), the
//! circuit must open and `/health` name the dependency, nothing acknowledged may be lost, and
//! appends must resume by themselves once the dependency is back; the ledger verifies after.
//! The proxy can also answer DynamoDB's `UpdateItem` (the claim) with throttling errors, with
//! or without passing it on first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/aws.rs"]
mod aws_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use eleanor_ledger::app::Application;
use eleanor_ledger::config::ServerArgs;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, copy_bidirectional};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PASS: u8 = 0;
const CUT: u8 = 1;
const STALL: u8 = 2;
const DELAY: u8 = 3;
/// Every DynamoDB `UpdateItem` is answered `ProvisionedThroughputExceededException` without
/// reaching the emulator; everything else passes.
const THROTTLE: u8 = 4;
/// Every `UpdateItem` is passed on (and applied, when its condition holds), but its answer
/// is replaced by `ProvisionedThroughputExceededException`: the "an earlier attempt was
/// applied, the final error is a throttle" case.
const APPLY_THEN_THROTTLE: u8 = 5;

/// Reads one HTTP/1.1 request (headers, then `Content-Length` bytes of body) whole.
async fn read_request(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            if buf.len() >= end + 4 + length {
                return Some(buf);
            }
        }
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn is_update_item(request: &[u8]) -> bool {
    let text = String::from_utf8_lossy(request).to_ascii_lowercase();
    text.contains("x-amz-target: dynamodb_20120810.updateitem")
}

const THROTTLED_BODY: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded."}"#;

/// Answers throttling modes: the request is read whole, an `UpdateItem` is answered with a
/// throttling error (after passing it on, for `APPLY_THEN_THROTTLE`), anything else passes.
async fn throttling(mode: u8, mut client: TcpStream, upstream: &str) {
    let Some(request) = read_request(&mut client).await else {
        return;
    };
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if !is_update_item(&request) {
        if server.write_all(&request).await.is_ok() {
            let _ = copy_bidirectional(&mut client, &mut server).await;
        }
        return;
    }
    if mode == APPLY_THEN_THROTTLE && server.write_all(&request).await.is_ok() {
        // The emulator answers and closes (`Connection: close`): its answer is dropped.
        let mut discarded = Vec::new();
        let _ = server.read_to_end(&mut discarded).await;
    }
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: chaos-throttle\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{THROTTLED_BODY}",
        THROTTLED_BODY.len()
    );
    let _ = client.write_all(response.as_bytes()).await;
    let _ = client.shutdown().await;
}

/// A loopback TCP proxy whose behaviour can be switched while it runs. Switching away from
/// `PASS` also ends the connections already open (they watch the mode).
struct Proxy {
    addr: String,
    mode: Arc<AtomicU8>,
    changed: watch::Sender<u8>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let mode = Arc::new(AtomicU8::new(PASS));
        let (changed, _) = watch::channel(PASS);
        let (m, tx) = (mode.clone(), changed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let (mode, mut rx, upstream) = (m.clone(), tx.subscribe(), upstream.clone());
                tokio::spawn(async move {
                    match mode.load(Ordering::SeqCst) {
                        CUT => return, // accept, then close at once
                        STALL => {
                            // Hold the connection open and answer nothing until the mode changes.
                            let _ = rx.changed().await;
                            return;
                        }
                        DELAY => tokio::time::sleep(Duration::from_millis(100)).await,
                        m @ (THROTTLE | APPLY_THEN_THROTTLE) => {
                            throttling(m, client, &upstream).await;
                            return;
                        }
                        _ => {}
                    }
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.changed() => {} // a switch cuts connections in flight
                    }
                });
            }
        });
        Proxy {
            addr,
            mode,
            changed,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        let _ = self.changed.send(mode);
    }
}

struct App {
    base: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl App {
    async fn append(&self, n: u64) -> (u16, Value, Duration) {
        let started = Instant::now();
        let resp = self
            .client
            .post(format!("{}/v1/ledgers/chaos/records", self.base))
            .json(&json!({"n": n}))
            .send()
            .await
            .expect("the service itself always answers");
        let status = resp.status().as_u16();
        (
            status,
            resp.json().await.unwrap_or(Value::Null),
            started.elapsed(),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}

const REQUEST_TIMEOUT_MS: u64 = 2000;

/// Records an acknowledged append (201 written, 202 committed).
fn ack(status: u16, body: &Value, acked: &mut Vec<(u64, String)>) {
    if status == 201 || status == 202 {
        acked.push((
            body["seq"].as_u64().unwrap(),
            body["entry_hash"].as_str().unwrap().to_owned(),
        ));
    }
}

async fn spawn_app(endpoint: &str) -> App {
    let settings = aws_support::fresh_settings().await;
    let mut argv = vec![
        "ledger-server".to_owned(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    argv.extend(aws_support::storage_flags(&settings, endpoint));
    argv.extend(
        [
            "--request-timeout-ms",
            &REQUEST_TIMEOUT_MS.to_string(),
            "--circuit-failures",
            "3",
            "--circuit-cooldown-ms",
            "500",
        ]
        .map(str::to_owned),
    );
    let args = ServerArgs::try_parse_from(argv).unwrap();
    let app = Application::build(args.into_config().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    App {
        base,
        client,
        _stop: stop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_fast_while_storage_is_cut_or_stalled_and_resume_by_themselves() {
    let upstream = aws_support::endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let proxy = Proxy::start(upstream).await;
    let app = spawn_app(&proxy.addr).await;
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut n = 0;

    // Healthy.
    for _ in 0..5 {
        n += 1;
        let (status, body, _) = app.append(n).await;
        assert_eq!(status, 201, "{body}");
        ack(status, &body, &mut acked);
    }

    // Cut: every call fails; appends answer 503 dependency_unavailable quickly, the circuit opens.
    proxy.set(CUT);
    let limit = Duration::from_millis(REQUEST_TIMEOUT_MS + 1500);
    for _ in 0..6 {
        n += 1;
        let (status, body, took) = app.append(n).await;
        ack(status, &body, &mut acked);
        assert!(
            took < limit,
            "an append took {took:?} while storage was cut"
        );
        assert!(status == 503 || status == 202, "status {status}: {body}");
        if status == 503 {
            let code = body["error"]["code"].as_str().unwrap();
            assert!(
                ["dependency_unavailable", "outcome_unknown"].contains(&code),
                "{body}"
            );
        }
    }
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 503, "{health}");
    let open: Vec<&str> = health["circuits"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| *v == "open")
        .map(|(k, _)| k.as_str())
        .collect();
    assert!(!open.is_empty(), "no circuit is open: {health}");
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("circuit_breaker_state{") && l.ends_with(" 1")),
        "circuit_breaker_state shows no open circuit"
    );
    // While open, appends are refused at once.
    n += 1;
    let (status, _, took) = app.append(n).await;
    assert_eq!(status, 503);
    assert!(
        took < Duration::from_millis(500),
        "an open circuit must fail fast, took {took:?}"
    );

    // Stall: connections accepted but never answered; requests end within the timeout.
    proxy.set(STALL);
    tokio::time::sleep(Duration::from_millis(600)).await; // let the circuit half-open
    for _ in 0..3 {
        n += 1;
        let (status, body, took) = app.append(n).await;
        ack(status, &body, &mut acked);
        assert!(
            took < limit,
            "an append hung for {took:?} while storage stalled"
        );
        assert!(status == 503 || status == 202, "status {status}: {body}");
    }

    // Back, but slow: appends succeed once the circuit lets them through.
    proxy.set(DELAY);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut resumed = 0;
    while resumed < 3 {
        assert!(
            Instant::now() < deadline,
            "appends did not resume within 30 s"
        );
        n += 1;
        let (status, body, _) = app.append(n).await;
        ack(status, &body, &mut acked);
        if status == 201 {
            resumed += 1;
        } else {
            assert_eq!(status, 503, "{body}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    proxy.set(PASS);
    for _ in 0..3 {
        n += 1;
        let (status, body, _) = app.append(n).await;
        assert_eq!(status, 201, "{body}");
        ack(status, &body, &mut acked);
    }

    let (status, health) = app.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let (status, report) = app.get("/v1/ledgers/chaos/verify").await;
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
    for (seq, hash) in &acked {
        let (status, record) = app.get(&format!("/v1/ledgers/chaos/records/{seq}")).await;
        assert_eq!(status, 200, "acknowledged seq {seq} is missing");
        assert_eq!(
            record["entry_hash"].as_str().unwrap(),
            hash,
            "seq {seq} changed"
        );
    }
    eprintln!(
        "chaos: {n} appends attempted, {} acknowledged, head {}",
        acked.len(),
        report["head"]["seq"]
    );
}

impl App {
    /// A keyed append of `{"key": key}`.
    async fn append_keyed(&self, key: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}/v1/ledgers/chaos-keyed/records", self.base))
            .header("Idempotency-Key", key)
            .json(&json!({ "key": key }))
            .send()
            .await
            .expect("the service itself always answers");
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}

/// A client whose append failed (`503`: cut, stalled past the request timeout, circuit open)
/// or was slow retries it with the same key once storage is back: one entry per key, and an
/// append that was acknowledged is answered again with the same receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_retried_with_their_keys_after_storage_failures_are_stored_once() {
    let upstream = aws_support::endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let proxy = Proxy::start(upstream).await;
    let app = spawn_app(&proxy.addr).await;
    let mut firsts = Vec::new();
    for (mode, name) in [(CUT, "cut"), (STALL, "stall"), (DELAY, "delay")] {
        proxy.set(mode);
        for i in 0..3 {
            let key = format!("{name}-{i}");
            let (status, body) = app.append_keyed(&key).await;
            assert!([201, 202, 503].contains(&status), "{key}: {status} {body}");
            firsts.push((key, status, body));
        }
        proxy.set(PASS);
    }
    let mut found = 0;
    for (key, status, first) in &firsts {
        let mut answer = None;
        for _ in 0..200 {
            match app.append_keyed(key).await {
                (503, _) => tokio::time::sleep(Duration::from_millis(50)).await,
                other => {
                    answer = Some(other);
                    break;
                }
            }
        }
        let (retry_status, retry) = answer.unwrap_or_else(|| panic!("{key}: still 503 after 10 s"));
        assert!(
            [200, 201].contains(&retry_status),
            "{key}: {retry_status} {retry}"
        );
        if *status == 201 || *status == 202 {
            assert_eq!(
                retry_status, 200,
                "{key}: an acknowledged append is replayed"
            );
            assert_eq!(retry["seq"], first["seq"], "{key}");
            assert_eq!(retry["entry_hash"], first["entry_hash"], "{key}");
        }
        let (again, replay) = app.append_keyed(key).await;
        assert_eq!((again, &replay["seq"]), (200, &retry["seq"]), "{key}");
        found += 1;
    }
    let (status, report) = app.get("/v1/ledgers/chaos-keyed/verify").await;
    assert_eq!(status, 200);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["head"]["seq"], found, "one entry per key: {report}");
}

/// Issue 14, section 3: a service started while storage does not answer (a rollout during an
/// outage) used to exit 1, so every pod crash-looped. It starts, is alive but not healthy,
/// refuses appends with `503 dependency_unavailable`, and serves once storage answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_started_during_a_storage_outage_serves_once_storage_answers() {
    let upstream = aws_support::endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let proxy = Proxy::start(upstream).await;
    proxy.set(CUT);
    let app = spawn_app(&proxy.addr).await;

    let (status, _) = app.get("/livez").await;
    assert_eq!(status, 200, "alive while storage is out");
    let (status, health) = app.get("/health").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["checks"]["startup"], "pending", "{health}");
    let (status, body, _) = app.append(1).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "dependency_unavailable", "{body}");

    proxy.set(PASS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, health) = app.get("/health").await;
        if status == 200 {
            assert_eq!(health["checks"]["startup"], "ok", "{health}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still unhealthy 60 s after storage came back: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body, _) = app.append(2).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_claim_backs_off_then_answers_503_throttled_with_retry_after_and_never_duplicates()
 {
    let upstream = aws_support::endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let proxy = Proxy::start(upstream).await;
    let app = spawn_app(&proxy.addr).await;
    let (status, body, _) = app.append(1).await;
    assert_eq!(status, 201, "{body}");

    // Throttled all along: the claim is retried until the request's deadline, then 503
    // throttled with Retry-After; nothing was applied, and the circuit stays closed.
    proxy.set(THROTTLE);
    let started = Instant::now();
    let resp = app
        .client
        .post(format!("{}/v1/ledgers/chaos/records", app.base))
        .json(&json!({"n": 2}))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(resp.status().as_u16(), 503);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "throttled", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Idempotency-Key") && !message.contains("nothing was committed"),
        "a throttled claim's outcome is unknown: {message}"
    );
    assert!(
        took >= Duration::from_millis(REQUEST_TIMEOUT_MS / 4),
        "backed off before answering: {took:?}"
    );
    assert!(
        took < Duration::from_millis(REQUEST_TIMEOUT_MS + 3000),
        "answered within the request's deadline: {took:?}"
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let throttled: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ledger_claims_throttled_total "))
        .expect("the throttling metric is exported")
        .parse()
        .unwrap();
    assert!(
        throttled >= 2.0,
        "{throttled} throttled claim attempts counted"
    );
    let (_, health) = app.get("/health").await;
    assert_ne!(health["checks"]["index"], "circuit_open", "{health}");

    // Applied, then answered with a throttle on every attempt: the retries carry the same
    // claim on the same head, so the append is found applied and acknowledged once.
    proxy.set(APPLY_THEN_THROTTLE);
    let (status, body, _) = app.append(3).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["seq"], 2, "{body}");

    proxy.set(PASS);
    let (status, body, _) = app.append(4).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["seq"], 3, "{body}");
    let (status, report) = app.get("/v1/ledgers/chaos/verify").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["ok"], true, "{report}");
    let (status, page) = app.get("/v1/ledgers/chaos/records?limit=10").await;
    assert_eq!(status, 200, "{page}");
    let ns: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["record"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ns,
        vec![1, 3, 4],
        "the throttled append is absent, the applied one once"
    );
}
