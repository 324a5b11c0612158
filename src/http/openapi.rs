//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, for clients and fuzzers.
//!
//! A static file (`openapi.json` beside this one), so that it reads as the contract it is. It
//! documents exactly the routes of [`super::route_list`]: the unit test below and
//! `tests/api/limits.rs` check both directions, `tests/api/fuzz.rs` drives the API from it,
//! and `tests/openapi_contract.rs` runs schemathesis, Redocly and openapi-spec-validator on it.
//!
//! With auth on it is served byte for byte. With auth off no route asks for a token, so the
//! document served says so: every operation's `security` is `[]` (nothing else changes).

use std::sync::LazyLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::AppState;

/// The document, as written: the contract with `ELEANOR_LEDGER_AUTH=jwt`.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document of a server with auth off: [`DOCUMENT`] with no security requirement.
static WITHOUT_AUTH: LazyLock<String> = LazyLock::new(|| {
    let mut doc: serde_json::Value =
        serde_json::from_str(DOCUMENT).expect("openapi.json parses (checked by its unit tests)");
    without_security(&mut doc);
    doc.to_string()
});

/// Empties the `security` of every operation.
fn without_security(doc: &mut serde_json::Value) {
    let paths = doc["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut());
    for op in paths
        .filter_map(|item| item.as_object_mut())
        .flat_map(|i| i.values_mut())
    {
        if let Some(op) = op.as_object_mut() {
            op.insert("security".into(), serde_json::json!([]));
        }
    }
}

pub async fn document(State(state): State<AppState>) -> impl IntoResponse {
    let body = match state.auth {
        Some(_) => DOCUMENT,
        None => WITHOUT_AUTH.as_str(),
    };
    ([(header::CONTENT_TYPE, "application/json")], body)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes_the_router_serves() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json parses");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = super::super::route_list()
            .into_iter()
            .map(|(m, p)| (m.as_str().to_owned(), p.to_owned()))
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn with_auth_off_no_operation_asks_for_a_token_and_nothing_else_changes() {
        let written: serde_json::Value = serde_json::from_str(DOCUMENT).expect("parses");
        let served: serde_json::Value = serde_json::from_str(&WITHOUT_AUTH).expect("parses");
        let mut operations = 0;
        for (path, item) in served["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                assert_eq!(op["security"], serde_json::json!([]), "{method} {path}");
                let mut op = op.clone();
                let mut original = written["paths"][path][method].clone();
                op.as_object_mut().expect("an operation").remove("security");
                original
                    .as_object_mut()
                    .expect("an operation")
                    .remove("security");
                assert_eq!(op, original, "{method} {path}");
                operations += 1;
            }
        }
        assert_eq!(operations, super::super::route_list().len());
        let bearer =
            written["paths"]["/v1/ledgers/{ledger_id}/records"]["post"]["security"].clone();
        assert_eq!(bearer, serde_json::json!([{"bearerAuth": []}]));
        assert_eq!(served["components"], written["components"]);
    }

    #[test]
    fn every_reference_resolves() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json parses");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').expect("local references only");
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    fn collect_refs(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match v {
                        serde_json::Value::String(s) if k == "$ref" => out.push(s.clone()),
                        _ => collect_refs(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
