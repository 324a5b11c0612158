//! Extractors whose rejections use the API's own error body.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Query, RawPathParams, Request};
use axum::http::{header, request::Parts};

use super::AppState;
use super::error::ApiError;
use crate::chain::entry::{IdempotencyKey, LedgerId, Record};
use crate::ledger::Append;

/// The `{ledger_id}` (and, where the route has one, `{seq}`) path parameters, percent-decoded
/// and validated. Read once per request: the auth middleware authorises the ledger it names
/// and leaves it in the request's extensions, where the handler finds that same value.
#[derive(Debug, Clone)]
pub struct LedgerPath {
    pub ledger: LedgerId,
    pub seq: Option<u64>,
}

impl FromRequestParts<AppState> for LedgerPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(path) = parts.extensions.get::<LedgerPath>() {
            return Ok(path.clone());
        }
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

/// Query parameters, read by name with typed accessors. A parameter given more than once
/// (`?from=1&from=2`) is refused: which one was meant is a guess, and a guess is no answer
/// for an audit ledger.
pub struct Params(HashMap<String, String>);

impl FromRequestParts<AppState> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
        Params::from_pairs(pairs)
    }
}

impl Params {
    /// The parameters, each name at most once.
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Params, ApiError> {
        let mut map = HashMap::with_capacity(pairs.len());
        for (name, value) in pairs {
            if map.contains_key(&name) {
                return Err(ApiError::InvalidQuery(format!(
                    "parameter {name:?} is given more than once; give each parameter once"
                )));
            }
            map.insert(name, value);
        }
        Ok(Params(map))
    }

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
        if media_type(&request).is_none_or(|m| !is_json(&m)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.limits.max_record_bytes;
        let body = read_body(request, limit, ApiError::RecordTooLarge { limit }).await?;
        Ok(RecordBody(Record::parse(&body)?))
    }
}

/// The `Idempotency-Key` header, if sent (IETF httpapi draft "The Idempotency-Key HTTP Header
/// Field"). Its value is the key as it is, or the draft's Structured Field string form
/// (`"..."`, with `\"` and `\\` escapes), which is unquoted.
pub struct KeyHeader(pub Option<IdempotencyKey>);

impl FromRequestParts<AppState> for KeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let Some(value) = values.next() else {
            return Ok(KeyHeader(None));
        };
        if values.next().is_some() {
            return Err(ApiError::InvalidIdempotencyKey(
                "send one Idempotency-Key header, not several".into(),
            ));
        }
        let text = value.to_str().map_err(|_| {
            ApiError::InvalidIdempotencyKey("the key must be printable ASCII".into())
        })?;
        let key = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(quoted) => unquote(quoted).ok_or_else(|| {
                ApiError::InvalidIdempotencyKey(
                    "a quoted key may escape only '\"' and '\\' with a backslash".into(),
                )
            })?,
            _ => text.to_owned(),
        };
        let key = IdempotencyKey::parse(&key)
            .map_err(|e| ApiError::InvalidIdempotencyKey(e.to_string()))?;
        Ok(KeyHeader(Some(key)))
    }
}

/// The content of a Structured Field string (RFC 8941 section 3.3.3) without its quotes.
fn unquote(quoted: &str) -> Option<String> {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                c @ ('"' | '\\') => out.push(c),
                _ => return None,
            },
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// A batch append body: a JSON array (`application/json`) or NDJSON lines
/// (`application/x-ndjson`) of items `{"record": {...}, "idempotency_key": "..."}`, the key
/// optional. At most the configured bytes and records; any bad item refuses the whole request,
/// naming its index (0-based).
pub struct BatchBody(pub Vec<Append>);

/// One item of a batch body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem<'a> {
    #[serde(borrow)]
    record: &'a serde_json::value::RawValue,
    /// A string when present: `null` is refused, not read as "no key".
    #[serde(default, borrow, deserialize_with = "present_key")]
    idempotency_key: Option<std::borrow::Cow<'a, str>>,
}

/// An `idempotency_key` that is there is a string (serde's `Option` would take `null` as none).
fn present_key<'de, D>(d: D) -> Result<Option<std::borrow::Cow<'de, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(serde::Deserialize)]
    struct Key<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);
    <Key<'de> as serde::Deserialize>::deserialize(d).map(|Key(key)| Some(key))
}

impl FromRequest<AppState> for BatchBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let ndjson = match media_type(&request) {
            Some(m) if is_json(&m) => false,
            Some(m) if m == "application/x-ndjson" => true,
            _ => return Err(ApiError::UnsupportedMediaType),
        };
        if request.headers().contains_key("idempotency-key") {
            return Err(ApiError::InvalidIdempotencyKey(
                "a batch takes a key per record (\"idempotency_key\" beside each \"record\"), not an Idempotency-Key header".into(),
            ));
        }
        let limits = state.limits;
        let too_large = ApiError::BatchTooLarge(format!(
            "the body is larger than the limit of {} bytes (ELEANOR_LEDGER_BATCH_REQUEST_MAX_BYTES); send fewer records per request",
            limits.max_batch_bytes
        ));
        let body = read_body(request, limits.max_batch_bytes, too_large).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|e| ApiError::InvalidBody(format!("the body is not UTF-8: {e}")))?;
        let items: Vec<&str> = if ndjson {
            text.split('\n')
                .map(|line| line.strip_suffix('\r').unwrap_or(line))
                .filter(|line| !line.trim().is_empty())
                .collect()
        } else {
            let array: Vec<&serde_json::value::RawValue> =
                serde_json::from_str(text).map_err(|e| ApiError::InvalidBatch {
                    index: None,
                    detail: format!("the body must be a JSON array of items: {e}"),
                })?;
            array.into_iter().map(|raw| raw.get()).collect()
        };
        if items.is_empty() {
            return Err(ApiError::InvalidBatch {
                index: None,
                detail: "the batch holds no records".into(),
            });
        }
        if items.len() > limits.max_batch_records {
            return Err(ApiError::BatchTooLarge(format!(
                "the batch holds {} records, more than the limit of {} (ELEANOR_LEDGER_BATCH_REQUEST_MAX_RECORDS); split it",
                items.len(),
                limits.max_batch_records
            )));
        }
        let appends = items
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let bad = |detail: String| ApiError::InvalidBatch {
                    index: Some(index),
                    detail,
                };
                let item: BatchItem<'_> = serde_json::from_str(item).map_err(|e| {
                    bad(format!(
                        "each item is {{\"record\": {{...}}, \"idempotency_key\": \"...\"}} (the key optional): {e}"
                    ))
                })?;
                let record = Record::parse(item.record.get().as_bytes())
                    .map_err(|e| bad(e.to_string()))?;
                if record.as_str().len() > limits.max_record_bytes {
                    return Err(bad(format!(
                        "the record is larger than the limit of {} bytes",
                        limits.max_record_bytes
                    )));
                }
                let key = item
                    .idempotency_key
                    .map(|k| IdempotencyKey::parse(&k))
                    .transpose()
                    .map_err(|e| bad(e.to_string()))?;
                Ok(Append::new(record, key))
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        Ok(BatchBody(appends))
    }
}

/// The request's media type, lower case, without parameters.
fn media_type(request: &Request) -> Option<String> {
    let value = request.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next()?.trim().to_ascii_lowercase())
}

fn is_json(mime: &str) -> bool {
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The whole body, refused with `too_large` beyond `limit` bytes (by `Content-Length` before
/// reading, or while reading).
async fn read_body(
    request: Request,
    limit: usize,
    too_large: ApiError,
) -> Result<bytes::Bytes, ApiError> {
    if let Some(len) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large);
    }
    let progress = request.extensions().get::<super::Progress>().cloned();
    let body = axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| {
            let over_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if over_limit {
                too_large
            } else {
                ApiError::InvalidBody(e.to_string())
            }
        })?;
    if let Some(progress) = progress {
        progress.received();
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_repeated_query_parameter_is_refused_not_last_one_wins() {
        let err = Params::from_pairs(pairs(&[("from", "1"), ("from", "2")]))
            .err()
            .unwrap();
        assert!(
            matches!(&err, ApiError::InvalidQuery(m) if m.contains("\"from\" is given more than once")),
            "{err}"
        );
        let params = Params::from_pairs(pairs(&[("from", "1"), ("to", "2")])).unwrap();
        assert_eq!(
            (params.u64("from").unwrap(), params.u64("to").unwrap()),
            (Some(1), Some(2))
        );
    }
}
