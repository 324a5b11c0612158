//! What the server logs with the defaults a user gets: no line per successful request or
//! probe (at full load that is gigabytes a day), one warning per refused request.

use std::time::Duration;

use serde_json::Value;

use crate::process::ServerProcess;

fn responses_logged(logs: &[Value]) -> Vec<(String, u64)> {
    logs.iter()
        .filter(|l| l["status"].is_u64())
        .map(|l| {
            (
                l["level"].as_str().unwrap_or_default().to_owned(),
                l["status"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn by_default_successes_and_probes_log_nothing_and_a_refused_request_logs_one_warning() {
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path(), &[], &[], None);
    let client = reqwest::Client::new();
    for path in ["/livez", "/health", "/metrics", "/openapi.json"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let appended = client
        .post(server.url("/v1/ledgers/logs/records"))
        .json(&serde_json::json!({"event": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(appended.status(), 201);
    let missing = client
        .get(server.url("/v1/ledgers/logs/records/99"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // stderr is read by a thread: give it a moment to catch up.
    let mut logged = Vec::new();
    for _ in 0..50 {
        logged = responses_logged(&server.logs());
        if !logged.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(logged, vec![("WARN".to_owned(), 404)]);
}
