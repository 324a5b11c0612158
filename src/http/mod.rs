//! The HTTP API (axum): routes, shared state, and the middleware around them.
//!
//! - [`error`]: the one error-to-response mapping.
//! - [`records`]: append, read one, read a page.
//! - [`ledgers`]: list ledgers, heads, verification; [`export`]: NDJSON export.
//! - [`checkpoints`]: signed checkpoints and the public keys.
//! - [`health`], [`metrics`]: `/health` and `/metrics` plus request metrics.
//! - [`limit`]: load shedding beyond `ELEANOR_LEDGER_MAX_IN_FLIGHT`.
//! - [`openapi`]: `GET /openapi.json`, the OpenAPI document of every route in [`route_list`].
//! - [`serve`]: the connection loop under it all (HTTP/1.1; head and idle deadlines, the
//!   connection cap, conflicting length headers).

pub mod auth;
mod checkpoints;
pub mod error;
mod export;
mod extract;
mod health;
mod ledgers;
mod limit;
pub mod metrics;
mod openapi;
mod records;
pub mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderName, HeaderValue, Method, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

use crate::ledger::Ledger;
use crate::store::breaker::CircuitBreaker;
use error::ApiError;
use metrics::HttpMetrics;

/// What every handler can reach: one shared [`Shared`], so cloning it (which the router does
/// per request and per middleware) is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The state behind [`AppState`].
pub struct Shared {
    pub ledger: Ledger,
    pub metrics: Arc<HttpMetrics>,
    pub registry: prometheus::Registry,
    pub limits: Limits,
    /// One circuit breaker per storage dependency, for `/health`.
    pub circuits: Vec<Arc<CircuitBreaker>>,
    /// Token checks (`ELEANOR_LEDGER_AUTH=jwt`); `None` when auth is off.
    pub auth: Option<Arc<auth::Authenticator>>,
    /// The storage part of startup (stores answer, interrupted batches finished) is done;
    /// until it is, `/health` is `503` with `startup: pending`.
    pub started: Arc<std::sync::atomic::AtomicBool>,
}

/// Request limits (from [`crate::config`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted append body (`ELEANOR_LEDGER_MAX_RECORD_BYTES`).
    pub max_record_bytes: usize,
    /// Largest batch append body (`ELEANOR_LEDGER_BATCH_REQUEST_MAX_BYTES`).
    pub max_batch_bytes: usize,
    /// Most records in one batch append (`ELEANOR_LEDGER_BATCH_REQUEST_MAX_RECORDS`).
    pub max_batch_records: usize,
    /// Time allowed for one request, verification excepted (`ELEANOR_LEDGER_REQUEST_TIMEOUT_MS`).
    pub request_timeout: Duration,
    /// With auth on, `/metrics` needs a metrics, auditor or admin token
    /// (`ELEANOR_LEDGER_METRICS_AUTH`, on by default: its labels name ledgers).
    pub protect_metrics: bool,
    /// API requests processed at once; more are shed with `503 server_busy`
    /// (`ELEANOR_LEDGER_MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
}

/// Largest `limit` a page request may ask for.
pub const MAX_PAGE: usize = 1000;

/// What guards a route besides authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// A `/v1` route: counted against the in-flight cap, bounded by the request timeout.
    Api,
    /// Verification and export: counted, but they read the whole range they are asked for,
    /// however long that takes.
    ApiUntimed,
    /// Probes, metrics and the OpenAPI document: timed, never shed.
    Ops,
}

/// One route: the router is built from [`routes`], and [`route_list`] (which the OpenAPI
/// document is tested against) reads the same table, so the two cannot drift apart.
struct Route {
    method: Method,
    path: &'static str,
    guard: Guard,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, guard: Guard, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone())
        .expect("every method the API uses has a method filter");
    Route {
        method,
        path,
        guard,
        handler: on(filter, handler),
    }
}

/// Every route the API serves.
#[rustfmt::skip] // a table reads better one route to a line
fn routes() -> Vec<Route> {
    use Guard::{Api, ApiUntimed, Ops};
    const RECORDS: &str = "/v1/ledgers/{ledger_id}/records";
    vec![
        route(Method::GET, "/v1/ledgers", Api, ledgers::list),
        route(Method::GET, "/v1/ledgers/{ledger_id}/head", Api, ledgers::head),
        route(Method::POST, RECORDS, Api, records::append),
        route(Method::GET, RECORDS, Api, records::page),
        route(Method::POST, "/v1/ledgers/{ledger_id}/records:batch", Api, records::append_batch),
        route(Method::GET, "/v1/ledgers/{ledger_id}/records/{seq}", Api, records::one),
        route(Method::POST, "/v1/ledgers/{ledger_id}/checkpoints", Api, checkpoints::create),
        route(Method::GET, "/v1/ledgers/{ledger_id}/checkpoints/latest", Api, checkpoints::latest),
        route(Method::GET, "/v1/keys", Api, checkpoints::keys),
        route(Method::GET, "/v1/ledgers/{ledger_id}/verify", ApiUntimed, ledgers::verify),
        route(Method::GET, "/v1/ledgers/{ledger_id}/export", ApiUntimed, export::export),
        route(Method::GET, "/health", Ops, health::health),
        route(Method::GET, "/livez", Ops, health::live),
        route(Method::GET, "/metrics", Ops, metrics::export),
        route(Method::GET, "/openapi.json", Ops, openapi::document),
    ]
}

/// `(method, path template)` of every route the router serves, in the router's own syntax
/// (`{ledger_id}`), which is also OpenAPI's.
pub fn route_list() -> Vec<(Method, &'static str)> {
    routes().into_iter().map(|r| (r.method, r.path)).collect()
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let (mut api, mut untimed, mut ops) = (Router::new(), Router::new(), Router::new());
    for r in routes() {
        let group = match r.guard {
            Guard::Api => &mut api,
            Guard::ApiUntimed => &mut untimed,
            Guard::Ops => &mut ops,
        };
        *group = std::mem::take(group).route(r.path, r.handler);
    }
    let timeout = middleware::from_fn_with_state(state.clone(), timeout);
    let shed = middleware::from_fn_with_state(
        limit::InFlight::new(state.limits.max_in_flight),
        limit::shed,
    );
    api.route_layer(timeout.clone())
        .route_layer(shed.clone())
        .merge(untimed.route_layer(shed))
        .merge(ops.route_layer(timeout))
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), auth::require))
        .layer(middleware::from_fn(refuse_conflicting_length))
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
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RequestIds::default()))
        .layer(middleware::from_fn(bound_request_id))
        .layer(CatchPanicLayer::custom(|_| ApiError::Panic.into_response()))
        .with_state(state)
}

/// `x-request-id`: taken from the client when it sends one, else made here; echoed in the
/// response and carried by every log line of the request.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-chosen request id kept.
const MAX_REQUEST_ID: usize = 128;

/// A client's `x-request-id` is kept (logged and echoed) only if it is one header of 1 to
/// [`MAX_REQUEST_ID`] visible ASCII characters; any other is dropped, and one is made here.
async fn bound_request_id(mut request: Request, next: Next) -> Response {
    let ids = request.headers().get_all(REQUEST_ID);
    let acceptable = ids.iter().count() == 1
        && ids.iter().all(|v| {
            (1..=MAX_REQUEST_ID).contains(&v.len()) && v.as_bytes().iter().all(u8::is_ascii_graphic)
        });
    if !acceptable {
        request.headers_mut().remove(REQUEST_ID);
    }
    next.run(request).await
}

/// A request [`serve`] found to carry both `Content-Length` and `Transfer-Encoding` is
/// answered `400` (logged and counted like any other; hyper closes the connection after it).
async fn refuse_conflicting_length(request: Request, next: Next) -> Response {
    if request
        .extensions()
        .get::<serve::ConflictingLength>()
        .is_some()
    {
        return ApiError::ConflictingLength.into_response();
    }
    next.run(request).await
}

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

/// One line per response: at warn for client errors, else at debug (probes and scrapes
/// included: at full load an info line per append is gigabytes a day). A server error is
/// logged once, at error and with its cause, where it is answered ([`error`]).
fn log_response(response: &Response, latency: Duration, _: &tracing::Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    if response.status().is_client_error() {
        tracing::warn!(status, latency_ms, "request refused");
    } else {
        tracing::debug!(status, latency_ms, "request done");
    }
}

/// How far a request has got, so that its timeout answers truthfully ([`timeout`]).
#[derive(Clone, Default)]
pub struct Progress(Arc<AtomicU8>);

/// Still reading the request's body: a timeout is the client's (`408`).
const RECEIVING: u8 = 0;
/// Being handled: a timeout means nothing was appended (`503 timeout`).
const HANDLING: u8 = 1;
/// Appends queued for a batch ([`crate::ledger::Ledger::submit`]): they may still be
/// committed, so a timeout says the outcome is unknown (`503 outcome_unknown`).
const QUEUED: u8 = 2;

impl Progress {
    /// The body is read.
    pub fn received(&self) {
        self.0.fetch_max(HANDLING, Ordering::SeqCst);
    }

    /// The request's appends are queued.
    pub fn queued(&self) {
        self.0.store(QUEUED, Ordering::SeqCst);
    }
}

/// The request's [`Progress`] (a detached one outside the timed routes).
impl<S: Send + Sync> FromRequestParts<S> for Progress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Progress>()
            .cloned()
            .unwrap_or_default())
    }
}

/// Bounds a request by `ELEANOR_LEDGER_REQUEST_TIMEOUT_MS`, answering by how far it got: a body
/// still arriving is `408`; appends already queued may still be committed, so they are
/// answered `503 outcome_unknown` (retry with the same key), never `timeout`.
async fn timeout(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let limit = state.limits.request_timeout;
    let start = if axum::body::HttpBody::is_end_stream(request.body()) {
        HANDLING
    } else {
        RECEIVING
    };
    let progress = Progress(Arc::new(AtomicU8::new(start)));
    request.extensions_mut().insert(progress.clone());
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => match progress.0.load(Ordering::SeqCst) {
            RECEIVING => ApiError::BodyTimeout(limit),
            HANDLING => ApiError::Timeout(limit),
            _ => ApiError::CommitPending(limit),
        }
        .into_response(),
    }
}
