//! The scenarios' server (the test issuer trusted, history allowed in), workflows whose people
//! carry the test issuer's tokens, sending them through the real OTLP/HTTP listener, a change's
//! evidence packet, and the report scenarios with the exception codes each must raise.

use crate::support::idp;
use crate::support::otlp::kv;
use crate::support::server::{TestApp, TestDb, history_config};
use changetrail::auth::Role;
pub use changetrail::demo::scenario::{Item, MIN, Workflow, export_request, normal_change};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// 2026-01-01T10:00:00Z in nanoseconds.
pub const T0: u64 = 1_767_261_600 * 1_000_000_000;
const DAY: u64 = 24 * 60 * MIN;

/// The Conductor execution of research/soc2.md §3.9 (tests/it/vectors).
pub const CONDUCTOR: &str = include_str!("../vectors/conductor-deploy-execution.json");

/// The test server trusting the test issuer, replaying history (`history_config`).
pub fn scenario_config(db: &TestDb) -> changetrail::app::config::Config {
    let mut c = history_config(db);
    c.identity.issuers = vec![changetrail::app::config::IssuerConfig {
        issuer: idp::ISSUER.into(),
        audience: idp::AUDIENCE.into(),
        jwks_file: idp::jwks_path().into(),
        discovery_url: String::new(),
        refresh_interval: std::time::Duration::from_secs(3600),
        roles_claim: "roles".into(),
    }];
    c
}

/// Change `change`'s workflow (see `Workflow::new`), its people and deployer carrying tokens of
/// the test issuer.
pub fn workflow(change: &str, n: u8, t0: u64) -> Workflow {
    Workflow::new(change, n, t0).with_tokens(Arc::new(idp::token))
}

/// Sends `items` in one OTLP/HTTP export; it must be accepted.
pub async fn send(app: &TestApp, items: &[Item]) {
    let r = app
        .http
        .post(format!("{}/v1/traces", app.otlp))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(&app.ingest)
        .body(export_request(items).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        reqwest::StatusCode::OK,
        "{}",
        r.text().await.unwrap()
    );
}

/// One log record from the `approvals` service, over OTLP/HTTP; it must be accepted.
pub async fn send_log(app: &TestApp, record: LogRecord) {
    let req = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "approvals")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let r = app
        .http
        .post(format!("{}/v1/logs", app.otlp))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(&app.ingest)
        .body(req.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

/// The evidence packet of `change`, read by an auditor.
pub async fn packet(app: &TestApp, change: &str) -> Value {
    let auditor = app.token(Role::Auditor).await;
    let r = app
        .get(&format!("/v1/changes/{change}"), Some(&auditor))
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::OK, "{change}");
    r.json().await.unwrap()
}

/// Every scenario of the correlation issue, with the exception codes each must get.
pub async fn send_scenarios(app: &TestApp) -> BTreeMap<String, BTreeSet<&'static str>> {
    let at = |m: u64| (T0 + m * MIN) as i64;
    let mut expect: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    let mut items = Vec::new();

    // A normal change with a retried deploy: information, not an exception.
    let mut ok = workflow("CHG-OK", 40, T0);
    items.extend(normal_change(&mut ok));
    expect.insert("CHG-OK".into(), BTreeSet::new());

    // Self-approval by someone without the approver role.
    let mut wf = workflow("CHG-SELF", 41, T0 + DAY);
    let t = |m: u64| at(m) + DAY as i64;
    items.extend([
        wf.run_span(
            "normal",
            "alice@example.com",
            Some(idp::token("alice@example.com", &[], t(0))),
            vec![],
        ),
        wf.approval(
            "alice@example.com",
            Some(idp::token("alice@example.com", &[], t(5))),
            "approved",
            MIN,
            5 * MIN,
        ),
        wf.deploy(0, "success", 6 * MIN, 7 * MIN),
    ]);
    expect.insert(
        "CHG-SELF".into(),
        ["SELF_APPROVAL", "APPROVER_NOT_AUTHORIZED"].into(),
    );

    // Approved after the deploy started; the requester has no token.
    let mut wf = workflow("CHG-LATE", 42, T0 + 8 * DAY);
    let t = |m: u64| at(m) + 8 * DAY as i64;
    items.extend([
        wf.run_span("normal", "alice@example.com", None, vec![]),
        wf.deploy(0, "success", 2 * MIN, 4 * MIN),
        wf.approval(
            "bob@example.com",
            Some(idp::token("bob@example.com", &["release-approver"], t(10))),
            "approved",
            MIN,
            10 * MIN,
        ),
    ]);
    expect.insert(
        "CHG-LATE".into(),
        ["APPROVAL_AFTER_DEPLOY", "UNVERIFIED_IDENTITY"].into(),
    );

    // Rejected, deployed anyway.
    let mut wf = workflow("CHG-REJ", 43, T0 + 9 * DAY);
    let t = |m: u64| at(m) + 9 * DAY as i64;
    items.extend([
        wf.run_span("normal", "carol@example.com", None, vec![]),
        wf.approval(
            "bob@example.com",
            Some(idp::token("bob@example.com", &["release-approver"], t(3))),
            "rejected",
            MIN,
            3 * MIN,
        ),
        wf.deploy(0, "success", 4 * MIN, 5 * MIN),
    ]);
    expect.insert(
        "CHG-REJ".into(),
        ["NO_APPROVAL", "UNVERIFIED_IDENTITY"].into(),
    );

    // An emergency with neither justification nor review.
    let mut wf = workflow("CHG-EMERG", 44, T0 + 10 * DAY);
    items.extend([
        wf.run_span("emergency", "dave@example.com", None, vec![]),
        wf.deploy(0, "success", MIN, 2 * MIN),
    ]);
    expect.insert(
        "CHG-EMERG".into(),
        ["EMERGENCY_NO_REVIEW", "UNVERIFIED_IDENTITY"].into(),
    );

    // Approved one digest, deployed another.
    let mut wf = workflow("CHG-SWAP", 45, T0 + 15 * DAY);
    let t = |m: u64| at(m) + 15 * DAY as i64;
    let run = wf.run_span(
        "normal",
        "alice@example.com",
        Some(idp::token("alice@example.com", &["engineer"], t(0))),
        vec![],
    );
    let mut approval = wf.approval(
        "bob@example.com",
        Some(idp::token("bob@example.com", &["release-approver"], t(5))),
        "approved",
        MIN,
        5 * MIN,
    );
    approval.set("changetrail.approval.subject", "sha256:0000aaaa");
    items.extend([run, approval, wf.deploy(0, "success", 6 * MIN, 7 * MIN)]);
    expect.insert("CHG-SWAP".into(), ["APPROVED_SUBJECT_MISMATCH"].into());

    // A rollback that names nothing it rolls back (approved, so that is its only problem).
    let mut wf = workflow("CHG-RB", 46, T0 + 16 * DAY);
    let t = |m: u64| at(m) + 16 * DAY as i64;
    items.extend([
        wf.run_span(
            "rollback",
            "alice@example.com",
            Some(idp::token("alice@example.com", &["engineer"], t(0))),
            vec![],
        ),
        wf.approval(
            "bob@example.com",
            Some(idp::token("bob@example.com", &["release-approver"], t(2))),
            "approved",
            MIN,
            2 * MIN,
        ),
        wf.deploy(0, "success", 3 * MIN, 4 * MIN),
    ]);
    expect.insert("CHG-RB".into(), ["ROLLBACK_UNLINKED"].into());

    // A rollback that names what it rolls back: linked both ways, no exception.
    let mut wf = workflow("CHG-RB2", 51, T0 + 17 * DAY);
    let t = |m: u64| at(m) + 17 * DAY as i64;
    items.extend([
        wf.run_span(
            "rollback",
            "alice@example.com",
            Some(idp::token("alice@example.com", &["engineer"], t(0))),
            vec![kv("changetrail.change.rollback_of", "CHG-OK")],
        ),
        wf.approval(
            "bob@example.com",
            Some(idp::token("bob@example.com", &["release-approver"], t(2))),
            "approved",
            MIN,
            2 * MIN,
        ),
        wf.deploy(0, "success", 3 * MIN, 4 * MIN),
    ]);
    expect.insert("CHG-RB2".into(), BTreeSet::new());

    // Not in the population: a staging change, and a production change after the period.
    let mut wf = workflow("CHG-STAGING", 47, T0 + 2 * DAY);
    let mut run = wf.run_span("normal", "alice@example.com", None, vec![]);
    run.set("deployment.environment.name", "staging");
    items.push(run);
    let mut wf = workflow("CHG-FEB", 48, T0 + 40 * DAY);
    items.push(wf.run_span("normal", "alice@example.com", None, vec![]));

    // Requested and deployed the evening before the period; its version is first seen just
    // inside it. Not in the population, and it explains that version: no unlinked deploy.
    let mut wf = workflow("CHG-DEC", 50, T0 - 630 * MIN);
    wf.service = "ledger-api".into();
    wf.version = "2.0.0".into();
    items.extend([
        wf.run_span("normal", "alice@example.com", None, vec![]),
        wf.approval("bob@example.com", None, "approved", MIN, 5 * MIN),
        wf.deploy(0, "success", 16 * MIN, 21 * MIN),
        wf.service_span("GET /balance", 40 * MIN),
    ]);

    // A version in production nothing deployed.
    let mut rogue = workflow("none", 49, T0 + 20 * DAY);
    rogue.service = "checkout".into();
    rogue.version = "7.0.1".into();
    items.push(rogue.service_span("GET /cart", 0));
    send(app, &items).await;

    // Conductor: imported, then restarted with its history wiped and the approval skipped. The
    // tokens in the vector are placeholders, so every identity in it stays asserted.
    let mut doc: Value = serde_json::from_str(CONDUCTOR).unwrap();
    let import = |d: Value| {
        app.http
            .post(format!("{}/v1/import/conductor", app.base))
            .bearer_auth(&app.ingest)
            .json(&d)
            .send()
    };
    assert!(import(doc.clone()).await.unwrap().status().is_success());
    let tasks = doc["tasks"].as_array_mut().unwrap();
    tasks.retain(|t| t["referenceTaskName"] != "deploy");
    tasks[1]["status"] = "SKIPPED".into();
    tasks[1]["taskId"] = "0a1b2c3d-0000-4000-8000-00000000000a".into();
    assert!(import(doc).await.unwrap().status().is_success());
    expect.insert(
        "CHG-2041".into(),
        [
            "HISTORY_REWRITTEN",
            "APPROVAL_BYPASSED",
            "UNVERIFIED_IDENTITY",
            "APPROVER_NOT_AUTHORIZED",
        ]
        .into(),
    );
    app.writer.checkpoint().await.unwrap();
    expect
}

/// The exception codes of a change's packet, in its order.
pub fn codes(p: &Value) -> Vec<String> {
    p["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["code"].as_str().unwrap().to_owned())
        .collect()
}

/// `POST /v1/import/conductor` with the ingest token: the status and the answer.
pub async fn import_over_rest(app: &TestApp, doc: &Value) -> (reqwest::StatusCode, Value) {
    let r = app
        .http
        .post(format!("{}/v1/import/conductor", app.base))
        .bearer_auth(&app.ingest)
        .json(doc)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}
