//! The REST API through the real server on a real port.

use crate::support::db::draft;
use crate::support::server::{TestDb, spawn_app, verify_store};
use changetrail::auth::Role;
use changetrail::core::ledger::hash::{Hash, unb64};
use changetrail::core::ledger::keys::Vkey;
use changetrail::core::ledger::merkle::{verify_consistency, verify_inclusion};
use changetrail::core::ledger::note::{Checkpoint, Note, NoteVerdict};
use changetrail::core::ledger::verify::{Options, Verifier};
use reqwest::StatusCode;

fn hashes(v: &serde_json::Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| Hash::from_b64(h.as_str().unwrap()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_open_and_the_ledger_needs_a_reviewer_token() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
    let r = app.get("/v1/ledger/checkpoint", None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let wrong = format!("{}x", &app.reviewer[..app.reviewer.len() - 1]);
    assert_eq!(
        app.get("/v1/ledger/checkpoint", Some(&wrong))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v1/ledger/checkpoint", Some("garbage"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    for role in [Role::Ingest, Role::Auditor, Role::Admin] {
        let t = app.token(role).await;
        let r = app.get("/v1/ledger/checkpoint", Some(&t)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{role}");
        let body = r.text().await.unwrap();
        assert!(!body.contains(&t), "the token is echoed back");
    }
    assert_eq!(
        app.get("/v1/ledger/checkpoint", Some(&app.reviewer))
            .await
            .status(),
        StatusCode::OK
    );
    // The admin API is the admin's only.
    assert_eq!(
        app.get("/v1/admin/tokens", Some(&app.reviewer))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/v1/admin/tokens", Some(&app.admin)).await.status(),
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_entries_and_proofs_verify_offline_sqlite() {
    checkpoints_entries_and_proofs_verify_offline(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_entries_and_proofs_verify_offline_postgres() {
    if let Some(db) =
        TestDb::postgres("checkpoints_entries_and_proofs_verify_offline_postgres").await
    {
        checkpoints_entries_and_proofs_verify_offline(db).await;
    }
}

/// A reviewer checks the service's answers with nothing but the pinned vkey and the RFC math.
async fn checkpoints_entries_and_proofs_verify_offline(db: TestDb) {
    let app = spawn_app(&db).await;
    let vkey = Vkey::parse(&app.vkey).unwrap();
    // The ledger's first entry and the test's tokens.
    let base = app.store.head().await.unwrap().unwrap().head.size;
    app.appender
        .append((1..=60).map(draft).collect())
        .await
        .unwrap();
    app.writer.checkpoint().await.unwrap();
    let first_cp = app.store.latest_checkpoint().await.unwrap().unwrap().size;
    app.appender
        .append((61..=100).map(draft).collect())
        .await
        .unwrap();
    app.writer.checkpoint().await.unwrap();

    let note = app
        .get("/v1/ledger/checkpoint", Some(&app.reviewer))
        .await
        .text()
        .await
        .unwrap();
    let parsed = Note::parse(&note).unwrap();
    assert!(matches!(parsed.verify([&vkey]), NoteVerdict::Valid(_)));
    let cp = Checkpoint::parse_body(&parsed.text).unwrap();
    assert_eq!(cp.size, base + 100);

    // Inclusion of entry 42 in the newest checkpoint, from the leaf the entries page gives.
    let page: serde_json::Value = app
        .get("/v1/ledger/entries?from=40&limit=5", Some(&app.reviewer))
        .await
        .json()
        .await
        .unwrap();
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 5);
    assert_eq!(page["next_from"], 45);
    let e42 = &entries[2];
    assert_eq!(e42["seq"], 42);
    let bytes = unb64(e42["entry"].as_str().unwrap()).unwrap();
    let leaf = changetrail::core::ledger::entry::leaf_hash(&bytes);
    let proof: serde_json::Value = app
        .get("/v1/ledger/proofs/inclusion?seq=42", Some(&app.reviewer))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(proof["size"], cp.size);
    verify_inclusion(42, cp.size, &leaf, &hashes(&proof["hashes"]), &cp.root).unwrap();
    // The same proof does not fit another entry's bytes (binding, catalogue G).
    let other = changetrail::core::ledger::entry::leaf_hash(
        &unb64(entries[3]["entry"].as_str().unwrap()).unwrap(),
    );
    assert!(verify_inclusion(42, cp.size, &other, &hashes(&proof["hashes"]), &cp.root).is_err());

    // Consistency between the two checkpoints.
    let old_note = app
        .get(
            &format!("/v1/ledger/checkpoint?size={first_cp}"),
            Some(&app.reviewer),
        )
        .await
        .text()
        .await
        .unwrap();
    let old = Checkpoint::parse_body(&Note::parse(&old_note).unwrap().text).unwrap();
    let cons: serde_json::Value = app
        .get(
            &format!(
                "/v1/ledger/proofs/consistency?from={first_cp}&to={}",
                cp.size
            ),
            Some(&app.reviewer),
        )
        .await
        .json()
        .await
        .unwrap();
    verify_consistency(
        old.size,
        cp.size,
        &old.root,
        &cp.root,
        &hashes(&cons["hashes"]),
    )
    .unwrap();

    // Bad parameters are clear 400s, unknown ones too.
    for bad in [
        &format!("/v1/ledger/proofs/inclusion?seq={}", cp.size),
        "/v1/ledger/proofs/inclusion?seq=1&size=100000",
        "/v1/ledger/proofs/consistency?from=0",
        "/v1/ledger/proofs/consistency?from=50&to=10",
        "/v1/ledger/entries?limit=0",
        "/v1/ledger/entries?limit=5000",
        "/v1/ledger/entries?from=-1",
        "/v1/ledger/entries?frm=1",
    ] {
        let r = app.get(bad, Some(&app.reviewer)).await;
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            r.text().await.unwrap()
        );
    }
    assert_eq!(
        app.get("/v1/ledger/checkpoint?size=77777", Some(&app.reviewer))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let keys: serde_json::Value = app
        .get("/v1/ledger/keys", Some(&app.reviewer))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["vkey"], app.vkey);
    assert_eq!(keys["keys"][0]["from_seq"], 0);

    // The streamed bundle verifies with the pinned key.
    let text = app
        .get("/v1/ledger/bundle", Some(&app.reviewer))
        .await
        .text()
        .await
        .unwrap();
    let mut v = Verifier::new(Options {
        trusted: vec![vkey.clone()],
        state: None,
        max_age_ns: Some(3_600_000_000_000),
        now_ns: changetrail::sys::now_ns(),
        threads: 2,
    });
    for line in text.lines() {
        v.push_line(line);
    }
    let report = v.finish();
    assert_eq!(
        report.exit_code, 0,
        "{:?}: {:?}",
        db.backend, report.findings
    );
    assert_eq!(report.summary.entries, cp.size);

    // A range bundle (prefix peaks, then entries 30..) verifies too.
    let text = app
        .get("/v1/ledger/bundle?from=30&to=70", Some(&app.reviewer))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .nth(2)
            .unwrap()
            .starts_with("{\"type\":\"prefix\"")
    );
    let mut v = Verifier::new(Options {
        trusted: vec![vkey.clone()],
        state: None,
        max_age_ns: None,
        now_ns: 0,
        threads: 1,
    });
    for line in text.lines() {
        v.push_line(line);
    }
    let report = v.finish();
    assert_eq!(report.exit_code, 0, "{:?}", report.findings);
    assert_eq!(report.summary.first_seq, Some(30));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_creates_and_revokes_tokens() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    let r = app
        .http
        .post(format!("{}/v1/admin/tokens", app.base))
        .bearer_auth(&app.admin)
        .json(&serde_json::json!({ "role": "reviewer", "name": "security team" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: serde_json::Value = r.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get("/v1/ledger/keys", Some(&token)).await.status(),
        StatusCode::OK
    );
    // Listing never shows secrets.
    let list = app
        .get("/v1/admin/tokens", Some(&app.admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains("security team") && !list.contains(&token[16..]));
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.revoke(id).await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v1/ledger/keys", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Unknown roles and fields are refused.
    let r = app
        .http
        .post(format!("{}/v1/admin/tokens", app.base))
        .bearer_auth(&app.admin)
        .json(&serde_json::json!({ "role": "root", "name": "x" }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    app.stop().await;
}

/// Shutdown drains: everything accepted before the stop is committed and covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_commits_what_was_accepted() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    let base = app.store.head().await.unwrap().unwrap().head.size;
    let appender = app.appender.clone();
    let pending: Vec<_> = (0..20u64)
        .map(|i| {
            let a = appender.clone();
            tokio::spawn(async move { a.append(vec![draft(i)]).await })
        })
        .collect();
    let vkey = app.vkey.clone();
    app.stop().await;
    let store = db.store().await;
    let mut ok = 0;
    for p in pending {
        if p.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    let head = store.head().await.unwrap().unwrap();
    assert_eq!(head.head.size, base + ok);
    assert_eq!(
        head.checkpoint_size, head.head.size,
        "the final checkpoint covers everything"
    );
    let report = verify_store(&store, &[&vkey]).await;
    assert_eq!(report.exit_code, 0, "{:?}", report.findings);
}

/// `GET /v1/conductor` shows each reconciler's durable place and the lag to now: nothing before
/// one ever moved, then the server (no credentials), what is imported and when it moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_status_reads_the_durable_cursor() {
    let db = TestDb::sqlite().await;
    let app = spawn_app(&db).await;
    let auditor = app.token(Role::Auditor).await;
    let status = |token: String| {
        let app = &app;
        async move {
            let r = app.get("/v1/conductor", Some(&token)).await;
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    assert_eq!(
        status(auditor.clone()).await["servers"],
        serde_json::json!([])
    );
    let now_ns = changetrail::sys::now_ns();
    let hour_ago_ms = now_ns / 1_000_000 - 3_600_000;
    let moved = app
        .store
        .move_conductor_cursor(
            "http://conductor:8080",
            None,
            &(hour_ago_ms, "[]".into()),
            now_ns,
        )
        .await
        .unwrap();
    assert!(moved);
    for token in [auditor, app.reviewer.clone()] {
        let s = status(token).await;
        let server = &s["servers"][0];
        assert_eq!(server["server"], "http://conductor:8080", "{s}");
        assert_eq!(server["imported_through_ns"], hour_ago_ms * 1_000_000);
        let lag = server["lag_seconds"].as_i64().unwrap();
        assert!((3600..3700).contains(&lag), "{lag}");
        assert_eq!(server["moved_ns"], now_ns);
    }
    let ingest = app.ingest.clone();
    assert_eq!(
        app.get("/v1/conductor", Some(&ingest)).await.status(),
        StatusCode::FORBIDDEN
    );
    app.stop().await;
}
