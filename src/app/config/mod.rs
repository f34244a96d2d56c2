//! Layered configuration: embedded defaults → `changetrail.toml` (or `--config`) → `CHANGETRAIL_*`
//! environment → command-line flags.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod conductor;
mod outbound;
mod suspects;
mod tlog;
pub use conductor::ConductorConfig;
pub use outbound::{
    AlertsConfig, AlertsOtlpConfig, AnnotationsConfig, LinksConfig, OtlpExportConfig, WebhookConfig,
};
pub use suspects::SuspectsConfig;
pub use tlog::{TlogConfig, WitnessConfig};

pub const DEFAULTS: &str = include_str!("../defaults.toml");

/// The top-level settings an environment variable may address.
const SECTIONS: [&str; 17] = [
    "database_url",
    "conductor",
    "tlog",
    "suspects",
    "alerts",
    "annotations",
    "links",
    "evidence",
    "ledger",
    "http",
    "otlp",
    "correlation",
    "identity",
    "tls",
    "storage",
    "reports",
    "listeners",
];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub database_url: String,
    pub ledger: LedgerConfig,
    pub http: HttpConfig,
    pub otlp: OtlpConfig,
    pub correlation: CorrelationConfig,
    pub evidence: EvidenceConfig,
    pub identity: IdentityConfig,
    pub tls: TlsConfig,
    pub storage: StorageConfig,
    pub reports: ReportsConfig,
    pub listeners: ListenersConfig,
    pub links: LinksConfig,
    pub annotations: AnnotationsConfig,
    pub alerts: AlertsConfig,
    pub suspects: SuspectsConfig,
    pub conductor: ConductorConfig,
    pub tlog: TlogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    pub production_environments: Vec<String>,
    pub deploy_task_types: Vec<String>,
    pub approval_task_types: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub version_match_tolerance: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    #[serde(with = "humantime_serde")]
    pub receipt_tolerance: Duration,
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    #[serde(with = "humantime_serde")]
    pub max_lateness: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReportsConfig {
    pub approver_roles: Vec<String>,
    pub approvers: Vec<crate::core::evidence::rules::ApproverRule>,
    #[serde(with = "humantime_serde")]
    pub emergency_review_window: Duration,
    pub catalogue_file: PathBuf,
    /// How often `serve` brings the change summary up to the chain (0: only when the list is
    /// asked for).
    #[serde(with = "humantime_serde")]
    pub summary_refresh: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(with = "humantime_serde")]
    pub max_token_age_at_receipt: Duration,
    pub change_claim: String,
    pub artifact_claim: String,
    pub require_bound_approvals: bool,
    pub issuers: Vec<IssuerConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub issuer: String,
    pub audience: String,
    /// The issuer's keys from a file (give this or `discovery_url`).
    #[serde(default)]
    pub jwks_file: PathBuf,
    /// The issuer's OpenID Connect discovery document (`…/.well-known/openid-configuration`,
    /// or the issuer's URL it hangs off): its `jwks_uri` is fetched, cached and refreshed.
    #[serde(default)]
    pub discovery_url: String,
    /// How often keys from `discovery_url` are fetched again (and at once when a token names a
    /// key the set lacks, at most once a minute).
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
}

fn default_roles_claim() -> String {
    "roles".into()
}

fn default_refresh() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub max_request_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    #[serde(with = "humantime_serde")]
    pub late_binding_window: Duration,
    pub max_parked_bytes: usize,
    pub max_bound_traces: usize,
    /// Where parked spans are journaled before their export is answered (empty: memory only).
    pub journal_dir: PathBuf,
    pub journal_max_bytes: u64,
    /// How often this instance looks for traces bound by evidence committed elsewhere.
    #[serde(with = "humantime_serde")]
    pub binding_sync_interval: Duration,
    pub redact_attributes: Vec<String>,
    pub max_inflight_bytes: usize,
    pub max_inflight_bytes_per_token: usize,
    pub max_stored_bytes_per_second_per_token: usize,
    pub limits: crate::ingest::limits::Limits,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    pub origin: String,
    pub key_file: PathBuf,
    pub signing_key: Secret,
    pub checkpoint_every: u64,
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    pub queue_capacity: usize,
    pub batch_max_entries: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub sqlite_synchronous: SqliteSynchronous,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Full,
    Normal,
}

/// A secret string: never printed by `Debug` or serialised back out.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_empty() {
            "(unset)"
        } else {
            "(redacted)"
        })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.is_empty() { "" } else { "(redacted)" })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Config {
    /// Loads the layers. `file` is `--config`; without it `changetrail.toml` is read if present.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULTS));
        match file {
            Some(f) if !f.exists() => return Err(ConfigError::Missing(f.to_owned())),
            Some(f) => fig = fig.merge(Toml::file(f)),
            None => fig = fig.merge(Toml::file("changetrail.toml")),
        }
        // Only variables that name a setting: other CHANGETRAIL_* variables (a benchmark's token,
        // a test's interpreter) are not configuration and must not fail the start.
        let env = Env::prefixed("CHANGETRAIL_").split("__").filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            SECTIONS.iter().any(|s| {
                k == *s || k.starts_with(&format!("{s}.")) || k.starts_with(&format!("{s}__"))
            })
        });
        fig = fig.merge(env);
        let cfg: Config = fig
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The built-in defaults alone (tests and benchmarks start from these).
    pub fn defaults() -> Config {
        Figment::from(Toml::string(DEFAULTS))
            .extract()
            .unwrap_or_else(|e| panic!("embedded defaults.toml is invalid: {e}"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.links.trace_url()?;
        self.links.console_url()?;
        self.alerts.validate()?;
        self.suspects.validate()?;
        self.conductor.validate()?;
        self.tlog.validate()?;
        self.annotations.validate()?;
        let l = &self.ledger;
        if l.checkpoint_every == 0 {
            return Err(ConfigError::Invalid(
                "ledger.checkpoint_every must be at least 1".into(),
            ));
        }
        if l.queue_capacity == 0 || l.batch_max_entries == 0 {
            return Err(ConfigError::Invalid(
                "ledger.queue_capacity and ledger.batch_max_entries must be at least 1".into(),
            ));
        }
        if l.checkpoint_interval.is_zero() || l.heartbeat_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "ledger.checkpoint_interval and ledger.heartbeat_interval must be positive".into(),
            ));
        }
        if self.otlp.binding_sync_interval.is_zero() {
            return Err(ConfigError::Invalid(
                "otlp.binding_sync_interval must be positive".into(),
            ));
        }
        if !self.otlp.journal_dir.as_os_str().is_empty() && self.otlp.journal_max_bytes < 8 << 20 {
            return Err(ConfigError::Invalid(
                "otlp.journal_max_bytes must be at least 8 MiB (8388608)".into(),
            ));
        }
        if self.otlp.max_request_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "otlp.max_request_bytes must be at least 1024".into(),
            ));
        }
        let t = &self.tls;
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        if set(&t.cert_file) != set(&t.key_file) || (set(&t.client_ca_file) && !set(&t.cert_file)) {
            return Err(ConfigError::Invalid(
                "tls: cert_file and key_file go together, and client_ca_file needs both".into(),
            ));
        }
        let i = &self.identity;
        for issuer in &i.issuers {
            let (file, url) = (
                !issuer.jwks_file.as_os_str().is_empty(),
                !issuer.discovery_url.is_empty(),
            );
            if file == url {
                return Err(ConfigError::Invalid(format!(
                    "identity.issuers ({}): give exactly one of jwks_file and discovery_url",
                    issuer.issuer
                )));
            }
            if url && let Err(e) = crate::ingest::issuers::check_url(&issuer.discovery_url) {
                return Err(ConfigError::Invalid(format!(
                    "identity.issuers ({}): discovery_url {e}",
                    issuer.issuer
                )));
            }
            if issuer.refresh_interval < Duration::from_secs(60) {
                return Err(ConfigError::Invalid(format!(
                    "identity.issuers ({}): refresh_interval must be at least 1m",
                    issuer.issuer
                )));
            }
        }
        if i.change_claim.trim().is_empty() || i.artifact_claim.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "identity.change_claim and identity.artifact_claim must name a claim".into(),
            ));
        }
        for r in &self.reports.approvers {
            if r.service.trim().is_empty() || r.roles.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "reports.approvers: a rule needs a service pattern and at least one role \
                     (service = {:?}, roles = {:?})",
                    r.service, r.roles
                )));
            }
        }
        if !l.origin.is_empty() {
            crate::core::ledger::keys::Origin::parse(&l.origin)
                .map_err(|e| ConfigError::Invalid(format!("ledger.origin: {e}")))?;
        }
        self.listeners.validate()?;
        Ok(())
    }

    pub fn storage_options(&self) -> crate::storage::StorageOptions {
        crate::storage::StorageOptions {
            sqlite_synchronous_full: self.storage.sqlite_synchronous == SqliteSynchronous::Full,
            max_connections: self.storage.max_connections.max(2),
            lock_timeout: self.storage.lock_timeout,
        }
    }

    pub fn policy(&self) -> crate::core::evidence::Policy {
        let c = &self.correlation;
        crate::core::evidence::Policy {
            production_environments: c.production_environments.clone(),
            deploy_task_types: c.deploy_task_types.clone(),
            approval_task_types: c.approval_task_types.clone(),
        }
    }

    /// The SOC 2 report's settings: the catalogue (the shipped one unless `reports.catalogue_file`
    /// or `catalogue` names another) and the rules' configuration.
    pub fn report_settings(
        &self,
        catalogue: Option<&Path>,
    ) -> anyhow::Result<crate::report::Settings> {
        use anyhow::Context;
        let file = catalogue.map(Path::to_path_buf).or_else(|| {
            (!self.reports.catalogue_file.as_os_str().is_empty())
                .then(|| self.reports.catalogue_file.clone())
        });
        let text = match &file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the control catalogue {}", f.display()))?,
            None => crate::core::evidence::report::SOC2_CATALOGUE.to_owned(),
        };
        Ok(crate::report::Settings::new(
            self.policy(),
            nanos(self.correlation.version_match_tolerance),
            self.rules(),
            self.judging(),
            &text,
        )?)
    }

    /// How the console and the API fold and judge changes (as the report does).
    pub fn criteria(&self) -> crate::read::changes::Criteria {
        crate::read::changes::Criteria {
            policy: self.policy(),
            rules: self.rules(),
            judging: self.judging(),
            tolerance_ns: nanos(self.correlation.version_match_tolerance),
        }
    }

    /// The exception rules' settings.
    pub fn rules(&self) -> crate::core::evidence::rules::RuleContext {
        crate::core::evidence::rules::RuleContext {
            approver_roles: self.reports.approver_roles.clone(),
            approvers: self.reports.approvers.clone(),
            emergency_review_window_ns: nanos(self.reports.emergency_review_window),
            regressions_compared: self.suspects.enabled,
        }
    }

    /// How changes are judged against receipts, lateness and bound tokens.
    pub fn judging(&self) -> crate::core::evidence::Settings {
        crate::core::evidence::Settings {
            receipt_tolerance_ns: nanos(self.evidence.receipt_tolerance),
            max_lateness_ns: nanos(self.evidence.max_lateness),
            require_bound_approvals: self.identity.require_bound_approvals,
        }
    }

    /// The token rules of `[identity]`.
    pub fn token_rules(&self) -> crate::core::evidence::identity::TokenRules {
        let i = &self.identity;
        crate::core::evidence::identity::TokenRules {
            max_age_at_receipt_ns: nanos(i.max_token_age_at_receipt),
            change_claim: i.change_claim.clone(),
            artifact_claim: i.artifact_claim.clone(),
        }
    }

    /// Where each trusted issuer's keys come from, for the refresher.
    pub fn key_sources(&self) -> Vec<crate::ingest::issuers::KeySource> {
        use crate::ingest::issuers::KeySource;
        self.identity
            .issuers
            .iter()
            .map(|i| {
                if i.discovery_url.is_empty() {
                    KeySource::File {
                        issuer: i.issuer.clone(),
                        path: i.jwks_file.display().to_string(),
                    }
                } else {
                    KeySource::Discovery {
                        issuer: i.issuer.clone(),
                        url: i.discovery_url.clone(),
                        refresh: i.refresh_interval,
                    }
                }
            })
            .collect()
    }

    /// The trusted issuers, their JWKS files read now.
    pub fn identity_verifier(
        &self,
    ) -> anyhow::Result<crate::core::evidence::identity::IdentityVerifier> {
        use anyhow::Context;
        let mut issuers = Vec::new();
        for i in &self.identity.issuers {
            if !i.discovery_url.is_empty() {
                // Fetched at start and refreshed (`ingest::issuers`); no key until then.
                issuers.push(crate::core::evidence::identity::TrustedIssuer {
                    issuer: i.issuer.clone(),
                    audience: i.audience.clone(),
                    keys: jsonwebtoken::jwk::JwkSet { keys: Vec::new() },
                    roles_claim: i.roles_claim.clone(),
                });
                continue;
            }
            let text = std::fs::read_to_string(&i.jwks_file).with_context(|| {
                format!(
                    "cannot read the JWKS of {} at {}",
                    i.issuer,
                    i.jwks_file.display()
                )
            })?;
            let keys = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a JWKS (JSON Web Key Set)", i.jwks_file.display())
            })?;
            issuers.push(crate::core::evidence::identity::TrustedIssuer {
                issuer: i.issuer.clone(),
                audience: i.audience.clone(),
                keys,
                roles_claim: i.roles_claim.clone(),
            });
        }
        Ok(
            crate::core::evidence::identity::IdentityVerifier::new(issuers)
                .with_rules(self.token_rules()),
        )
    }

    pub fn ingest(&self) -> anyhow::Result<crate::ingest::IngestConfig> {
        let o = &self.otlp;
        Ok(crate::ingest::IngestConfig {
            max_request_bytes: o.max_request_bytes,
            retry_after: o.retry_after,
            late_binding_window: o.late_binding_window,
            max_parked_bytes: o.max_parked_bytes,
            max_bound_traces: o.max_bound_traces,
            redact: o.redact_attributes.clone(),
            max_inflight_bytes: o.max_inflight_bytes,
            max_inflight_bytes_per_token: o.max_inflight_bytes_per_token,
            max_stored_bytes_per_second_per_token: o.max_stored_bytes_per_second_per_token,
            limits: o.limits.clone(),
            policy: self.policy(),
            identity: self.identity_verifier()?,
            max_versions_remembered: 10_000,
            max_clock_skew_ns: nanos(self.evidence.max_clock_skew),
            version_window_ns: nanos(self.correlation.version_match_tolerance),
            runtime: crate::ingest::runtime::Settings {
                enabled: self.suspects.enabled,
                max_age_ns: nanos(self.suspects.max_age),
                max_cells: self.suspects.max_cells,
                flush_after_ns: nanos(self.suspects.flush_after),
            },
        })
    }

    /// The TLS server configuration, when TLS is configured.
    pub fn tls(
        &self,
    ) -> anyhow::Result<Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>> {
        let t = &self.tls;
        if t.cert_file.as_os_str().is_empty() {
            return Ok(None);
        }
        let ca = (!t.client_ca_file.as_os_str().is_empty()).then_some(t.client_ca_file.as_path());
        crate::app::serve::tls_config(&t.cert_file, &t.key_file, ca).map(Some)
    }

    pub fn sequencer(&self) -> crate::pipeline::SequencerConfig {
        crate::pipeline::SequencerConfig {
            queue_capacity: self.ledger.queue_capacity,
            batch_max_entries: self.ledger.batch_max_entries,
            checkpoint_interval: self.ledger.checkpoint_interval,
            heartbeat_interval: self.ledger.heartbeat_interval,
            tick: Duration::from_secs(1).min(self.ledger.checkpoint_interval),
        }
    }
}

/// What every listener (REST, OTLP gRPC, OTLP HTTP) allows a client, so slow, idle or too many
/// clients cannot starve the rest (`[listeners]`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenersConfig {
    pub max_connections: usize,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub api_request_timeout: Duration,
    pub min_body_rate: u64,
    #[serde(with = "humantime_serde")]
    pub body_rate_grace: Duration,
    pub http2_max_concurrent_streams: u32,
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
}

impl ListenersConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("listeners.{m}")));
        if self.max_connections == 0 || self.http2_max_concurrent_streams == 0 {
            return invalid("max_connections and http2_max_concurrent_streams must be at least 1");
        }
        for (name, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("request_timeout", self.request_timeout),
            ("api_request_timeout", self.api_request_timeout),
            ("body_rate_grace", self.body_rate_grace),
            ("http2_keepalive_interval", self.http2_keepalive_interval),
            ("http2_keepalive_timeout", self.http2_keepalive_timeout),
        ] {
            // Zero would close every connection at once rather than switch the limit off.
            if d.is_zero() {
                return invalid(&format!("{name} must be positive"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_secret_does_not_print() {
        let mut c = Config::defaults();
        assert_eq!(c.ledger.checkpoint_every, 1000);
        c.ledger.signing_key = Secret("PRIVATE+KEY+x".into());
        let shown = format!("{c:?} {}", toml_like(&c));
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }

    #[test]
    fn the_default_rules_are_the_shipped_ones() {
        let c = Config::defaults();
        let shipped = c.report_settings(None).unwrap();
        assert_eq!(
            shipped.rules,
            crate::core::evidence::rules::RuleContext::default()
        );
        assert_eq!(shipped.judging, crate::core::evidence::Settings::default());
        assert_eq!(
            c.token_rules(),
            crate::core::evidence::identity::TokenRules::default()
        );
        assert_eq!(
            c.suspects.thresholds(),
            crate::core::runtime::Thresholds::default()
        );
        let s = c.ingest().unwrap().runtime;
        let lib = crate::ingest::runtime::Settings::default();
        assert_eq!(
            (s.max_age_ns, s.max_cells, s.flush_after_ns),
            (lib.max_age_ns, lib.max_cells, lib.flush_after_ns)
        );
    }

    #[test]
    fn listener_limits_default_as_a_proxy_would_and_zero_is_refused() {
        let c = Config::defaults();
        let l = &c.listeners;
        assert_eq!(l.max_connections, 4096);
        assert_eq!(l.header_read_timeout, Duration::from_secs(10));
        assert_eq!(l.idle_timeout, Duration::from_secs(60));
        assert_eq!(l.request_timeout, Duration::from_secs(60));
        assert_eq!(l.api_request_timeout, Duration::from_secs(300));
        assert_eq!(
            (l.min_body_rate, l.body_rate_grace),
            (1024, Duration::from_secs(5))
        );
        assert_eq!(l.http2_max_concurrent_streams, 100);
        assert_eq!(l.http2_keepalive_interval, Duration::from_secs(30));
        assert_eq!(l.http2_keepalive_timeout, Duration::from_secs(10));
        c.validate().unwrap();
        let mut zero = c.clone();
        zero.listeners.idle_timeout = Duration::ZERO;
        let e = zero.validate().unwrap_err().to_string();
        assert!(e.contains("listeners.idle_timeout"), "{e}");
        let mut zero = c;
        zero.listeners.max_connections = 0;
        assert!(zero.validate().is_err());
    }

    #[test]
    fn a_trace_url_is_checked_when_the_configuration_loads() {
        let mut c = Config::defaults();
        assert_eq!(c.links.trace_url().unwrap(), None, "no links by default");
        c.links.trace_url = "https://jaeger.example/trace/{trace_id}".into();
        c.validate().unwrap();
        c.links.trace_url = "javascript:alert(1)//{trace_id}".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("links.trace_url"), "{e}");
    }

    fn toml_like(c: &Config) -> String {
        serde_json::to_string(c).unwrap()
    }
}
