//! `[tlog]`: the C2SP read side of the ledger (tlog-tiles under `prefix`), the witnesses asked to
//! cosign each checkpoint (tlog-witness) and the policy that says how many must (tlog-policy).

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlogConfig {
    /// Where `serve` mounts the tiles: `<prefix>checkpoint`, `<prefix>tile/…`.
    pub prefix: String,
    /// Entry bundles without the reviewer role (the tree's tiles never need one: only hashes).
    pub public_entries: bool,
    /// A C2SP tlog-policy file naming the witnesses and the quorum; empty: no quorum asked.
    pub policy_file: String,
    /// How long one add-checkpoint request may take.
    #[serde(with = "humantime_serde")]
    pub witness_timeout: Duration,
    pub witnesses: Vec<WitnessConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's submission prefix; `add-checkpoint` is appended.
    pub url: String,
    /// Its cosigner key as a vkey (`<name>+<key id>+<b64(0x04 ‖ ed25519 key)>`).
    pub vkey: String,
}

impl TlogConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("tlog.{m}")));
        let p = &self.prefix;
        if !p.starts_with('/') || !p.ends_with('/') || p.len() < 2 || p.contains("//") {
            return bad("prefix must start and end with '/' and name a path, e.g. \"/tlog/\"");
        }
        if !p[1..p.len() - 1]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        {
            return bad("prefix may hold only letters, digits, '-', '_', '.' and '/'");
        }
        if p.split('/').any(|seg| seg == "." || seg == "..") {
            return bad("prefix must not hold '.' or '..' segments");
        }
        if ["/v1/", "/metrics/", "/console/", "/healthz/", "/readyz/"]
            .iter()
            .any(|taken| p.starts_with(taken))
        {
            return bad("prefix must not sit under a path the API already serves");
        }
        if self.witness_timeout.is_zero() {
            return bad("witness_timeout must be positive");
        }
        // Each witness adds a signature line to the served note, and a note holds at most 100.
        if self.witnesses.len() > 64 {
            return bad("witnesses: at most 64");
        }
        for w in &self.witnesses {
            match reqwest::Url::parse(w.url.trim()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return bad("witnesses: url must be an http:// or https:// URL"),
            }
            if let Err(e) = crate::core::ledger::cosign::CosignerKey::parse(&w.vkey) {
                return Err(ConfigError::Invalid(format!(
                    "tlog.witnesses: vkey {:?}: {e}",
                    w.vkey
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::app::config::Config;

    #[test]
    fn prefixes_are_plain_paths_outside_the_api() {
        let mut c = Config::defaults().tlog;
        assert!(c.validate().is_ok());
        for ok in ["/logs/prod/", "/t/"] {
            c.prefix = ok.into();
            assert!(c.validate().is_ok(), "{ok}");
        }
        for bad in [
            "tlog/",
            "/tlog",
            "/",
            "//",
            "/a//b/",
            "/../",
            "/tlog/../v1/",
            "/./",
            "/v1/tlog/",
            "/console/x/",
            "/t%2e/",
            "/t l/",
        ] {
            c.prefix = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
