//! A test identity provider: fixed EdDSA, ES256 and RS256 keys (tests/it/fixtures/idp, made with
//! openssl) and their JWKS, for minting the tokens the scenarios carry.

use changetrail::core::evidence::identity::{Established, IdentityVerifier, TrustedIssuer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub const ISSUER: &str = "https://idp.example.com";
pub const AUDIENCE: &str = "changetrail";
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/idp");

/// The issuer's public keys (JWKS), as the configuration names them.
pub fn jwks_path() -> String {
    format!("{DIR}/jwks.json")
}

/// The issuer, trusted with its keys read from `jwks_path`.
pub fn issuer() -> TrustedIssuer {
    TrustedIssuer {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        keys: serde_json::from_str(&std::fs::read_to_string(jwks_path()).unwrap()).unwrap(),
        roles_claim: "roles".into(),
    }
}

/// A verifier trusting `issuer` alone.
pub fn verifier() -> IdentityVerifier {
    IdentityVerifier::new(vec![issuer()])
}

fn key(alg: Algorithm) -> (EncodingKey, &'static str) {
    let read = |f: &str| std::fs::read(format!("{DIR}/{f}")).unwrap();
    match alg {
        Algorithm::EdDSA => (
            EncodingKey::from_ed_pem(&read("ed25519.pem")).unwrap(),
            "ed-1",
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(&read("es256.pem")).unwrap(),
            "es-1",
        ),
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(&read("rs256.pem")).unwrap(),
            "rs-1",
        ),
        other => panic!("no test key for {other:?}"),
    }
}

/// A token for `sub` valid from `iat` to `exp` (seconds since the epoch).
pub fn token_with(
    alg: Algorithm,
    iss: &str,
    aud: &str,
    sub: &str,
    roles: &[&str],
    iat: i64,
    exp: i64,
) -> String {
    let (k, kid) = key(alg);
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let claims = serde_json::json!({ "iss": iss, "aud": aud, "sub": sub, "roles": roles, "iat": iat, "nbf": iat, "exp": exp });
    jsonwebtoken::encode(&h, &claims, &k).unwrap()
}

/// A token with exactly these claims, signed by the issuer's EdDSA key.
pub fn token_claims(claims: &serde_json::Value) -> String {
    let (k, kid) = key(Algorithm::EdDSA);
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, claims, &k).unwrap()
}

/// A token valid for an hour around `at_ns` (so it verifies at that event time).
pub fn token(sub: &str, roles: &[&str], at_ns: i64) -> String {
    let at = at_ns / 1_000_000_000;
    token_with(
        Algorithm::EdDSA,
        ISSUER,
        AUDIENCE,
        sub,
        roles,
        at - 600,
        at + 3000,
    )
}

/// A token signed by a key the issuer never published, but naming its key id.
pub fn forged(sub: &str, at_ns: i64) -> String {
    let at = at_ns / 1_000_000_000;
    let k = EncodingKey::from_ed_pem(&std::fs::read(format!("{DIR}/other-ed25519.pem")).unwrap())
        .unwrap();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some("ed-1".into());
    let claims = serde_json::json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": at - 600, "nbf": at - 600, "exp": at + 3000 });
    jsonwebtoken::encode(&h, &claims, &k).unwrap()
}

/// Why an identity stayed asserted ("verified" when it did not).
pub fn reason(e: &Established) -> String {
    match e {
        Established::Asserted { reason, .. } => reason.clone(),
        Established::Verified { .. } => "verified".into(),
    }
}
