//! Signed checkpoints and the public keys that verify them.
//!
//! - `POST /v1/ledgers/{ledger_id}/checkpoints`: sign and store a checkpoint of the head.
//!   `201` with the new checkpoint, or `200` with the stored one when the head has not moved
//!   since it was made (one checkpoint per seq; its timestamp is the first signing's).
//! - `GET /v1/ledgers/{ledger_id}/checkpoints/latest`: the latest stored checkpoint.
//! - `GET /v1/keys`: the service's public key(s), hex, with their key ids.
//!
//! Without a signing key the POST answers `409 signing_disabled`; reading stored checkpoints
//! and the (then empty) key list still work.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::LedgerPath;
use crate::chain::checkpoint::{Checkpoint, KeyId};
use crate::ledger::LedgerError;

/// `POST .../checkpoints`.
pub async fn create(
    State(state): State<AppState>,
    path: LedgerPath,
) -> Result<impl IntoResponse, ApiError> {
    let (checkpoint, created) = state.ledger.checkpoint(&path.ledger).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(checkpoint)))
}

/// `GET .../checkpoints/latest`.
pub async fn latest(
    State(state): State<AppState>,
    path: LedgerPath,
) -> Result<Json<Checkpoint>, ApiError> {
    match state.ledger.latest_checkpoint(&path.ledger).await? {
        Some(checkpoint) => Ok(Json(checkpoint)),
        None => Err(LedgerError::CheckpointNotFound.into()),
    }
}

#[derive(Serialize)]
pub struct KeyList {
    keys: Vec<KeyBody>,
}

#[derive(Serialize)]
struct KeyBody {
    key_id: KeyId,
    /// The 32-byte Ed25519 public key, hex.
    public_key: String,
    algorithm: &'static str,
}

/// `GET /v1/keys`.
pub async fn keys(State(state): State<AppState>) -> Json<KeyList> {
    let keys = state
        .ledger
        .options()
        .signer
        .iter()
        .map(|s| KeyBody {
            key_id: s.key_id(),
            public_key: s.public_key().to_hex(),
            algorithm: "Ed25519",
        })
        .collect();
    Json(KeyList { keys })
}
