//! Serving a router on a bound listener: HTTP/1.1 and HTTP/2 (gRPC needs h2, also without TLS),
//! optional TLS and mTLS (rustls), graceful shutdown that lets requests in flight finish, and the
//! limits that keep slow, idle or too many clients from starving the rest: a connection cap,
//! header-read, idle and request deadlines, and a minimum request body rate.

mod body;

pub use body::{MinRate, TooSlow};

use crate::sys::metrics::Registry;
use anyhow::{Context, bail};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use axum::response::IntoResponse as _;
use body::Guarded;
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

/// A TLS handshake that takes longer than this is dropped (a stalled client holds no slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server TLS from PEM files; with `client_ca` every client must present a certificate it signed.
pub fn tls_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("cannot open TLS certificate {}", cert.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key)
            .with_context(|| format!("cannot open TLS key {}", key.display()))?,
    ))
    .with_context(|| format!("{} is not a PEM private key", key.display()))?
    .with_context(|| format!("{} holds no private key", key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let mut config = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut std::io::BufReader::new(
                std::fs::File::open(ca)
                    .with_context(|| format!("cannot open client CA {}", ca.display()))?,
            )) {
                roots.add(c.with_context(|| format!("{} is not PEM", ca.display()))?)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("client certificate verifier")?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
    };
    // gRPC needs HTTP/2; OTLP/HTTP clients use either.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The HTTP/1 read buffer: request headers (and body bytes not yet read) never take more memory.
const H1_MAX_BUF: usize = 64 * 1024;
/// The HTTP/2 header list a client may send (decoded), as hyper advertises by default.
const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// HTTP/2 flow-control windows, hyper's defaults stated here because they bound the memory a
/// client can fill: at most 1 MiB of request data per stream, and 1 MiB per connection, sent
/// ahead of what the server has read.
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_CONN_WINDOW: u32 = 1024 * 1024;
/// How long a connection told to close (idle, or the server stopping) may stay with nothing in
/// flight before it is dropped: an HTTP/2 peer that never finishes its handshake or ignores
/// GOAWAY would otherwise stay open for good.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What one listener allows its clients (`[listeners]`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections held at once; more are accepted and closed at once.
    pub max_connections: usize,
    /// HTTP/1 request headers must arrive within this.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and none started or finished this long is closed.
    pub idle_timeout: Duration,
    /// From a request's headers to its response; then DEADLINE_EXCEEDED (gRPC) or 503.
    pub request_timeout: Duration,
    /// Bytes per second a request body must average once `body_rate_grace` has passed (0: off).
    pub min_body_rate: u64,
    pub body_rate_grace: Duration,
    pub http2_max_concurrent_streams: u32,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
}

/// One listener: its name in metrics and logs, its limits, and the registry /metrics renders.
pub struct Endpoint {
    pub name: &'static str,
    pub limits: Limits,
    pub metrics: Arc<Registry>,
}

const OPEN: &str = "changetrail_connections_open";
const CLOSED: &str = "changetrail_connections_closed_total";
const CUT: &str = "changetrail_requests_cut_total";

fn describe(m: &Registry) {
    m.describe(OPEN, "gauge", "Connections open, by listener.");
    m.describe(
        CLOSED,
        "counter",
        "Connections closed, by listener and reason: cap (refused over max_connections), idle, \
         header_timeout, keepalive_timeout, body_rate and deadline (after a request was cut off), \
         handshake_timeout, tls_error, error, shutdown, done (closed by the client or the protocol).",
    );
    m.describe(
        CUT,
        "counter",
        "Requests cut off by the listener, by reason: body_rate, deadline.",
    );
}

fn builder(l: &Limits) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(l.header_read_timeout)
        .max_buf_size(H1_MAX_BUF);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(l.http2_max_concurrent_streams)
        .keep_alive_interval(l.http2_keepalive_interval)
        .keep_alive_timeout(l.http2_keepalive_timeout)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW);
    b
}

/// A listener's state shared by its connections.
struct Listener {
    name: &'static str,
    limits: Limits,
    metrics: Arc<Registry>,
    open: AtomicUsize,
}

impl Listener {
    fn closed(&self, reason: &str) {
        self.metrics
            .add(CLOSED, &[("listener", self.name), ("reason", reason)], 1);
    }

    fn cut(&self, reason: &str) {
        self.metrics
            .add(CUT, &[("listener", self.name), ("reason", reason)], 1);
    }

    /// A place for one more connection, or `None` at the cap.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let max = self.limits.max_connections;
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        self.metrics.add(OPEN, &[("listener", self.name)], 1);
        Some(Slot {
            listener: self.clone(),
            reason: "done",
        })
    }
}

/// One connection's place under the cap: given back, and its closing counted with `reason`, when
/// dropped (also when its task panics).
struct Slot {
    listener: Arc<Listener>,
    reason: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let l = &self.listener;
        l.open.fetch_sub(1, Ordering::SeqCst);
        l.metrics.sub(OPEN, &[("listener", l.name)], 1);
        l.closed(self.reason);
    }
}

const CUT_NONE: u8 = 0;
const CUT_BODY_RATE: u8 = 1;
const CUT_DEADLINE: u8 = 2;

/// What a connection is doing, kept by its service for its idle watchdog.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds from `epoch` to the last request's start or end.
    last: AtomicU64,
    /// Whether the last request was cut off, and why: the likely reason the connection then ends.
    cut: AtomicU8,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            cut: AtomicU8::new(CUT_NONE),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::SeqCst);
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.cut.store(CUT_NONE, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(self.clone())
    }

    /// While a request is in flight: when it counts as stalled, if nothing has moved (no request
    /// started or ended, no response frame taken) for `limit`. A client that stops reading (an
    /// HTTP/2 window of 0, a full TCP window) would otherwise hold the connection forever.
    fn stalled_at(&self, limit: Duration) -> Option<Instant> {
        let last = self.last.load(Ordering::SeqCst);
        (self.in_flight.load(Ordering::SeqCst) > 0)
            .then(|| self.epoch + Duration::from_millis(last) + limit)
    }

    /// When the connection counts as idle, or `None` while a request is in flight. The end of the
    /// last request counts too: a keep-alive connection is not closed right after a long request.
    fn idle_at(&self, idle: Duration) -> Option<Instant> {
        let last = self.last.load(Ordering::SeqCst);
        (self.in_flight.load(Ordering::SeqCst) == 0)
            .then(|| self.epoch + Duration::from_millis(last) + idle)
    }
}

/// A request in flight, until its response has been sent.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The router as one connection serves it: every request body held to the minimum rate, every
/// request to its deadline, and the connection's activity kept for its watchdog.
#[derive(Clone)]
struct ConnService {
    router: Router,
    listener: Arc<Listener>,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let limits = &self.listener.limits;
        let grpc = is_grpc(req.headers());
        let (listener, activity) = (self.listener.clone(), self.activity.clone());
        let req = req.map(|b| {
            Body::new(
                MinRate::new(b, limits.min_body_rate, limits.body_rate_grace).on_cutoff(
                    move || {
                        activity.cut.store(CUT_BODY_RATE, Ordering::SeqCst);
                        listener.cut("body_rate");
                        tracing::debug!(
                            listener = listener.name,
                            "Cut off a request body arriving too slowly."
                        );
                    },
                ),
            )
        });
        let router = self.router.clone();
        let deadline = limits.request_timeout;
        let (listener, activity) = (self.listener.clone(), self.activity.clone());
        Box::pin(async move {
            let resp = match tokio::time::timeout(deadline, tower::ServiceExt::oneshot(router, req))
                .await
            {
                Ok(Ok(r)) => r,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    activity.cut.store(CUT_DEADLINE, Ordering::SeqCst);
                    listener.cut("deadline");
                    tracing::warn!(
                        listener = listener.name,
                        "A request ran past its {deadline:?} deadline and was abandoned."
                    );
                    past_deadline(grpc)
                }
            };
            let touch = activity.clone();
            Ok(resp.map(|b| Body::new(Guarded::new(Touching(b, touch), in_flight))))
        })
    }
}

/// A response body that marks its connection active each time a frame is taken to be sent.
struct Touching(Body, Arc<Activity>);

impl HttpBody for Touching {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.0).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &r {
            this.1.touch();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.0.size_hint()
    }
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(..16))
        .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
}

/// The answer to a request abandoned at its deadline: what its client understands as "give up or
/// retry later".
fn past_deadline(grpc: bool) -> Response<Body> {
    const WHY: &str = "the request took longer than the server allows";
    if grpc {
        // Trailers-only: the status in the headers and no body.
        return tonic::Status::deadline_exceeded(WHY).into_http();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        format!("{WHY}; retry\n"),
    )
        .into_response()
}

/// Why a connection that ended by itself (not closed by its watchdog) ended.
fn why_ended(
    ended: Result<(), Box<dyn std::error::Error + Send + Sync>>,
    activity: &Activity,
) -> &'static str {
    let cut = match activity.cut.load(Ordering::SeqCst) {
        CUT_BODY_RATE => Some("body_rate"),
        CUT_DEADLINE => Some("deadline"),
        _ => None,
    };
    match ended {
        Err(e) => match e.downcast_ref::<hyper::Error>() {
            // hyper reports both as timeouts; only the HTTP/2 keepalive one carries a cause.
            Some(h) if h.is_timeout() && std::error::Error::source(h).is_none() => "header_timeout",
            Some(h) if h.is_timeout() => "keepalive_timeout",
            _ => cut.unwrap_or("error"),
        },
        Ok(()) => cut.unwrap_or("done"),
    }
}

/// An accepted connection with its place under the cap.
struct Conn {
    slot: Slot,
    router: Router,
    builder: Builder<TokioExecutor>,
    shutdown: CancellationToken,
    force: CancellationToken,
    /// Held while the connection lives: `serve` waits for every one to be dropped.
    _alive: tokio::sync::mpsc::Sender<Infallible>,
}

impl Conn {
    fn close(mut self, reason: &'static str) {
        self.slot.reason = reason;
    }

    /// Serves the connection until it ends, closing it when it has been idle too long or the
    /// server stops.
    async fn run<I>(mut self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let listener = self.slot.listener.clone();
        let idle = listener.limits.idle_timeout;
        // Processing ends by the request deadline (its answer included); after that a response
        // must keep moving: nothing moving for twice the deadline is a stalled client.
        let stall = listener.limits.request_timeout.saturating_mul(2);
        let activity = Arc::new(Activity::new());
        let service = ConnService {
            router: self.router.clone(),
            listener,
            activity: activity.clone(),
        };
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut closing: Option<&'static str> = None;
        // Looked at least every `stall`, so a request that stalls is seen within twice that.
        let mut check = Instant::now() + idle.min(stall);
        let reason = loop {
            tokio::select! {
                ended = conn.as_mut() => break closing.unwrap_or_else(|| why_ended(ended, &activity)),
                () = self.force.cancelled() => break "shutdown",
                () = self.shutdown.cancelled(), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing = Some("shutdown");
                    check = Instant::now() + CLOSE_GRACE;
                }
                () = tokio::time::sleep_until(check) => {
                    let now = Instant::now();
                    match (closing, activity.idle_at(idle)) {
                        // Told to close a while ago, nothing in flight, still open: dropped.
                        (Some(why), Some(_)) => break why,
                        (Some(_), None) => check = now + CLOSE_GRACE,
                        (None, None) => match activity.stalled_at(stall) {
                            Some(at) if at <= now => break "stalled",
                            Some(at) => check = at.min(now + idle),
                            None => check = now + idle,
                        },
                        (None, Some(at)) if at > now => check = at.min(now + stall),
                        (None, Some(_)) => {
                            // Before its first request this cancels reading the protocol
                            // preface; on HTTP/1 it closes between requests, on HTTP/2 it sends
                            // GOAWAY. Requests in flight finish either way.
                            conn.as_mut().graceful_shutdown();
                            closing = Some("idle");
                            check = now + CLOSE_GRACE;
                        }
                    }
                }
            }
        };
        self.slot.reason = reason;
    }
}

/// Serves until `shutdown` within `endpoint`'s limits, then waits up to `drain` for open requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: CancellationToken,
    drain: Duration,
    endpoint: Endpoint,
) {
    let Endpoint {
        name,
        limits,
        metrics,
    } = endpoint;
    describe(&metrics);
    let builder = builder(&limits);
    let shared = Arc::new(Listener {
        name,
        limits,
        metrics,
        open: AtomicUsize::new(0),
    });
    let acceptor = tls.map(TlsAcceptor::from);
    // Every connection holds a sender: once all are dropped, every connection has ended.
    let (alive, mut all_closed) = tokio::sync::mpsc::channel::<Infallible>(1);
    // Cancelled when `drain` has passed: whatever is still open then is dropped.
    let force = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = name, error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(slot) = shared.admit() else {
            // Closed at once rather than left in the kernel's backlog, where it would wait ahead
            // of clients that could be served as soon as a place frees. Counted first, so the
            // count has moved by the time the client sees the close.
            shared.closed("cap");
            drop(stream);
            tracing::debug!(listener = name, %peer, "Refused a connection: max_connections reached.");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            slot,
            router: router.clone(),
            builder: builder.clone(),
            shutdown: shutdown.clone(),
            force: force.clone(),
            _alive: alive.clone(),
        };
        match &acceptor {
            None => {
                tokio::spawn(conn.run(stream));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let tls = tokio::select! {
                        t = handshake => t,
                        () = conn.shutdown.cancelled() => return conn.close("shutdown"),
                    };
                    match tls {
                        Ok(Ok(s)) => conn.run(s).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed.");
                            conn.close("tls_error");
                        }
                        Err(_) => conn.close("handshake_timeout"),
                    }
                });
            }
        }
    }
    drop(listener);
    drop(alive);
    if tokio::time::timeout(drain, all_closed.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "Some connections were still open after {drain:?}; closing them."
        );
        force.cancel();
        // Each goes at its next poll, which the cancellation wakes.
        let _ = tokio::time::timeout(Duration::from_secs(1), all_closed.recv()).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::routing::{get, post};
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn limits() -> Limits {
        Limits {
            max_connections: 100,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            min_body_rate: 1024,
            body_rate_grace: Duration::from_secs(5),
            http2_max_concurrent_streams: 10,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
        }
    }

    /// A real listener on port 0 serving a handler that never answers, and one that reads the body.
    async fn start(limits: Limits) -> (std::net::SocketAddr, Arc<Registry>, CancellationToken) {
        let router = Router::new()
            .route(
                "/stuck",
                post(std::future::pending::<()>).get(std::future::pending::<()>),
            )
            .route(
                "/read",
                post(|body: Body| async move {
                    match body.collect().await {
                        Ok(b) => (StatusCode::OK, format!("{} bytes", b.to_bytes().len())),
                        Err(e) => (StatusCode::REQUEST_TIMEOUT, e.to_string()),
                    }
                }),
            )
            .route("/ok", get(|| async { "ok" }))
            // More than any socket buffer holds: a client that does not read stalls it.
            .route("/big", get(|| async { vec![b'x'; 64 << 20] }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(
            listener,
            router,
            None,
            shutdown.clone(),
            Duration::from_secs(5),
            Endpoint {
                name: "test",
                limits,
                metrics: metrics.clone(),
            },
        ));
        (addr, metrics, shutdown)
    }

    /// Waits until `cond` holds (a connection's slot is given back just after its socket closes,
    /// so a client sees the close a moment before the count moves); false after five seconds.
    async fn until(cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    fn closed(m: &Registry, reason: &str) -> u64 {
        m.get(CLOSED, &[("listener", "test"), ("reason", reason)])
    }

    /// Reads until the server closes the connection; what it sent.
    async fn until_closed(s: &mut tokio::net::TcpStream) -> String {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("the server did not close the connection");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// A client that asks and then never lets the answer through (an HTTP/2 window of 0, while
    /// it answers PINGs) cannot hold its connection: it is closed once nothing has moved for
    /// twice the request deadline. (HTTP/1 hands its whole body to the socket buffer, and the
    /// idle timeout closes it.)
    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_as_stalled() {
        let mut l = limits();
        l.request_timeout = Duration::from_millis(500);
        l.idle_timeout = Duration::from_secs(60);
        let (addr, metrics, _stop) = start(l).await;
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(0)
            .handshake(io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("http://{addr}/big"))
            .body(http_body_util::Empty::<axum::body::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            until(|| closed(&metrics, "stalled") == 1).await,
            "the stalled connection was not closed"
        );
        drop(resp);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_answered_for_its_protocol() {
        let mut l = limits();
        l.request_timeout = Duration::from_millis(300);
        let (addr, metrics, _stop) = start(l).await;

        // HTTP/1 (OTLP/HTTP, REST): 503 with Retry-After.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /stuck HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = until_closed(&mut s).await.to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 503"), "{answer}");
        assert!(answer.contains("\r\nretry-after: 1\r\n"), "{answer}");
        assert!(
            answer.contains("took longer than the server allows"),
            "{answer}"
        );

        // gRPC over HTTP/2: a trailers-only DEADLINE_EXCEEDED.
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::post(format!("http://{addr}/stuck"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(http_body_util::Full::new(axum::body::Bytes::from_static(
                &[0, 0, 0, 0, 0],
            )))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "4");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/grpc");
        assert!(resp.into_body().is_end_stream(), "trailers-only: no body");

        assert_eq!(
            metrics.get(CUT, &[("listener", "test"), ("reason", "deadline")]),
            2
        );
    }

    #[tokio::test]
    async fn a_trickled_body_is_cut_off_and_its_connection_closed() {
        let mut l = limits();
        l.body_rate_grace = Duration::from_millis(500);
        let (addr, metrics, _stop) = start(l).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /read HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\nab")
            .await
            .unwrap();
        let answer = until_closed(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains("slower than 1024 bytes per second"),
            "{answer}"
        );
        assert_eq!(
            metrics.get(CUT, &[("listener", "test"), ("reason", "body_rate")]),
            1
        );
        assert!(until(|| closed(&metrics, "body_rate") == 1).await);

        // On HTTP/2 the stream is cut off, and the connection goes on serving.
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<
            Result<hyper::body::Frame<axum::body::Bytes>, Infallible>,
        >();
        tx.send(Ok(hyper::body::Frame::data(
            axum::body::Bytes::from_static(b"ab"),
        )))
        .unwrap();
        let trickle = http_body_util::StreamBody::new(Box::pin(futures::stream::unfold(
            rx,
            |mut rx| async { rx.recv().await.map(|f| (f, rx)) },
        )));
        let req = Request::post(format!("http://{addr}/read"))
            .body(http_body_util::Either::Left(trickle))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&text).contains("slower than 1024"));
        assert_eq!(
            metrics.get(CUT, &[("listener", "test"), ("reason", "body_rate")]),
            2
        );
        send.ready().await.unwrap();
        let req = Request::get(format!("http://{addr}/ok"))
            .body(http_body_util::Either::Right(http_body_util::Empty::new()))
            .unwrap();
        assert_eq!(
            send.send_request(req).await.unwrap().status(),
            StatusCode::OK
        );
        drop(tx);
    }

    #[tokio::test]
    async fn idle_and_half_sent_connections_are_closed() {
        let mut l = limits();
        l.idle_timeout = Duration::from_millis(400);
        l.header_read_timeout = Duration::from_millis(300);
        let (addr, metrics, _stop) = start(l).await;
        let start = Instant::now();
        // Connects and says nothing.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Half a request line and headers.
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"POST /read HTTP/1.1\r\nhost: x\r\ncontent-ty")
            .await
            .unwrap();
        // Sends the HTTP/2 preface and never its settings.
        let mut preface = tokio::net::TcpStream::connect(addr).await.unwrap();
        preface
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(until_closed(&mut silent).await, "");
        until_closed(&mut half).await;
        until_closed(&mut preface).await;
        // Never sooner than the limits allow.
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(until(|| metrics.get(OPEN, &[("listener", "test")]) == 0).await);
        assert_eq!(closed(&metrics, "idle"), 2, "{}", metrics.render(&[]));
        assert_eq!(
            closed(&metrics, "header_timeout"),
            1,
            "{}",
            metrics.render(&[])
        );
    }

    #[tokio::test]
    async fn a_keep_alive_connection_is_served_then_closed_when_idle() {
        for http2 in [false, true] {
            let mut l = limits();
            l.idle_timeout = Duration::from_millis(500);
            let (addr, metrics, _stop) = start(l).await;
            let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
            let req = || {
                Request::get(format!("http://{addr}/ok"))
                    .body(Body::empty())
                    .unwrap()
            };
            let start = Instant::now();
            // The client keeps its end (`_client`): only the server closes the connection.
            let (done, _client) = if http2 {
                let (mut send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .unwrap();
                let done = tokio::spawn(conn);
                for _ in 0..3 {
                    assert_eq!(send.send_request(req()).await.unwrap().status(), 200);
                }
                (done, Box::new(send) as Box<dyn std::any::Any + Send>)
            } else {
                let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                let done = tokio::spawn(conn);
                for _ in 0..3 {
                    let resp = send.send_request(req()).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.into_body().collect().await.unwrap();
                }
                (done, Box::new(send) as Box<dyn std::any::Any + Send>)
            };
            // The server ends the connection (GOAWAY on HTTP/2), the client's side finishes.
            tokio::time::timeout(Duration::from_secs(20), done)
                .await
                .expect("the idle connection was not closed")
                .unwrap()
                .unwrap();
            assert!(
                start.elapsed() >= Duration::from_millis(500),
                "http2: {http2}"
            );
            assert!(
                until(|| closed(&metrics, "idle") == 1).await,
                "http2: {http2}: {}",
                metrics.render(&[])
            );
        }
    }

    /// hyper starts the header read timer as soon as it waits for the next request, so on HTTP/1
    /// it also bounds how long a keep-alive connection may sit silent (what defaults.toml says).
    #[tokio::test]
    async fn an_http1_keep_alive_connection_is_closed_at_the_header_read_timeout() {
        let mut l = limits();
        l.header_read_timeout = Duration::from_millis(300);
        let (addr, metrics, _stop) = start(l).await;
        let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        let done = tokio::spawn(conn);
        let req = Request::get(format!("http://{addr}/ok"))
            .body(Body::empty())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
        let start = Instant::now();
        let _ = tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .expect("the keep-alive connection stayed open past the header read timeout");
        assert!(
            start.elapsed() >= Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        assert!(until(|| closed(&metrics, "header_timeout") == 1).await);
        drop(send);
    }
}
