//! Hostile input through the real listeners: every [otlp.limits] limit on both transports, the
//! amplification request that used to exhaust memory, admission shares per token, and mutated
//! requests that must never crash the receiver or get a 5xx.

use crate::support::otlp::{deploy_span, kv, raw_grpc, request, span, trace};
use crate::support::server::{
    Served, TestApp, TestDb, config, create_token, serve_in, sigterm, spawn_app_with,
};
use changetrail::auth::Role;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::Write;
use std::time::Duration;

fn val(v: Value) -> KeyValue {
    KeyValue {
        key: "v".into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn nested(depth: usize) -> Value {
    let mut v = Value::StringValue("leaf".into());
    for _ in 0..depth {
        v = Value::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: Some(v) }],
        });
    }
    v
}

/// Small limits, so each one is easy to cross.
fn limited(db: &TestDb) -> changetrail::app::config::Config {
    let mut c = config(db);
    let l = &mut c.otlp.limits;
    l.max_span_attributes = 8;
    l.max_resource_attributes = 4;
    l.max_event_attributes = 2;
    l.max_link_attributes = 2;
    l.max_log_record_attributes = 3;
    l.max_attribute_key_length = 32;
    l.max_attribute_value_length = 16;
    l.max_array_length = 3;
    l.max_kvlist_length = 3;
    l.max_value_depth = 2;
    l.max_events_per_span = 2;
    l.max_links_per_span = 2;
    l.max_spans_per_request = 3;
    l.max_log_records_per_request = 2;
    c
}

/// A request crossing every span limit: 5 kept spans (2 over the per-request limit), the first
/// with too many and too large attributes, events and links.
fn over_limits(t: [u8; 16]) -> ExportTraceServiceRequest {
    let mut first = deploy_span(t, "CHG-LIMITS");
    first.attributes.extend([
        kv("long.value", &"x".repeat(40)),
        kv(&"k".repeat(40), "dropped for its key"),
        KeyValue {
            key: "array".into(),
            value: Some(AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue::default(); 5],
                })),
            }),
            ..Default::default()
        },
        KeyValue {
            key: "deep".into(),
            ..val(nested(4))
        },
        KeyValue {
            key: "map".into(),
            ..val(Value::KvlistValue(KeyValueList {
                values: (0..4).map(|i| kv(&format!("m{i}"), "v")).collect(),
            }))
        },
    ]);
    for i in 0..10 {
        first.attributes.push(kv(&format!("extra.{i}"), "v"));
    }
    first.events = (0..4)
        .map(|i| Event {
            name: format!("e{i}"),
            attributes: (0..3).map(|j| kv(&format!("a{j}"), "v")).collect(),
            ..Default::default()
        })
        .collect();
    first.links = (0..3)
        .map(|_| Link {
            trace_id: trace().to_vec(),
            span_id: vec![1; 8],
            attributes: (0..3).map(|j| kv(&format!("a{j}"), "v")).collect(),
            ..Default::default()
        })
        .collect();
    let mut spans = vec![first];
    spans.extend((0..4).map(|_| deploy_span(t, "CHG-LIMITS")));
    let mut r = request("svc", spans);
    if let Some(res) = r.resource_spans[0].resource.as_mut() {
        res.attributes
            .extend((0..6).map(|i| kv(&format!("res.{i}"), "v")));
    }
    r
}

/// What a stored row says the first span became.
fn check_stored_span(body: &[u8]) {
    let rs = ResourceSpans::decode(body).unwrap();
    let res = rs.resource.unwrap();
    assert_eq!(res.attributes.len(), 4);
    assert_eq!(res.dropped_attributes_count, 3);
    let span = &rs.scope_spans[0].spans[0];
    assert_eq!(span.attributes.len(), 8, "{:?}", span.attributes);
    assert!(span.dropped_attributes_count > 0);
    assert_eq!(span.events.len(), 2);
    assert_eq!(span.dropped_events_count, 2);
    assert!(span.events.iter().all(|e| e.attributes.len() == 2));
    assert_eq!(span.links.len(), 2);
    assert_eq!(span.dropped_links_count, 1);
    let get = |k: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    // The contract attributes come first and survive; the over-long value is cut.
    assert!(get("changetrail.change.id").is_some());
    if let Some(Value::StringValue(s)) = get("long.value") {
        assert_eq!(s.len(), 16);
    }
    assert!(span.attributes.iter().all(|a| a.key.len() <= 32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_is_applied_on_both_transports_and_said() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(limited(&db)).await;
    // OTLP/HTTP protobuf and JSON.
    for json in [false, true] {
        let t = trace();
        let req = over_limits(t);
        let (ct, body) = if json {
            ("application/json", serde_json::to_vec(&req).unwrap())
        } else {
            ("application/x-protobuf", req.encode_to_vec())
        };
        let r = app
            .http
            .post(format!("{}/v1/traces", app.otlp))
            .header("content-type", ct)
            .bearer_auth(&app.ingest)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (rejected, message) = if json {
            let v: serde_json::Value = r.json().await.unwrap();
            (
                v["partialSuccess"]["rejectedSpans"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                v["partialSuccess"]["errorMessage"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        } else {
            let p = ExportTraceServiceResponse::decode(r.bytes().await.unwrap())
                .unwrap()
                .partial_success
                .unwrap();
            (p.rejected_spans.to_string(), p.error_message)
        };
        assert_eq!(rejected, "2", "{message}");
        assert!(message.contains("more than 3 in one request"), "{message}");
        for what in [
            "attributes",
            "events",
            "links",
            "attribute value length",
            "attribute key length",
            "array length",
            "kvlist length",
            "value depth",
        ] {
            assert!(message.contains(what), "{what} not in {message}");
        }
        let stored = app.store.spans_of_trace(&t).await.unwrap();
        assert_eq!(stored.len(), 3, "json={json}");
        let first = stored
            .iter()
            .map(|s| ResourceSpans::decode(s.body.as_slice()).unwrap())
            .position(|rs| rs.scope_spans[0].spans[0].attributes.len() == 8)
            .expect("the first span, cut to 8 attributes");
        check_stored_span(&stored[first].body);
    }
    // OTLP/gRPC.
    let mut c = TraceServiceClient::connect(app.grpc.clone()).await.unwrap();
    let t = trace();
    let mut r = tonic::Request::new(over_limits(t));
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", app.ingest).parse().unwrap(),
    );
    let p = c
        .export(r)
        .await
        .unwrap()
        .into_inner()
        .partial_success
        .unwrap();
    assert_eq!(p.rejected_spans, 2);
    assert!(
        p.error_message.contains("value depth"),
        "{}",
        p.error_message
    );
    let stored = app.store.spans_of_trace(&t).await.unwrap();
    assert_eq!(stored.len(), 3);
    // Log records, both transports: per-request count, attributes, the body's value.
    let logs = |n: usize, first: u64| ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..n)
                    .map(|i| LogRecord {
                        // Distinct records: identical ones would be stored once.
                        time_unix_nano: first + i as u64,
                        body: Some(AnyValue {
                            value: Some(Value::StringValue("b".repeat(100))),
                        }),
                        attributes: (0..6)
                            .map(|i| kv(&format!("changetrail.x{i}"), "v"))
                            .chain([kv("changetrail.change.id", "CHG-LOGS")])
                            .collect(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let before = app.store.log_count().await.unwrap();
    let r = app
        .http
        .post(format!("{}/v1/logs", app.otlp))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(&app.ingest)
        .body(logs(5, 1).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let p = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse::decode(
        r.bytes().await.unwrap(),
    )
    .unwrap()
    .partial_success
    .unwrap();
    assert_eq!(p.rejected_log_records, 3, "{}", p.error_message);
    assert!(p.error_message.contains("attribute value length"));
    let mut lc = LogsServiceClient::connect(app.grpc.clone()).await.unwrap();
    let mut r = tonic::Request::new(logs(3, 100));
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", app.ingest).parse().unwrap(),
    );
    let p = lc
        .export(r)
        .await
        .unwrap()
        .into_inner()
        .partial_success
        .unwrap();
    assert_eq!(p.rejected_log_records, 1);
    // The kept records (contract attributes) are stored, cut.
    assert_eq!(app.store.log_count().await.unwrap(), before + 4);
    // Counted in /metrics, by what was cut.
    let m = app.ingestor.metrics.get(
        "changetrail_otlp_truncated_total",
        &[("signal", "traces"), ("what", "events")],
    );
    assert_eq!(
        m,
        3 * 2,
        "two events cut from one span in each of three requests"
    );
    let rejected = app.ingestor.metrics.get(
        "changetrail_spans_rejected_total",
        &[("reason", "too_many_in_request")],
    );
    assert_eq!(rejected, 6);
    app.stop().await;
}

/// The issue's request: one resource of 1,000 attributes of 1 KB, 6,000 scopes of 2 spans each,
/// 52 KB gzip-compressed. It must be answered, and the server's peak memory stay in its bound.
fn amplification() -> ExportTraceServiceRequest {
    let t = trace();
    let now = changetrail::sys::now_ns() as u64;
    let span = |i: u64| Span {
        trace_id: t.to_vec(),
        span_id: (i + 1).to_be_bytes().to_vec(),
        name: "s".into(),
        start_time_unix_nano: now - 1000,
        end_time_unix_nano: now,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: (0..1000)
                    .map(|i| kv(&format!("attr.{i}"), &"a".repeat(1024)))
                    .collect(),
                ..Default::default()
            }),
            scope_spans: (0..6000)
                .map(|i| ScopeSpans {
                    spans: vec![span(2 * i), span(2 * i + 1)],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amplification_request_is_answered_within_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    // A small in-flight budget and parking, so the bound is tight: base + 48 MiB + 8 MiB.
    let served: Served = serve_in(
        dir.path(),
        &[],
        Some("info"),
        &[
            ("CHANGETRAIL_OTLP__MAX_INFLIGHT_BYTES", "50331648"),
            ("CHANGETRAIL_OTLP__MAX_INFLIGHT_BYTES_PER_TOKEN", "16777216"),
            ("CHANGETRAIL_OTLP__MAX_PARKED_BYTES", "8388608"),
        ],
    );
    let http_addr = served.addr("http").await;
    let otlp = format!("http://{}", served.addr("otlp_http").await);
    let grpc = format!("http://{}", served.addr("otlp_grpc").await);
    let client = reqwest::Client::new();
    let base = format!("http://{http_addr}");
    let base_rss = served.peak_rss();
    let tokens = [
        create_token(&client, &base, &served.admin, "ingest", "a").await,
        create_token(&client, &base, &served.admin, "ingest", "b").await,
    ];
    let raw = amplification().encode_to_vec();
    let body = gzip(&raw);
    assert!(body.len() < 80_000, "{} bytes compressed", body.len());
    assert!(raw.len() > 1_000_000);
    // Eight at once on each transport, two senders.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (client, otlp, body, token) = (
            client.clone(),
            otlp.clone(),
            body.clone(),
            tokens[i % 2].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(format!("{otlp}/v1/traces"))
                .header("content-type", "application/x-protobuf")
                .header("content-encoding", "gzip")
                .bearer_auth(&token)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }));
        let (grpc, token) = (grpc.clone(), tokens[i % 2].clone());
        tasks.push(tokio::spawn(async move {
            let mut c = TraceServiceClient::connect(grpc)
                .await
                .unwrap()
                .send_compressed(tonic::codec::CompressionEncoding::Gzip);
            let mut r = tonic::Request::new(amplification());
            r.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            match c.export(r).await {
                Ok(_) => (200, String::new()),
                Err(s) => (
                    match s.code() {
                        tonic::Code::ResourceExhausted => 413,
                        tonic::Code::Unavailable => 503,
                        _ => 500,
                    },
                    s.message().to_owned(),
                ),
            }
        }));
    }
    for t in tasks {
        let (status, msg) = t.await.unwrap();
        // Answered: refused as too large for what its rows would copy, or "retry" while full.
        assert!(matches!(status, 413 | 503), "{status} {msg}");
        if status == 413 {
            assert!(msg.contains("max_inflight_bytes_per_token"), "{msg}");
        }
    }
    let peak = served.peak_rss();
    // What the server may hold for these requests: its in-flight budget, parking, and the
    // decoder's transient buffers; before the fix one request took gigabytes.
    let bound = base_rss.max(40 << 20) + (48 << 20) + (8 << 20) + (64 << 20);
    assert!(
        peak < bound,
        "peak RSS {} MB over the bound {} MB",
        peak >> 20,
        bound >> 20
    );
    // Still serving.
    let ok = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert!(ok.is_success());
    sigterm(&served.child);
    let mut served = served;
    assert!(served.child.wait().unwrap().success());
}

/// A slow upload holds only what it has sent, and never more than its sender's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_holds_no_more_than_its_share() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.otlp.max_inflight_bytes = 4 << 20;
    cfg.otlp.max_inflight_bytes_per_token = 1 << 20;
    let app = spawn_app_with(cfg).await;
    let other = app.token(Role::Ingest).await;
    // Sender A starts an upload of 900 KB, sends 800 KB of it, and stalls.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let stream = tokio_stream_from(rx);
    let slow = {
        let (client, url, token) = (
            app.http.clone(),
            format!("{}/v1/traces", app.otlp),
            app.ingest.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .header("content-type", "application/x-protobuf")
                .header("content-length", "900000")
                .bearer_auth(token)
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
        })
    };
    tx.send(Ok(vec![0u8; 800_000])).await.unwrap();
    // Held once the server has read it.
    let started = std::time::Instant::now();
    while app.ingestor.inflight_bytes() < 800_000 {
        assert!(started.elapsed() < Duration::from_secs(20), "never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // 200 KB: within any sender's share alone, not beside 800 KB already held.
    let send = |token: String| {
        // A client of its own each time: a connection the server closed is not reused.
        let (client, url) = (reqwest::Client::new(), format!("{}/v1/traces", app.otlp));
        let mut span = deploy_span(trace(), "CHG-SHARE");
        span.attributes.push(kv("padding", &"p".repeat(200_000)));
        async move {
            client
                .post(url)
                .header("content-type", "application/x-protobuf")
                .bearer_auth(token)
                .body(request("svc", vec![span]).encode_to_vec())
                .send()
                .await
        }
    };
    // A second export of A's would take A past its share: "retry shortly". The answer comes
    // before the body is read, so HTTP/1 may close the connection while the client still sends:
    // then the client sees the close, and the refusal is read from the metrics.
    let refused = || {
        app.ingestor.metrics.get(
            "changetrail_otlp_admission_refused_total",
            &[("reason", "token_share")],
        )
    };
    match send(app.ingest.clone()).await {
        Ok(r) => {
            assert_eq!(r.status(), 503);
            assert_eq!(r.headers()["retry-after"], "1");
            assert!(r.text().await.unwrap().contains("its share"));
        }
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    assert_eq!(refused(), 1);
    // Another sender is served.
    let r = send(other).await.unwrap();
    assert_eq!(r.status(), 200);
    drop(tx);
    // The stalled upload ends short of its declared length: an error, and its bytes given back.
    let _ = slow.await.unwrap();
    let started = std::time::Instant::now();
    while app.ingestor.inflight_bytes() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never given back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await;
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Random mutations of valid requests, protobuf and JSON, on both transports: never a panic,
/// never a 5xx for client garbage, the server alive afterwards.
#[test]
fn mutated_requests_never_crash_the_receiver() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDb::sqlite());
    let app = rt.block_on(spawn_app_with(config(&db)));
    let valid_pb = over_limits(trace()).encode_to_vec();
    let valid_json = serde_json::to_vec(&over_limits(trace())).unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 160,
        failure_persistence: None,
        ..Config::default()
    });
    let mutation = (
        0usize..3,
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..12),
    );
    let result = runner.run(&mutation, |(target, muts)| {
        let json = target == 1;
        let mut body = if json {
            valid_json.clone()
        } else {
            valid_pb.clone()
        };
        for (at, byte, op) in muts {
            if body.is_empty() {
                body.push(byte);
                continue;
            }
            let i = at % body.len();
            match op {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                2 => {
                    body.remove(i);
                }
                _ => body.truncate(i),
            }
        }
        let status = rt.block_on(async {
            if target == 2 {
                grpc_raw(&app, &body).await
            } else {
                app.http
                    .post(format!("{}/v1/traces", app.otlp))
                    .header(
                        "content-type",
                        if json {
                            "application/json"
                        } else {
                            "application/x-protobuf"
                        },
                    )
                    .bearer_auth(&app.ingest)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        });
        prop_assert!(status < 500, "status {status}");
        Ok(())
    });
    result.unwrap();
    // Still alive and ingesting.
    rt.block_on(async {
        let r = app
            .http
            .post(format!("{}/v1/traces", app.otlp))
            .header("content-type", "application/x-protobuf")
            .bearer_auth(&app.ingest)
            .body(request("svc", vec![deploy_span(trace(), "CHG-ALIVE")]).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        app.stop().await;
    });
}

/// The HTTP-style status a raw gRPC call's grpc-status maps to (5xx for server faults).
async fn grpc_raw(app: &TestApp, msg: &[u8]) -> u16 {
    let path = changetrail::ingest::grpc::TRACE_EXPORT;
    match raw_grpc(app, path, msg).await.as_str() {
        // INTERNAL, UNKNOWN, DATA_LOSS, or no status at all: the server's fault.
        "13" | "2" | "15" | "" => 500,
        _ => 200,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_and_huge_ids_are_answered_not_stored_raw_sqlite() {
    nul_bytes_and_huge_ids_are_answered_not_stored_raw(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_and_huge_ids_are_answered_not_stored_raw_postgres() {
    if let Some(db) =
        TestDb::postgres("nul_bytes_and_huge_ids_are_answered_not_stored_raw_postgres").await
    {
        nul_bytes_and_huge_ids_are_answered_not_stored_raw(db).await;
    }
}

/// A NUL in a span's name or change id (PostgreSQL text cannot hold it) is replaced, not a
/// storage failure for everyone in the batch; a change id over 256 bytes is refused.
async fn nul_bytes_and_huge_ids_are_answered_not_stored_raw(db: TestDb) {
    let app = spawn_app_with(config(&db)).await;
    let t = trace();
    let mut span = deploy_span(t, "CHG-\0-NUL");
    span.name = "de\0ploy".into();
    let mut huge = deploy_span(trace(), &"C".repeat(300));
    huge.name = "huge".into();
    let r = app
        .http
        .post(format!("{}/v1/traces", app.otlp))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(&app.ingest)
        .body(request("svc\0", vec![span, huge]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", db.backend);
    let p = ExportTraceServiceResponse::decode(r.bytes().await.unwrap())
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(p.rejected_spans, 1);
    assert!(
        p.error_message.contains("longer than 256 bytes"),
        "{}",
        p.error_message
    );
    assert!(
        p.error_message.contains("nul replaced"),
        "{}",
        p.error_message
    );
    let stored = app.store.spans_of_trace(&t).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name, "de\u{FFFD}ploy");
    assert_eq!(stored[0].subject, "CHG-\u{FFFD}-NUL");
    app.stop().await;
}

/// Parked spans that a binding releases become rows, each copying its resource: they are held in
/// the binding export's share, and those that do not fit are dropped and counted, not allocated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_released_by_a_binding_are_held_in_its_share() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.otlp.max_inflight_bytes = 8 << 20;
    cfg.otlp.max_inflight_bytes_per_token = 2 << 20;
    let app = spawn_app_with(cfg).await;
    let t = trace();
    let send = |req: ExportTraceServiceRequest| {
        let (client, url, token) = (
            app.http.clone(),
            format!("{}/v1/traces", app.otlp),
            app.ingest.clone(),
        );
        async move {
            client
                .post(url)
                .header("content-type", "application/x-protobuf")
                .bearer_auth(token)
                .body(req.encode_to_vec())
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // Twenty runtime spans of the trace, each with a 400 KB resource of its own: parked.
    for i in 0..20 {
        let mut r = request("svc", vec![span(t, &format!("runtime {i}"), vec![])]);
        if let Some(res) = r.resource_spans[0].resource.as_mut() {
            res.attributes
                .extend((0..40).map(|j| kv(&format!("big.{j}"), &"r".repeat(10_000))));
        }
        assert_eq!(send(r).await, 200);
    }
    assert_eq!(app.ingestor.binder_stats().parked_spans, 20);
    // The binding span: its export may hold 2 MiB, so only some of the 8 MB of rows are kept.
    assert_eq!(
        send(request("svc", vec![deploy_span(t, "CHG-RELEASE")])).await,
        200
    );
    let stored = app.store.spans_of_trace(&t).await.unwrap().len();
    let dropped = app
        .ingestor
        .metrics
        .get("changetrail_spans_release_dropped_total", &[]);
    assert!((2..21).contains(&stored), "{stored} stored");
    assert_eq!(
        stored as u64 - 1 + dropped,
        20,
        "each released span kept or counted"
    );
    assert_eq!(app.ingestor.inflight_bytes(), 0);
    app.stop().await;
}
