//! The connection loop: accepts TCP connections and serves HTTP/1.1 on each with hyper,
//! within bounds a client cannot stretch.
//!
//! - **A request head gets [`ConnectionLimits::header_read_timeout`]**, counted from the
//!   connection's start, or from its first byte on a kept-alive connection; a connection
//!   still short of a whole head then is closed.
//! - **An idle kept-alive connection is closed** after [`ConnectionLimits::idle_timeout`].
//! - **At most [`ConnectionLimits::max_connections`] are open**, a number kept below the
//!   process's descriptor limit (raised to its hard limit at startup, see
//!   [`connection_cap`]). A connection that arrives at the cap makes room by closing the
//!   longest-open connection that has no request in progress (idle, or still sending a
//!   head); if every connection is busy, accepting waits until one ends. So silent
//!   connections can hold neither descriptors nor the probes' way in.
//! - **Accept errors back off** (10 ms doubling to 1 s) instead of spinning; running out of
//!   descriptors also closes an idle connection.
//! - **A request with both `Content-Length` and `Transfer-Encoding` is refused** `400`:
//!   [`framing`] finds it in the bytes (hyper drops the `Content-Length` before the service
//!   sees it) and marks it with [`ConflictingLength`] for the router to answer.
//!
//! Graceful shutdown stops accepting, closes connections with no request in progress, lets
//! the others finish their responses, and returns when every connection has closed.
//!
//! The server speaks HTTP/1.1 only (TLS and HTTP/2 belong at the ingress in front of it).

mod framing;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use framing::Framing;

/// Bounds on client connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time allowed for a request head (`ELEANOR_LEDGER_HEADER_READ_TIMEOUT_MS`).
    pub header_read_timeout: Duration,
    /// Time an idle kept-alive connection is held (`ELEANOR_LEDGER_IDLE_TIMEOUT_MS`).
    pub idle_timeout: Duration,
    /// Most connections open at once (`ELEANOR_LEDGER_MAX_CONNECTIONS`), if set; either way
    /// [`connection_cap`] fits it to the descriptor limit.
    pub max_connections: Option<usize>,
}

/// Put on a request whose head carried both `Content-Length` and `Transfer-Encoding`.
#[derive(Debug, Clone, Copy)]
pub struct ConflictingLength;

/// Descriptors kept for everything but client connections (storage files, storage
/// connections, the runtime), or half the limit when that is smaller.
const RESERVED_DESCRIPTORS: u64 = 256;

/// The most connections allowed when the descriptor limit allows more.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Raises the process's descriptor soft limit to its hard limit where allowed, and returns
/// how many connections may be open: `requested` (default [`DEFAULT_MAX_CONNECTIONS`]),
/// lowered with a warning to leave [`RESERVED_DESCRIPTORS`] free.
fn connection_cap(requested: Option<usize>) -> usize {
    let wanted = requested.unwrap_or(DEFAULT_MAX_CONNECTIONS).max(1);
    let Some(limit) = raise_descriptor_limit() else {
        return wanted;
    };
    let reserve = RESERVED_DESCRIPTORS.min(limit / 2);
    let allowed = usize::try_from(limit.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted > allowed && requested.is_some() {
        tracing::warn!(
            requested = wanted,
            descriptor_limit = limit,
            max_connections = allowed,
            "ELEANOR_LEDGER_MAX_CONNECTIONS is more than the descriptor limit allows; lowered (raise the limit with ulimit -n or the container runtime)"
        );
    }
    wanted.min(allowed)
}

/// The descriptor soft limit after raising it as far as the hard limit allows.
fn raise_descriptor_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        // Linux refuses more than fs.nr_open, 2^20 unless raised.
        const MOST: u64 = 1 << 20;
        let limit = getrlimit(Resource::Nofile);
        let soft = limit.current.unwrap_or(MOST);
        let hard = limit.maximum.unwrap_or(MOST).min(MOST);
        if soft < hard {
            let raised = Rlimit {
                current: Some(hard),
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => return Some(hard),
                Err(e) => tracing::debug!(error = %e, "could not raise the descriptor limit"),
            }
        }
        Some(soft)
    }
    #[cfg(not(unix))]
    None
}

/// The connection loop's metrics.
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGauge,
    evicted: IntCounter,
    timed_out: IntCounter,
    accept_errors: IntCounter,
}

impl ConnectionMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<ConnectionMetrics> {
        let m = ConnectionMetrics {
            open: IntGauge::new("http_connections_open", "Client connections open.")?,
            evicted: IntCounter::new(
                "http_connections_evicted_total",
                "Connections with no request in progress closed to make room at the connection cap.",
            )?,
            timed_out: IntCounter::new(
                "http_connections_timed_out_total",
                "Connections closed because a request head was not sent in time, or they were idle too long.",
            )?,
            accept_errors: IntCounter::new(
                "http_accept_errors_total",
                "Failed accepts other than connections reset while queued (running out of descriptors, for one).",
            )?,
        };
        registry.register(Box::new(m.open.clone()))?;
        registry.register(Box::new(m.evicted.clone()))?;
        registry.register(Box::new(m.timed_out.clone()))?;
        registry.register(Box::new(m.accept_errors.clone()))?;
        Ok(m)
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then shuts down gracefully
/// (see the module doc).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    let max_connections = connection_cap(limits.max_connections);
    tracing::info!(max_connections, "accepting connections");
    let open = Arc::new(Open::default());
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Backoff::default();
                stream
            }
            // Reset or aborted while queued: that connection is gone, the listener is fine.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                metrics.accept_errors.inc();
                let wait = backoff.next();
                let out_of_descriptors = matches!(e.raw_os_error(), Some(23 | 24)); // ENFILE, EMFILE
                if out_of_descriptors && open.evict_one() {
                    metrics.evicted.inc();
                }
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis(), out_of_descriptors, "accepting a connection failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if open.evict_one() {
                    metrics.evicted.inc();
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                }
            }
        };
        let conn = open.add();
        let (router, open, metrics) = (router.clone(), open.clone(), metrics.clone());
        tokio::spawn(async move {
            metrics.open.inc();
            serve_connection(stream, router, &conn, limits, &metrics).await;
            metrics.open.dec();
            open.remove(conn.id);
            drop(permit);
        });
    }
    drop(listener);
    open.close_all();
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    // Every connection holds a permit until it has closed.
    let _ = permits.acquire_many(all).await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// 10 ms, doubling to 1 s.
struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff(Duration::from_millis(10))
    }
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
        wait
    }
}

/// The open connections, oldest first.
#[derive(Default)]
struct Open {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Open {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.conns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id));
        self.lock().insert(id, conn.clone());
        conn
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Tells the oldest connection with no request in progress to close; false if every
    /// connection has one.
    fn evict_one(&self) -> bool {
        let conns = self.lock();
        let idle = conns
            .values()
            .find(|c| c.in_flight.load(Ordering::SeqCst) == 0 && !c.closing());
        idle.inspect(|c| c.close()).is_some()
    }

    fn close_all(&self) {
        for conn in self.lock().values() {
            conn.close();
        }
    }
}

/// What the connection's parts (its reader, its requests, its task) share.
struct Conn {
    id: u64,
    /// Requests whose responses have not been sent in full.
    in_flight: AtomicUsize,
    /// Set by [`close`](Self::close).
    close: Notify,
    closing: std::sync::atomic::AtomicBool,
    /// Woken when [`Times`] change, to re-arm the connection's deadline.
    changed: Notify,
    times: Mutex<Times>,
    /// The index of a request head that carried both length headers.
    conflicting: std::sync::OnceLock<u64>,
    /// Requests handed to the router so far.
    requests: AtomicU64,
}

struct Times {
    /// When the head now arriving started (the connection's start, for its first).
    head_started: Option<Instant>,
    /// When the connection last finished a response, or a head.
    idle_since: Instant,
}

impl Conn {
    fn new(id: u64) -> Conn {
        let now = Instant::now();
        Conn {
            id,
            in_flight: AtomicUsize::new(0),
            close: Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            changed: Notify::new(),
            times: Mutex::new(Times {
                head_started: Some(now),
                idle_since: now,
            }),
            conflicting: std::sync::OnceLock::new(),
            requests: AtomicU64::new(0),
        }
    }

    fn times(&self) -> MutexGuard<'_, Times> {
        self.times
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.close.notify_one();
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// When the connection must close unless something happens first: a head is due
    /// `header_read_timeout` after it started; an idle connection is closed `idle_timeout`
    /// after its last response.
    fn deadline(&self, limits: ConnectionLimits) -> Option<Instant> {
        let times = self.times();
        match times.head_started {
            Some(started) => Some(started + limits.header_read_timeout),
            None if self.in_flight.load(Ordering::SeqCst) == 0 => {
                Some(times.idle_since + limits.idle_timeout)
            }
            None => None,
        }
    }

    fn set_times(&self, change: impl FnOnce(&mut Times)) {
        change(&mut self.times());
        self.changed.notify_one();
    }
}

/// Counts a request in progress until its response body is dropped (sent, or abandoned).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: &Arc<Conn>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.set_times(|t| t.idle_since = Instant::now());
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    conn: &Arc<Conn>,
    limits: ConnectionLimits,
    metrics: &ConnectionMetrics,
) {
    let for_requests = conn.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let conn = for_requests.clone();
        let router = router.clone();
        async move {
            let busy = InFlight::start(&conn);
            let n = conn.requests.fetch_add(1, Ordering::SeqCst);
            if conn.conflicting.get() == Some(&n) {
                request.extensions_mut().insert(ConflictingLength);
            }
            let response = router.oneshot(request.map(Body::new)).await?;
            // The request stays in progress until its body has been sent.
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                }))
            }))
        }
    });
    let io = TokioIo::new(Sniffed {
        stream,
        framing: Framing::new(),
        conn: conn.clone(),
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own head timer starts when a connection goes idle and never restarts within
    // a head; at this length it only backs up the deadlines kept here.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = conn.deadline(limits);
        let expired = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = conn.changed.notified() => {}
            () = expired => {
                // Re-checked: the state may have moved on since the deadline was taken.
                if conn.deadline(limits).is_some_and(|at| at <= Instant::now()) {
                    metrics.timed_out.inc();
                    tracing::debug!("closing a connection that sent no request head in time, or was idle too long");
                    return;
                }
            }
            () = conn.close.notified(), if !draining => {
                if conn.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                // Finish the response in progress, then close.
                connection.as_mut().graceful_shutdown();
                draining = true;
            }
        }
    }
}

/// The connection's socket, with every byte read also shown to its [`Framing`] tracker.
struct Sniffed {
    stream: TcpStream,
    framing: Framing,
    conn: Arc<Conn>,
}

impl AsyncRead for Sniffed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            let heads_before = this.framing.heads();
            let was_in_head = this.framing.in_head();
            if let Some(index) = this.framing.feed(read) {
                let _ = this.conn.conflicting.set(index);
            }
            let (heads, in_head) = (this.framing.heads(), this.framing.in_head());
            if heads != heads_before || in_head != was_in_head {
                let now = Instant::now();
                this.conn.set_times(|t| {
                    if heads != heads_before {
                        t.head_started = None;
                        t.idle_since = now;
                    }
                    // A connection's first head counts from its start, a later one from
                    // its first byte.
                    if in_head {
                        t.head_started.get_or_insert(now);
                    }
                });
            }
        }
        polled
    }
}

impl AsyncWrite for Sniffed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
