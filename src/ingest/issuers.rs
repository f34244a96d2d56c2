//! The trusted issuers' keys: read from a JWKS file, or fetched through OpenID Connect discovery
//! (`discovery_url` → its `jwks_uri`), cached, refreshed on a timer and when a token names a key
//! the set lacks. The keys in force are evidence too: each time an issuer's set changes (and the
//! first time it is seen) an `identity.keys` entry records it, so a verdict "verified by issuer X"
//! can be checked against the keys X published then.

use crate::core::evidence::identity::IdentityVerifier;
use crate::core::ledger::batch::Draft;
use crate::core::ledger::hash::Hash;
use crate::pipeline::LedgerWriter;
use jsonwebtoken::jwk::JwkSet;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const IDENTITY_KEYS: &str = "identity.keys";
/// A discovery document or key set larger than this is not one.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// A token naming an unknown key asks for a fetch at most this often per issuer.
const MIN_REFETCH: Duration = Duration::from_secs(60);

/// The `identity.keys` payload: whose keys, from where, and the set itself (public keys only).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IssuerKeys {
    pub issuer: String,
    pub source: String,
    /// SHA-256 (hex) of the key set's canonical JSON: what "changed" compares.
    pub keys_sha256: String,
    pub keys: serde_json::Value,
}

/// A URL changetrail may fetch keys from: https, or http to this machine (a test, a sidecar).
pub fn check_url(url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = u.host_str().unwrap_or("");
    let local = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback());
    match u.scheme() {
        "https" => Ok(()),
        "http" if local => Ok(()),
        other => Err(format!(
            "{url:?} must be https ({other} is accepted only to this machine)"
        )),
    }
}

/// The discovery document's URL for a configured `discovery_url` (an issuer URL gets the
/// well-known path).
fn discovery_document(url: &str) -> String {
    if url.ends_with("/.well-known/openid-configuration") {
        url.to_owned()
    } else {
        format!(
            "{}/.well-known/openid-configuration",
            url.trim_end_matches('/')
        )
    }
}

fn digest(keys: &serde_json::Value) -> String {
    Hash::of(&[keys.to_string().as_bytes()]).to_hex()
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    check_url(url)?;
    let mut r = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("GET {url}: {}", r.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: more than {MAX_DOCUMENT_BYTES} bytes"));
        }
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

/// Fetches an issuer's key set through its discovery document, checking the document is the
/// issuer's own (OpenID Connect Discovery 1.0 §4.3).
pub async fn fetch(
    client: &reqwest::Client,
    issuer: &str,
    discovery_url: &str,
) -> Result<(String, JwkSet), String> {
    let doc_url = discovery_document(discovery_url);
    let doc = get_json(client, &doc_url).await?;
    let named = doc.get("issuer").and_then(|v| v.as_str()).unwrap_or("");
    if named != issuer {
        return Err(format!(
            "{doc_url} is the discovery document of {named:?}, not of {issuer:?}"
        ));
    }
    let jwks_uri = doc
        .get("jwks_uri")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("{doc_url} names no jwks_uri"))?
        .to_owned();
    let keys: JwkSet = serde_json::from_value(get_json(client, &jwks_uri).await?)
        .map_err(|e| format!("{jwks_uri} is not a JWKS: {e}"))?;
    Ok((jwks_uri, keys))
}

/// Keeps the issuers' keys current and recorded.
pub struct Refresher {
    verifier: IdentityVerifier,
    writer: Arc<LedgerWriter>,
    client: reqwest::Client,
    /// (issuer, discovery url, refresh interval) of the issuers whose keys are fetched.
    fetched: Vec<(String, String, Duration)>,
    /// (issuer, file) of those read from a file.
    files: Vec<(String, String)>,
    /// The digest last recorded per issuer.
    recorded: tokio::sync::Mutex<HashMap<String, String>>,
}

/// Where a trusted issuer's keys come from (`[[identity.issuers]]`).
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS file, read at start.
    File { issuer: String, path: String },
    /// OpenID Connect discovery, fetched at start and every `refresh`.
    Discovery {
        issuer: String,
        url: String,
        refresh: Duration,
    },
}

impl Refresher {
    pub fn new(
        issuers: &[KeySource],
        verifier: IdentityVerifier,
        writer: Arc<LedgerWriter>,
    ) -> anyhow::Result<Refresher> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()?;
        let mut fetched = Vec::new();
        let mut files = Vec::new();
        for i in issuers {
            match i {
                KeySource::File { issuer, path } => files.push((issuer.clone(), path.clone())),
                KeySource::Discovery {
                    issuer,
                    url,
                    refresh,
                } => fetched.push((issuer.clone(), url.clone(), *refresh)),
            }
        }
        Ok(Refresher {
            verifier,
            writer,
            client,
            fetched,
            files,
            recorded: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Records `keys` for `issuer` if they differ from what the ledger last recorded.
    async fn record(&self, issuer: &str, source: &str, keys: &JwkSet) -> anyhow::Result<bool> {
        let value = serde_json::to_value(keys)?;
        let sha = digest(&value);
        let mut recorded = self.recorded.lock().await;
        if recorded.get(issuer) == Some(&sha) {
            return Ok(false);
        }
        let payload = IssuerKeys {
            issuer: issuer.to_owned(),
            source: source.to_owned(),
            keys_sha256: sha.clone(),
            keys: value,
        };
        self.writer
            .append(&[Draft::of(IDENTITY_KEYS, "", &payload)?])
            .await?;
        recorded.insert(issuer.to_owned(), sha);
        Ok(true)
    }

    /// Fetches one issuer's keys and puts them in force; records them if they changed.
    async fn refresh(&self, issuer: &str, url: &str) -> Result<(), String> {
        let (source, keys) = fetch(&self.client, issuer, url).await?;
        self.verifier.set_keys(issuer, keys.clone());
        match self.record(issuer, &source, &keys).await {
            Ok(true) => tracing::info!(
                issuer,
                keys = keys.keys.len(),
                "Recorded a new key set of a trusted issuer."
            ),
            Ok(false) => {}
            Err(e) => return Err(format!("recording the keys: {e}")),
        }
        Ok(())
    }

    /// What the ledger last recorded per issuer; then the file-based keys recorded if changed,
    /// and every discovery issuer fetched once (failures are logged and retried later: the
    /// service serves meanwhile, and that issuer's tokens verify nothing until its keys arrive).
    pub async fn start(&self) -> anyhow::Result<()> {
        {
            let mut recorded = self.recorded.lock().await;
            for (_, _, payload) in self
                .writer
                .store()
                .entries_of_kinds(&[IDENTITY_KEYS])
                .await?
            {
                if let Some(p) = payload.and_then(|p| serde_json::from_str::<IssuerKeys>(&p).ok()) {
                    recorded.insert(p.issuer, p.keys_sha256);
                }
            }
        }
        for (issuer, file) in &self.files {
            if let Some(i) = self.verifier.issuers().iter().find(|i| &i.issuer == issuer) {
                self.record(issuer, file, &i.keys).await?;
            }
        }
        for (issuer, url, _) in &self.fetched {
            if let Err(e) = self.refresh(issuer, url).await {
                tracing::warn!(issuer, error = %e, "Cannot fetch a trusted issuer's keys yet; retrying in the background.");
            }
        }
        Ok(())
    }

    /// Refreshes on each issuer's interval (every minute while its keys cannot be fetched) and
    /// whenever `wake` names it, until `stop`.
    pub async fn run(
        self: Arc<Self>,
        mut wake: tokio::sync::mpsc::Receiver<String>,
        stop: CancellationToken,
    ) {
        if self.fetched.is_empty() {
            return;
        }
        let mut due: HashMap<String, Instant> = self
            .fetched
            .iter()
            .map(|(i, _, every)| (i.clone(), Instant::now() + *every))
            .collect();
        let mut last: HashMap<String, Instant> = HashMap::new();
        loop {
            let next = due.values().min().copied().unwrap_or_else(Instant::now);
            let asked = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next.into()) => None,
                w = wake.recv() => match w {
                    Some(i) => Some(i),
                    None => return,
                },
            };
            let now = Instant::now();
            for (issuer, url, every) in &self.fetched {
                let requested = asked.as_deref() == Some(issuer.as_str())
                    && last
                        .get(issuer)
                        .is_none_or(|t| now.duration_since(*t) >= MIN_REFETCH);
                let timed = due.get(issuer).is_some_and(|t| *t <= now);
                if !(requested || timed) {
                    continue;
                }
                last.insert(issuer.clone(), now);
                let next = match self.refresh(issuer, url).await {
                    Ok(()) => *every,
                    Err(e) => {
                        tracing::warn!(issuer, error = %e, "Cannot refresh a trusted issuer's keys.");
                        MIN_REFETCH
                    }
                };
                due.insert(issuer.clone(), Instant::now() + next);
            }
        }
    }
}

/// The verifier of a command that runs once (an import): file keys as they are, discovery keys
/// fetched now, and both recorded if they changed.
pub async fn for_command(
    verifier: IdentityVerifier,
    issuers: &[KeySource],
    writer: Arc<LedgerWriter>,
) -> anyhow::Result<IdentityVerifier> {
    Refresher::new(issuers, verifier.clone(), writer)?
        .start()
        .await?;
    Ok(verifier)
}

/// A verifier whose unknown-key misses wake the refresher, and the receiver for them.
pub fn with_wake(
    verifier: IdentityVerifier,
) -> (IdentityVerifier, tokio::sync::mpsc::Receiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let hook = Arc::new(move |issuer: &str| {
        // Full or closed: a fetch is already asked for, or the service is stopping.
        let _ = tx.try_send(issuer.to_owned());
    });
    (verifier.on_unknown_key(hook), rx)
}
