//! JWT authentication and roles over HTTP: refusals have no side effect, roles and ledgers are
//! enforced, and rotating the keys file under load drops no valid request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_in};

const OLD_SECRET: &[u8] = b"old-secret-for-tests-only-0123456789";
const NEW_SECRET: &[u8] = b"new-secret-for-tests-only-9876543210";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn keys_file(dir: &Path, hs: &[(&str, &[u8])], with_ed25519: bool) -> PathBuf {
    let mut keys: Vec<Value> = hs
        .iter()
        .map(|(kid, s)| json!({"kid": kid, "alg": "HS256", "secret_base64": b64(s)}))
        .collect();
    if with_ed25519 {
        let pem = std::fs::read_to_string("tests/data/auth/ed25519-public.pem").unwrap();
        keys.push(json!({"kid": "ed", "alg": "EdDSA", "public_key_pem": pem}));
    }
    let path = dir.join("jwt-keys.json");
    // Write-then-rename, as a secret volume update does: readers see old or new, never half.
    let tmp = dir.join("jwt-keys.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&json!({"keys": keys})).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs_token(kid: &str, secret: &[u8], roles: &[&str], ledgers: &Value, exp: u64) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    let claims = json!({"sub": "test", "roles": roles, "ledgers": ledgers, "exp": exp});
    encode(&header, &claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

fn ed_token(roles: &[&str], ledgers: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed".into());
    let pem = std::fs::read("tests/data/auth/ed25519-private.pem").unwrap();
    let claims = json!({"sub": "svc", "roles": roles, "ledgers": ledgers, "exp": now() + 600});
    encode(&header, &claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
}

/// The app with `--auth jwt` and a keys file (kid `old`, and an Ed25519 key) in its data dir.
struct App {
    app: TestApp,
    keys: PathBuf,
}

async fn spawn_app(extra: &[&str]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys_file(dir.path(), &[("old", OLD_SECRET)], true);
    let keys_arg = keys.display().to_string();
    let mut args = vec!["--auth", "jwt", "--jwt-keys-file", &keys_arg];
    args.extend_from_slice(extra);
    App {
        app: spawn_app_in(dir, &args).await,
        keys,
    }
}

impl App {
    async fn append(&self, ledger: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self
            .app
            .client
            .post(self.app.url(&format!("/v1/ledgers/{ledger}/records")))
            .json(&json!({"a": 1}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.app.client.get(self.app.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    async fn head_seq(&self, ledger: &str) -> u64 {
        let admin = hs_token("old", OLD_SECRET, &["admin"], &json!("*"), now() + 600);
        let resp = self
            .get(&format!("/v1/ledgers/{ledger}/head"), Some(&admin))
            .await;
        if resp.status() == 404 {
            return 0;
        }
        resp.json::<Value>().await.unwrap()["seq"].as_u64().unwrap()
    }
}

async fn refusal(resp: reqwest::Response) -> (u16, String, Option<String>) {
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        challenge,
    )
}

#[tokio::test]
async fn unauthenticated_expired_and_forged_requests_get_401_and_change_nothing() {
    let app = spawn_app(&[]).await;
    let writer = hs_token("old", OLD_SECRET, &["writer"], &json!("*"), now() + 600);
    assert_eq!(app.append("l", Some(&writer)).await.status(), 201);

    let expired = hs_token("old", OLD_SECRET, &["writer"], &json!("*"), now() - 3600);
    let forged = hs_token(
        "old",
        b"not-the-secret-at-all-0000000000000",
        &["writer"],
        &json!("*"),
        now() + 600,
    );
    let unknown_kid = hs_token("nope", OLD_SECRET, &["writer"], &json!("*"), now() + 600);
    let cases = [
        (None, "unauthenticated"),
        (Some(expired.as_str()), "invalid_token"),
        (Some(forged.as_str()), "invalid_token"),
        (Some(unknown_kid.as_str()), "invalid_token"),
        (Some("garbage"), "invalid_token"),
    ];
    for (token, expected) in cases {
        let (status, code, challenge) = refusal(app.append("l", token).await).await;
        assert_eq!((status, code.as_str()), (401, expected), "token {token:?}");
        assert!(
            challenge
                .unwrap()
                .starts_with("Bearer realm=\"eleanor-ledger\"")
        );
    }
    assert_eq!(
        app.head_seq("l").await,
        1,
        "refused appends left nothing behind"
    );
    assert_eq!(
        app.get("/health", None).await.status(),
        200,
        "/health stays open"
    );
    assert_eq!(
        app.get("/metrics", None).await.status(),
        200,
        "/metrics is open by default"
    );
}

#[tokio::test]
async fn roles_and_ledgers_are_enforced_with_403_and_no_side_effect() {
    let app = spawn_app(&["--metrics-auth", "true"]).await;
    let auditor = hs_token("old", OLD_SECRET, &["auditor"], &json!("*"), now() + 600);
    let writer_a = hs_token("old", OLD_SECRET, &["writer"], &json!(["a"]), now() + 600);
    let writer_ed = ed_token(&["writer"], &json!(["a", "b"]));

    assert_eq!(app.append("a", Some(&writer_a)).await.status(), 201);
    assert_eq!(
        app.append("b", Some(&writer_ed)).await.status(),
        201,
        "EdDSA keys work too"
    );
    let (status, code, _) = refusal(app.append("a", Some(&auditor)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "forbidden"),
        "auditors do not append"
    );
    let (status, code, _) = refusal(app.append("b", Some(&writer_a)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "forbidden"),
        "a token for ledger a cannot write b"
    );
    // A batch append is an append: writers of the ledger only.
    let batch = |token: &str| {
        app.app
            .client
            .post(app.app.url("/v1/ledgers/a/records:batch"))
            .bearer_auth(token)
            .json(&json!([{"record": {"batched": true}}]))
            .send()
    };
    let (status, code, _) = refusal(batch(&auditor).await.unwrap()).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "forbidden"),
        "auditors do not batch"
    );
    assert_eq!(batch(&writer_a).await.unwrap().status(), 201);
    let (status, _, _) = refusal(app.get("/v1/ledgers/a/records/1", Some(&writer_a)).await).await;
    assert_eq!(status, 403, "writers do not read");
    assert_eq!(
        app.get("/v1/ledgers/a/records/1", Some(&auditor))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get("/v1/ledgers/a/verify", Some(&auditor))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.get("/metrics", None).await.status(),
        401,
        "metrics protected by config"
    );
    assert_eq!(app.get("/metrics", Some(&auditor)).await.status(), 200);
    assert_eq!(
        (app.head_seq("a").await, app.head_seq("b").await),
        (2, 1),
        "refusals changed nothing"
    );

    let auditor_a = hs_token("old", OLD_SECRET, &["auditor"], &json!(["a"]), now() + 600);
    let listed: Value = app
        .get("/v1/ledgers", Some(&auditor_a))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["ledgers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ledger_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a"], "a token lists only the ledgers it covers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_keys_file_under_load_drops_no_valid_request() {
    let app = Arc::new(spawn_app(&[]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // Clients holding old-key tokens keep appending while the file rotates to old+new, then
    // is replaced by an invalid file (which must be ignored).
    let old_token = hs_token("old", OLD_SECRET, &["writer"], &json!("*"), now() + 600);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (app, stop, ok, refused, token) = (
                app.clone(),
                stop.clone(),
                ok.clone(),
                refused.clone(),
                old_token.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    match app.append("rot", Some(&token)).await.status().as_u16() {
                        201 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => refused.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();

    let dir = app.keys.parent().unwrap().to_owned();
    // Real time throughout: the subject is the server noticing a file change through the
    // operating system's file watcher, which a paused tokio clock does not drive. The waits
    // are bounded polls, not assumptions about how fast it is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    keys_file(&dir, &[("old", OLD_SECRET), ("new", NEW_SECRET)], true);
    let new_token = hs_token("new", NEW_SECRET, &["writer"], &json!("*"), now() + 600);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.append("rot", Some(&new_token)).await.status() != 201 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was not picked up within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An invalid file: the keys in use are kept.
    std::fs::write(dir.join("jwt-keys.json"), b"{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.append("rot", Some(&new_token)).await.status(),
        201,
        "a bad file must not remove keys"
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert!(
        ok.load(Ordering::SeqCst) > 10,
        "too little load to mean anything"
    );
    assert_eq!(
        refused.load(Ordering::SeqCst),
        0,
        "valid requests were refused during rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_asks_for_a_token_only_when_auth_is_on() {
    let security = |doc: &Value| {
        let ops = &doc["paths"]["/v1/ledgers/{ledger_id}/records"];
        (
            ops["post"]["security"].clone(),
            doc["paths"]["/v1/keys"]["get"]["security"].clone(),
        )
    };
    let on = spawn_app(&[]).await;
    let doc: Value = on.app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(security(&doc), (json!([{"bearerAuth": []}]), json!([])));
    // The keys are public with auth on too.
    let keys = on.app.get("/v1/keys").await;
    assert_eq!(keys.status(), reqwest::StatusCode::OK);

    let off = crate::helpers::spawn_app().await;
    let doc: Value = off.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(security(&doc), (json!([]), json!([])));
}
