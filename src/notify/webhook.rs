//! Alert webhooks (`[[alerts.webhooks]]`): a JSON body in the destination's format (`core::alerts`),
//! with an optional bearer token and an optional HMAC-SHA256 signature of the exact body bytes,
//! `X-Changetrail-Signature: sha256=<hex>`, which the receiver recomputes with the shared secret
//! (compare in constant time). `X-Changetrail-Delivery` names the delivery, the same on every
//! retry, so a receiver can drop the one repeat a sender killed mid-send can cause.

use super::http::{Endpoint, Failure, http_url};
use crate::core::alerts::{Format, Notice, body};

/// The signature header.
pub const SIGNATURE: &str = "x-changetrail-signature";
/// The delivery id header.
pub const DELIVERY: &str = "x-changetrail-delivery";

/// One webhook destination.
pub struct Webhook {
    pub name: String,
    format: Format,
    endpoint: Endpoint,
    hmac: Option<ring::hmac::Key>,
}

/// What `[[alerts.webhooks]]` says about one destination (secrets exposed only here).
pub struct WebhookSpec<'a> {
    pub name: &'a str,
    pub url: &'a str,
    pub format: Format,
    pub bearer_token: Option<&'a str>,
    pub hmac_secret: Option<&'a str>,
    pub headers: Vec<(String, String)>,
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(ring::hmac::sign(key, body).as_ref())
    )
}

impl Webhook {
    pub fn new(spec: WebhookSpec<'_>, timeout: std::time::Duration) -> Result<Webhook, String> {
        let url = http_url(spec.url)?;
        let mut headers = spec.headers;
        if let Some(t) = spec.bearer_token {
            headers.push(("authorization".into(), format!("Bearer {t}")));
        }
        Ok(Webhook {
            name: spec.name.to_owned(),
            format: spec.format,
            endpoint: Endpoint::new(url.to_string(), &headers, timeout)?,
            hmac: spec
                .hmac_secret
                .map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.as_bytes())),
        })
    }

    /// The URL as it may be logged: scheme, host and port only (a webhook's path may be its
    /// credential, as Slack's is).
    pub fn shown_url(&self) -> String {
        match reqwest::Url::parse(&self.endpoint.shown_url()) {
            Ok(u) => format!(
                "{}://{}{}/…",
                u.scheme(),
                u.host_str().unwrap_or_default(),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "(a URL)".to_owned(),
        }
    }

    /// One attempt to deliver `notice`, named `delivery` (the same on every retry).
    pub async fn send(&self, notice: &Notice<'_>, delivery: &str) -> Result<(), Failure> {
        let bytes = serde_json::to_vec(&body(self.format, notice)).map_err(|e| {
            Failure::from(super::http::ExportError::Refused(format!(
                "the body could not be written: {e}"
            )))
        })?;
        let mut extra = reqwest::header::HeaderMap::new();
        if let Ok(v) = reqwest::header::HeaderValue::from_str(delivery) {
            extra.insert(DELIVERY, v);
        }
        if let Some(key) = &self.hmac
            && let Ok(mut v) = reqwest::header::HeaderValue::from_str(&signature(key, &bytes))
        {
            v.set_sensitive(true);
            extra.insert(SIGNATURE, v);
        }
        self.endpoint
            .post(bytes, "application/json", extra)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc_4231s_hmac_sha256() {
        // RFC 4231, test case 2.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        assert_eq!(
            signature(&key, b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
