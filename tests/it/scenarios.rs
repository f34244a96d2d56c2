//! Change correlation end to end: realistic scenarios through the real OTLP listeners (and the
//! Conductor import), each asserting the evidence packet and the entries written.

use crate::helpers::{TestApp, TestDb, config, spawn_app_with};
use crate::idp;
use crate::otlp::kv;
use changetrail::auth::Role;
use changetrail::core::hash::{Hash, unb64};
use changetrail::core::merkle::verify_inclusion;
use changetrail::core::note::{Checkpoint, Note};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use proptest::prelude::*;
use prost::Message;
use serde_json::Value;

/// 2026-01-01T10:00:00Z in nanoseconds.
pub const T0: u64 = 1_767_261_600 * 1_000_000_000;
const MIN: u64 = 60 * 1_000_000_000;

pub fn scenario_config(db: &TestDb) -> changetrail::config::Config {
    let mut c = config(db);
    c.identity.issuers = vec![changetrail::config::IssuerConfig {
        issuer: idp::ISSUER.into(),
        audience: idp::AUDIENCE.into(),
        jwks_file: idp::jwks_path().into(),
        roles_claim: "roles".into(),
    }];
    c
}

/// Who sends what: the resource (service) and its spans.
#[derive(Clone, Debug)]
pub struct Item {
    pub resource: Vec<(String, String)>,
    pub span: Span,
}

fn resource(attrs: &[(&str, &str)]) -> Vec<(String, String)> {
    attrs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The workflow engine's resource: no version (it is not what is being deployed).
fn engine() -> Vec<(String, String)> {
    resource(&[("service.name", "conductor")])
}

/// The deployed service in production at `version`.
fn service(name: &str, version: &str) -> Vec<(String, String)> {
    resource(&[
        ("service.name", name),
        ("service.version", version),
        ("deployment.environment.name", "production"),
    ])
}

pub struct Workflow {
    pub change: String,
    pub run: String,
    pub trace: [u8; 16],
    pub t0: u64,
    pub service: String,
    pub version: String,
    next_span: u64,
}

impl Workflow {
    pub fn new(change: &str, n: u8, t0: u64) -> Workflow {
        let mut trace = [0u8; 16];
        trace[0] = 0xa0;
        trace[15] = n;
        trace[1..9].copy_from_slice(&t0.to_be_bytes());
        Workflow {
            change: change.into(),
            run: format!("wf-{change}"),
            trace,
            t0,
            service: "payments-api".into(),
            version: "1.42.0".into(),
            next_span: 1,
        }
    }

    fn span(&mut self, name: &str, start: u64, end: u64, attrs: Vec<KeyValue>) -> Span {
        let id = self.next_span;
        self.next_span += 1;
        let mut span_id = [0u8; 8];
        span_id[0] = self.trace[15];
        span_id[7] = id as u8;
        span_id[6] = 0x5a;
        Span {
            trace_id: self.trace.to_vec(),
            span_id: span_id.to_vec(),
            name: name.into(),
            kind: 1,
            start_time_unix_nano: self.t0 + start,
            end_time_unix_nano: self.t0 + end,
            attributes: attrs,
            ..Default::default()
        }
    }

    fn base(&self) -> Vec<KeyValue> {
        vec![
            kv("cicd.pipeline.run.id", &self.run),
            kv("changetrail.change.id", &self.change),
        ]
    }

    /// The run's own span: what the change is and who asked for it.
    pub fn run_span(
        &mut self,
        kind: &str,
        requester: &str,
        token: Option<String>,
        extra: Vec<KeyValue>,
    ) -> Item {
        let mut a = self.base();
        a.extend([
            kv("cicd.pipeline.name", "deploy_service"),
            kv("cicd.pipeline.result", "success"),
            kv("deployment.environment.name", "production"),
            kv("changetrail.change.kind", kind),
            kv("changetrail.change.requester", requester),
            kv("changetrail.target.service", &self.service.clone()),
            kv("changetrail.target.version", &self.version.clone()),
            kv("artifact.hash", "sha256:9b1f0c7d2e8a"),
        ]);
        if let Some(t) = token {
            a.push(kv("changetrail.change.requester.token", &t));
        }
        a.extend(extra);
        Item {
            resource: engine(),
            span: self.span("RUN deploy_service", 0, 30 * MIN, a),
        }
    }

    pub fn approval(
        &mut self,
        approver: &str,
        token: Option<String>,
        decision: &str,
        start: u64,
        end: u64,
    ) -> Item {
        let mut a = self.base();
        a.extend([
            kv("cicd.pipeline.task.name", "approval"),
            kv("cicd.pipeline.task.type", "approval"),
            kv(
                "cicd.pipeline.task.run.id",
                &format!("{}-approval", self.run),
            ),
            kv("changetrail.approval.decision", decision),
            kv("changetrail.approval.approver", approver),
            kv("changetrail.approval.subject", "sha256:9b1f0c7d2e8a"),
        ]);
        if let Some(t) = token {
            a.push(kv("changetrail.approval.token", &t));
        }
        Item {
            resource: engine(),
            span: self.span("approval", start, end, a),
        }
    }

    pub fn deploy(&mut self, attempt: u32, result: &str, start: u64, end: u64) -> Item {
        let mut a = self.base();
        let run_id = format!("{}-deploy-{attempt}", self.run);
        a.extend([
            kv("cicd.pipeline.task.name", "deploy"),
            kv("cicd.pipeline.task.type", "deploy"),
            kv("cicd.pipeline.task.run.id", &run_id),
            kv("cicd.pipeline.task.run.result", result),
            kv("changetrail.task.attempt", &attempt.to_string()),
            kv("cicd.worker.id", "deployer-5c8b7-qz4"),
            kv(
                "changetrail.identity.principal",
                "spiffe://example.com/deployer",
            ),
            kv(
                "changetrail.identity.token",
                &idp::token(
                    "spiffe://example.com/deployer",
                    &["deployer"],
                    (self.t0 + end) as i64,
                ),
            ),
        ]);
        if attempt > 0 {
            a.push(kv(
                "changetrail.task.retried_from",
                &format!("{}-deploy-{}", self.run, attempt - 1),
            ));
        }
        let mut s = self.span("deploy", start, end, a);
        if result != "success" {
            s.status = Some(Status {
                code: 2,
                message: result.into(),
            });
        }
        Item {
            resource: engine(),
            span: s,
        }
    }

    /// A runtime span of the deployed service in the same trace (bound by shared trace).
    pub fn service_span(&mut self, name: &str, at: u64) -> Item {
        let (svc, ver) = (self.service.clone(), self.version.clone());
        Item {
            resource: service(&svc, &ver),
            span: self.span(
                name,
                at,
                at + MIN / 60,
                vec![kv("http.request.method", "GET")],
            ),
        }
    }

    /// A runtime span in another trace that links to `to` (bound by span link).
    pub fn linked_span(&mut self, to: &Item, at: u64) -> Item {
        let mut s = self.span("consume deploy event", at, at + MIN / 60, vec![]);
        let mut other = self.trace;
        other[0] = 0xb0;
        s.trace_id = other.to_vec();
        s.links.push(Link {
            trace_id: to.span.trace_id.clone(),
            span_id: to.span.span_id.clone(),
            ..Default::default()
        });
        Item {
            resource: resource(&[("service.name", "ledger-consumer")]),
            span: s,
        }
    }
}

fn to_request(items: &[Item]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: items
            .iter()
            .map(|i| ResourceSpans {
                resource: Some(Resource {
                    attributes: i.resource.iter().map(|(k, v)| kv(k, v)).collect(),
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![i.span.clone()],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

pub async fn send(app: &TestApp, items: &[Item]) {
    let r = app
        .http
        .post(format!("{}/v1/traces", app.otlp))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(&app.ingest)
        .body(to_request(items).encode_to_vec())
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

pub async fn packet(app: &TestApp, change: &str) -> Value {
    let auditor = app.token(Role::Auditor).await;
    let r = app
        .get(&format!("/v1/changes/{change}"), Some(&auditor))
        .await;
    assert_eq!(r.status(), reqwest::StatusCode::OK, "{change}");
    r.json().await.unwrap()
}

/// The normal change: requested by alice, approved by bob (both with valid tokens), deploy attempt
/// 1 times out, attempt 2 succeeds, service spans in the same trace and by link.
pub fn normal_change(wf: &mut Workflow) -> Vec<Item> {
    let t = |m: u64| wf.t0 as i64 + (m * MIN) as i64;
    let alice = idp::token("alice@example.com", &["engineer"], t(0));
    let bob = idp::token("bob@example.com", &["release-approver"], t(15));
    let run = wf.run_span("normal", "alice@example.com", Some(alice), vec![]);
    let approval = wf.approval("bob@example.com", Some(bob), "approved", MIN, 15 * MIN);
    let d1 = wf.deploy(0, "timeout", 16 * MIN, 18 * MIN);
    let d2 = wf.deploy(1, "success", 19 * MIN, 21 * MIN);
    let s1 = wf.service_span("GET /pay", 22 * MIN);
    let s2 = wf.service_span("POST /refund", 22 * MIN);
    let linked = wf.linked_span(&d2, 23 * MIN);
    vec![run, approval, d1, d2, s1, s2, linked]
}

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
        let leaf = changetrail::core::entry::leaf_hash(&bytes);
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
async fn a_normal_change_with_a_retried_deploy() {
    for db in TestDb::all("a_normal_change_with_a_retried_deploy").await {
        let app = spawn_app_with(scenario_config(&db)).await;
        let mut wf = Workflow::new("CHG-2041", 1, T0);
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
}

/// The evidence is a function of the facts, not of their order or batching — including runtime
/// spans that arrive before the workflow spans that bind them.
#[test]
fn the_same_facts_in_any_order_give_the_same_evidence() {
    let mut wf = Workflow::new("CHG-ORDER", 2, T0);
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
            // Entry numbers and proofs depend on arrival; the evidence must not.
            for k in ["entries", "checkpoint", "checkpoint_size"] {
                p.as_object_mut().unwrap().remove(k);
            }
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
