//! API tests: the real service on `127.0.0.1:0` over a temp dir, driven over HTTP.
//!
//! One test binary (`cargo nextest run --test api`), one module per concern; every test starts
//! its own app with [`helpers::spawn_app`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod append;
mod auth;
mod checkpoints;
mod connections;
mod errors;
mod export;
mod fuzz;
mod helpers;
mod idempotency;
mod lifecycle;
mod limits;
mod logging;
mod observability;
#[path = "../support/process.rs"]
mod process;
mod read;
mod reference_verifier;
mod startup_logs;
mod tamper;
mod verify;
