//! `changetrail demo`'s data: a realistic few weeks of production changes as OpenTelemetry spans
//! the way a deploy workflow and the services it deploys emit them (src/ingest/CONVENTIONS.md),
//! with the exceptions each change should raise. Pure: the command sends it and checks the report.
//!
//! Every week each service gets a normal change (requested, approved by a release approver, deployed
//! by a workload identity, with runtime spans of the new version; every third deploy times out once
//! and is retried). On top of those, one of each problem an auditor looks for: a self-approval, an
//! approval after the deploy, an emergency nobody reviewed (and one that was reviewed), a rollback,
//! an unverified requester, an approval token replayed from another change, a deploy credential
//! that was not rotated, a version in production that no change deployed, and a release whose
//! errors rose after its deploy (CHANGE_REGRESSION) until a rollback restored the version before.
//!
//! This plan is built here on purpose, not with `demo::scenario` (the builder the tests and
//! `bench report` share): the demo checks its report against its own expectations, so it stays an
//! independent oracle for that builder and for the service.

pub mod idp;
pub mod scenario;

use idp::DemoIdp;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use std::collections::{BTreeMap, BTreeSet};

const MIN: i64 = 60 * 1_000_000_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
const WEEK: i64 = 7 * DAY;

pub const SERVICES: [&str; 5] = [
    "payments-api",
    "checkout",
    "ledger-api",
    "search",
    "notifications",
];
/// The role a verified approver needs (the demo configures `reports.approver_roles` with it).
pub const APPROVER_ROLE: &str = "release-approver";
const DEPLOYER: &str = "spiffe://demo.changetrail.local/ns/deploy/sa/deployer";
/// How late the demo's service lets evidence and tokens arrive: it replays the past weeks at
/// once, as an import of older history would (`[evidence] max_lateness`,
/// `[identity] max_token_age_at_receipt`).
pub const HISTORY: std::time::Duration = std::time::Duration::from_secs(60 * 7 * 86_400);

/// One change the demo sends and the exception codes its report row must carry.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub change_id: String,
    pub what: String,
    pub expect: BTreeSet<&'static str>,
}

/// Everything the demo sends, and what the report over `[from_ns, to_ns)` must say about it.
pub struct Plan {
    pub spans: Vec<(Vec<KeyValue>, Span)>,
    pub scenarios: Vec<Scenario>,
    /// (service, version) seen in production that no change deployed: UNLINKED_DEPLOY each.
    pub unlinked: Vec<(String, String)>,
    pub from_ns: i64,
    pub to_ns: i64,
}

impl Plan {
    /// Expected exception counts by code over the whole report.
    pub fn expected_by_code(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for c in self.scenarios.iter().flat_map(|s| &s.expect) {
            *m.entry(*c).or_default() += 1;
        }
        if !self.unlinked.is_empty() {
            *m.entry("UNLINKED_DEPLOY").or_default() += self.unlinked.len() as u64;
        }
        m
    }

    /// The spans as OTLP export requests of at most `per_request` spans each.
    pub fn requests(&self, per_request: usize) -> Vec<ExportTraceServiceRequest> {
        self.spans
            .chunks(per_request.max(1))
            .map(|chunk| ExportTraceServiceRequest {
                resource_spans: chunk
                    .iter()
                    .map(|(resource, span)| ResourceSpans {
                        resource: Some(Resource {
                            attributes: resource.clone(),
                            ..Default::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            spans: vec![span.clone()],
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect()
    }
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// One workflow run: its trace, and the spans of the run, its tasks and the deployed service.
struct Flow<'a> {
    idp: &'a DemoIdp,
    change: String,
    run: String,
    trace: [u8; 16],
    t0: i64,
    service: String,
    version: String,
    artifact: String,
    next_span: u8,
    out: Vec<(Vec<KeyValue>, Span)>,
}

impl<'a> Flow<'a> {
    fn new(idp: &'a DemoIdp, n: u32, change: &str, service: &str, version: &str, t0: i64) -> Self {
        let mut trace = [0u8; 16];
        trace[0] = 0xde;
        trace[1] = 0x30;
        trace[2..6].copy_from_slice(&n.to_be_bytes());
        trace[8..16].copy_from_slice(&t0.to_be_bytes());
        // The digest the approver approves and the deployer deploys.
        let artifact = format!(
            "sha256:{}",
            crate::core::ledger::hash::Hash::of(&[change.as_bytes(), version.as_bytes()]).to_hex()
        );
        Flow {
            idp,
            change: change.into(),
            run: format!("run-{}", change.to_ascii_lowercase()),
            trace,
            t0,
            service: service.into(),
            version: version.into(),
            artifact,
            next_span: 1,
            out: Vec::new(),
        }
    }

    fn at(&self, offset: i64) -> i64 {
        self.t0 + offset
    }

    fn span(&mut self, name: &str, start: i64, end: i64, attributes: Vec<KeyValue>) -> Span {
        let mut span_id = [0u8; 8];
        span_id[..6].copy_from_slice(&self.trace[2..8]);
        span_id[7] = self.next_span;
        self.next_span = self.next_span.wrapping_add(1);
        Span {
            trace_id: self.trace.to_vec(),
            span_id: span_id.to_vec(),
            name: name.into(),
            kind: 1,
            start_time_unix_nano: self.at(start) as u64,
            end_time_unix_nano: self.at(end) as u64,
            attributes,
            ..Default::default()
        }
    }

    fn engine() -> Vec<KeyValue> {
        vec![
            kv("service.name", "conductor"),
            kv("service.namespace", "delivery"),
        ]
    }

    fn base(&self) -> Vec<KeyValue> {
        vec![
            kv("cicd.pipeline.run.id", &self.run),
            kv("changetrail.change.id", &self.change),
        ]
    }

    /// The run's span: the change, who asked for it (`token`: whether their IdP token rides along).
    fn request(
        &mut self,
        kind: &str,
        requester: &str,
        roles: &[&str],
        token: bool,
        extra: &[(&str, &str)],
    ) {
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
            kv("vcs.ref.head.revision", &format!("{:0>12}", self.trace[5])),
        ]);
        if token {
            a.push(kv(
                "changetrail.change.requester.token",
                &self.idp.token(requester, roles, self.t0),
            ));
        }
        a.extend(extra.iter().map(|(k, v)| kv(k, v)));
        let s = self.span("RUN deploy_service", 0, 45 * MIN, a);
        self.out.push((Self::engine(), s));
    }

    fn approval(&mut self, approver: &str, roles: &[&str], decision: &str, start: i64, end: i64) {
        let token = self.idp.token(approver, roles, self.at(end));
        self.approval_with(approver, &token, decision, start, end);
    }

    /// An approval carrying `token`, whoever it was issued for.
    fn approval_with(&mut self, approver: &str, token: &str, decision: &str, start: i64, end: i64) {
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
            kv("changetrail.approval.token", token),
        ]);
        let s = self.span("approval", start, end, a);
        self.out.push((Self::engine(), s));
    }

    /// The approval token this flow's approval span carries, if it has one.
    fn approval_token(&self) -> Option<String> {
        self.out.iter().find_map(|(_, s)| {
            s.attributes
                .iter()
                .find(|kv| kv.key == "changetrail.approval.token")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(t) => Some(t.clone()),
                    _ => None,
                })
        })
    }

    fn deploy(&mut self, attempt: u32, result: &str, start: i64, end: i64) {
        // Each change's deploy uses a key of its own: rotated every deploy cycle.
        let key = format!("deploy-key-{}", self.change.to_ascii_lowercase());
        self.deploy_with_key(attempt, result, start, end, &key);
    }

    fn deploy_with_key(&mut self, attempt: u32, result: &str, start: i64, end: i64, key: &str) {
        let mut a = self.base();
        let token = self.idp.token(DEPLOYER, &["deployer"], self.at(end));
        a.extend([
            kv("cicd.pipeline.task.name", "deploy"),
            kv("cicd.pipeline.task.type", "deploy"),
            kv(
                "cicd.pipeline.task.run.id",
                &format!("{}-deploy-{attempt}", self.run),
            ),
            kv("cicd.pipeline.task.run.result", result),
            kv("changetrail.task.attempt", &attempt.to_string()),
            kv("cicd.worker.id", "deployer-7d9f4-x2k"),
            kv("changetrail.identity.principal", DEPLOYER),
            kv("changetrail.identity.token", &token),
            kv("changetrail.identity.credential_id", key),
            kv("artifact.hash", &self.artifact.clone()),
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
        self.out.push((Self::engine(), s));
    }

    /// Requests served by the new version right after the deploy, in the deploy's trace.
    fn runtime(&mut self, at: i64, names: &[&str]) {
        let resource = vec![
            kv("service.name", &self.service.clone()),
            kv("service.version", &self.version.clone()),
            kv("deployment.environment.name", "production"),
        ];
        for (i, n) in names.iter().enumerate() {
            let start = at + i as i64 * 1_000_000_000;
            let s = self.span(
                n,
                start,
                start + 40_000_000,
                vec![kv("http.request.method", "GET")],
            );
            self.out.push((resource.clone(), s));
        }
    }

    /// The usual shape: approved by `approver`, deployed (optionally after one timeout), live.
    fn approved_and_deployed(&mut self, approver: &str, retried: bool) {
        self.approval(approver, &[APPROVER_ROLE], "approved", 2 * MIN, 20 * MIN);
        let mut t = 22 * MIN;
        if retried {
            self.deploy(0, "timeout", t, t + 5 * MIN);
            t += 6 * MIN;
        }
        let attempt = u32::from(retried);
        self.deploy(attempt, "success", t, t + 4 * MIN);
        self.runtime(
            t + 5 * MIN,
            &["GET /health", "POST /v1/orders", "GET /v1/orders/{id}"],
        );
    }
}

/// One request served at `minute` + `i` × 3 s in a trace of its own (a SERVER span), failing with
/// ConnectionError when `failed`.
fn request_span(n: u32, minute: i64, i: usize, failed: bool) -> Span {
    let start = minute + i as i64 * 3_000_000_000;
    let end = start + if failed { 250 } else { 45 } * 1_000_000;
    let mut trace = [0u8; 16];
    trace[0] = 0xde;
    trace[1] = 0x31;
    trace[2..6].copy_from_slice(&n.to_be_bytes());
    trace[6..14].copy_from_slice(&start.to_be_bytes());
    trace[15] = i as u8;
    let mut span_id = [0u8; 8];
    span_id.copy_from_slice(&trace[6..14]);
    let (status, events) = if failed {
        (
            Some(Status {
                code: 2,
                message: "upstream closed the connection".into(),
            }),
            vec![opentelemetry_proto::tonic::trace::v1::span::Event {
                time_unix_nano: end as u64,
                name: "exception".into(),
                attributes: vec![kv("exception.type", "ConnectionError")],
                ..Default::default()
            }],
        )
    } else {
        (None, Vec::new())
    };
    Span {
        trace_id: trace.to_vec(),
        span_id: span_id.to_vec(),
        name: "POST /v1/checkout".into(),
        kind: 2,
        start_time_unix_nano: start as u64,
        end_time_unix_nano: end as u64,
        attributes: vec![kv("http.request.method", "POST")],
        status,
        events,
        ..Default::default()
    }
}

/// Monday 00:00 UTC of the week holding `ns`.
fn week_start(ns: i64) -> i64 {
    // 1970-01-01 was a Thursday: Monday is day 4 of that week.
    let days = ns.div_euclid(DAY);
    (days - (days + 3).rem_euclid(7)) * DAY
}

/// The demo over the `weeks` full weeks before the one holding `now_ns`.
pub fn plan(idp: &DemoIdp, now_ns: i64, weeks: u32) -> Plan {
    let weeks = weeks.max(1);
    let to_ns = week_start(now_ns);
    let from_ns = to_ns - i64::from(weeks) * WEEK;
    let mut p = Planner {
        idp,
        from_ns,
        weeks,
        n: 0,
        spans: Vec::new(),
        scenarios: Vec::new(),
    };
    p.normal_changes();
    // The problems, spread over the period (all in its one week when it has one).
    p.self_approval();
    p.late_approval();
    p.emergencies();
    p.rollback();
    p.replayed_token();
    p.unrotated_key();
    p.regression();
    let unlinked = p.unlinked_version();
    Plan {
        spans: p.spans,
        scenarios: p.scenarios,
        unlinked,
        from_ns,
        to_ns,
    }
}

/// The plan while it is built: the spans and scenarios in the order they are sent, and `n`, which
/// numbers the flows in that order (each flow's trace id holds it).
struct Planner<'a> {
    idp: &'a DemoIdp,
    from_ns: i64,
    weeks: u32,
    n: u32,
    spans: Vec<(Vec<KeyValue>, Span)>,
    scenarios: Vec<Scenario>,
}

impl<'a> Planner<'a> {
    /// A flow's spans, and its change with the exception codes the report must give it.
    fn add(&mut self, flow: Flow<'_>, what: &str, expect: &[&'static str]) {
        self.scenarios.push(Scenario {
            change_id: flow.change.clone(),
            what: what.into(),
            expect: expect.iter().copied().collect(),
        });
        self.spans.extend(flow.out);
    }

    /// The next flow, on day `k` of the period (wrapped to fit a short one) at 14:00.
    fn special(&mut self, k: i64, id: &str, svc: &str, version: &str) -> Flow<'a> {
        self.n += 1;
        let day =
            self.from_ns + (k % (i64::from(self.weeks) * 7 - 2)).max(0) * DAY + DAY + 14 * HOUR;
        Flow::new(self.idp, self.n, id, svc, version, day)
    }

    /// Every week, one normal change per service.
    fn normal_changes(&mut self) {
        let approvers = ["bob@example.com", "erin@example.com"];
        let requesters = [
            "alice@example.com",
            "carol@example.com",
            "frank@example.com",
        ];
        for w in 0..self.weeks {
            for (i, svc) in SERVICES.iter().enumerate() {
                self.n += 1;
                let n = self.n;
                // Tuesday to Thursday, office hours, a little apart per service.
                let t0 = self.from_ns
                    + i64::from(w) * WEEK
                    + (1 + (i as i64 % 3)) * DAY
                    + 9 * HOUR
                    + i as i64 * 47 * MIN;
                let id = format!("CHG-{}", 1000 + n);
                let version = format!("{}.{}.{}", 1 + i, w + 10, n % 7);
                let mut f = Flow::new(self.idp, n, &id, svc, &version, t0);
                let requester = requesters[(n as usize) % requesters.len()];
                f.request("normal", requester, &["engineer"], true, &[]);
                let retried = n.is_multiple_of(3);
                f.approved_and_deployed(approvers[(n as usize) % 2], retried);
                let what = if retried {
                    "normal change, deploy timed out once and was retried"
                } else {
                    "normal change"
                };
                self.add(f, what, &[]);
            }
        }
    }

    fn self_approval(&mut self) {
        let mut f = self.special(1, "CHG-SELF-1", "payments-api", "1.9.1");
        f.request("normal", "alice@example.com", &["engineer"], true, &[]);
        f.approval(
            "alice@example.com",
            &["engineer"],
            "approved",
            2 * MIN,
            6 * MIN,
        );
        f.deploy(0, "success", 8 * MIN, 11 * MIN);
        f.runtime(12 * MIN, &["GET /health"]);
        self.add(
            f,
            "approved by its own requester, who is not a release approver",
            &["SELF_APPROVAL", "APPROVER_NOT_AUTHORIZED"],
        );
    }

    fn late_approval(&mut self) {
        let mut f = self.special(4, "CHG-LATE-1", "checkout", "2.9.4");
        f.request("normal", "carol@example.com", &["engineer"], false, &[]);
        f.deploy(0, "success", 3 * MIN, 6 * MIN);
        f.approval(
            "bob@example.com",
            &[APPROVER_ROLE],
            "approved",
            MIN,
            25 * MIN,
        );
        f.runtime(7 * MIN, &["GET /cart"]);
        self.add(
            f,
            "approved 19 minutes after its deploy started; requester without a token",
            &["APPROVAL_AFTER_DEPLOY", "UNVERIFIED_IDENTITY"],
        );
    }

    /// An emergency nobody reviewed, and one reviewed afterwards (no exception).
    fn emergencies(&mut self) {
        let mut f = self.special(8, "CHG-EMERG-1", "ledger-api", "3.9.0");
        f.request("emergency", "dave@example.com", &["oncall"], false, &[]);
        f.deploy(0, "success", 2 * MIN, 4 * MIN);
        f.runtime(5 * MIN, &["GET /balance"]);
        self.add(
            f,
            "emergency change nobody reviewed, without justification or token",
            &["EMERGENCY_NO_REVIEW", "UNVERIFIED_IDENTITY"],
        );

        let mut f = self.special(9, "CHG-EMERG-2", "payments-api", "1.9.2");
        f.request(
            "emergency",
            "dave@example.com",
            &["oncall"],
            true,
            &[(
                "changetrail.change.justification",
                "INC-4471: card payments failing",
            )],
        );
        f.deploy(0, "success", 2 * MIN, 4 * MIN);
        f.approval(
            "erin@example.com",
            &[APPROVER_ROLE],
            "approved",
            30 * MIN,
            3 * HOUR,
        );
        f.runtime(5 * MIN, &["POST /v1/payments"]);
        self.add(
            f,
            "emergency change with a justification, reviewed by erin three hours later",
            &[],
        );
    }

    fn rollback(&mut self) {
        let mut f = self.special(11, "CHG-RB-1", "search", "4.9.0");
        f.request(
            "rollback",
            "frank@example.com",
            &["engineer"],
            true,
            &[("changetrail.change.rollback_of", "CHG-1004")],
        );
        f.approved_and_deployed("bob@example.com", false);
        self.add(f, "rollback of CHG-1004, approved", &[]);
    }

    /// An approval token lifted from one change (it leaked through a trace backend) and put on
    /// another change's approval, while it is still valid: it proves nothing there.
    fn replayed_token(&mut self) {
        let mut f = self.special(15, "CHG-TOKEN-1", "notifications", "5.9.1");
        f.request("normal", "carol@example.com", &["engineer"], true, &[]);
        f.approved_and_deployed("erin@example.com", false);
        let stolen = f.approval_token();
        self.add(
            f,
            "normal change (its approval token is replayed below)",
            &[],
        );
        let mut f = self.special(15, "CHG-REPLAY-1", "notifications", "5.9.2");
        f.t0 += 10 * MIN;
        f.request("normal", "frank@example.com", &["engineer"], true, &[]);
        if let Some(token) = stolen {
            // Decided at the same instant as the approval the token was issued for.
            f.approval_with("erin@example.com", &token, "approved", MIN, 10 * MIN);
        }
        f.deploy(0, "success", 12 * MIN, 15 * MIN);
        f.runtime(16 * MIN, &["POST /v1/notify"]);
        self.add(
            f,
            "approved with erin's token from CHG-TOKEN-1, replayed",
            &["TOKEN_REUSED"],
        );
    }

    /// A deploy with the key an earlier search change used: not rotated between deploys.
    fn unrotated_key(&mut self) {
        let mut f = self.special(17, "CHG-KEY-1", "search", "4.9.3");
        f.request("normal", "alice@example.com", &["engineer"], true, &[]);
        f.approval(
            "bob@example.com",
            &[APPROVER_ROLE],
            "approved",
            2 * MIN,
            20 * MIN,
        );
        f.deploy_with_key(0, "success", 22 * MIN, 26 * MIN, "deploy-key-chg-1004");
        f.runtime(27 * MIN, &["GET /search"]);
        self.add(
            f,
            "deployed with CHG-1004's deploy key, never rotated",
            &["CREDENTIAL_NOT_ROTATED"],
        );
    }

    /// checkout 3.0.9 deployed and serving (1 request in 40 failing), then 3.1.0 (CHG-CO-2),
    /// after which 7 in 20 fail with ConnectionError, then a rollback to 3.0.9 (CHG-CO-3), after
    /// which it is healthy again: CHG-CO-2 gets CHANGE_REGRESSION, and the four keys a restore.
    fn regression(&mut self) {
        let mut good = self.special(16, "CHG-CO-1", "checkout", "3.0.9");
        // Off the 14:00 of the other special flows: the same person's token minted for the same
        // time would be one token used twice (TOKEN_REUSED).
        good.t0 += 133 * MIN;
        let t0 = good.t0;
        good.request("normal", "alice@example.com", &["engineer"], true, &[]);
        good.approved_and_deployed("bob@example.com", false);
        self.add(good, "checkout 3.0.9, healthy", &[]);
        // The requests checkout serves, each its own trace: the old version until the new one
        // is deployed (t0 + 71 min), the new one until the rollback (t0 + 101 min), then the old.
        self.n += 1;
        let n = self.n;
        for m in 27..115 {
            let (version, failing) = match m {
                ..71 => ("3.0.9", usize::from(m % 2 == 0)),
                71..101 => ("3.1.0", 7),
                _ => ("3.0.9", 0),
            };
            let resource = vec![
                kv("service.name", "checkout"),
                kv("service.version", version),
                kv("deployment.environment.name", "production"),
            ];
            for i in 0..20usize {
                self.spans.push((
                    resource.clone(),
                    request_span(n, t0 + m * MIN, i, i < failing),
                ));
            }
        }
        let mut bad = self.special(16, "CHG-CO-2", "checkout", "3.1.0");
        bad.t0 = t0 + 45 * MIN;
        bad.request("normal", "carol@example.com", &["engineer"], true, &[]);
        bad.approved_and_deployed("bob@example.com", false);
        self.add(
            bad,
            "checkout 3.1.0: errors rose from 2.5 % to 35 % after its deploy",
            &["CHANGE_REGRESSION"],
        );
        let mut back = self.special(16, "CHG-CO-3", "checkout", "3.0.9");
        back.t0 = t0 + 75 * MIN;
        back.request(
            "rollback",
            "carol@example.com",
            &["engineer"],
            true,
            &[("changetrail.change.rollback_of", "CHG-CO-2")],
        );
        back.approved_and_deployed("erin@example.com", false);
        self.add(back, "rollback of CHG-CO-2 to 3.0.9, approved", &[]);
    }

    /// A version running in production that no change deployed: its spans, no scenario; the
    /// (service, version) returned.
    fn unlinked_version(&mut self) -> Vec<(String, String)> {
        let mut rogue = self.special(13, "none", "checkout", "2.9.9-hotfix");
        rogue.runtime(0, &["GET /cart", "POST /cart/items"]);
        self.spans.extend(rogue.out);
        vec![("checkout".to_owned(), "2.9.9-hotfix".to_owned())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday() {
        // 2026-12-01 is a Tuesday; its week starts Monday 2026-11-30.
        let tue = crate::core::time::parse_rfc3339("2026-12-01T11:00:00Z").unwrap();
        let mon = crate::core::time::parse_rfc3339("2026-11-30T00:00:00Z").unwrap();
        assert_eq!(week_start(tue), mon);
        assert_eq!(week_start(mon), mon);
        assert_eq!(week_start(mon - 1), mon - WEEK);
    }

    #[test]
    fn the_plan_has_every_scenario_inside_its_period() {
        let idp = DemoIdp::generate().unwrap();
        let now = crate::core::time::parse_rfc3339("2026-12-01T11:00:00Z").unwrap();
        for weeks in [1, 6] {
            let p = plan(&idp, now, weeks);
            assert_eq!(p.to_ns - p.from_ns, i64::from(weeks) * WEEK);
            assert_eq!(p.scenarios.len(), SERVICES.len() * weeks as usize + 11);
            let ids: BTreeSet<_> = p.scenarios.iter().map(|s| &s.change_id).collect();
            assert_eq!(ids.len(), p.scenarios.len(), "change ids are unique");
            for (_, s) in &p.spans {
                let t = s.start_time_unix_nano as i64;
                assert!(t >= p.from_ns && t < p.to_ns, "{} at {t}", s.name);
            }
            let by_code = p.expected_by_code();
            for code in [
                "SELF_APPROVAL",
                "APPROVAL_AFTER_DEPLOY",
                "EMERGENCY_NO_REVIEW",
                "UNVERIFIED_IDENTITY",
                "UNLINKED_DEPLOY",
                "CHANGE_REGRESSION",
            ] {
                assert!(by_code.contains_key(code), "{code} in {weeks} weeks");
            }
            let sent: usize = p.requests(50).iter().map(|r| r.resource_spans.len()).sum();
            assert_eq!(sent, p.spans.len());
        }
    }
}
