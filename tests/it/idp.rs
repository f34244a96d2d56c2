//! A test identity provider: fixed EdDSA, ES256 and RS256 keys (tests/it/fixtures/idp, made with
//! openssl) and their JWKS, for minting the tokens the scenarios carry.

use changetrail::core::identity::{Established, IdentityVerifier, TrustedIssuer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

pub const ISSUER: &str = "https://idp.example.com";
pub const AUDIENCE: &str = "changetrail";
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/fixtures/idp");

pub fn jwks_path() -> String {
    format!("{DIR}/jwks.json")
}

pub fn issuer() -> TrustedIssuer {
    TrustedIssuer {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        keys: serde_json::from_str(&std::fs::read_to_string(jwks_path()).unwrap()).unwrap(),
        roles_claim: "roles".into(),
    }
}

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

pub fn reason(e: &Established) -> String {
    match e {
        Established::Asserted { reason, .. } => reason.clone(),
        Established::Verified { .. } => "verified".into(),
    }
}

#[test]
fn tokens_verify_at_the_time_of_the_event() {
    let v = verifier();
    let now = 1_767_261_600i64; // 2026-01-01T10:00:00Z
    let at = now * 1_000_000_000;
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let t = token_with(
            alg,
            ISSUER,
            AUDIENCE,
            "bob@example.com",
            &["release-approver"],
            now - 60,
            now + 600,
        );
        let p = v.establish(Some("bob@example.com"), Some(&t), at, at);
        assert_eq!(p.subject.as_deref(), Some("bob@example.com"));
        match &p.established {
            Established::Verified {
                issuer,
                roles,
                token_sha256,
                expires_ns,
                ..
            } => {
                assert_eq!(issuer, ISSUER);
                assert_eq!(roles, &vec!["release-approver".to_owned()]);
                assert_eq!(token_sha256.len(), 64);
                assert_eq!(*expires_ns, Some((now + 600) * 1_000_000_000));
            }
            other => panic!("{alg:?}: {other:?}"),
        }
        // A token with no asserted subject establishes its own.
        assert_eq!(
            v.establish(None, Some(&t), at, at).subject.as_deref(),
            Some("bob@example.com")
        );
    }
    // Valid then, expired an hour before it arrived: evidence that arrives late still verifies.
    let old = token_with(
        Algorithm::EdDSA,
        ISSUER,
        AUDIENCE,
        "bob@example.com",
        &[],
        now - 7200,
        now - 3600,
    );
    assert!(
        v.establish(
            Some("bob@example.com"),
            Some(&old),
            (now - 5000) * 1_000_000_000,
            at
        )
        .established
        .is_verified()
    );

    let cases: Vec<(&str, Option<&str>, String, &str)> = vec![
        (
            "expired at event time",
            Some("bob@example.com"),
            old.clone(),
            "expired",
        ),
        (
            "not yet valid",
            Some("bob@example.com"),
            token_with(
                Algorithm::EdDSA,
                ISSUER,
                AUDIENCE,
                "bob@example.com",
                &[],
                now + 3600,
                now + 7200,
            ),
            "not yet valid",
        ),
        (
            "bad signature",
            Some("bob@example.com"),
            forged("bob@example.com", at),
            "bad signature",
        ),
        (
            "unknown issuer",
            Some("bob@example.com"),
            token_with(
                Algorithm::EdDSA,
                "https://evil.example",
                AUDIENCE,
                "bob@example.com",
                &[],
                now - 60,
                now + 600,
            ),
            "not trusted",
        ),
        (
            "wrong audience",
            Some("bob@example.com"),
            token_with(
                Algorithm::EdDSA,
                ISSUER,
                "someone-else",
                "bob@example.com",
                &[],
                now - 60,
                now + 600,
            ),
            "audience",
        ),
        (
            "subject mismatch",
            Some("alice@example.com"),
            token_with(
                Algorithm::EdDSA,
                ISSUER,
                AUDIENCE,
                "bob@example.com",
                &[],
                now - 60,
                now + 600,
            ),
            "does not match",
        ),
        (
            "garbage",
            Some("bob@example.com"),
            "eyJhbGciOiJFZERTQSJ9...".to_owned(),
            "not a JWT",
        ),
    ];
    for (what, asserted, t, why) in cases {
        let p = v.establish(asserted, Some(&t), at, at);
        assert!(!p.established.is_verified(), "{what}");
        assert!(
            reason(&p.established).contains(why),
            "{what}: {}",
            reason(&p.established)
        );
        assert_eq!(
            p.subject.as_deref(),
            asserted,
            "{what}: the asserted subject is kept"
        );
        match p.established {
            Established::Asserted { token_sha256, .. } => assert!(token_sha256.is_some(), "{what}"),
            Established::Verified { .. } => unreachable!(),
        }
    }
    let none = v.establish(Some("carol@example.com"), None, at, at);
    assert_eq!(reason(&none.established), "no token");
    // An HMAC token (a shared secret, not an issuer's key) is never accepted.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "bob@example.com", "exp": now + 600 }),
        &EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    assert!(
        reason(
            &v.establish(Some("bob@example.com"), Some(&hs), at, at)
                .established
        )
        .contains("not accepted")
    );
}

#[test]
fn a_token_must_carry_exp_and_not_have_expired_long_before_it_arrived() {
    let v = verifier();
    let now = 1_767_261_600i64;
    let (at, day) = (now * 1_000_000_000, 86_400 * 1_000_000_000i64);
    let claims = |extra: serde_json::Value| {
        let mut c = serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "bob@example.com",
            "iat": now - 60, "exp": now + 600});
        for (k, val) in extra.as_object().unwrap() {
            c[k] = val.clone();
        }
        c
    };
    // No exp: it would vouch forever.
    let mut no_exp = claims(serde_json::json!({}));
    no_exp.as_object_mut().unwrap().remove("exp");
    let p = v.establish(
        Some("bob@example.com"),
        Some(&token_claims(&no_exp)),
        at,
        at,
    );
    assert_eq!(reason(&p.established), "token has no exp claim");
    // Valid at the (claimed) event time, but it had expired two days before it was received.
    let t = token_claims(&claims(serde_json::json!({})));
    let p = v.establish(Some("bob@example.com"), Some(&t), at, at + 2 * day);
    assert!(
        reason(&p.established).contains("expired 1 d 23 h before it was received"),
        "{}",
        reason(&p.established)
    );
    // Twenty hours late is within the default day.
    let p = v.establish(
        Some("bob@example.com"),
        Some(&t),
        at,
        at + day - 4 * 3600 * 1_000_000_000,
    );
    assert!(p.established.is_verified());
    // A stricter limit applies as configured.
    let strict = verifier().with_rules(changetrail::core::identity::TokenRules {
        max_age_at_receipt_ns: 60 * 1_000_000_000,
        ..Default::default()
    });
    assert!(
        !strict
            .establish(
                Some("bob@example.com"),
                Some(&t),
                at,
                at + 3600 * 1_000_000_000
            )
            .established
            .is_verified()
    );
    // jti and the binding claims are kept (as the configured claims name them).
    let bound = token_claims(&claims(serde_json::json!({
        "jti": "tok-1", "change_id": "CHG-1", "artifact_digest": "sha256:aa"})));
    match v.establish(None, Some(&bound), at, at).established {
        Established::Verified {
            jti,
            bound_change,
            bound_artifact,
            ..
        } => {
            assert_eq!(jti.as_deref(), Some("tok-1"));
            assert_eq!(bound_change.as_deref(), Some("CHG-1"));
            assert_eq!(bound_artifact.as_deref(), Some("sha256:aa"));
        }
        other => panic!("{other:?}"),
    }
}
