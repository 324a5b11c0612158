//! eleanor-ledger: an append-only, tamper-evident audit ledger.
//!
//! The module tree is the architecture (dependencies point down):
//!
//! - [`chain`]: the pure core. Entry format, SHA-256 hash chain, verification. No I/O.
//! - [`store`]: the two storage traits ([`store::ObjectStore`] for write-once entry objects,
//!   [`store::IndexStore`] for the compare-and-set head and the `SEQ#` index), the embedded
//!   backend ([`store::local`]) and the shared conformance suite.
pub mod chain;
pub mod store;
