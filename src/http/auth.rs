//! Authentication and roles (`ELEANOR_LEDGER_AUTH=jwt`).
//!
//! Every `/v1` request needs `Authorization: Bearer <JWT>`. The token's `kid` header selects a
//! key from `ELEANOR_LEDGER_JWT_KEYS_FILE` (HS256 secrets, EdDSA or RS256 public keys); `exp`
//! is required, with a small clock leeway. Claims: `sub`, `roles` (any of `writer`, `auditor`,
//! `admin`) and `ledgers` (a list of ledger ids, or `"*"`). Writers append; auditors read,
//! verify and export; admins may do both and make checkpoints. Refusals happen before any
//! handler runs, so they have no side effect: 401 (with `WWW-Authenticate`) for a missing,
//! expired or bad token, 403 for a wrong role or ledger.
//!
//! The keys file is re-read when its content changes (checked every second) and on SIGHUP,
//! without a restart. A file that does not parse is refused with a logged reason and the keys
//! in use are kept; a good one is logged as `jwt secret refreshed`. Key material is never
//! logged. The file (`docs/OPERATIONS.md` shows how to deliver it from a secrets manager):
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

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::chain::entry::LedgerId;

/// What a role may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Writer,
    Auditor,
    Admin,
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
}

impl Claims {
    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
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

/// Parses a keys file; errors say which key is wrong and why, never what it holds.
fn parse_keys(text: &str) -> Result<HashMap<String, Key>, String> {
    let file: KeysFile = serde_json::from_str(text).map_err(|e| format!("not a keys file: {e}"))?;
    if file.keys.is_empty() {
        return Err("the keys file lists no keys".into());
    }
    let mut keys = HashMap::new();
    for entry in file.keys {
        let kid = entry.kid.clone();
        let bad = |why: &str| format!("key {kid:?}: {why}");
        let (algorithm, key) = match (
            entry.alg.as_str(),
            entry.secret_base64,
            entry.public_key_pem,
        ) {
            ("HS256", Some(secret), None) => {
                let key = DecodingKey::from_base64_secret(&secret)
                    .map_err(|_| bad("secret_base64 is not base64"))?;
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
        if keys.insert(entry.kid, Key { algorithm, key }).is_some() {
            return Err(bad("kid appears twice"));
        }
    }
    Ok(keys)
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token: send 'Authorization: Bearer <JWT>'")]
    Missing,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// Checks tokens against the current keys, and reloads them when the file changes.
pub struct Authenticator {
    path: PathBuf,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    /// SHA-256 of the file content the keys came from.
    loaded: RwLock<[u8; 32]>,
    leeway: Duration,
}

impl Authenticator {
    /// Loads the keys file; an unreadable or invalid file is an error (startup refuses it).
    pub fn load(path: &Path, leeway: Duration) -> Result<Authenticator, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let keys = parse_keys(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Authenticator {
            path: path.to_owned(),
            keys: RwLock::new(Arc::new(keys)),
            loaded: RwLock::new(Sha256::digest(text.as_bytes()).into()),
            leeway,
        })
    }

    /// Re-reads the file if its content changed. Keeps the current keys if the new file is
    /// unreadable or invalid.
    pub fn reload_if_changed(&self) {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "jwt keys file unreadable; keeping the current keys");
                return;
            }
        };
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if *self.loaded.read().expect("lock") == digest {
            return;
        }
        match parse_keys(&text) {
            Ok(keys) => {
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
        validation.validate_aud = false;
        decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => invalid("expired"),
                    K::InvalidSignature => invalid("bad signature"),
                    K::MissingRequiredClaim(c) => invalid(&format!("missing claim {c}")),
                    _ => invalid("claims do not validate (sub, roles, ledgers, exp)"),
                }
            })
    }
}

/// What a request needs: a role, and for ledger routes, that ledger.
fn requirement<'a>(method: &Method, path: &'a str) -> Option<(Role, Option<&'a str>)> {
    let rest = path.strip_prefix("/v1/")?;
    if rest == "keys" {
        return None; // public keys are public
    }
    let mut parts = rest.split('/');
    let ledger = match (parts.next(), parts.next()) {
        (Some("ledgers"), Some(id)) if !id.is_empty() => Some(id),
        _ => None,
    };
    let tail: Vec<&str> = parts.collect();
    let role = match (method, tail.as_slice()) {
        (&Method::POST, ["records" | "records:batch"]) => Role::Writer,
        (&Method::GET | &Method::HEAD, _) => Role::Auditor,
        // Checkpoints, and anything else that is not a read: fail closed.
        _ => Role::Admin,
    };
    Some((role, ledger))
}

/// The middleware: refuses unauthenticated or unauthorised `/v1` requests before any handler
/// runs; passes the claims on as a request extension.
pub async fn require(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let Some(auth) = &state.auth else {
        return next.run(request).await;
    };
    let path = request.uri().path().to_owned();
    let metrics_protected = path == "/metrics" && state.limits.protect_metrics;
    let needed = if metrics_protected {
        Some((Role::Auditor, None))
    } else {
        requirement(request.method(), &path)
    };
    let Some((role, ledger)) = needed else {
        return next.run(request).await;
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let claims = match token
        .ok_or(TokenError::Missing)
        .and_then(|t| auth.verify(t))
    {
        Ok(claims) => claims,
        Err(e) => return ApiError::Unauthenticated(e).into_response(),
    };
    if !claims.has(role) {
        return ApiError::Forbidden(format!("this needs the {role:?} role").to_lowercase())
            .into_response();
    }
    if let Some(ledger) = ledger
        && !matches!(&claims.ledgers, Ledgers::Only(list) if list.iter().any(|l| l == ledger))
        && claims.ledgers != Ledgers::All
    {
        return ApiError::Forbidden(format!("the token does not cover ledger {ledger:?}"))
            .into_response();
    }
    request.extensions_mut().insert(Arc::new(claims));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_its_role_and_ledger() {
        assert_eq!(
            requirement(&Method::POST, "/v1/ledgers/a/records"),
            Some((Role::Writer, Some("a")))
        );
        assert_eq!(
            requirement(&Method::GET, "/v1/ledgers/a/records/1"),
            Some((Role::Auditor, Some("a")))
        );
        assert_eq!(
            requirement(&Method::POST, "/v1/ledgers/a/records:batch"),
            Some((Role::Writer, Some("a"))),
            "a batch append is an append"
        );
        assert_eq!(
            requirement(&Method::PUT, "/v1/ledgers/a/records/1"),
            Some((Role::Admin, Some("a"))),
            "what is not a read or an append needs admin"
        );
        assert_eq!(
            requirement(&Method::GET, "/v1/ledgers/a/verify"),
            Some((Role::Auditor, Some("a")))
        );
        assert_eq!(
            requirement(&Method::POST, "/v1/ledgers/a/checkpoints"),
            Some((Role::Admin, Some("a")))
        );
        assert_eq!(
            requirement(&Method::GET, "/v1/ledgers"),
            Some((Role::Auditor, None))
        );
        assert_eq!(requirement(&Method::GET, "/v1/keys"), None);
        assert_eq!(requirement(&Method::GET, "/health"), None);
    }

    #[test]
    fn a_keys_file_with_a_bad_entry_is_refused_whole_and_says_which() {
        let err = parse_keys(r#"{"keys":[{"kid":"a","alg":"HS256","secret_base64":"c2VjcmV0"},{"kid":"b","alg":"none","secret_base64":"eA=="}]}"#)
            .err()
            .unwrap();
        assert!(
            err.contains("key \"b\"") && !err.contains("c2VjcmV0"),
            "{err}"
        );
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
