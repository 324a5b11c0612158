//! The AWS backend end to end: the real app (`Application::build` with `--backend aws`) over
//! HTTP on loopback, against the S3/DynamoDB emulator, checked from outside with the test's
//! own raw SDK clients.
//!
//! - After appends over HTTP, S3 and DynamoDB hold exactly what docs/PROTOCOL.md says: one
//!   COMPLIANCE-locked object per seq, one `SEQ#` item naming its exact version, a `META` head
//!   at the last entry; verification, export and reads agree. Every request the service sent
//!   is allowed by `migrations/iam-runtime-policy.json`.
//! - Tampering with S3 or DynamoDB behind the service's back is reported by verification at
//!   the right seq with the right kind.
//! - Three replicas on one bucket and table produce one linear chain per ledger, with real
//!   compare-and-set contention between them.
//! - Requests per appended record at 1 and at 64 concurrent clients (printed as a figure).
//! - `ledger-init` as the runbook runs it: creates, then changes nothing; refuses a bucket
//!   without Object Lock; `--create-bucket`; the migrations' table definition is its table.
//!
//! Needs `ELEANOR_LEDGER_TEST_AWS_ENDPOINT` (set by `scripts/test.sh`); without it every test
//! here fails with a message saying so. moto is slow (~200 requests/s), so record counts are
//! tens, not thousands.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/aws.rs"]
mod aws_support;
#[path = "support/report.rs"]
mod report_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ObjectLockEnabled, ObjectLockMode};
use base64::Engine;
use clap::Parser;
use eleanor_ledger::app::Application;
use eleanor_ledger::chain::hash::Hash;
use eleanor_ledger::config::ServerArgs;
use eleanor_ledger::store::BackendConfig;
use eleanor_ledger::store::BackendMetrics;
use eleanor_ledger::store::aws::admin::AwsAdmin;
use eleanor_ledger::store::aws::{AwsSettings, RequestObserver};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use report_support::failure_kinds;

const GENESIS_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Six years: the default retention is 2557 days (about seven).
const SIX_YEARS_SECS: i64 = 6 * 365 * 86_400;

// ---------------------------------------------------------------------------------------------
// The app over HTTP
// ---------------------------------------------------------------------------------------------

/// A running `Application` on the aws backend, and a client for it.
struct AwsApp {
    api: Api,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl AwsApp {
    /// The service as `ledger-server --backend aws ...` would run it on `settings`' bucket,
    /// table and prefix, on `127.0.0.1:0`; `observer` sees every request it sends to AWS.
    async fn spawn(settings: &AwsSettings, observer: Option<RequestObserver>) -> AwsApp {
        let mut argv = vec![
            "ledger-server".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ];
        argv.extend(aws_support::storage_flags(
            settings,
            &aws_support::endpoint(),
        ));
        let mut config = ServerArgs::try_parse_from(argv)
            .expect("the flags parse")
            .into_config()
            .expect("the config is valid");
        if let BackendConfig::Aws(aws) = &mut config.backend {
            aws.observer = observer;
        }
        let app = Application::build(config)
            .await
            .unwrap_or_else(|e| panic!("the app did not start on the emulator: {e}"));
        let address = format!("http://{}", app.local_addr());
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        AwsApp {
            api: Api::new(address),
            shutdown: Some(tx),
            server,
        }
    }

    /// Stops accepting, drains, and waits (bounded) for the server to return.
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.server)
            .await
            .expect("the app stops within 60 s")
            .expect("the server task did not panic");
    }
}

/// An append receipt (`201`/`202`), as much of it as these tests read.
#[derive(Debug, Clone, Deserialize)]
struct Receipt {
    ledger_id: String,
    seq: u64,
    entry_hash: String,
    prev_hash: String,
    object_key: String,
}

#[derive(Debug, Clone, Deserialize)]
struct StoredRecord {
    seq: u64,
    entry_hash: String,
    prev_hash: String,
    record: Value,
}

#[derive(Debug, Clone, Deserialize)]
struct Page {
    records: Vec<StoredRecord>,
    next_after: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
struct VerifyReport {
    ok: bool,
    verified: u64,
    head: VerifyHead,
    failures: Vec<Failure>,
}

#[derive(Debug, Clone, Deserialize)]
struct VerifyHead {
    seq: u64,
    last_hash: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Failure {
    seq: u64,
    kind: String,
    /// Read only through `Debug`, in assertion messages.
    #[allow(dead_code)]
    detail: String,
}

impl VerifyReport {
    fn kinds(&self) -> Vec<(u64, &str)> {
        self.failures
            .iter()
            .map(|f| (f.seq, f.kind.as_str()))
            .collect()
    }
}

/// One line of `GET .../export`.
#[derive(Debug, Clone, Deserialize)]
struct ExportLine {
    seq: u64,
    stored: Option<String>,
    entry_hash: String,
}

/// What one append request came back with.
#[derive(Debug, Clone)]
struct Appended {
    ledger: String,
    /// The `id` field of the event sent.
    id: String,
    status: StatusCode,
    body: Value,
}

impl Appended {
    /// Acknowledged: `201` (written) or `202` (committed, written later).
    fn acked(&self) -> bool {
        self.status == StatusCode::CREATED || self.status == StatusCode::ACCEPTED
    }

    fn receipt(&self) -> Receipt {
        assert!(
            self.acked(),
            "append of {} to {} answered {}: {}",
            self.id,
            self.ledger,
            self.status,
            self.body
        );
        let receipt: Receipt = serde_json::from_value(self.body.clone()).unwrap();
        assert_eq!(receipt.ledger_id, self.ledger);
        receipt
    }
}

#[derive(Clone)]
struct Api {
    address: String,
    client: reqwest::Client,
}

fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a reqwest client builds")
}

impl Api {
    fn new(address: String) -> Api {
        Api {
            address,
            client: new_client(),
        }
    }

    /// The same app through a client with its own connections (another "client").
    fn fresh(&self) -> Api {
        Api::new(self.address.clone())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} is answered: {e}"))
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let response = self.get(path).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path} ({e}): {text}"))
    }

    /// Appends the event `{"event": "audit", "id": id, ...}` and returns whatever came back.
    async fn append(&self, ledger: &str, id: &str) -> Appended {
        let event = json!({"event": "audit", "id": id, "text": "entrée"});
        let response = self
            .client
            .post(format!("{}/v1/ledgers/{ledger}/records", self.address))
            .json(&event)
            .send()
            .await
            .unwrap_or_else(|e| panic!("append {id} is answered: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Appended {
            ledger: ledger.to_owned(),
            id: id.to_owned(),
            status,
            body,
        }
    }

    async fn append_ok(&self, ledger: &str, id: &str) -> Receipt {
        let appended = self.append(ledger, id).await;
        assert_eq!(appended.status, StatusCode::CREATED, "{}", appended.body);
        appended.receipt()
    }

    /// `clients` clients, each with its own connections, each appending `per_client` records
    /// one after another to `ledger`, all at once. Ids are `{tag}-{client}-{i}`.
    async fn append_concurrently(
        &self,
        ledger: &str,
        tag: &str,
        clients: usize,
        per_client: usize,
    ) -> Vec<JoinHandle<Vec<Appended>>> {
        (0..clients)
            .map(|c| {
                let (api, ledger, tag) = (self.fresh(), ledger.to_owned(), tag.to_owned());
                tokio::spawn(async move {
                    let mut out = Vec::with_capacity(per_client);
                    for i in 0..per_client {
                        out.push(api.append(&ledger, &format!("{tag}-{c}-{i}")).await);
                    }
                    out
                })
            })
            .collect()
    }

    async fn verify(&self, ledger: &str) -> VerifyReport {
        self.get_json(&format!("/v1/ledgers/{ledger}/verify")).await
    }

    /// Every record of the ledger, in seq order (following pages).
    async fn all_records(&self, ledger: &str) -> Vec<StoredRecord> {
        let mut out = Vec::new();
        let mut after = 0;
        for _ in 0..100 {
            let page: Page = self
                .get_json(&format!(
                    "/v1/ledgers/{ledger}/records?after={after}&limit=1000"
                ))
                .await;
            out.extend(page.records);
            match page.next_after {
                Some(next) => after = next,
                None => return out,
            }
        }
        panic!("more than 100 pages of records")
    }

    async fn record(&self, ledger: &str, seq: u64) -> StoredRecord {
        self.get_json(&format!("/v1/ledgers/{ledger}/records/{seq}"))
            .await
    }

    /// The export's entry lines; its last line must be the end line stating as many.
    async fn export(&self, ledger: &str) -> Vec<ExportLine> {
        let response = self.get(&format!("/v1/ledgers/{ledger}/export")).await;
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        let entries: Vec<ExportLine> = text
            .lines()
            .filter(|l| l.starts_with(r#"{"seq""#))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("export line ({e}): {l}")))
            .collect();
        let end: serde_json::Value =
            serde_json::from_str(text.lines().last().expect("an end line")).unwrap();
        assert_eq!(
            end["end"]["to"],
            entries.last().map_or(0, |e| e.seq),
            "{end}"
        );
        entries
    }

    async fn metrics(&self) -> Metrics {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        Metrics::parse(&response.text().await.unwrap())
    }
}

async fn join_all(tasks: Vec<JoinHandle<Vec<Appended>>>) -> Vec<Appended> {
    let mut out = Vec::new();
    for task in tasks {
        out.extend(task.await.expect("an appending client panicked"));
    }
    out
}

fn event_id(record: &StoredRecord) -> &str {
    record.record["id"].as_str().expect("every event has an id")
}

// ---------------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------------

/// Samples of a `/metrics` page: (name, labels) -> value.
#[derive(Debug, Clone, Default)]
struct Metrics(BTreeMap<(String, BTreeMap<String, String>), f64>);

impl Metrics {
    fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let value: f64 = value.parse().expect("a numeric sample");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let labels = rest
                        .trim_end_matches('}')
                        .split("\",")
                        .filter(|pair| !pair.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            samples.insert((name, labels), value);
        }
        Metrics(samples)
    }

    /// The sum of `name`'s samples whose labels include every `(label, value)` given.
    fn sum(&self, name: &str, matching: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && matching
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Backend requests of every `op` accepted by `op`, with any outcome in `outcomes` (all
    /// when empty).
    fn requests(&self, op: impl Fn(&str) -> bool, outcomes: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|((n, labels), _)| {
                n == "ledger_backend_requests_total"
                    && labels.get("op").is_some_and(|o| op(o))
                    && (outcomes.is_empty()
                        || labels
                            .get("outcome")
                            .is_some_and(|o| outcomes.contains(&o.as_str())))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// `self - before`, sample by sample.
    fn since(&self, before: &Metrics) -> Metrics {
        Metrics(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The stores, seen from outside
// ---------------------------------------------------------------------------------------------

type Item = HashMap<String, AttributeValue>;

fn entry_key(prefix: &str, ledger: &str, seq: u64) -> String {
    format!("{prefix}{ledger}/entries/{seq:018}.json")
}

fn seq_sort_key(seq: u64) -> String {
    format!("SEQ#{seq:018}")
}

fn attr_s<'a>(item: &'a Item, name: &str) -> &'a str {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s,
        other => panic!("attribute {name} is not a string: {other:?} in {item:?}"),
    }
}

fn attr_n(item: &Item, name: &str) -> u64 {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().unwrap(),
        other => panic!("attribute {name} is not a number: {other:?} in {item:?}"),
    }
}

/// Every item of `ledger`'s partition, in sort-key order (a raw, strongly consistent Query).
async fn partition(ddb: &aws_sdk_dynamodb::Client, table: &str, ledger: &str) -> Vec<Item> {
    let mut items = Vec::new();
    let mut start = None;
    for _ in 0..1000 {
        let page = ddb
            .query()
            .table_name(table)
            .consistent_read(true)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", "ledger_id")
            .expression_attribute_values(":pk", AttributeValue::S(ledger.to_owned()))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(key) => start = Some(key),
            None => return items,
        }
    }
    panic!("more than 1000 pages in one partition")
}

/// The `SEQ#` items of `ledger`, by seq.
async fn seq_items(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    ledger: &str,
) -> BTreeMap<u64, Item> {
    partition(ddb, table, ledger)
        .await
        .into_iter()
        .filter_map(|item| {
            let seq = attr_s(&item, "seq").strip_prefix("SEQ#")?.parse().ok()?;
            Some((seq, item))
        })
        .collect()
}

async fn get_item(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    ledger: &str,
    sort_key: &str,
) -> Option<Item> {
    ddb.get_item()
        .table_name(table)
        .key("ledger_id", AttributeValue::S(ledger.to_owned()))
        .key("seq", AttributeValue::S(sort_key.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
}

async fn meta(ddb: &aws_sdk_dynamodb::Client, table: &str, ledger: &str) -> Item {
    get_item(ddb, table, ledger, "META")
        .await
        .unwrap_or_else(|| panic!("ledger {ledger} has no META item"))
}

/// Sets `attribute = value` on one item (a raw UpdateItem: tampering).
async fn set_attribute(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    ledger: &str,
    sort_key: &str,
    attribute: &str,
    value: AttributeValue,
) {
    ddb.update_item()
        .table_name(table)
        .key("ledger_id", AttributeValue::S(ledger.to_owned()))
        .key("seq", AttributeValue::S(sort_key.to_owned()))
        .update_expression("SET #a = :v")
        .condition_expression("attribute_exists(#a)")
        .expression_attribute_names("#a", attribute)
        .expression_attribute_values(":v", value)
        .send()
        .await
        .unwrap();
}

/// `(versions, delete markers)` stored under exactly `key`.
async fn versions_of(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> (usize, usize) {
    let listing = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .unwrap();
    let versions = listing
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .count();
    let markers = listing
        .delete_markers()
        .iter()
        .filter(|m| m.key() == Some(key))
        .count();
    (versions, markers)
}

/// What `ledger-verify --json` printed and its exit code.
struct CliRun {
    code: i32,
    report: Value,
}

/// Runs `ledger-verify --json --ledger LEDGER` on the bucket, table and prefix of `settings`
/// (through the emulator), as an auditor would without the service.
async fn ledger_verify(settings: &AwsSettings, ledger: &str, extra: &[&str]) -> CliRun {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-verify"));
    command
        .args(["--ledger", ledger, "--json"])
        .args(aws_support::storage_flags(
            settings,
            &aws_support::endpoint(),
        ))
        .args(extra);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    CliRun {
        code: out.status.code().unwrap_or(-1),
        report: serde_json::from_str(&stdout).unwrap_or_else(|_| {
            panic!(
                "ledger-verify printed no report: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// The runtime IAM policy against the requests really sent
// ---------------------------------------------------------------------------------------------

/// Records every `(service, operation)` the backend sends.
fn recorder(sent: &Arc<Mutex<BTreeSet<(String, String)>>>) -> RequestObserver {
    let sent = sent.clone();
    RequestObserver::new(move |service, operation| {
        sent.lock()
            .unwrap()
            .insert((service.to_owned(), operation.to_owned()));
    })
}

fn migration(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

fn policy_actions(name: &str) -> BTreeSet<String> {
    let policy = migration(name);
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().unwrap() {
        match &statement["Action"] {
            Value::String(a) => {
                actions.insert(a.clone());
            }
            Value::Array(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_owned()));
            }
            other => panic!("{name}: Action is {other}"),
        }
    }
    actions
}

/// The IAM actions an SDK operation needs, as the service sends it.
fn iam_actions(service: &str, operation: &str) -> Vec<String> {
    let s3 = |actions: &[&str]| actions.iter().map(|a| format!("s3:{a}")).collect();
    match (service.to_ascii_lowercase().as_str(), operation) {
        // Entries are PUT with an Object Lock mode and retain-until date.
        ("s3", "PutObject") => s3(&["PutObject", "PutObjectRetention"]),
        // With and without a version id.
        ("s3", "GetObject") => s3(&["GetObject", "GetObjectVersion"]),
        ("s3", "ListObjectsV2" | "HeadBucket") => s3(&["ListBucket"]),
        ("s3", "ListObjectVersions") => s3(&["ListBucketVersions"]),
        ("dynamodb", op) => vec![format!("dynamodb:{op}")],
        _ => panic!(
            "the service sent {service} {operation}: map it to its IAM actions here and check \
             migrations/iam-runtime-policy.json grants them"
        ),
    }
}

fn assert_runtime_policy_allows(sent: &BTreeSet<(String, String)>) {
    let granted = policy_actions("iam-runtime-policy.json");
    for (service, operation) in sent {
        for action in iam_actions(service, operation) {
            assert!(
                granted.contains(&action),
                "the service sent {service} {operation}, which needs {action}; \
                 migrations/iam-runtime-policy.json does not grant it"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a. What appends leave in S3 and DynamoDB
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_over_http_leave_locked_objects_indexed_versions_and_a_head_that_verify() {
    const LEDGER: &str = "default";
    const SEQUENTIAL: usize = 4;
    const CONCURRENT: usize = 16;
    let settings = aws_support::fresh_settings().await;
    let sent = Arc::new(Mutex::new(BTreeSet::new()));
    let app = AwsApp::spawn(&settings, Some(recorder(&sent))).await;

    let mut appended = Vec::new();
    for i in 0..SEQUENTIAL {
        appended.push(app.api.append(LEDGER, &format!("one-by-one-{i}")).await);
    }
    appended.extend(
        join_all(
            app.api
                .append_concurrently(LEDGER, "concurrent", CONCURRENT, 1)
                .await,
        )
        .await,
    );
    let mut receipts: Vec<(Receipt, String)> = appended
        .iter()
        .map(|a| {
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
            (a.receipt(), a.id.clone())
        })
        .collect();
    receipts.sort_by_key(|(r, _)| r.seq);
    let n = receipts.len() as u64;
    assert_eq!(
        receipts.iter().map(|(r, _)| r.seq).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "one seq per append, 1..=N"
    );
    assert_eq!(receipts[0].0.prev_hash, GENESIS_HEX);
    for pair in receipts.windows(2) {
        assert_eq!(pair[1].0.prev_hash, pair[0].0.entry_hash, "receipts chain");
    }

    let s3 = aws_support::s3_client().await;
    let ddb = aws_support::dynamodb_client().await;

    // N objects, each locked in COMPLIANCE mode until years from now, each one version.
    let now = unix_now();
    let mut versions = BTreeMap::new();
    for (receipt, _) in &receipts {
        let key = entry_key("", LEDGER, receipt.seq);
        assert_eq!(receipt.object_key, key);
        let head = s3
            .head_object()
            .bucket(&settings.bucket)
            .key(&key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("HeadObject {key}: {e:?}"));
        assert_eq!(
            head.object_lock_mode(),
            Some(&ObjectLockMode::Compliance),
            "{key}"
        );
        let until = head
            .object_lock_retain_until_date()
            .unwrap_or_else(|| panic!("{key} has no retain-until date"))
            .secs();
        assert!(
            until > now + SIX_YEARS_SECS,
            "{key} is retained until {until} only"
        );
        versions.insert(
            receipt.seq,
            head.version_id().expect("a version id").to_owned(),
        );
        assert_eq!(
            versions_of(&s3, &settings.bucket, &key).await,
            (1, 0),
            "{key}"
        );
    }
    let listed = s3
        .list_objects_v2()
        .bucket(&settings.bucket)
        .prefix(format!("{LEDGER}/entries/"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.contents().len() as u64, n, "exactly N entry objects");

    // N SEQ# items naming the object and the exact version HeadObject reports.
    let items = seq_items(&ddb, &settings.table, LEDGER).await;
    assert_eq!(
        items.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    for (receipt, _) in &receipts {
        let item = &items[&receipt.seq];
        assert_eq!(attr_s(item, "s3_key"), entry_key("", LEDGER, receipt.seq));
        assert_eq!(attr_s(item, "version_id"), versions[&receipt.seq]);
        assert_eq!(attr_s(item, "entry_hash"), receipt.entry_hash);
        assert_eq!(attr_s(item, "prev_hash"), receipt.prev_hash);
        assert!(item.contains_key("timestamp"));
    }

    // META: the head is entry N.
    let head = meta(&ddb, &settings.table, LEDGER).await;
    assert_eq!(attr_n(&head, "seq_counter"), n);
    assert_eq!(
        attr_s(&head, "last_hash"),
        receipts.last().unwrap().0.entry_hash
    );

    // Verification, export and reads agree.
    let report = app.api.verify(LEDGER).await;
    assert!(report.ok, "{:?}", report.failures);
    assert_eq!(report.verified, n);
    assert_eq!(report.head.seq, n);
    assert_eq!(report.head.last_hash, receipts.last().unwrap().0.entry_hash);

    let export = app.api.export(LEDGER).await;
    assert_eq!(export.len() as u64, n);
    for (line, (receipt, id)) in export.iter().zip(&receipts) {
        assert_eq!(line.seq, receipt.seq);
        assert_eq!(line.entry_hash, receipt.entry_hash);
        let stored = base64::engine::general_purpose::STANDARD
            .decode(line.stored.as_deref().expect("the stored bytes"))
            .unwrap();
        assert_eq!(Hash::of_entry(&stored).to_hex(), receipt.entry_hash);
        assert!(
            String::from_utf8_lossy(&stored).contains(id.as_str()),
            "seq {} holds event {id}",
            receipt.seq
        );
    }
    let records = app.api.all_records(LEDGER).await;
    assert_eq!(records.len() as u64, n);
    for (record, (receipt, id)) in records.iter().zip(&receipts) {
        assert_eq!(record.seq, receipt.seq);
        assert_eq!(record.entry_hash, receipt.entry_hash);
        assert_eq!(event_id(record), id);
    }
    let last = app.api.record(LEDGER, n).await;
    assert_eq!(last.entry_hash, receipts.last().unwrap().0.entry_hash);
    assert_eq!(app.api.get("/health").await.status(), StatusCode::OK);
    app.stop().await;

    // Every request of the whole session is one the runtime IAM policy allows.
    let sent = sent.lock().unwrap().clone();
    for expected in [
        "PutObject",
        "GetObject",
        "ListObjectVersions",
        "UpdateItem",
        "PutItem",
    ] {
        assert!(
            sent.iter().any(|(_, op)| op == expected),
            "the observer saw no {expected}: {sent:?}"
        );
    }
    assert_runtime_policy_allows(&sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_prefix_objects_live_there_and_seq_items_name_their_real_s3_keys() {
    const LEDGER: &str = "prefixed";
    let mut settings = aws_support::fresh_settings().await;
    settings.prefix = "audit/ledger/".into();
    let app = AwsApp::spawn(&settings, None).await;
    let receipts = [
        app.api.append_ok(LEDGER, "p-1").await,
        app.api.append_ok(LEDGER, "p-2").await,
    ];
    let report = app.api.verify(LEDGER).await;
    assert!(report.ok, "{:?}", report.failures);
    app.stop().await;

    let s3 = aws_support::s3_client().await;
    let ddb = aws_support::dynamodb_client().await;
    let items = seq_items(&ddb, &settings.table, LEDGER).await;
    for receipt in &receipts {
        let full_key = entry_key(&settings.prefix, LEDGER, receipt.seq);
        let head = s3
            .head_object()
            .bucket(&settings.bucket)
            .key(&full_key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("no object at {full_key}: {e:?}"));
        assert_eq!(head.object_lock_mode(), Some(&ObjectLockMode::Compliance));
        // The runbook's `s3_key` is what an auditor (migrations/iam-auditor-policy.json)
        // fetches with `version_id`: it must be the object's key in the bucket.
        let item = &items[&receipt.seq];
        assert_eq!(
            attr_s(item, "s3_key"),
            full_key,
            "SEQ# item {} must name the S3 key of its object",
            receipt.seq
        );
        assert_eq!(Some(attr_s(item, "version_id")), head.version_id());
    }
}

// ---------------------------------------------------------------------------------------------
// b. Tampering behind the service's back
// ---------------------------------------------------------------------------------------------

/// Appends three records to `ledger` one at a time (three batches, so only seq 3 is in
/// `META`'s pending batch and nothing is rolled forward over a tampered seq 2).
async fn three_records(api: &Api, ledger: &str) -> Vec<Receipt> {
    let mut receipts = Vec::new();
    for i in 1..=3 {
        receipts.push(api.append_ok(ledger, &format!("{ledger}-{i}")).await);
    }
    receipts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_s3_or_dynamodb_is_reported_at_its_seq_with_its_kind() {
    let settings = aws_support::fresh_settings().await;
    let (bucket, table) = (settings.bucket.clone(), settings.table.clone());
    let app = AwsApp::spawn(&settings, None).await;
    let s3 = aws_support::s3_client().await;
    let ddb = aws_support::dynamodb_client().await;

    let ledgers = [
        "untouched",
        "overwritten",
        "delete-marker",
        "entry-hash-edited",
        "prev-hash-edited",
        "seq-item-deleted",
        "meta-seq-lowered",
        "meta-hash-changed",
        "lock-expired",
        "tail-hidden",
    ];
    let mut receipts = HashMap::new();
    for ledger in ledgers {
        receipts.insert(ledger, three_records(&app.api, ledger).await);
    }
    let other_hash = receipts["untouched"][0].entry_hash.clone();

    // A new version over entry 2's key: a plain PUT, no If-None-Match (the lock protects
    // versions, not keys).
    s3.put_object()
        .bucket(&bucket)
        .key(entry_key("", "overwritten", 2))
        .body(ByteStream::from_static(b"{\"forged\":true}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions_of(&s3, &bucket, &entry_key("", "overwritten", 2)).await,
        (2, 0),
        "the locked version stays under the new one"
    );
    // A delete without a version id: a delete marker on top of entry 2.
    s3.delete_object()
        .bucket(&bucket)
        .key(entry_key("", "delete-marker", 2))
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions_of(&s3, &bucket, &entry_key("", "delete-marker", 2)).await,
        (1, 1),
        "the locked version stays under the marker"
    );
    // Entry 2's lock cut short to a date in the past (real S3 refuses this for COMPLIANCE;
    // the emulator allows it, which is what lets the check be tested).
    let past = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 86_400;
    s3.put_object_retention()
        .bucket(&bucket)
        .key(entry_key("", "lock-expired", 2))
        .bypass_governance_retention(true)
        .retention(
            aws_sdk_s3::types::ObjectLockRetention::builder()
                .mode(aws_sdk_s3::types::ObjectLockRetentionMode::Compliance)
                .retain_until_date(aws_sdk_s3::primitives::DateTime::from_secs(past))
                .build(),
        )
        .send()
        .await
        .unwrap();
    // The index's claims about entry 2.
    set_attribute(
        &ddb,
        &table,
        "entry-hash-edited",
        &seq_sort_key(2),
        "entry_hash",
        AttributeValue::S(other_hash.clone()),
    )
    .await;
    set_attribute(
        &ddb,
        &table,
        "prev-hash-edited",
        &seq_sort_key(2),
        "prev_hash",
        AttributeValue::S(other_hash.clone()),
    )
    .await;
    ddb.delete_item()
        .table_name(&table)
        .key("ledger_id", AttributeValue::S("seq-item-deleted".into()))
        .key("seq", AttributeValue::S(seq_sort_key(2)))
        .send()
        .await
        .unwrap();
    // The head.
    set_attribute(
        &ddb,
        &table,
        "meta-seq-lowered",
        "META",
        "seq_counter",
        AttributeValue::N("2".into()),
    )
    .await;
    set_attribute(
        &ddb,
        &table,
        "meta-hash-changed",
        "META",
        "last_hash",
        AttributeValue::S(other_hash.clone()),
    )
    .await;

    // The tail hidden as well as the index allows: a delete marker on entry 3, META turned
    // back to a consistent head at entry 2 with no pending batch, and SEQ# item 3 deleted.
    s3.delete_object()
        .bucket(&bucket)
        .key(entry_key("", "tail-hidden", 3))
        .send()
        .await
        .unwrap();
    ddb.update_item()
        .table_name(&table)
        .key("ledger_id", AttributeValue::S("tail-hidden".into()))
        .key("seq", AttributeValue::S("META".into()))
        .update_expression(
            "SET seq_counter = :two, last_hash = :h2 REMOVE pending_first_seq, pending_base, pending_records, pending_entries, pending_count, pending_object, pending_digest",
        )
        .expression_attribute_values(":two", AttributeValue::N("2".into()))
        .expression_attribute_values(
            ":h2",
            AttributeValue::S(receipts["tail-hidden"][1].entry_hash.clone()),
        )
        .send()
        .await
        .unwrap();
    ddb.delete_item()
        .table_name(&table)
        .key("ledger_id", AttributeValue::S("tail-hidden".into()))
        .key("seq", AttributeValue::S(seq_sort_key(3)))
        .send()
        .await
        .unwrap();

    let mut reports = HashMap::new();
    for ledger in ledgers {
        reports.insert(ledger, app.api.verify(ledger).await);
    }

    let kinds = |ledger: &str| reports[ledger].kinds();
    assert!(reports["untouched"].ok, "{:?}", kinds("untouched"));
    for (ledger, expected) in [
        ("overwritten", (2, "extra_version")),
        // Delete markers are counted with versions: the key no longer shows the entry.
        ("delete-marker", (2, "extra_version")),
        ("entry-hash-edited", (2, "hash_mismatch")),
        ("prev-hash-edited", (2, "index_mismatch")),
        ("seq-item-deleted", (2, "index_mismatch")),
        ("lock-expired", (2, "not_locked")),
    ] {
        assert_eq!(
            kinds(ledger),
            [expected],
            "{ledger}: {:?}",
            reports[ledger].failures
        );
    }
    // The stored chain goes on past the lowered head, whose hash is not entry 2's.
    let lowered = kinds("meta-seq-lowered");
    assert!(
        !lowered.is_empty() && lowered.iter().all(|f| *f == (2, "head_mismatch")),
        "a lowered seq_counter is a head mismatch at the head: {lowered:?}"
    );
    // Neither the last entry nor META's own pending batch ends at the changed hash.
    let changed = kinds("meta-hash-changed");
    assert!(
        !changed.is_empty() && changed.iter().all(|f| *f == (3, "head_mismatch")),
        "a changed last_hash is a head mismatch at the head: {changed:?}"
    );
    let hidden = kinds("tail-hidden");
    assert!(
        hidden.contains(&(2, "head_mismatch")) && hidden.contains(&(3, "missing_entry")),
        "an entry hidden past a turned-back head is walked and named: {hidden:?}"
    );
    for ledger in &ledgers[1..] {
        assert!(!reports[ledger].ok, "{ledger} verified ok after tampering");
    }

    // `ledger-verify` over the same bucket and table, without the service: the same verdicts.
    for ledger in ledgers {
        let run = ledger_verify(&settings, ledger, &[]).await;
        let found = failure_kinds(&run.report);
        let endpoint: Vec<(u64, String)> = kinds(ledger)
            .into_iter()
            .map(|(seq, kind)| (seq, kind.to_owned()))
            .collect();
        assert_eq!(found, endpoint, "{ledger}: CLI {}", run.report);
        assert_eq!(
            run.code,
            if ledger == "untouched" { 0 } else { 1 },
            "{ledger}"
        );
        assert_eq!(run.report["source"], "storage:aws");
    }
    // From S3 alone: the index's tampering is invisible (it is not read), S3's is not.
    for (ledger, expected) in [
        ("untouched", None),
        ("overwritten", Some((2, "extra_version"))),
        ("delete-marker", Some((2, "missing_entry"))),
        ("entry-hash-edited", None),
        ("prev-hash-edited", None),
        ("seq-item-deleted", None),
        ("meta-seq-lowered", None),
        ("meta-hash-changed", None),
        ("lock-expired", Some((2, "not_locked"))),
        ("tail-hidden", Some((3, "missing_entry"))),
    ] {
        let run = ledger_verify(&settings, ledger, &["--objects-only"]).await;
        let found = failure_kinds(&run.report);
        match expected {
            None => {
                assert_eq!(run.code, 0, "{ledger}: {}", run.report);
                assert_eq!(run.report["verified"], 3, "{ledger}");
            }
            Some((seq, kind)) => {
                assert_eq!(run.code, 1, "{ledger}: {}", run.report);
                assert!(found.contains(&(seq, kind.into())), "{ledger}: {found:?}");
            }
        }
    }
    // Entries locked in a mode other than the configured one are not locked as promised.
    let run = ledger_verify(
        &settings,
        "untouched",
        &["--s3-lock-mode", "GOVERNANCE", "--objects-only"],
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.report);
    assert_eq!(
        failure_kinds(&run.report),
        [1, 2, 3].map(|seq| (seq, "not_locked".to_owned()))
    );
    assert!(
        run.report["failures"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("locked in COMPLIANCE mode, not the configured GOVERNANCE"),
        "{}",
        run.report
    );

    // Reads pin the indexed version: the forged version and the delete marker are not served.
    for ledger in ["overwritten", "delete-marker"] {
        let original = &receipts[ledger][1];
        let record = app.api.record(ledger, 2).await;
        assert_eq!(record.entry_hash, original.entry_hash, "{ledger}");
        assert_eq!(event_id(&record), format!("{ledger}-2"));
        let export = app.api.export(ledger).await;
        assert_eq!(export[1].entry_hash, original.entry_hash);
        let stored = base64::engine::general_purpose::STANDARD
            .decode(export[1].stored.as_deref().expect("stored bytes"))
            .unwrap();
        assert_eq!(Hash::of_entry(&stored).to_hex(), original.entry_hash);
    }
    app.stop().await;
}

/// A head whose own claims contradict each other (`seq_counter` not the end of its pending
/// batch, `last_hash` not the hash of that batch's last entry) has been tampered with. A writer
/// must refuse to build on it: whatever it claimed on top would either never be writable (its
/// seqs already hold other bytes) or be chained to a forged hash, written into write-once
/// storage for good. It must answer `integrity_error` and write nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_refuses_to_build_on_a_tampered_head_and_writes_nothing() {
    let settings = aws_support::fresh_settings().await;
    let (bucket, table) = (settings.bucket.clone(), settings.table.clone());
    let ledgers = ["head-seq-lowered", "head-hash-changed"];
    let first = AwsApp::spawn(&settings, None).await;
    let mut receipts = HashMap::new();
    for ledger in ledgers {
        receipts.insert(ledger, three_records(&first.api, ledger).await);
    }
    first.stop().await;

    let ddb = aws_support::dynamodb_client().await;
    let s3 = aws_support::s3_client().await;
    set_attribute(
        &ddb,
        &table,
        "head-seq-lowered",
        "META",
        "seq_counter",
        AttributeValue::N("2".into()),
    )
    .await;
    let forged = receipts["head-seq-lowered"][0].entry_hash.clone();
    set_attribute(
        &ddb,
        &table,
        "head-hash-changed",
        "META",
        "last_hash",
        AttributeValue::S(forged),
    )
    .await;

    // A writer that has not seen these ledgers before (a restarted or another replica).
    let second = AwsApp::spawn(&settings, None).await;
    for ledger in ledgers {
        let head_before = meta(&ddb, &table, ledger).await;
        let appended = second.api.append(ledger, "on-a-tampered-head").await;
        assert_eq!(
            (appended.status, appended.body["error"]["code"].as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("integrity_error")),
            "{ledger}: an append on a tampered head was answered {} {}",
            appended.status,
            appended.body
        );
        assert_eq!(
            meta(&ddb, &table, ledger).await,
            head_before,
            "{ledger}: nothing was claimed"
        );
        let listed = s3
            .list_object_versions()
            .bucket(&bucket)
            .prefix(format!("{ledger}/entries/"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            listed.versions().len(),
            3,
            "{ledger}: nothing was written to S3"
        );
    }
    let integrity_errors = second
        .api
        .metrics()
        .await
        .sum("ledger_integrity_errors_total", &[]);
    assert!(integrity_errors >= 2.0, "counted: {integrity_errors}");
    second.stop().await;
}

// ---------------------------------------------------------------------------------------------
// c. Three replicas on one bucket and table
// ---------------------------------------------------------------------------------------------

impl Api {
    /// Appends `{"key": key}` with `Idempotency-Key: key`, retrying `503`s (bounded) as a
    /// client should; the final status and body.
    async fn append_keyed_until_answered(&self, ledger: &str, key: &str) -> (StatusCode, Value) {
        let mut last = Value::Null;
        for _ in 0..50 {
            let response = self
                .client
                .post(format!("{}/v1/ledgers/{ledger}/records", self.address))
                .header("Idempotency-Key", key)
                .json(&json!({"key": key}))
                .send()
                .await
                .unwrap_or_else(|e| panic!("append {key} is answered: {e}"));
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            if status != StatusCode::SERVICE_UNAVAILABLE {
                return (status, body);
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{key}: 50 answers of 503, the last {last}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_racing_on_the_same_keys_commit_each_key_once_and_answer_its_receipt() {
    const KEYS: usize = 10;
    const CLIENTS_PER_REPLICA: usize = 6;
    let settings = aws_support::fresh_settings().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(AwsApp::spawn(&settings, None).await);
    }
    let keys: Vec<String> = (0..KEYS).map(|k| format!("evt \"{k}\"")).collect();
    // Every client of every replica sends every key, each in its own order.
    let mut tasks = Vec::new();
    for replica in &replicas {
        for _ in 0..CLIENTS_PER_REPLICA {
            let api = replica.api.fresh();
            let mut order = keys.clone();
            fastrand::shuffle(&mut order);
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for key in order {
                    let (status, body) = api.append_keyed_until_answered("keyed", &key).await;
                    out.push((key, status, body));
                }
                out
            }));
        }
    }
    let mut answers: HashMap<String, Vec<(StatusCode, Value)>> = HashMap::new();
    for task in tasks {
        for (key, status, body) in task.await.unwrap() {
            answers.entry(key).or_default().push((status, body));
        }
    }
    let reader = &replicas[0].api;
    let records = reader.all_records("keyed").await;
    assert_eq!(records.len(), KEYS, "one entry per key");
    for (key, got) in &answers {
        let new = got.iter().filter(|(s, _)| *s != StatusCode::OK).count();
        assert_eq!(new, 1, "{key}: exactly one answer appended it: {got:?}");
        for (status, body) in got {
            assert!(
                [StatusCode::OK, StatusCode::CREATED, StatusCode::ACCEPTED].contains(status),
                "{key}: {status} {body}"
            );
            assert_eq!(body, &got[0].1, "{key}: every answer is the same receipt");
        }
        for replica in &replicas {
            let mut url =
                reqwest::Url::parse(&format!("{}/v1/ledgers/keyed/records", replica.api.address))
                    .unwrap();
            url.query_pairs_mut().append_pair("idempotency_key", key);
            let found: Value = replica
                .api
                .client
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_eq!(
                found["seq"], got[0].1["seq"],
                "{key}: the lookup finds it on every replica"
            );
            assert_eq!(found["idempotency_key"], key.as_str());
        }
    }
    let report = reader.verify("keyed").await;
    assert!(report.ok, "{:?}", report.failures);
    // DynamoDB holds one key item per key, in the ledger's partition.
    let ddb = aws_support::dynamodb_client().await;
    let items = partition(&ddb, &settings.table, "keyed").await;
    let key_items = items
        .iter()
        .filter(|i| attr_s(i, "seq").starts_with("IDEM#"))
        .count();
    assert_eq!(key_items, KEYS);
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_table_make_one_chain_per_ledger_and_contend_for_real() {
    const SHARED: &str = "shared";
    const OTHERS: [&str; 2] = ["second", "third"];
    const SHARED_CLIENTS: usize = 8;
    const SHARED_PER_CLIENT: usize = 5;
    const OTHER_CLIENTS: usize = 2;
    const OTHER_PER_CLIENT: usize = 4;
    let settings = aws_support::fresh_settings().await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(AwsApp::spawn(&settings, None).await);
    }

    // Every replica appends to all three ledgers at once: 8 clients per replica on the shared
    // ledger, 2 per replica on each of the others.
    let mut tasks = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        let tag = format!("r{r}");
        tasks.extend(
            replica
                .api
                .append_concurrently(SHARED, &tag, SHARED_CLIENTS, SHARED_PER_CLIENT)
                .await,
        );
        for ledger in OTHERS {
            tasks.extend(
                replica
                    .api
                    .append_concurrently(ledger, &tag, OTHER_CLIENTS, OTHER_PER_CLIENT)
                    .await,
            );
        }
    }
    let results = join_all(tasks).await;
    let refused: Vec<&Appended> = results.iter().filter(|a| !a.acked()).collect();
    for a in &refused {
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "a refused append is a 503 (contention or outcome unknown), never anything else: {}",
            a.body
        );
    }

    let s3 = aws_support::s3_client().await;
    let ddb = aws_support::dynamodb_client().await;
    let reader = &replicas[0].api;
    for ledger in std::iter::once(SHARED).chain(OTHERS) {
        let sent: BTreeSet<&str> = results
            .iter()
            .filter(|a| a.ledger == ledger)
            .map(|a| a.id.as_str())
            .collect();
        let acked: Vec<(Receipt, &str)> = results
            .iter()
            .filter(|a| a.ledger == ledger && a.acked())
            .map(|a| (a.receipt(), a.id.as_str()))
            .collect();
        assert!(!acked.is_empty(), "{ledger}: nothing was acknowledged");

        let report = reader.verify(ledger).await;
        assert!(report.ok, "{ledger}: {:?}", report.failures);
        let records = reader.all_records(ledger).await;
        let n = records.len() as u64;
        assert_eq!(report.head.seq, n, "{ledger}: head is the last record");
        // One linear chain: seqs 1..N, each linked to the one before.
        assert_eq!(
            records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=n).collect::<Vec<_>>(),
            "{ledger}: seqs are contiguous"
        );
        assert_eq!(records[0].prev_hash, GENESIS_HEX);
        for pair in records.windows(2) {
            assert_eq!(
                pair[1].prev_hash, pair[0].entry_hash,
                "{ledger}: fork or gap"
            );
        }
        // Each event at most once, and only events that were sent.
        let ids: Vec<&str> = records.iter().map(event_id).collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{ledger}: an event was committed twice"
        );
        assert!(unique.is_subset(&sent), "{ledger}: unknown events");
        // Every acknowledged record is there, with its acknowledged hash.
        for (receipt, id) in &acked {
            let record = &records[(receipt.seq - 1) as usize];
            assert_eq!(
                record.entry_hash, receipt.entry_hash,
                "{ledger} seq {}",
                receipt.seq
            );
            assert_eq!(event_id(record), *id, "{ledger} seq {}", receipt.seq);
        }
        // What S3 and DynamoDB hold agrees.
        assert_eq!(
            attr_n(&meta(&ddb, &settings.table, ledger).await, "seq_counter"),
            n
        );
        assert_eq!(
            seq_items(&ddb, &settings.table, ledger).await.len() as u64,
            n
        );
        let listed = s3
            .list_object_versions()
            .bucket(&settings.bucket)
            .prefix(format!("{ledger}/entries/"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            listed.versions().len() as u64,
            n,
            "{ledger}: one object version per seq"
        );
        eprintln!(
            "{ledger}: {} appends sent, {} acknowledged, {} refused, chain of {n}",
            sent.len(),
            acked.len(),
            sent.len() - acked.len()
        );
    }

    // Conflict retries: each replica counts the compare-and-sets it lost to another and
    // retried. Three writers claiming on one ledger from cached heads must collide; a total of
    // zero would mean they never really raced, and the chain checks above proved nothing about
    // concurrent writers.
    let mut conflicts = Vec::new();
    let mut roll_forwards = Vec::new();
    for replica in &replicas {
        let metrics = replica.api.metrics().await;
        conflicts.push(metrics.sum("ledger_commit_conflicts_total", &[]));
        roll_forwards.push(metrics.sum("ledger_roll_forwards_total", &[]));
    }
    eprintln!(
        "conflicts per replica: {conflicts:?}; roll-forwards of another's batch: {roll_forwards:?}"
    );
    assert!(
        conflicts.iter().sum::<f64>() > 0.0,
        "no replica ever lost a compare-and-set: the load did not contend"
    );
    for replica in replicas {
        replica.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// d. Requests per appended record
// ---------------------------------------------------------------------------------------------

/// Backend requests for `records` appended records, from the difference of two `/metrics`.
struct Figures {
    label: &'static str,
    records: f64,
    batches: f64,
    s3_puts: f64,
    s3_requests: f64,
    meta_updates: f64,
    seq_puts: f64,
    ddb_requests: f64,
    write_units: f64,
    retries: f64,
    conflicts: f64,
}

impl Figures {
    fn new(label: &'static str, records: usize, delta: &Metrics) -> Figures {
        Figures {
            label,
            records: records as f64,
            batches: delta.sum("ledger_batch_size_count", &[]),
            s3_puts: delta.requests(|op| op == "s3_put_object", &["ok", "conflict", "error"]),
            s3_requests: delta.requests(|op| op.starts_with("s3_"), &["ok", "conflict", "error"]),
            meta_updates: delta
                .requests(|op| op == "ddb_update_item", &["ok", "conflict", "error"]),
            seq_puts: delta.requests(|op| op == "ddb_put_item", &["ok"]),
            ddb_requests: delta.requests(|op| op.starts_with("ddb_"), &["ok", "conflict", "error"]),
            write_units: delta.sum("ledger_backend_write_units_total", &[]),
            // `+ 0.0`: an empty float sum is -0.0, which prints as "-0".
            retries: delta.requests(|_| true, &["retry"]) + 0.0,
            conflicts: delta.sum("ledger_commit_conflicts_total", &[]),
        }
    }

    fn print(&self) {
        let per = |x: f64| x / self.records;
        eprintln!(
            "{}: {} records in {} batches ({:.1} per META update): \
             S3 PUTs/record {:.3}, S3 requests/record {:.3}, META updates/record {:.3}, \
             DynamoDB requests/record {:.3}, write units/record {:.3} (SDK retries {}, CAS conflicts {})",
            self.label,
            self.records,
            self.batches,
            self.records / self.batches,
            per(self.s3_puts),
            per(self.s3_requests),
            per(self.meta_updates),
            per(self.ddb_requests),
            per(self.write_units),
            self.retries,
            self.conflicts,
        );
    }

    /// What the protocol fixes, whatever the speed: one PUT and one `SEQ#` item per record,
    /// plus one PUT per batch over the inline bound (its pending object), one `META` update
    /// per batch (one writer, so no lost compare-and-sets).
    fn assert_protocol(&self) {
        assert_eq!(
            self.conflicts, 0.0,
            "{}: one writer cannot conflict",
            self.label
        );
        if self.retries == 0.0 {
            assert!(
                self.s3_puts >= self.records && self.s3_puts <= self.records + self.batches,
                "{}: one S3 PUT per record and at most one per batch, not {}",
                self.label,
                self.s3_puts
            );
        } else {
            assert!(self.s3_puts >= self.records, "{}", self.label);
        }
        assert_eq!(
            self.seq_puts, self.records,
            "{}: one SEQ# item per record",
            self.label
        );
        assert_eq!(
            self.meta_updates, self.batches,
            "{}: one META update per batch",
            self.label
        );
        assert!(
            self.batches >= 1.0 && self.batches <= self.records,
            "{}",
            self.label
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_record_at_one_and_at_sixty_four_clients() {
    const SOLO: usize = 20;
    const CLIENTS: usize = 64;
    const PER_CLIENT: usize = 2;
    let settings = aws_support::fresh_settings().await;
    let app = AwsApp::spawn(&settings, None).await;
    // Create both ledgers first, so that creation is not counted.
    app.api.append_ok("solo", "warm-up").await;
    app.api.append_ok("crowd", "warm-up").await;

    let before = app.api.metrics().await;
    for i in 0..SOLO {
        app.api.append_ok("solo", &format!("solo-{i}")).await;
    }
    let middle = app.api.metrics().await;
    let crowd = join_all(
        app.api
            .append_concurrently("crowd", "crowd", CLIENTS, PER_CLIENT)
            .await,
    )
    .await;
    for a in &crowd {
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let after = app.api.metrics().await;
    let report = app.api.verify("crowd").await;
    assert!(report.ok, "{:?}", report.failures);
    app.stop().await;

    let one = Figures::new("1 client", SOLO, &middle.since(&before));
    let many = Figures::new("64 clients", CLIENTS * PER_CLIENT, &after.since(&middle));
    one.print();
    many.print();
    one.assert_protocol();
    many.assert_protocol();
    assert_eq!(
        one.batches, one.records,
        "a lone client's appends are batches of one"
    );
    assert!(
        many.batches < many.records,
        "64 concurrent clients share META updates (group commit)"
    );
}

/// Backend requests counted in `registry` (every op when `ddb` is false, DynamoDB's only
/// when it is true).
fn backend_requests(registry: &prometheus::Registry, ddb: bool) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|f| f.name() == "ledger_backend_requests_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| {
            !ddb || m
                .get_label()
                .iter()
                .any(|l| l.name() == "op" && l.value().starts_with("ddb_"))
        })
        .map(|m| m.get_counter().value())
        .sum()
}

/// Issue 20 on S3 + DynamoDB: a server starting over many ledgers reads none of them, and a
/// checkpoint round costs in proportion to the ledgers that moved. Measured with 200 ledgers
/// (the emulator takes ~25 ms a request; the code reads no ledger at startup, so the count
/// does not depend on how many there are; before, it was one `GetItem` per ledger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_reads_no_ledger_and_a_checkpoint_round_costs_in_proportion_to_moved_ledgers() {
    use eleanor_ledger::chain::checkpoint::Signer;
    use eleanor_ledger::chain::entry::{LedgerId, Record};
    use eleanor_ledger::ledger::{Ledger, LedgerMetrics, Options};
    use futures::StreamExt;

    const LEDGERS: usize = 200;
    const MOVED: usize = 10;
    let settings = aws_support::fresh_settings().await;
    let registry = prometheus::Registry::new();
    let stores =
        aws_support::connect_with(&settings, BackendMetrics::new(&registry).unwrap()).await;
    let writer = Ledger::new(
        stores,
        Options {
            signer: Some(Arc::new(Signer::from_seed(&[5; 32]))),
            checkpoint_interval: Duration::from_secs(300),
            ..Options::default()
        },
        LedgerMetrics::new(&registry).unwrap(),
    );
    let ids: Vec<LedgerId> = (0..LEDGERS)
        .map(|i| LedgerId::parse(&format!("many-{i:05}")).unwrap())
        .collect();
    let append_all = async |ids: &[LedgerId]| {
        futures::stream::iter(ids.iter().cloned().map(|id| {
            let writer = writer.clone();
            async move {
                let record = Record::parse(br#"{"event":"moved"}"#).unwrap();
                writer.append(&id, record).await.unwrap()
            }
        }))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
    };
    append_all(&ids).await;
    assert_eq!(
        writer.checkpoint_moved_ledgers().await.unwrap(),
        LEDGERS as u64
    );

    let before = backend_requests(&registry, false);
    assert_eq!(writer.checkpoint_moved_ledgers().await.unwrap(), 0);
    let idle_round = backend_requests(&registry, false) - before;
    append_all(&ids[..MOVED]).await;
    let before = backend_requests(&registry, false);
    assert_eq!(
        writer.checkpoint_moved_ledgers().await.unwrap(),
        MOVED as u64
    );
    let moved_round = backend_requests(&registry, false) - before;
    writer.shutdown().await;

    let app = AwsApp::spawn(&settings, None).await;
    let metrics = app.api.metrics().await;
    let startup_ddb = metrics.requests(|op| op.starts_with("ddb_"), &[]);
    let startup_all = metrics.requests(|_| true, &[]);
    app.stop().await;
    eprintln!(
        "{LEDGERS} ledgers: startup {startup_ddb} DynamoDB requests ({startup_all} in all); \
         a round with no moved ledger {idle_round} requests; with {MOVED} moved {moved_round}"
    );
    assert!(
        startup_ddb <= 10.0,
        "startup made {startup_ddb} DynamoDB requests"
    );
    assert_eq!(
        idle_round, 0.0,
        "a round with no moved ledger makes no request"
    );
    assert!(
        moved_round <= (MOVED * 6) as f64,
        "a round with {MOVED} moved ledgers of {LEDGERS} made {moved_round} requests"
    );
}

// ---------------------------------------------------------------------------------------------
// e. ledger-init, as the runbook runs it
// ---------------------------------------------------------------------------------------------

struct InitRun {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the built `ledger-init` with the runbook's environment for `table` and `bucket`.
async fn ledger_init(table: &str, bucket: &str, flags: &[&str]) -> InitRun {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ledger-init"))
        .args(flags)
        .env_clear()
        .env("ELEANOR_LEDGER_BACKEND", "aws")
        .env("ELEANOR_LEDGER_DDB_TABLE", table)
        .env("ELEANOR_LEDGER_DDB_REGION", aws_support::REGION)
        .env("ELEANOR_LEDGER_DDB_LEDGER_ID", "default")
        .env("ELEANOR_LEDGER_S3_BUCKET", bucket)
        .env("ELEANOR_LEDGER_AWS_ENDPOINT_URL", aws_support::endpoint())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("ledger-init finishes within 120 s")
        .expect("ledger-init runs");
    InitRun {
        code: output
            .status
            .code()
            .expect("ledger-init exited, not killed"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A table's key schema, attribute definitions and billing mode, as DescribeTable reports
/// them, in the shape of `migrations/ledger-index-table.json` (without the name).
async fn table_definition(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Value {
    let described = ddb.describe_table().table_name(table).send().await.unwrap();
    let table = described.table().expect("a table description");
    let billing = table
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map(|m| m.as_str().to_owned());
    json!({
        "AttributeDefinitions": table.attribute_definitions().iter().map(|a| json!({
            "AttributeName": a.attribute_name(),
            "AttributeType": a.attribute_type().as_str(),
        })).collect::<Vec<_>>(),
        "KeySchema": table.key_schema().iter().map(|k| json!({
            "AttributeName": k.attribute_name(),
            "KeyType": k.key_type().as_str(),
        })).collect::<Vec<_>>(),
        "BillingMode": billing,
    })
}

/// `migrations/ledger-index-table.json` without its table name.
fn migrations_table_definition() -> Value {
    let mut definition = migration("ledger-index-table.json");
    definition.as_object_mut().unwrap().remove("TableName");
    definition
}

/// A bucket with Object Lock, made with the service's own provisioning call.
async fn lock_bucket() -> String {
    let settings = aws_support::unique_settings();
    AwsAdmin::connect(&settings, BackendMetrics::unregistered())
        .await
        .unwrap()
        .create_bucket()
        .await
        .unwrap();
    settings.bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_init_creates_the_table_and_meta_once_then_changes_nothing() {
    let ddb = aws_support::dynamodb_client().await;
    let bucket = lock_bucket().await;
    let table = aws_support::unique_name();

    let first = ledger_init(&table, &bucket, &["--wait", "--init-meta"]).await;
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    assert!(
        first.stdout.contains(&format!("table {table}: created")),
        "{}",
        first.stdout
    );
    assert!(
        first
            .stdout
            .contains(&format!("bucket {bucket}: Object Lock enabled"))
    );
    assert!(
        first.stdout.contains("done: changes made"),
        "{}",
        first.stdout
    );

    // The runbook's check: get-item --key {"ledger_id":{"S":"default"},"seq":{"S":"META"}}.
    let meta_item = meta(&ddb, &table, "default").await;
    assert_eq!(attr_n(&meta_item, "seq_counter"), 0);
    assert_eq!(attr_s(&meta_item, "last_hash"), GENESIS_HEX);
    // The table is the one migrations/ledger-index-table.json describes.
    assert_eq!(
        table_definition(&ddb, &table).await,
        migrations_table_definition(),
        "ledger-init's table differs from migrations/ledger-index-table.json"
    );
    let created_at = table_created_at(&ddb, &table).await;

    let second = ledger_init(&table, &bucket, &["--wait", "--init-meta"]).await;
    assert_eq!(second.code, 0, "{}{}", second.stdout, second.stderr);
    assert!(
        second.stdout.contains("done: nothing to change"),
        "{}",
        second.stdout
    );
    assert!(second.stdout.contains("already"), "{}", second.stdout);
    assert_eq!(
        meta(&ddb, &table, "default").await,
        meta_item,
        "META unchanged"
    );
    let recreated_at = table_created_at(&ddb, &table).await;
    assert_eq!(recreated_at, created_at, "the table was not recreated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_init_refuses_a_bucket_without_object_lock_and_can_create_one() {
    let s3 = aws_support::s3_client().await;
    let table = aws_support::unique_name();

    // A plain bucket, as someone might create by hand.
    let plain = aws_support::unique_name();
    s3.create_bucket().bucket(&plain).send().await.unwrap();
    let refused = ledger_init(&table, &plain, &["--wait", "--init-meta"]).await;
    assert_eq!(refused.code, 3, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains(&plain) && refused.stderr.contains("Object Lock"),
        "the message names the bucket and what to fix: {}",
        refused.stderr
    );

    // --create-bucket (development) makes one with Object Lock.
    let created = aws_support::unique_name();
    let run = ledger_init(
        &table,
        &created,
        &["--wait", "--init-meta", "--create-bucket"],
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("bucket {created}: created with Object Lock")),
        "{}",
        run.stdout
    );
    let lock = s3
        .get_object_lock_configuration()
        .bucket(&created)
        .send()
        .await
        .unwrap();
    assert_eq!(
        lock.object_lock_configuration()
            .and_then(|c| c.object_lock_enabled()),
        Some(&ObjectLockEnabled::Enabled)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrations_table_and_bucket_configuration_are_what_ledger_init_accepts() {
    let s3 = aws_support::s3_client().await;
    let ddb = aws_support::dynamodb_client().await;

    // The table as `aws dynamodb create-table --cli-input-json file://...` makes it (under a
    // unique name).
    let definition = migration("ledger-index-table.json");
    let table = aws_support::unique_name();
    let mut create = ddb.create_table().table_name(&table);
    for a in definition["AttributeDefinitions"].as_array().unwrap() {
        create = create.attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().unwrap())
                .attribute_type(a["AttributeType"].as_str().unwrap().into())
                .build()
                .unwrap(),
        );
    }
    for k in definition["KeySchema"].as_array().unwrap() {
        create = create.key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().unwrap())
                .key_type(k["KeyType"].as_str().unwrap().into())
                .build()
                .unwrap(),
        );
    }
    create
        .billing_mode(definition["BillingMode"].as_str().unwrap().into())
        .send()
        .await
        .unwrap();

    // The bucket: created with Object Lock, then the migrations' configuration applied.
    let bucket = aws_support::unique_name();
    s3.create_bucket()
        .bucket(&bucket)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap();
    let lock = migration("bucket-object-lock.json");
    s3.put_object_lock_configuration()
        .bucket(&bucket)
        .object_lock_configuration(
            aws_sdk_s3::types::ObjectLockConfiguration::builder()
                .object_lock_enabled(lock["ObjectLockEnabled"].as_str().unwrap().into())
                .build(),
        )
        .send()
        .await
        .unwrap();

    let run = ledger_init(&table, &bucket, &["--wait", "--init-meta"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("table {table}: already exists")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("table {table}: ACTIVE")),
        "{}",
        run.stdout
    );
    assert_eq!(
        table_definition(&ddb, &table).await,
        migrations_table_definition()
    );

    // And the service runs on them.
    let mut settings = AwsSettings::new(bucket, table, aws_support::REGION);
    settings.endpoint_url = Some(aws_support::endpoint());
    let app = AwsApp::spawn(&settings, None).await;
    let receipt = app.api.append_ok("default", "on-migrations").await;
    assert_eq!(receipt.seq, 1);
    assert!(app.api.verify("default").await.ok);
    app.stop().await;
}

/// When DynamoDB says the table was created.
async fn table_created_at(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Option<aws_sdk_dynamodb::primitives::DateTime> {
    ddb.describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .table()
        .and_then(|t| t.creation_date_time().cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_verify_exits_3_when_storage_is_unreachable() {
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for extra in [&[][..], &["--objects-only"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-verify"))
            .args(["--ledger", "any", "--backend", "aws", "--s3-bucket", "b"])
            .args(["--ddb-table", "t", "--ddb-region", aws_support::REGION])
            .args(["--aws-endpoint-url", &format!("http://127.0.0.1:{port}")])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{extra:?}: {stderr}");
        assert!(!stderr.trim().is_empty(), "the reason is printed");
    }
}

/// On aws without ELEANOR_LEDGER_SIGNING_KEY_FILE nothing is signed, and `/health` says so in
/// a check line while staying healthy (the startup warning is the other half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_signing_key_health_shows_signing_off_and_receipts_are_unsigned() {
    let settings = aws_support::fresh_settings().await;
    let app = AwsApp::spawn(&settings, None).await;
    let health = app.api.get("/health").await;
    assert_eq!(health.status(), StatusCode::OK);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["checks"]["signing"], "off", "{health}");
    let appended = app.api.append("unsigned", "u-1").await;
    assert_eq!(appended.status, StatusCode::CREATED, "{}", appended.body);
    assert!(appended.body.get("receipt").is_none(), "{}", appended.body);
    app.stop().await;
}
