//! Connections a client cannot stretch: a request head has a deadline, an idle kept-alive
//! connection is closed, silent connections beyond the descriptor limit cannot keep the probes
//! out, and a request with two conflicting length headers is refused. These watch real
//! sockets, so they wait in real time (a few seconds at most each).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::spawn_app_with;
use crate::process::ServerProcess;

const GET_HEALTH: &[u8] = b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n";

async fn connect(address: &str) -> TcpStream {
    TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .expect("connect to the app")
}

/// Reads until the server closes the connection; how long that took.
async fn time_to_close(stream: &mut TcpStream, within: Duration) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => panic!("the server kept the connection open for {within:?}"),
            Ok(Ok(0) | Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
        }
    }
}

/// Reads one whole response (a small one, with Content-Length) off a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .expect("read the response");
        assert!(
            n > 0,
            "the server closed the connection instead of answering"
        );
        bytes.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&bytes);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if body.len() >= length {
                return text.into_owned();
            }
        }
    }
}

#[tokio::test]
async fn a_request_head_trickled_past_the_header_timeout_is_cut_off() {
    let app = spawn_app_with(&["--header-read-timeout-ms", "800"]).await;
    let mut stream = connect(&app.api.address).await;
    let trickle = async {
        for byte in b"GET /livez HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The head would take 5 s to arrive; the server must give up after 0.8 s.
    assert!(
        tokio::time::timeout(Duration::from_secs(4), trickle)
            .await
            .is_ok(),
        "the server still accepted header bytes after 4 s"
    );
    let closed = time_to_close(&mut stream, Duration::from_secs(2)).await;
    assert!(closed < Duration::from_secs(2));
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_closed_after_the_header_timeout() {
    let app = spawn_app_with(&["--header-read-timeout-ms", "500"]).await;
    let mut stream = connect(&app.api.address).await;
    let waited = time_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}, before its time"
    );
}

#[tokio::test]
async fn a_kept_alive_connection_serves_requests_until_it_has_been_idle_for_the_idle_timeout() {
    let app = spawn_app_with(&[
        "--header-read-timeout-ms",
        "300",
        "--idle-timeout-ms",
        "1500",
    ])
    .await;
    let mut stream = connect(&app.api.address).await;
    stream.write_all(GET_HEALTH).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle longer than the header timeout, shorter than the idle timeout: still open, and the
    // next head's time counts from its first byte.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stream.write_all(GET_HEALTH).await.unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    let waited = time_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        waited >= Duration::from_millis(1200),
        "an idle connection was closed after {waited:?}"
    );
}

#[tokio::test]
async fn a_request_with_both_content_length_and_transfer_encoding_is_refused_and_appends_nothing() {
    let app = spawn_app_with(&[]).await;
    for request in [
        &b"POST /v1/ledgers/smuggle/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\nc\r\n{\"event\":1}\n\r\n0\r\n\r\n"[..],
        b"POST /v1/ledgers/smuggle/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nContent-Length: 12\r\n\r\nc\r\n{\"event\":1}\n\r\n0\r\n\r\n",
    ] {
        app.api.raw(request).await.expect_error(400, "conflicting_length");
    }
    // The same connection's earlier requests are served as usual.
    let mut stream = connect(&app.api.address).await;
    stream
        .write_all(b"POST /v1/ledgers/smuggle/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nc\r\n{\"event\":1}\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 201"));
    stream
        .write_all(b"POST /v1/ledgers/smuggle/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 12\r\nTransfer-Encoding: chunked\r\n\r\nc\r\n{\"event\":2}\n\r\n0\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 400"));
    let head = app.api.head_ok("smuggle").await;
    assert_eq!(
        head.seq, 1,
        "only the request with one length header was appended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_silent_connections_beyond_the_descriptor_limit_do_not_keep_health_checks_out()
{
    let data_dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(data_dir.path(), &[], &[], Some(256));
    let address = &server.address;
    // More silent connections than the server has descriptors: without a cap that makes room
    // it runs out (accept: too many open files) and stops answering anyone.
    let mut silent = Vec::new();
    for _ in 0..600 {
        silent.push(TcpStream::connect(address).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for _ in 0..5 {
        let health = client
            .get(format!("http://{address}/health"))
            .send()
            .await
            .expect("/health answers while 600 silent connections are held");
        assert_eq!(health.status(), 200);
        let appended = client
            .post(format!("http://{address}/v1/ledgers/busy/records"))
            .json(&serde_json::json!({"event": "still served"}))
            .send()
            .await
            .expect("an append is served while 600 silent connections are held");
        assert_eq!(appended.status(), 201);
    }
    let metrics = client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evicted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("http_connections_evicted_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("http_connections_evicted_total in /metrics");
    assert!(evicted > 0, "silent connections were closed to make room");
    drop(silent);
}

#[tokio::test]
async fn a_body_cut_off_by_its_client_is_a_400_not_a_server_error() {
    let app = spawn_app_with(&[]).await;
    let mut stream = connect(&app.api.address).await;
    stream
        .write_all(b"POST /v1/ledgers/cut/records HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"event\":")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"invalid_body\""), "{answer}");
    assert_eq!(
        app.api.head("cut").await.status(),
        404,
        "nothing was appended"
    );
}
