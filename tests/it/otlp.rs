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

/// {protobuf, JSON} × {none, gzip, deflate, zstd} × {success, retryable, permanent}.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_conformance_matrix() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(fast_failing(&db)).await;
    for enc in [Enc::Pb, Enc::Json] {
        for comp in [Comp::None, Comp::Gzip, Comp::Deflate, Comp::Zstd] {
            let ce = match comp {
                Comp::None => None,
                Comp::Gzip => Some("gzip"),
                Comp::Deflate => Some("deflate"),
                Comp::Zstd => Some("zstd"),
            };
            let what = format!("{enc:?}/{comp:?}");
            // Success: 200, the response in the request's encoding, the span stored.
            let t = trace();
            let body = compress(
                &encode(&request("deployer", vec![deploy_span(t, "CHG-7")]), enc),
                comp,
            );
            let r = post(
                &app,
                "/v1/traces",
                content_type(enc),
                ce,
                Some(&app.ingest),
                body.clone(),
            )
            .await;
            assert_eq!(r.status(), StatusCode::OK, "{what}");
            assert_eq!(r.headers()["content-type"], content_type(enc), "{what}");
            let bytes = r.bytes().await.unwrap();
            match enc {
                Enc::Pb => assert_eq!(
                    ExportTraceServiceResponse::decode(bytes.as_ref()).unwrap(),
                    ExportTraceServiceResponse::default()
                ),
                Enc::Json => assert_eq!(bytes.as_ref(), b"{}", "{what}"),
            }
            assert_eq!(spans_stored(&app, t).await, 1, "{what}");

            // Retryable: storage is locked by someone else; 503 + Retry-After + Status(UNAVAILABLE).
            let t = trace();
            let lock = hold_write_lock(&db, Duration::from_secs(2)).await;
            let body = compress(
                &encode(&request("deployer", vec![deploy_span(t, "CHG-8")]), enc),
                comp,
            );
            let r = post(
                &app,
                "/v1/traces",
                content_type(enc),
                ce,
                Some(&app.ingest),
                body.clone(),
            )
            .await;
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
            assert_eq!(r.headers()["retry-after"], "1", "{what}");
            assert_eq!(r.headers()["content-type"], content_type(enc));
            let (code, _) = status_of(r).await;
            assert_eq!(code, 14, "{what}");
            lock.await.unwrap();
            assert_eq!(
                spans_stored(&app, t).await,
                0,
                "nothing acknowledged, nothing half-stored"
            );
            // The client's retry succeeds.
            let r = post(
                &app,
                "/v1/traces",
                content_type(enc),
                ce,
                Some(&app.ingest),
                body,
            )
            .await;
            assert_eq!(r.status(), StatusCode::OK, "{what} retry");
            assert_eq!(spans_stored(&app, t).await, 1);

            // Permanent: storage refuses for good; 500 + Status(INTERNAL), no Retry-After.
            exec(&app.store, "CREATE TRIGGER refuse BEFORE INSERT ON spans BEGIN SELECT RAISE(ABORT, 'injected failure'); END").await.unwrap();
            let t = trace();
            let body = compress(
                &encode(&request("deployer", vec![deploy_span(t, "CHG-9")]), enc),
                comp,
            );
            let r = post(
                &app,
                "/v1/traces",
                content_type(enc),
                ce,
                Some(&app.ingest),
                body,
            )
            .await;
            assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR, "{what}");
            assert!(r.headers().get("retry-after").is_none());
            let (code, message) = status_of(r).await;
            assert_eq!(code, 13);
            assert!(
                !message.contains("injected"),
                "internal details stay internal: {message}"
            );
            exec(&app.store, "DROP TRIGGER refuse").await.unwrap();
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_are_checked_before_they_are_trusted() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.otlp.max_request_bytes = 64 * 1024;
    let app = spawn_app_with(cfg).await;
    let ok = |t| encode(&request("svc", vec![deploy_span(t, "CHG-1")]), Enc::Pb);

    // Media types: parameters and case are fine; anything else is 415; GET is 405.
    for ct in ["application/json; charset=utf-8", "APPLICATION/JSON"] {
        let t = trace();
        let body = encode(&request("svc", vec![deploy_span(t, "CHG-1")]), Enc::Json);
        let r = post(&app, "/v1/traces", ct, None, Some(&app.ingest), body).await;
        assert_eq!(r.status(), StatusCode::OK, "{ct}");
        assert_eq!(r.headers()["content-type"], "application/json");
    }
    for ct in ["text/plain", "application/json; charset=latin-1", ""] {
        let r = post(&app, "/v1/traces", ct, None, Some(&app.ingest), ok(trace())).await;
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(status_of(r).await.0, 3);
    }
    let r = app
        .http
        .get(format!("{}/v1/traces", app.otlp))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()["allow"], "POST");
    let r = post(
        &app,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        Some(&app.ingest),
        vec![],
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(status_of(r).await.0, 12);

    // Authentication comes first: missing, wrong, revoked-looking and wrong-role tokens.
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        None,
        ok(trace()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(r).await.0, 16);
    let wrong = format!("{}x", &app.ingest[..app.ingest.len() - 1]);
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        Some(&wrong),
        ok(trace()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, message) = status_of(r).await;
    assert!(!message.contains(&wrong), "the token is never echoed");
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        Some(&app.reviewer),
        ok(trace()),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(status_of(r).await.0, 7);
    // ... even before a corrupt body is looked at.
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        Some("gzip"),
        None,
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Corrupt bodies and compression: 400 with a Status in the request's encoding.
    for (ct, ce, body) in [
        ("application/x-protobuf", None, b"\xff\xff\xff\xff".to_vec()),
        ("application/json", None, b"{\"resourceSpans\": [".to_vec()),
        (
            "application/x-protobuf",
            Some("gzip"),
            b"definitely not gzip".to_vec(),
        ),
        (
            "application/json",
            Some("zstd"),
            b"definitely not zstd".to_vec(),
        ),
        ("application/json", Some("br"), b"{}".to_vec()),
    ] {
        let r = post(&app, "/v1/traces", ct, ce, Some(&app.ingest), body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{ct} {ce:?}");
        assert_eq!(r.headers()["content-type"], ct);
        assert_eq!(status_of(r).await.0, 3);
    }

    // Invalid UTF-8 inside a protobuf string field.
    let mut bad = request("svc", vec![deploy_span(trace(), "CHG-1")]).encode_to_vec();
    let pos = bad.windows(6).position(|w| w == b"deploy").unwrap();
    bad[pos] = 0xff;
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        Some(&app.ingest),
        bad,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Deeply nested AnyValue: refused cleanly, never a crash.
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
    for enc in [Enc::Pb, Enc::Json] {
        let r = post(
            &app,
            "/v1/traces",
            content_type(enc),
            None,
            Some(&app.ingest),
            encode(&request("svc", vec![deep.clone()]), enc),
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{enc:?}");
    }
    assert!(app.get("/healthz", None).await.status().is_success());

    // Size: exactly the limit is accepted (as far as size goes), one more byte is 413.
    let limit = 64 * 1024;
    let mut at_limit = ok(trace());
    at_limit.resize(limit, 0); // trailing zero bytes are not valid protobuf: 400, but not 413
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        Some(&app.ingest),
        at_limit.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    at_limit.push(0);
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        Some(&app.ingest),
        at_limit,
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(status_of(r).await.0, 8);
    // A gzip bomb: 32 MiB of zeros in ~32 KB (under the limit) stops at the limit once inflated.
    let zeros = vec![0u8; 1 << 20];
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..32 {
        e.write_all(&zeros).unwrap();
    }
    let bomb = e.finish().unwrap();
    assert!(bomb.len() < limit);
    let before = changetrail::sys::metrics::memory().0;
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        Some("gzip"),
        Some(&app.ingest),
        bomb,
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(status_of(r).await.1.contains("after gzip decompression"));
    let after = changetrail::sys::metrics::memory().0;
    assert!(
        after < before + (64 << 20),
        "memory grew from {before} to {after}"
    );

    // Empty requests are fine and write nothing.
    let size = app.store.head().await.unwrap().unwrap().head.size;
    for (ct, body) in [
        ("application/x-protobuf", vec![]),
        ("application/json", b"{}".to_vec()),
        ("application/json", b"{\"resourceSpans\":[]}".to_vec()),
    ] {
        let r = post(&app, "/v1/traces", ct, None, Some(&app.ingest), body).await;
        assert_eq!(r.status(), StatusCode::OK, "{ct}");
    }
    assert_eq!(app.store.head().await.unwrap().unwrap().head.size, size);

    // Bodies that clearly carry data but decode to nothing are not a silent 200.
    let snake = br#"{"resource_spans":[{"scope_spans":[{"spans":[{"trace_id":"5b8efff798038103d269b633813fc60c"}]}]}]}"#;
    let r = post(
        &app,
        "/v1/traces",
        "application/json",
        None,
        Some(&app.ingest),
        snake.to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(status_of(r).await.1.contains("lowerCamelCase"));
    // Protobuf with only the legacy instrumentation_library_spans (field 1000) inside ResourceSpans.
    let legacy_inner = ScopeSpans {
        spans: vec![deploy_span(trace(), "CHG-1")],
        ..Default::default()
    }
    .encode_to_vec();
    let mut rs = Vec::new();
    prost::encoding::bytes::encode(1000, &legacy_inner, &mut rs);
    let mut req = Vec::new();
    prost::encoding::bytes::encode(1, &rs, &mut req);
    let r = post(
        &app,
        "/v1/traces",
        "application/x-protobuf",
        None,
        Some(&app.ingest),
        req,
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(status_of(r).await.1.contains("legacy"));
    app.stop().await;
}

/// Bad items are rejected through partial success while good neighbours are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_items_get_partial_success_and_good_ones_are_kept() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(config(&db)).await;
    let t = trace();
    let good = deploy_span(t, "CHG-3");
    let mut zero_trace = deploy_span(t, "CHG-3");
    zero_trace.trace_id = vec![0; 16];
    let mut short_span = deploy_span(t, "CHG-3");
    short_span.span_id = vec![1, 2, 3];
    let mut bad_parent = deploy_span(t, "CHG-3");
    bad_parent.parent_span_id = vec![9; 4];
    let mut backwards = deploy_span(t, "CHG-3");
    backwards.end_time_unix_nano = backwards.start_time_unix_nano - 1;
    let req = request(
        "svc",
        vec![zero_trace, good, short_span, bad_parent, backwards],
    );
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
        assert_eq!(rejected, 4, "{enc:?}");
        for words in [
            "trace_id is all zero",
            "span_id must be 8 bytes, not 3",
            "parent_span_id",
            "timestamps",
        ] {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_semantics() {
    for db in TestDb::all("grpc_semantics").await {
        let mut cfg = fast_failing(&db);
        cfg.otlp.max_request_bytes = 64 * 1024;
        let app = spawn_app_with(cfg).await;
        for comp in [
            None,
            Some(tonic::codec::CompressionEncoding::Gzip),
            Some(tonic::codec::CompressionEncoding::Zstd),
        ] {
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
        let e = c.export(tonic::Request::new(ok())).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = c
            .export(with_token(
                ok(),
                &format!("{}x", &app.ingest[..app.ingest.len() - 1]),
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = c.export(with_token(ok(), &app.reviewer)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        // Over the limit: RESOURCE_EXHAUSTED (never OUT_OF_RANGE, which clients retry forever),
        // whether the message is compressed or not.
        let big: Vec<Span> = (0..2000).map(|_| deploy_span(trace(), "CHG-3")).collect();
        let e = c
            .export(with_token(request("svc", big.clone()), &app.ingest))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        let mut gz = grpc_client(&app)
            .await
            .send_compressed(tonic::codec::CompressionEncoding::Gzip);
        let e = gz
            .export(with_token(request("svc", big), &app.ingest))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
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
}

/// Stopping the service while exports are in flight: listeners close first, every request that
/// was answered 200 is committed, and nothing is half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_or_commits_every_export_in_flight() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(config(&db)).await;
    let mut sent = Vec::new();
    for _ in 0..40 {
        let t = trace();
        let body = request("svc", vec![deploy_span(t, "CHG-STOP")]).encode_to_vec();
        let req = app
            .http
            .post(format!("{}/v1/traces", app.otlp))
            .header("content-type", "application/x-protobuf")
            .bearer_auth(&app.ingest)
            .body(body);
        sent.push((t, tokio::spawn(req.send())));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
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
