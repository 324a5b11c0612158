//! `GET /health`: 200 when both stores answer, startup has finished with them (a service started
//! during a storage outage keeps retrying) and no circuit is open; 503 naming what failed with a
//! stable code per check (the cause is in the log, not on this unauthenticated route).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use crate::ledger::StoreCheck;
use crate::store::Backend;
use crate::store::breaker::CircuitState;

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
    backend: Backend,
    /// Per store: `ok`, `unavailable`, `circuit_open` or `corrupt`; `startup`: `ok`, or
    /// `pending` while the service waits for storage to answer to finish starting; `signing`:
    /// `ok`, or `off` when nothing is signed (a warning: it does not make the service unhealthy).
    checks: BTreeMap<&'static str, &'static str>,
    /// Circuit breaker state per dependency: `closed`, `open` or `half_open`.
    circuits: BTreeMap<&'static str, &'static str>,
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let storage = state.ledger.check_storage().await;
    let started = state.started.load(std::sync::atomic::Ordering::SeqCst);
    let checks = BTreeMap::from([
        ("objects", storage.objects.code()),
        ("index", storage.index.code()),
        ("startup", if started { "ok" } else { "pending" }),
        (
            "signing",
            if state.ledger.options().signer.is_some() {
                "ok"
            } else {
                "off"
            },
        ),
    ]);
    let mut healthy =
        started && storage.objects == StoreCheck::Ok && storage.index == StoreCheck::Ok;
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
            backend: storage.backend,
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
