//! The ingest contract's pure rules (src/ingest/CONVENTIONS.md): which attributes make telemetry
//! audit evidence, which carry secrets, and how a kept span or log record is named in the ledger.

use crate::core::ledger::hash::Hash;

/// Attribute-name prefixes that make a span or log record audit evidence.
pub const CONTRACT_PREFIXES: [&str; 2] = ["cicd.", "changetrail."];

/// Namespaces of every attribute the correlation rules read (`evidence::spans`): only these
/// are copied out of a span and its resource for the rules, so an item's other attributes (up to
/// the limits, possibly megabytes) are never copied per item.
pub const RULE_PREFIXES: [&str; 7] = [
    "changetrail.",
    "cicd.",
    "deployment.",
    "artifact.",
    "vcs.",
    "event.",
    "service.",
];

/// Whether the correlation rules may read this attribute.
pub fn is_rule_key(key: &str) -> bool {
    RULE_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Attributes whose value names the change (the ledger entry's subject), strongest first.
pub const SUBJECT_KEYS: [&str; 2] = ["changetrail.change.id", "cicd.pipeline.run.id"];

/// Log records with this `event.name` are approvals even without other contract attributes.
pub const APPROVAL_EVENT: &str = "changetrail.approval";

/// Default secret-bearing attribute names: matched case-insensitively as whole names, or as a
/// substring when written `*like-this*`.
pub const DEFAULT_REDACTIONS: [&str; 12] = [
    "authorization",
    "http.request.header.authorization",
    "http.request.header.cookie",
    "http.response.header.set-cookie",
    "cookie",
    "*password*",
    "*passwd*",
    "*secret*",
    "*token*",
    "*api_key*",
    "*apikey*",
    "*private_key*",
];

pub fn is_contract_key(key: &str) -> bool {
    CONTRACT_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// How a kept span came to be kept (and later, bound to a change).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepRule {
    /// It carries a contract attribute itself.
    Attribute,
    /// It links to a span of a bound trace.
    Link,
    /// It shares its trace with a bound span.
    Trace,
}

impl KeepRule {
    pub fn as_str(self) -> &'static str {
        match self {
            KeepRule::Attribute => "attribute",
            KeepRule::Link => "link",
            KeepRule::Trace => "trace",
        }
    }
}

/// Which attribute names never reach storage.
#[derive(Debug, Clone)]
pub struct Redactor {
    exact: Vec<String>,
    contains: Vec<String>,
}

/// What to store instead of a secret attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redaction {
    /// Keep the value.
    Keep,
    /// Replace with a fixed marker (passwords and the like: even a hash could be guessed back).
    Drop,
    /// Replace a high-entropy credential (a JWT) by its SHA-256, so evidence can still refer to
    /// the exact token without holding it.
    Digest,
}

pub const REDACTED: &str = "[redacted]";

impl Redactor {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Redactor {
        let mut exact = Vec::new();
        let mut contains = Vec::new();
        for p in patterns {
            let p = p.as_ref().trim().to_ascii_lowercase();
            match p.strip_prefix('*').and_then(|p| p.strip_suffix('*')) {
                Some(inner) if !inner.is_empty() => contains.push(inner.to_owned()),
                _ if !p.is_empty() => exact.push(p),
                _ => {}
            }
        }
        Redactor { exact, contains }
    }

    pub fn rule(&self, key: &str) -> Redaction {
        let k = key.to_ascii_lowercase();
        let secret =
            self.exact.contains(&k) || self.contains.iter().any(|c| k.contains(c.as_str()));
        if !secret {
            Redaction::Keep
        } else if k.starts_with("changetrail.") && k.ends_with(".token") {
            Redaction::Digest
        } else {
            Redaction::Drop
        }
    }
}

impl Default for Redactor {
    fn default() -> Redactor {
        Redactor::new(&DEFAULT_REDACTIONS)
    }
}

/// `sha256:<hex>` of a credential, the only form in which one is ever stored.
pub fn credential_digest(value: &str) -> String {
    format!("sha256:{}", Hash::of(&[value.as_bytes()]).to_hex())
}

/// The digest a ledger entry records for a stored span or log record: over the exact bytes stored.
pub fn telemetry_digest(kind: &[u8], bytes: &[u8]) -> Hash {
    Hash::of(&[b"changetrail/", kind, b"/v1\n", bytes])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_keys() {
        assert!(is_contract_key("cicd.pipeline.run.id"));
        assert!(is_contract_key("changetrail.change.id"));
        assert!(!is_contract_key("http.method"));
        assert!(!is_contract_key("cicdx"));
    }

    #[test]
    fn redaction_rules() {
        let r = Redactor::default();
        assert_eq!(r.rule("Authorization"), Redaction::Drop);
        assert_eq!(r.rule("db.password"), Redaction::Drop);
        assert_eq!(r.rule("x.API_KEY.y"), Redaction::Drop);
        assert_eq!(r.rule("changetrail.approval.token"), Redaction::Digest);
        assert_eq!(r.rule("changetrail.identity.token"), Redaction::Digest);
        assert_eq!(r.rule("http.method"), Redaction::Keep);
        assert_eq!(r.rule("changetrail.change.id"), Redaction::Keep);
        let custom = Redactor::new(&["approvedBy", "*ssn*"]);
        assert_eq!(custom.rule("approvedby"), Redaction::Drop);
        assert_eq!(custom.rule("user.ssn.last4"), Redaction::Drop);
        assert_eq!(custom.rule("password"), Redaction::Keep);
        assert_ne!(credential_digest("a"), credential_digest("b"));
    }
}
