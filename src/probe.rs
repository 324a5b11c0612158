//! `ledger-server --probe`: the container's health check without curl. Asks the server this
//! container runs (`ELEANOR_LEDGER_LISTEN`, on loopback when it listens on every address) for
//! `GET /livez` and succeeds on `200`. `/livez`, not `/health`: Docker restarts nothing on an
//! unhealthy container, and a storage outage must not mark every container unhealthy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the whole probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The address to probe for a server listening on `listen`: an unspecified address (`0.0.0.0`,
/// `::`) is reached on loopback.
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET /livez` on the server listening on `listen`; the error is one sentence.
pub async fn probe(listen: SocketAddr) -> Result<(), String> {
    let addr = target(listen);
    tokio::time::timeout(TIMEOUT, ask(addr))
        .await
        .map_err(|_| format!("http://{addr}/livez did not answer within {TIMEOUT:?}"))?
}

async fn ask(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let request = format!("GET /livez HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read from {addr}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(format!(
            "http://{addr}/livez answered {status_line:?}, not 200"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unspecified_listen_address_is_probed_on_loopback() {
        let t = |s: &str| target(s.parse().unwrap()).to_string();
        assert_eq!(t("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(t("[::]:8080"), "[::1]:8080");
        assert_eq!(t("10.1.2.3:9000"), "10.1.2.3:9000");
    }

    #[tokio::test]
    async fn the_probe_fails_in_one_sentence_when_nothing_listens() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let err = probe(addr).await.unwrap_err();
        assert!(err.starts_with("cannot connect to 127.0.0.1:"), "{err}");
    }

    #[tokio::test]
    async fn a_server_answering_other_than_200_fails_the_probe() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = socket.read(&mut buf).await;
            socket
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let err = probe(addr).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
    }
}
