//! `ledger-verify --metrics-file`: the verdict lands in a node-exporter textfile-collector file
//! that the verification alerts read (k8s/monitoring/prometheus-rules.yaml), written after a
//! pass and after a failure, and left alone when the tool could not verify at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use eleanor_ledger::chain::entry::{LedgerId, Record};
use eleanor_ledger::ledger::{Ledger, LedgerMetrics, Options};
use eleanor_ledger::store::BackendMetrics;
use eleanor_ledger::store::local::{DB_FILE, LocalStore};

const LEDGER: &str = "textfile";

async fn a_ledger_of_three_entries(dir: &Path) {
    let stores = LocalStore::open(dir, BackendMetrics::unregistered())
        .unwrap()
        .into_stores();
    let ledger = Ledger::new(
        stores,
        Options::default(),
        LedgerMetrics::new(&prometheus::Registry::new()).unwrap(),
    );
    let id = LedgerId::parse(LEDGER).unwrap();
    for n in 0..3 {
        let record = Record::parse(format!(r#"{{"n":{n}}}"#).as_bytes()).unwrap();
        ledger.append(&id, record).await.unwrap();
    }
    ledger.shutdown().await;
    drop(ledger);
}

fn verify(data: &Path, metrics_file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-verify"))
        .args(["--data-dir", data.to_str().unwrap(), "--ledger", LEDGER])
        .arg("--metrics-file")
        .arg(metrics_file)
        .env_remove("ELEANOR_LEDGER_BACKEND")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn gauge(text: &str, name: &str) -> f64 {
    let prefix = format!(r#"{name}{{ledger_id="{LEDGER}",verifier="ledger-verify"}} "#);
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_is_written_for_the_textfile_collector_and_kept_when_no_verdict_is_reached() {
    let data = tempfile::tempdir().unwrap();
    a_ledger_of_three_entries(data.path()).await;
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("ledger-verify-textfile.prom");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as f64;
    let (code, stderr) = verify(data.path(), &file);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(gauge(&text, "ledger_verify_failing_ledgers"), 0.0);
    assert!(gauge(&text, "ledger_verify_last_timestamp_seconds") >= before);
    assert!(text.contains("# TYPE ledger_verify_failing_ledgers gauge"));

    // Tamper with one stored entry: the verdict is a failure, and the file says so.
    let db = data.path().join(DB_FILE);
    let mut bytes = std::fs::read(&db).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == br#""n":1}"#)
        .expect("the entry's record is in the file");
    bytes[at + 4] = b'7';
    std::fs::write(&db, &bytes).unwrap();
    let (code, stderr) = verify(data.path(), &file);
    assert_eq!(code, 1, "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(gauge(&text, "ledger_verify_failing_ledgers"), 1.0);

    // No verdict (the store cannot be opened): the last result stays.
    let (code, _) = verify(&data.path().join("no-such-dir"), &file);
    assert!(code >= 2, "no verdict: exit {code}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let names: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
}
