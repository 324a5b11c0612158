//! `/health` and `/metrics`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_error, expect_json, spawn_app};

/// The value of the first sample whose line starts with `name` (including its `{labels}`, if
/// given) and contains every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn health_is_ok_on_the_local_backend() {
    let app = spawn_app().await;
    let body: Value = expect_json(app.health().await, StatusCode::OK).await;
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["backend"], "local", "{body}");
    let checks = body["checks"].as_object().expect("checks is an object");
    assert!(!checks.is_empty(), "{body}");
    assert!(checks.values().all(|v| v == "ok"), "{body}");
}

#[tokio::test]
async fn metrics_count_appends_batches_backend_requests_and_the_process() {
    let app = spawn_app().await;
    let ledger = "metered-ledger-7q";
    for n in 0..3 {
        app.append_ok(ledger, &format!(r#"{{"n":{n}}}"#)).await;
    }
    expect_error(
        app.append_as(ledger, Some("text/plain"), b"{}".to_vec())
            .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    app.get_record_ok(ledger, 2).await;
    expect_error(
        app.get("/no-such-route-zq8").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;

    let metrics = app.metrics().await;

    let value = |name: &str, labels: &[&str]| {
        sample(&metrics, name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{metrics}"))
    };
    assert_eq!(
        value("ledger_append_requests_total", &[r#"outcome="created""#]),
        3.0
    );
    assert_eq!(
        value("ledger_append_requests_total", &[r#"outcome="rejected""#]),
        1.0
    );
    assert!(value("ledger_append_duration_seconds_count", &[]) >= 3.0);
    assert!(value("ledger_append_duration_seconds_bucket", &[r#"le="+Inf""#]) >= 3.0);
    assert!(value("ledger_batch_size_count", &[]) >= 3.0);
    assert!(value("ledger_batch_size_sum", &[]) >= 3.0);
    assert!(value("ledger_backend_requests_total", &[r#"outcome="ok""#, "op="]) >= 1.0);
    assert!(value("process_resident_memory_bytes", &[]) > 0.0);

    // Requests are labelled by the route they matched, never by the raw path.
    let route = |r: &str| format!(r#"route="{r}""#);
    assert!(
        value(
            "http_requests_total",
            &[&route("/v1/ledgers/{ledger_id}/records"), r#"status="201""#]
        ) >= 3.0
    );
    assert!(
        value(
            "http_requests_total",
            &[
                &route("/v1/ledgers/{ledger_id}/records/{seq}"),
                r#"status="200""#
            ]
        ) >= 1.0
    );
    assert!(
        !metrics.contains(ledger),
        "a ledger id leaked into the metrics:\n{metrics}"
    );
    assert!(
        !metrics.contains("no-such-route-zq8"),
        "a raw path leaked into the metrics:\n{metrics}"
    );
}
