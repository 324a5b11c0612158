//! `GET /v1/ledgers/{ledger_id}/export?from=&to=`: the entries' exact stored bytes as NDJSON,
//! streamed, for offline verification (`scripts/verify_chain.py --jsonl`).
//!
//! One line per entry: `{"seq", "stored" (base64 of the stored bytes), "entry_hash",
//! "prev_hash", "timestamp"}`, the last three being what the index recorded. A line without
//! `stored` means the index names an object that cannot be read. A storage error mid-stream
//! aborts the response, so a truncated export can never pass for a complete one.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::{LedgerPath, Params};
use crate::chain::entry::Timestamp;
use crate::chain::hash::Hash;
use crate::ledger::ExportedEntry;

#[derive(Serialize)]
struct Line {
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    stored: Option<String>,
    entry_hash: Hash,
    prev_hash: Hash,
    timestamp: Timestamp,
}

fn line(entry: &ExportedEntry) -> Vec<u8> {
    let line = Line {
        seq: entry.item.seq,
        stored: entry
            .stored
            .as_ref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
        entry_hash: entry.item.entry_hash,
        prev_hash: entry.item.prev_hash,
        timestamp: entry.item.timestamp,
    };
    let mut out = serde_json::to_vec(&line).expect("an export line always serialises");
    out.push(b'\n');
    out
}

pub async fn export(
    State(state): State<AppState>,
    path: LedgerPath,
    params: Params,
) -> Result<Response, ApiError> {
    let params = params.only(&["from", "to"])?;
    let from = params.u64("from")?.unwrap_or(1);
    let entries = state
        .ledger
        .export(&path.ledger, from, params.u64("to")?)
        .await?;
    let body = Body::from_stream(entries.map(|entry| entry.map(|e| line(&e))));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
