//! The HTTP API (axum): routes, shared state, and the middleware around them.
//!
//! - [`error`]: the one error-to-response mapping.
//! - [`records`]: append, read one, read a page.
//! - [`ledgers`]: list ledgers, heads, verification; [`export`]: NDJSON export.
//! - [`health`], [`metrics`]: `/health` and `/metrics` plus request metrics.

pub mod error;
mod export;
mod extract;
mod health;
mod ledgers;
pub mod metrics;
mod records;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::ledger::Ledger;
use crate::store::breaker::CircuitBreaker;
use error::ApiError;
use metrics::HttpMetrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub ledger: Ledger,
    pub metrics: Arc<HttpMetrics>,
    pub registry: prometheus::Registry,
    pub limits: Limits,
    /// One circuit breaker per storage dependency, for `/health`.
    pub circuits: Vec<Arc<CircuitBreaker>>,
}

/// Request limits (from [`crate::config`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted append body (`ELEANOR_LEDGER_MAX_RECORD_BYTES`).
    pub max_record_bytes: usize,
    /// Time allowed for one request, verification excepted (`ELEANOR_LEDGER_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
}

/// Largest `limit` a page request may ask for.
pub const MAX_PAGE: usize = 1000;

/// The whole API.
pub fn router(state: AppState) -> Router {
    let timed = Router::new()
        .route("/v1/ledgers", get(ledgers::list))
        .route("/v1/ledgers/{ledger_id}/head", get(ledgers::head))
        .route(
            "/v1/ledgers/{ledger_id}/records",
            post(records::append).get(records::page),
        )
        .route("/v1/ledgers/{ledger_id}/records/{seq}", get(records::one))
        .route("/health", get(health::health))
        .route("/metrics", get(metrics::export))
        .route_layer(middleware::from_fn_with_state(state.clone(), timeout));
    // Verification and export read the whole range it is asked for, however long that takes.
    let untimed = Router::new()
        .route("/v1/ledgers/{ledger_id}/verify", get(ledgers::verify))
        .route("/v1/ledgers/{ledger_id}/export", get(export::export));
    timed
        .merge(untimed)
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| ApiError::Panic.into_response()))
        .with_state(state)
}

async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}
