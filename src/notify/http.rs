//! One HTTP POST to a configured endpoint, and what its answer means: taken, worth retrying
//! (408, 429, 502, 503, 504 and network errors, with `Retry-After`), a configuration an operator
//! must fix (a redirect, 401, 403, 404, 405, 407), or a request that will never be taken (any
//! other 4xx). Shared by the OTLP logs exporter and the alert webhooks. URLs are checked here
//! and logged only without what may hold a credential.

use std::time::Duration;

/// An `http(s)://host…` URL as a configuration names it.
pub fn http_url(text: &str) -> Result<reqwest::Url, String> {
    let shown = shown_url(text);
    let url =
        reqwest::Url::parse(text.trim()).map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown:?} is not an http:// or https:// URL"));
    }
    // `http:///x` parses (as host "x"), but nobody writes it meaning that.
    let after_scheme = text.trim().split_once("://").map(|(_, r)| r);
    if url.host_str().is_none_or(str::is_empty)
        || after_scheme.is_none_or(|r| r.is_empty() || r.starts_with('/'))
    {
        return Err(format!("{shown:?} names no host"));
    }
    Ok(url)
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

/// Why a send did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint answered that this request will never be taken (400, 413, 422 and other
    /// 4xx not below): the request itself is at fault.
    #[error("the endpoint refused it: {0}")]
    Refused(String),
    /// The endpoint says the configuration is wrong (a redirect, 401, 403, 404, 405, 407):
    /// nothing will go through until an operator fixes it, so the request is kept for then.
    #[error("the endpoint turned it away, check the configuration: {0}")]
    Misconfigured(String),
    /// The attempt failed for a reason that may pass.
    #[error("the endpoint could not be reached: {0}")]
    Unavailable(String),
}

/// A failed attempt, with how long the endpoint asked to wait (`Retry-After`, in seconds).
#[derive(Debug)]
pub struct Failure {
    pub error: ExportError,
    pub retry_after: Option<Duration>,
}

impl From<ExportError> for Failure {
    fn from(error: ExportError) -> Failure {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// A URL with its headers, client and deadline.
#[derive(Clone)]
pub struct Endpoint {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    headers: reqwest::header::HeaderMap,
}

impl Endpoint {
    /// An endpoint at `url` (checked by `http_url`) with these headers (values are secrets:
    /// marked sensitive so no debug output shows them) and a deadline per attempt. Redirects
    /// are not followed (a header would go where nobody configured it).
    pub fn new(
        url: String,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Endpoint, String> {
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
        Ok(Endpoint {
            client,
            url,
            timeout,
            headers: map,
        })
    }

    /// The URL as it may be logged.
    pub fn shown_url(&self) -> String {
        shown_url(&self.url)
    }

    /// One attempt's deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One POST of `body` with the configured headers and `extra` ones; a 2xx answer is
    /// returned for the caller to read.
    pub async fn post(
        &self,
        body: Vec<u8>,
        content_type: &str,
        extra: reqwest::header::HeaderMap,
    ) -> Result<reqwest::Response, Failure> {
        let sent = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .headers(extra)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await;
        let r = match sent {
            Ok(r) => r,
            // Without the URL: it may hold a credential in its query.
            Err(e) => return Err(ExportError::Unavailable(e.without_url().to_string()).into()),
        };
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let error = match status.as_u16() {
            // 408 is a timeout on the way, like a 504.
            408 | 429 | 502 | 503 | 504 => ExportError::Unavailable(format!("HTTP {status}")),
            300..=399 | 401 | 403 | 404 | 405 | 407 => {
                ExportError::Misconfigured(format!("HTTP {status}"))
            }
            400..=499 => ExportError::Refused(format!("HTTP {status}")),
            // Another 5xx: not called retryable by the OTLP specification; retried later.
            _ => ExportError::Unavailable(format!("HTTP {status}")),
        };
        let retry_after = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(Failure { error, retry_after })
    }
}
