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

/// 2026-01-01T00:00:00Z, when `Synthetic`'s population starts.
pub const SYNTHETIC_START_NS: i64 = 1_767_225_600 * 1_000_000_000;

/// The deployer's workload identity in `Synthetic` changes.
pub const SYNTHETIC_DEPLOYER: &str = "spiffe://example.com/deployer";

/// One deploy attempt: its number, result, and start and end offsets from the change's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    pub result: &'static str,
    pub start: u64,
    pub end: u64,
}

/// Change `index` of `bench report`'s population of synthetic changes spread over `days`: most
/// are clean with a retried deploy; every 50th is self-approved, every 97th approved late, every
/// 131st rejected and deployed, every 199th an emergency without review, every 211th a rollback of
/// the change before it, every 300th deploys with the previous change's credential; every 500th
/// leaves an unlinked version. About eleven entries each when stated from spans and Conductor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthetic {
    pub index: u64,
    pub change: String,
    pub run: String,
    /// When it was requested.
    pub t0_ns: i64,
    pub service: String,
    pub version: String,
    /// The digest approved and deployed.
    pub artifact: String,
    pub revision: String,
    pub kind: &'static str,
    pub rollback_of: Option<String>,
    pub requester: &'static str,
    pub approver: &'static str,
    pub decision: &'static str,
    /// Offsets from `t0_ns`: the approval asked for and decided.
    pub approval_requested: u64,
    pub approval_decided: u64,
    pub attempts: Vec<Attempt>,
    /// The change whose deploy credential its deploys use (its own, or the one before it).
    pub credential_of: u64,
    /// Offset from `t0_ns` at which the run finished.
    pub finished: u64,
    /// Versions of the service first seen in production, at offsets from `t0_ns`.
    pub seen: Vec<(String, u64)>,
}

impl Synthetic {
    /// Change `index` of a population spread over `days`.
    pub fn new(index: u64, days: u64) -> Synthetic {
        let i = index;
        let min = MIN as i64;
        let spread = (days as i64 * 1440 * min) / 100_000;
        let t0_ns = SYNTHETIC_START_NS
            + (i as i64 % 100_000) * spread.max(min)
            + (i as i64 / 100_000) * min;
        let version = format!("1.{}.{}", i / 40, i % 40);
        let kind = if i % 199 == 7 {
            "emergency"
        } else if i % 211 == 5 {
            "rollback"
        } else {
            "normal"
        };
        let mut seen = vec![(version.clone(), 16 * MIN)];
        if i % 500 == 250 {
            seen.push((format!("{version}-hotfix"), 90 * MIN));
        }
        Synthetic {
            index: i,
            change: format!("CHG-{i:06}"),
            run: format!("wf-{i:06}"),
            t0_ns,
            service: format!("svc-{:02}", i % 40),
            version,
            artifact: format!(
                "sha256:{}",
                crate::core::ledger::hash::Hash::of(&[&i.to_be_bytes()]).to_hex()
            ),
            revision: format!("{:07x}", i * 7919 % 0xfff_ffff),
            kind,
            rollback_of: (kind == "rollback").then(|| format!("CHG-{:06}", i.saturating_sub(1))),
            requester: "alice@example.com",
            approver: if i % 50 == 3 {
                "alice@example.com"
            } else {
                "bob@example.com"
            },
            decision: if i % 131 == 13 {
                "rejected"
            } else {
                "approved"
            },
            approval_requested: MIN,
            approval_decided: if i % 97 == 11 { 20 * MIN } else { 10 * MIN },
            attempts: vec![
                Attempt {
                    attempt: 0,
                    result: "timeout",
                    start: 12 * MIN,
                    end: 13 * MIN,
                },
                Attempt {
                    attempt: 1,
                    result: "success",
                    start: 14 * MIN,
                    end: 16 * MIN,
                },
            ],
            credential_of: if i % 300 == 17 { i - 1 } else { i },
            finished: 17 * MIN,
            seen,
        }
    }

    /// The absolute time of offset `offset`.
    pub fn at(&self, offset: u64) -> i64 {
        self.t0_ns + offset as i64
    }

    /// When a token of this change for the event at `offset` was issued: a second of its own,
    /// up to ten minutes before the event (tokens are valid for an hour from ten minutes before
    /// they are issued), so no two changes carry the same token even when their events coincide,
    /// as the bench's facts state.
    fn issued(&self, offset: u64) -> i64 {
        self.at(offset) - (self.index % 600) as i64 * 1_000_000_000
    }

    /// When the deploy credential of change `of` was issued (for the end of its last attempt),
    /// so the same credential is minted alike wherever it is used.
    fn credential_issued(of: u64, days: u64) -> i64 {
        let c = Synthetic::new(of, days);
        c.issued(c.attempts.last().map_or(0, |a| a.end))
    }

    /// The change as the spans its workflow and its service emit (the run, the approval, each
    /// attempt, and a runtime span for each version seen), people and deployer carrying tokens
    /// `tokens` mints; `days` places the change whose credential its deploys reuse.
    pub fn items(&self, days: u64, tokens: Option<Tokens>) -> Vec<Item> {
        let mut wf = Workflow::new(&self.change, (self.index % 251) as u8, self.t0_ns as u64);
        wf.run = self.run.clone();
        wf.service = self.service.clone();
        wf.version = self.version.clone();
        wf.artifact = self.artifact.clone();
        wf.worker = "deployer-5c8b7".into();
        if let Some(t) = tokens {
            wf = wf.with_tokens(t);
        }
        let mut extra = vec![kv("vcs.ref.head.revision", &self.revision)];
        if let Some(of) = &self.rollback_of {
            extra.push(kv("changetrail.change.rollback_of", of));
        }
        let requester = wf.token(self.requester, &["engineer"], self.issued(0));
        let mut run = wf.run_span(self.kind, self.requester, requester, extra);
        run.span.end_time_unix_nano = self.at(self.finished) as u64;
        let approver = wf.token(
            self.approver,
            &["release-approver"],
            self.issued(self.approval_decided),
        );
        let mut items = vec![
            run,
            wf.approval(
                self.approver,
                approver,
                self.decision,
                self.approval_requested,
                self.approval_decided,
            ),
        ];
        let credential = wf.token(
            SYNTHETIC_DEPLOYER,
            &["deployer"],
            Synthetic::credential_issued(self.credential_of, days),
        );
        for a in &self.attempts {
            let mut d = wf.deploy(a.attempt, a.result, a.start, a.end);
            match &credential {
                Some(c) => d.set("changetrail.identity.token", c),
                None => d.unset("changetrail.identity.token"),
            }
            items.push(d);
        }
        for (version, at) in &self.seen {
            wf.version = version.clone();
            items.push(wf.service_span("GET /health", *at));
        }
        items
    }
}
