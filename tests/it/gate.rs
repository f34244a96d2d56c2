//! The deploy gate through the REST API: `POST /v1/gate` with a `gate` token allows a change
//! whose approval holds up and denies each kind of change that should not deploy, with the
//! reason; every decision is a ledger entry of the change, and the report shows it.

use crate::support::idp;
use crate::support::report::csv_rows;
use crate::support::scenario::{CONDUCTOR, T0, import_over_rest, scenario_config};
use crate::support::server::{TestApp, TestDb, spawn_app_with, verify_store};
use changetrail::auth::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

const MIN: i64 = 60_000_000_000;
const DIGEST: &str = "sha256:9b1f0c7d2e8a4b6f1c3d5e7f9a0b2c4d6e8f0a1b3c5d7e9f1a2b3c4d5e6f7a8b";

/// The vector's execution as it stands at its approval: running, validated and approved, not
/// yet deployed; `change` requested by alice and approved by bob, both with verified tokens
/// minted `n` seconds apart from other changes' (equal `n`, equal tokens: a replay).
fn awaiting_deploy(change: &str, n: i64) -> Value {
    let mut d: Value = serde_json::from_str(CONDUCTOR).unwrap();
    let t0 = T0 as i64 + n * 1_000_000_000;
    d["workflowId"] = format!("wf-{change}").into();
    d["correlationId"] = change.into();
    d["input"]["change"]["id"] = change.into();
    d["input"]["change"]["requestToken"] =
        idp::token("alice@example.com", &["engineer"], t0).into();
    d["status"] = "RUNNING".into();
    d.as_object_mut().unwrap().remove("endTime");
    d["output"] = json!({});
    let tasks = d["tasks"].as_array_mut().unwrap();
    tasks.retain(|t| {
        t["referenceTaskName"] == "validate_change" || t["referenceTaskName"] == "approval"
    });
    tasks[1]["outputData"]["approvalToken"] =
        idp::token("bob@example.com", &["release-approver"], t0 + 15 * MIN).into();
    // The vector's approval shows a digest shortened to 8 hex digits: too short for the gate.
    tasks[1]["inputData"]["artifactDigest"] = DIGEST.into();
    d
}

fn approval(d: &mut Value) -> &mut Value {
    &mut d["tasks"][1]
}

async fn import(app: &TestApp, doc: &Value) {
    let (status, answer) = import_over_rest(app, doc).await;
    assert!(status.is_success(), "{answer}");
}

async fn ask(app: &TestApp, token: &str, body: &Value) -> (StatusCode, Value) {
    let r = app
        .http
        .post(format!("{}/v1/gate", app.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn asking(change: &str) -> Value {
    json!({ "change_id": change, "environment": "production", "artifact_digest": DIGEST })
}

fn codes(answer: &Value) -> Vec<String> {
    answer["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .map(|x| x["code"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Each change the gate must refuse, set up through the Conductor import, with the reason it
/// must give.
fn denied_cases() -> Vec<(&'static str, Value, &'static str)> {
    // When case `n`'s approver decided (tokens are minted for that moment, see `awaiting_deploy`).
    let decided = |n: i64| T0 as i64 + n * 1_000_000_000 + 15 * MIN;
    let mut cases = Vec::new();
    // Pending: the approval step has not been decided.
    let mut d = awaiting_deploy("CHG-G-PENDING", 1);
    approval(&mut d)["status"] = "IN_PROGRESS".into();
    approval(&mut d).as_object_mut().unwrap().remove("endTime");
    approval(&mut d)["outputData"] = json!({});
    cases.push(("CHG-G-PENDING", d, "NO_APPROVAL"));
    // The approver's token was signed by a key the issuer never published.
    let mut d = awaiting_deploy("CHG-G-FORGED", 2);
    approval(&mut d)["outputData"]["approvalToken"] =
        idp::forged("bob@example.com", decided(2)).into();
    cases.push(("CHG-G-FORGED", d, "UNVERIFIED_IDENTITY"));
    // The requester approved her own change.
    let mut d = awaiting_deploy("CHG-G-SELF", 3);
    approval(&mut d)["outputData"]["approvedBy"] = "alice@example.com".into();
    approval(&mut d)["outputData"]["approvalToken"] =
        idp::token("alice@example.com", &["release-approver"], decided(3)).into();
    cases.push(("CHG-G-SELF", d, "SELF_APPROVAL"));
    // The approver holds no approver role.
    let mut d = awaiting_deploy("CHG-G-ROLE", 4);
    approval(&mut d)["outputData"]["approvalToken"] =
        idp::token("bob@example.com", &["engineer"], decided(4)).into();
    cases.push(("CHG-G-ROLE", d, "APPROVER_NOT_AUTHORIZED"));
    // The approval's token was issued for another artifact.
    let mut d = awaiting_deploy("CHG-G-BOUND", 5);
    let at = decided(5) / 1_000_000_000;
    approval(&mut d)["outputData"]["approvalToken"] = idp::token_claims(&json!({
        "iss": idp::ISSUER, "aud": idp::AUDIENCE, "sub": "bob@example.com",
        "roles": ["release-approver"], "iat": at - 600, "nbf": at - 600, "exp": at + 3000,
        "change_id": "CHG-G-BOUND", "artifact_digest": "sha256:0000ffff"
    }))
    .into();
    cases.push(("CHG-G-BOUND", d, "APPROVAL_TOKEN_MISMATCH"));
    // What was approved is another artifact.
    let mut d = awaiting_deploy("CHG-G-SUBJECT", 6);
    approval(&mut d)["inputData"]["artifactDigest"] = "sha256:0000ffff".into();
    cases.push(("CHG-G-SUBJECT", d, "APPROVED_SUBJECT_MISMATCH"));
    // The approval step was skipped.
    let mut d = awaiting_deploy("CHG-G-SKIP", 7);
    approval(&mut d)["status"] = "SKIPPED".into();
    approval(&mut d)["outputData"] = json!({});
    cases.push(("CHG-G-SKIP", d, "APPROVAL_BYPASSED"));
    // The approver said no.
    let mut d = awaiting_deploy("CHG-G-REJECT", 8);
    approval(&mut d)["outputData"]["decision"] = "REJECTED".into();
    cases.push(("CHG-G-REJECT", d, "NO_APPROVAL"));
    // Approved, then rejected by another approver later.
    let mut d = awaiting_deploy("CHG-G-REVOKED", 9);
    let mut rejection = approval(&mut d).clone();
    rejection["taskId"] = "reject-1".into();
    rejection["referenceTaskName"] = "security_review".into();
    rejection["outputData"]["decision"] = "REJECTED".into();
    rejection["outputData"]["approvedBy"] = "dave@example.com".into();
    rejection["outputData"]["approvedAt"] = "2026-01-01T10:40:00.000Z".into();
    rejection["outputData"]["approvalToken"] = idp::token(
        "dave@example.com",
        &["release-approver"],
        decided(9) + 25 * MIN,
    )
    .into();
    d["tasks"].as_array_mut().unwrap().push(rejection);
    cases.push(("CHG-G-REVOKED", d, "APPROVAL_REJECTED"));
    // A rollback with no approval: the gate asks one of every change.
    let mut d = awaiting_deploy("CHG-G-ROLLBACK", 10);
    d["input"]["change"]["type"] = "rollback".into();
    d["input"]["change"]["rollbackOf"] = "CHG-G-OK".into();
    d["tasks"].as_array_mut().unwrap().truncate(1);
    cases.push(("CHG-G-ROLLBACK", d, "NO_APPROVAL"));
    // A shortened digest approved that names too few bits of the artifact.
    let mut d = awaiting_deploy("CHG-G-SHORT", 11);
    approval(&mut d)["inputData"]["artifactDigest"] = "sha256:9b1f0c7d...".into();
    cases.push(("CHG-G-SHORT", d, "APPROVED_SUBJECT_MISMATCH"));
    // The tokens of CHG-G-OK (the allowed change) replayed on another change.
    cases.push((
        "CHG-G-REUSE",
        awaiting_deploy("CHG-G-REUSE", 0),
        "TOKEN_REUSED",
    ));
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_allows_an_approved_change_and_denies_each_that_should_not_deploy_sqlite() {
    the_gate_allows_and_denies(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_allows_an_approved_change_and_denies_each_that_should_not_deploy_postgres() {
    let Some(db) = TestDb::postgres("gate").await else {
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set");
        return;
    };
    the_gate_allows_and_denies(db).await;
}

async fn the_gate_allows_and_denies(db: TestDb) {
    let mut cfg = scenario_config(&db);
    cfg.reports.approver_roles = vec!["release-approver".into()];
    let app = spawn_app_with(cfg.clone()).await;
    let gate = app.token(Role::Gate).await;

    // Allowed: verified, independent, authorised, for this artifact, before now.
    let ok = awaiting_deploy("CHG-G-OK", 0);
    import(&app, &ok).await;
    let (status, a) = ask(&app, &gate, &asking("CHG-G-OK")).await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["decision"], "allow");
    assert_eq!(codes(&a), ["APPROVED"]);
    assert!(
        a["reasons"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("bob@example.com"),
        "{a}"
    );
    let allowed_seq = a["entry_seq"].as_u64().unwrap();

    // The same change asked about another environment or artifact is denied.
    let mut other_env = asking("CHG-G-OK");
    other_env["environment"] = "prod".into();
    let (status, a) = ask(&app, &gate, &other_env).await;
    assert_eq!(
        (status, codes(&a)),
        (
            StatusCode::CONFLICT,
            vec!["ENVIRONMENT_MISMATCH".to_owned()]
        )
    );
    let mut other_art = asking("CHG-G-OK");
    other_art["artifact_digest"] = "sha256:0000ffff".into();
    let (status, a) = ask(&app, &gate, &other_art).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(codes(&a).contains(&"ARTIFACT_MISMATCH".to_owned()), "{a}");

    // A change nobody recorded.
    let (status, a) = ask(&app, &gate, &asking("CHG-G-NOBODY")).await;
    assert_eq!(
        (status, codes(&a)),
        (StatusCode::CONFLICT, vec!["CHANGE_UNKNOWN".to_owned()])
    );
    assert_eq!(a["decision"], "deny");

    for (change, doc, want) in denied_cases() {
        import(&app, &doc).await;
        let (status, a) = ask(&app, &gate, &asking(change)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{change}: {a}");
        assert_eq!(a["decision"], "deny", "{change}: {a}");
        assert!(
            codes(&a).contains(&want.to_owned()),
            "{change} wants {want}: {a}"
        );
        // Each case shows its own fault only: no token here is another change's but the replay's.
        assert_eq!(
            codes(&a).contains(&"TOKEN_REUSED".to_owned()),
            want == "TOKEN_REUSED",
            "{change}: {a}"
        );
    }

    // History rewritten after the allow: the execution restarted, the approval gone.
    let mut restarted = awaiting_deploy("CHG-G-OK", 0);
    restarted["tasks"] = json!([{
        "taskType": "validate_change", "status": "IN_PROGRESS", "referenceTaskName": "validate_change",
        "taskId": "restarted-1", "retryCount": 0, "startTime": T0 as i64 / 1_000_000 + 3_600_000
    }]);
    import(&app, &restarted).await;
    let (status, a) = ask(&app, &gate, &asking("CHG-G-OK")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{a}");
    assert!(codes(&a).contains(&"HISTORY_REWRITTEN".to_owned()), "{a}");

    // Only the gate role may ask; a bad body is refused before anything is recorded.
    for role in [
        Role::Ingest,
        Role::Auditor,
        Role::Reviewer,
        Role::Admin,
        Role::Metrics,
    ] {
        let t = app.token(role).await;
        let (status, _) = ask(&app, &t, &asking("CHG-G-OK")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{role}");
    }
    let (status, _) = ask(
        &app,
        "ct_000000000000_nottherealsecretnottherealsecret",
        &asking("CHG-G-OK"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let size_before = app.store.head().await.unwrap().unwrap().head.size;
    let (status, _) = ask(
        &app,
        &gate,
        &json!({ "change_id": " ", "environment": "production", "artifact_digest": DIGEST }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = ask(
        &app,
        &gate,
        &json!({ "change_id": "CHG-G-OK", "environment": "production" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = ask(
        &app,
        &gate,
        &json!({ "change_id": "x", "environment": "p", "artifact_digest": "d", "allow": true }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.store.head().await.unwrap().unwrap().head.size,
        size_before
    );

    // Every decision is a signed gate.decided entry of its change, in the evidence packet.
    let decisions = app.store.entries_of_kinds(&["gate.decided"]).await.unwrap();
    // The allow, two denials of CHG-G-OK, the unknown change, the cases, the rewritten one.
    assert_eq!(
        decisions.len(),
        1 + 2 + 1 + denied_cases().len() + 1,
        "one entry per decision"
    );
    let auditor = app.token(Role::Auditor).await;
    let p: Value = app
        .get("/v1/changes/CHG-G-OK", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    let gates = p["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 4, "{p}");
    assert_eq!(gates[0]["decision"], "allow");
    assert_eq!(gates[0]["seq"].as_u64(), Some(allowed_seq));
    assert_eq!(gates[0]["asked_by"]["name"], "test-gate");
    assert_eq!(gates[3]["decision"], "deny");
    let report = verify_store(&app.store, &[&app.vkey]).await;
    assert_eq!(report.exit_code, 0, "{:?}", report.findings);

    // The report shows, per change, whether it passed the gate.
    app.writer.checkpoint().await.unwrap();
    let out = db.path().join("january");
    let settings = cfg.report_settings(None).unwrap();
    crate::support::report::build_january(&app, &settings, &out, None)
        .await
        .unwrap();
    let rows = csv_rows(&out.join("population.csv"));
    let row = |id: &str| {
        rows.iter()
            .find(|r| r["change_id"] == id)
            .unwrap_or_else(|| panic!("{id} in the population"))
    };
    assert_eq!(row("CHG-G-OK")["gate_decision"], "allow");
    assert_eq!(row("CHG-G-OK")["gate_seq"], allowed_seq.to_string());
    assert_eq!(row("CHG-G-SELF")["gate_decision"], "deny");

    // verify-report re-derives the gate columns from the bundle's entries alone.
    let bundle = db.path().join("ledger.jsonl");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(crate::support::server::bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        text
    };
    run(&[
        "export",
        "--out",
        bundle.to_str().unwrap(),
        "--database-url",
        &db.url,
    ]);
    let text = run(&[
        "verify-report",
        out.to_str().unwrap(),
        "--trusted-key",
        &app.vkey,
        "--bundle",
        bundle.to_str().unwrap(),
    ]);
    assert!(
        text.contains("re-derived from the bundle's entries alone"),
        "{text}"
    );
    app.stop().await;
}
