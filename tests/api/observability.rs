//! `/health` and `/metrics`.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{expect_error, expect_json, spawn_app};

/// The value of the first sample whose line starts with `name` (including its `{labels}`, if
/// given) and contains every one of `labels`.
pub(crate) fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
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

    // Requests are labelled by the route they matched, never by the raw path, with the
    // outcome the runbook's `grep eleanor_requests_total` looks at.
    let route = |r: &str| format!(r#"route="{r}""#);
    assert!(
        value(
            "eleanor_requests_total",
            &[
                &route("/v1/ledgers/{ledger_id}/records"),
                r#"status="201""#,
                r#"outcome="ok""#
            ]
        ) >= 3.0
    );
    assert_eq!(
        value(
            "eleanor_requests_total",
            &[
                &route("/v1/ledgers/{ledger_id}/records"),
                r#"status="415""#,
                r#"outcome="rejected""#
            ]
        ),
        1.0
    );
    assert!(
        value(
            "eleanor_requests_total",
            &[
                &route("/v1/ledgers/{ledger_id}/records/{seq}"),
                r#"status="200""#
            ]
        ) >= 1.0
    );
    assert!(
        metrics
            .lines()
            .filter(|l| l.starts_with("eleanor_requests_total{"))
            .all(|l| l.contains("outcome=")),
        "every request sample has an outcome:\n{metrics}"
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

/// A client's `x-request-id` is echoed when it is one short printable token, and replaced by
/// one of the server's otherwise (it goes into every log line of the request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_id_is_kept_only_when_short_and_printable() {
    let app = crate::helpers::spawn_app().await;
    let id_of = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let sent = |ids: &[&str]| {
        let mut request = app.client.get(app.url("/livez"));
        for id in ids {
            request = request.header("x-request-id", *id);
        }
        request.send()
    };
    let response = sent(&["order-42/retry.1"]).await.unwrap();
    assert_eq!(id_of(&response), "order-42/retry.1");
    let made = id_of(&sent(&[]).await.unwrap());
    assert!(!made.is_empty() && made.len() <= 128, "{made}");
    for bad in [
        &["x".repeat(129)][..],
        &["two words".to_owned()],
        &["a".into(), "b".into()],
    ] {
        let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
        let echoed = id_of(&sent(&bad).await.unwrap());
        assert!(!bad.contains(&echoed.as_str()), "{bad:?} was kept");
        assert!(
            echoed.len() <= 128 && echoed.bytes().all(|b| b.is_ascii_graphic()),
            "{echoed}"
        );
    }
}
