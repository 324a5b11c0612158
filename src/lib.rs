//! eleanor-ledger: an append-only, tamper-evident audit ledger.
//!
//! The module tree is the architecture (dependencies point down):
//!
//! - [`chain`]: the pure core. Entry format, SHA-256 hash chain, verification. No I/O.
//! - [`store`]: the two storage traits ([`store::ObjectStore`] for write-once entry objects,
//!   [`store::IndexStore`] for the compare-and-set head and the `SEQ#` index), the embedded
//!   backend ([`store::local`]) and the shared conformance suite.
//! - [`ledger`]: the service. Group commit and the commit protocol over the two traits,
//!   reads, verification over storage, crash recovery.
//! - [`http`]: the axum API, its one error mapping, health and metrics, and the connection
//!   loop that serves it.
//! - [`config`], [`telemetry`], [`app`]: settings, logging, startup and shutdown;
//!   [`init`]: one-time provisioning (`ledger-init`); [`audit`]: offline verification
//!   (`ledger-verify`), [`textfile`]: its verdict for node-exporter's textfile collector;
//!   [`keyfile`]: the signing key file; [`probe`]: `ledger-server --probe`, the container's
//!   health check.
//!
//! The binaries in `src/bin/` only parse arguments and call [`app`].

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod audit;
pub mod chain;
pub mod config;
pub mod http;
pub mod init;
pub mod keyfile;
pub mod ledger;
pub mod probe;
pub mod store;
pub mod telemetry;
pub mod textfile;
