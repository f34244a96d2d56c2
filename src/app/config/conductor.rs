//! `[conductor]`: the Conductor server changetrail reconciles with (off while `url` is empty).

use super::{ConfigError, Secret};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConductorConfig {
    pub url: String,
    pub key_id: String,
    pub key_secret: Secret,
    pub workflow_names: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    pub page_size: u32,
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub attempts: u32,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    pub recheck_per_round: u32,
    #[serde(with = "humantime_serde")]
    pub recheck_window: Duration,
    #[serde(with = "humantime_serde")]
    pub index_lag: Duration,
}

impl ConductorConfig {
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let bad = |m: &str| Err(ConfigError::Invalid(format!("conductor.{m}")));
        match reqwest::Url::parse(self.url.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            // Not the URL itself: it may carry a credential.
            _ => return bad("url must be an http:// or https:// URL"),
        }
        if self.key_id.trim().is_empty() != self.key_secret.is_empty() {
            return bad("key_id and key_secret go together (both for Orkes, neither for OSS)");
        }
        if self.poll_interval.is_zero() || self.timeout.is_zero() {
            return bad("poll_interval and timeout must be positive");
        }
        if self.page_size == 0 || self.page_size > 1000 || self.attempts == 0 {
            return bad("page_size must be 1 to 1000 and attempts at least 1");
        }
        Ok(())
    }

    /// The reconciler's settings.
    pub fn settings(&self) -> crate::conductor::Settings {
        crate::conductor::Settings {
            client: crate::conductor::ClientSettings {
                url: self.url.trim().to_owned(),
                key_id: self.key_id.trim().to_owned(),
                key_secret: crate::conductor::KeySecret::new(self.key_secret.expose()),
                timeout: self.timeout,
                attempts: self.attempts,
                min_backoff: Duration::from_millis(200).min(self.max_backoff),
                max_backoff: self.max_backoff,
            },
            workflow_names: self.workflow_names.clone(),
            poll_interval: self.poll_interval,
            page_size: self.page_size,
            lookback: self.lookback,
            recheck_per_round: self.recheck_per_round,
            recheck_window: self.recheck_window,
            index_lag: self.index_lag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_checked_when_on() {
        let c = crate::app::config::Config::defaults().conductor;
        assert!(!c.enabled());
        c.validate().unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(60));
        let mut on = c.clone();
        on.url = "http://conductor:8080".into();
        on.validate().unwrap();
        on.key_id = "key".into();
        let e = on.validate().unwrap_err().to_string();
        assert!(e.contains("key_id and key_secret go together"), "{e}");
        on.key_secret = Secret("orkes-secret-4242".into());
        on.validate().unwrap();
        let shown = format!("{on:?} {}", serde_json::to_string(&on).unwrap());
        assert!(!shown.contains("orkes-secret-4242"), "{shown}");
        let s = on.settings();
        assert!(!format!("{s:?}").contains("orkes-secret-4242"));
        let mut bad = on.clone();
        bad.url = "ftp://user:pw@conductor".into();
        let e = bad.validate().unwrap_err().to_string();
        assert!(!e.contains("pw"), "{e}");
        bad.url = "http://conductor".into();
        bad.page_size = 0;
        assert!(bad.validate().is_err());
    }
}
