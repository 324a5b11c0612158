//! Signed checkpoints, public keys and signed receipts over HTTP; the export carries the
//! latest checkpoint and verifies offline with `ledger-verify --bundle` and with
//! `scripts/verify_chain.py` (signatures checked with the `cryptography` package, installed
//! into a venv when the system Python lacks it; if that fails the test fails, never skips).

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use clap::Parser;
use eleanor_ledger::chain::checkpoint::Signer;
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{Api, TestApp, spawn_app_in};

/// The app over `dir` (which the test may also use for files of its own), signing with `key`.
async fn start(dir: TempDir, key: Option<&Path>, extra: &[&str]) -> TestApp {
    let key = key.map(|k| k.display().to_string());
    let mut args: Vec<&str> = Vec::new();
    if let Some(key) = &key {
        args.extend(["--signing-key-file", key]);
    }
    args.extend_from_slice(extra);
    spawn_app_in(dir, &args).await
}

/// `POST path` with `body` as JSON (or no body): the status and the JSON answer.
async fn post(api: &Api, path: &str, body: Option<&str>) -> (StatusCode, Value) {
    let mut req = api.client.post(api.url(path));
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// `GET path`: the status and the body's text.
async fn get_text(api: &Api, path: &str) -> (StatusCode, String) {
    let resp = api.get(path).await;
    (resp.status(), resp.text().await.unwrap())
}

fn key_file(dir: &Path) -> (PathBuf, Signer) {
    let path = dir.join("signing.key");
    let public = eleanor_ledger::keyfile::write_new_key(&path).unwrap();
    let signer = eleanor_ledger::keyfile::load_signing_key(&path).expect("its own key loads");
    assert_eq!(signer.public_key(), &public);
    (path, signer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_stored_once_per_seq_and_served_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, signer) = key_file(dir.path());
    let app = start(dir, Some(&key), &["--checkpoint-interval", "0"]).await;

    let (status, body) = post(&app, "/v1/ledgers/cp/checkpoints", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = get_text(&app, "/v1/ledgers/cp/checkpoints/latest").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for n in 1..=3 {
        let (status, receipt) = post(
            &app,
            "/v1/ledgers/cp/records",
            Some(&format!(r#"{{"n":{n}}}"#)),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(receipt["receipt"]["key_id"], signer.key_id().to_string());
        assert_eq!(receipt["receipt"]["signature"].as_str().unwrap().len(), 128);
    }
    let (status, latest) = get_text(&app, "/v1/ledgers/cp/checkpoints/latest").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{latest}");
    assert!(latest.contains("checkpoint_not_found"), "{latest}");

    let (status, first) = post(&app, "/v1/ledgers/cp/checkpoints", None).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["seq"], 3);
    let (status, again) = post(&app, "/v1/ledgers/cp/checkpoints", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the head has not moved: the same one"
    );
    assert_eq!(again, first);
    let (status, latest) = get_text(&app, "/v1/ledgers/cp/checkpoints/latest").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&latest).unwrap(), first);
    let cp = eleanor_ledger::chain::checkpoint::Checkpoint::from_json(latest.as_bytes()).unwrap();
    cp.verify(signer.public_key()).unwrap();

    let (status, keys) = get_text(&app, "/v1/keys").await;
    assert_eq!(status, StatusCode::OK);
    let keys: Value = serde_json::from_str(&keys).unwrap();
    assert_eq!(keys["keys"][0]["public_key"], signer.public_key().to_hex());
    assert_eq!(keys["keys"][0]["key_id"], signer.key_id().to_string());

    let (_, report) = get_text(&app, "/v1/ledgers/cp/verify").await;
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["checkpoints_checked"], 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_key_the_embedded_backend_signs_with_its_own_key() {
    let app = start(
        tempfile::tempdir().unwrap(),
        None,
        &["--checkpoint-interval", "0"],
    )
    .await;
    let signer =
        eleanor_ledger::keyfile::load_signing_key(&app.data_dir.path().join("signing.key"))
            .expect("the server created its key in the data dir");
    let (status, receipt) = post(&app, "/v1/ledgers/k/records", Some("{}")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(receipt["receipt"]["signature"].is_string(), "{receipt}");
    assert_eq!(
        receipt["receipt"]["key_id"],
        signer.key_id().to_string(),
        "{receipt}"
    );
    let (status, checkpoint) = post(&app, "/v1/ledgers/k/checkpoints", None).await;
    assert_eq!(status, StatusCode::CREATED, "{checkpoint}");
    let (_, keys) = get_text(&app, "/v1/keys").await;
    let keys: Value = serde_json::from_str(&keys).unwrap();
    assert_eq!(keys["keys"][0]["public_key"], signer.public_key().to_hex());
    let health: Value = app.health().await.json().await.unwrap();
    assert_eq!(health["checks"]["signing"], "ok", "{health}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_signing_off_checkpoints_answer_409_signing_disabled_and_receipts_are_unsigned() {
    let app = start(tempfile::tempdir().unwrap(), None, &["--signing", "off"]).await;
    let health: Value = app.health().await.json().await.unwrap();
    assert_eq!(health["status"], "ok", "signing off is a warning: {health}");
    assert_eq!(health["checks"]["signing"], "off", "{health}");
    let (status, receipt) = post(&app, "/v1/ledgers/k/records", Some("{}")).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(receipt.get("receipt").is_none(), "{receipt}");
    let (status, body) = post(&app, "/v1/ledgers/k/checkpoints", None).await;
    // A permanent state of the server's configuration: a 4xx without Retry-After, not a 503.
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "signing_disabled");
    let (status, keys) = get_text(&app, "/v1/keys").await;
    assert_eq!((status, keys.as_str()), (StatusCode::OK, r#"{"keys":[]}"#));
    app.stop().await;
}

#[test]
fn a_key_file_readable_by_others_is_refused_and_gen_key_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_file(dir.path());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = eleanor_ledger::keyfile::load_signing_key(&key).unwrap_err();
    assert!(err.0.contains("0644") && err.0.contains("0600"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-init"))
        .args(["--gen-key", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwritten"));
    let fresh = dir.path().join("new.key");
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-init"))
        .args(["--gen-key", fresh.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("key_id "));
    // The server refuses a readable key at startup, in one sentence naming it.
    let args = eleanor_ledger::config::ServerArgs::try_parse_from([
        "ledger-server",
        "--signing-key-file",
        key.to_str().unwrap(),
    ])
    .unwrap();
    let err = args.into_config().unwrap_err();
    assert!(
        err.0.starts_with("ELEANOR_LEDGER_SIGNING_KEY_FILE"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_checkpoints_follow_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_file(dir.path());
    let app = start(dir, Some(&key), &["--checkpoint-interval", "1"]).await;
    post(&app, "/v1/ledgers/tick/records", Some("{}")).await;
    let mut seen = None;
    for _ in 0..50 {
        let (status, body) = get_text(&app, "/v1/ledgers/tick/checkpoints/latest").await;
        if status == StatusCode::OK {
            seen = Some(serde_json::from_str::<Value>(&body).unwrap());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen.expect("a checkpoint within 5 s")["seq"], 1);
    app.stop().await;
}

/// A Python with the `cryptography` package: the system one if it has it, else a venv under
/// the cache directory with it installed. Panics (never skips) if neither works.
fn python_with_cryptography() -> PathBuf {
    let has = |python: &Path| {
        Command::new(python)
            .args(["-c", "import cryptography"])
            .status()
            .is_ok_and(|s| s.success())
    };
    let system = PathBuf::from("python3");
    if has(&system) {
        return system;
    }
    let cache = std::env::var_os("ELEANOR_LEDGER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/eleanor-ledger")
        });
    let venv = cache.join("venv-verify");
    let python = venv.join("bin/python");
    if !has(&python) {
        let made = Command::new("python3")
            .args(["-m", "venv", venv.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
        let installed = made
            && Command::new(venv.join("bin/pip"))
                .args([
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "cryptography",
                ])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            installed && has(&python),
            "the checkpoint-signature check of scripts/verify_chain.py needs the `cryptography` package and it could not be installed into {}",
            venv.display()
        );
    }
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_carries_its_checkpoint_and_verifies_offline_in_rust_and_python() {
    let dir = tempfile::tempdir().unwrap();
    let (key, signer) = key_file(dir.path());
    let app = start(dir, Some(&key), &["--checkpoint-interval", "0"]).await;
    let mut receipt = Value::Null;
    for n in 1..=20 {
        let (_, r) = post(
            &app,
            "/v1/ledgers/ex/records",
            Some(&format!(r#"{{"n":{n}}}"#)),
        )
        .await;
        if n == 12 {
            receipt = r;
        }
    }
    let (status, _) = post(&app, "/v1/ledgers/ex/checkpoints", None).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, export) = get_text(&app, "/v1/ledgers/ex/export").await;
    assert_eq!(status, StatusCode::OK);
    let first: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(first["checkpoint"]["seq"], 20, "the first line: {first}");
    // A range below the checkpoint leaves it out: five entry lines and the end line.
    let (_, short) = get_text(&app, "/v1/ledgers/ex/export?to=5").await;
    assert_eq!(short.lines().count(), 6);
    assert!(
        short.lines().last().unwrap().starts_with(r#"{"end":"#),
        "{short}"
    );
    let dir = app.stop().await;

    let bundle = dir.path().join("ex.jsonl");
    std::fs::write(&bundle, &export).unwrap();
    let public = signer.public_key().to_hex();
    let verify = |bundle: &Path, extra: &[&str]| {
        let mut args = vec![
            "--bundle",
            bundle.to_str().unwrap(),
            "--json",
            "--public-key",
            public.as_str(),
        ];
        args.extend_from_slice(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_ledger-verify"))
            .args(&args)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code().unwrap(),
            report,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, report, stderr) = verify(&bundle, &[]);
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(
        (
            &report["ledger_id"],
            &report["verified"],
            &report["checkpoints_checked"]
        ),
        (&Value::from("ex"), &Value::from(20), &Value::from(1))
    );

    // The receipt checks against the bundle; altered, it does not.
    let receipt_file = dir.path().join("receipt.json");
    std::fs::write(&receipt_file, receipt.to_string()).unwrap();
    let (code, _, stderr) = verify(&bundle, &["receipt", receipt_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let mut altered = receipt.clone();
    altered["timestamp"] = Value::from("2001-01-01T00:00:00.000000Z");
    std::fs::write(&receipt_file, altered.to_string()).unwrap();
    let (code, report, _) = verify(&bundle, &["receipt", receipt_file.to_str().unwrap()]);
    assert_eq!(code, 1, "{report}");

    // A forged checkpoint line (another key) and a truncated bundle are both named.
    let other = Signer::from_seed(&[3; 32]);
    let mut cp: eleanor_ledger::chain::checkpoint::Checkpoint =
        serde_json::from_value(first["checkpoint"].clone()).unwrap();
    let forged = other.sign_checkpoint(cp.body());
    let forged_export = export.replacen(
        export.lines().next().unwrap(),
        &serde_json::json!({ "checkpoint": forged }).to_string(),
        1,
    );
    let forged_bundle = dir.path().join("forged.jsonl");
    std::fs::write(&forged_bundle, &forged_export).unwrap();
    let (code, report, _) = verify(&forged_bundle, &[]);
    assert_eq!(code, 1);
    assert_eq!(report["failures"][0]["kind"], "bad_signature", "{report}");
    assert_eq!(report["failures"][0]["seq"], 20);
    let truncated: String = export.lines().take(16).map(|l| format!("{l}\n")).collect();
    let truncated_bundle = dir.path().join("truncated.jsonl");
    std::fs::write(&truncated_bundle, truncated).unwrap();
    let (code, report, _) = verify(&truncated_bundle, &[]);
    assert_eq!(code, 1);
    let kinds: Vec<(u64, &str)> = report["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["seq"].as_u64().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&(20, "checkpoint_mismatch")), "{report}");
    assert!(kinds.contains(&(16, "end_mismatch")), "{report}");

    // The Python reference verifier agrees, checking the signature with `cryptography`.
    let python = python_with_cryptography();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/verify_chain.py");
    let py = |bundle: &Path| {
        let out = Command::new(&python)
            .arg(&script)
            .args([
                "--ledger",
                "ex",
                "--json",
                "--public-key",
                &public,
                "--jsonl",
            ])
            .arg(bundle)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code().unwrap(),
            report,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, report, stderr) = py(&bundle);
    assert_eq!(code, 0, "{report} {stderr}");
    assert_eq!(report["signatures_checked"], true);
    assert!(stderr.contains("cryptography"), "{stderr}");
    let (code, report, _) = py(&forged_bundle);
    assert_eq!(code, 1);
    assert_eq!(report["failures"][0]["kind"], "bad_signature", "{report}");
    cp.last_hash = eleanor_ledger::chain::hash::Hash([5; 32]);
    let wrong_hash = signer.sign_checkpoint(cp.body());
    let wrong_export = export.replacen(
        export.lines().next().unwrap(),
        &serde_json::json!({ "checkpoint": wrong_hash }).to_string(),
        1,
    );
    std::fs::write(&forged_bundle, &wrong_export).unwrap();
    let (code, report, _) = py(&forged_bundle);
    assert_eq!(code, 1);
    assert_eq!(
        report["failures"][0]["kind"], "checkpoint_mismatch",
        "{report}"
    );
    let (code, report, _) = verify(&forged_bundle, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        report["failures"][0]["kind"], "checkpoint_mismatch",
        "{report}"
    );

    // The same ledger as a copy of its objects (entries/ and checkpoints/), as an auditor
    // would take it from S3: the Python verifier checks the checkpoints found there too.
    let objects = dir.path().join("ex-objects");
    std::fs::create_dir_all(objects.join("entries")).unwrap();
    std::fs::create_dir_all(objects.join("checkpoints")).unwrap();
    for line in export.lines().filter(|l| l.starts_with(r#"{"seq""#)) {
        let line: Value = serde_json::from_str(line).unwrap();
        let stored = base64::engine::general_purpose::STANDARD
            .decode(line["stored"].as_str().unwrap())
            .unwrap();
        let seq = line["seq"].as_u64().unwrap();
        std::fs::write(objects.join(format!("entries/{seq:018}.json")), stored).unwrap();
    }
    let checkpoint_file = objects.join("checkpoints/000000000000000020.json");
    std::fs::write(&checkpoint_file, first["checkpoint"].to_string()).unwrap();
    let py_dir = |extra: &[&str]| {
        let out = Command::new(&python)
            .arg(&script)
            .args(["--ledger", "ex", "--json", "--public-key", &public, "--dir"])
            .arg(&objects)
            .args(extra)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap(), report)
    };
    let (code, report) = py_dir(&[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["checkpoints_checked"], 1, "{report}");
    assert_eq!(report["signatures_checked"], true);
    std::fs::write(&checkpoint_file, serde_json::to_string(&forged).unwrap()).unwrap();
    let (code, report) = py_dir(&[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["failures"][0]["kind"], "bad_signature", "{report}");
    // A checkpoint filed under another seq is named at the seq it was filed under.
    std::fs::remove_file(&checkpoint_file).unwrap();
    std::fs::write(
        objects.join("checkpoints/000000000000000019.json"),
        first["checkpoint"].to_string(),
    )
    .unwrap();
    let (code, report) = py_dir(&[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        (
            &report["failures"][0]["seq"],
            &report["failures"][0]["kind"]
        ),
        (&Value::from(19), &Value::from("checkpoint_mismatch")),
        "{report}"
    );
    // A file there that is no checkpoint at all is an integrity failure too, not bad input.
    std::fs::write(
        objects.join("checkpoints/000000000000000019.json"),
        b"{\"v\":",
    )
    .unwrap();
    let (code, report) = py_dir(&[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        report["failures"][0]["kind"], "checkpoint_mismatch",
        "{report}"
    );
}
