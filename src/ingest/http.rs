//! OTLP/HTTP on :4318: `POST /v1/traces` and `/v1/logs`, protobuf or OTLP/JSON by Content-Type,
//! gzip / deflate / zstd, the size limit enforced before and after decompression, every error a
//! `google.rpc.Status` in the request's own encoding.

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
use std::io::Read;
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

/// Reads the body and undoes its Content-Encoding, never holding more than `limit` bytes of
/// either the compressed or the decompressed form (a decompression bomb stops at the limit).
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, IngestError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().map(|s| s.trim().to_ascii_lowercase()))
        .transpose()
        .map_err(|_| IngestError::InvalidArgument("Content-Encoding is not readable text".into()))?
        .unwrap_or_default();
    let too_large =
        || IngestError::TooLarge(format!("the request body exceeds the {limit}-byte limit"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    use http_body_util::BodyExt as _;
    let raw = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(IngestError::InvalidArgument(format!(
                "the request body could not be read: {e}"
            )));
        }
    };
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "" | "identity" => return Ok(raw.to_vec()),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(&raw[..])),
        // HTTP "deflate" is zlib-wrapped (RFC 9110); the collector does the same.
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(&raw[..])),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(&raw[..])
                .map_err(|e| IngestError::InvalidArgument(format!("zstd: {e}")))?,
        ),
        other => {
            return Err(IngestError::InvalidArgument(format!(
                "unsupported Content-Encoding {other:?}: use gzip, deflate, zstd or none"
            )));
        }
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    let n = reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            IngestError::InvalidArgument(format!("the {encoding} body is corrupt: {e}"))
        })?;
    if n > limit {
        return Err(IngestError::TooLarge(format!(
            "the request exceeds the {limit}-byte limit after {encoding} decompression"
        )));
    }
    Ok(out)
}

/// OTLP/JSON keys are lowerCamelCase; a body that decoded to nothing but spells keys another way
/// (snake_case, the legacy instrumentationLibrary*) was almost certainly meant to carry data.
fn misspelled_key(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('_') || k.starts_with("instrumentationLibrary") {
                Some(k.clone())
            } else {
                misspelled_key(v)
            }
        }),
        serde_json::Value::Array(items) => items.iter().find_map(misspelled_key),
        _ => None,
    }
}

fn misspelled_json(body: &[u8], what: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    misspelled_key(&v).map(|k| {
        format!("the request holds no {what}, but has the key {k:?}: OTLP/JSON keys are lowerCamelCase (e.g. resourceSpans, scopeSpans, traceId)")
    })
}

/// Everything both endpoints share up to the decoded request.
/// A decoded request with its encoding, raw bytes, admission slot and sender.
type Prepared<T> = (
    T,
    Encoding,
    Vec<u8>,
    tokio::sync::OwnedSemaphorePermit,
    crate::core::evidence::SentBy,
);

async fn prepare<T: Export>(
    ing: &Ingestor,
    signal: Signal,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<Prepared<T>, Response> {
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
    // Authenticate before anything is read, decompressed or decoded.
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match ing.authenticate(auth).await {
        Ok(p) => p,
        Err(e) => {
            ing.count_request("http", signal, "unauthorized");
            return Err(auth_response(e, enc));
        }
    };
    // Admission before the body is read: overload is answered, not buffered.
    let permit = match ing.admit() {
        Ok(p) => p,
        Err(e) => {
            ing.count_request("http", signal, "retryable");
            return Err(ingest_response(e, enc));
        }
    };
    let bytes = match read_body(headers, body, ing.config.max_request_bytes).await {
        Ok(b) => b,
        Err(e) => {
            ing.count_request(
                "http",
                signal,
                if matches!(e, IngestError::TooLarge(_)) {
                    "too_large"
                } else {
                    "rejected"
                },
            );
            return Err(ingest_response(e, enc));
        }
    };
    let sender = super::sender(&principal);
    if bytes.is_empty() {
        return Ok((T::default(), enc, bytes, permit, sender));
    }
    let decoded = match enc {
        Encoding::Protobuf => T::decode(bytes.as_slice()).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string()),
    };
    match decoded {
        Ok(t) => Ok((t, enc, bytes, permit, sender)),
        Err(e) => {
            ing.count_request("http", signal, "rejected");
            Err(status(
                StatusCode::BAD_REQUEST,
                enc,
                code::INVALID_ARGUMENT,
                &format!(
                    "the request is not a valid OTLP {} message: {e}",
                    if enc == Encoding::Json {
                        "JSON"
                    } else {
                        "protobuf"
                    }
                ),
                None,
            ))
        }
    }
}

fn success(enc: Encoding, pb: Vec<u8>, rejected_key: &str, o: &Outcome) -> Response {
    let body = match enc {
        Encoding::Protobuf => pb,
        // Written by hand: OTLP/JSON spells int64 as a string, and full success as {}.
        Encoding::Json if o.rejected == 0 => b"{}".to_vec(),
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

fn outcome_label(r: &Result<Outcome, IngestError>) -> &'static str {
    match r {
        Ok(o) if o.rejected > 0 => "partial",
        Ok(_) => "ok",
        Err(IngestError::Unavailable { .. }) => "retryable",
        Err(IngestError::Internal(_)) => "error",
        Err(IngestError::TooLarge(_)) => "too_large",
        Err(IngestError::InvalidArgument(_)) => "rejected",
    }
}

async fn export<T: Export>(
    State(ing): State<Arc<Ingestor>>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (req, enc, bytes, _permit, sender) =
        match prepare::<T>(&ing, T::SIGNAL, &method, &headers, body).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let unread = match enc {
        Encoding::Protobuf => req.unread_protobuf(bytes.len()),
        Encoding::Json if req.item_count() == 0 => misspelled_json(&bytes, T::ITEMS),
        Encoding::Json => None,
    };
    let result = match unread {
        Some(why) => Err(IngestError::InvalidArgument(why)),
        None => req.ingest(&ing, sender).await,
    };
    ing.count_request("http", T::SIGNAL, outcome_label(&result));
    match result {
        Ok(o) => success(enc, T::response(&o).encode_to_vec(), T::REJECTED_JSON, &o),
        Err(e) => ingest_response(e, enc),
    }
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
