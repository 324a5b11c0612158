//! `kill -9` under load (embedded backend): the real `ledger-server` binary, 32 concurrent
//! appenders that retry after connection errors, SIGKILL at random moments, restart over the
//! same data directory. At the end every acknowledged record must be present with the hash it
//! was acknowledged with, seqs contiguous, and verification ok.
//!
//! Bounded: `KILLS` kills (default 20; `ELEANOR_LEDGER_KILLS=100` for the documented longer
//! run), each after at most 400 ms of load. Loopback only. A second test does the same with 5
//! kills against the S3/DynamoDB emulator. The keyed runs retry every append with its
//! `Idempotency-Key` (single appends, and batch appends of [`BATCH`] records): then no event
//! may be stored twice, and a batch is stored whole at consecutive seqs or not at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/aws.rs"]
mod aws_support;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const APPENDERS: usize = 32;
const LEDGER: &str = "kill9";
/// Records per batch append in [`Mode::KeyedBatch`].
const BATCH: usize = 4;

/// How the appenders append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One record per request, retried without a key (at least once).
    Plain,
    /// One record per request, retried with its key (exactly once).
    Keyed,
    /// [`BATCH`] records per `records:batch` request, each with its key, retried whole.
    KeyedBatch,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the server on `storage` (its storage flags) and waits until it says it is serving.
fn start(storage: &[String], port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-server"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(storage)
        .env("ELEANOR_LEDGER_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ledger-server");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "ledger-server did not start within 30 s"
        );
        match lines.next() {
            Some(Ok(line)) if line.contains("\"serving\"") => break,
            Some(Ok(_)) => continue,
            _ => panic!("ledger-server exited during startup: {:?}", child.wait()),
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[derive(Debug, Clone)]
struct Ack {
    seq: u64,
    entry_hash: String,
    event: String,
}

async fn appender(
    client: reqwest::Client,
    base: String,
    id: usize,
    mode: Mode,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    retries: Arc<AtomicU64>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let events: Vec<String> = match mode {
            Mode::KeyedBatch => (0..BATCH).map(|i| format!("{id}-{n}-{i}")).collect(),
            Mode::Plain | Mode::Keyed => vec![format!("{id}-{n}")],
        };
        let body = |event: &str| json!({"event": event, "pad": "x".repeat(200)});
        let request = match mode {
            Mode::KeyedBatch => {
                let lines: Vec<String> = events
                    .iter()
                    .map(|e| json!({"record": body(e), "idempotency_key": e}).to_string())
                    .collect();
                client
                    .post(format!("{base}/v1/ledgers/{LEDGER}/records:batch"))
                    .header("content-type", "application/x-ndjson")
                    .body(lines.join("\n"))
            }
            Mode::Keyed => client
                .post(format!("{base}/v1/ledgers/{LEDGER}/records"))
                .header("idempotency-key", &events[0])
                .json(&body(&events[0])),
            Mode::Plain => client
                .post(format!("{base}/v1/ledgers/{LEDGER}/records"))
                .json(&body(&events[0])),
        };
        // Retry the same request until it is acknowledged, as a real client does.
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let request = request.try_clone().expect("a body in memory clones");
            match request.send().await {
                Ok(resp) if [200, 201, 202].contains(&resp.status().as_u16()) => {
                    let answer: Value = resp.json().await.unwrap();
                    let receipts = match mode {
                        Mode::KeyedBatch => answer["receipts"].as_array().unwrap().clone(),
                        Mode::Plain | Mode::Keyed => vec![answer],
                    };
                    let mut acks = acks.lock().unwrap();
                    for (receipt, event) in receipts.iter().zip(&events) {
                        acks.push(Ack {
                            seq: receipt["seq"].as_u64().unwrap(),
                            entry_hash: receipt["entry_hash"].as_str().unwrap().to_owned(),
                            event: event.clone(),
                        });
                    }
                    break;
                }
                Ok(resp) if resp.status().is_server_error() => {}
                Ok(resp) => panic!("unexpected status {} for a valid append", resp.status()),
                Err(_) => {}
            }
            retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_repeated_kill_9_under_load() {
    let kills: usize = std::env::var("ELEANOR_LEDGER_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let storage = vec!["--data-dir".to_owned(), dir.path().display().to_string()];
    kill_loop(&storage, kills, APPENDERS, Mode::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_retried_with_their_keys_through_kill_9_are_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = vec!["--data-dir".to_owned(), dir.path().display().to_string()];
    kill_loop(&storage, 10, APPENDERS, Mode::Keyed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_appends_through_kill_9_are_stored_whole_once_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let storage = vec!["--data-dir".to_owned(), dir.path().display().to_string()];
    kill_loop(&storage, 10, APPENDERS / 2, Mode::KeyedBatch).await;
}

/// The same against the S3/DynamoDB emulator, with fewer kills and appenders (moto is slow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_9_on_the_emulator() {
    kill_loop(&emulator_storage().await, 5, 8, Mode::Plain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_appends_and_batches_through_kill_9_are_stored_exactly_once_on_the_emulator() {
    kill_loop(&emulator_storage().await, 4, 6, Mode::Keyed).await;
    kill_loop(&emulator_storage().await, 4, 4, Mode::KeyedBatch).await;
}

/// Storage flags for a fresh bucket and table on the emulator.
async fn emulator_storage() -> Vec<String> {
    let settings = aws_support::fresh_settings().await;
    aws_support::storage_flags(&settings, &aws_support::endpoint())
}

async fn kill_loop(storage: &[String], kills: usize, appenders: usize, mode: Mode) {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let mut server = start(storage, port);
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..appenders)
        .map(|id| {
            tokio::spawn(appender(
                client.clone(),
                base.clone(),
                id,
                mode,
                stop.clone(),
                acks.clone(),
                retries.clone(),
            ))
        })
        .collect();

    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..400))).await;
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        server = start(storage, port);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    server.kill().unwrap();
    server.wait().unwrap();

    // One clean start, then check everything from the outside.
    let mut server = start(storage, port);
    let acks = acks.lock().unwrap().clone();
    assert!(
        acks.len() > kills,
        "the load produced too few appends to mean anything: {}",
        acks.len()
    );
    let report: Value = client
        .get(format!("{base}/v1/ledgers/{LEDGER}/verify"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["ok"], true, "verification failed: {report}");
    let head = report["head"]["seq"].as_u64().unwrap();
    assert_eq!(report["verified"].as_u64().unwrap(), head, "gaps: {report}");

    let mut stored = std::collections::HashMap::new();
    let mut after = 0;
    loop {
        let page: Value = client
            .get(format!(
                "{base}/v1/ledgers/{LEDGER}/records?after={after}&limit=1000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for r in page["records"].as_array().unwrap() {
            let seq = r["seq"].as_u64().unwrap();
            assert_eq!(seq, after + 1, "seqs are not contiguous");
            after = seq;
            stored.insert(
                seq,
                (
                    r["entry_hash"].as_str().unwrap().to_owned(),
                    r["record"]["event"].as_str().unwrap().to_owned(),
                ),
            );
        }
        if page["next_after"].is_null() {
            break;
        }
    }
    assert_eq!(after, head, "the records end before the head");
    if mode != Mode::Plain {
        // Retried with keys: no event twice, whatever was killed when.
        let mut seen = std::collections::HashMap::new();
        for (seq, (_, event)) in &stored {
            if let Some(first) = seen.insert(event.clone(), *seq) {
                panic!("{event} is stored twice, at seqs {first} and {seq}");
            }
        }
    }
    if mode == Mode::KeyedBatch {
        // Each batch whole, in order, at consecutive seqs, or not at all.
        for (seq, (_, event)) in &stored {
            let Some(prefix) = event.strip_suffix("-0") else {
                continue;
            };
            for i in 1..BATCH as u64 {
                let next = stored.get(&(seq + i)).map(|(_, e)| e.as_str());
                assert_eq!(
                    next,
                    Some(format!("{prefix}-{i}").as_str()),
                    "batch {prefix} at seq {seq}"
                );
            }
        }
        assert_eq!(stored.len() % BATCH, 0, "a batch stored in part");
    }
    let mut lost = 0;
    for ack in &acks {
        match stored.get(&ack.seq) {
            Some((hash, event)) if *hash == ack.entry_hash && *event == ack.event => {}
            other => {
                lost += 1;
                eprintln!("acknowledged {ack:?} but found {other:?}");
            }
        }
    }
    server.kill().unwrap();
    server.wait().unwrap();
    eprintln!(
        "kill -9 x{kills} ({mode:?}): {} acknowledged, {head} stored, {} client retries, {lost} lost",
        acks.len(),
        retries.load(Ordering::Relaxed)
    );
    assert_eq!(lost, 0, "acknowledged records were lost");
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = vec!["--data-dir".to_owned(), dir.path().display().to_string()];
    let mut first = start(&storage, free_port());
    let before = std::fs::read(dir.path().join("ledger.redb")).unwrap();
    let second = Command::new(env!("CARGO_BIN_EXE_ledger-server"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(&storage)
        .output()
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(
        second.status.code(),
        Some(2),
        "exit code 2: a configuration the operator must fix"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another ledger process"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("ledger.redb")).unwrap(),
        before,
        "the refused server wrote to the store"
    );
}
