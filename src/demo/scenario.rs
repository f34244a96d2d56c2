//! Synthetic changes, built once for the integration tests and `bench report`: a deploy workflow
//! (its run, approval and deploy attempts) and the service it deploys, as the OpenTelemetry spans
//! they emit by the ingest contract (CONVENTIONS.md). Pure: it builds spans and export requests;
//! sending them, or stating them as facts directly, is the caller's business.
//!
//! `Workflow` builds the spans of one change by hand (the tests' scenarios); `Synthetic` describes
//! change `i` of `bench report`'s population (mostly clean, with exceptions at fixed intervals) and
//! renders it through the same `Workflow`. The demo's plan (`demo::plan`) is deliberately not
//! built here: it is the independent oracle the demo's report is checked against.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use std::sync::Arc;

/// A minute in nanoseconds.
pub const MIN: u64 = 60 * 1_000_000_000;

/// Mints identity tokens: one for `subject` with `roles`, valid around `at_ns` (the event it
/// rides on). A test IdP's or the demo's; without one, identities stay asserted.
pub type Tokens = Arc<dyn Fn(&str, &[&str], i64) -> String + Send + Sync>;

/// A string attribute.
pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// One span and the resource (service) that sends it.
#[derive(Clone, Debug)]
pub struct Item {
    pub resource: Vec<(String, String)>,
    pub span: Span,
}

impl Item {
    /// Sets span attribute `key` to `value`, replacing any value it had.
    pub fn set(&mut self, key: &str, value: &str) {
        self.unset(key);
        self.span.attributes.push(kv(key, value));
    }

    /// Removes span attribute `key`.
    pub fn unset(&mut self, key: &str) {
        self.span.attributes.retain(|a| a.key != key);
    }

    /// The string value of span attribute `key`, if it has one.
    pub fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
    }
}

/// One export request holding `items`, each span under its own resource.
pub fn export_request(items: &[Item]) -> ExportTraceServiceRequest {
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

/// A resource of `attrs`.
pub fn resource(attrs: &[(&str, &str)]) -> Vec<(String, String)> {
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

/// One change's workflow run: its trace, and builders for the spans of the run, its tasks and the
/// deployed service. Span ids follow the order the builders are called in.
pub struct Workflow {
    pub change: String,
    pub run: String,
    pub trace: [u8; 16],
    pub t0: u64,
    pub service: String,
    pub version: String,
    /// The digest the approver approves and the deployer deploys.
    pub artifact: String,
    /// The worker the deploy tasks run on.
    pub worker: String,
    tokens: Option<Tokens>,
    next_span: u64,
}

impl Workflow {
    /// Change `change`'s run starting at `t0`; `n` tells its trace from others at the same time.
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
            artifact: "sha256:9b1f0c7d2e8a".into(),
            worker: "deployer-5c8b7-qz4".into(),
            tokens: None,
            next_span: 1,
        }
    }

    /// The same run, its people and deployer carrying tokens `tokens` mints.
    pub fn with_tokens(mut self, tokens: Tokens) -> Workflow {
        self.tokens = Some(tokens);
        self
    }

    /// A token for `subject` with `roles` around `at_ns`, when the workflow has an issuer.
    pub fn token(&self, subject: &str, roles: &[&str], at_ns: i64) -> Option<String> {
        self.tokens.as_ref().map(|t| t(subject, roles, at_ns))
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
            kv("artifact.hash", &self.artifact.clone()),
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

    /// The approval task, decided (`decision`) by `approver` at its end.
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
            kv("changetrail.approval.subject", &self.artifact.clone()),
        ]);
        if let Some(t) = token {
            a.push(kv("changetrail.approval.token", &t));
        }
        Item {
            resource: engine(),
            span: self.span("approval", start, end, a),
        }
    }

    /// Deploy attempt `attempt` (a retry of the one before it), by the deployer's workload
    /// identity, with a token minted for its end when the workflow has an issuer.
    pub fn deploy(&mut self, attempt: u32, result: &str, start: u64, end: u64) -> Item {
        const DEPLOYER: &str = "spiffe://example.com/deployer";
        let mut a = self.base();
        let run_id = format!("{}-deploy-{attempt}", self.run);
        a.extend([
            kv("cicd.pipeline.task.name", "deploy"),
            kv("cicd.pipeline.task.type", "deploy"),
            kv("cicd.pipeline.task.run.id", &run_id),
            kv("cicd.pipeline.task.run.result", result),
            kv("changetrail.task.attempt", &attempt.to_string()),
            kv("cicd.worker.id", &self.worker.clone()),
            kv("changetrail.identity.principal", DEPLOYER),
        ]);
        if let Some(t) = self.token(DEPLOYER, &["deployer"], (self.t0 + end) as i64) {
            a.push(kv("changetrail.identity.token", &t));
        }
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

/// The normal change: requested by alice, approved by bob (each with a token when the workflow has
/// an issuer), deploy attempt 1 times out, attempt 2 succeeds, service spans in the same trace and
/// by link. In this order: run, approval, the two attempts, two service spans, the linked span.
pub fn normal_change(wf: &mut Workflow) -> Vec<Item> {
    let t = |m: u64| wf.t0 as i64 + (m * MIN) as i64;
    let alice = wf.token("alice@example.com", &["engineer"], t(0));
    let bob = wf.token("bob@example.com", &["release-approver"], t(15));
    let run = wf.run_span("normal", "alice@example.com", alice, vec![]);
    let approval = wf.approval("bob@example.com", bob, "approved", MIN, 15 * MIN);
    let d1 = wf.deploy(0, "timeout", 16 * MIN, 18 * MIN);
    let d2 = wf.deploy(1, "success", 19 * MIN, 21 * MIN);
    let s1 = wf.service_span("GET /pay", 22 * MIN);
    let s2 = wf.service_span("POST /refund", 22 * MIN);
    let linked = wf.linked_span(&d2, 23 * MIN);
    vec![run, approval, d1, d2, s1, s2, linked]
}
