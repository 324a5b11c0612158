//! `/v1/ledgers/{ledger_id}/records`: append (one, or a batch), read one, read a page, look
//! one up by its idempotency key.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::extract::{BatchBody, KeyHeader, LedgerPath, Params, RecordBody};
use super::{AppState, MAX_PAGE, Progress};
use crate::chain::entry::IdempotencyKey;
use crate::ledger::{Append, LedgerError, Receipt, RecordPage, StoredRecord};

const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// `POST`: 201 with the receipt once the record is written; 202 with the same receipt when it
/// is committed (seq and hash final) but storage failed before its object was written; 200
/// with `Idempotent-Replayed: true` and the original receipt when its `Idempotency-Key` was
/// committed before with the same record.
pub async fn append(
    State(state): State<AppState>,
    progress: Progress,
    path: LedgerPath,
    KeyHeader(key): KeyHeader,
    RecordBody(record): RecordBody,
) -> Result<Response, ApiError> {
    let appends = vec![Append::new(record, key)];
    let mut receipts = submit(&state, &progress, &path, appends).await?;
    let receipt = receipts.pop().expect("one receipt per record");
    let status = status_of(std::slice::from_ref(&receipt));
    let mut response = (status, Json(receipt)).into_response();
    if status == StatusCode::OK {
        response
            .headers_mut()
            .insert(REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Queues the appends, marks the request as queued (a timeout from then on says the outcome
/// is unknown), and waits for their batch.
async fn submit(
    state: &AppState,
    progress: &Progress,
    path: &LedgerPath,
    appends: Vec<Append>,
) -> Result<Vec<Receipt>, ApiError> {
    let submitted = state.ledger.submit(&path.ledger, appends)?;
    progress.queued();
    Ok(submitted.outcome().await?)
}

/// 202 if any record is not written out yet, else 200 if every one was replayed, else 201.
fn status_of(receipts: &[Receipt]) -> StatusCode {
    if receipts.iter().any(|r| !r.written_out) {
        StatusCode::ACCEPTED
    } else if receipts.iter().all(|r| r.replayed) {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

/// One receipt of a batch answer.
#[derive(Serialize)]
struct BatchReceipt {
    #[serde(flatten)]
    receipt: Receipt,
    /// Its key was committed before: this is the original receipt, nothing new was appended.
    replayed: bool,
}

/// The answer to a batch append.
#[derive(Serialize)]
struct BatchAnswer {
    receipts: Vec<BatchReceipt>,
}

/// `POST .../records:batch`: every record committed in one claim at consecutive seqs, or none
/// (any invalid item, or a key reused with another record, refuses the whole request). The
/// receipts are in request order; statuses as for one append (200 only if every record was
/// replayed).
pub async fn append_batch(
    State(state): State<AppState>,
    progress: Progress,
    path: LedgerPath,
    BatchBody(appends): BatchBody,
) -> Result<Response, ApiError> {
    let receipts = submit(&state, &progress, &path, appends).await?;
    let status = status_of(&receipts);
    let receipts = receipts
        .into_iter()
        .map(|receipt| BatchReceipt {
            replayed: receipt.replayed,
            receipt,
        })
        .collect();
    Ok((status, Json(BatchAnswer { receipts })).into_response())
}

/// `GET .../records/{seq}`.
pub async fn one(
    State(state): State<AppState>,
    path: LedgerPath,
) -> Result<Json<StoredRecord>, ApiError> {
    let seq = path.seq.ok_or(ApiError::InvalidSeq)?;
    match state.ledger.record(&path.ledger, seq).await {
        // An unknown ledger has no record either; one code keeps clients simple.
        Err(LedgerError::LedgerNotFound) => Err(LedgerError::RecordNotFound.into()),
        other => Ok(Json(other?)),
    }
}

/// `GET .../records?after=N&limit=M`: records with seq > N (default 0), at most M (default
/// 100, at most 1000). `GET .../records?idempotency_key=K`: the one record appended with key
/// `K` (404 `not_found` if none; 409 `idempotency_key_in_flight` while an append of it is
/// being committed). `after` and `limit` mean the same with a key: the record is found only
/// if its seq is greater than `after`, and one record is within any valid `limit`.
pub async fn page(
    State(state): State<AppState>,
    path: LedgerPath,
    params: Params,
) -> Result<Response, ApiError> {
    if let Some(key) = params.str("idempotency_key") {
        let key = IdempotencyKey::parse(key)
            .map_err(|e| ApiError::InvalidIdempotencyKey(e.to_string()))?;
        let params = params.only(&["idempotency_key", "after", "limit"])?;
        let (after, _) = page_bounds(&params)?;
        let not_found = |e| match e {
            LedgerError::LedgerNotFound => LedgerError::RecordNotFound,
            e => e,
        };
        let record = state
            .ledger
            .record_by_key(&path.ledger, &key)
            .await
            .map_err(not_found)?
            .filter(|record| record.seq > after)
            .ok_or(LedgerError::RecordNotFound)?;
        return Ok(Json(record).into_response());
    }
    Ok(Json(list(&state, &path, params).await?).into_response())
}

async fn list(state: &AppState, path: &LedgerPath, params: Params) -> Result<RecordPage, ApiError> {
    let params = params.only(&["after", "limit"])?;
    let (after, limit) = page_bounds(&params)?;
    Ok(state.ledger.records(&path.ledger, after, limit).await?)
}

/// `after` (default 0) and `limit` (default 100, 1 to [`MAX_PAGE`]) of a records request.
fn page_bounds(params: &Params) -> Result<(u64, usize), ApiError> {
    let after = params.u64("after")?.unwrap_or(0);
    let limit = params.u64("limit")?.unwrap_or(100);
    if !(1..=MAX_PAGE as u64).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok((after, limit as usize))
}
