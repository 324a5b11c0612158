//! Extractors whose rejections use the API's own error body.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::{header, request::Parts};

use super::AppState;
use super::error::ApiError;
use crate::chain::entry::{LedgerId, Record};

/// The `{ledger_id}` (and, where the route has one, `{seq}`) path parameters, validated.
pub struct LedgerPath {
    pub ledger: LedgerId,
    pub seq: Option<u64>,
}

impl FromRequestParts<AppState> for LedgerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::InvalidLedgerId)?;
        let mut ledger = None;
        let mut seq = None;
        for (name, value) in &params {
            match name {
                "ledger_id" => {
                    ledger = Some(LedgerId::parse(value).map_err(|_| ApiError::InvalidLedgerId)?)
                }
                "seq" => seq = Some(parse_seq(value).ok_or(ApiError::InvalidSeq)?),
                _ => {}
            }
        }
        Ok(LedgerPath {
            ledger: ledger.ok_or(ApiError::InvalidLedgerId)?,
            seq,
        })
    }
}

/// A positive integer with plain digits (no sign, no spaces).
fn parse_seq(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

/// Query parameters, read by name with typed accessors.
pub struct Params(HashMap<String, String>);

impl FromRequestParts<AppState> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
        Ok(Params(map))
    }
}

impl Params {
    /// A non-negative integer parameter, if present.
    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        self.0
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::InvalidQuery(format!(
                        "{name} must be a non-negative integer, got {v:?}"
                    ))
                })
            })
            .transpose()
    }

    /// A text parameter, if present.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Refuses parameters the route does not know, so typos do not pass silently.
    pub fn only(self, known: &[&str]) -> Result<Params, ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::InvalidQuery(format!(
                "unknown parameter {k:?}; this route takes {known:?}"
            ))),
            None => Ok(self),
        }
    }
}

/// An append body: `application/json` (or `+json`), at most the configured size, one JSON
/// object.
pub struct RecordBody(pub Record);

impl FromRequest<AppState> for RecordBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.limits.max_record_bytes;
        let too_large = ApiError::RecordTooLarge { limit };
        if let Some(len) = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            && len > limit as u64
        {
            return Err(too_large);
        }
        let body = axum::body::to_bytes(request.into_body(), limit)
            .await
            .map_err(|e| {
                let over_limit = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                if over_limit {
                    ApiError::RecordTooLarge { limit }
                } else {
                    ApiError::InvalidBody(e.to_string())
                }
            })?;
        Ok(RecordBody(Record::parse(&body)?))
    }
}
