//! Conductor's REST API, as the reconciler uses it: `GET /api/workflow/search`,
//! `GET /api/workflow/{id}?includeTasks=true`, and Orkes' `POST /api/token` (an access key
//! exchanged for a token sent as `X-Authorization`). Every request has a deadline; 5xx, 408,
//! timeouts and network errors are retried with capped exponential backoff, 429 after its
//! `Retry-After`; a 401 gets a new token once. The key secret and tokens are never logged or
//! put into an error.

use std::fmt;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// A secret that prints as `(redacted)`.
#[derive(Clone, Default)]
pub struct KeySecret(String);

impl KeySecret {
    pub fn new(s: impl Into<String>) -> KeySecret {
        KeySecret(s.into())
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// Why a request failed after its retries, by the kind `/metrics` counts.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("Conductor did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Conductor is unavailable: {0}")]
    Unavailable(String),
    #[error("Conductor asks to wait {0:?} (429)")]
    RateLimited(Duration),
    #[error("Conductor refused the credentials: {0}")]
    Unauthorized(String),
    #[error("Conductor's answer is not what its API documents: {0}")]
    Invalid(String),
    /// An answer over `MAX_BODY` (counted as `invalid_answer`): never read whole.
    #[error("Conductor's answer is too large: {0}")]
    TooLarge(String),
    #[error("stopped")]
    Stopped,
}

impl FetchError {
    /// The `kind` label of `changetrail_conductor_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Timeout(_) => "timeout",
            FetchError::Unavailable(_) => "unavailable",
            FetchError::RateLimited(_) => "rate_limited",
            FetchError::Unauthorized(_) => "unauthorized",
            FetchError::Invalid(_) | FetchError::TooLarge(_) => "invalid_answer",
            FetchError::Stopped => "stopped",
        }
    }
}

/// The largest answer read (16 MiB): a larger one (a run with a vast output, or a server
/// gone wrong) would hold that much memory per request.
pub const MAX_BODY: usize = 16 << 20;

/// Why an answer's body could not be read.
enum BodyError {
    TooLarge,
    Timeout,
    Other(String),
}

/// Reads an answer's body, at most `MAX_BODY` bytes (a stated larger length is refused before
/// reading), as JSON.
async fn json_body(mut r: reqwest::Response) -> Result<serde_json::Value, BodyError> {
    if r.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(c)) if body.len() + c.len() > MAX_BODY => return Err(BodyError::TooLarge),
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break,
            Err(e) if e.is_timeout() => return Err(BodyError::Timeout),
            Err(e) => return Err(BodyError::Other(e.without_url().to_string())),
        }
    }
    serde_json::from_slice(&body).map_err(|e| BodyError::Other(e.to_string()))
}

/// The longest wait a `Retry-After` may ask for: a huge value must not park the reconciler
/// for years.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A `Retry-After` in seconds, capped at `MAX_RETRY_AFTER`. The HTTP-date form (and anything
/// else) is `None`: the normal backoff applies, which needs no trust in either clock.
fn retry_after(v: &str) -> Option<Duration> {
    let secs = v.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// How requests are made and retried.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The server's base URL (`http://conductor:8080`; `/api/...` is appended).
    pub url: String,
    /// Orkes access key; empty for OSS Conductor (no authentication).
    pub key_id: String,
    pub key_secret: KeySecret,
    /// One request's deadline.
    pub timeout: Duration,
    /// Attempts per request before the round gives up.
    pub attempts: u32,
    /// The first wait between attempts (doubling).
    pub min_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

pub struct Client {
    http: reqwest::Client,
    settings: ClientSettings,
    /// The current Orkes token (never logged).
    token: Mutex<Option<String>>,
}

/// One attempt's outcome.
enum Attempt {
    Done(Option<serde_json::Value>),
    Retry(FetchError, Option<Duration>),
    Unauthorized,
    Fail(FetchError),
}

impl Client {
    pub fn new(settings: ClientSettings) -> Result<Client, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("building the Conductor HTTP client: {e}"))?;
        Ok(Client {
            http,
            settings,
            token: Mutex::new(None),
        })
    }

    fn base(&self) -> &str {
        self.settings.url.trim_end_matches('/')
    }

    /// One search page: executions matching `query`, oldest update first.
    pub async fn search(
        &self,
        query: &str,
        start: u64,
        size: u32,
        stop: &CancellationToken,
    ) -> Result<serde_json::Value, FetchError> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/workflow/search", self.base()),
            &[
                ("start", start.to_string()),
                ("size", size.to_string()),
                ("sort", "updateTime:ASC".to_owned()),
                ("freeText", "*".to_owned()),
                ("query", query.to_owned()),
            ],
        )
        .map_err(|e| FetchError::Invalid(format!("the Conductor URL: {e}")))?;
        self.get(url, stop)
            .await?
            .ok_or_else(|| FetchError::Invalid("the search endpoint answered 404".into()))
    }

    /// An execution with its tasks; `None` when Conductor answers 404 (it does not exist).
    pub async fn execution(
        &self,
        workflow_id: &str,
        stop: &CancellationToken,
    ) -> Result<Option<serde_json::Value>, FetchError> {
        // An id such as `..` would leave the path (or vanish from it): never ask for one.
        crate::core::evidence::valid_run_id(workflow_id).map_err(FetchError::Invalid)?;
        let mut url = reqwest::Url::parse(&format!("{}/api/workflow/", self.base()))
            .map_err(|e| FetchError::Invalid(format!("the Conductor URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| FetchError::Invalid("the Conductor URL cannot take a path".into()))?
            .pop_if_empty()
            .push(workflow_id);
        url.query_pairs_mut().append_pair("includeTasks", "true");
        let doc = self.get(url, stop).await?;
        // The answer is imported as the run it names: one naming another run (a proxy's cache,
        // a server gone wrong) would record that run's history as this reconciler's.
        if let Some(d) = &doc {
            let named = d.get("workflowId").and_then(|w| w.as_str()).map(str::trim);
            if named != Some(workflow_id) {
                return Err(FetchError::Invalid(format!(
                    "asked for workflow {workflow_id:?}, answered {:?}",
                    named
                        .unwrap_or("no workflowId")
                        .chars()
                        .take(40)
                        .collect::<String>()
                )));
            }
        }
        Ok(doc)
    }

    /// A GET with retries; `None` for 404.
    async fn get(
        &self,
        url: reqwest::Url,
        stop: &CancellationToken,
    ) -> Result<Option<serde_json::Value>, FetchError> {
        let mut renewed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (error, asked) = match self.attempt(&url, stop).await? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                // A token expires: get a new one, once per request.
                Attempt::Unauthorized if !renewed && !self.settings.key_id.is_empty() => {
                    renewed = true;
                    *self.token.lock().await = None;
                    continue;
                }
                Attempt::Unauthorized => {
                    return Err(FetchError::Unauthorized(format!(
                        "HTTP 401 for {}",
                        url.path()
                    )));
                }
                Attempt::Retry(e, asked) => (e, asked),
            };
            if attempt >= self.settings.attempts.max(1) {
                return Err(error);
            }
            let wait = match asked {
                // Waiting longer than the cap inside this round would stall it: the round
                // gives up, and the next one starts no sooner than asked.
                Some(d) if d > self.settings.max_backoff => {
                    return Err(FetchError::RateLimited(d));
                }
                Some(d) => d,
                None => self.backoff(attempt),
            };
            tracing::debug!(%error, attempt, ?wait, "Conductor request failed; retrying.");
            tokio::select! {
                () = stop.cancelled() => return Err(FetchError::Stopped),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// The wait before attempt `attempt + 1`: min_backoff doubling, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.settings
            .min_backoff
            .saturating_mul(factor)
            .min(self.settings.max_backoff)
    }

    async fn attempt(
        &self,
        url: &reqwest::Url,
        stop: &CancellationToken,
    ) -> Result<Attempt, FetchError> {
        let mut req = self.http.get(url.clone());
        let token = match self.token(stop).await {
            Ok(t) => t,
            // The token endpoint down or slow is retried like any other request.
            Err(e @ (FetchError::Timeout(_) | FetchError::Unavailable(_))) => {
                return Ok(Attempt::Retry(e, None));
            }
            Err(e) => return Err(e),
        };
        if let Some(token) = token {
            let mut v = reqwest::header::HeaderValue::from_str(&token).map_err(|_| {
                FetchError::Invalid("the token Conductor issued is not a header value".into())
            })?;
            v.set_sensitive(true);
            req = req.header("X-Authorization", v);
        }
        let sent = tokio::select! {
            () = stop.cancelled() => return Err(FetchError::Stopped),
            r = req.send() => r,
        };
        let r = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Ok(Attempt::Retry(
                    FetchError::Timeout(self.settings.timeout),
                    None,
                ));
            }
            Err(e) => {
                return Ok(Attempt::Retry(
                    FetchError::Unavailable(e.without_url().to_string()),
                    None,
                ));
            }
        };
        let status = r.status().as_u16();
        let asked = r
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| retry_after(v.to_str().ok()?));
        Ok(match status {
            200..=299 => match json_body(r).await {
                Ok(v) => Attempt::Done(Some(v)),
                Err(BodyError::Timeout) => {
                    Attempt::Retry(FetchError::Timeout(self.settings.timeout), None)
                }
                Err(BodyError::TooLarge) => Attempt::Fail(FetchError::TooLarge(format!(
                    "{} answered more than {} MiB",
                    url.path(),
                    MAX_BODY >> 20
                ))),
                Err(BodyError::Other(e)) => Attempt::Fail(FetchError::Invalid(format!(
                    "{} is not JSON: {e}",
                    url.path()
                ))),
            },
            404 => Attempt::Done(None),
            401 => Attempt::Unauthorized,
            429 => Attempt::Retry(
                FetchError::RateLimited(asked.unwrap_or(self.settings.min_backoff)),
                Some(asked.unwrap_or(self.settings.min_backoff)),
            ),
            408 | 500..=599 => Attempt::Retry(
                FetchError::Unavailable(format!("HTTP {status} for {}", url.path())),
                asked,
            ),
            _ => Attempt::Fail(FetchError::Unavailable(format!(
                "HTTP {status} for {}",
                url.path()
            ))),
        })
    }

    /// The token to send: none for OSS Conductor; else the one held, or a new one from
    /// `POST /api/token`.
    async fn token(&self, stop: &CancellationToken) -> Result<Option<String>, FetchError> {
        if self.settings.key_id.is_empty() {
            return Ok(None);
        }
        let mut held = self.token.lock().await;
        if let Some(t) = held.as_ref() {
            return Ok(Some(t.clone()));
        }
        let body = serde_json::json!({
            "keyId": self.settings.key_id,
            "keySecret": self.settings.key_secret.0,
        });
        let sent = tokio::select! {
            () = stop.cancelled() => return Err(FetchError::Stopped),
            r = self.http.post(format!("{}/api/token", self.base())).json(&body).send() => r,
        };
        let r = sent.map_err(|e| {
            if e.is_timeout() {
                FetchError::Timeout(self.settings.timeout)
            } else {
                FetchError::Unavailable(format!("POST /api/token: {}", e.without_url()))
            }
        })?;
        let status = r.status().as_u16();
        match status {
            200..=299 => {}
            401 | 403 => {
                return Err(FetchError::Unauthorized(format!(
                    "POST /api/token answered {status} for key {}",
                    self.settings.key_id
                )));
            }
            _ => {
                return Err(FetchError::Unavailable(format!(
                    "POST /api/token answered {status}"
                )));
            }
        }
        let v = json_body(r)
            .await
            .map_err(|_| FetchError::Invalid("POST /api/token did not answer JSON".into()))?;
        let token = v
            .get("token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| FetchError::Invalid("POST /api/token answered no token".into()))?
            .to_owned();
        *held = Some(token.clone());
        Ok(Some(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_capped_and_a_date_means_the_usual_backoff() {
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("99999999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("18446744073709551615"), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after("-1"), None);
    }
}
