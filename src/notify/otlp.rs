//! An OTLP/HTTP logs exporter (protobuf, as the OTLP specification's HTTP transport states):
//! retried with backoff on the answers the specification calls retryable (429, 502, 503, 504)
//! and on network errors, honouring `Retry-After`; any other 4xx is final.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message as _;
use std::time::Duration;

/// Attempts per export before it is left for the next pass.
const ATTEMPTS: u32 = 5;
/// The first wait between attempts; it doubles, up to `MAX_WAIT`.
const FIRST_WAIT: Duration = Duration::from_millis(500);
const MAX_WAIT: Duration = Duration::from_secs(30);

/// The logs URL for a configured endpoint: `http(s)://host[:port][/prefix]` gets `/v1/logs`
/// added unless it already ends with it.
pub fn logs_url(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim().trim_end_matches('/');
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "{:?} is not an http:// or https:// URL",
                shown_url(endpoint)
            )
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{:?} names no host", shown_url(endpoint)));
    }
    if e.ends_with("/v1/logs") {
        Ok(e.to_owned())
    } else {
        Ok(format!("{e}/v1/logs"))
    }
}

/// The URL as it may be logged: without user info and query, which may hold a credential.
pub fn shown_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}{path}")
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
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    let status = r.status();
                    match status.as_u16() {
                        429 | 502 | 503 | 504 => {}
                        300..=399 | 401 | 403 | 404 | 405 => {
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
        for bad in [
            "",
            "collector:4318",
            "ftp://x",
            "http://",
            "http:///v1/logs",
        ] {
            assert!(logs_url(bad).is_err(), "{bad:?}");
        }
    }
}
