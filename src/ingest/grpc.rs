//! OTLP/gRPC on :4317: `TraceService/Export` and `LogsService/Export`, served through axum so
//! authentication runs on the metadata before a byte of the body is decompressed or decoded.
//!
//! The unary call is framed, decompressed and decoded here rather than by tonic's server, so the
//! body is held in the sender's share of the in-flight bytes as it arrives and the CPU work runs
//! in the blocking pool. A message over the size limit is RESOURCE_EXHAUSTED (not OUT_OF_RANGE,
//! which clients retry forever), decode failures are INVALID_ARGUMENT, and UNAVAILABLE carries
//! RetryInfo both as a status detail and in the `google.rpc.retryinfo-bin` trailer the Python
//! exporter reads.

use super::decode::{Compression, Format};
use super::{Export, IngestError, Ingestor, Outcome};
use crate::auth::AuthError;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper::body::Frame;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

pub fn router(ingestor: Arc<Ingestor>) -> Router {
    Router::new()
        .route(TRACE_EXPORT, post(export::<ExportTraceServiceRequest>))
        .route(LOGS_EXPORT, post(export::<ExportLogsServiceRequest>))
        .fallback(unimplemented)
        .with_state(ingestor)
}

/// A status as the full gRPC HTTP response (trailers-only).
fn status_response(status: Status) -> Response {
    status.into_http::<Body>().map(Body::new)
}

/// UNAVAILABLE with RetryInfo in the details and in the trailer Python's exporter reads.
pub fn unavailable(message: &str, retry_after: Duration) -> Status {
    let mut status = Status::with_error_details(
        Code::Unavailable,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    );
    let info = tonic_types::pb::RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: i64::try_from(retry_after.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(retry_after.subsec_nanos()).unwrap_or(0),
        }),
    };
    status.metadata_mut().insert_bin(
        "google.rpc.retryinfo-bin",
        tonic::metadata::MetadataValue::from_bytes(&info.encode_to_vec()),
    );
    status
}

fn ingest_status(e: IngestError) -> Status {
    match e {
        IngestError::Unavailable {
            message,
            retry_after,
        } => unavailable(&message, retry_after),
        IngestError::InvalidArgument(m) => Status::invalid_argument(m),
        IngestError::TooLarge(m) => Status::resource_exhausted(m),
        IngestError::Internal(_) => Status::internal("internal error; the request was not stored"),
    }
}

fn auth_status(e: AuthError) -> Status {
    match e {
        AuthError::Missing => {
            Status::unauthenticated("missing bearer token (authorization metadata)")
        }
        AuthError::Invalid => Status::unauthenticated("invalid or revoked token"),
        AuthError::Forbidden { .. } => Status::permission_denied(e.to_string()),
        AuthError::Storage(s) if s.is_transient() => {
            unavailable("token store unavailable; retry", Duration::from_secs(1))
        }
        AuthError::Storage(_) => Status::internal("internal error"),
    }
}

/// Encodings a client may compress with (`grpc-accept-encoding`).
const ACCEPTED: &str = "gzip,zstd,deflate";

/// A unary call's answer: one message, then `grpc-status: 0` in the trailers.
fn ok_response<M: Message>(m: &M) -> Response {
    let len = m.encoded_len();
    let mut buf = Vec::with_capacity(5 + len);
    buf.push(0);
    buf.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    m.encode_raw(&mut buf);
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, std::convert::Infallible>(Frame::data(axum::body::Bytes::from(buf))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut r = Response::new(Body::new(http_body_util::StreamBody::new(
        futures::stream::iter(frames),
    )));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert("grpc-accept-encoding", HeaderValue::from_static(ACCEPTED));
    r
}

/// The message's compression, from `grpc-encoding` (a message may still arrive uncompressed:
/// its frame says which).
fn compression(headers: &HeaderMap) -> Result<Compression, Status> {
    match headers.get("grpc-encoding").map(|v| v.to_str()) {
        None => Ok(Compression::None),
        Some(Ok("identity")) => Ok(Compression::None),
        Some(Ok("gzip")) => Ok(Compression::Gzip),
        Some(Ok("zstd")) => Ok(Compression::Zstd),
        Some(Ok("deflate")) => Ok(Compression::Deflate),
        Some(other) => Err(Status::unimplemented(format!(
            "grpc-encoding {:?} is not supported; use one of {ACCEPTED} or identity",
            other.unwrap_or("(not text)")
        ))),
    }
}

/// Authenticates, then receives, decompresses and decodes the one message of a unary call within
/// the size limit and the sender's share of the in-flight bytes (decoding in the blocking pool).
async fn export<T: Export>(State(ing): State<Arc<Ingestor>>, req: Request) -> Response {
    let signal = T::SIGNAL;
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let principal = match ing.authenticate(header).await {
        Ok(p) => p,
        Err(e) => {
            ing.count_request("grpc", signal, "unauthorized");
            return status_response(auth_status(e));
        }
    };
    let grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if !grpc {
        ing.count_request("grpc", signal, "rejected");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/grpc",
        )
            .into_response();
    }
    let compression = match compression(req.headers()) {
        Ok(c) => c,
        Err(s) => {
            ing.count_request("grpc", signal, "rejected");
            let mut r = status_response(s);
            r.headers_mut()
                .insert("grpc-accept-encoding", HeaderValue::from_static(ACCEPTED));
            return r;
        }
    };
    let result = receive_and_ingest::<T>(&ing, req.into_body(), compression, &principal).await;
    ing.count_request("grpc", signal, super::outcome_label(&result));
    match result {
        Ok(o) => ok_response(&T::response(&o)),
        Err(e) => status_response(ingest_status(e)),
    }
}

async fn receive_and_ingest<T: Export>(
    ing: &Ingestor,
    body: Body,
    compression: Compression,
    principal: &crate::auth::Principal,
) -> Result<Outcome, IngestError> {
    let limit = ing.config.max_request_bytes;
    let mut reservation = ing.reservation(principal);
    // The 5-byte frame header (compressed flag, length) precedes the message.
    let mut raw = ing
        .receive(body, None, &mut reservation, limit.saturating_add(5))
        .await?;
    if raw.len() < 5 {
        return Err(IngestError::InvalidArgument(
            "the request holds no gRPC message".into(),
        ));
    }
    let len = u32::from_be_bytes([raw[1], raw[2], raw[3], raw[4]]) as usize;
    if len > limit {
        return Err(IngestError::TooLarge(format!(
            "request exceeds the {limit}-byte limit"
        )));
    }
    if raw.len() != 5 + len {
        return Err(IngestError::InvalidArgument(
            "a unary call carries exactly one whole message".into(),
        ));
    }
    let compression = match raw[0] {
        0 => Compression::None,
        1 if compression != Compression::None => compression,
        1 => {
            return Err(IngestError::InvalidArgument(
                "the message is marked compressed but no grpc-encoding names how".into(),
            ));
        }
        f => {
            return Err(IngestError::InvalidArgument(format!(
                "unknown gRPC frame flag {f}"
            )));
        }
    };
    raw.drain(..5);
    let decoded = ing
        .decode::<T>(raw, compression, Format::Protobuf, reservation)
        .await?;
    ing.ingest(decoded, super::sender(principal)).await
}

/// Metrics and anything else: a clear UNIMPLEMENTED.
async fn unimplemented(req: Request) -> Response {
    let what = req.uri().path().to_owned();
    status_response(Status::unimplemented(format!(
        "{what} is not served: changetrail receives traces and logs (metrics are not audit evidence)"
    )))
}
