//! An OTLP/HTTP logs exporter (protobuf, as the OTLP specification's HTTP transport states):
//! retried with backoff on the answers the specification calls retryable (429, 502, 503, 504)
//! and on network errors, honouring `Retry-After`; any other 4xx is final (`http`).

#[cfg(test)]
use super::http::shown_url;
use super::http::{Endpoint, http_url};
pub use super::http::{ExportError, Failure};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message as _;
use std::time::Duration;

/// Attempts per export before it is left for the next pass.
const ATTEMPTS: u32 = 5;
/// The first wait between attempts; it doubles, up to `MAX_WAIT`.
const FIRST_WAIT: Duration = Duration::from_millis(500);
const MAX_WAIT: Duration = Duration::from_secs(30);

/// An attribute.
pub fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// A string attribute.
pub fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.to_owned()))
}

/// An event log record (OTel logs data model `EventName`): WARN when `warn`, else INFO, at
/// `time_ns`, observed at `now_ns`, in `trace` (16 bytes) when it has one.
pub fn event(
    name: &str,
    time_ns: i64,
    now_ns: i64,
    warn: bool,
    body: String,
    attributes: Vec<KeyValue>,
    trace: Vec<u8>,
) -> LogRecord {
    let (severity, severity_text) = if warn {
        (SeverityNumber::Warn, "WARN")
    } else {
        (SeverityNumber::Info, "INFO")
    };
    LogRecord {
        time_unix_nano: u64::try_from(time_ns).unwrap_or_default(),
        observed_time_unix_nano: u64::try_from(now_ns).unwrap_or_default(),
        severity_number: severity as i32,
        severity_text: severity_text.to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body)),
        }),
        attributes,
        trace_id: trace,
        event_name: name.to_owned(),
        ..Default::default()
    }
}

/// One log record on a resource, from changetrail's instrumentation scope.
pub fn request(resource: Vec<KeyValue>, log: LogRecord) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "changetrail".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                log_records: vec![log],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The logs URL for a configured endpoint: `http(s)://host[:port][/prefix]` gets `/v1/logs`
/// added to its path unless the path already ends with it (a query is kept as it is).
pub fn logs_url(endpoint: &str) -> Result<String, String> {
    let mut url = http_url(endpoint)?;
    let path = url.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/v1/logs") {
        url.set_path(&format!("{path}/v1/logs"));
    }
    Ok(url.to_string())
}

/// Sends log records to one OTLP/HTTP endpoint.
#[derive(Clone)]
pub struct LogsExporter {
    endpoint: Endpoint,
}

impl LogsExporter {
    /// An exporter for `endpoint` with these headers (values are secrets: marked sensitive so no
    /// debug output shows them) and a deadline per attempt.
    pub fn new(
        endpoint: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<LogsExporter, String> {
        Ok(LogsExporter {
            endpoint: Endpoint::new(logs_url(endpoint)?, headers, timeout)?,
        })
    }

    /// The URL as it may be logged (`shown_url`).
    pub fn shown_url(&self) -> String {
        self.endpoint.shown_url()
    }

    /// The longest one `export` can take: every attempt to its deadline, every wait at its
    /// longest.
    pub fn worst_case(&self) -> Duration {
        self.endpoint.timeout() * ATTEMPTS + MAX_WAIT * (ATTEMPTS - 1)
    }

    /// Exports one request, retrying what may pass.
    pub async fn export(&self, req: &ExportLogsServiceRequest) -> Result<(), ExportError> {
        let body = req.encode_to_vec();
        let mut wait = FIRST_WAIT;
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            match self.send(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(Failure {
                    error: e @ ExportError::Unavailable(_),
                    retry_after,
                }) => {
                    last = Some(e);
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(retry_after.unwrap_or(wait).min(MAX_WAIT)).await;
                        wait = (wait * 2).min(MAX_WAIT);
                    }
                }
                Err(f) => return Err(f.error),
            }
        }
        Err(last.unwrap_or_else(|| ExportError::Unavailable("no attempt was made".into())))
    }

    /// One attempt, no retry: for callers that keep their own backoff (alerts' outbox).
    pub async fn export_once(&self, req: &ExportLogsServiceRequest) -> Result<(), Failure> {
        self.send(req.encode_to_vec()).await
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), Failure> {
        let r = self
            .endpoint
            .post(
                body,
                "application/x-protobuf",
                reqwest::header::HeaderMap::new(),
            )
            .await?;
        partial_success(r).await.map_err(|error| Failure {
            error,
            retry_after: None,
        })
    }
}

/// A 2xx answer's body may still reject the record (`partial_success`, OTLP 1.0): read at most
/// 64 KiB of it; a body that does not parse as the response counts as taken.
async fn partial_success(mut r: reqwest::Response) -> Result<(), ExportError> {
    const CAP: usize = 64 * 1024;
    let protobuf = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-protobuf"));
    if !protobuf {
        return Ok(());
    }
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        if body.len() + chunk.len() > CAP {
            return Ok(());
        }
        body.extend_from_slice(&chunk);
    }
    match ExportLogsServiceResponse::decode(body.as_slice()) {
        Ok(ExportLogsServiceResponse {
            partial_success: Some(p),
        }) if p.rejected_log_records > 0 => Err(ExportError::Refused(format!(
            "{} log record(s) rejected: {}",
            p.rejected_log_records,
            p.error_message.chars().take(200).collect::<String>()
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logs_path_is_added_once() {
        assert_eq!(
            logs_url("http://collector:4318").unwrap(),
            "http://collector:4318/v1/logs"
        );
        assert_eq!(
            logs_url("https://otlp.example/tenant-a/").unwrap(),
            "https://otlp.example/tenant-a/v1/logs"
        );
        assert_eq!(
            logs_url("http://collector:4318/v1/logs").unwrap(),
            "http://collector:4318/v1/logs"
        );
        assert_eq!(
            logs_url("https://otlp.example/p?tenant=a").unwrap(),
            "https://otlp.example/p/v1/logs?tenant=a"
        );
        for bad in [
            "",
            "collector:4318",
            "ftp://x",
            "http://",
            "http:///v1/logs",
            "http://h:99999/",
        ] {
            assert!(logs_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_logged_url_holds_no_credential() {
        assert_eq!(
            shown_url("https://user:s3cret@otlp.example:4318/t/v1/logs?api_key=s3cret#x"),
            "https://otlp.example:4318/t/v1/logs"
        );
        for leaky in [
            "https://u:pa?ss3cret@h/x",
            "https://u:a/bs3cret@h/",
            "ftp://user:s3cret@x/",
            "https://user:s3cret@[::1/",
            "https://user:s3cret@h:99999/",
        ] {
            assert!(!shown_url(leaky).contains("s3cret"), "{leaky}");
            if let Err(e) = logs_url(leaky) {
                assert!(!e.contains("s3cret"), "{e}");
            }
        }
    }
}
