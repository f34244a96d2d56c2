//! An OTLP/HTTP logs exporter (protobuf, as the OTLP specification's HTTP transport states):
//! retried with backoff on the answers the specification calls retryable (429, 502, 503, 504)
//! and on network errors, honouring `Retry-After`; any other 4xx is final.

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use prost::Message as _;
use std::time::Duration;

/// Attempts per export before it is left for the next pass.
const ATTEMPTS: u32 = 5;
/// The first wait between attempts; it doubles, up to `MAX_WAIT`.
const FIRST_WAIT: Duration = Duration::from_millis(500);
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The logs URL for a configured endpoint: `http(s)://host[:port][/prefix]` gets `/v1/logs`
/// added to its path unless the path already ends with it (a query is kept as it is).
pub fn logs_url(endpoint: &str) -> Result<String, String> {
    let shown = shown_url(endpoint);
    let mut url =
        reqwest::Url::parse(endpoint.trim()).map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown:?} is not an http:// or https:// URL"));
    }
    // `http:///x` parses (as host "x"), but nobody writes it meaning that.
    let after_scheme = endpoint.trim().split_once("://").map(|(_, r)| r);
    if url.host_str().is_none_or(str::is_empty)
        || after_scheme.is_none_or(|r| r.is_empty() || r.starts_with('/'))
    {
        return Err(format!("{shown:?} names no host"));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/v1/logs") {
        url.set_path(&format!("{path}/v1/logs"));
    }
    Ok(url.to_string())
}

/// The URL as it may be logged: without user info, query and fragment, which may hold a
/// credential (only the scheme when it does not parse).
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url.trim()) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) if scheme.chars().all(|c| c.is_ascii_alphanumeric()) => {
                format!("{scheme}://(a URL that does not parse)")
            }
            _ => "(a URL that does not parse)".to_owned(),
        },
    }
}

/// Why an export did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint answered that this request will never be taken (400, 413, 422 and other
    /// 4xx not below): the record itself is at fault.
    #[error("the endpoint refused the export: {0}")]
    Refused(String),
    /// The endpoint says the configuration is wrong (a redirect, 401, 403, 404, 405): nothing
    /// will go through until an operator fixes it, so the record is kept for then.
    #[error("the endpoint turned the export away, check [annotations.otlp]: {0}")]
    Misconfigured(String),
    /// Every attempt failed for a reason that may pass.
    #[error("the endpoint could not be reached: {0}")]
    Unavailable(String),
}

/// Sends log records to one OTLP/HTTP endpoint.
#[derive(Clone)]
pub struct LogsExporter {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    headers: reqwest::header::HeaderMap,
}

impl LogsExporter {
    /// An exporter for `endpoint` with these headers (values are secrets: marked sensitive so no
    /// debug output shows them) and a deadline per attempt.
    pub fn new(
        endpoint: &str,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<LogsExporter, String> {
        let url = logs_url(endpoint)?;
        let mut map = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("header name {k:?} is not valid"))?;
            let mut value = reqwest::header::HeaderValue::from_str(v)
                .map_err(|_| format!("the value of header {k:?} is not valid"))?;
            value.set_sensitive(true);
            map.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(LogsExporter {
            client,
            url,
            timeout,
            headers: map,
        })
    }

    /// The URL as it may be logged (`shown_url`).
    pub fn shown_url(&self) -> String {
        shown_url(&self.url)
    }

    /// The longest one `export` can take: every attempt to its deadline, every wait at its
    /// longest.
    pub fn worst_case(&self) -> Duration {
        self.timeout * ATTEMPTS + MAX_WAIT * (ATTEMPTS - 1)
    }

    /// Exports one request, retrying what may pass.
    pub async fn export(&self, req: &ExportLogsServiceRequest) -> Result<(), ExportError> {
        let body = req.encode_to_vec();
        let mut wait = FIRST_WAIT;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(&self.url)
                .headers(self.headers.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            let retry_after = match sent {
                Ok(r) if r.status().is_success() => return partial_success(r).await,
                Ok(r) => {
                    let status = r.status();
                    match status.as_u16() {
                        // 408 is a timeout on the way, like a 504.
                        408 | 429 | 502 | 503 | 504 => {}
                        300..=399 | 401 | 403 | 404 | 405 | 407 => {
                            return Err(ExportError::Misconfigured(format!("HTTP {status}")));
                        }
                        400..=499 => return Err(ExportError::Refused(format!("HTTP {status}"))),
                        // Another 5xx: the specification does not call it retryable.
                        _ => return Err(ExportError::Unavailable(format!("HTTP {status}"))),
                    }
                    last = format!("HTTP {status}");
                    r.headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s).min(MAX_WAIT))
                }
                Err(e) => {
                    // Without the URL: it may hold a credential in its query.
                    last = e.without_url().to_string();
                    None
                }
            };
            if attempt < ATTEMPTS {
                tokio::time::sleep(retry_after.unwrap_or(wait)).await;
                wait = (wait * 2).min(MAX_WAIT);
            }
        }
        Err(ExportError::Unavailable(last))
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
