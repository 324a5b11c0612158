//! The export's contract: one range rule with verification, and an end line stating the
//! export's ledger, range and head, signed when the service has a key (docs/FORMAT.md,
//! "Exports").

use eleanor_ledger::chain::checkpoint::ExportEnd;
use eleanor_ledger::chain::entry::LedgerId;
use eleanor_ledger::chain::hash::Hash;
use eleanor_ledger::keyfile::{load_signing_key, write_new_key};
use eleanor_ledger::store::BackendMetrics;
use eleanor_ledger::store::local::LocalStore;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_error, spawn_app, spawn_app_in};

/// The end line of an export, parsed: the last line, and only that one.
fn end_of(export: &str) -> ExportEnd {
    let lines: Vec<&str> = export.lines().collect();
    let last = lines.last().expect("an export has at least its end line");
    let value: Value = serde_json::from_str(last).unwrap();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(r#"{"end":"#)).count(),
        1,
        "{export}"
    );
    serde_json::from_value(value["end"].clone()).unwrap_or_else(|e| panic!("{e}: {last}"))
}

#[tokio::test]
async fn export_and_verify_refuse_the_same_ranges_past_the_head() {
    let app = spawn_app().await;
    app.append_ok("ranges", r#"{"n":1}"#).await;
    app.append_ok("ranges", r#"{"n":2}"#).await;
    for query in [
        "to=3",
        "from=3",
        "from=5&to=9",
        "from=2&to=3",
        "from=2&to=1",
        "from=0",
    ] {
        let export = expect_error(
            app.export("ranges", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_range",
        )
        .await;
        let verify = expect_error(
            app.verify("ranges", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_range",
        )
        .await;
        assert_eq!(export, verify, "{query}: the same rule, the same sentence");
    }
    for query in ["", "from=1", "to=2", "from=2", "from=1&to=2", "from=2&to=2"] {
        let export = app.export_ok("ranges", query).await;
        let end = end_of(&export);
        let report = app.verify_ok("ranges", query).await;
        assert!(report.ok, "{query}: {report:?}");
        assert_eq!((end.from, end.to), (report.from, report.to), "{query}");
    }
}

#[tokio::test]
async fn an_empty_ledger_exports_only_an_end_line_stating_head_0() {
    // An empty ledger, as `ledger-init --init-meta` makes one (the API creates a ledger by
    // its first append).
    let dir = tempfile::tempdir().unwrap();
    {
        let stores = LocalStore::open(dir.path(), BackendMetrics::unregistered())
            .unwrap()
            .into_stores();
        stores
            .index
            .create_ledger(&LedgerId::parse("void").unwrap())
            .await
            .unwrap();
    }
    let app = spawn_app_in(dir, &[]).await;
    let export = app.export_ok("void", "").await;
    assert_eq!(export.lines().count(), 1, "{export}");
    let end = end_of(&export);
    assert_eq!((end.from, end.to, end.head_seq), (1, 0, 0));
    assert_eq!(
        (end.last_hash, end.head_hash),
        (Hash::GENESIS, Hash::GENESIS)
    );
    for query in ["from=1", "to=1"] {
        let export = expect_error(
            app.export("void", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_range",
        )
        .await;
        let verify = expect_error(
            app.verify("void", query).await,
            StatusCode::BAD_REQUEST,
            "invalid_range",
        )
        .await;
        assert_eq!(export, verify, "{query}");
    }
}

#[tokio::test]
async fn the_end_line_states_the_range_its_last_hash_and_the_head_signed_with_the_service_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.key");
    let public = write_new_key(&key).unwrap();
    let signer = load_signing_key(&key).unwrap();
    assert_eq!(signer.public_key(), &public);
    let key = key.display().to_string();
    let app = spawn_app_in(dir, &["--signing-key-file", &key]).await;
    let mut receipts: Vec<Value> = Vec::new();
    for n in 1..=7 {
        let response = app.append("ended", &format!(r#"{{"n":{n}}}"#)).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        receipts.push(response.json().await.unwrap());
    }
    let head = app.head_ok("ended").await;

    let end = end_of(&app.export_ok("ended", "").await);
    assert_eq!(end.ledger_id.to_string(), "ended");
    assert_eq!((end.v, end.from, end.to, end.head_seq), (1, 1, 7, 7));
    assert_eq!(end.last_hash.to_hex(), head.last_hash);
    assert_eq!(end.head_hash.to_hex(), head.last_hash);
    assert_eq!(end.key_id, Some(public.id()));
    end.verify_trusted(std::slice::from_ref(&public)).unwrap();

    // A range: its own last entry's hash, and the head it was cut at.
    let end = end_of(&app.export_ok("ended", "from=2&to=4").await);
    assert_eq!((end.from, end.to, end.head_seq), (2, 4, 7));
    assert_eq!(
        end.last_hash.to_hex(),
        receipts[3]["entry_hash"].as_str().unwrap()
    );
    assert_eq!(end.head_hash.to_hex(), head.last_hash);
    end.verify_trusted(std::slice::from_ref(&public)).unwrap();
    // Any field changed breaks the signature.
    let forged = ExportEnd { to: 5, ..end };
    assert!(forged.verify_trusted(&[public]).is_err());
}

#[tokio::test]
async fn without_a_key_the_end_line_is_unsigned() {
    let app = spawn_app().await;
    app.append_ok("plain", r#"{"n":1}"#).await;
    let export = app.export_ok("plain", "").await;
    let last = export.lines().last().unwrap();
    let value: Value = serde_json::from_str(last).unwrap();
    if value["end"].get("signature").is_some() {
        // Signed by default (the server made its own key): then the key id names it.
        assert!(value["end"]["key_id"].is_string(), "{last}");
        return;
    }
    // The documented fields in the documented order, and no signature fields at all.
    let head = app.head_ok("plain").await.last_hash;
    let prefix = format!(
        r#"{{"end":{{"v":1,"ledger_id":"plain","from":1,"to":1,"last_hash":"{head}","head_seq":1,"head_hash":"{head}","timestamp":""#
    );
    assert!(last.starts_with(&prefix), "{last}");
    assert!(
        last.ends_with("Z\"}}") && !last.contains("key_id"),
        "{last}"
    );
}
