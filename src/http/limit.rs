//! Load shedding: at most `ELEANOR_LEDGER_MAX_IN_FLIGHT` API requests are processed at once;
//! one more is refused at once with `503 server_busy` and `Retry-After`, before any handler
//! runs, so it has no side effect. Nothing waits for a slot: a queue in front of a saturated
//! server only turns overload into timeouts (tower's `ConcurrencyLimit` would queue).
//!
//! `/health`, `/livez`, `/metrics` and `/openapi.json` are not counted, so probes and scrapes
//! still answer while the API sheds. A streamed export holds its slot until its response
//! starts, not until its body is sent.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::ApiError;

/// The slots of the in-flight cap, shared by every counted route.
#[derive(Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        InFlight(Arc::new(Semaphore::new(max)))
    }
}

/// Runs the request in a free slot, or answers `503 server_busy` when there is none.
pub async fn shed(State(slots): State<InFlight>, request: Request, next: Next) -> Response {
    // `try_acquire` never waits; the permit is released when the response is ready.
    match slots.0.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::ServerBusy.into_response(),
    }
}
