//! OTLP/HTTP on :4318: `POST /v1/traces` and `/v1/logs`, protobuf or OTLP/JSON by Content-Type,
//! gzip / deflate / zstd, the size limit enforced before and after decompression, every error a
//! `google.rpc.Status` in the request's own encoding.

use super::decode::{Compression, Format};
use super::{Export, IngestError, Ingestor, Outcome, Signal};
use crate::auth::AuthError;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::Arc;
use std::time::Duration;

pub fn router(ingestor: Arc<Ingestor>) -> Router {
    Router::new()
        .route("/v1/traces", any(export::<ExportTraceServiceRequest>))
        .route("/v1/logs", any(export::<ExportLogsServiceRequest>))
        .route("/v1/metrics", any(metrics))
        .fallback(not_found)
        // Our own limit applies (before and after decompression) and answers 413 with a Status.
        .layer(DefaultBodyLimit::disable())
        .with_state(ingestor)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// The media type, case-insensitively and ignoring parameters; a charset other than UTF-8 is refused.
pub fn parse_content_type(value: Option<&HeaderValue>) -> Option<Encoding> {
    let v = value?.to_str().ok()?.to_ascii_lowercase();
    let mut parts = v.split(';').map(str::trim);
    let media = parts.next()?;
    for p in parts {
        if let Some(cs) = p.strip_prefix("charset=")
            && cs.trim_matches('"') != "utf-8"
        {
            return None;
        }
    }
    match media {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        "application/json" => Some(Encoding::Json),
        _ => None,
    }
}

/// gRPC status codes used in `google.rpc.Status` bodies.
mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// An error response with a `google.rpc.Status` body in `enc`.
fn status(
    http: StatusCode,
    enc: Encoding,
    code: i32,
    message: &str,
    retry_after: Option<Duration>,
) -> Response {
    let body = match enc {
        Encoding::Protobuf => {
            let details = retry_after
                .map(|d| prost_types::Any {
                    type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                    value: tonic_types::pb::RetryInfo {
                        retry_delay: Some(prost_types::Duration {
                            seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                            nanos: 0,
                        }),
                    }
                    .encode_to_vec(),
                })
                .into_iter()
                .collect();
            tonic_types::pb::Status {
                code,
                message: message.to_owned(),
                details,
            }
            .encode_to_vec()
        }
        Encoding::Json => {
            let mut v = serde_json::json!({ "code": code, "message": message });
            if let Some(d) = retry_after {
                v["details"] = serde_json::json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{}s", d.as_secs()),
                }]);
            }
            v.to_string().into_bytes()
        }
    };
    let mut resp = (http, [(header::CONTENT_TYPE, enc.content_type())], body).into_response();
    if let Some(d) = retry_after {
        // Whole seconds, at least one: what every OTLP/HTTP client parses.
        let secs = d.as_secs().max(1).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

fn auth_response(e: AuthError, enc: Encoding) -> Response {
    match e {
        AuthError::Missing => {
            let mut r = status(
                StatusCode::UNAUTHORIZED,
                enc,
                code::UNAUTHENTICATED,
                "missing bearer token",
                None,
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        AuthError::Invalid => {
            let mut r = status(
                StatusCode::UNAUTHORIZED,
                enc,
                code::UNAUTHENTICATED,
                "invalid or revoked token",
                None,
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        AuthError::Forbidden { .. } => status(
            StatusCode::FORBIDDEN,
            enc,
            code::PERMISSION_DENIED,
            &e.to_string(),
            None,
        ),
        AuthError::Storage(s) if s.is_transient() => status(
            StatusCode::SERVICE_UNAVAILABLE,
            enc,
            code::UNAVAILABLE,
            "token store unavailable; retry",
            Some(Duration::from_secs(1)),
        ),
        AuthError::Storage(_) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            enc,
            code::INTERNAL,
            "internal error",
            None,
        ),
    }
}

fn ingest_response(e: IngestError, enc: Encoding) -> Response {
    match e {
        IngestError::Unavailable {
            message,
            retry_after,
        } => status(
            StatusCode::SERVICE_UNAVAILABLE,
            enc,
            code::UNAVAILABLE,
            &message,
            Some(retry_after),
        ),
        IngestError::InvalidArgument(m) => status(
            StatusCode::BAD_REQUEST,
            enc,
            code::INVALID_ARGUMENT,
            &m,
            None,
        ),
        IngestError::TooLarge(m) => status(
            StatusCode::PAYLOAD_TOO_LARGE,
            enc,
            code::RESOURCE_EXHAUSTED,
            &m,
            None,
        ),
        IngestError::Internal(_) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            enc,
            code::INTERNAL,
            "internal error; the request was not stored",
            None,
        ),
    }
}

/// The body's Content-Encoding.
fn compression(headers: &HeaderMap) -> Result<Compression, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().map(|s| s.trim().to_ascii_lowercase()))
        .transpose()
        .map_err(|_| IngestError::InvalidArgument("Content-Encoding is not readable text".into()))?
        .unwrap_or_default();
    Ok(match encoding.as_str() {
        "" | "identity" => Compression::None,
        "gzip" | "x-gzip" => Compression::Gzip,
        // HTTP "deflate" is zlib-wrapped (RFC 9110); the collector does the same.
        "deflate" => Compression::Deflate,
        "zstd" => Compression::Zstd,
        other => {
            return Err(IngestError::InvalidArgument(format!(
                "unsupported Content-Encoding {other:?}: use gzip, deflate, zstd or none"
            )));
        }
    })
}

/// Checks the method, the media type and the token before a byte of the body is read.
async fn prepare(
    ing: &Ingestor,
    signal: Signal,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Encoding, crate::auth::Principal), Response> {
    let enc = parse_content_type(headers.get(header::CONTENT_TYPE));
    let reply_enc = enc.unwrap_or(Encoding::Json);
    if method != Method::POST {
        ing.count_request("http", signal, "rejected");
        let mut r = status(
            StatusCode::METHOD_NOT_ALLOWED,
            reply_enc,
            code::UNIMPLEMENTED,
            "method not allowed: use POST",
            None,
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Err(r);
    }
    let Some(enc) = enc else {
        ing.count_request("http", signal, "rejected");
        return Err(status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Encoding::Json,
            code::INVALID_ARGUMENT,
            "Content-Type must be application/x-protobuf or application/json (UTF-8)",
            None,
        ));
    };
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match ing.authenticate(auth).await {
        Ok(p) => Ok((enc, p)),
        Err(e) => {
            ing.count_request("http", signal, "unauthorized");
            Err(auth_response(e, enc))
        }
    }
}

fn success(enc: Encoding, pb: Vec<u8>, rejected_key: &str, o: &Outcome) -> Response {
    let body = match enc {
        Encoding::Protobuf => pb,
        // Written by hand: OTLP/JSON spells int64 as a string, and full success as {}.
        Encoding::Json if o.rejected == 0 && o.message.is_empty() => b"{}".to_vec(),
        Encoding::Json => serde_json::json!({
            "partialSuccess": { rejected_key: o.rejected.to_string(), "errorMessage": o.message }
        })
        .to_string()
        .into_bytes(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, enc.content_type())],
        body,
    )
        .into_response()
}

async fn export<T: Export>(
    State(ing): State<Arc<Ingestor>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (enc, principal) = match prepare(&ing, T::SIGNAL, &method, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let result = receive_and_ingest::<T>(&ing, &headers, body, enc, &principal).await;
    ing.count_request("http", T::SIGNAL, super::outcome_label(&result));
    match result {
        Ok(o) => success(enc, T::response(&o).encode_to_vec(), T::REJECTED_JSON, &o),
        Err(e) => ingest_response(e, enc),
    }
}

async fn receive_and_ingest<T: Export>(
    ing: &Ingestor,
    headers: &HeaderMap,
    body: Body,
    enc: Encoding,
    principal: &crate::auth::Principal,
) -> Result<Outcome, IngestError> {
    let compression = compression(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut reservation = ing.reservation(principal);
    let raw = ing
        .receive(
            body,
            declared,
            &mut reservation,
            ing.config.max_request_bytes,
        )
        .await?;
    let format = match enc {
        Encoding::Protobuf => Format::Protobuf,
        Encoding::Json => Format::Json,
    };
    let decoded = ing
        .decode::<T>(raw, compression, format, reservation)
        .await?;
    ing.ingest(decoded, super::sender(principal)).await
}

async fn metrics(headers: HeaderMap) -> Response {
    let enc = parse_content_type(headers.get(header::CONTENT_TYPE)).unwrap_or(Encoding::Json);
    status(
        StatusCode::NOT_FOUND,
        enc,
        code::UNIMPLEMENTED,
        "metrics are not received: changetrail takes traces (/v1/traces) and logs (/v1/logs)",
        None,
    )
}

async fn not_found(headers: HeaderMap) -> Response {
    let enc = parse_content_type(headers.get(header::CONTENT_TYPE)).unwrap_or(Encoding::Json);
    status(
        StatusCode::NOT_FOUND,
        enc,
        code::NOT_FOUND,
        "not found: OTLP/HTTP paths are /v1/traces and /v1/logs",
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            parse_content_type(Some(&h("application/json"))),
            Some(Encoding::Json)
        );
        assert_eq!(
            parse_content_type(Some(&h("APPLICATION/JSON; charset=utf-8"))),
            Some(Encoding::Json)
        );
        assert_eq!(
            parse_content_type(Some(&h("application/x-protobuf"))),
            Some(Encoding::Protobuf)
        );
        assert_eq!(
            parse_content_type(Some(&h("application/json; charset=latin-1"))),
            None
        );
        assert_eq!(parse_content_type(Some(&h("text/plain"))), None);
        assert_eq!(parse_content_type(None), None);
    }
}
