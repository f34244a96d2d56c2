//! Serving a router on a bound listener: HTTP/1.1 and HTTP/2 (gRPC needs h2, also without TLS),
//! optional TLS and mTLS (rustls), graceful shutdown that lets requests in flight finish, and the
//! limits that keep slow, idle or too many clients from starving the rest: a connection cap,
//! header-read, idle and request deadlines, and a minimum request body rate.
//!
//! Here the accept loop and the connection cap; in `connection` one connection held to the
//! limits; in `body` the body wrappers that do it; in `tls` the TLS configuration.

mod body;
mod connection;
#[cfg(test)]
mod tests;
mod tls;

pub use body::{MinRate, TooSlow};
pub use tls::tls_config;

use crate::sys::metrics::Registry;
use axum::Router;
use connection::{Conn, Listener, builder};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

/// A TLS handshake that takes longer than this is dropped (a stalled client holds no slot).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
