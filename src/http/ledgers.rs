//! `/v1/ledgers`: the list of ledgers, heads and verification.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;

use super::auth::{Claims, Ledgers};
use super::error::ApiError;
use super::extract::{LedgerPath, Params};
use super::{AppState, MAX_PAGE};
use crate::chain::entry::LedgerId;
use crate::chain::hash::Hash;
use crate::ledger::{LedgerSummary, VerifyRange, VerifyReport};

#[derive(Serialize)]
pub struct LedgerList {
    ledgers: Vec<LedgerSummary>,
    /// Pass as `after` for the next page; `null` on the last one.
    next_after: Option<LedgerId>,
}

/// `GET /v1/ledgers?after=ID&limit=N`: with auth on, only the ledgers the token covers.
pub async fn list(
    State(state): State<AppState>,
    claims: Option<Extension<Arc<Claims>>>,
    params: Params,
) -> Result<Json<LedgerList>, ApiError> {
    let params = params.only(&["after", "limit"])?;
    let limit = params.u64("limit")?.unwrap_or(MAX_PAGE as u64);
    if !(1..=MAX_PAGE as u64).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let after = match params.str("after") {
        Some(a) => Some(LedgerId::parse(a).map_err(|_| ApiError::InvalidLedgerId)?),
        None => None,
    };
    let limit = limit as usize;
    let (ledgers, more) = match claims.as_deref().map(|c| &c.ledgers) {
        None | Some(Ledgers::All) => {
            let ledgers = state.ledger.ledgers(after.as_ref(), limit).await?;
            // A full page may have more after it.
            let more = ledgers.len() == limit;
            (ledgers, more)
        }
        // Only the token's own ledgers are looked at, so neither the page nor `next_after`
        // can name another (ids in the token that are not valid ledger ids name none).
        Some(Ledgers::Only(ids)) => {
            let ids: Vec<LedgerId> = ids
                .iter()
                .filter_map(|id| LedgerId::parse(id).ok())
                .collect();
            state
                .ledger
                .ledgers_among(&ids, after.as_ref(), limit)
                .await?
        }
    };
    let next_after = more
        .then(|| ledgers.last().map(|l| l.ledger_id.clone()))
        .flatten();
    Ok(Json(LedgerList {
        ledgers,
        next_after,
    }))
}

#[derive(Serialize)]
pub struct HeadBody {
    ledger_id: LedgerId,
    seq: u64,
    last_hash: Hash,
}

/// `GET /v1/ledgers/{ledger_id}/head`.
pub async fn head(
    State(state): State<AppState>,
    path: LedgerPath,
) -> Result<Json<HeadBody>, ApiError> {
    let head = state.ledger.head(&path.ledger).await?;
    Ok(Json(HeadBody {
        ledger_id: path.ledger,
        seq: head.seq,
        last_hash: head.last_hash,
    }))
}

/// `GET /v1/ledgers/{ledger_id}/verify?from=A&to=B`.
pub async fn verify(
    State(state): State<AppState>,
    path: LedgerPath,
    params: Params,
) -> Result<Json<VerifyReport>, ApiError> {
    let params = params.only(&["from", "to"])?;
    let range = VerifyRange {
        from: params.u64("from")?,
        to: params.u64("to")?,
    };
    Ok(Json(state.ledger.verify(&path.ledger, range).await?))
}
