//! What the real `ledger-server` binary logs at startup, with the default log filter: the
//! lines the operations runbook greps for.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs `ledger-server` over `data_dir` with `args` until it logs `serving`, then stops it;
/// returns the JSON log lines up to then.
fn startup_log(data_dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ledger-server"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("ELEANOR_LEDGER_LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ledger-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut log = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "ledger-server did not start: {log:?}"
        );
        let Some(Ok(line)) = lines.next() else {
            panic!(
                "ledger-server exited during startup: {:?}\n{log:?}",
                child.wait()
            );
        };
        let entry: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let serving = entry["message"] == "serving";
        log.push(entry);
        if serving {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    log
}

fn line<'a>(log: &'a [Value], message_starts: &str) -> Option<&'a Value> {
    log.iter().find(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(message_starts))
    })
}

#[test]
fn the_embedded_backend_creates_a_private_signing_key_once_and_logs_its_public_key() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let first = startup_log(data.path(), &[]);
    let key_file = data.path().join("signing.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the new key is private");
    let signer = eleanor_ledger::keyfile::load_signing_key(&key_file).unwrap();
    let public = signer.public_key().to_hex();
    let created = line(&first, "created a signing key").unwrap_or_else(|| panic!("{first:?}"));
    assert_eq!(created["public_key"], public.as_str(), "{created}");
    assert_eq!(created["level"], "INFO");
    let signing = line(&first, "signing checkpoints and receipts").unwrap();
    assert_eq!(signing["public_key"], public.as_str());

    let second = startup_log(data.path(), &[]);
    assert!(
        line(&second, "created a signing key").is_none(),
        "a later start reuses the key: {second:?}"
    );
    let signing = line(&second, "signing checkpoints and receipts").unwrap();
    assert_eq!(signing["public_key"], public.as_str(), "the same key");
}

#[test]
fn signing_off_is_a_startup_warning() {
    let data = tempfile::tempdir().unwrap();
    let log = startup_log(data.path(), &["--signing", "off"]);
    let off = line(&log, "signing is off").unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(off["level"], "WARN");
    assert!(!data.path().join("signing.key").exists());
}

/// The runbook's "Secret Rotation" check after a restart:
/// `kubectl logs ... | grep -i "secret.*refresh"` finds the keys' load at startup.
#[test]
fn a_started_server_logs_its_jwt_keys_load_as_a_secret_refresh() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let keys = data.path().join("jwt-keys.json");
    let secret = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 48]);
    std::fs::write(
        &keys,
        format!(r#"{{"keys":[{{"kid":"k1","alg":"HS256","secret_base64":"{secret}"}}]}}"#),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = startup_log(
        data.path(),
        &["--auth", "jwt", "--jwt-keys-file", keys.to_str().unwrap()],
    );
    let grep = |l: &&Value| {
        let text = l.to_string().to_lowercase();
        text.find("secret")
            .is_some_and(|at| text[at..].contains("refresh"))
    };
    let found = log.iter().find(grep).unwrap_or_else(|| panic!("{log:?}"));
    assert_eq!(found["level"], "INFO", "{found}");
    assert!(
        !found.to_string().contains(&secret),
        "no key material: {found}"
    );
}

/// The Dockerfile's HEALTHCHECK: `ledger-server --probe` asks the configured server's /livez.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_succeeds_against_a_serving_server_and_fails_without_one() {
    let app = crate::helpers::spawn_app().await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let probe = |listen: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_ledger-server"))
                .args(["--probe", "--listen", &listen])
                .output()
                .unwrap()
        })
    };
    let up = probe(addr.clone()).await.unwrap();
    assert_eq!(
        up.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let everywhere = probe(format!("0.0.0.0:{port}")).await.unwrap();
    assert_eq!(
        everywhere.status.code(),
        Some(0),
        "an unspecified address is probed on loopback"
    );
    app.stop().await;
    let down = probe(addr).await.unwrap();
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.starts_with("ledger-server --probe: cannot connect"),
        "{stderr}"
    );
}
