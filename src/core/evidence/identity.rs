//! Verified identity: a JWT in a token attribute is checked against trusted issuers — signature
//! (EdDSA, ES256, RS256 keys from the issuer's JWKS), `iss`, `aud`, `exp` (required) and `nbf` at
//! the time of the event (evidence can arrive late), `exp` again against the time the service
//! received it (the event time is the sender's claim: a token that expired long before it arrived
//! proves nothing), and `sub` against the asserted subject. Only the result, the token's SHA-256,
//! its `jti` and the claims that bind it to a change are kept; the token itself never leaves this
//! function.

use crate::core::ledger::hash::Hash;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::sync::{Arc, RwLock};

/// Clock skew tolerated around `exp` and `nbf`.
const LEEWAY_SECS: i64 = 60;

/// What the token rules take from configuration (`[identity]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRules {
    /// A token that had expired longer than this when the service received it proves nothing,
    /// whatever event time its sender states.
    pub max_age_at_receipt_ns: i64,
    /// The claim that binds a token to the change it is for (an approval of CHG-1 says
    /// `"change_id": "CHG-1"`).
    pub change_claim: String,
    /// The claim that binds a token to the artifact it approves.
    pub artifact_claim: String,
}

impl Default for TokenRules {
    /// The shipped defaults (`[identity]` in src/defaults.toml).
    fn default() -> TokenRules {
        TokenRules {
            max_age_at_receipt_ns: 24 * 3600 * 1_000_000_000,
            change_claim: "change_id".into(),
            artifact_claim: "artifact_digest".into(),
        }
    }
}

/// One issuer whose tokens are believed.
#[derive(Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub audience: String,
    pub keys: JwkSet,
    /// The claim that lists the subject's roles (a string or an array of strings).
    pub roles_claim: String,
}

/// How an identity was established.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "established", rename_all = "snake_case")]
pub enum Established {
    /// A token signed by a trusted issuer vouches for the subject.
    Verified {
        issuer: String,
        roles: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_ns: Option<i64>,
        token_sha256: String,
        /// SHA-256 (hex) of what the issuer signed (header and claims): names the token even if
        /// its signature is re-encoded (an ES256 signature has two valid forms).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        signed_sha256: String,
        /// The token's own id (`jti`), when it has one: with the issuer, it names the token even
        /// if its bytes differ.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jti: Option<String>,
        /// The change the token says it is for (the configured change claim).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bound_change: Option<String>,
        /// The artifact the token says it is for (the configured artifact claim).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bound_artifact: Option<String>,
    },
    /// Only a plain attribute or payload field says so; `reason` says why no token verified it.
    Asserted {
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        token_sha256: Option<String>,
    },
}

impl Established {
    pub fn is_verified(&self) -> bool {
        matches!(self, Established::Verified { .. })
    }

    /// The names under which this identity's credential may be seen again: the token's digest
    /// and, for a verified token with a `jti`, the issuer's id for it. Only a verified token
    /// counts: one that did not verify proves nothing, used once or twice.
    pub fn credentials(&self) -> Vec<String> {
        match self {
            Established::Verified {
                issuer,
                token_sha256,
                signed_sha256,
                jti,
                ..
            } => {
                let mut c = vec![if signed_sha256.is_empty() {
                    format!("sha256:{token_sha256}")
                } else {
                    format!("jws:{signed_sha256}")
                }];
                c.extend(jti.as_ref().map(|j| format!("jti:{issuer}#{j}")));
                c
            }
            Established::Asserted { .. } => Vec::new(),
        }
    }
}

/// A principal as the evidence records it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    /// The subject: the token's `sub` when verified, else the asserted one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(flatten)]
    pub established: Established,
}

/// Called with an issuer's name when a token names a key its key set does not hold: the keys
/// may have rotated, and whoever fetches them can look again.
pub type UnknownKeyHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Verifies tokens against the trusted issuers. Clones share the issuers, so keys refreshed from
/// an issuer's discovery document reach every clone at once.
#[derive(Clone, Default)]
pub struct IdentityVerifier {
    issuers: Arc<RwLock<Vec<TrustedIssuer>>>,
    rules: TokenRules,
    unknown_key: Option<UnknownKeyHook>,
}

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let issuers = self.read();
        f.debug_list()
            .entries(issuers.iter().map(|i| &i.issuer))
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct Unverified {
    iss: Option<String>,
}

fn token_sha256(token: &str) -> String {
    Hash::of(&[token.as_bytes()]).to_hex()
}

fn claim_time(claims: &serde_json::Value, name: &str) -> Option<i64> {
    claims
        .get(name)
        .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
}

impl IdentityVerifier {
    pub fn new(issuers: Vec<TrustedIssuer>) -> IdentityVerifier {
        IdentityVerifier {
            issuers: Arc::new(RwLock::new(issuers)),
            rules: TokenRules::default(),
            unknown_key: None,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<TrustedIssuer>> {
        match self.issuers.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Replaces an issuer's key set (fetched again from its JWKS); false if it is not trusted.
    pub fn set_keys(&self, issuer: &str, keys: JwkSet) -> bool {
        let mut all = match self.issuers.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match all.iter_mut().find(|i| i.issuer == issuer) {
            Some(i) => {
                i.keys = keys;
                true
            }
            None => false,
        }
    }

    /// The trusted issuers as they are now.
    pub fn issuers(&self) -> Vec<TrustedIssuer> {
        self.read().clone()
    }

    /// Asks to be told when a token names a key its issuer's set lacks.
    pub fn on_unknown_key(mut self, hook: UnknownKeyHook) -> IdentityVerifier {
        self.unknown_key = Some(hook);
        self
    }

    pub fn with_rules(mut self, rules: TokenRules) -> IdentityVerifier {
        self.rules = rules;
        self
    }

    pub fn rules(&self) -> &TokenRules {
        &self.rules
    }

    /// Establishes who `asserted` (and/or `token`) is, as of `event_ns` (the sender's claim),
    /// for a token the service received at `received_ns` (its own clock).
    pub fn establish(
        &self,
        asserted: Option<&str>,
        token: Option<&str>,
        event_ns: i64,
        received_ns: i64,
    ) -> Principal {
        let asserted = asserted.map(str::trim).filter(|s| !s.is_empty());
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Principal {
                subject: asserted.map(str::to_owned),
                established: Established::Asserted {
                    reason: "no token".into(),
                    token_sha256: None,
                },
            };
        };
        match self.verify(token, asserted, event_ns, received_ns) {
            Ok((sub, v)) => Principal {
                subject: Some(sub),
                established: v,
            },
            Err(reason) => Principal {
                subject: asserted.map(str::to_owned),
                established: Established::Asserted {
                    reason,
                    token_sha256: Some(token_sha256(token)),
                },
            },
        }
    }

    /// The token's subject and what establishes it, or why it does not verify.
    fn verify(
        &self,
        token: &str,
        asserted: Option<&str>,
        event_ns: i64,
        received_ns: i64,
    ) -> Result<(String, Established), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        let payload = token.split('.').nth(1).ok_or("not a JWT: no payload")?;
        let unverified: Unverified = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or("not a JWT: unreadable claims")?;
        let iss = unverified.iss.ok_or("token has no iss claim")?;
        let issuers = self.read();
        let issuer = issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| format!("issuer {iss:?} is not trusted"))?;
        if !matches!(
            header.alg,
            Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256
        ) {
            return Err(format!(
                "algorithm {:?} is not accepted (EdDSA, ES256, RS256)",
                header.alg
            ));
        }
        let jwk = match &header.kid {
            Some(kid) => match issuer.keys.find(kid) {
                Some(k) => k,
                None => {
                    if let Some(hook) = &self.unknown_key {
                        hook(&issuer.issuer);
                    }
                    return Err(format!("key {kid:?} is not in the issuer's JWKS"));
                }
            },
            None if issuer.keys.keys.len() == 1 => &issuer.keys.keys[0],
            None if issuer.keys.keys.is_empty() => {
                return Err("the issuer's keys are not loaded (yet)".into());
            }
            None => return Err("token names no key (kid) and the issuer has several".into()),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("issuer key unusable: {e}"))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&issuer.issuer]);
        v.set_audience(&[&issuer.audience]);
        // Time is judged at the event, not now: evidence may arrive long after.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims = ["iss", "aud", "sub"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &v).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature".to_owned(),
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => "wrong audience".to_owned(),
                    jsonwebtoken::errors::ErrorKind::InvalidIssuer => "wrong issuer".to_owned(),
                    _ => format!("token rejected: {e}"),
                }
            })?;
        let claims = data.claims;
        let event_s = event_ns.div_euclid(1_000_000_000);
        // A token without an expiry would vouch forever, for anyone who ever saw it.
        let exp = claim_time(&claims, "exp").ok_or("token has no exp claim")?;
        if event_s > exp + LEEWAY_SECS {
            return Err(format!(
                "token had expired at the time of the event ({} s before it)",
                event_s - exp
            ));
        }
        // The event time is the sender's claim; the receipt is the service's own clock.
        let received_s = received_ns.div_euclid(1_000_000_000);
        let max_age_s = self.rules.max_age_at_receipt_ns.div_euclid(1_000_000_000);
        if received_s.saturating_sub(exp) > max_age_s.saturating_add(LEEWAY_SECS) {
            return Err(format!(
                "token had expired {} before it was received (at most {} is accepted)",
                super::rules::human_duration((received_s - exp).saturating_mul(1_000_000_000)),
                super::rules::human_duration(self.rules.max_age_at_receipt_ns)
            ));
        }
        if let Some(nbf) = claim_time(&claims, "nbf")
            && event_s + LEEWAY_SECS < nbf
        {
            return Err("token was not yet valid at the time of the event".into());
        }
        let sub = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .ok_or("token has no sub claim")?
            .to_owned();
        if let Some(a) = asserted
            && a != sub
        {
            return Err(format!(
                "token subject {sub:?} does not match the asserted {a:?}"
            ));
        }
        let roles = match claims.get(&issuer.roles_claim) {
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        let claim = |name: &str| {
            claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok((
            sub,
            Established::Verified {
                issuer: issuer.issuer.clone(),
                roles,
                expires_ns: Some(exp.saturating_mul(1_000_000_000)),
                token_sha256: token_sha256(token),
                signed_sha256: token
                    .rsplit_once('.')
                    .map(|(signed, _)| token_sha256(signed))
                    .unwrap_or_default(),
                jti: claim("jti"),
                bound_change: claim(&self.rules.change_claim),
                bound_artifact: claim(&self.rules.artifact_claim),
            },
        ))
    }
}
