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
    // Mode 0600: a file holding HS256 secrets must be.
    let tmp = dir.join("jwt-keys.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&json!({"keys": keys})).unwrap()).unwrap();
    set_mode(&tmp, 0o600);
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs_token(kid: &str, secret: &[u8], roles: &[&str], ledgers: &Value, exp: u64) -> String {
    let claims = json!({"sub": "test", "roles": roles, "ledgers": ledgers, "exp": exp});
    hs_token_with(kid, secret, &claims)
}

/// A token of kid `old` with any claims.
fn hs_token_with(kid: &str, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.into());
    encode(&header, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

/// An admin token for every ledger, valid for ten minutes.
fn admin() -> String {
    hs_token("old", OLD_SECRET, &["admin"], &json!("*"), now() + 600)
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
        401,
        "with auth on, /metrics needs a token by default"
    );
}

#[tokio::test]
async fn roles_and_ledgers_are_enforced_with_403_and_no_side_effect() {
    let app = spawn_app(&[]).await;
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
        "metrics protected by default"
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

#[tokio::test]
async fn a_token_not_valid_yet_is_refused_401_token_not_yet_valid_and_appends_nothing() {
    let app = spawn_app(&["--jwt-leeway-secs", "30"]).await;
    let claims = |extra: Value| {
        let mut c =
            json!({"sub": "t", "roles": ["writer"], "ledgers": "*", "exp": now() + 172_800});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        hs_token_with("old", OLD_SECRET, &c)
    };
    let tomorrow = now() + 86_400;
    for (token, what) in [
        (claims(json!({"nbf": tomorrow})), "nbf tomorrow"),
        (claims(json!({"iat": tomorrow})), "iat tomorrow"),
        (claims(json!({"nbf": now() + 120})), "nbf beyond the leeway"),
        (claims(json!({"iat": now() + 120})), "iat beyond the leeway"),
    ] {
        let (status, code, challenge) = refusal(app.append("nbf", Some(&token)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "token_not_yet_valid"),
            "{what}"
        );
        assert!(
            challenge.unwrap().contains("error=\"invalid_token\""),
            "{what}"
        );
    }
    assert_eq!(app.head_seq("nbf").await, 0, "refused appends left nothing");
    for (token, what) in [
        (claims(json!({"nbf": now() + 10})), "nbf within the leeway"),
        (claims(json!({"iat": now() + 10})), "iat within the leeway"),
        (
            claims(json!({"nbf": now() - 10, "iat": now() - 10})),
            "nbf and iat past",
        ),
    ] {
        assert_eq!(
            app.append("nbf", Some(&token)).await.status(),
            201,
            "{what}"
        );
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_accepted_in_any_letter_case() {
    let app = spawn_app(&[]).await;
    let writer = hs_token("old", OLD_SECRET, &["writer"], &json!("*"), now() + 600);
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let response = app
            .app
            .client
            .post(app.app.url("/v1/ledgers/case/records"))
            .header("authorization", format!("{scheme} {writer}"))
            .json(&json!({"a": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "scheme {scheme:?}");
    }
    let (status, code, _) = refusal(
        app.app
            .client
            .post(app.app.url("/v1/ledgers/case/records"))
            .header("authorization", format!("Basic {writer}"))
            .json(&json!({"a": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert_eq!(app.head_seq("case").await, 4);
}

#[tokio::test]
async fn paging_the_ledger_list_never_reveals_a_ledger_the_token_may_not_see() {
    let app = spawn_app(&[]).await;
    let writer = hs_token("old", OLD_SECRET, &["writer"], &json!("*"), now() + 600);
    for ledger in ["L1", "L2", "L3", "L4"] {
        assert_eq!(app.append(ledger, Some(&writer)).await.status(), 201);
    }
    let auditor = hs_token(
        "old",
        OLD_SECRET,
        &["auditor"],
        &json!(["L3", "L1", "nope", "bad/id"]),
        now() + 600,
    );
    let page = |query: String| {
        let app = &app;
        let auditor = auditor.clone();
        async move {
            let response = app
                .get(&format!("/v1/ledgers?{query}"), Some(&auditor))
                .await;
            assert_eq!(response.status(), 200, "{query}");
            let body: Value = response.json().await.unwrap();
            let ids: Vec<String> = body["ledgers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["ledger_id"].as_str().unwrap().to_owned())
                .collect();
            (ids, body["next_after"].as_str().map(str::to_owned))
        }
    };
    let (ids, next) = page("after=L1&limit=1".to_owned()).await;
    assert_eq!(ids, ["L3"], "the page after L1 is L3");
    assert_ne!(next.as_deref(), Some("L2"), "next_after must not name L2");
    // Walking every page one ledger at a time shows the token's ledgers and no other, in
    // both the pages and their next_after.
    let (mut seen, mut after) = (Vec::new(), None::<String>);
    loop {
        let query = match &after {
            Some(a) => format!("after={a}&limit=1"),
            None => "limit=1".to_owned(),
        };
        let (ids, next) = page(query).await;
        for id in ids.iter().chain(next.iter()) {
            assert!(["L1", "L3"].contains(&id.as_str()), "{id} was revealed");
        }
        seen.extend(ids);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(seen.len() < 10, "paging does not end");
    }
    assert_eq!(seen, ["L1", "L3"]);
    assert_eq!(page("limit=2".to_owned()).await.0, ["L1", "L3"]);
    assert_eq!(page("after=L3".to_owned()).await, (vec![], None));
    // A token for every ledger pages through all of them.
    let all = admin();
    let body: Value = app
        .get("/v1/ledgers?after=L1&limit=1", Some(&all))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["ledgers"][0]["ledger_id"], "L2");
    assert_eq!(body["next_after"], "L2");
}

#[tokio::test]
async fn a_percent_encoded_ledger_id_is_authorised_as_the_ledger_it_names() {
    let app = spawn_app(&[]).await;
    let writer_a = hs_token("old", OLD_SECRET, &["writer"], &json!(["A"]), now() + 600);
    let writer_b = hs_token(
        "old",
        OLD_SECRET,
        &["writer"],
        &json!(["B", "%41"]),
        now() + 600,
    );
    assert_eq!(
        app.append("%41", Some(&writer_a)).await.status(),
        201,
        "/v1/ledgers/%41 is ledger A, which the token covers"
    );
    let (status, code, _) = refusal(app.append("%41", Some(&writer_b)).await).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "forbidden"),
        "a token naming \"%41\" does not cover ledger A"
    );
    let auditor_a = hs_token("old", OLD_SECRET, &["auditor"], &json!(["A"]), now() + 600);
    let head: Value = app
        .get("/v1/ledgers/%41/head", Some(&auditor_a))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (head["ledger_id"].as_str(), head["seq"].as_u64()),
        (Some("A"), Some(1))
    );
    assert_eq!(app.head_seq("A").await, 1, "the one append went to A");
    // A path that decodes to no valid ledger id is 400 for a caller who may ask, and the
    // token check comes first.
    let (status, code, _) = refusal(app.append("a%2Fb", Some(&admin())).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_ledger_id"));
    let (status, code, _) = refusal(app.append("a%2Fb", None).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
}

#[tokio::test]
async fn metrics_need_a_metrics_auditor_or_admin_token_unless_made_public() {
    let app = spawn_app(&[]).await;
    let token = |roles: &[&str]| hs_token("old", OLD_SECRET, roles, &json!([]), now() + 600);
    let (status, code, _) = refusal(app.get("/metrics", None).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    for role in ["metrics", "auditor", "admin"] {
        let response = app.get("/metrics", Some(&token(&[role]))).await;
        assert_eq!(response.status(), 200, "role {role}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("eleanor_requests_total")
        );
    }
    let (status, code, _) = refusal(app.get("/metrics", Some(&token(&["writer"]))).await).await;
    assert_eq!(
        (status, code.as_str()),
        (403, "forbidden"),
        "writers do not scrape"
    );
    // The metrics role scrapes and does nothing else.
    let scraper = hs_token("old", OLD_SECRET, &["metrics"], &json!("*"), now() + 600);
    assert_eq!(app.get("/v1/ledgers", Some(&scraper)).await.status(), 403);
    assert_eq!(app.append("m", Some(&scraper)).await.status(), 403);
    assert_eq!(
        app.get("/health", None).await.status(),
        200,
        "probes stay open"
    );

    let public = spawn_app(&["--metrics-auth", "false"]).await;
    assert_eq!(public.get("/metrics", None).await.status(), 200);
}

#[tokio::test]
async fn short_hs256_secrets_and_readable_secret_files_are_refused_at_startup() {
    use eleanor_ledger::app::StartError;
    let dir = tempfile::tempdir().unwrap();
    let build = |keys: PathBuf| {
        let data = dir.path().join("data");
        async move {
            let keys = keys.display().to_string();
            crate::helpers::try_build(&data, &["--auth", "jwt", "--jwt-keys-file", &keys]).await
        }
    };
    let short = keys_file(dir.path(), &[("short", &[b'k'; 31])], false);
    match build(short.clone()).await {
        Err(StartError::Config(e)) => assert!(e.contains("at least 32 bytes"), "{e}"),
        Err(e) => panic!("not a config error: {e}"),
        Ok(_) => panic!("a 31-byte HS256 secret was accepted"),
    }
    let good = keys_file(dir.path(), &[("good", &[b'k'; 32])], false);
    set_mode(&good, 0o644);
    match build(good.clone()).await {
        Err(StartError::Config(e)) => {
            assert!(e.contains("0644") && e.contains("chmod 600"), "{e}")
        }
        Err(e) => panic!("not a config error: {e}"),
        Ok(_) => panic!("an HS256 secret in a world-readable file was accepted"),
    }
    set_mode(&good, 0o600);
    assert!(
        build(good.clone()).await.is_ok(),
        "32 bytes at 0600 is fine"
    );

    // The binary says so in one sentence and exits 2, like every configuration error.
    set_mode(&good, 0o640);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-server"))
        .args(["--listen", "127.0.0.1:0", "--auth", "jwt"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--jwt-keys-file")
        .arg(&good)
        .env_clear()
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("mode 0640"), "{stderr}");
}

#[tokio::test]
async fn a_keys_file_made_readable_by_others_is_not_loaded_on_rotation() {
    let app = spawn_app(&[]).await;
    let dir = app.keys.parent().unwrap().to_owned();
    let path = keys_file(&dir, &[("old", OLD_SECRET), ("new", NEW_SECRET)], false);
    set_mode(&path, 0o644);
    let new_token = hs_token("new", NEW_SECRET, &["writer"], &json!("*"), now() + 600);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        refusal(app.append("rot", Some(&new_token)).await).await.0,
        401,
        "a readable secret file must not be taken up"
    );
    let old_token = hs_token("old", OLD_SECRET, &["writer"], &json!("*"), now() + 600);
    assert_eq!(
        app.append("rot", Some(&old_token)).await.status(),
        201,
        "the keys in use are kept"
    );
    // Made 0600, the same content is taken up.
    set_mode(&path, 0o600);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.append("rot", Some(&new_token)).await.status() != 201 {
        assert!(
            std::time::Instant::now() < deadline,
            "the file made 0600 was not taken up within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
