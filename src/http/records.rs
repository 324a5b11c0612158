//! `/v1/ledgers/{ledger_id}/records`: append, read one, read a page.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::error::ApiError;
use super::extract::{LedgerPath, Params, RecordBody};
use super::{AppState, MAX_PAGE};
use crate::ledger::{LedgerError, RecordPage, StoredRecord};

/// `POST`: 201 with the receipt once the record is written; 202 with the same receipt when it
/// is committed (seq and hash final) but storage failed before its object was written.
pub async fn append(
    State(state): State<AppState>,
    path: LedgerPath,
    RecordBody(record): RecordBody,
) -> Result<impl IntoResponse, ApiError> {
    let receipt = state.ledger.append(&path.ledger, record).await?;
    let status = if receipt.written_out {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(receipt)))
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
/// 100, at most 1000).
pub async fn page(
    State(state): State<AppState>,
    path: LedgerPath,
    params: Params,
) -> Result<Json<RecordPage>, ApiError> {
    let params = params.only(&["after", "limit"])?;
    let after = params.u64("after")?.unwrap_or(0);
    let limit = params.u64("limit")?.unwrap_or(100);
    if !(1..=MAX_PAGE as u64).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    Ok(Json(
        state
            .ledger
            .records(&path.ledger, after, limit as usize)
            .await?,
    ))
}
