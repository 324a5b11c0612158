//! Authentication and roles (`ELEANOR_LEDGER_AUTH=jwt`).
//!
//! Every `/v1` request needs `Authorization: Bearer <JWT>` (the scheme in any letter case,
//! RFC 9110 section 11.1). The token's `kid` header selects a key from
//! `ELEANOR_LEDGER_JWT_KEYS_FILE` (HS256 secrets, EdDSA or RS256 public keys); `exp` is
//! required, and `nbf` (when present) and `iat` (when present, not in the future) are checked,
//! all three with the same clock leeway (`ELEANOR_LEDGER_JWT_LEEWAY_SECS`). Claims: `sub`,
//! `roles` (any of `writer`, `auditor`, `admin`, `metrics`) and `ledgers` (a list of ledger
//! ids, or `"*"`). Writers append; auditors read, verify and export; admins may do both and
//! make checkpoints; `metrics` may only scrape `/metrics`, which with auth on needs a
//! `metrics`, `auditor` or `admin` token unless `ELEANOR_LEDGER_METRICS_AUTH=false`. A
//! ledger route is authorised on the ledger id the handler uses: the path parameter decoded
//! and validated once ([`super::extract::LedgerPath`]), so `/v1/ledgers/%41/...` is ledger
//! `A` for both. Refusals happen before any handler runs, so they have no side effect: 401
//! (with `WWW-Authenticate`) for a missing, expired, not yet valid or bad token, 403 for a
//! wrong role or ledger.
//!
//! The keys file is re-read when its content changes (checked every second) and on SIGHUP,
//! without a restart. A file that does not parse is refused with a logged reason and the keys
//! in use are kept; a good one is logged as `jwt secret refreshed`. Key material is never
//! logged. HS256 secrets must be at least 32 bytes (RFC 7518 section 3.2), and a file holding
//! one must be mode 0600 or stricter, like the signing key (public keys alone may be
//! readable by anyone). The file (`docs/OPERATIONS.md` shows how to deliver it from a
//! secrets manager):
//!
//! ```json
//! {"keys": [
//!   {"kid": "2026-11", "alg": "HS256", "secret_base64": "c2VjcmV0..."},
//!   {"kid": "svc-a", "alg": "EdDSA", "public_key_pem": "-----BEGIN PUBLIC KEY-----\n..."},
//!   {"kid": "svc-b", "alg": "RS256", "public_key_pem": "-----BEGIN PUBLIC KEY-----\n..."}
//! ]}
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use super::extract::LedgerPath;
use crate::chain::entry::LedgerId;

/// What a role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Writer,
    Auditor,
    Admin,
    /// Scrapes `/metrics` and nothing else: the token a Prometheus holds.
    Metrics,
}

/// The ledgers a token is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ledgers {
    All,
    Only(Vec<String>),
}

impl<'de> Deserialize<'de> for Ledgers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Ledgers, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Star(String),
            List(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::Star(s) if s == "*" => Ok(Ledgers::All),
            Raw::Star(s) => Err(serde::de::Error::custom(format!(
                "ledgers must be a list or \"*\", got {s:?}"
            ))),
            Raw::List(list) => Ok(Ledgers::Only(list)),
        }
    }
}

/// The claims this service reads from a token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    pub ledgers: Ledgers,
    /// Issued at (seconds since the epoch, RFC 7519 section 4.1.6), if the token says.
    #[serde(default)]
    iat: Option<f64>,
}

impl Claims {
    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }

    /// Whether the token may read `/metrics` (when it is protected).
    fn may_scrape(&self) -> bool {
        self.has(Role::Metrics) || self.has(Role::Auditor)
    }

    /// Whether the token covers `ledger`.
    pub fn covers(&self, ledger: &LedgerId) -> bool {
        match &self.ledgers {
            Ledgers::All => true,
            Ledgers::Only(list) => list.iter().any(|l| l == ledger.as_str()),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    kid: String,
    alg: String,
    secret_base64: Option<String>,
    public_key_pem: Option<String>,
}

struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The shortest HS256 secret accepted: the hash's output size (RFC 7518 section 3.2).
const MIN_HS256_SECRET: usize = 32;

/// The keys of a keys file, and whether any is a secret (HS256), which makes the file itself
/// secret.
struct ParsedKeys {
    keys: HashMap<String, Key>,
    secret: bool,
}

/// Parses a keys file; errors say which key is wrong and why, never what it holds.
fn parse_keys(text: &str) -> Result<ParsedKeys, String> {
    let file: KeysFile = serde_json::from_str(text).map_err(|e| format!("not a keys file: {e}"))?;
    if file.keys.is_empty() {
        return Err("the keys file lists no keys".into());
    }
    let mut keys = HashMap::new();
    let mut secret = false;
    for entry in file.keys {
        let kid = entry.kid.clone();
        let bad = |why: &str| format!("key {kid:?}: {why}");
        let (algorithm, key) = match (
            entry.alg.as_str(),
            entry.secret_base64,
            entry.public_key_pem,
        ) {
            ("HS256", Some(secret), None) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&secret)
                    .map_err(|_| bad("secret_base64 is not base64"))?;
                if bytes.len() < MIN_HS256_SECRET {
                    return Err(bad(&format!(
                        "an HS256 secret must be at least {MIN_HS256_SECRET} bytes (RFC 7518 section 3.2), this one is {}; make a new one with `openssl rand -base64 32`",
                        bytes.len()
                    )));
                }
                let key = DecodingKey::from_secret(&bytes)
                    .map_err(|_| bad("the secret is not a usable HMAC key"))?;
                (Algorithm::HS256, key)
            }
            ("EdDSA", None, Some(pem)) => (
                Algorithm::EdDSA,
                DecodingKey::from_ed_pem(pem.as_bytes())
                    .map_err(|_| bad("not an Ed25519 public key PEM"))?,
            ),
            ("RS256", None, Some(pem)) => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(pem.as_bytes())
                    .map_err(|_| bad("not an RSA public key PEM"))?,
            ),
            ("HS256" | "EdDSA" | "RS256", _, _) => {
                return Err(bad(
                    "HS256 takes secret_base64; EdDSA and RS256 take public_key_pem",
                ));
            }
            (other, _, _) => {
                return Err(bad(&format!(
                    "algorithm {other:?} is not one of HS256, EdDSA, RS256"
                )));
            }
        };
        secret |= algorithm == Algorithm::HS256;
        if keys.insert(entry.kid, Key { algorithm, key }).is_some() {
            return Err(bad("kid appears twice"));
        }
    }
    Ok(ParsedKeys { keys, secret })
}

/// Reads and parses the keys file at `path`, refusing a file holding an HS256 secret that
/// anyone but its owner may read or write (the mode must be 0600 or stricter). Returns the
/// keys and the file content they came from.
fn read_keys(path: &Path) -> Result<(HashMap<String, Key>, String), String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let parsed = parse_keys(&text).map_err(|e| format!("{shown}: {e}"))?;
    #[cfg(unix)]
    if parsed.secret {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {shown}: {e}"))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{shown} holds an HS256 secret and has mode {mode:04o}; a keys file with secrets must be 0600 or stricter (chmod 600 {shown}), or hold only EdDSA/RS256 public keys"
            ));
        }
    }
    Ok((parsed.keys, text))
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token: send 'Authorization: Bearer <JWT>'")]
    Missing,
    #[error("the token is invalid: {0}")]
    Invalid(String),
    /// `nbf` or `iat` is later than now, beyond the clock leeway.
    #[error(
        "the token is not valid yet: its {0} is in the future (beyond the clock leeway); check the issuer's clock, or wait"
    )]
    NotYetValid(&'static str),
}

/// What makes a keys file worth reading again: its content and its mode (a file refused for
/// its mode is taken up once it is made 0600, its content unchanged).
fn fingerprint(path: &Path, text: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(text.as_bytes());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_or(0, |m| m.permissions().mode());
        hash.update(mode.to_be_bytes());
    }
    hash.finalize().into()
}

/// Checks tokens against the current keys, and reloads them when the file changes.
pub struct Authenticator {
    path: PathBuf,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    /// [`fingerprint`] of the file the keys came from (or of the last one refused).
    loaded: RwLock<[u8; 32]>,
    leeway: Duration,
}

impl Authenticator {
    /// Loads the keys file; an unreadable or invalid file is an error (startup refuses it).
    pub fn load(path: &Path, leeway: Duration) -> Result<Authenticator, String> {
        let (keys, text) = read_keys(path)?;
        Ok(Authenticator {
            path: path.to_owned(),
            keys: RwLock::new(Arc::new(keys)),
            loaded: RwLock::new(fingerprint(path, &text)),
            leeway,
        })
    }

    /// Re-reads the file if its content changed. Keeps the current keys if the new file is
    /// unreadable or invalid (a secret in a file others may read included).
    pub fn reload_if_changed(&self) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "jwt keys file unreadable; keeping the current keys");
                return;
            }
        };
        let digest = fingerprint(&self.path, &text);
        if *self.loaded.read().expect("lock") == digest {
            return;
        }
        // Parsed again with the file's mode checked; the digest is of what was read first, so
        // a file replaced in between is read again on the next tick.
        match read_keys(&self.path) {
            Ok((keys, _)) => {
                let kids = keys.len();
                *self.keys.write().expect("lock") = Arc::new(keys);
                *self.loaded.write().expect("lock") = digest;
                tracing::info!(keys = kids, "jwt secret refreshed");
            }
            Err(e) => {
                // Remember this content so the same bad file is reported once, not every second.
                *self.loaded.write().expect("lock") = digest;
                tracing::error!(error = %e, "jwt keys file rejected; keeping the current keys");
            }
        }
    }

    /// Polls the file every second and reloads on SIGHUP, until the process ends.
    pub fn watch(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            #[cfg(unix)]
            let mut hup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                {
                    let hangup = async {
                        match hup.as_mut() {
                            Some(s) => s.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = hangup => tracing::info!("SIGHUP: re-reading the jwt keys file"),
                    }
                }
                #[cfg(not(unix))]
                tick.tick().await;
                this.reload_if_changed();
            }
        });
    }

    /// Verifies `token` and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let invalid = |why: &str| TokenError::Invalid(why.to_owned());
        let header = decode_header(token).map_err(|_| invalid("not a JWT"))?;
        let kid = header
            .kid
            .ok_or_else(|| invalid("the token header has no kid"))?;
        let keys = self.keys.read().expect("lock").clone();
        let key = keys.get(&kid).ok_or_else(|| invalid("unknown kid"))?;
        if header.alg != key.algorithm {
            return Err(invalid("the token's alg does not match its key"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        let claims = decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => invalid("expired"),
                    K::ImmatureSignature => TokenError::NotYetValid("nbf"),
                    K::InvalidSignature => invalid("bad signature"),
                    K::MissingRequiredClaim(c) => invalid(&format!("missing claim {c}")),
                    _ => invalid("claims do not validate (sub, roles, ledgers, exp, nbf, iat)"),
                }
            })?;
        let now = jsonwebtoken::get_current_timestamp();
        if claims
            .iat
            .is_some_and(|iat| iat > now.saturating_add(self.leeway.as_secs()) as f64)
        {
            return Err(TokenError::NotYetValid("iat"));
        }
        Ok(claims)
    }
}

/// What a request needs: a role, and whether the route names a ledger the token must cover.
/// `route` is the matched route template (`/v1/ledgers/{ledger_id}/records`), or the raw path
/// of a request that matched none.
fn requirement(method: &Method, route: &str) -> Option<(Role, bool)> {
    let rest = route.strip_prefix("/v1/")?;
    if rest == "keys" {
        return None; // public keys are public
    }
    let mut parts = rest.split('/');
    let ledger = matches!(
        (parts.next(), parts.next()),
        (Some("ledgers"), Some("{ledger_id}"))
    );
    let tail: Vec<&str> = parts.collect();
    let role = match (method, tail.as_slice()) {
        (&Method::POST, ["records" | "records:batch"]) if ledger => Role::Writer,
        (&Method::GET | &Method::HEAD, _) => Role::Auditor,
        // Checkpoints, and anything else that is not a read: fail closed.
        _ => Role::Admin,
    };
    Some((role, ledger))
}

/// What the middleware checks a request for.
enum Need {
    /// `/metrics` while it is protected.
    Scrape,
    /// A `/v1` route: a role, and the route's ledger if it names one.
    Route { role: Role, ledger: bool },
}

/// Takes the bearer token from `Authorization`: the scheme in any letter case (RFC 9110
/// section 11.1), then one or more spaces.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The middleware: refuses unauthenticated or unauthorised requests before any handler runs;
/// passes the claims on as a request extension, and for a ledger route the validated
/// [`LedgerPath`] it authorised, which the handler then reads.
pub async fn require(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(auth) = &state.auth else {
        return next.run(request).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), MatchedPath::as_str);
    let needed = if route == "/metrics" {
        state.limits.protect_metrics.then_some(Need::Scrape)
    } else {
        requirement(request.method(), route).map(|(role, ledger)| Need::Route { role, ledger })
    };
    let Some(needed) = needed else {
        return next.run(request).await;
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let claims = match token
        .ok_or(TokenError::Missing)
        .and_then(|t| auth.verify(t))
    {
        Ok(claims) => claims,
        Err(e) => return ApiError::Unauthenticated(e).into_response(),
    };
    let (mut parts, body) = request.into_parts();
    match needed {
        Need::Scrape if !claims.may_scrape() => {
            return ApiError::Forbidden(
                "/metrics needs a token with the metrics, auditor or admin role".into(),
            )
            .into_response();
        }
        Need::Scrape => {}
        Need::Route { role, .. } if !claims.has(role) => {
            return ApiError::Forbidden(format!("this needs the {role:?} role").to_lowercase())
                .into_response();
        }
        Need::Route { ledger: false, .. } => {}
        Need::Route { ledger: true, .. } => {
            let path = match LedgerPath::from_request_parts(&mut parts, &state).await {
                Ok(path) => path,
                Err(e) => return e.into_response(),
            };
            if !claims.covers(&path.ledger) {
                return ApiError::Forbidden(format!(
                    "the token does not cover ledger {:?}",
                    path.ledger.as_str()
                ))
                .into_response();
            }
            parts.extensions.insert(path);
        }
    }
    parts.extensions.insert(Arc::new(claims));
    next.run(Request::from_parts(parts, body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_role_and_ledger() {
        const RECORDS: &str = "/v1/ledgers/{ledger_id}/records";
        assert_eq!(
            requirement(&Method::POST, RECORDS),
            Some((Role::Writer, true))
        );
        assert_eq!(
            requirement(&Method::GET, "/v1/ledgers/{ledger_id}/records/{seq}"),
            Some((Role::Auditor, true))
        );
        assert_eq!(
            requirement(&Method::POST, "/v1/ledgers/{ledger_id}/records:batch"),
            Some((Role::Writer, true)),
            "a batch append is an append"
        );
        assert_eq!(
            requirement(&Method::PUT, "/v1/ledgers/{ledger_id}/records/{seq}"),
            Some((Role::Admin, true)),
            "what is not a read or an append needs admin"
        );
        assert_eq!(
            requirement(&Method::GET, "/v1/ledgers/{ledger_id}/verify"),
            Some((Role::Auditor, true))
        );
        assert_eq!(
            requirement(&Method::POST, "/v1/ledgers/{ledger_id}/checkpoints"),
            Some((Role::Admin, true))
        );
        assert_eq!(
            requirement(&Method::GET, "/v1/ledgers"),
            Some((Role::Auditor, false))
        );
        assert_eq!(
            requirement(&Method::POST, "/v1/ledgers/a/records"),
            Some((Role::Admin, false)),
            "a path no route matched (a raw path, not a template) fails closed"
        );
        assert_eq!(requirement(&Method::GET, "/v1/keys"), None);
        assert_eq!(requirement(&Method::GET, "/health"), None);
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer abc"), Some("abc"));
        assert_eq!(bearer("BEARER  abc "), Some("abc"));
        assert_eq!(bearer("bEaReR abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearerabc"), None);
    }

    fn hs256_key(len: usize) -> String {
        let secret = base64::engine::general_purpose::STANDARD.encode(vec![7u8; len]);
        format!(r#"{{"keys":[{{"kid":"k","alg":"HS256","secret_base64":"{secret}"}}]}}"#)
    }

    #[test]
    fn hs256_secrets_shorter_than_32_bytes_are_refused() {
        let err = parse_keys(&hs256_key(31)).err().unwrap();
        assert!(
            err.contains("at least 32 bytes") && err.contains("31"),
            "{err}"
        );
        assert!(parse_keys(&hs256_key(32)).unwrap().secret);
    }

    #[cfg(unix)]
    #[test]
    fn a_keys_file_with_a_secret_must_be_0600_or_stricter() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let pem = std::fs::read_to_string("tests/data/auth/ed25519-public.pem").unwrap();
        let public =
            serde_json::json!({"keys": [{"kid": "ed", "alg": "EdDSA", "public_key_pem": pem}]});
        for (content, mode, ok) in [
            (hs256_key(32), 0o644, false),
            (hs256_key(32), 0o640, false),
            (hs256_key(32), 0o600, true),
            (hs256_key(32), 0o400, true),
            (public.to_string(), 0o644, true),
        ] {
            std::fs::write(&path, &content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let loaded = Authenticator::load(&path, Duration::ZERO);
            assert_eq!(loaded.is_ok(), ok, "mode {mode:o}: {:?}", loaded.err());
            if let Err(e) = loaded {
                assert!(e.contains("chmod 600"), "{e}");
            }
        }
    }

    #[test]
    fn a_keys_file_with_a_bad_entry_is_refused_whole_and_says_which() {
        let secret = base64::engine::general_purpose::STANDARD.encode([b's'; 32]);
        let err = parse_keys(&format!(r#"{{"keys":[{{"kid":"a","alg":"HS256","secret_base64":"{secret}"}},{{"kid":"b","alg":"none","secret_base64":"eA=="}}]}}"#))
            .err()
            .unwrap();
        assert!(err.contains("key \"b\"") && !err.contains(&secret), "{err}");
        assert!(parse_keys(r#"{"keys":[]}"#).is_err());
        assert!(
            parse_keys(r#"{"keys":[{"kid":"a","alg":"HS256","public_key_pem":"x"}]}"#).is_err()
        );
    }

    #[test]
    fn ledgers_are_a_list_or_a_star() {
        let c: Claims =
            serde_json::from_str(r#"{"sub":"s","roles":["writer"],"ledgers":"*"}"#).unwrap();
        assert_eq!(c.ledgers, Ledgers::All);
        let c: Claims =
            serde_json::from_str(r#"{"sub":"s","roles":["admin"],"ledgers":["a"]}"#).unwrap();
        assert!(c.has(Role::Auditor) && c.covers(&LedgerId::parse("a").unwrap()));
        assert!(serde_json::from_str::<Claims>(r#"{"sub":"s","roles":[],"ledgers":"a"}"#).is_err());
        assert!(
            serde_json::from_str::<Claims>(r#"{"sub":"s","roles":["root"],"ledgers":"*"}"#)
                .is_err()
        );
    }
}
