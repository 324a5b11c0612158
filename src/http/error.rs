//! The one mapping from errors to HTTP responses.
//!
//! Every error body is `{"error": {"code": "<stable_snake_case>", "message": "<what to do>"}}`.
//! Codes are API: clients branch on them. 5xx bodies say what happened in general terms; the
//! cause is logged, never sent.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::TokenError;
use crate::chain::entry::InvalidRecord;
use crate::ledger::LedgerError;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("ledger ids are 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")]
    InvalidLedgerId,
    #[error("seq must be a positive integer, like /records/1")]
    InvalidSeq,
    #[error("invalid query parameter: {0}")]
    InvalidQuery(String),
    #[error("{0}")]
    InvalidRecord(InvalidRecord),
    #[error("could not read the request body: {0}")]
    InvalidBody(String),
    #[error("the record is larger than the limit of {limit} bytes; send a smaller event")]
    RecordTooLarge { limit: usize },
    #[error("invalid Idempotency-Key: {0}")]
    InvalidIdempotencyKey(String),
    #[error("{}{detail}; nothing was appended", index.map_or_else(String::new, |i| format!("record {i}: ")))]
    InvalidBatch {
        /// The item's index in the request (0-based), when one item is at fault.
        index: Option<usize>,
        detail: String,
    },
    #[error("{0}; nothing was appended")]
    BatchTooLarge(String),
    #[error(
        "the request carries both Content-Length and Transfer-Encoding, which disagree on where it ends (RFC 9112 section 6.1); send one of them; nothing was done"
    )]
    ConflictingLength,
    #[error("send the record as JSON with 'Content-Type: application/json'")]
    UnsupportedMediaType,
    #[error("no such route; see the API in README.md")]
    RouteNotFound,
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    /// Timed out before any append of it was queued.
    #[error(
        "the request took longer than {0:?} and was stopped before anything was appended; retry it"
    )]
    Timeout(Duration),
    /// Timed out while its body was still arriving.
    #[error(
        "the request body did not arrive within {0:?}; nothing was appended; send the body at once, or fewer records per request"
    )]
    BodyTimeout(Duration),
    /// Timed out after its appends were queued: they may still be committed.
    #[error(
        "the append was queued and its batch had not finished within {0:?}; it may still be committed: retry with the same Idempotency-Key (a retry never appends twice), or without a key look the record up before appending it again"
    )]
    CommitPending(Duration),
    #[error(
        "the server is processing as many requests as it may (ELEANOR_LEDGER_MAX_IN_FLIGHT); nothing was done, retry later"
    )]
    ServerBusy,
    #[error("{0}")]
    Unauthenticated(TokenError),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("internal error")]
    Panic,
}

impl From<InvalidRecord> for ApiError {
    fn from(e: InvalidRecord) -> ApiError {
        ApiError::InvalidRecord(e)
    }
}

impl ApiError {
    /// The status and stable code of every error, in one exhaustive match.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use LedgerError as L;
        match self {
            ApiError::InvalidLedgerId => (StatusCode::BAD_REQUEST, "invalid_ledger_id"),
            ApiError::InvalidSeq => (StatusCode::BAD_REQUEST, "invalid_seq"),
            ApiError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "invalid_query"),
            ApiError::InvalidRecord(_) => (StatusCode::BAD_REQUEST, "invalid_record"),
            ApiError::InvalidBody(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
            ApiError::RecordTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "record_too_large"),
            ApiError::InvalidIdempotencyKey(_) => {
                (StatusCode::BAD_REQUEST, "invalid_idempotency_key")
            }
            ApiError::InvalidBatch { .. } => (StatusCode::BAD_REQUEST, "invalid_batch"),
            ApiError::BatchTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            ApiError::ConflictingLength => (StatusCode::BAD_REQUEST, "conflicting_length"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RouteNotFound => (StatusCode::NOT_FOUND, "route_not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::CommitPending(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
            ApiError::ServerBusy => (StatusCode::SERVICE_UNAVAILABLE, "server_busy"),
            ApiError::Panic => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            ApiError::Unauthenticated(TokenError::Missing) => {
                (StatusCode::UNAUTHORIZED, "unauthenticated")
            }
            ApiError::Unauthenticated(TokenError::Invalid(_)) => {
                (StatusCode::UNAUTHORIZED, "invalid_token")
            }
            ApiError::Unauthenticated(TokenError::NotYetValid(_)) => {
                (StatusCode::UNAUTHORIZED, "token_not_yet_valid")
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Ledger(e) => match e {
                L::LedgerNotFound => (StatusCode::NOT_FOUND, "ledger_not_found"),
                L::RecordNotFound => (StatusCode::NOT_FOUND, "not_found"),
                L::InvalidRange(_) => (StatusCode::BAD_REQUEST, "invalid_range"),
                L::LedgerFull => (StatusCode::CONFLICT, "ledger_full"),
                L::LedgerLimitReached { .. } => (StatusCode::FORBIDDEN, "ledger_limit_reached"),
                L::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
                L::Contention => (StatusCode::SERVICE_UNAVAILABLE, "contention"),
                L::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                L::Unavailable { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "dependency_unavailable")
                }
                L::OutcomeUnknown(_) => (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown"),
                L::Throttled { .. } => (StatusCode::SERVICE_UNAVAILABLE, "throttled"),
                L::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "integrity_error"),
                // Permanent until the server is configured with a key: not a 5xx to retry.
                L::SigningDisabled => (StatusCode::CONFLICT, "signing_disabled"),
                L::CheckpointNotFound => (StatusCode::NOT_FOUND, "checkpoint_not_found"),
                L::IdempotencyKeyReused { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
                }
                L::IdempotencyKeyInFlight => (StatusCode::CONFLICT, "idempotency_key_in_flight"),
                L::KeyRepeatedInRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_batch"),
                L::BatchTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large"),
            },
        }
    }

    /// The message sent to the client: specific for client errors, general for server ones.
    fn message(&self) -> String {
        use LedgerError as L;
        match self {
            ApiError::Ledger(L::LedgerNotFound) => {
                "the ledger does not exist; it is created by its first append unless auto-create is off".into()
            }
            ApiError::Ledger(L::RecordNotFound) => "no record with that seq in this ledger".into(),
            ApiError::Ledger(L::SigningDisabled) => {
                "this server has no signing key (ELEANOR_LEDGER_SIGNING_KEY_FILE is unset), so it signs no checkpoints or receipts".into()
            }
            ApiError::Ledger(L::CheckpointNotFound) => {
                "the ledger has no checkpoint yet; POST /v1/ledgers/{ledger_id}/checkpoints makes one".into()
            }
            ApiError::Ledger(L::Unavailable { dependency, .. }) => {
                format!("the storage backend ({dependency}) is unavailable; nothing was committed, retry later")
            }
            ApiError::Ledger(L::OutcomeUnknown(_)) => {
                "storage failed while committing and the outcome is unknown; retry with the same Idempotency-Key (a retry never appends twice), or without a key look the record up before appending it again".into()
            }
            ApiError::Ledger(L::Throttled { dependency, .. }) => format!(
                "the index ({dependency}) is throttling writes to this ledger; retry after Retry-After seconds with the same Idempotency-Key (the append may still be committed, and a retry with its key never appends twice; without a key, look the record up before appending it again)"
            ),
            ApiError::Ledger(L::Contention) => {
                "too many writers are appending to this ledger at once; nothing was committed, retry later".into()
            }
            ApiError::Ledger(L::Overloaded) => "too many appends are waiting for this ledger; retry later".into(),
            ApiError::Ledger(L::Corrupt { seq, .. }) => format!(
                "stored data failed an integrity check ({}); nothing was changed; an operator must run verification",
                seq.map_or_else(|| "seq unknown".to_owned(), |s| format!("seq {s}"))
            ),
            other => other.to_string(),
        }
    }

    /// The index of the batch item at fault, sent as `error.index`.
    fn index(&self) -> Option<usize> {
        match self {
            ApiError::InvalidBatch { index, .. } => *index,
            ApiError::Ledger(LedgerError::IdempotencyKeyReused { index, .. }) => *index,
            ApiError::Ledger(LedgerError::KeyRepeatedInRequest { index, .. }) => Some(*index),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Timeout(_)
            | ApiError::CommitPending(_)
            | ApiError::ServerBusy
            | ApiError::Ledger(
                LedgerError::IdempotencyKeyInFlight
                | LedgerError::Overloaded
                | LedgerError::Contention
                | LedgerError::ShuttingDown
                | LedgerError::Unavailable { .. }
                | LedgerError::OutcomeUnknown(_),
            ) => Some(1),
            // DynamoDB refills a partition's capacity every second; adaptive clients spread out.
            ApiError::Ledger(LedgerError::Throttled { .. }) => Some(2),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(code, error = %self, "request failed");
        }
        let mut error = json!({ "code": code, "message": self.message() });
        if let Some(index) = self.index() {
            error["index"] = json!(index);
        }
        let body = Json(json!({ "error": error }));
        let mut response = (status, body).into_response();
        if let ApiError::Unauthenticated(e) = &self {
            let challenge = match e {
                TokenError::Missing => r#"Bearer realm="eleanor-ledger""#,
                TokenError::Invalid(_) | TokenError::NotYetValid(_) => {
                    r#"Bearer realm="eleanor-ledger", error="invalid_token""#
                }
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(secs) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
