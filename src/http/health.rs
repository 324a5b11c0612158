//! `GET /health`: 200 when both stores answer and no circuit is open; 503 naming what failed.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use crate::store::breaker::CircuitState;

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    backend: &'static str,
    /// `"ok"` or what went wrong, per store.
    checks: BTreeMap<&'static str, String>,
    /// Circuit breaker state per dependency: `closed`, `open` or `half_open`.
    circuits: BTreeMap<&'static str, &'static str>,
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
    let mut circuits = BTreeMap::new();
    for circuit in &state.circuits {
        let circuit_state = circuit.state();
        healthy &= circuit_state != CircuitState::Open;
        circuits.insert(circuit.dependency(), circuit_state.as_str());
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
            circuits,
        }),
    )
}

/// `GET /livez`: 200 while the process serves requests, whatever its dependencies do. For
/// liveness probes: restarting a pod cures no storage outage.
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}
