//! Evidence nobody can forge, tried as an attacker would through the real OTLP listener with
//! tokens from the test issuer, at times around now and with the shipped limits: replayed and
//! stale tokens, backdated approvals, times from the future, contradicting statements, missing
//! decisions, unrotated credentials, rows forged into the derived tables.

use crate::support::db::{disable_triggers, exec};
use crate::support::idp;
use crate::support::otlp::kv;
use crate::support::report::build_january;
use crate::support::scenario::{
    Item, MIN, T0, export_request, normal_change, packet, scenario_config, send, send_log, workflow,
};
use crate::support::server::{TestApp, TestDb, bin, spawn_app_with, verify_store};
use changetrail::core::ledger::verify::Class;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;
use std::time::Duration;

const HOUR: u64 = 60 * MIN;

/// The scenarios' issuer with the shipped receipt limits (not the history allowance) and no
/// receipt tolerance, so the order the service receives things in is all that counts.
fn strict(db: &TestDb) -> changetrail::app::config::Config {
    let mut c = scenario_config(db);
    let shipped = changetrail::app::config::Config::defaults();
    c.evidence = shipped.evidence.clone();
    c.evidence.receipt_tolerance = Duration::ZERO;
    c.identity.max_token_age_at_receipt = shipped.identity.max_token_age_at_receipt;
    c
}

/// A start time `ago` before now, on a whole minute.
fn ago(d: u64) -> u64 {
    let now = changetrail::sys::now_ns() as u64;
    (now - d) / MIN * MIN
}

fn attr(item: &Item, key: &str) -> String {
    item.attr(key).unwrap_or_else(|| panic!("no {key}"))
}

use crate::support::scenario::codes;

fn evidence_of(p: &Value, code: &str) -> String {
    p["exceptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["code"] == code)
        .map(|x| x["evidence"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("no {code} in {}", p["exceptions"]))
}

fn kinds(p: &Value) -> Vec<String> {
    p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_approval_token_proves_nothing_on_the_second_change_sqlite() {
    a_replayed_approval_token_proves_nothing_on_the_second_change(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_approval_token_proves_nothing_on_the_second_change_postgres() {
    if let Some(db) =
        TestDb::postgres("a_replayed_approval_token_proves_nothing_on_the_second_change_postgres")
            .await
    {
        a_replayed_approval_token_proves_nothing_on_the_second_change(db).await;
    }
}

async fn a_replayed_approval_token_proves_nothing_on_the_second_change(db: TestDb) {
    let app = spawn_app_with(strict(&db)).await;
    let t0 = ago(2 * HOUR);
    let mut a = workflow("CHG-A", 1, t0);
    let a_items = normal_change(&mut a);
    let stolen = attr(&a_items[1], "changetrail.approval.token");
    send(&app, &a_items).await;
    // A minute later, on another change, while the token is still valid.
    let mut b = workflow("CHG-B", 2, t0 + MIN);
    let mut b_items = normal_change(&mut b);
    b_items[1].set("changetrail.approval.token", &stolen);
    send(&app, &b_items).await;

    let pa = packet(&app, "CHG-A").await;
    assert!(
        codes(&pa).is_empty(),
        "{:?}: {}",
        db.backend,
        pa["exceptions"]
    );
    let pb = packet(&app, "CHG-B").await;
    assert_eq!(
        codes(&pb),
        ["TOKEN_REUSED"],
        "{:?}: {}",
        db.backend,
        pb["exceptions"]
    );
    assert!(
        evidence_of(&pb, "TOKEN_REUSED").contains("was used first on CHG-A"),
        "{}",
        pb["exceptions"]
    );
    let approver = &pb["approvals"][0]["approver"];
    assert_eq!(approver["established"], "asserted", "{approver}");
    assert!(
        approver["reason"]
            .as_str()
            .unwrap()
            .contains("proves nothing here"),
        "{approver}"
    );
    // Replayed again, this time naming CHG-A's run, as if the token's first use were this
    // change's own: a run another change claims is not this change's, and the claim is a
    // contradiction on both.
    let mut c = workflow("CHG-C", 3, t0 + 2 * MIN);
    let mut c_items = normal_change(&mut c);
    c_items[1].set("changetrail.approval.token", &stolen);
    c_items[1].set("cicd.pipeline.run.id", &a.run);
    send(&app, &c_items).await;
    let pc = packet(&app, "CHG-C").await;
    let cc = codes(&pc);
    assert!(
        cc.contains(&"TOKEN_REUSED".into()) && cc.contains(&"CONFLICTING_EVIDENCE".into()),
        "{:?}: {}",
        db.backend,
        pc["exceptions"]
    );
    assert!(
        evidence_of(&pc, "CONFLICTING_EVIDENCE").contains("claimed by CHG-A"),
        "{}",
        pc["exceptions"]
    );
    let pa = packet(&app, "CHG-A").await;
    assert!(
        !codes(&pa).contains(&"TOKEN_REUSED".into()),
        "{}",
        pa["exceptions"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backdated_approval_received_after_the_deploy_is_not_before_it() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(strict(&db)).await;
    let t0 = ago(2 * HOUR);
    let mut wf = workflow("CHG-BACKDATED", 3, t0);
    let items = normal_change(&mut wf);
    // The deploy's record first; the approval, dated before it, arrives afterwards.
    send(
        &app,
        &[items[0].clone(), items[2].clone(), items[3].clone()],
    )
    .await;
    send(&app, &[items[1].clone()]).await;
    let p = packet(&app, "CHG-BACKDATED").await;
    assert_eq!(p["approvals"][0]["before_first_deploy"], false, "{p}");
    assert_eq!(codes(&p), ["APPROVAL_AFTER_DEPLOY"], "{}", p["exceptions"]);
    assert!(
        evidence_of(&p, "APPROVAL_AFTER_DEPLOY").contains("received"),
        "{}",
        p["exceptions"]
    );
    // The same change told in order (a minute later: tokens of its own): before.
    let mut wf = workflow("CHG-IN-ORDER", 4, t0 + MIN);
    send(&app, &normal_change(&mut wf)).await;
    let p = packet(&app, "CHG-IN-ORDER").await;
    assert_eq!(p["approvals"][0]["before_first_deploy"], true, "{p}");
    assert!(codes(&p).is_empty(), "{}", p["exceptions"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_expired_long_before_it_arrived_or_has_no_exp_proves_nothing() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(strict(&db)).await;
    // Three days ago, sent now: the tokens were valid at the (claimed) time of the events.
    let mut wf = workflow("CHG-STALE", 5, ago(72 * HOUR));
    send(&app, &normal_change(&mut wf)).await;
    let p = packet(&app, "CHG-STALE").await;
    assert_eq!(
        p["requester"]["established"], "asserted",
        "{}",
        p["requester"]
    );
    assert!(
        p["requester"]["reason"]
            .as_str()
            .unwrap()
            .contains("before it was received (at most 1 d 0 h is accepted)"),
        "{}",
        p["requester"]
    );
    let c = codes(&p);
    assert!(c.contains(&"UNVERIFIED_IDENTITY".into()), "{c:?}");
    assert!(
        c.contains(&"LATE_EVIDENCE".into()),
        "three days late: {c:?}"
    );

    // A token without exp.
    let mut wf = workflow("CHG-NOEXP", 6, ago(HOUR));
    let mut items = normal_change(&mut wf);
    let now_s = (changetrail::sys::now_ns() / 1_000_000_000) as u64;
    let forever = idp::token_claims(&serde_json::json!({
        "iss": idp::ISSUER, "aud": idp::AUDIENCE, "sub": "alice@example.com",
        "roles": ["engineer"], "iat": now_s - 7200}));
    items[0].set("changetrail.change.requester.token", &forever);
    send(&app, &items).await;
    let p = packet(&app, "CHG-NOEXP").await;
    assert_eq!(p["requester"]["established"], "asserted");
    assert_eq!(p["requester"]["reason"], "token has no exp claim");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_from_the_future_is_rejected_and_its_neighbours_kept() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(strict(&db)).await;
    let mut wf = workflow("CHG-FUTURE", 7, ago(HOUR));
    let items = normal_change(&mut wf);
    let mut future = items[1].clone();
    let ahead = changetrail::sys::now_ns() as u64 + HOUR;
    future.span.start_time_unix_nano = ahead;
    future.span.end_time_unix_nano = ahead + MIN;
    let mut sent = vec![items[0].clone(), future];
    sent.extend(items[2..4].iter().cloned());
    let body = export_request(&sent);
    let r = app
        .http
        .post(format!("{}/v1/traces", app.otlp))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(&app.ingest)
        .body(body.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let partial = resp.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("ahead of the receiver's clock"),
        "{}",
        partial.error_message
    );
    // The rest of the request is evidence as usual: no approval made it.
    let p = packet(&app, "CHG-FUTURE").await;
    assert_eq!(p["approvals"].as_array().unwrap().len(), 0, "{p}");
    assert!(codes(&p).contains(&"NO_APPROVAL".into()));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_facts_are_all_kept_and_flagged_sqlite() {
    contradicting_facts_are_all_kept_and_flagged(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradicting_facts_are_all_kept_and_flagged_postgres() {
    if let Some(db) =
        TestDb::postgres("contradicting_facts_are_all_kept_and_flagged_postgres").await
    {
        contradicting_facts_are_all_kept_and_flagged(db).await;
    }
}

async fn contradicting_facts_are_all_kept_and_flagged(db: TestDb) {
    let app = spawn_app_with(strict(&db)).await;
    let mut wf = workflow("CHG-TWO-FACES", 8, ago(2 * HOUR));
    let items = normal_change(&mut wf);
    // An early span says staging, to take the change out of the population; the run's own
    // span says production.
    let mut staging = wf.run_span("normal", "alice@example.com", None, vec![]);
    staging.set("deployment.environment.name", "staging");
    send(&app, &[staging]).await;
    send(&app, &items).await;
    let p = packet(&app, "CHG-TWO-FACES").await;
    let k = kinds(&p);
    assert_eq!(
        k.iter().filter(|k| *k == "change.requested").count(),
        2,
        "both statements are in the ledger: {k:?}"
    );
    assert_eq!(p["change"]["production"], true, "{}", p["change"]);
    assert!(
        codes(&p).contains(&"CONFLICTING_EVIDENCE".into()),
        "{}",
        p["exceptions"]
    );
    let e = evidence_of(&p, "CONFLICTING_EVIDENCE");
    assert!(
        e.contains("\"staging\"")
            && e.contains("\"production\"")
            && e.contains("sent by test-ingest"),
        "{e}"
    );
    let conflict = &p["conflicts"][0];
    assert_eq!(conflict["field"], "environment");
    assert_eq!(conflict["values"].as_array().unwrap().len(), 2);
    // The population of production changes holds it.
    let auditor = app.token(changetrail::auth::Role::Auditor).await;
    let list: Value = app
        .get("/v1/changes?environment=production", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 1, "{list}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_without_a_decision_is_not_approved() {
    let db = TestDb::sqlite().await;
    let app = spawn_app_with(strict(&db)).await;
    let mut wf = workflow("CHG-SILENT", 9, ago(2 * HOUR));
    let mut items = normal_change(&mut wf);
    items[1].unset("changetrail.approval.decision");
    send(&app, &items).await;
    let p = packet(&app, "CHG-SILENT").await;
    assert_eq!(p["approvals"][0]["decision"], "unknown");
    assert_eq!(
        codes(&p),
        ["NO_APPROVAL", "APPROVAL_DECISION_MISSING"],
        "{}",
        p["exceptions"]
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_credential_used_on_an_earlier_change_was_not_rotated_sqlite() {
    a_deploy_credential_used_on_an_earlier_change_was_not_rotated(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_credential_used_on_an_earlier_change_was_not_rotated_postgres() {
    if let Some(db) =
        TestDb::postgres("a_deploy_credential_used_on_an_earlier_change_was_not_rotated_postgres")
            .await
    {
        a_deploy_credential_used_on_an_earlier_change_was_not_rotated(db).await;
    }
}

async fn a_deploy_credential_used_on_an_earlier_change_was_not_rotated(db: TestDb) {
    let app = spawn_app_with(strict(&db)).await;
    let t0 = ago(2 * HOUR);
    let mut first = workflow("CHG-KEY-A", 10, t0);
    let first_items = normal_change(&mut first);
    let token = attr(&first_items[3], "changetrail.identity.token");
    send(&app, &first_items).await;
    let mut second = workflow("CHG-KEY-B", 11, t0 + MIN);
    let mut items = normal_change(&mut second);
    for d in &mut items[2..4] {
        d.set("changetrail.identity.token", &token);
    }
    send(&app, &items).await;
    let p = packet(&app, "CHG-KEY-B").await;
    assert_eq!(
        codes(&p),
        ["CREDENTIAL_NOT_ROTATED"],
        "{:?}: {}",
        db.backend,
        p["exceptions"]
    );
    assert!(
        evidence_of(&p, "CREDENTIAL_NOT_ROTATED").contains("used first on CHG-KEY-A"),
        "{}",
        p["exceptions"]
    );
    let identity = &p["steps"][0]["attempts"][1]["identity"];
    assert_eq!(identity["established"], "asserted", "{identity}");
    // The first change used it first: nothing to say there.
    assert!(codes(&packet(&app, "CHG-KEY-A").await).is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_never_deployed_and_a_restoring_rollback_need_no_approval_sqlite() {
    a_run_that_never_deployed_and_a_restoring_rollback_need_no_approval(TestDb::sqlite().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_never_deployed_and_a_restoring_rollback_need_no_approval_postgres() {
    if let Some(db) = TestDb::postgres(
        "a_run_that_never_deployed_and_a_restoring_rollback_need_no_approval_postgres",
    )
    .await
    {
        a_run_that_never_deployed_and_a_restoring_rollback_need_no_approval(db).await;
    }
}

async fn a_run_that_never_deployed_and_a_restoring_rollback_need_no_approval(db: TestDb) {
    let app = spawn_app_with(strict(&db)).await;
    let t0 = ago(6 * HOUR);
    // Rejected, then the run failed: nothing was deployed.
    let mut wf = workflow("CHG-REJECTED", 12, t0);
    let mut run = wf.run_span("normal", "alice@example.com", None, vec![]);
    run.set("cicd.pipeline.result", "failure");
    let t = |m: u64| (t0 + m * MIN) as i64;
    let bob = idp::token("bob@example.com", &["release-approver"], t(15));
    let rejected = wf.approval("bob@example.com", Some(bob), "rejected", MIN, 15 * MIN);
    send(&app, &[run, rejected]).await;
    let p = packet(&app, "CHG-REJECTED").await;
    assert!(
        !codes(&p).contains(&"NO_APPROVAL".into()),
        "{}",
        p["exceptions"]
    );

    // 1.41.0 ran (approved), 1.42.0 replaced it, then an automatic rollback put 1.41.0 back
    // without an approval of its own.
    let mut old = workflow("CHG-OLD", 13, t0);
    old.version = "1.41.0".into();
    send(&app, &normal_change(&mut old)).await;
    let mut new = workflow("CHG-NEW", 14, t0 + HOUR);
    send(&app, &normal_change(&mut new)).await;
    let mut rb = workflow("CHG-AUTO-RB", 15, t0 + 2 * HOUR);
    rb.version = "1.41.0".into();
    let run = rb.run_span(
        "rollback",
        "conductor",
        None,
        vec![kv("changetrail.change.rollback_of", "CHG-NEW")],
    );
    let deploy = rb.deploy(0, "success", MIN, 3 * MIN);
    let live = rb.service_span("GET /pay", 4 * MIN);
    send(&app, &[run, deploy, live]).await;
    let p = packet(&app, "CHG-AUTO-RB").await;
    let c = codes(&p);
    assert!(!c.contains(&"NO_APPROVAL".into()), "{c:?}");
    assert!(!c.contains(&"ROLLBACK_UNLINKED".into()), "{c:?}");
    assert_eq!(p["judgement"]["restores_seen_version"], true);
    // And the version it put back is explained by it, not an unlinked deploy.
    let auditor = app.token(changetrail::auth::Role::Auditor).await;
    let unlinked: Value = app
        .get("/v1/deploys/unlinked", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        unlinked["unlinked_deploys"],
        serde_json::json!([]),
        "{unlinked}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_version_redeployed_by_no_change_is_an_unlinked_deploy_sqlite() {
    an_old_version_redeployed_by_no_change_is_an_unlinked_deploy(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_version_redeployed_by_no_change_is_an_unlinked_deploy_postgres() {
    if let Some(db) =
        TestDb::postgres("an_old_version_redeployed_by_no_change_is_an_unlinked_deploy_postgres")
            .await
    {
        an_old_version_redeployed_by_no_change_is_an_unlinked_deploy(db).await;
    }
}

async fn an_old_version_redeployed_by_no_change_is_an_unlinked_deploy(db: TestDb) {
    let app = spawn_app_with(strict(&db)).await;
    let t0 = ago(6 * HOUR);
    let mut one = workflow("CHG-V1", 16, t0);
    one.version = "1.0.0".into();
    send(&app, &normal_change(&mut one)).await;
    let mut two = workflow("CHG-V2", 17, t0 + HOUR);
    two.version = "2.0.0".into();
    send(&app, &normal_change(&mut two)).await;
    // Two hours later 1.0.0 serves again, and no change put it there.
    let mut rogue = workflow("none", 18, t0 + 3 * HOUR);
    rogue.version = "1.0.0".into();
    let live = rogue.service_span("GET /pay", 0);
    send(&app, &[live]).await;
    let auditor = app.token(changetrail::auth::Role::Auditor).await;
    let unlinked: Value = app
        .get("/v1/deploys/unlinked", Some(&auditor))
        .await
        .json()
        .await
        .unwrap();
    let list = unlinked["unlinked_deploys"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{unlinked}");
    assert_eq!(list[0]["version"], "1.0.0");
    assert_eq!(list[0]["previous"], "2.0.0");
    app.stop().await;
}

/// An approval as a log record, so the ledger binds a log record too.
async fn send_approval_log(app: &TestApp, change: &str, at: u64) {
    let record = LogRecord {
        time_unix_nano: at,
        observed_time_unix_nano: at,
        event_name: "changetrail.approval".into(),
        attributes: vec![
            kv("changetrail.change.id", change),
            kv("changetrail.approval.decision", "approved"),
            kv("changetrail.approval.approver", "erin@example.com"),
        ],
        ..Default::default()
    };
    send_log(app, record).await;
}

/// Findings of DERIVED_MISMATCH whose detail mentions `what`.
fn mismatches<'a>(r: &'a changetrail::core::ledger::verify::Report, what: &str) -> Vec<&'a str> {
    r.findings
        .iter()
        .filter(|f| f.class == Class::DerivedMismatch && f.detail.contains(what))
        .map(|f| f.detail.as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_forged_into_or_changed_in_any_derived_table_fails_verification_sqlite() {
    a_row_forged_into_or_changed_in_any_derived_table_fails_verification(TestDb::sqlite().await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_forged_into_or_changed_in_any_derived_table_fails_verification_postgres() {
    if let Some(db) = TestDb::postgres(
        "a_row_forged_into_or_changed_in_any_derived_table_fails_verification_postgres",
    )
    .await
    {
        a_row_forged_into_or_changed_in_any_derived_table_fails_verification(db).await;
    }
}

async fn a_row_forged_into_or_changed_in_any_derived_table_fails_verification(db: TestDb) {
    let app = spawn_app_with(strict(&db)).await;
    let mut wf = workflow("CHG-DERIVED", 19, ago(2 * HOUR));
    send(&app, &normal_change(&mut wf)).await;
    send_approval_log(&app, "CHG-DERIVED", ago(HOUR)).await;
    app.writer.checkpoint().await.unwrap();
    // A token made and revoked through the API: two entries.
    let made: Value = app
        .http
        .post(format!("{}/v1/admin/tokens", app.base))
        .bearer_auth(&app.admin)
        .json(&serde_json::json!({"role": "auditor", "name": "temporary"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revoked_id = made["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.revoke(&revoked_id).await,
        reqwest::StatusCode::NO_CONTENT
    );
    let entries = app.store.token_entries().await.unwrap();
    let created = entries.iter().filter(|e| e.1 == "token.created").count();
    assert_eq!(
        created, 4,
        "bootstrap, reviewer, ingest, temporary: {entries:?}"
    );
    let revoked = entries.iter().find(|e| e.1 == "token.revoked").unwrap();
    assert!(revoked.2.as_deref().unwrap().contains(&revoked_id));
    assert!(
        revoked.2.as_deref().unwrap().contains("admin token"),
        "the entry names who revoked it: {revoked:?}"
    );
    let vkey = app.vkey.clone();
    let clean = verify_store(&app.store, &[&vkey]).await;
    assert_eq!(clean.exit_code, 0, "{:?}: {:?}", db.backend, clean.findings);
    app.stop().await;
    let store = db.store().await;

    // A database writer adds an admin token of their own, and un-revokes the one revoked.
    exec(&store, "INSERT INTO api_tokens (id, name, role, secret_hash, created_ns, revoked_ns) \
         SELECT 'f0f0f0f0f0f0', 'backdoor', 'admin', secret_hash, created_ns, NULL FROM api_tokens LIMIT 1").await.unwrap();
    exec(
        &store,
        &format!("UPDATE api_tokens SET revoked_ns = NULL WHERE id = '{revoked_id}'"),
    )
    .await
    .unwrap();

    // A database writer adds a row to each table (no key needed)...
    let facts_row = "INSERT INTO facts (fact_key, kind, change_id, run_id, source, time_ns, payload, entry_seq, received_ns) \
         SELECT 'approval:CHG-DERIVED:forged:span', kind, change_id, run_id, source, time_ns, payload, entry_seq, received_ns \
         FROM facts WHERE kind = 'approval.decided' AND source = 'span'";
    exec(&store, facts_row).await.unwrap();
    exec(&store, "INSERT INTO credentials (credential, subject, first_seq) SELECT 'sha256:forged', subject, first_seq FROM credentials LIMIT 1").await.unwrap();
    // A row naming no entry at all (before the first), which reports bounded only from
    // above would read.
    exec(&store, "INSERT INTO facts (fact_key, kind, change_id, run_id, source, time_ns, payload, entry_seq, received_ns) \
         SELECT 'forged-before-the-first', kind, change_id, run_id, source, time_ns, payload, -1, received_ns \
         FROM facts WHERE kind = 'change.requested'").await.unwrap();
    // Bytes concatenated stay bytes: SQLite needs telling.
    let twice = |col: &str| match db.backend {
        changetrail::storage::Backend::Sqlite => format!("CAST({col} || {col} AS BLOB)"),
        changetrail::storage::Backend::Postgres => format!("{col} || {col}"),
    };
    exec(&store, &format!("INSERT INTO spans (trace_id, span_id, parent_span_id, digest, body, service, name, start_ns, end_ns, subject, rule, entry_seq, received_ns) \
         SELECT trace_id, {}, parent_span_id, digest, body, service, name, start_ns, end_ns, subject, rule, entry_seq, received_ns FROM spans LIMIT 1", twice("span_id"))).await.unwrap();
    exec(&store, &format!("INSERT INTO log_records (digest, body, trace_id, span_id, time_ns, event_name, subject, entry_seq, received_ns) \
         SELECT {}, body, trace_id, span_id, time_ns, event_name, 'CHG-OTHER', entry_seq, received_ns FROM log_records LIMIT 1", twice("digest"))).await.unwrap();
    // ... and changes one in each (past the triggers, which a writer with the rights drops).
    for t in ["facts", "credentials", "spans", "log_records"] {
        disable_triggers(&store, t).await;
    }
    exec(&store, "UPDATE facts SET payload = replace(payload, '\"decision\":\"approved\"', '\"decision\":\"rejected\"') WHERE fact_key <> 'approval:CHG-DERIVED:forged:span' AND kind = 'approval.decided'").await.unwrap();
    exec(&store, "UPDATE credentials SET subject = 'CHG-ELSEWHERE' WHERE credential <> 'sha256:forged' AND first_seq = (SELECT MAX(first_seq) FROM credentials)").await.unwrap();
    exec(
        &store,
        "UPDATE spans SET service = 'someone-else' WHERE rule = 'link'",
    )
    .await
    .unwrap();
    exec(
        &store,
        "UPDATE log_records SET subject = 'CHG-ELSEWHERE' WHERE subject = 'CHG-DERIVED'",
    )
    .await
    .unwrap();

    let r = verify_store(&store, &[&vkey]).await;
    assert_eq!(r.exit_code, 1, "{:?}", db.backend);
    assert!(
        !mismatches(
            &r,
            "\"forged-before-the-first\" names entry -1, outside the ledger"
        )
        .is_empty(),
        "{:?}",
        r.findings
    );
    for (table, forged, changed) in [
        ("facts", "no signed entry produced it", "payload differ"),
        ("credentials", "sha256:forged", "CHG-ELSEWHERE"),
        ("spans", "does not bind it", "service (against its body)"),
        ("log_records", "does not bind it", "subject differ"),
        (
            "api_tokens",
            "f0f0f0f0f0f0 (admin, \"backdoor\") was created by no signed entry",
            "is active, but entry",
        ),
    ] {
        let found = mismatches(&r, table);
        assert!(
            found.iter().any(|d| d.contains(forged)) && found.iter().any(|d| d.contains(changed)),
            "{:?} {table}: {found:#?}",
            db.backend
        );
    }
    // The command says so too, naming the class and a table, and exits 1.
    let o = std::process::Command::new(bin())
        .args(["verify", "--trusted-key", &vkey, "--database-url", &db.url])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("DERIVED_MISMATCH") && text.contains("facts row"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_fact_removes_every_copy_and_still_verifies_sqlite() {
    erasing_a_fact_removes_every_copy_and_still_verifies(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_fact_removes_every_copy_and_still_verifies_postgres() {
    if let Some(db) =
        TestDb::postgres("erasing_a_fact_removes_every_copy_and_still_verifies_postgres").await
    {
        erasing_a_fact_removes_every_copy_and_still_verifies(db).await;
    }
}

async fn erasing_a_fact_removes_every_copy_and_still_verifies(db: TestDb) {
    let app = spawn_app_with(strict(&db)).await;
    let mut wf = workflow("CHG-ERASE", 20, ago(2 * HOUR));
    send(&app, &normal_change(&mut wf)).await;
    let p = packet(&app, "CHG-ERASE").await;
    let seq = p["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "approval.decided")
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    app.writer
        .erase(seq, "GDPR request 17", "dpo@example.com")
        .await
        .unwrap();
    let count = |sql: &'static str| {
        let store = app.store.clone();
        async move {
            match &store {
                changetrail::storage::Store::Sqlite(p) => {
                    sqlx::query_scalar::<_, i64>(sql)
                        .bind(seq as i64)
                        .fetch_one(p)
                        .await
                }
                changetrail::storage::Store::Postgres(p) => {
                    sqlx::query_scalar::<_, i64>(sql)
                        .bind(seq as i64)
                        .fetch_one(p)
                        .await
                }
            }
            .unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM facts WHERE entry_seq = $1").await,
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM credentials WHERE first_seq = $1").await,
        0
    );
    let r = verify_store(&app.store, &[&app.vkey]).await;
    assert_eq!(r.exit_code, 0, "{:?}: {:?}", db.backend, r.findings);
    assert!(r.has(Class::Redacted));
    // The approval is gone from the evidence; the change says so.
    let p = packet(&app, "CHG-ERASE").await;
    assert_eq!(p["approvals"].as_array().unwrap().len(), 0, "{p}");
    app.stop().await;
}

/// One change of a random scenario set: what it is, and which of the things that go wrong in
/// practice happen to it.
#[derive(Debug, Clone)]
struct Case {
    day: u64,
    kind: u8,
    staging: bool,
    also_staging: bool,
    approval: u8,
    token: u8,
    deploy: u8,
    version: u8,
    rollback_of: u8,
    live: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (0u64..45, 0u8..4, any::<bool>(), 0u8..8),
        (0u8..5, 0u8..3, 0u8..4, 0u8..3),
        (0u8..3, any::<bool>()),
    )
        .prop_map(
            |(
                (day, kind, staging, also),
                (approval, token, deploy, version),
                (rollback_of, live),
            )| Case {
                day,
                kind,
                staging,
                also_staging: also == 0,
                approval,
                token,
                deploy,
                version,
                rollback_of,
                live,
            },
        )
}

/// The spans of a scenario set (changes CHG-P0, CHG-P1, …), in order, through the workflow
/// builders the other tests use.
fn scenario_items(cases: &[Case]) -> Vec<Item> {
    let day = 86_400 * 1_000_000_000u64;
    let mut items = Vec::new();
    let mut last_approval_token: Option<String> = None;
    for (i, c) in cases.iter().enumerate() {
        let id = format!("CHG-P{i}");
        let t0 = T0 + c.day * day + i as u64 * MIN;
        let mut wf = workflow(&id, 100 + i as u8, t0);
        wf.version = format!("{}.0.0", c.version + 1);
        let kind = ["normal", "normal", "emergency", "rollback"][c.kind as usize];
        let mut extra = Vec::new();
        match c.rollback_of {
            1 if i > 0 => extra.push(kv(
                "changetrail.change.rollback_of",
                &format!("CHG-P{}", i - 1),
            )),
            2 => extra.push(kv("changetrail.change.rollback_of", "CHG-NOWHERE")),
            _ => {}
        }
        let t = |m: u64| (t0 + m * MIN) as i64;
        let mut run = wf.run_span(
            kind,
            "alice@example.com",
            Some(idp::token("alice@example.com", &["engineer"], t(0))),
            extra,
        );
        if c.staging {
            run.set("deployment.environment.name", "staging");
        }
        items.push(run);
        if c.also_staging {
            let mut other = wf.run_span(kind, "alice@example.com", None, vec![]);
            other.set("deployment.environment.name", "staging");
            items.push(other);
        }
        let token = match c.token {
            0 => Some(idp::token("bob@example.com", &["release-approver"], t(15))),
            1 => None,
            _ => last_approval_token.clone(),
        };
        let (decision, end) = match c.approval {
            0 => (None, 0),
            1 => (Some("approved"), 15),
            2 => (Some("approved"), 40),
            3 => (Some("rejected"), 15),
            _ => (Some("LGTM"), 15),
        };
        if let Some(d) = decision {
            let mut a = wf.approval("bob@example.com", token.clone(), d, MIN, end * MIN);
            if d == "LGTM" {
                a.unset("changetrail.approval.decision");
            }
            last_approval_token = token.or(last_approval_token);
            items.push(a);
        }
        match c.deploy {
            0 => {}
            1 => items.push(wf.deploy(0, "success", 20 * MIN, 25 * MIN)),
            2 => {
                items.push(wf.deploy(0, "timeout", 20 * MIN, 22 * MIN));
                items.push(wf.deploy(1, "success", 23 * MIN, 25 * MIN));
            }
            _ => items.push(wf.deploy(0, "failure", 20 * MIN, 22 * MIN)),
        }
        if c.live {
            items.push(wf.service_span("GET /pay", 26 * MIN));
        }
    }
    // A version nobody deployed, in the middle of the period.
    let mut rogue = workflow("none", 99, T0 + 20 * day);
    rogue.version = "9.9.9".into();
    items.push(rogue.service_span("GET /pay", 0));
    items
}

proptest::proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// For random scenario sets, the report re-derived offline from a bundle (by
    /// `verify-report --bundle`) is row for row the report the service built.
    #[test]
    fn the_offline_rederivation_equals_the_services_report(cases in proptest::collection::vec(case(), 1..9)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let db = TestDb::sqlite().await;
            let mut cfg = scenario_config(&db);
            cfg.reports.approver_roles = vec!["release-approver".into()];
            let app = spawn_app_with(cfg.clone()).await;
            let items = scenario_items(&cases);
            // In two exports, so receipts differ between the halves.
            let half = items.len() / 2;
            send(&app, &items[..half]).await;
            send(&app, &items[half..]).await;
            app.writer.checkpoint().await.unwrap();
            let dir = db.path().join("report");
            let settings = cfg.report_settings(None).unwrap();
            build_january(&app, &settings, &dir, None).await.unwrap();
            let bundle = db.path().join("ledger.jsonl");
            let plan = changetrail::read::export::plan(&app.store, None, None, None).await.unwrap();
            let mut rx = changetrail::read::export::stream(app.store.clone(), plan, "2026-12-06T00:00:00Z".into());
            let mut text = String::new();
            while let Some(line) = rx.recv().await {
                text.push_str(&line.unwrap());
            }
            std::fs::write(&bundle, text).unwrap();
            let trusted = [changetrail::core::ledger::keys::Vkey::parse(&app.vkey).unwrap()];
            let out = changetrail::report::verify::verify_report(
                &dir,
                changetrail::report::verify::LedgerSource::Bundle(bundle),
                &trusted,
                2,
                None,
            )
            .await
            .unwrap();
            app.stop().await;
            prop_assert!(
                !out.failed() && out.passed.iter().any(|p| p.starts_with("re-derived")),
                "{cases:#?}\n{}",
                out.text(&dir)
            );
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_before_they_were_recorded_are_adopted_once_sqlite() {
    tokens_made_before_they_were_recorded_are_adopted_once(TestDb::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_made_before_they_were_recorded_are_adopted_once_postgres() {
    if let Some(db) =
        TestDb::postgres("tokens_made_before_they_were_recorded_are_adopted_once_postgres").await
    {
        tokens_made_before_they_were_recorded_are_adopted_once(db).await;
    }
}

/// Tokens made before the ledger recorded them are recorded once, when the first version that
/// records tokens opens the ledger; after that, a token row no entry produced is a finding.
async fn tokens_made_before_they_were_recorded_are_adopted_once(db: TestDb) {
    let cfg = strict(&db);
    let (store, writer) = changetrail::app::startup::open_ledger(&cfg, true)
        .await
        .unwrap();
    // As an earlier version stored it: the row alone.
    let (row, _) = changetrail::auth::issue("old collector", changetrail::auth::Role::Ingest, 1);
    let hash = hex::encode(&row.secret_hash);
    let insert = match db.backend {
        changetrail::storage::Backend::Sqlite => format!("X'{hash}'"),
        changetrail::storage::Backend::Postgres => format!("'\\x{hash}'::bytea"),
    };
    exec(
        &store,
        &format!(
            "INSERT INTO api_tokens (id, name, role, secret_hash, created_ns, revoked_ns) \
         VALUES ('{}', 'old collector', 'ingest', {insert}, 1, NULL)",
            row.id
        ),
    )
    .await
    .unwrap();
    assert!(store.token_entries().await.unwrap().is_empty());
    let vkey = writer.key().vkey().to_string();
    let before = verify_store(&store, &[&vkey]).await;
    assert!(
        before
            .findings
            .iter()
            .any(|f| f.class == Class::DerivedMismatch && f.detail.contains(&row.id)),
        "{:?}",
        before.findings
    );
    store.close().await;
    // The next start records it.
    let (store, _) = changetrail::app::startup::open_ledger(&cfg, true)
        .await
        .unwrap();
    let entries = store.token_entries().await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0]
            .2
            .as_deref()
            .unwrap()
            .contains("\"adopted\":true")
    );
    let after = verify_store(&store, &[&vkey]).await;
    assert_eq!(after.exit_code, 0, "{:?}: {:?}", db.backend, after.findings);
    // Only once: a row added later is not adopted again.
    exec(
        &store,
        "INSERT INTO api_tokens (id, name, role, secret_hash, created_ns, revoked_ns) \
         SELECT 'abcdefabcdef', 'late', 'admin', secret_hash, 2, NULL FROM api_tokens LIMIT 1",
    )
    .await
    .unwrap();
    store.close().await;
    let (store, _) = changetrail::app::startup::open_ledger(&cfg, true)
        .await
        .unwrap();
    assert_eq!(store.token_entries().await.unwrap().len(), 1);
    let r = verify_store(&store, &[&vkey]).await;
    assert!(
        r.findings
            .iter()
            .any(|f| f.detail.contains("api_tokens row abcdefabcdef")),
        "{:?}",
        r.findings
    );
    store.close().await;
}
