//! OTLP ingest through the real listeners: the HTTP conformance matrix, gRPC semantics, what is
//! kept, parked, deduplicated and redacted.

use crate::support::db::{exec, hold_write_lock};
use crate::support::otlp::{deploy_span, kv, raw_grpc, request, span, trace};
use crate::support::server::{TestApp, TestDb, config, spawn_app_with};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use reqwest::StatusCode;
use std::io::Write;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Enc {
    Pb,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Comp {
    None,
    Gzip,
    Deflate,
    Zstd,
}

impl Comp {
    /// The request's `content-encoding`.
    fn header(self) -> Option<&'static str> {
        match self {
            Comp::None => None,
            Comp::Gzip => Some("gzip"),
            Comp::Deflate => Some("deflate"),
            Comp::Zstd => Some("zstd"),
        }
    }
}

fn encode(req: &ExportTraceServiceRequest, enc: Enc) -> Vec<u8> {
    match enc {
        Enc::Pb => req.encode_to_vec(),
        Enc::Json => serde_json::to_vec(req).unwrap(),
    }
}

fn compress(body: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::None => body.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        Comp::Deflate => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(body).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(body, 3).unwrap(),
    }
}

fn content_type(enc: Enc) -> &'static str {
    match enc {
        Enc::Pb => "application/x-protobuf",
        Enc::Json => "application/json",
    }
}

async fn post(
    app: &TestApp,
    path: &str,
    ct: &str,
    ce: Option<&str>,
    token: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut r = app
        .http
        .post(format!("{}{path}", app.otlp))
        .header("content-type", ct)
        .body(body);
    if let Some(ce) = ce {
        r = r.header("content-encoding", ce);
    }
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

/// The `google.rpc.Status` in an error body, in the encoding it claims.
async fn status_of(r: reqwest::Response) -> (i32, String) {
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    if ct == "application/x-protobuf" {
        let s = tonic_types::pb::Status::decode(body.as_ref()).unwrap();
        (s.code, s.message)
    } else {
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        (
            v["code"].as_i64().unwrap() as i32,
            v["message"].as_str().unwrap().to_owned(),
        )
    }
}

async fn spans_stored(app: &TestApp, t: [u8; 16]) -> usize {
    app.store.spans_of_trace(&t).await.unwrap().len()
}

fn fast_failing(db: &TestDb) -> changetrail::app::config::Config {
    let mut c = config(db);
    c.storage.lock_timeout = Duration::from_millis(300);
    c
}

/// What storage does with an export.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Storage {
    Works,
    /// Locked by someone else for two seconds.
    Busy,
    /// Refuses for good (an injected trigger).
    Refuses,
}

/// One outcome of the HTTP conformance matrix and what the exporter must be told.
struct Outcome {
    storage: Storage,
    change: &'static str,
    status: StatusCode,
    /// The `google.rpc.Status` code in the error body; none for a success.
    code: Option<i32>,
    retry_after: Option<&'static str>,
}

/// Success: 200, the response in the request's encoding, the span stored. Retryable: 503 +
/// Retry-After + Status(UNAVAILABLE), nothing half-stored, and the client's retry succeeds.
/// Permanent: 500 + Status(INTERNAL), no Retry-After, internal details kept inside.
const OUTCOMES: [Outcome; 3] = [
    Outcome {
        storage: Storage::Works,
        change: "CHG-7",
        status: StatusCode::OK,
        code: None,
        retry_after: None,
    },
    Outcome {
        storage: Storage::Busy,
        change: "CHG-8",
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: Some(14),
        retry_after: Some("1"),
    },
    Outcome {
        storage: Storage::Refuses,
        change: "CHG-9",
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: Some(13),
        retry_after: None,
    },
];

const REFUSE: &str = "CREATE TRIGGER refuse BEFORE INSERT ON spans BEGIN SELECT RAISE(ABORT, 'injected failure'); END";

/// {protobuf, JSON} × {none, gzip, deflate, zstd} × `OUTCOMES`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_conformance_matrix() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(fast_failing(&db)).await;
    for enc in [Enc::Pb, Enc::Json] {
        for comp in [Comp::None, Comp::Gzip, Comp::Deflate, Comp::Zstd] {
            for o in &OUTCOMES {
                let what = format!("{enc:?}/{comp:?}/{:?}", o.storage);
                let t = trace();
                let body = compress(
                    &encode(&request("deployer", vec![deploy_span(t, o.change)]), enc),
                    comp,
                );
                let lock = match o.storage {
                    Storage::Works => None,
                    Storage::Busy => Some(hold_write_lock(&db, Duration::from_secs(2)).await),
                    Storage::Refuses => {
                        exec(&app.store, REFUSE).await.unwrap();
                        None
                    }
                };
                let send = |body| {
                    post(
                        &app,
                        "/v1/traces",
                        content_type(enc),
                        comp.header(),
                        Some(&app.ingest),
                        body,
                    )
                };
                let r = send(body.clone()).await;
                assert_eq!(r.status(), o.status, "{what}");
                assert_eq!(r.headers()["content-type"], content_type(enc), "{what}");
                assert_eq!(
                    r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
                    o.retry_after,
                    "{what}"
                );
                match o.code {
                    None => {
                        let bytes = r.bytes().await.unwrap();
                        match enc {
                            Enc::Pb => assert_eq!(
                                ExportTraceServiceResponse::decode(bytes.as_ref()).unwrap(),
                                ExportTraceServiceResponse::default()
                            ),
                            Enc::Json => assert_eq!(bytes.as_ref(), b"{}", "{what}"),
                        }
                    }
                    Some(want) => {
                        let (code, message) = status_of(r).await;
                        assert_eq!(code, want, "{what}");
                        assert!(
                            !message.contains("injected"),
                            "{what}: internal details stay internal: {message}"
                        );
                    }
                }
                match o.storage {
                    Storage::Works => assert_eq!(spans_stored(&app, t).await, 1, "{what}"),
                    Storage::Busy => {
                        lock.unwrap().await.unwrap();
                        assert_eq!(
                            spans_stored(&app, t).await,
                            0,
                            "{what}: nothing acknowledged, nothing half-stored"
                        );
                        // The client's retry succeeds.
                        assert_eq!(send(body).await.status(), StatusCode::OK, "{what} retry");
                        assert_eq!(spans_stored(&app, t).await, 1, "{what} retry");
                    }
                    Storage::Refuses => exec(&app.store, "DROP TRIGGER refuse").await.unwrap(),
                }
            }
        }
    }
    app.stop().await;
}

/// The request limit of the server `http_requests_are_checked_before_they_are_trusted` runs.
const LIMIT: usize = 64 * 1024;

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sender {
    Ingest,
    /// A valid token of another role.
    Reviewer,
    /// No token at all.
    Nobody,
    /// The ingest token with its last character changed.
    WrongToken,
}

/// One request of the HTTP checks and the answer it must get.
struct Check {
    what: &'static str,
    method: reqwest::Method,
    path: &'static str,
    content_type: &'static str,
    encoding: Option<&'static str>,
    sender: Sender,
    body: fn() -> Vec<u8>,
    status: StatusCode,
    /// The `google.rpc.Status` code the answer's body must carry.
    code: Option<i32>,
    /// What the Status message must say.
    says: Option<&'static str>,
    /// The answer's content type.
    answered_as: Option<&'static str>,
    /// The answer's `Allow` header.
    allow: Option<&'static str>,
    /// The ledger must not grow.
    writes_nothing: bool,
    /// The server's memory must not grow by 64 MiB while it answers.
    within_memory: bool,
}

/// A valid protobuf export from the ingest token; each check says how it differs.
const EXPORT: Check = Check {
    what: "",
    method: reqwest::Method::POST,
    path: "/v1/traces",
    content_type: "application/x-protobuf",
    encoding: None,
    sender: Sender::Ingest,
    body: ok_pb,
    status: StatusCode::OK,
    code: None,
    says: None,
    answered_as: None,
    allow: None,
    writes_nothing: false,
    within_memory: false,
};

fn ok_pb() -> Vec<u8> {
    encode(
        &request("svc", vec![deploy_span(trace(), "CHG-1")]),
        Enc::Pb,
    )
}

fn ok_json() -> Vec<u8> {
    encode(
        &request("svc", vec![deploy_span(trace(), "CHG-1")]),
        Enc::Json,
    )
}

/// A span whose attribute nests 300 key-value lists deep.
fn deep() -> ExportTraceServiceRequest {
    let mut v = AnyValue {
        value: Some(Value::StringValue("x".into())),
    };
    for _ in 0..300 {
        v = AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(v),
                    ..Default::default()
                }],
            })),
        };
    }
    let mut deep = deploy_span(trace(), "CHG-1");
    deep.attributes.push(KeyValue {
        key: "deep".into(),
        value: Some(v),
        ..Default::default()
    });
    request("svc", vec![deep])
}

/// A valid export padded with zero bytes to exactly the limit: not valid protobuf, but not too
/// large either.
fn at_limit() -> Vec<u8> {
    let mut b = ok_pb();
    b.resize(LIMIT, 0);
    b
}

/// A gzip bomb: 32 MiB of zeros in ~32 KB (under the limit).
fn bomb() -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..32 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < LIMIT);
    bomb
}

/// A ResourceSpans holding only the legacy instrumentation_library_spans (field 1000).
fn legacy_only() -> Vec<u8> {
    let legacy_inner = ScopeSpans {
        spans: vec![deploy_span(trace(), "CHG-1")],
        ..Default::default()
    }
    .encode_to_vec();
    let mut rs = Vec::new();
    prost::encoding::bytes::encode(1000, &legacy_inner, &mut rs);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &rs, &mut req);
    req
}

/// The HTTP checks, in the order a request meets them.
fn http_checks() -> Vec<Check> {
    use StatusCode as S;
    vec![
        // Media types: parameters and case are fine; anything else is 415; GET is 405.
        Check {
            what: "JSON with a charset",
            content_type: "application/json; charset=utf-8",
            body: ok_json,
            answered_as: Some("application/json"),
            ..EXPORT
        },
        Check {
            what: "JSON in capitals",
            content_type: "APPLICATION/JSON",
            body: ok_json,
            answered_as: Some("application/json"),
            ..EXPORT
        },
        Check {
            what: "text/plain",
            content_type: "text/plain",
            status: S::UNSUPPORTED_MEDIA_TYPE,
            code: Some(3),
            ..EXPORT
        },
        Check {
            what: "JSON in latin-1",
            content_type: "application/json; charset=latin-1",
            status: S::UNSUPPORTED_MEDIA_TYPE,
            code: Some(3),
            ..EXPORT
        },
        Check {
            what: "no content type",
            content_type: "",
            status: S::UNSUPPORTED_MEDIA_TYPE,
            code: Some(3),
            ..EXPORT
        },
        Check {
            what: "GET",
            method: reqwest::Method::GET,
            sender: Sender::Nobody,
            status: S::METHOD_NOT_ALLOWED,
            allow: Some("POST"),
            ..EXPORT
        },
        Check {
            what: "metrics",
            path: "/v1/metrics",
            body: Vec::new,
            status: S::NOT_FOUND,
            code: Some(12),
            ..EXPORT
        },
        // Authentication comes first: missing, wrong, revoked-looking and wrong-role tokens.
        Check {
            what: "no token",
            sender: Sender::Nobody,
            status: S::UNAUTHORIZED,
            code: Some(16),
            ..EXPORT
        },
        Check {
            what: "a wrong token (never echoed)",
            sender: Sender::WrongToken,
            status: S::UNAUTHORIZED,
            ..EXPORT
        },
        Check {
            what: "a reviewer's token",
            sender: Sender::Reviewer,
            status: S::FORBIDDEN,
            code: Some(7),
            ..EXPORT
        },
        // ... even before a corrupt body is looked at.
        Check {
            what: "no token, corrupt gzip",
            encoding: Some("gzip"),
            sender: Sender::Nobody,
            body: || b"not gzip".to_vec(),
            status: S::UNAUTHORIZED,
            ..EXPORT
        },
        // Corrupt bodies and compression: 400 with a Status in the request's encoding.
        Check {
            what: "corrupt protobuf",
            body: || b"\xff\xff\xff\xff".to_vec(),
            status: S::BAD_REQUEST,
            code: Some(3),
            answered_as: Some("application/x-protobuf"),
            ..EXPORT
        },
        Check {
            what: "cut JSON",
            content_type: "application/json",
            body: || b"{\"resourceSpans\": [".to_vec(),
            status: S::BAD_REQUEST,
            code: Some(3),
            answered_as: Some("application/json"),
            ..EXPORT
        },
        Check {
            what: "corrupt gzip",
            encoding: Some("gzip"),
            body: || b"definitely not gzip".to_vec(),
            status: S::BAD_REQUEST,
            code: Some(3),
            answered_as: Some("application/x-protobuf"),
            ..EXPORT
        },
        Check {
            what: "corrupt zstd",
            content_type: "application/json",
            encoding: Some("zstd"),
            body: || b"definitely not zstd".to_vec(),
            status: S::BAD_REQUEST,
            code: Some(3),
            answered_as: Some("application/json"),
            ..EXPORT
        },
        Check {
            what: "brotli",
            content_type: "application/json",
            encoding: Some("br"),
            body: || b"{}".to_vec(),
            status: S::BAD_REQUEST,
            code: Some(3),
            answered_as: Some("application/json"),
            ..EXPORT
        },
        Check {
            what: "invalid UTF-8 inside a protobuf string field",
            body: || {
                let mut bad = ok_pb();
                let pos = bad.windows(6).position(|w| w == b"deploy").unwrap();
                bad[pos] = 0xff;
                bad
            },
            status: S::BAD_REQUEST,
            ..EXPORT
        },
        // Deeply nested AnyValue: refused cleanly, never a crash.
        Check {
            what: "deeply nested, protobuf",
            body: || encode(&deep(), Enc::Pb),
            status: S::BAD_REQUEST,
            ..EXPORT
        },
        Check {
            what: "deeply nested, JSON",
            content_type: "application/json",
            body: || encode(&deep(), Enc::Json),
            status: S::BAD_REQUEST,
            ..EXPORT
        },
        // Size: exactly the limit is accepted (as far as size goes), one more byte is 413.
        Check {
            what: "exactly the limit",
            body: at_limit,
            status: S::BAD_REQUEST,
            ..EXPORT
        },
        Check {
            what: "one byte over the limit",
            body: || {
                let mut b = at_limit();
                b.push(0);
                b
            },
            status: S::PAYLOAD_TOO_LARGE,
            code: Some(8),
            ..EXPORT
        },
        // A gzip bomb stops at the limit once inflated.
        Check {
            what: "a gzip bomb",
            encoding: Some("gzip"),
            body: bomb,
            status: S::PAYLOAD_TOO_LARGE,
            says: Some("after gzip decompression"),
            within_memory: true,
            ..EXPORT
        },
        // Empty requests are fine and write nothing.
        Check {
            what: "empty protobuf",
            body: Vec::new,
            writes_nothing: true,
            ..EXPORT
        },
        Check {
            what: "empty JSON",
            content_type: "application/json",
            body: || b"{}".to_vec(),
            writes_nothing: true,
            ..EXPORT
        },
        Check {
            what: "JSON with no spans",
            content_type: "application/json",
            body: || b"{\"resourceSpans\":[]}".to_vec(),
            writes_nothing: true,
            ..EXPORT
        },
        // Bodies that clearly carry data but decode to nothing are not a silent 200.
        Check {
            what: "snake_case JSON",
            content_type: "application/json",
            body: || {
                br#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"5b8efff798038103d269b633813fc60c"}]}]}]}"#.to_vec()
            },
            status: S::BAD_REQUEST,
            says: Some("lowerCamelCase"),
            ..EXPORT
        },
        Check {
            what: "legacy instrumentation_library_spans only",
            body: legacy_only,
            status: S::BAD_REQUEST,
            says: Some("legacy"),
            ..EXPORT
        },
    ]
}

/// Every HTTP check of `http_checks`, each against the same server, which stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_checked_before_they_are_trusted() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.otlp.max_request_bytes = LIMIT;
    let app = spawn_app_with(cfg).await;
    let wrong = format!("{}x", &app.ingest[..app.ingest.len() - 1]);
    for c in http_checks() {
        let what = c.what;
        let mut r = app
            .http
            .request(c.method.clone(), format!("{}{}", app.otlp, c.path));
        if c.method == reqwest::Method::POST {
            r = r.header("content-type", c.content_type).body((c.body)());
        }
        if let Some(ce) = c.encoding {
            r = r.header("content-encoding", ce);
        }
        r = match c.sender {
            Sender::Ingest => r.bearer_auth(&app.ingest),
            Sender::Reviewer => r.bearer_auth(&app.reviewer),
            Sender::WrongToken => r.bearer_auth(&wrong),
            Sender::Nobody => r,
        };
        let size = app.store.head().await.unwrap().unwrap().head.size;
        let memory = changetrail::sys::metrics::memory().0;
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), c.status, "{what}");
        if let Some(t) = c.answered_as {
            assert_eq!(r.headers()["content-type"], t, "{what}");
        }
        if let Some(a) = c.allow {
            assert_eq!(r.headers()["allow"], a, "{what}");
        }
        if c.within_memory {
            let after = changetrail::sys::metrics::memory().0;
            assert!(
                after < memory + (64 << 20),
                "{what}: memory grew from {memory} to {after}"
            );
        }
        if c.code.is_some() || c.says.is_some() || c.sender == Sender::WrongToken {
            let (code, message) = status_of(r).await;
            if let Some(want) = c.code {
                assert_eq!(code, want, "{what}: {message}");
            }
            if let Some(words) = c.says {
                assert!(message.contains(words), "{what}: {message}");
            }
            assert!(
                !message.contains(&wrong),
                "{what}: the token is never echoed"
            );
        }
        if c.writes_nothing {
            let after = app.store.head().await.unwrap().unwrap().head.size;
            assert_eq!(after, size, "{what} wrote to the ledger");
        }
        assert!(
            app.get("/healthz", None).await.status().is_success(),
            "{what}: the server is still healthy"
        );
    }
    app.stop().await;
}

/// Makes a valid span invalid.
type Spoil = fn(&mut Span);

/// Spans a receiver must reject, each beside a good one, and what the partial success says.
const BAD_SPANS: [(Spoil, &str); 4] = [
    (|s| s.trace_id = vec![0; 16], "trace_id is all zero"),
    (
        |s| s.span_id = vec![1, 2, 3],
        "span_id must be 8 bytes, not 3",
    ),
    (|s| s.parent_span_id = vec![9; 4], "parent_span_id"),
    (
        |s| s.end_time_unix_nano = s.start_time_unix_nano - 1,
        "timestamps",
    ),
];

/// Bad items are rejected through partial success while good neighbours are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_items_get_partial_success_and_good_ones_are_kept() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(config(&db)).await;
    let t = trace();
    let mut spans: Vec<Span> = BAD_SPANS
        .iter()
        .map(|(spoil, _)| {
            let mut s = deploy_span(t, "CHG-3");
            spoil(&mut s);
            s
        })
        .collect();
    spans.insert(1, deploy_span(t, "CHG-3"));
    let req = request("svc", spans);
    for enc in [Enc::Pb, Enc::Json] {
        let r = post(
            &app,
            "/v1/traces",
            content_type(enc),
            None,
            Some(&app.ingest),
            encode(&req, enc),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = r.bytes().await.unwrap();
        let (rejected, message) = match enc {
            Enc::Pb => {
                let p = ExportTraceServiceResponse::decode(body.as_ref())
                    .unwrap()
                    .partial_success
                    .unwrap();
                (p.rejected_spans, p.error_message)
            }
            Enc::Json => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                // OTLP/JSON writes int64 as a string.
                (
                    v["partialSuccess"]["rejectedSpans"]
                        .as_str()
                        .unwrap()
                        .parse()
                        .unwrap(),
                    v["partialSuccess"]["errorMessage"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            }
        };
        assert_eq!(rejected, BAD_SPANS.len() as i64, "{enc:?}");
        for (_, words) in BAD_SPANS {
            assert!(message.contains(words), "{message}");
        }
    }
    assert_eq!(
        spans_stored(&app, t).await,
        1,
        "the good span, once (the second send was a repeat)"
    );
    let m = app
        .get(
            "/metrics",
            Some(&app.token(changetrail::auth::Role::Metrics).await),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("changetrail_spans_rejected_total{reason=\"invalid_trace_id\"} 2"),
        "{m}"
    );
    assert!(m.contains("changetrail_spans_duplicate_total 1"), "{m}");
    app.stop().await;
}

/// Spans of a trace that arrive before its binding span wait in parking and are kept when it
/// comes; unrelated spans are parked, then dropped when the window passes; links bind too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_binding_links_and_parking() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.otlp.late_binding_window = Duration::from_secs(2);
    let app = spawn_app_with(cfg).await;
    let send = |spans: Vec<Span>| {
        let body = request("payments", spans).encode_to_vec();
        post(
            &app,
            "/v1/traces",
            "application/x-protobuf",
            None,
            Some(&app.ingest),
            body,
        )
    };
    let (deploy_trace, unrelated_trace, linked_trace) = (trace(), trace(), trace());
    // Runtime spans first: nothing binds them yet.
    assert_eq!(
        send(vec![
            span(deploy_trace, "GET /pay", vec![]),
            span(unrelated_trace, "GET /health", vec![])
        ])
        .await
        .status(),
        StatusCode::OK
    );
    assert_eq!(spans_stored(&app, deploy_trace).await, 0);
    assert_eq!(app.ingestor.binder_stats().parked_spans, 2);
    // The deploy span arrives: its parked trace-mate is kept with it, bound by shared trace.
    assert_eq!(
        send(vec![deploy_span(deploy_trace, "CHG-42")])
            .await
            .status(),
        StatusCode::OK
    );
    let stored = app.store.spans_of_trace(&deploy_trace).await.unwrap();
    assert_eq!(stored.len(), 2);
    let rules: Vec<&str> = stored.iter().map(|s| s.rule.as_str()).collect();
    assert!(
        rules.contains(&"attribute") && rules.contains(&"trace"),
        "{rules:?}"
    );
    assert!(stored.iter().all(|s| s.subject == "CHG-42"));
    // Later spans of the bound trace are kept at once; a span linking to it binds its own trace.
    let mut linked = span(linked_trace, "consumer", vec![]);
    linked.links.push(Link {
        trace_id: deploy_trace.to_vec(),
        span_id: stored[0].span_id.to_vec(),
        ..Default::default()
    });
    assert_eq!(
        send(vec![span(deploy_trace, "GET /pay again", vec![]), linked])
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(spans_stored(&app, deploy_trace).await, 3);
    let l = app.store.spans_of_trace(&linked_trace).await.unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].rule, "link");
    // The unrelated span is dropped when the window passes (checked on the next request).
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(
        send(vec![span(trace(), "GET /other", vec![])])
            .await
            .status(),
        StatusCode::OK
    );
    let s = app.ingestor.binder_stats();
    assert_eq!(s.dropped_expired, 1);
    assert_eq!(s.parked_spans, 1);
    assert_eq!(spans_stored(&app, unrelated_trace).await, 0);
    // Every kept span is covered by a spans.bound entry whose digest matches the stored bytes.
    let entries = app.store.entries(0, 1000).await.unwrap();
    for s in app.store.spans_of_trace(&deploy_trace).await.unwrap() {
        let e = entries.iter().find(|e| e.seq == s.entry_seq).unwrap();
        assert_eq!(e.kind, "spans.bound");
        assert_eq!(e.subject, "CHG-42");
        let digest = changetrail::core::evidence::contract::telemetry_digest(b"span", &s.body);
        assert_eq!(digest, s.digest);
        assert!(e.payload.as_ref().unwrap().contains(&digest.to_hex()));
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_stored() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(config(&db)).await;
    let t = trace();
    let mut s = deploy_span(t, "CHG-5");
    s.attributes.push(kv(
        "changetrail.approval.token",
        "eyJhbGciOiJFZERTQSJ9.payload.signature-abc",
    ));
    s.attributes.push(kv("db.password", "hunter2-secret-pw"));
    s.attributes.push(KeyValue {
        key: "http.request.headers".into(),
        value: Some(AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![kv("Authorization", "Bearer sk-live-123456")],
            })),
        }),
        ..Default::default()
    });
    let mut req = request("svc", vec![s]);
    req.resource_spans[0]
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("vault.api_key", "resource-level-key-999"));
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        Some(&app.ingest),
        req.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let stored = app.store.spans_of_trace(&t).await.unwrap();
    let body = String::from_utf8_lossy(&stored[0].body).to_string();
    for secret in [
        "eyJhbGciOiJFZERTQSJ9",
        "hunter2",
        "sk-live-123456",
        "resource-level-key-999",
    ] {
        assert!(!body.contains(secret), "{secret} was stored");
    }
    let digest = changetrail::core::evidence::contract::credential_digest(
        "eyJhbGciOiJFZERTQSJ9.payload.signature-abc",
    );
    assert!(body.contains(&digest), "the token is kept as its SHA-256");
    assert!(body.contains("[redacted]"));
    assert!(body.contains("CHG-5"), "ordinary attributes are kept");
    app.stop().await;
}

/// Log records with the contract (or an approval event) are kept; others are not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_log_events_are_kept() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(config(&db)).await;
    let t = trace();
    let now = changetrail::sys::now_ns() as u64;
    let approval = LogRecord {
        time_unix_nano: now,
        event_name: "changetrail.approval".into(),
        trace_id: t.to_vec(),
        attributes: vec![
            kv("changetrail.approval.decision", "approved"),
            kv("changetrail.approval.approver", "bob@example.com"),
            kv("changetrail.change.id", "CHG-6"),
        ],
        ..Default::default()
    };
    let chatter = LogRecord {
        time_unix_nano: now,
        body: Some(AnyValue {
            value: Some(Value::StringValue("GET /health 200".into())),
        }),
        ..Default::default()
    };
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "approvals")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![approval, chatter],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    for enc in ["application/x-protobuf", "application/json"] {
        let body = if enc == "application/json" {
            serde_json::to_vec(&req).unwrap()
        } else {
            req.encode_to_vec()
        };
        let r = post(
            &app,
            "/v1/logs",
            enc,
            Some("gzip"),
            Some(&app.ingest),
            compress(&body, Comp::Gzip),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK, "{enc}");
    }
    let logs = app.store.log_records(10).await.unwrap();
    assert_eq!(logs.len(), 1, "kept once; the chatter is not evidence");
    assert_eq!(logs[0].event_name, "changetrail.approval");
    assert_eq!(logs[0].subject, "CHG-6");
    // The approval bound its trace: a span of it arriving later is kept.
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        Some(&app.ingest),
        request("svc", vec![span(t, "approve", vec![])]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(spans_stored(&app, t).await, 1);
    app.stop().await;
}

async fn grpc_client(app: &TestApp) -> TraceServiceClient<tonic::transport::Channel> {
    TraceServiceClient::connect(app.grpc.clone()).await.unwrap()
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

/// What a gRPC export's compression may be.
const GRPC_COMPRESSIONS: [Option<tonic::codec::CompressionEncoding>; 3] = [
    None,
    Some(tonic::codec::CompressionEncoding::Gzip),
    Some(tonic::codec::CompressionEncoding::Zstd),
];

/// Who sends a gRPC export that must be refused, and the status it gets.
#[derive(Debug, Clone, Copy)]
enum Refused {
    NoToken,
    WrongToken,
    AnotherRole,
}

const GRPC_REFUSALS: [(Refused, tonic::Code); 3] = [
    (Refused::NoToken, tonic::Code::Unauthenticated),
    (Refused::WrongToken, tonic::Code::Unauthenticated),
    (Refused::AnotherRole, tonic::Code::PermissionDenied),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_semantics_sqlite() {
    grpc_semantics(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_semantics_postgres() {
    if let Some(db) = TestDb::postgres("grpc_semantics_postgres").await {
        grpc_semantics(db).await;
    }
}

/// Partial success under every compression, refusals, the size limit, a busy store, legacy-only
/// content and unknown services, and logs.
async fn grpc_semantics(db: TestDb) {
    let mut cfg = fast_failing(&db);
    cfg.otlp.max_request_bytes = 64 * 1024;
    let app = spawn_app_with(cfg).await;
    for comp in GRPC_COMPRESSIONS {
        let mut c = grpc_client(&app).await;
        if let Some(comp) = comp {
            c = c.send_compressed(comp);
        }
        let t = trace();
        let mut bad = deploy_span(t, "CHG-1");
        bad.span_id = vec![0; 8];
        let resp = c
            .export(with_token(
                request("svc", vec![deploy_span(t, "CHG-1"), bad]),
                &app.ingest,
            ))
            .await
            .unwrap()
            .into_inner();
        let p = resp.partial_success.unwrap();
        assert_eq!(p.rejected_spans, 1, "{comp:?}");
        assert!(p.error_message.contains("span_id is all zero"));
        assert_eq!(spans_stored(&app, t).await, 1);
    }
    let mut c = grpc_client(&app).await;
    let ok = || request("svc", vec![deploy_span(trace(), "CHG-2")]);
    // Authentication.
    let wrong = format!("{}x", &app.ingest[..app.ingest.len() - 1]);
    for (who, code) in GRPC_REFUSALS {
        let req = match who {
            Refused::NoToken => tonic::Request::new(ok()),
            Refused::WrongToken => with_token(ok(), &wrong),
            Refused::AnotherRole => with_token(ok(), &app.reviewer),
        };
        let e = c.export(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{who:?}");
    }
    // Over the limit: RESOURCE_EXHAUSTED (never OUT_OF_RANGE, which clients retry forever),
    // whether the message is compressed or not.
    let big: Vec<Span> = (0..2000).map(|_| deploy_span(trace(), "CHG-3")).collect();
    for comp in [None, Some(tonic::codec::CompressionEncoding::Gzip)] {
        let mut c = grpc_client(&app).await;
        if let Some(comp) = comp {
            c = c.send_compressed(comp);
        }
        let e = c
            .export(with_token(request("svc", big.clone()), &app.ingest))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{comp:?}: {e:?}");
    }
    // Storage busy: UNAVAILABLE with RetryInfo as a detail and in the trailer.
    let lock = hold_write_lock(&db, Duration::from_secs(2)).await;
    let e = c.export(with_token(ok(), &app.ingest)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    use tonic_types::StatusExt;
    let delay = e
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap();
    assert_eq!(delay, Duration::from_secs(1));
    let trailer = e
        .metadata()
        .get_bin("google.rpc.retryinfo-bin")
        .unwrap()
        .to_bytes()
        .unwrap();
    let info = tonic_types::pb::RetryInfo::decode(trailer.as_ref()).unwrap();
    assert_eq!(info.retry_delay.unwrap().seconds, 1);
    lock.await.unwrap();
    // Legacy-only content is not a silent OK; metrics are a clear UNIMPLEMENTED.
    let legacy_inner = ScopeSpans {
        spans: vec![deploy_span(trace(), "CHG-1")],
        ..Default::default()
    }
    .encode_to_vec();
    let mut rs = Vec::new();
    prost::encoding::bytes::encode(1000, &legacy_inner, &mut rs);
    let legacy = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans::decode(rs.as_slice()).unwrap()],
    };
    // prost drops field 1000 when decoding, so send the raw bytes through a byte-level request.
    let raw = {
        let mut req = Vec::new();
        prost::encoding::bytes::encode(1, &rs, &mut req);
        req
    };
    assert!(legacy.encoded_len() < raw.len());
    let status = raw_grpc(&app, changetrail::ingest::grpc::TRACE_EXPORT, &raw).await;
    assert_eq!(
        status, "3",
        "INVALID_ARGUMENT for a body that decodes to nothing"
    );
    let status = raw_grpc(
        &app,
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
        &[],
    )
    .await;
    assert_eq!(status, "12");
    // Logs over gRPC.
    let mut logs = LogsServiceClient::connect(app.grpc.clone()).await.unwrap();
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 1,
                    attributes: vec![kv("changetrail.change.id", "CHG-L")],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    logs.export(with_token(req, &app.ingest)).await.unwrap();
    assert_eq!(app.store.log_count().await.unwrap(), 1);
    app.stop().await;
}

/// Stopping the service while exports are in flight: listeners close first, every request that
/// was answered 200 is committed, and nothing is half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_or_commits_every_export_in_flight() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(config(&db)).await;
    let mut sent = Vec::new();
    let (answered, mut first_answer) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..40 {
        let t = trace();
        let body = request("svc", vec![deploy_span(t, "CHG-STOP")]).encode_to_vec();
        let req = app
            .http
            .post(format!("{}/v1/traces", app.otlp))
            .header("content-type", "application/x-protobuf")
            .bearer_auth(&app.ingest)
            .body(body);
        let answered = answered.clone();
        sent.push((
            t,
            tokio::spawn(async move {
                let r = req.send().await;
                if matches!(&r, Ok(r) if r.status() == StatusCode::OK) {
                    let _ = answered.send(());
                }
                r
            }),
        ));
    }
    // Stop as soon as one export has been answered, while the others are still in flight.
    tokio::time::timeout(Duration::from_secs(60), first_answer.recv())
        .await
        .expect("no export was answered within a minute")
        .expect("an export answered");
    app.stop().await;
    let store = db.store().await;
    let mut ok = 0;
    for (t, h) in sent {
        let stored = store.spans_of_trace(&t).await.unwrap().len();
        match h.await.unwrap() {
            Ok(r) if r.status() == StatusCode::OK => {
                ok += 1;
                assert_eq!(stored, 1, "acknowledged but not stored");
            }
            // Refused or cut off before an answer: the exporter retries; at most stored once.
            _ => assert!(stored <= 1),
        }
    }
    assert!(ok > 0, "some exports were in flight and answered");
    let head = store.head().await.unwrap().unwrap();
    assert_eq!(
        head.checkpoint_size, head.head.size,
        "the final checkpoint covers everything"
    );
}
