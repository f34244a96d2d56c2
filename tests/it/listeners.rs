//! Every listener (REST, OTLP gRPC, OTLP HTTP) under hostile clients: a thousand idle and slow
//! connections on each while real exporters and a REST client are served, every one of them
//! closed by the server within a bound, and the connection cap.

use crate::support::python::{CLIENT, python};
use crate::support::server::{TestApp, TestDb, config, spawn_app_with};
use changetrail::app::config::Config;
use changetrail::auth::Role;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Per listener: connections that say nothing, that send half a request head, that trickle a
/// body nobody reads (the request is refused first), and that trickle a body the handler reads.
const SILENT: usize = 500;
const HALF_HEAD: usize = 250;
const TRICKLE_REFUSED: usize = 240;
const TRICKLE_READ: usize = 10;

/// Short limits, long enough that the hostile connections are all still open while the real
/// clients are served (the checks say so if a slow machine ever breaks that).
fn hostile_config(db: &TestDb) -> Config {
    let mut c = config(db);
    c.listeners.max_connections = 1100;
    c.listeners.header_read_timeout = Duration::from_secs(5);
    c.listeners.idle_timeout = Duration::from_secs(6);
    c.listeners.min_body_rate = 1024;
    c.listeners.body_rate_grace = Duration::from_secs(4);
    c
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Listener {
    Api,
    OtlpGrpc,
    OtlpHttp,
}

impl Listener {
    const ALL: [Listener; 3] = [Listener::Api, Listener::OtlpGrpc, Listener::OtlpHttp];

    fn name(self) -> &'static str {
        match self {
            Listener::Api => "api",
            Listener::OtlpGrpc => "otlp_grpc",
            Listener::OtlpHttp => "otlp_http",
        }
    }

    fn addr(self, app: &TestApp) -> SocketAddr {
        let url = match self {
            Listener::Api => &app.base,
            Listener::OtlpGrpc => &app.grpc,
            Listener::OtlpHttp => &app.otlp,
        };
        url.trim_start_matches("http://").parse().unwrap()
    }

    /// A request head whose body of `length` bytes the listener reads once `auth` is accepted,
    /// and for gRPC the first bytes of that body: the message's frame header.
    fn head(self, auth: Option<&str>, length: usize) -> Vec<u8> {
        let (path, content_type) = match self {
            Listener::Api => ("/v1/import/conductor", "application/json"),
            Listener::OtlpGrpc => (
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                "application/grpc",
            ),
            Listener::OtlpHttp => ("/v1/traces", "application/x-protobuf"),
        };
        let auth = auth.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nhost: changetrail\r\ncontent-type: {content_type}\r\n\
             {auth}content-length: {length}\r\n\r\n"
        )
        .into_bytes();
        if self == Listener::OtlpGrpc {
            // Uncompressed, and as long as the rest of the body: the server waits for all of it.
            head.push(0);
            head.extend_from_slice(&u32::try_from(length - 5).unwrap().to_be_bytes());
        }
        head
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Silent,
    /// The HTTP/2 preface and nothing more (gRPC listener only).
    Preface,
    HalfHead,
    TrickleRefused,
    TrickleRead,
}

struct Hostile {
    listener: Listener,
    kind: Kind,
    /// Set when the server has closed the connection.
    closed: Arc<AtomicBool>,
    /// What the server sent before closing.
    task: tokio::task::JoinHandle<Vec<u8>>,
}

/// Connects and behaves as `kind` until the server closes the connection.
async fn hostile(addr: SocketAddr, listener: Listener, kind: Kind, token: &str) -> Hostile {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let flag = closed.clone();
    let token = token.to_owned();
    let task = tokio::spawn(async move {
        let mut trickle = match kind {
            Kind::Silent => None,
            Kind::Preface => {
                let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                None
            }
            Kind::HalfHead => {
                let head = listener.head(Some("not-a-token"), 10);
                let _ = s.write_all(&head[..head.len() / 2]).await;
                None
            }
            Kind::TrickleRefused | Kind::TrickleRead => {
                let auth = (kind == Kind::TrickleRead).then_some(token.as_str());
                let _ = s.write_all(&listener.head(auth, 4096)).await;
                // Four bytes a second, far below min_body_rate.
                Some(tokio::time::interval(Duration::from_millis(500)))
            }
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                },
                _ = async { trickle.as_mut().unwrap().tick().await }, if trickle.is_some() => {
                    if s.write_all(b"{ ").await.is_err() {
                        trickle = None;
                    }
                }
            }
        }
        flag.store(true, Ordering::SeqCst);
        got
    });
    Hostile {
        listener,
        kind,
        closed,
        task,
    }
}

/// One metric's value in /metrics text, by its labels in the order rendered.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    let key = format!("{name}{{{}}} ", labels.join(","));
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|v| v.trim().parse().unwrap())
}

fn open_now(app: &TestApp, l: Listener) -> u64 {
    app.ingestor
        .metrics
        .get("changetrail_connections_open", &[("listener", l.name())])
}

/// Waits until `cond` holds: the server counts a connection as closed a moment after the client
/// sees it close, and there is no event to await for that.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A real OpenTelemetry Python exporter, started and its modules loaded, waiting for the word to
/// export (so the export itself happens while the hostile connections are held).
struct Exporter {
    transport: &'static str,
    child: tokio::process::Child,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

const PRELUDE: &str = r#"
import runpy, sys
import opentelemetry.sdk.trace
import opentelemetry.exporter.otlp.proto.grpc.trace_exporter
import opentelemetry.exporter.otlp.proto.http.trace_exporter
print("ready", flush=True)
sys.stdin.readline()
client = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(client, run_name="__main__")
"#;

impl Exporter {
    async fn start(py: &std::path::Path, app: &TestApp, transport: &'static str) -> Exporter {
        let endpoint = if transport == "grpc" {
            &app.grpc
        } else {
            &app.otlp
        };
        let mut child = tokio::process::Command::new(py)
            .args(["-c", PRELUDE, CLIENT])
            .args(["--transport", transport, "--endpoint", endpoint])
            .args(["--token", &app.ingest, "--change"])
            .arg(format!("CHG-LISTEN-{transport}"))
            .args(["--deploys", "1", "--children", "2", "--unrelated", "0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = stdout.next_line().await.unwrap();
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "the {transport} exporter did not start"
        );
        Exporter {
            transport,
            child,
            stdout,
        }
    }

    /// Exports; every span's (trace id, span id, name) once the exporter was told SUCCESS.
    async fn export(mut self) -> Vec<(String, String, String)> {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
        drop(stdin);
        let mut spans = Vec::new();
        while let Some(line) = self.stdout.next_line().await.unwrap() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["result"], "SUCCESS", "{}: {line}", self.transport);
            spans.push((
                v["trace_id"].as_str().unwrap().to_owned(),
                v["span_id"].as_str().unwrap().to_owned(),
                v["name"].as_str().unwrap().to_owned(),
            ));
        }
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "the {} exporter failed", self.transport);
        spans
    }
}

/// (a) A thousand idle and slow connections on each listener do not keep real exporters or a
/// REST client from being served; (b) the server closes every one of them within a bound, each
/// for its reason; (e) /metrics counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_shed_idle_and_slow_connections_while_serving_real_clients() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(hostile_config(&db)).await;
    let py = python("listeners_shed_idle_and_slow_connections_while_serving_real_clients");
    let mut exporters = Vec::new();
    if let Some(py) = &py {
        for transport in ["grpc", "http"] {
            exporters.push(Exporter::start(py, &app, transport).await);
        }
    }

    let started = Instant::now();
    let mut hostiles = Vec::new();
    for l in Listener::ALL {
        let addr = l.addr(&app);
        let mut plan = vec![(Kind::Silent, SILENT), (Kind::HalfHead, HALF_HEAD)];
        plan.extend([
            (Kind::TrickleRefused, TRICKLE_REFUSED),
            (Kind::TrickleRead, TRICKLE_READ),
        ]);
        if l == Listener::OtlpGrpc {
            // A tenth of the silent ones speak HTTP/2 far enough to be served by it.
            plan[0].1 -= SILENT / 10;
            plan.push((Kind::Preface, SILENT / 10));
        }
        for (kind, n) in plan {
            for _ in 0..n {
                hostiles.push(hostile(addr, l, kind, &app.ingest).await);
            }
        }
    }
    assert_eq!(hostiles.len(), 3 * 1000);
    // Every listener holds its idle and half-sent connections before the real clients start.
    for l in Listener::ALL {
        until(
            &format!("{} holds the hostile connections", l.name()),
            || open_now(&app, l) >= (SILENT + HALF_HEAD) as u64,
        )
        .await;
    }
    let held_after = started.elapsed();

    // (a) Served meanwhile: a REST request, and each exporter's spans, stored in the ledger.
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    let admin = app.get("/v1/admin/tokens", Some(&app.admin)).await;
    assert_eq!(admin.status(), 200);
    let exports = futures::future::join_all(exporters.into_iter().map(Exporter::export)).await;
    let served_after = started.elapsed();
    let still_open = |kinds: &[Kind]| {
        hostiles
            .iter()
            .filter(|h| kinds.contains(&h.kind) && !h.closed.load(Ordering::SeqCst))
            .count()
    };
    let waiting = still_open(&[Kind::Silent, Kind::Preface, Kind::HalfHead]);
    assert_eq!(
        waiting,
        3 * (SILENT + HALF_HEAD),
        "every idle and half-sent connection should still be open while the real clients are \
         served (held after {held_after:?}, served after {served_after:?})"
    );
    for spans in &exports {
        assert_eq!(spans.len(), 3, "{spans:?}");
        let trace = hex::decode(&spans[0].0).unwrap().try_into().unwrap();
        let stored = app.store.spans_of_trace(&trace).await.unwrap();
        let mut stored: Vec<String> = stored.iter().map(|s| hex::encode(s.span_id)).collect();
        let mut sent: Vec<String> = spans.iter().map(|s| s.1.clone()).collect();
        stored.sort();
        sent.sort();
        assert_eq!(stored, sent, "the exported spans are in the ledger");
    }

    // (b) The server closes every one of them, however it was holding on.
    let mut answers: BTreeMap<(Listener, &str), Vec<String>> = BTreeMap::new();
    let all = futures::future::join_all(hostiles.into_iter().map(|h| async move {
        let got = h.task.await.unwrap();
        (h.listener, h.kind, got)
    }));
    let closed = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("some hostile connections were still open 30 s later");
    let closed_after = started.elapsed();
    for (l, kind, got) in closed {
        let text = String::from_utf8_lossy(&got).into_owned();
        match kind {
            // Nothing to answer: closed without a word.
            Kind::Silent | Kind::HalfHead => assert_eq!(text, "", "{l:?} {kind:?}"),
            Kind::TrickleRefused => answers.entry((l, "refused")).or_default().push(text),
            Kind::TrickleRead => answers.entry((l, "read")).or_default().push(text),
            Kind::Preface => {}
        }
    }
    for ((l, what), texts) in &answers {
        for t in texts {
            let status = t.lines().next().unwrap_or_default();
            match (l, *what) {
                // gRPC answers in HTTP 200 with its own status; never OK here.
                (Listener::OtlpGrpc, _) => assert!(
                    status.starts_with("HTTP/1.1 200")
                        && t.contains("grpc-status: ")
                        && !t.contains("grpc-status: 0\r\n"),
                    "{l:?} {what}: {t}"
                ),
                (_, "refused") => assert!(status.starts_with("HTTP/1.1 401"), "{l:?}: {t}"),
                // A body cut for its rate is the delivery's fault: OTLP says retry.
                (Listener::OtlpHttp, "read") => assert!(
                    status.starts_with("HTTP/1.1 503")
                        && t.to_ascii_lowercase().contains("retry-after: 1"),
                    "{l:?} {what}: {t}"
                ),
                _ => assert!(status.starts_with("HTTP/1.1 4"), "{l:?} {what}: {t}"),
            }
        }
    }
    eprintln!(
        "listeners: hostile connections held after {held_after:?}, real clients served after \
         {served_after:?}, all closed after {closed_after:?}"
    );

    // (e) /metrics shows it all, by listener and reason.
    for l in Listener::ALL {
        until(
            &format!("{} counts its connections closed", l.name()),
            || open_now(&app, l) <= 2,
        )
        .await;
    }
    let metrics_token = app.token(Role::Metrics).await;
    let text = app
        .get("/metrics", Some(&metrics_token))
        .await
        .text()
        .await
        .unwrap();
    for l in Listener::ALL {
        let name = l.name();
        let closed = |reason| {
            metric(
                &text,
                "changetrail_connections_closed_total",
                &[("listener", name), ("reason", reason)],
            )
            .unwrap_or(0)
        };
        assert!(closed("idle") >= SILENT as u64, "{name}:\n{text}");
        assert!(
            closed("header_timeout") >= HALF_HEAD as u64,
            "{name}:\n{text}"
        );
        // Each request cut off for its rate is refused, and its connection closed with it.
        assert_eq!(closed("body_rate"), TRICKLE_READ as u64, "{name}:\n{text}");
        assert_eq!(
            metric(
                &text,
                "changetrail_requests_cut_total",
                &[("listener", name), ("reason", "body_rate")]
            ),
            Some(TRICKLE_READ as u64),
            "{name}:\n{text}"
        );
        let open = metric(&text, "changetrail_connections_open", &[("listener", name)]);
        assert!(open.is_some_and(|n| n <= 2), "{name}: {open:?}\n{text}");
    }
    assert!(text.contains("# TYPE changetrail_connections_open gauge"));
    app.stop().await;
}

/// An HTTP/1.1 client connection kept open, and its first answer's status.
async fn client(
    addr: SocketAddr,
) -> Option<(
    hyper::client::conn::http1::SendRequest<http_body_util::Empty<axum::body::Bytes>>,
    tokio::task::JoinHandle<()>,
)> {
    let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    ask(&mut send, addr).await?;
    Some((send, task))
}

/// One request on an open connection: its status, or `None` when the connection is gone.
async fn ask(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<axum::body::Bytes>>,
    addr: SocketAddr,
) -> Option<u16> {
    use http_body_util::BodyExt as _;
    send.ready().await.ok()?;
    let req = hyper::Request::get(format!("http://{addr}/healthz"))
        .header("host", "changetrail")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.ok()?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.ok()?;
    Some(status)
}

/// (c) Over the cap: with max_connections 20, the 21st connection on each listener is closed at
/// once while the 20 are held and served; once one of them goes, a new connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_close_connections_over_the_cap_at_once() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.listeners.max_connections = 20;
    let app = spawn_app_with(cfg).await;
    for l in Listener::ALL {
        let addr = l.addr(&app);
        let mut held = Vec::new();
        for _ in 0..20 {
            held.push(client(addr).await.expect("served under the cap"));
        }
        assert_eq!(open_now(&app, l), 20, "{l:?}");

        let t = Instant::now();
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        // Closed (or reset) without a word, far sooner than any timeout would close it.
        let read = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut rest))
            .await
            .expect("the connection over the cap was left open");
        assert!(matches!(read, Ok(0) | Err(_)), "{l:?}: {rest:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(
            app.ingestor.metrics.get(
                "changetrail_connections_closed_total",
                &[("listener", l.name()), ("reason", "cap")]
            ),
            1,
            "{l:?}"
        );

        // The 20 are still held and served.
        for (send, _) in &mut held {
            assert!(
                ask(send, addr).await.is_some(),
                "{l:?}: a held connection was dropped"
            );
        }

        // One goes; its place is given to the next client.
        let (send, task) = held.pop().unwrap();
        drop(send);
        task.await.unwrap();
        until("a place is free", || open_now(&app, l) < 20).await;
        let (mut send, _task) = client(addr).await.expect("served once a place was free");
        assert!(ask(&mut send, addr).await.is_some());
    }
    app.stop().await;
}
