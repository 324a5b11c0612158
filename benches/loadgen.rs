//! A small closed-loop HTTP/1.1 load generator for `scripts/loadtest`; not a criterion bench.
//!
//! Each of `--connections` keep-alive connections sends one request, waits for the whole
//! response, records the latency and sends the next, until `--duration-secs` pass or
//! `--max-requests` have been sent in all. It runs on one thread so that it takes at most one
//! of the machine's cores from the server it measures. It prints one `key=value` line:
//!
//! ```text
//! requests=… ok=… errors=… elapsed_s=… rate=… records_rate=… p50_ms=… p95_ms=… p99_ms=… max_ms=…
//! ```
//!
//! Modes: `append` (one event per request), `keyed` (the same with an `Idempotency-Key` that
//! is new for every request), `batch` (`--batch-records` events per `records:batch` request,
//! each with a new key when `--batch-keyed` is given), `health`. `records_rate` counts events
//! committed per second (`rate` times the events per request).
//!
//! Only loopback addresses are accepted. Run with no `--addr` (as plain `cargo bench` does),
//! it does nothing.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    /// `append`, `keyed`, `batch` or `health` (see the module docs).
    mode: String,
    /// Events per request in `batch` mode.
    batch_records: usize,
    /// In `batch` mode, a key per event.
    batch_keyed: bool,
    ledger: String,
    connections: usize,
    duration: Duration,
    max_requests: u64,
    body_bytes: usize,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut addr = None;
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        mode: "append".into(),
        ledger: "load".into(),
        connections: 64,
        duration: Duration::from_secs(10),
        max_requests: 1_000_000,
        body_bytes: 1024,
        batch_records: 100,
        batch_keyed: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?.parse::<SocketAddr>().map_err(|e| e.to_string())?),
            "--mode" => args.mode = value()?,
            "--ledger" => args.ledger = value()?,
            "--connections" => args.connections = number(value()?)? as usize,
            "--duration-secs" => args.duration = Duration::from_secs(number(value()?)?),
            "--max-requests" => args.max_requests = number(value()?)?,
            "--body-bytes" => args.body_bytes = number(value()?)? as usize,
            "--batch-records" => args.batch_records = number(value()?)? as usize,
            "--batch-keyed" => args.batch_keyed = true,
            // What `cargo bench` passes to every harness-less bench.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let Some(addr) = addr else { return Ok(None) };
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address"));
    }
    if !["append", "keyed", "batch", "health"].contains(&args.mode.as_str()) {
        return Err("--mode is append, keyed, batch or health".into());
    }
    if args.connections == 0 || args.body_bytes < 64 || args.batch_records == 0 {
        return Err(
            "--connections and --batch-records must be positive and --body-bytes at least 64"
                .into(),
        );
    }
    args.addr = addr;
    Ok(Some(args))
}

/// A JSON object of exactly `size` bytes.
fn event_body(size: usize) -> Vec<u8> {
    let head =
        br#"{"actor":"user-000042","action":"document.update","ip":"203.0.113.7","detail":""#;
    let tail = br#""}"#;
    let mut body = head.to_vec();
    body.extend(std::iter::repeat_n(
        b'x',
        size.saturating_sub(head.len() + tail.len()),
    ));
    body.extend_from_slice(tail);
    body
}

/// Events one request carries.
fn records_per_request(args: &Args) -> usize {
    match args.mode.as_str() {
        "batch" => args.batch_records,
        "health" => 0,
        _ => 1,
    }
}

/// The `n`th request of connection `conn` (keys are unique per run: connection and count).
fn request(args: &Args, conn: usize, n: u64) -> Vec<u8> {
    let post = |path: &str, content_type: &str, extra: &str, body: &[u8]| {
        let mut req = format!(
            "POST /v1/ledgers/{}/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{extra}Content-Length: {}\r\n\r\n",
            args.ledger,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    };
    match args.mode.as_str() {
        "health" => b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec(),
        "keyed" => post(
            "records",
            "application/json",
            &format!("Idempotency-Key: lg-{conn}-{n}\r\n"),
            &event_body(args.body_bytes),
        ),
        "batch" => {
            let event = String::from_utf8(event_body(args.body_bytes)).expect("ASCII");
            let mut body = Vec::with_capacity(args.batch_records * (args.body_bytes + 64));
            for i in 0..args.batch_records {
                let line = match args.batch_keyed {
                    true => {
                        format!(r#"{{"record":{event},"idempotency_key":"lg-{conn}-{n}-{i}"}}"#)
                    }
                    false => format!(r#"{{"record":{event}}}"#),
                };
                body.extend_from_slice(line.as_bytes());
                body.push(b'\n');
            }
            post("records:batch", "application/x-ndjson", "", &body)
        }
        _ => post(
            "records",
            "application/json",
            "",
            &event_body(args.body_bytes),
        ),
    }
}

/// Reads one response; returns its status code. `buf` keeps bytes beyond it (none are
/// expected: one request is in flight per connection).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    buf.clear();
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).map_err(|_| bad("non-UTF-8 header"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("no status"))?;
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .ok_or_else(|| bad("no content-length"))?;
    while buf.len() < header_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(bad("connection closed mid-body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

#[derive(Default)]
struct ConnStats {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: u64,
}

async fn connection(
    args: Rc<Args>,
    conn: usize,
    sent: Rc<AtomicU64>,
    deadline: Instant,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut buf = Vec::with_capacity(8192);
    let mut stream = None;
    // Built once when every request is the same; per request when each carries a new key.
    let fixed = matches!(args.mode.as_str(), "append" | "health")
        || (args.mode == "batch" && !args.batch_keyed);
    let same = fixed.then(|| request(&args, conn, 0));
    let mut n = 0u64;
    while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < args.max_requests {
        n += 1;
        let fresh;
        let req = match &same {
            Some(req) => req,
            None => {
                fresh = request(&args, conn, n);
                &fresh
            }
        };
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match TcpStream::connect(args.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    stream.insert(s)
                }
                Err(_) => {
                    stats.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        let result = match s.write_all(req).await {
            Ok(()) => read_response(s, &mut buf).await,
            Err(e) => Err(e),
        };
        let micros = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        match result {
            Ok(status) if (200..300).contains(&status) => {
                stats.ok += 1;
                stats.latencies_us.push(micros);
            }
            Ok(_) => stats.errors += 1,
            Err(_) => {
                stats.errors += 1;
                stream = None;
            }
        }
    }
    stats
}

fn percentile_ms(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    f64::from(sorted[i]) / 1000.0
}

async fn run(args: Args) -> String {
    let args = Rc::new(args);
    let sent = Rc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    let local = tokio::task::LocalSet::new();
    let handles: Vec<_> = (0..args.connections)
        .map(|conn| local.spawn_local(connection(args.clone(), conn, sent.clone(), deadline)))
        .collect();
    let all = local
        .run_until(async {
            let mut all = Vec::with_capacity(handles.len());
            for h in handles {
                all.push(h.await.unwrap_or_default());
            }
            all
        })
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (ok, errors) = all
        .iter()
        .fold((0, 0), |(o, e), s| (o + s.ok, e + s.errors));
    let mut lat: Vec<u32> = all.into_iter().flat_map(|s| s.latencies_us).collect();
    lat.sort_unstable();
    format!(
        "requests={} ok={ok} errors={errors} elapsed_s={elapsed:.3} rate={:.1} records_rate={:.1} p50_ms={:.3} p95_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        ok + errors,
        ok as f64 / elapsed,
        (ok * records_per_request(&args) as u64) as f64 / elapsed,
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.95),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0),
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            eprintln!("loadgen: driven by scripts/loadtest (needs --addr); nothing to do");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = rt.block_on(run(args));
    // stdout is the interface to scripts/loadtest.
    #[allow(clippy::print_stdout)]
    {
        println!("{line}");
    }
    ExitCode::SUCCESS
}
