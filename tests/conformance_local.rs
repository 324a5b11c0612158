//! The storage conformance suite (`src/store/conformance.rs`) against the embedded backend.

use eleanor_ledger::store::conformance::Fixture;
use eleanor_ledger::store::local::LocalStore;
use eleanor_ledger::store::{BackendMetrics, Stores};

fn open(dir: &std::path::Path) -> Stores {
    LocalStore::open(dir, BackendMetrics::unregistered())
        .expect("open store")
        .into_stores()
}

/// A fresh store in its own temporary directory, reopened from the same directory. The
/// directory is leaked on purpose: the store must outlive the test body, and the OS temp dir
/// is cleaned outside the test.
async fn fresh() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir").keep();
    let stores = open(&dir);
    Fixture::new(stores, move || {
        let dir = dir.clone();
        async move { open(&dir) }
    })
}

eleanor_ledger::store_conformance_tests!(local, super::fresh());
