#![allow(clippy::unwrap_used)]
use super::*;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;

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
    let trickle =
        http_body_util::StreamBody::new(Box::pin(futures::stream::unfold(rx, |mut rx| async {
            rx.recv().await.map(|f| (f, rx))
        })));
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
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
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
