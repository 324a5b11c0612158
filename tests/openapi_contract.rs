//! The API and its OpenAPI document agree, as outside tools judge them:
//!
//! - schemathesis (`run --checks all`, bounded to [`MAX_EXAMPLES`] cases per operation and a
//!   fixed seed) against the real `ledger-server` binary on loopback, over a temp data dir:
//!   once with auth off and no signing key, once with JWT auth (an admin token for every
//!   ledger, signed with `tests/data/auth`'s Ed25519 key) and a signing key. Any failure of
//!   any check fails the test, with schemathesis's report;
//! - openapi-spec-validator and Redocly's linter (`recommended` rules, no warning allowed) on
//!   `src/http/openapi.json`.
//!
//! The tools are installed by `scripts/test.sh` (pinned versions, cached under
//! `ELEANOR_LEDGER_CACHE`), which names them in `ELEANOR_LEDGER_TEST_SCHEMATHESIS`,
//! `ELEANOR_LEDGER_TEST_OPENAPI_SPEC_VALIDATOR` and `ELEANOR_LEDGER_TEST_REDOCLY`. Without
//! them these tests fail; they never skip. `tests/data/contract/` holds schemathesis's
//! settings and hooks (NDJSON bodies), each exception explained there.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use process::ServerProcess;

/// Cases per operation and phase: each run takes under a minute on two cores.
const MAX_EXAMPLES: &str = "30";
const SEED: &str = "1";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The tool `var` names; fails with what to do when it is not installed.
fn tool(var: &str) -> PathBuf {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{var} is not set: run the tests through scripts/test.sh, which installs the OpenAPI tools")
    });
    assert!(
        path.is_file(),
        "{var}={} does not exist: run scripts/test.sh to install it",
        path.display()
    );
    path
}

/// The real server on a free loopback port over a temp dir, stopped when dropped.
struct Server {
    _process: ServerProcess,
    url: String,
    _dir: tempfile::TempDir,
}

/// Starts `ledger-server` over a fresh data dir with `args(dir)`, and waits until it serves.
fn start(args: impl FnOnce(&Path) -> Vec<String>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let process = ServerProcess::start(&dir.path().join("data"), &args(dir.path()), &[], None);
    Server {
        url: format!("http://{}", process.address),
        _process: process,
        _dir: dir,
    }
}

/// Fails with the tool's whole output unless it exited 0.
fn expect_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `schemathesis run --checks all` against `server`, with `headers` on every request.
fn schemathesis(server: &Server, headers: &[String]) {
    let report = tempfile::tempdir().unwrap();
    let mut command = Command::new(tool("ELEANOR_LEDGER_TEST_SCHEMATHESIS"));
    command
        .current_dir(root())
        .args([
            "--config-file",
            "tests/data/contract/schemathesis.toml",
            "run",
        ])
        .arg(format!("{}/openapi.json", server.url))
        .args([
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            SEED,
        ])
        .args([
            "--workers",
            "2",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .arg("--report-dir")
        .arg(report.path());
    for header in headers {
        command.args(["--header", header]);
    }
    let output = command.output().expect("run schemathesis");
    expect_success("schemathesis", &output);
    let out = String::from_utf8_lossy(&output.stdout);
    // A run that tested nothing would pass too: check that every operation was reached.
    assert!(
        out.contains("Tested: 14"),
        "not every operation was tested:\n{out}"
    );
}

#[test]
fn schemathesis_finds_no_failure_with_auth_off_and_no_signing_key() {
    let server = start(|_| Vec::new());
    schemathesis(&server, &[]);
}

#[test]
fn schemathesis_finds_no_failure_with_jwt_auth_and_a_signing_key() {
    let auth = root().join("tests/data/auth");
    let public = std::fs::read_to_string(auth.join("ed25519-public.pem")).unwrap();
    let server = start(|dir| {
        let keys = dir.join("jwt-keys.json");
        let file = json!({"keys": [{"kid": "contract", "alg": "EdDSA", "public_key_pem": public}]});
        std::fs::write(&keys, file.to_string()).unwrap();
        let signing = dir.join("signing.key");
        eleanor_ledger::keyfile::write_new_key(&signing).unwrap();
        vec![
            "--auth".into(),
            "jwt".into(),
            "--jwt-keys-file".into(),
            keys.display().to_string(),
            "--signing-key-file".into(),
            signing.display().to_string(),
        ]
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": "contract", "exp": now + 3600, "iat": now, "roles": ["admin"], "ledgers": "*"});
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("contract".into());
    let pem = std::fs::read(auth.join("ed25519-private.pem")).unwrap();
    let token = encode(&header, &claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap();
    schemathesis(&server, &[format!("Authorization: Bearer {token}")]);
}

#[test]
fn the_document_passes_openapi_spec_validator() {
    let output = Command::new(tool("ELEANOR_LEDGER_TEST_OPENAPI_SPEC_VALIDATOR"))
        .current_dir(root())
        .arg("src/http/openapi.json")
        .output()
        .expect("run openapi-spec-validator");
    expect_success("openapi-spec-validator", &output);
}

#[test]
fn the_document_passes_redocly_lint_without_a_warning() {
    let output = Command::new(tool("ELEANOR_LEDGER_TEST_REDOCLY"))
        .current_dir(root())
        .args(["lint", "--format", "stylish", "--max-problems", "100"])
        .args(["--config", "tests/data/contract/redocly.yaml"])
        .arg("src/http/openapi.json")
        .env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
        .output()
        .expect("run redocly");
    expect_success("redocly lint", &output);
}
