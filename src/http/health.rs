//! `GET /health`: 200 when both stores answer, 503 naming the check that failed.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    backend: &'static str,
    checks: BTreeMap<&'static str, String>,
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let stores = state.ledger.stores();
    let (objects, index) = tokio::join!(stores.objects.check(), stores.index.check());
    let mut healthy = true;
    let mut checks = BTreeMap::new();
    for (name, result) in [("objects", objects), ("index", index)] {
        let text = match result {
            Ok(()) => "ok".to_owned(),
            Err(e) => {
                healthy = false;
                e.to_string()
            }
        };
        checks.insert(name, text);
    }
    let (status, text) = if healthy {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    };
    (
        status,
        Json(Health {
            status: text,
            backend: stores.backend,
            checks,
        }),
    )
}
