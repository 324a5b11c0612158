//! `GET /metrics` (Prometheus text from the service's own registry) and the middleware that
//! measures every request, labelled by matched route, never by raw path.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use super::AppState;

const APPEND_ROUTE: &str = "/v1/ledgers/{ledger_id}/records";

pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    appends: IntCounterVec,
    append_duration: prometheus::Histogram,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<HttpMetrics> {
        let latency = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
        ];
        let m = HttpMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "eleanor_requests_total",
                    "HTTP requests by matched route, method, status and outcome: ok (1xx-3xx), rejected (4xx), error (5xx).",
                ),
                &["route", "method", "status", "outcome"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "http_request_duration_seconds",
                    "HTTP request latency by matched route.",
                )
                .buckets(latency.clone()),
                &["route"],
            )?,
            appends: IntCounterVec::new(
                Opts::new(
                    "ledger_append_requests_total",
                    "Append requests by outcome: created (201), committed (202), rejected (4xx), error (5xx).",
                ),
                &["outcome"],
            )?,
            append_duration: prometheus::Histogram::with_opts(
                HistogramOpts::new(
                    "ledger_append_duration_seconds",
                    "Append latency, request to receipt.",
                )
                .buckets(latency),
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.duration.clone()))?;
        registry.register(Box::new(m.appends.clone()))?;
        registry.register(Box::new(m.append_duration.clone()))?;
        Ok(m)
    }
}

pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    let status = response.status();
    let m = &state.metrics;
    let outcome = if status.is_server_error() {
        "error"
    } else if status.is_client_error() {
        "rejected"
    } else {
        "ok"
    };
    m.requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str(), outcome])
        .inc();
    m.duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed);
    if route == APPEND_ROUTE && method == Method::POST {
        let outcome = match status {
            StatusCode::CREATED => "created",
            StatusCode::ACCEPTED => "committed",
            s if s.is_client_error() => "rejected",
            _ => "error",
        };
        m.appends.with_label_values(&[outcome]).inc();
        m.append_duration.observe(elapsed);
    }
    response
}

pub async fn export(State(state): State<AppState>) -> Response {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut body) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
