//! The storage conformance suite against the embedded backend.

use eleanor_ledger::store::local::LocalStore;
use eleanor_ledger::store::{BackendMetrics, Stores};

/// A fresh store in its own temporary directory. The directory is leaked on purpose: the
/// store must outlive the test body, and the OS temp dir is cleaned outside the test.
async fn fresh() -> Stores {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    LocalStore::open(&dir, BackendMetrics::unregistered())
        .expect("open store")
        .into_stores()
}

eleanor_ledger::store_conformance_tests!(local, super::fresh());
