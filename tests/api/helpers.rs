//! `spawn_app()` and the `TestApp` it returns: the real service on `127.0.0.1:0` over a temp
//! dir, with typed request methods, a graceful stop, and restarts on the same data dir.
//!
//! The response types here are the tests' own reading of the API (issue 2, section 5), not the
//! crate's types, so that a change to what goes over the wire fails a test.

use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use eleanor_ledger::app::{Application, StartError};
use eleanor_ledger::config::ServerArgs;
use eleanor_ledger::store::fault::{self, FaultHandle};
use eleanor_ledger::store::{self, Access, BackendMetrics};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a stopping server may take to drain before a test calls it hung.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// An append receipt (`201`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub ledger_id: String,
    pub seq: u64,
    pub entry_hash: String,
    pub prev_hash: String,
    pub timestamp: String,
    pub object_key: String,
    /// The signature, when the server signs (by default on the embedded backend).
    pub receipt: Option<ReceiptSignature>,
}

/// An append receipt's signature part.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptSignature {
    pub key_id: String,
    pub signature: String,
}

/// One record as `GET .../records/{seq}` returns it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRecord {
    pub ledger_id: String,
    pub seq: u64,
    pub entry_hash: String,
    pub prev_hash: String,
    pub timestamp: String,
    pub object_key: String,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    pub record: Value,
}

/// A page of records.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    pub records: Vec<StoredRecord>,
    pub next_after: Option<u64>,
}

/// `GET .../head`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub ledger_id: String,
    pub seq: u64,
    pub last_hash: String,
}

/// A ledger in `GET /v1/ledgers`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LedgerSummary {
    pub ledger_id: String,
    pub seq: u64,
    pub last_hash: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LedgerList {
    pub ledgers: Vec<LedgerSummary>,
    pub next_after: Option<String>,
}

/// `GET .../verify`.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyReport {
    pub ledger_id: String,
    pub ok: bool,
    pub from: u64,
    pub to: u64,
    pub verified: u64,
    pub head: VerifyHead,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VerifyHead {
    pub seq: u64,
    pub last_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Failure {
    pub seq: u64,
    pub kind: String,
    pub detail: String,
}

impl VerifyReport {
    /// `(seq, kind)` of every failure.
    pub fn failure_kinds(&self) -> Vec<(u64, &str)> {
        self.failures
            .iter()
            .map(|f| (f.seq, f.kind.as_str()))
            .collect()
    }
}

/// A client of one running app. Cheap to clone; [`Api::fresh`] gives one with its own
/// connections.
#[derive(Clone)]
pub struct Api {
    pub address: String,
    pub client: reqwest::Client,
}

fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a reqwest client builds")
}

impl Api {
    /// The same app through a new client (its own connection pool): another "client" in
    /// concurrency tests.
    pub fn fresh(&self) -> Api {
        Api {
            address: self.address.clone(),
            client: new_client(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `POST /v1/ledgers/{ledger}/records` with `body` as `application/json`.
    pub async fn append(&self, ledger: &str, body: &str) -> reqwest::Response {
        self.append_as(ledger, Some("application/json"), body.as_bytes().to_vec())
            .await
    }

    /// An append with any content type (or none) and any bytes.
    pub async fn append_as(
        &self,
        ledger: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(&format!("/v1/ledgers/{ledger}/records")))
            .body(body);
        if let Some(ct) = content_type {
            request = request.header(CONTENT_TYPE, ct);
        }
        request.send().await.expect("append request is answered")
    }

    /// Appends and expects `201` with a well-formed receipt for this ledger.
    pub async fn append_ok(&self, ledger: &str, body: &str) -> Receipt {
        let response = self.append(ledger, body).await;
        let receipt: Receipt = expect_json(response, StatusCode::CREATED).await;
        assert_eq!(receipt.ledger_id, ledger);
        assert_hash(&receipt.entry_hash);
        assert_hash(&receipt.prev_hash);
        receipt
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} is answered: {e}"))
    }

    /// `GET .../records/{seq}`; `seq` as text so tests can send bad ones.
    pub async fn get_record(&self, ledger: &str, seq: impl std::fmt::Display) -> reqwest::Response {
        self.get(&format!("/v1/ledgers/{ledger}/records/{seq}"))
            .await
    }

    /// A record and the exact text of the response that carried it.
    pub async fn get_record_ok(&self, ledger: &str, seq: u64) -> (StoredRecord, String) {
        let response = self.get_record(ledger, seq).await;
        let status = response.status();
        let text = response.text().await.expect("record body");
        assert_eq!(status, StatusCode::OK, "GET record {seq}: {text}");
        let record: StoredRecord = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("record {seq} is not a record ({e}): {text}"));
        (record, text)
    }

    /// `GET .../records?{query}`.
    pub async fn list(&self, ledger: &str, query: &str) -> reqwest::Response {
        self.get(&format!("/v1/ledgers/{ledger}/records?{query}"))
            .await
    }

    pub async fn list_ok(&self, ledger: &str, query: &str) -> Page {
        expect_json(self.list(ledger, query).await, StatusCode::OK).await
    }

    pub async fn head(&self, ledger: &str) -> reqwest::Response {
        self.get(&format!("/v1/ledgers/{ledger}/head")).await
    }

    pub async fn head_ok(&self, ledger: &str) -> Head {
        let head: Head = expect_json(self.head(ledger).await, StatusCode::OK).await;
        assert_eq!(head.ledger_id, ledger);
        head
    }

    /// `GET /v1/ledgers?{query}`.
    pub async fn ledgers(&self, query: &str) -> reqwest::Response {
        self.get(&format!("/v1/ledgers?{query}")).await
    }

    pub async fn ledgers_ok(&self, query: &str) -> LedgerList {
        expect_json(self.ledgers(query).await, StatusCode::OK).await
    }

    /// `GET .../verify?{query}`.
    pub async fn verify(&self, ledger: &str, query: &str) -> reqwest::Response {
        self.get(&format!("/v1/ledgers/{ledger}/verify?{query}"))
            .await
    }

    pub async fn verify_ok(&self, ledger: &str, query: &str) -> VerifyReport {
        let report: VerifyReport =
            expect_json(self.verify(ledger, query).await, StatusCode::OK).await;
        assert_eq!(report.ledger_id, ledger);
        report
    }

    /// `GET .../export?{query}`.
    pub async fn export(&self, ledger: &str, query: &str) -> reqwest::Response {
        self.get(&format!("/v1/ledgers/{ledger}/export?{query}"))
            .await
    }

    /// The NDJSON export text.
    pub async fn export_ok(&self, ledger: &str, query: &str) -> String {
        let response = self.export(ledger, query).await;
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert_eq!(content_type, "application/x-ndjson");
        response.text().await.expect("export body")
    }

    pub async fn health(&self) -> reqwest::Response {
        self.get("/health").await
    }

    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("metrics body")
    }

    /// Sends `request` (a complete HTTP/1.1 request, which should say `Connection: close`)
    /// over a plain socket, for what reqwest will not send: chunked bodies, raw paths.
    pub async fn raw(&self, request: &[u8]) -> RawResponse {
        let host = self.address.trim_start_matches("http://");
        let mut stream = TcpStream::connect(host).await.expect("connect to the app");
        stream.write_all(request).await.expect("send the request");
        let mut bytes = Vec::new();
        stream
            .read_to_end(&mut bytes)
            .await
            .expect("read the response");
        RawResponse::parse(&bytes)
    }
}

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub body: String,
}

impl RawResponse {
    fn parse(bytes: &[u8]) -> RawResponse {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {head:?}"));
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        };
        RawResponse { status, body }
    }

    /// Checks the error body like [`expect_error`].
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        let body: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {}", self.body));
        assert_error_shape(&body, code);
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// A running app. Derefs to its [`Api`].
pub struct TestApp {
    pub api: Api,
    /// Kept alive (not deleted) as long as the app, and handed on by [`TestApp::stop`].
    pub data_dir: TempDir,
    /// The flags it was started with (besides `--listen` and `--data-dir`).
    args: Vec<String>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The service with default settings over a fresh temp dir.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// The service with extra flags (e.g. `["--auto-create", "false"]`) over a fresh temp dir.
pub async fn spawn_app_with(args: &[&str]) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp data dir");
    spawn_app_in(data_dir, args).await
}

/// The config `ledger-server` would build from these flags, on port 0 over `data_dir`.
pub fn config(data_dir: &Path, args: &[&str]) -> eleanor_ledger::config::Config {
    let data_dir = data_dir.display().to_string();
    let mut argv = vec![
        "ledger-server",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data_dir,
    ];
    argv.extend_from_slice(args);
    ServerArgs::try_parse_from(argv)
        .expect("the flags parse")
        .into_config()
        .expect("the config is valid")
}

/// Builds the app on `data_dir` (which may hold an earlier app's ledger), or says why not.
pub async fn try_build(data_dir: &Path, args: &[&str]) -> Result<Application, StartError> {
    Application::build(config(data_dir, args)).await
}

/// The service over `data_dir`, which may hold an earlier app's ledger.
pub async fn spawn_app_in(data_dir: TempDir, args: &[&str]) -> TestApp {
    init_tracing();
    let app = try_build(data_dir.path(), args)
        .await
        .unwrap_or_else(|e| panic!("the app builds: {e}"));
    serve(app, data_dir, args)
}

/// The service over a fresh embedded store seen through the fault-injecting wrapper
/// (`store::fault`), and the handle that plans its faults (a slow `commit_batch`, say).
pub async fn spawn_faulty_app(args: &[&str]) -> (TestApp, FaultHandle) {
    init_tracing();
    let data_dir = tempfile::tempdir().expect("temp data dir");
    let config = config(data_dir.path(), args);
    let registry = prometheus::Registry::new();
    let metrics = BackendMetrics::new(&registry).expect("backend metrics register");
    let stores = store::open(&config.backend, Access::ReadWrite, metrics)
        .await
        .expect("the embedded store opens");
    let (stores, faults) = fault::wrap(&stores);
    let app = Application::over(config, stores, registry)
        .await
        .unwrap_or_else(|e| panic!("the app builds: {e}"));
    (serve(app, data_dir, args), faults)
}

fn serve(app: Application, data_dir: TempDir, args: &[&str]) -> TestApp {
    let address = format!("http://{}", app.local_addr());
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        // A dropped sender (the test ended) stops the app too.
        let _ = stop.await;
    }));
    TestApp {
        api: Api {
            address,
            client: new_client(),
        },
        data_dir,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        shutdown: Some(shutdown),
        server,
    }
}

impl TestApp {
    /// Tells the app to stop (stop accepting, answer requests in flight, drain batches),
    /// without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Stops the app gracefully, checks it exited cleanly, and hands back its data dir.
    pub async fn stop(mut self) -> TempDir {
        self.begin_shutdown();
        match tokio::time::timeout(STOP_TIMEOUT, &mut self.server).await {
            Err(_) => panic!("the app did not stop within {STOP_TIMEOUT:?} of being told to"),
            Ok(Err(e)) => panic!("the server task failed: {e}"),
            Ok(Ok(())) => {}
        }
        self.data_dir
    }

    /// Stops this app and starts a new one with the same flags on the same data dir.
    pub async fn restart(self) -> TestApp {
        let args = self.args.clone();
        let data_dir = self.stop().await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_app_in(data_dir, &args).await
    }
}

/// Logs to the test's output when `TEST_LOG` is set (zero-to-production's convention).
fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_test_writer()
            .try_init();
    }
}

/// Reads a JSON body after checking the status.
pub async fn expect_json<T: DeserializeOwned>(
    response: reqwest::Response,
    status: StatusCode,
) -> T {
    let url = response.url().clone();
    let actual = response.status();
    let text = response.text().await.expect("response body");
    assert_eq!(actual, status, "{url}: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: unexpected body ({e}): {text}"))
}

/// Checks a response is the error `status`/`code` with the API's error shape, and returns
/// its message.
pub async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> String {
    let url = response.url().clone();
    let actual = response.status();
    let text = response.text().await.expect("response body");
    assert_eq!(
        actual, status,
        "{url}: expected {status} {code}, got: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{url}: error body is not JSON ({e}): {text}"));
    assert_error_shape(&body, code);
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// `{"error": {"code": code, "message": "<non-empty>"}}` and nothing else.
pub fn assert_error_shape(body: &Value, code: &str) {
    let outer = body.as_object().expect("the error body is an object");
    assert_eq!(outer.len(), 1, "only \"error\" at the top: {body}");
    let error = body["error"].as_object().expect("\"error\" is an object");
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    // `index` names the item at fault in a batch append.
    keys.retain(|k| *k != "index" || error["index"].is_u64());
    assert_eq!(keys, ["code", "message"], "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("message is text");
    assert!(
        !message.trim().is_empty(),
        "the message says something: {body}"
    );
}

/// 64 lowercase hex characters.
pub fn assert_hash(hash: &str) {
    assert!(
        hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "not a lowercase hex SHA-256: {hash:?}"
    );
}

/// The genesis `prev_hash` of every ledger's seq 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
