//! The HTTP API (axum): routes, shared state, and the middleware around them.
//!
//! - [`error`]: the one error-to-response mapping.
//! - [`records`]: append, read one, read a page.
//! - [`ledgers`]: list ledgers, heads, verification; [`export`]: NDJSON export.
//! - [`checkpoints`]: signed checkpoints and the public keys.
//! - [`health`], [`metrics`]: `/health` and `/metrics` plus request metrics.

pub mod auth;
mod checkpoints;
pub mod error;
mod export;
mod extract;
mod health;
mod ledgers;
pub mod metrics;
mod records;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

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
    /// Token checks (`ELEANOR_LEDGER_AUTH=jwt`); `None` when auth is off.
    pub auth: Option<Arc<auth::Authenticator>>,
}

/// Request limits (from [`crate::config`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted append body (`ELEANOR_LEDGER_MAX_RECORD_BYTES`).
    pub max_record_bytes: usize,
    /// Time allowed for one request, verification excepted (`ELEANOR_LEDGER_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// With auth on, `/metrics` needs an auditor token too (`ELEANOR_LEDGER_METRICS_AUTH`).
    pub protect_metrics: bool,
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
        .route(
            "/v1/ledgers/{ledger_id}/checkpoints",
            post(checkpoints::create),
        )
        .route(
            "/v1/ledgers/{ledger_id}/checkpoints/latest",
            get(checkpoints::latest),
        )
        .route("/v1/keys", get(checkpoints::keys))
        .route("/health", get(health::health))
        .route("/livez", get(health::live))
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
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::default()))
        .layer(CatchPanicLayer::custom(|_| ApiError::Panic.into_response()))
        .with_state(state)
}

/// `x-request-id`: taken from the client when it sends one, else made here; echoed in the
/// response and carried by every log line of the request.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a random per-process prefix and a counter, unique without coordination.
#[derive(Clone)]
struct RequestIds {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> RequestIds {
        RequestIds {
            prefix: fastrand::u32(..),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}
