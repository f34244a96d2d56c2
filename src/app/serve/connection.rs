//! One connection's life under its listener's limits: a place under the connection cap, the
//! minimum body rate and the deadline on every request, and a watchdog that closes it when idle,
//! stalled, or the server stops.

use super::body::{Guarded, MinRate};
use super::{CLOSED, CUT, Limits, OPEN};
use crate::sys::metrics::Registry;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use axum::response::IntoResponse as _;
use hyper::body::{Body as HttpBody, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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

pub(super) fn builder(l: &Limits) -> Builder<TokioExecutor> {
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
pub(super) struct Listener {
    pub(super) name: &'static str,
    pub(super) limits: Limits,
    pub(super) metrics: Arc<Registry>,
    pub(super) open: AtomicUsize,
}

impl Listener {
    pub(super) fn closed(&self, reason: &str) {
        self.metrics
            .add(CLOSED, &[("listener", self.name), ("reason", reason)], 1);
    }

    fn cut(&self, reason: &str) {
        self.metrics
            .add(CUT, &[("listener", self.name), ("reason", reason)], 1);
    }

    /// A place for one more connection, or `None` at the cap.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Slot> {
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
pub(super) struct Slot {
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
pub(super) struct Conn {
    pub(super) slot: Slot,
    pub(super) router: Router,
    pub(super) builder: Builder<TokioExecutor>,
    pub(super) shutdown: CancellationToken,
    pub(super) force: CancellationToken,
    /// Held while the connection lives: `serve` waits for every one to be dropped.
    pub(super) _alive: tokio::sync::mpsc::Sender<Infallible>,
}

impl Conn {
    pub(super) fn close(mut self, reason: &'static str) {
        self.slot.reason = reason;
    }

    /// Serves the connection until it ends, closing it when it has been idle too long or the
    /// server stops.
    pub(super) async fn run<I>(mut self, io: I)
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
