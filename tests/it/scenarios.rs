//! Change correlation end to end: realistic scenarios through the real OTLP listeners (and the
//! Conductor import), each asserting the evidence packet and the entries written.

use crate::support::idp;
use crate::support::otlp::kv;
use crate::support::scenario::{
    CONDUCTOR, Item, MIN, T0, import_over_rest, normal_change, packet, scenario_config, send,
    send_log, workflow,
};
use crate::support::server::{TestApp, TestDb, bin, spawn_app_with};
use changetrail::auth::Role;
use changetrail::core::ledger::hash::{Hash, unb64};
use changetrail::core::ledger::merkle::verify_inclusion;
use changetrail::core::ledger::note::{Checkpoint, Note};
use changetrail::demo::scenario::resource;
use proptest::prelude::*;
use serde_json::Value;

async fn check_proofs(app: &TestApp, p: &Value) {
    let note = p["checkpoint"].as_str().unwrap();
    let cp = Checkpoint::parse_body(&Note::parse(note).unwrap().text).unwrap();
    let mut proved = 0;
    for e in p["entries"].as_array().unwrap() {
        let Some(proof) = e["inclusion_proof"].as_array() else {
            continue;
        };
        let seq = e["seq"].as_u64().unwrap();
        let page: Value = app
            .get(
                &format!("/v1/ledger/entries?from={seq}&limit=1"),
                Some(&app.reviewer),
            )
            .await
            .json()
            .await
            .unwrap();
        let bytes = unb64(page["entries"][0]["entry"].as_str().unwrap()).unwrap();
        let leaf = changetrail::core::ledger::entry::leaf_hash(&bytes);
        let hashes: Vec<Hash> = proof
            .iter()
            .map(|h| Hash::from_b64(h.as_str().unwrap()).unwrap())
            .collect();
        verify_inclusion(seq, cp.size, &leaf, &hashes, &cp.root).unwrap();
        proved += 1;
    }
    assert!(proved > 0, "no entry was proved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_change_with_a_retried_deploy_sqlite() {
    a_normal_change_with_a_retried_deploy(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_change_with_a_retried_deploy_postgres() {
    if let Some(db) = TestDb::postgres("a_normal_change_with_a_retried_deploy_postgres").await {
        a_normal_change_with_a_retried_deploy(db).await;
    }
}

async fn a_normal_change_with_a_retried_deploy(db: TestDb) {
    let app = spawn_app_with(scenario_config(&db)).await;
    let mut wf = workflow("CHG-2041", 1, T0);
    let items = normal_change(&mut wf);
    send(&app, &items).await;
    app.writer.checkpoint().await.unwrap();
    let p = packet(&app, "CHG-2041").await;
    assert_eq!(p["change"]["kind"], "normal");
    assert_eq!(p["change"]["environment"], "production");
    assert_eq!(p["change"]["production"], true);
    assert_eq!(p["change"]["service"], "payments-api");
    assert_eq!(p["change"]["version"], "1.42.0");
    assert_eq!(p["change"]["result"], "success");
    assert_eq!(p["change"]["runs"], serde_json::json!(["wf-CHG-2041"]));
    assert_eq!(p["requester"]["subject"], "alice@example.com");
    assert_eq!(p["requester"]["established"], "verified");
    assert_eq!(p["requester"]["roles"], serde_json::json!(["engineer"]));
    let approvals = p["approvals"].as_array().unwrap();
    assert_eq!(approvals.len(), 1);
    assert_eq!(approvals[0]["decision"], "approved");
    assert_eq!(approvals[0]["approver"]["subject"], "bob@example.com");
    assert_eq!(approvals[0]["approver"]["established"], "verified");
    assert_eq!(approvals[0]["before_first_deploy"], true);
    assert_eq!(
        p["timeline"]["approved_ns"].as_i64().unwrap(),
        (T0 + 15 * MIN) as i64
    );
    assert_eq!(
        p["timeline"]["first_deploy_start_ns"].as_i64().unwrap(),
        (T0 + 16 * MIN) as i64
    );
    let steps = p["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "one logical deploy step: {steps:?}");
    assert_eq!(steps[0]["task"], "deploy");
    assert_eq!(
        steps[0]["summary"],
        "2 attempts: 1 timed out, then succeeded"
    );
    let attempts = steps[0]["attempts"].as_array().unwrap();
    assert_eq!(attempts[1]["retried_from"], "wf-CHG-2041-deploy-0");
    assert_eq!(attempts[1]["identity"]["established"], "verified");
    assert_eq!(
        attempts[1]["identity"]["subject"],
        "spiffe://example.com/deployer"
    );
    assert_eq!(p["spans"]["count"], 7);
    assert_eq!(
        p["spans"]["by_rule"],
        serde_json::json!({ "attribute": 4, "trace": 2, "link": 1 })
    );
    assert_eq!(p["spans"]["errors"], 1);
    assert_eq!(
        p["spans"]["services"],
        serde_json::json!(["conductor", "ledger-consumer", "payments-api"])
    );
    assert_eq!(p["versions"][0]["version"], "1.42.0");
    // Entries: decisions and outcomes, not one per span.
    let kinds: Vec<&str> = p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "change.requested",
        "approval.decided",
        "task.finished",
        "change.finished",
        "spans.bound",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| **k == "task.finished").count(), 2);
    assert!(kinds.len() <= 8, "{kinds:?}");
    check_proofs(&app, &p).await;
    // The same export again changes nothing.
    let before = app.store.head().await.unwrap().unwrap().head.size;
    send(&app, &items).await;
    assert_eq!(app.store.head().await.unwrap().unwrap().head.size, before);
    app.stop().await;
}

/// Removes what depends on when and through which token facts arrived: receipts, entry numbers,
/// token ids.
fn strip_arrival(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for k in ["received_ns", "deploy_received_ns", "seq", "token_id"] {
                o.remove(k);
            }
            o.values_mut().for_each(strip_arrival);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_arrival),
        _ => {}
    }
}

/// The evidence is a function of the facts, not of their order or batching — including runtime
/// spans that arrive before the workflow spans that bind them.
#[test]
fn the_same_facts_in_any_order_give_the_same_evidence() {
    let mut wf = workflow("CHG-ORDER", 2, T0);
    let items = normal_change(&mut wf);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let evidence_of = |order: Vec<usize>, cuts: Vec<usize>| {
        let items = items.clone();
        rt.block_on(async move {
            let db = TestDb::sqlite().await;
            let app = spawn_app_with(scenario_config(&db)).await;
            let ordered: Vec<Item> = order.iter().map(|&i| items[i].clone()).collect();
            let mut start = 0;
            for cut in cuts.iter().copied().chain([ordered.len()]) {
                let end = cut.clamp(start, ordered.len());
                if end > start {
                    send(&app, &ordered[start..end]).await;
                }
                start = end;
            }
            let mut p = packet(&app, "CHG-ORDER").await;
            app.stop().await;
            // Entry numbers, proofs, receipts and the sending token (each run registers its
            // own) depend on arrival; the evidence must not.
            for k in ["entries", "checkpoint", "checkpoint_size"] {
                p.as_object_mut().unwrap().remove(k);
            }
            strip_arrival(&mut p);
            p
        })
    };
    let reference = evidence_of((0..items.len()).collect(), vec![]);
    let n = items.len();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 8,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(
                Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
                proptest::collection::vec(1..n, 0..3),
            ),
            |(order, mut cuts)| {
                cuts.sort_unstable();
                let got = evidence_of(order.clone(), cuts.clone());
                prop_assert_eq!(&got, &reference, "order {:?}, cuts {:?}", order, cuts);
                Ok(())
            },
        )
        .unwrap();
    // And the runtime-spans-first order explicitly.
    let late: Vec<usize> = vec![4, 5, 6, 0, 1, 2, 3];
    assert_eq!(evidence_of(late, vec![3]), reference);
}

/// Self-approval, approval after the first deploy attempt, a rejection followed by a deploy
/// anyway, and an emergency change without justification: the packet shows each plainly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questionable_changes_are_shown_as_they_happened() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(scenario_config(&db)).await;
    let at = |m: u64| (T0 + m * MIN) as i64;

    // Self-approval: alice requests and approves.
    let mut wf = workflow("CHG-SELF", 11, T0);
    let mut items = vec![
        wf.run_span(
            "normal",
            "alice@example.com",
            Some(idp::token("alice@example.com", &[], at(0))),
            vec![],
        ),
        wf.approval(
            "alice@example.com",
            Some(idp::token("alice@example.com", &[], at(5))),
            "approved",
            MIN,
            5 * MIN,
        ),
        wf.deploy(0, "success", 6 * MIN, 7 * MIN),
    ];
    // Approved after the deploy already started.
    let mut late = workflow("CHG-LATE", 12, T0);
    items.extend([
        late.run_span("normal", "alice@example.com", None, vec![]),
        late.deploy(0, "success", 2 * MIN, 4 * MIN),
        late.approval(
            "bob@example.com",
            Some(idp::token("bob@example.com", &[], at(10))),
            "approved",
            MIN,
            10 * MIN,
        ),
    ]);
    // Rejected, deployed anyway.
    let mut rej = workflow("CHG-REJ", 13, T0);
    items.extend([
        rej.run_span("normal", "carol@example.com", None, vec![]),
        rej.approval(
            "bob@example.com",
            Some(idp::token("bob@example.com", &[], at(3))),
            "rejected",
            MIN,
            3 * MIN,
        ),
        rej.deploy(0, "success", 4 * MIN, 5 * MIN),
    ]);
    // Emergency without justification.
    let mut em = workflow("CHG-EMERG", 14, T0);
    items.extend([
        em.run_span("emergency", "dave@example.com", None, vec![]),
        em.deploy(0, "success", MIN, 2 * MIN),
    ]);
    send(&app, &items).await;

    let p = packet(&app, "CHG-SELF").await;
    assert_eq!(
        p["requester"]["subject"],
        p["approvals"][0]["approver"]["subject"]
    );
    assert_eq!(p["approvals"][0]["approver"]["established"], "verified");
    let p = packet(&app, "CHG-LATE").await;
    assert_eq!(p["approvals"][0]["before_first_deploy"], false);
    assert_eq!(p["requester"]["established"], "asserted");
    assert_eq!(p["requester"]["reason"], "no token");
    let p = packet(&app, "CHG-REJ").await;
    assert_eq!(p["approvals"][0]["decision"], "rejected");
    assert_eq!(p["steps"][0]["outcome"], "success");
    let p = packet(&app, "CHG-EMERG").await;
    assert_eq!(p["change"]["kind"], "emergency");
    assert!(p["change"]["justification"].is_null());
    assert!(p["approvals"].as_array().unwrap().is_empty());

    // The list filters by kind and environment.
    let auditor = app.token(Role::Auditor).await;
    let list: Value = app
        .get("/v1/changes?kind=emergency", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["change"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["CHG-EMERG"]);
    let list: Value = app
        .get(
            "/v1/changes?environment=production&from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z",
            Some(&auditor),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["changes"].as_array().unwrap().len(), 4);
    let list: Value = app
        .get("/v1/changes?from=2026-02-01T00:00:00Z", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    assert!(list["changes"].as_array().unwrap().is_empty());
    assert_eq!(
        app.get("/v1/changes?from=yesterday", Some(&auditor))
            .await
            .status(),
        reqwest::StatusCode::BAD_REQUEST
    );
    // Auditors only: a reviewer token is refused, an unknown change is 404.
    assert_eq!(
        app.get("/v1/changes", Some(&app.reviewer)).await.status(),
        reqwest::StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.get("/v1/changes/CHG-NOPE", Some(&auditor))
            .await
            .status(),
        reqwest::StatusCode::NOT_FOUND
    );
    app.stop().await;
}

/// Tokens that do not verify leave the identity asserted, and say why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_without_a_valid_token_stay_asserted() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(scenario_config(&db)).await;
    let now = (T0 / 1_000_000_000) as i64;
    use jsonwebtoken::Algorithm;
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        (
            "CHG-EXP",
            Some(idp::token_with(
                Algorithm::EdDSA,
                idp::ISSUER,
                idp::AUDIENCE,
                "erin@example.com",
                &[],
                now - 7200,
                now - 3600,
            )),
            "expired",
        ),
        (
            "CHG-SIG",
            Some(idp::forged("erin@example.com", T0 as i64)),
            "bad signature",
        ),
        (
            "CHG-ISS",
            Some(idp::token_with(
                Algorithm::RS256,
                "https://other-idp.example",
                idp::AUDIENCE,
                "erin@example.com",
                &[],
                now - 60,
                now + 600,
            )),
            "not trusted",
        ),
        (
            "CHG-SUB",
            Some(idp::token_with(
                Algorithm::ES256,
                idp::ISSUER,
                idp::AUDIENCE,
                "mallory@example.com",
                &[],
                now - 60,
                now + 600,
            )),
            "does not match",
        ),
        ("CHG-NONE", None, "no token"),
    ];
    let mut items = Vec::new();
    for (i, (change, token, _)) in cases.iter().enumerate() {
        let mut wf = workflow(change, 20 + i as u8, T0);
        items.push(wf.run_span("normal", "erin@example.com", token.clone(), vec![]));
    }
    send(&app, &items).await;
    for (change, _, why) in cases {
        let p = packet(&app, change).await;
        assert_eq!(p["requester"]["established"], "asserted", "{change}");
        assert_eq!(p["requester"]["subject"], "erin@example.com", "{change}");
        assert!(
            p["requester"]["reason"].as_str().unwrap().contains(why),
            "{change}: {}",
            p["requester"]
        );
    }
    app.stop().await;
}

/// A new production version in runtime spans that no change explains is an unlinked deploy;
/// the version a change did deploy is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_deploy_is_found() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(scenario_config(&db)).await;
    let mut wf = workflow("CHG-OK", 30, T0);
    let mut items = normal_change(&mut wf);
    // checkout 7.0.1 shows up in production; nothing deployed it.
    let mut rogue = workflow("none", 31, T0);
    rogue.service = "checkout".into();
    rogue.version = "7.0.1".into();
    items.push(rogue.service_span("GET /cart", 40 * MIN));
    // staging versions are not production deploys.
    let mut staging = rogue.service_span("GET /cart", 41 * MIN);
    staging.resource = resource(&[
        ("service.name", "checkout"),
        ("service.version", "7.0.2"),
        ("deployment.environment.name", "staging"),
    ]);
    items.push(staging);
    send(&app, &items).await;
    let auditor = app.token(Role::Auditor).await;
    let v: Value = app
        .get("/v1/deploys/unlinked", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    let unlinked = v["unlinked_deploys"].as_array().unwrap();
    assert_eq!(unlinked.len(), 1, "{unlinked:?}");
    assert_eq!(unlinked[0]["service"], "checkout");
    assert_eq!(unlinked[0]["version"], "7.0.1");
    assert_eq!(
        unlinked[0]["first_seen_ns"].as_i64().unwrap(),
        (T0 + 40 * MIN) as i64
    );
    // The observation is in the ledger.
    let entries = app.store.entries(0, 1000).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.kind == "version.observed")
            .count(),
        2,
        "payments-api 1.42.0 and checkout 7.0.1"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_executions_are_imported_sqlite() {
    conductor_executions_are_imported(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_executions_are_imported_postgres() {
    if let Some(db) = TestDb::postgres("conductor_executions_are_imported_postgres").await {
        conductor_executions_are_imported(db).await;
    }
}

/// The Conductor execution of research/soc2.md §3.9: imported by file and over REST (idempotent),
/// then re-imported after a restart wiped its history; runtimeMetadata is never stored.
async fn conductor_executions_are_imported(db: TestDb) {
    let mut doc: Value = serde_json::from_str(CONDUCTOR).unwrap();
    // A worker's poll response carried resolved secrets: they must never be stored.
    doc["tasks"][3]["runtimeMetadata"] =
        serde_json::json!({ "DEPLOY_KEY": "rt-secret-3f9a-must-not-persist" });
    let path = db.path().join("execution.json");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    // By file, through the CLI (the ledger and key exist first).
    let app = spawn_app_with(scenario_config(&db)).await;
    let key_file = db.path().join("ledger.key");
    let o = std::process::Command::new(bin())
        .args([
            "import",
            "conductor",
            path.to_str().unwrap(),
            "--database-url",
            &db.url,
        ])
        .env("CHANGETRAIL_LEDGER__KEY_FILE", &key_file)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("new facts, 0 already known"), "{stderr}");

    let p = packet(&app, "CHG-2041").await;
    assert_eq!(p["change"]["service"], "payments-api");
    assert_eq!(p["change"]["version"], "1.42.0");
    assert_eq!(
        p["change"]["artifact"],
        "sha256:9b1f0c7d2e8a4b6f1c3d5e7f9a0b2c4d6e8f0a1b3c5d7e9f1a2b3c4d5e6f7a8b"
    );
    assert_eq!(p["change"]["result"], "success");
    assert_eq!(p["requester"]["subject"], "alice@example.com");
    // The vector's tokens are placeholders: identities are asserted, and say why.
    assert_eq!(p["requester"]["established"], "asserted");
    assert_eq!(p["approvals"][0]["approver"]["subject"], "bob@example.com");
    assert_eq!(p["approvals"][0]["decision"], "approved");
    assert_eq!(p["approvals"][0]["method"], "conductor");
    assert_eq!(p["approvals"][0]["before_first_deploy"], true);
    assert_eq!(
        p["steps"][0]["summary"],
        "2 attempts: 1 failed, then succeeded"
    );
    assert_eq!(
        p["steps"][0]["attempts"][1]["retried_from"],
        "0a1b2c3d-0000-4000-8000-000000000004"
    );
    assert_eq!(
        p["steps"][0]["attempts"][0]["reason"],
        "rollout status: timed out waiting for 3/3 replicas"
    );

    // Over REST, the same execution again: nothing new.
    let import = |d: &Value, token: &str| {
        app.http
            .post(format!("{}/v1/import/conductor", app.base))
            .bearer_auth(token)
            .json(d)
            .send()
    };
    let r = import(&doc, &app.ingest).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["facts_recorded"], 0);
    assert_eq!(body["history_rewritten"], false);
    assert_eq!(
        import(&doc, &app.reviewer).await.unwrap().status(),
        reqwest::StatusCode::FORBIDDEN
    );
    let r = import(&serde_json::json!({ "not": "conductor" }), &app.ingest)
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST);

    // Restarted: Conductor wiped the earlier tasks and ran again; the approval was skipped.
    let mut restarted = doc.clone();
    let tasks = restarted["tasks"].as_array_mut().unwrap();
    tasks.retain(|t| t["referenceTaskName"] != "deploy");
    tasks[1]["status"] = "SKIPPED".into();
    tasks[1]["taskId"] = "0a1b2c3d-0000-4000-8000-00000000000a".into();
    let r = import(&restarted, &app.ingest).await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["history_rewritten"], true);
    assert_eq!(
        body["vanished_tasks"].as_array().unwrap().len(),
        3,
        "{body}"
    );
    app.writer.checkpoint().await.unwrap();
    let p = packet(&app, "CHG-2041").await;
    // Tasks gone from the middle (the approval replaced, both deploy attempts gone) with later
    // ones kept is a removal; the replacement arrived skipped.
    assert_eq!(p["history_rewrites"][0]["operation"], "remove");
    assert_eq!(
        p["history_rewrites"][0]["kinds"],
        serde_json::json!(["remove", "skip"])
    );
    let decisions: Vec<&str> = p["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["decision"].as_str().unwrap())
        .collect();
    assert!(decisions.contains(&"skipped"), "{decisions:?}");
    let kinds: Vec<&str> = p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"history.rewritten"), "{kinds:?}");
    check_proofs(&app, &p).await;
    let store = db.store().await;
    app.stop().await;
    assert_no_secret(&store, &["rt-secret-3f9a-must-not-persist"]).await;
}

/// Every text and blob column of every table, searched for each secret.
async fn assert_no_secret(store: &changetrail::storage::Store, secrets: &[&str]) {
    use changetrail::storage::Store;
    use sqlx::Row;
    let tables = [
        "entries",
        "payloads",
        "spans",
        "log_records",
        "facts",
        "checkpoints",
        "signing_keys",
        "api_tokens",
        "ledger_head",
        "tree_nodes",
        "erasures",
    ];
    for t in tables {
        let sql = sqlx::AssertSqlSafe(format!("SELECT * FROM {t}"));
        let rows: Vec<Vec<Vec<u8>>> = match store {
            Store::Sqlite(p) => sqlx::query(sql)
                .fetch_all(p)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Vec<u8>, _>(i)
                                .or_else(|_| r.try_get::<String, _>(i).map(String::into_bytes))
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect(),
            Store::Postgres(p) => sqlx::query(sql)
                .fetch_all(p)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| {
                            r.try_get::<Vec<u8>, _>(i)
                                .or_else(|_| r.try_get::<String, _>(i).map(String::into_bytes))
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect(),
        };
        for row in rows {
            for col in row {
                let text = String::from_utf8_lossy(&col);
                for s in secrets {
                    assert!(!text.contains(s), "{t} stores the secret {s}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_is_ever_stored_sqlite() {
    no_token_or_secret_is_ever_stored(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_secret_is_ever_stored_postgres() {
    if let Some(db) = TestDb::postgres("no_token_or_secret_is_ever_stored_postgres").await {
        no_token_or_secret_is_ever_stored(db).await;
    }
}

/// After every kind of scenario, no raw token and no planted secret is anywhere in the database.
async fn no_token_or_secret_is_ever_stored(db: TestDb) {
    let app = spawn_app_with(scenario_config(&db)).await;
    let mut wf = workflow("CHG-SECRET", 40, T0);
    let mut items = normal_change(&mut wf);
    items[0]
        .span
        .attributes
        .push(kv("db.password", "pw-planted-7731"));
    items[0].span.attributes.push(kv(
        "http.request.header.authorization",
        "Bearer planted-bearer-5521",
    ));
    items[4]
        .resource
        .push(("vault.secret".into(), "planted-vault-9913".into()));
    let tokens: Vec<String> = items
        .iter()
        .flat_map(|i| i.span.attributes.iter())
        .filter(|kv| kv.key.ends_with(".token"))
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                Some(s.clone())
            }
            _ => None,
        })
        .collect();
    assert!(tokens.len() >= 3);
    send(&app, &items).await;
    let p = packet(&app, "CHG-SECRET").await;
    assert_eq!(
        p["requester"]["established"], "verified",
        "tokens were seen and verified before redaction"
    );
    let store = db.store().await;
    app.stop().await;
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    // The signature part alone must not be there either.
    let sigs: Vec<String> = tokens
        .iter()
        .map(|t| t.rsplit('.').next().unwrap().to_owned())
        .collect();
    secrets.extend(sigs.iter().map(String::as_str));
    secrets.extend([
        "pw-planted-7731",
        "planted-bearer-5521",
        "planted-vault-9913",
    ]);
    assert_no_secret(&store, &secrets).await;
}

/// A deploy fails; Conductor starts the failure workflow, which rolls it back. The two changes
/// point at each other: the original lists its rollback, the rollback names what it rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_through_a_failure_workflow_is_linked_both_ways() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(scenario_config(&db)).await;
    let mut failed: Value = serde_json::from_str(CONDUCTOR).unwrap();
    failed["workflowId"] = "wf-orig-77".into();
    failed["correlationId"] = "CHG-3001".into();
    failed["input"]["change"]["id"] = "CHG-3001".into();
    failed["status"] = "FAILED".into();
    failed["output"] = serde_json::json!({ "conductor.failure_workflow": "wf-rollback-77" });
    let tasks = failed["tasks"].as_array_mut().unwrap();
    tasks.retain(|t| {
        t["taskId"] != "0a1b2c3d-0000-4000-8000-000000000005" && t["referenceTaskName"] != "verify"
    });
    let rollback = serde_json::json!({
        "workflowId": "wf-rollback-77", "workflowName": "rollback_service", "status": "COMPLETED",
        "correlationId": "CHG-3001", "startTime": 1767262600000i64, "endTime": 1767262700000i64,
        "input": {
            "change": failed["input"]["change"].clone(), "service": "payments-api", "environment": "production",
            "workflowId": "wf-orig-77", "reason": "deploy failed", "failureStatus": "FAILED", "failedWorkflow": {}
        },
        "tasks": [{
            "taskType": "k8s_deploy", "status": "COMPLETED", "referenceTaskName": "deploy", "taskId": "rb-task-1",
            "retryCount": 0, "startTime": 1767262610000i64, "endTime": 1767262690000i64, "workerId": "deployer-5c8b7-qz4"
        }]
    });
    for doc in [&failed, &rollback] {
        let (status, answer) = import_over_rest(&app, doc).await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{answer}");
    }
    let p = packet(&app, "CHG-3001").await;
    assert_eq!(p["change"]["result"], "failure");
    assert_eq!(
        p["change"]["compensation_runs"],
        serde_json::json!(["wf-rollback-77"])
    );
    assert_eq!(p["rolled_back_by"], serde_json::json!(["wf-rollback-77"]));
    let r = packet(&app, "wf-rollback-77").await;
    assert_eq!(r["change"]["kind"], "rollback");
    assert_eq!(r["change"]["rollback_of"], "CHG-3001");
    assert_eq!(r["steps"][0]["outcome"], "success");
    app.stop().await;
}

/// An approval sent as a `changetrail.approval` log event, and a rollback declared on the run
/// span (`changetrail.change.rollback_of`): both end up in the packets, the rollback both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_event_approvals_and_declared_rollbacks() {
    use opentelemetry_proto::tonic::logs::v1::LogRecord;
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(scenario_config(&db)).await;
    let mut wf = workflow("CHG-LOG", 50, T0);
    let run = wf.run_span("normal", "alice@example.com", None, vec![]);
    let deploy = wf.deploy(0, "success", 20 * MIN, 22 * MIN);
    send(&app, &[run, deploy]).await;
    let decided = T0 + 10 * MIN;
    let log = LogRecord {
        time_unix_nano: decided,
        event_name: "changetrail.approval".into(),
        trace_id: wf.trace.to_vec(),
        attributes: vec![
            kv("cicd.pipeline.run.id", &wf.run),
            kv("changetrail.change.id", "CHG-LOG"),
            kv("changetrail.approval.decision", "approved"),
            kv("changetrail.approval.approver", "bob@example.com"),
            kv(
                "changetrail.approval.token",
                &idp::token("bob@example.com", &["release-approver"], decided as i64),
            ),
            kv("changetrail.approval.requested_at", "2026-01-01T10:02:00Z"),
        ],
        ..Default::default()
    };
    send_log(&app, log).await;
    // A later change rolls it back, saying so on its run span.
    let mut rb = workflow("CHG-LOG-RB", 51, T0 + 60 * MIN);
    let rb_run = rb.run_span(
        "rollback",
        "alice@example.com",
        None,
        vec![kv("changetrail.change.rollback_of", "CHG-LOG")],
    );
    send(&app, &[rb_run]).await;

    let p = packet(&app, "CHG-LOG").await;
    let a = &p["approvals"][0];
    assert_eq!(a["method"], "log");
    assert_eq!(a["approver"]["established"], "verified");
    assert_eq!(a["requested_ns"].as_i64().unwrap(), (T0 + 2 * MIN) as i64);
    assert_eq!(a["decided_ns"].as_i64().unwrap(), decided as i64);
    assert_eq!(a["before_first_deploy"], true);
    assert_eq!(p["rolled_back_by"], serde_json::json!(["CHG-LOG-RB"]));
    let r = packet(&app, "CHG-LOG-RB").await;
    assert_eq!(r["change"]["rollback_of"], "CHG-LOG");
    assert_eq!(r["change"]["kind"], "rollback");
    app.stop().await;
}
