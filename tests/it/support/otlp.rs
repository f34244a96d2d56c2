//! OTLP spans and export requests for the tests that send them by hand, and a raw gRPC call for
//! bytes no client library would send.

use crate::support::server::TestApp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A fresh trace id (unique across the test run).
pub fn trace() -> [u8; 16] {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(&n.to_be_bytes());
    t[8..].copy_from_slice(&changetrail::sys::random_bytes::<8>());
    t
}

/// A string attribute.
pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A span of `trace` that just ended, with a fresh span id.
pub fn span(trace: [u8; 16], name: &str, attrs: Vec<KeyValue>) -> Span {
    let now = changetrail::sys::now_ns() as u64;
    Span {
        trace_id: trace.to_vec(),
        span_id: NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes().to_vec(),
        name: name.into(),
        kind: 1,
        start_time_unix_nano: now - 1_000_000,
        end_time_unix_nano: now,
        attributes: attrs,
        ..Default::default()
    }
}

/// A deploy step span carrying the contract (so it is kept).
pub fn deploy_span(trace: [u8; 16], change: &str) -> Span {
    span(
        trace,
        "deploy",
        vec![
            kv("cicd.pipeline.run.id", &format!("wf-{change}")),
            kv("changetrail.change.id", change),
        ],
    )
}

/// One export request of `spans` from `service`.
pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends raw protobuf bytes as a gRPC request with the ingest token; returns grpc-status.
pub async fn raw_grpc(app: &TestApp, path: &str, msg: &[u8]) -> String {
    use http_body_util::BodyExt;
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(msg);
    let stream = tokio::net::TcpStream::connect(app.grpc.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("{}{path}", app.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {}", app.ingest))
        .body(http_body_util::Full::new(prost::bytes::Bytes::from(frame)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    if let Some(s) = resp.headers().get("grpc-status") {
        return s.to_str().unwrap().to_owned();
    }
    let collected = resp.into_body().collect().await.unwrap();
    collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .map(|s| s.to_str().unwrap().to_owned())
        .unwrap_or_default()
}
