//! OTLP/gRPC on :4317: `TraceService/Export` and `LogsService/Export`, served through axum so
//! authentication runs on the metadata before a byte of the body is decompressed or decoded.
//!
//! tonic's own answers are adjusted where they would break OTLP semantics: a message over the
//! size limit is RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE, which clients retry forever),
//! decode failures are INVALID_ARGUMENT, and UNAVAILABLE carries RetryInfo both as a status
//! detail and in the `google.rpc.retryinfo-bin` trailer the Python exporter reads.

use super::{Export, IngestError, Ingestor, Outcome};
use crate::auth::AuthError;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub const TRACE_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
pub const LOGS_EXPORT: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
/// Responses are tiny; this only guards against a bug.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

pub fn router(ingestor: Arc<Ingestor>) -> Router {
    Router::new()
        .route(TRACE_EXPORT, post(export::<ExportTraceServiceRequest>))
        .route(LOGS_EXPORT, post(export::<ExportLogsServiceRequest>))
        .fallback(unimplemented)
        .with_state(ingestor)
}

/// A decoded message and the number of (decompressed) bytes it came from, so a request whose
/// bytes decode to nothing known (legacy or misspelled fields) is not mistaken for an empty one.
pub struct Measured<T> {
    pub message: T,
    pub bytes: usize,
}

struct MeasuredCodec<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for MeasuredCodec<E, D> {
    fn default() -> Self {
        MeasuredCodec(PhantomData)
    }
}

struct MeasuredEncoder<E>(PhantomData<E>);
struct MeasuredDecoder<D>(PhantomData<D>);

impl<E: Message + Send + 'static, D: Message + Default + Send + 'static> Codec
    for MeasuredCodec<E, D>
{
    type Encode = E;
    type Decode = Measured<D>;
    type Encoder = MeasuredEncoder<E>;
    type Decoder = MeasuredDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        MeasuredEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        MeasuredDecoder(PhantomData)
    }
}

impl<E: Message> Encoder for MeasuredEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

impl<D: Message + Default> Decoder for MeasuredDecoder<D> {
    type Item = Measured<D>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Measured<D>>, Status> {
        use bytes_remaining::Remaining;
        let bytes = src.remaining_bytes();
        let message = D::decode(src).map_err(|e| {
            Status::invalid_argument(format!(
                "the request is not a valid OTLP protobuf message: {e}"
            ))
        })?;
        Ok(Some(Measured { message, bytes }))
    }
}

mod bytes_remaining {
    /// `DecodeBuf::remaining` without naming the `bytes` crate's trait at every call.
    pub trait Remaining {
        fn remaining_bytes(&self) -> usize;
    }

    impl Remaining for tonic::codec::DecodeBuf<'_> {
        fn remaining_bytes(&self) -> usize {
            prost::bytes::Buf::remaining(self)
        }
    }
}

fn compression() -> EnabledCompressionEncodings {
    let mut e = EnabledCompressionEncodings::default();
    e.enable(CompressionEncoding::Gzip);
    e.enable(CompressionEncoding::Zstd);
    e
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

fn outcome_label(r: &Result<Outcome, Status>) -> &'static str {
    match r {
        Ok(o) if o.rejected > 0 => "partial",
        Ok(_) => "ok",
        Err(s) if s.code() == Code::Unavailable => "retryable",
        Err(s) if s.code() == Code::Internal => "error",
        Err(_) => "rejected",
    }
}

/// Authenticates, admits, then lets tonic decompress (gzip, zstd) and decode within the size limit.
async fn export<T: Export>(State(ing): State<Arc<Ingestor>>, mut req: Request) -> Response {
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
    // The handler records who sent each fact; tonic hands the extensions on.
    req.extensions_mut().insert(principal);
    // Admission before decompression and decoding: overload is answered, not buffered.
    let _permit = match ing.admit() {
        Ok(p) => p,
        Err(e) => {
            ing.count_request("grpc", signal, "retryable");
            return status_response(ingest_status(e));
        }
    };
    let limit = ing.config.max_request_bytes;
    let mut grpc = tonic::server::Grpc::new(MeasuredCodec::<T::Response, T>::default())
        .apply_compression_config(compression(), EnabledCompressionEncodings::default())
        .apply_max_message_size_config(Some(limit), Some(MAX_RESPONSE_BYTES));
    let mut resp = grpc
        .unary(Unary::<T>(ing.clone(), PhantomData), req)
        .await
        .map(Body::new);
    // tonic answers a declared length over the limit with OUT_OF_RANGE, which OTLP clients retry
    // forever; our handlers never use that code, so any OUT_OF_RANGE here is the size limit.
    let h = resp.headers_mut();
    if h.get("grpc-status").is_some_and(|v| v == "11") {
        h.insert("grpc-status", HeaderValue::from_static("8"));
        h.insert(
            "grpc-message",
            HeaderValue::from_str(&format!("request exceeds the {limit}-byte limit"))
                .unwrap_or(HeaderValue::from_static("too large")),
        );
        ing.count_request("grpc", signal, "too_large");
    }
    resp
}

struct Unary<T>(Arc<Ingestor>, PhantomData<T>);

impl<T: Export> tonic::server::UnaryService<Measured<T>> for Unary<T> {
    type Response = T::Response;
    type Future = futures::future::BoxFuture<'static, Result<tonic::Response<T::Response>, Status>>;

    fn call(&mut self, request: tonic::Request<Measured<T>>) -> Self::Future {
        let ing = self.0.clone();
        let sender = request
            .extensions()
            .get::<crate::auth::Principal>()
            .map(super::sender);
        let m = request.into_inner();
        Box::pin(async move {
            let result = match (m.message.unread_protobuf(m.bytes), sender) {
                (Some(why), _) => Err(Status::invalid_argument(why)),
                (None, Some(sender)) => m.message.ingest(&ing, sender).await.map_err(ingest_status),
                // Authentication put the principal there; without it nothing is accepted.
                (None, None) => Err(Status::unauthenticated("no authenticated sender")),
            };
            ing.count_request("grpc", T::SIGNAL, outcome_label(&result));
            result.map(|o| tonic::Response::new(T::response(&o)))
        })
    }
}

/// Metrics and anything else: a clear UNIMPLEMENTED.
async fn unimplemented(req: Request) -> Response {
    let what = req.uri().path().to_owned();
    status_response(Status::unimplemented(format!(
        "{what} is not served: changetrail receives traces and logs (metrics are not audit evidence)"
    )))
}
