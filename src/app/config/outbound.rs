//! The settings for what changetrail sends out or links to: `[links]`, `[annotations]`,
//! `[alerts]` (the destinations `notify/` delivers to), with their checks.

use super::{ConfigError, Secret};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Alerts: production changes' exceptions, raised once per (change, code) and delivered to
/// every destination configured here.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often the chain is looked at for new exceptions, and due deliveries sent.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// One delivery attempt's deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest wait between two attempts of one delivery.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How long after its receipt a production version no change explains is alerted
    /// (UNLINKED_DEPLOY): the change that deployed it may arrive later.
    #[serde(with = "humantime_serde")]
    pub unlinked_after: Duration,
    pub webhooks: Vec<WebhookConfig>,
    pub otlp: AlertsOtlpConfig,
}

/// One `[[alerts.webhooks]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The destination's name in the ledger and the outbox; `FORMAT:HOST` when empty.
    #[serde(default)]
    pub name: String,
    /// A secret: Slack's webhook URLs carry their credential in the path.
    pub url: Secret,
    pub format: crate::core::alerts::Format,
    #[serde(default)]
    pub bearer_token: Secret,
    /// Signs each body: `X-Changetrail-Signature: sha256=<hex HMAC-SHA256>`.
    #[serde(default)]
    pub hmac_secret: Secret,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, Secret>,
}

/// `[alerts.otlp]`: alerts as OTLP log records.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsOtlpConfig {
    pub endpoint: String,
    pub headers: std::collections::BTreeMap<String, Secret>,
}

impl WebhookConfig {
    /// The configured name, or `FORMAT:HOST` (never the path or query: they may hold a secret).
    pub fn name(&self) -> String {
        if !self.name.trim().is_empty() {
            return self.name.trim().to_owned();
        }
        let host = reqwest::Url::parse(self.url.expose().trim())
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let format = match self.format {
            crate::core::alerts::Format::Alertmanager => "alertmanager",
            crate::core::alerts::Format::Slack => "slack",
            crate::core::alerts::Format::Json => "json",
        };
        format!("{format}:{host}")
    }
}

impl AlertsConfig {
    /// Whether any destination is configured.
    pub fn enabled(&self) -> bool {
        !self.webhooks.is_empty() || !self.otlp.endpoint.trim().is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.interval.is_zero() || self.timeout.is_zero() || self.max_backoff.is_zero() {
            return bad("alerts.interval, timeout and max_backoff must be more than 0".into());
        }
        let mut names = std::collections::BTreeSet::new();
        if !self.otlp.endpoint.trim().is_empty() {
            crate::notify::otlp::logs_url(&self.otlp.endpoint)
                .map_err(|e| ConfigError::Invalid(format!("alerts.otlp.endpoint: {e}")))?;
            names.insert("otlp".to_owned());
        }
        for (n, w) in self.webhooks.iter().enumerate() {
            // The URL may be a credential (Slack's): the error says which webhook, not the URL.
            if crate::notify::http::http_url(w.url.expose()).is_err() {
                return bad(format!(
                    "alerts.webhooks[{n}].url is not an http:// or https:// URL with a host"
                ));
            }
            let name = w.name();
            // It goes into a header (X-Changetrail-Delivery): printable ASCII only.
            if name.is_empty()
                || name.len() > 200
                || !name.chars().all(|c| c.is_ascii_graphic() || c == ' ')
            {
                return bad(format!(
                    "alerts.webhooks[{n}].name must be 1 to 200 printable ASCII characters"
                ));
            }
            if !names.insert(name.clone()) {
                return bad(format!(
                    "alerts.webhooks[{n}]: another destination is named {name:?}; give each a name"
                ));
            }
        }
        Ok(())
    }
}

/// Markers sent to the team's telemetry backend.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationsConfig {
    pub otlp: OtlpExportConfig,
}

impl AnnotationsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.otlp;
        if !a.endpoint.trim().is_empty() {
            crate::notify::otlp::logs_url(&a.endpoint)
                .map_err(|e| ConfigError::Invalid(format!("annotations.otlp.endpoint: {e}")))?;
            if a.timeout.is_zero() || a.interval.is_zero() {
                return Err(ConfigError::Invalid(
                    "annotations.otlp.timeout and interval must be more than 0".into(),
                ));
            }
        }
        Ok(())
    }
}

/// An OTLP/HTTP (protobuf) logs endpoint changetrail sends to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExportConfig {
    /// `http(s)://host:4318` (`/v1/logs` is added) or the full logs URL; empty: off.
    pub endpoint: String,
    /// Sent with every export (an API key, a tenant); never logged.
    pub headers: std::collections::BTreeMap<String, Secret>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the chain is looked at for new deploys.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

/// Links from changetrail's pages into the team's tracing UI.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinksConfig {
    /// `https://…/trace/{trace_id}`; empty: no links.
    pub trace_url: String,
    /// Where this service's console is reached (`https://changetrail.example`): alerts link to
    /// the change's page there. Empty: no links.
    pub console_url: String,
}

impl LinksConfig {
    /// A change's page in the console, `{console_url}/#/changes/{id}`, when configured.
    pub fn console_url(&self) -> Result<Option<String>, ConfigError> {
        let u = self.console_url.trim();
        if u.is_empty() {
            return Ok(None);
        }
        crate::notify::http::http_url(u)
            .map_err(|e| ConfigError::Invalid(format!("links.console_url: {e}")))?;
        Ok(Some(u.trim_end_matches('/').to_owned()))
    }

    /// The checked template, or `None` when no links are configured.
    pub fn trace_url(&self) -> Result<Option<crate::core::links::TraceUrl>, ConfigError> {
        if self.trace_url.trim().is_empty() {
            return Ok(None);
        }
        crate::core::links::TraceUrl::parse(&self.trace_url)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("links.trace_url: {e}")))
    }
}
