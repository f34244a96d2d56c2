//! Identities: tokens of the test issuer (support::idp) verify at the time of the event they ride
//! on, with their algorithm, audience, expiry and binding claims checked; an issuer's keys come
//! from its discovery document, and each key set is recorded.

use crate::support::idp::{
    AUDIENCE, ISSUER, forged, jwks_path, reason, token_claims, token_with, verifier,
};
use crate::support::scenario::{T0, normal_change, packet, scenario_config, send, workflow};
use crate::support::server::{TestDb, spawn_app_with, verify_store};
use changetrail::core::evidence::identity::Established;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

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
    let strict = verifier().with_rules(changetrail::core::evidence::identity::TokenRules {
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

/// An identity provider's discovery document and key set, served on a local port, with a key set
/// the test can change (a key rotation).
struct DiscoveryServer {
    url: String,
    keys: std::sync::Arc<std::sync::Mutex<serde_json::Value>>,
}

async fn discovery_server(issuer: &'static str, keys: serde_json::Value) -> DiscoveryServer {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = std::sync::Arc::new(std::sync::Mutex::new(keys));
    let doc = serde_json::json!({"issuer": issuer, "jwks_uri": format!("{base}/jwks")});
    let served = shared.clone();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc) }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let keys = served.lock().unwrap().clone();
                async move { axum::Json(keys) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    DiscoveryServer {
        url: base,
        keys: shared,
    }
}

/// The test key set without the keys named.
fn keys_without(kids: &[&str]) -> serde_json::Value {
    let mut all: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jwks_path()).unwrap()).unwrap();
    all["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| !kids.contains(&k["kid"].as_str().unwrap()));
    all
}

/// An issuer configured by its discovery URL: keys fetched at start and recorded in the ledger;
/// after the issuer rotates in a new key, a token naming it makes the service fetch again, and
/// the new set is recorded too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_keys_come_from_discovery_and_each_set_is_recorded() {
    let idp = discovery_server(ISSUER, keys_without(&["ed-1"])).await;
    let db = TestDb::sqlite().await;
    let mut cfg = scenario_config(&db);
    cfg.identity.issuers[0].jwks_file = Default::default();
    cfg.identity.issuers[0].discovery_url = idp.url.clone();
    let app = spawn_app_with(cfg).await;
    let sets = |store: changetrail::storage::Store| async move {
        store
            .entries_of_kinds(&["identity.keys"])
            .await
            .unwrap()
            .into_iter()
            .map(|(_, _, p)| serde_json::from_str::<serde_json::Value>(&p.unwrap()).unwrap())
            .collect::<Vec<_>>()
    };
    let first = sets(app.store.clone()).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["issuer"], ISSUER);
    assert_eq!(first[0]["source"], format!("{}/jwks", idp.url));
    assert_eq!(first[0]["keys"]["keys"].as_array().unwrap().len(), 2);

    // The issuer starts signing with ed-1, which it now publishes.
    *idp.keys.lock().unwrap() = keys_without(&[]);
    let mut wf = workflow("CHG-ROTATED-1", 60, T0);
    send(&app, &normal_change(&mut wf)).await;
    let p = packet(&app, "CHG-ROTATED-1").await;
    assert_eq!(p["requester"]["established"], "asserted", "not fetched yet");
    // The miss asked for a fetch; wait until the new set is recorded.
    let started = std::time::Instant::now();
    let second = loop {
        let s = sets(app.store.clone()).await;
        if s.len() == 2 {
            break s;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{s:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(second[1]["keys"]["keys"].as_array().unwrap().len(), 3);
    assert_ne!(second[0]["keys_sha256"], second[1]["keys_sha256"]);
    let mut wf = workflow("CHG-ROTATED-2", 61, T0 + 3_600_000_000_000);
    send(&app, &normal_change(&mut wf)).await;
    let p = packet(&app, "CHG-ROTATED-2").await;
    assert_eq!(
        p["requester"]["established"], "verified",
        "{}",
        p["requester"]
    );
    let vkey = app.vkey.clone();
    let r = verify_store(&app.store, &[&vkey]).await;
    assert_eq!(r.exit_code, 0, "{:?}", r.findings);
    app.stop().await;
}

/// A discovery document that names another issuer is not that issuer's: its keys are not used.
#[tokio::test]
async fn a_discovery_document_of_another_issuer_is_refused() {
    let idp = discovery_server("https://evil.example", keys_without(&[])).await;
    let client = reqwest::Client::new();
    let e = changetrail::ingest::issuers::fetch(&client, ISSUER, &idp.url)
        .await
        .unwrap_err();
    assert!(
        e.contains("is the discovery document of \"https://evil.example\""),
        "{e}"
    );
    // Plain http only to this machine.
    assert!(changetrail::ingest::issuers::check_url("http://idp.example.com/x").is_err());
    assert!(changetrail::ingest::issuers::check_url("https://idp.example.com/x").is_ok());
    assert!(changetrail::ingest::issuers::check_url("http://[::1]:8080/x").is_ok());
}
