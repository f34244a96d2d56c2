//! The demo's identity provider: a fresh Ed25519 key, its JWKS, and the JWTs (EdDSA) the demo's
//! people and services carry, so their identities verify the way a real IdP's would.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};

pub const ISSUER: &str = "https://idp.demo.changetrail.local";
pub const AUDIENCE: &str = "changetrail";
const KID: &str = "demo-1";

pub struct DemoIdp {
    key: SigningKey,
}

impl DemoIdp {
    /// A new key from the operating system's randomness.
    pub fn generate() -> anyhow::Result<DemoIdp> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(DemoIdp {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The issuer's public key set, as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
            "kid": KID,
            "alg": "EdDSA",
            "use": "sig",
        }]})
    }

    /// A token for `sub` with `roles`, valid for an hour around `at_ns` (the event it rides on).
    pub fn token(&self, sub: &str, roles: &[&str], at_ns: i64) -> String {
        let at = at_ns / 1_000_000_000;
        let header = serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": KID});
        let claims = serde_json::json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": roles,
            "iat": at - 600, "nbf": at - 600, "exp": at + 3000,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::evidence::identity::{Established, IdentityVerifier, TrustedIssuer};

    #[test]
    fn its_tokens_verify_against_its_jwks_and_no_other() {
        let idp = DemoIdp::generate().unwrap();
        let issuer = |idp: &DemoIdp| TrustedIssuer {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            keys: serde_json::from_value(idp.jwks()).unwrap(),
            roles_claim: "roles".into(),
        };
        let at = 1_767_261_600_000_000_000i64;
        let token = idp.token("alice@example.com", &["engineer"], at);
        let ours = IdentityVerifier::new(vec![issuer(&idp)]);
        let other = IdentityVerifier::new(vec![issuer(&DemoIdp::generate().unwrap())]);
        let p = ours.establish(Some("alice@example.com"), Some(&token), at, at);
        assert_eq!(p.subject.as_deref(), Some("alice@example.com"));
        match &p.established {
            Established::Verified { issuer, roles, .. } => {
                assert_eq!(issuer, ISSUER);
                assert_eq!(roles, &vec!["engineer".to_string()]);
            }
            other => panic!("not verified: {other:?}"),
        }
        let verified = |v: &IdentityVerifier, at: i64| {
            v.establish(Some("alice@example.com"), Some(&token), at, at)
                .established
                .is_verified()
        };
        assert!(!verified(&other, at), "another issuer's key");
        // Outside its hour it is expired.
        assert!(!verified(&ours, at + 7_200_000_000_000));
    }
}
