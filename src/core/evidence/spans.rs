//! What a kept span or log record states, as facts (src/ingest/CONVENTIONS.md), and the facts a production
//! version sighting records. Tokens are verified here and never leave: a fact holds only the
//! verdict and the token's digest.

use super::statement::{About, Intake, normalize_decision, normalize_result};
use super::{
    ApprovalFact, AttrValue, Attrs, ChangeFact, Fact, FactRecord, Policy, RunFinishedFact, Source,
    TaskFact, VersionFact,
};
use crate::core::evidence::identity::{IdentityVerifier, Principal};
use crate::core::time::parse_rfc3339;

/// Where a span or log record sits, for the facts it yields.
#[derive(Debug, Clone)]
pub struct ItemInfo {
    pub source: Source,
    pub start_ns: i64,
    pub end_ns: i64,
    /// The span's status is an error.
    pub error: bool,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
}

fn text(a: &Attrs, k: &str) -> Option<String> {
    a.get(k)
        .and_then(AttrValue::text)
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn time_attr(a: &Attrs, k: &str) -> Option<i64> {
    match a.get(k)? {
        AttrValue::Int(i) => Some(*i),
        AttrValue::Str(s) => s.parse::<i64>().ok().or_else(|| parse_rfc3339(s)),
        _ => None,
    }
}

/// Facts a kept span or log record states, by the ingest contract: an approval, a deploy
/// attempt, or what a run is (and how it ended). Builds and tests state none.
pub fn facts_from_item(
    info: &ItemInfo,
    a: &Attrs,
    policy: &Policy,
    ids: &IdentityVerifier,
    intake: &Intake,
) -> Vec<FactRecord> {
    let item = Item::read(info, a, ids, intake);
    let approval_event =
        text(a, "event.name").as_deref() == Some(crate::core::evidence::contract::APPROVAL_EVENT);
    let stated_decision = text(a, "changetrail.approval.decision");
    if stated_decision.is_some()
        || approval_event
        || (item.task_run_id.is_some() && policy.is_approval(&item.task_type))
    {
        return vec![item.approval(stated_decision)];
    }
    if let Some(task_run) = &item.task_run_id {
        if !policy.is_deploy(&item.task_type) {
            return Vec::new(); // builds and tests are kept as spans, but are not decisions or outcomes
        }
        return vec![item.deploy_attempt(task_run)];
    }
    item.run()
}

/// A span or log record with the ids every fact it states is keyed by.
struct Item<'a> {
    info: &'a ItemInfo,
    a: &'a Attrs,
    ids: &'a IdentityVerifier,
    intake: &'a Intake,
    run_id: Option<String>,
    change_id: Option<String>,
    task_run_id: Option<String>,
    task_type: String,
    /// The change id, else the run id.
    scope: Option<String>,
}

impl<'a> Item<'a> {
    fn read(
        info: &'a ItemInfo,
        a: &'a Attrs,
        ids: &'a IdentityVerifier,
        intake: &'a Intake,
    ) -> Item<'a> {
        let run_id = text(a, "cicd.pipeline.run.id");
        let change_id = text(a, "changetrail.change.id");
        Item {
            info,
            a,
            ids,
            intake,
            scope: change_id.clone().or_else(|| run_id.clone()),
            task_run_id: text(a, "cicd.pipeline.task.run.id"),
            task_type: text(a, "cicd.pipeline.task.type").unwrap_or_default(),
            run_id,
            change_id,
        }
    }

    fn text(&self, k: &str) -> Option<String> {
        text(self.a, k)
    }

    /// The principal a subject attribute and a token attribute state at `at_ns`, if either is.
    fn principal(&self, subject: &str, token: &str, at_ns: i64) -> Option<Principal> {
        match (self.text(subject), self.text(token)) {
            (None, None) => None,
            (p, t) => {
                Some(
                    self.ids
                        .establish(p.as_deref(), t.as_deref(), at_ns, self.intake.received_ns),
                )
            }
        }
    }

    fn fact(&self, about: About, fact: Fact) -> FactRecord {
        FactRecord::stated(about, self.intake, fact)
    }

    /// An approval: decided when a log record was emitted, or when an approval span ended.
    fn approval(&self, stated_decision: Option<String>) -> FactRecord {
        let info = self.info;
        let decided = if info.source == Source::Log {
            info.start_ns
        } else {
            info.end_ns
        };
        let approver = self.ids.establish(
            self.text("changetrail.approval.approver").as_deref(),
            self.text("changetrail.approval.token").as_deref(),
            decided,
            self.intake.received_ns,
        );
        // Without a step to name, an approval is told apart by its approver and its instant.
        let key_part = self.task_run_id.clone().unwrap_or_else(|| {
            format!("{}@{decided}", approver.subject.clone().unwrap_or_default())
        });
        let (decision, stated_decision) = normalize_decision(stated_decision.as_deref());
        self.fact(
            About {
                base: format!(
                    "approval:{}:{key_part}:{}",
                    self.scope.clone().unwrap_or_default(),
                    info.source.as_str()
                ),
                change_id: self.change_id.clone(),
                run_id: self.run_id.clone(),
                source: info.source,
                time_ns: decided,
                until_ns: info.end_ns,
            },
            Fact::Approval(ApprovalFact {
                decision,
                stated_decision,
                approver: Some(approver),
                requested_ns: time_attr(self.a, "changetrail.approval.requested_at")
                    .or((info.source == Source::Span).then_some(info.start_ns)),
                decided_ns: Some(decided),
                approved_subject: self.text("changetrail.approval.subject"),
                task_run_id: self.task_run_id.clone(),
            }),
        )
    }

    /// One attempt of a deploy step; a result not stated is read from the span's status.
    fn deploy_attempt(&self, task_run: &str) -> FactRecord {
        let info = self.info;
        let result = self
            .text("cicd.pipeline.task.run.result")
            .map(|r| normalize_result(&r))
            .unwrap_or_else(|| {
                if info.error {
                    "failure".into()
                } else {
                    "success".into()
                }
            });
        self.fact(
            About {
                base: format!(
                    "task:{}:{task_run}:{}",
                    self.run_id
                        .clone()
                        .or(self.change_id.clone())
                        .unwrap_or_default(),
                    info.source.as_str()
                ),
                change_id: self.change_id.clone(),
                run_id: self.run_id.clone(),
                source: info.source,
                time_ns: info.end_ns,
                until_ns: info.end_ns,
            },
            Fact::Task(TaskFact {
                task: self
                    .text("cicd.pipeline.task.name")
                    .unwrap_or_else(|| self.task_type.clone()),
                task_run_id: task_run.to_owned(),
                task_type: self.task_type.clone(),
                attempt: self
                    .text("changetrail.task.attempt")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
                retried_from: self.text("changetrail.task.retried_from"),
                result,
                start_ns: info.start_ns,
                end_ns: info.end_ns,
                worker: self.text("cicd.worker.id"),
                identity: self.principal(
                    "changetrail.identity.principal",
                    "changetrail.identity.token",
                    info.end_ns,
                ),
                credential_id: self.text("changetrail.identity.credential_id"),
                triggered_by: self.text("changetrail.task.triggered_by"),
                trace_id: info.trace_id.clone(),
                span_id: info.span_id.clone(),
                reason: None,
            }),
        )
    }

    /// The run's own span: what the change is, and how the run ended if it says. A plain runtime
    /// span that only carries the run id as a binding attribute says nothing of the kind.
    fn run(&self) -> Vec<FactRecord> {
        let describes_run = [
            "cicd.pipeline.name",
            "cicd.pipeline.result",
            "changetrail.change.kind",
            "changetrail.change.requester",
            "changetrail.target.service",
        ]
        .iter()
        .any(|k| self.a.contains_key(*k));
        let Some(id) = self.scope.clone().filter(|_| describes_run) else {
            return Vec::new();
        };
        let info = self.info;
        let src = info.source.as_str();
        let run_key = self.run_id.clone().unwrap_or(id);
        let about = |base: String, time_ns: i64| About {
            base,
            change_id: self.change_id.clone().or_else(|| self.run_id.clone()),
            run_id: self.run_id.clone(),
            source: info.source,
            time_ns,
            until_ns: info.end_ns,
        };
        let mut out = vec![
            self.fact(
                about(format!("run:{run_key}:requested:{src}"), info.start_ns),
                Fact::Change(ChangeFact {
                    pipeline: self.text("cicd.pipeline.name"),
                    environment: self.text("deployment.environment.name"),
                    kind: self
                        .text("changetrail.change.kind")
                        .map(|k| k.to_ascii_lowercase()),
                    service: self.text("changetrail.target.service"),
                    version: self.text("changetrail.target.version"),
                    artifact: self.text("artifact.hash"),
                    revision: self.text("vcs.ref.head.revision"),
                    rollback_of: self.text("changetrail.change.rollback_of"),
                    justification: self.text("changetrail.change.justification"),
                    requester: self.principal(
                        "changetrail.change.requester",
                        "changetrail.change.requester.token",
                        info.start_ns,
                    ),
                    requested_ns: info.start_ns,
                }),
            ),
        ];
        if let Some(result) = self.text("cicd.pipeline.result") {
            out.push(self.fact(
                about(format!("run:{run_key}:finished:{src}"), info.end_ns),
                Fact::RunFinished(RunFinishedFact {
                    result: normalize_result(&result),
                    end_ns: info.end_ns,
                    compensation_run: None,
                }),
            ));
        }
        out
    }
}

/// A production version seen running: its first sighting, or its return after another version
/// ran (`previous`). Sightings of the same return by several receivers within one `window_ns`
/// share a key and are stored once.
pub fn version_fact(v: VersionFact, window_ns: i64, intake: &Intake) -> FactRecord {
    let bucket = v.first_seen_ns.div_euclid(window_ns.max(1));
    FactRecord {
        key: format!(
            "{}@{bucket}",
            version_key_prefix(&v.service, &v.environment, &v.version)
        ),
        change_id: None,
        run_id: None,
        source: Source::Span,
        time_ns: v.first_seen_ns,
        stated_until_ns: None,
        sent_by: intake.sent_by.clone(),
        max_lateness_ns: None,
        fact: Fact::Version(v),
    }
}

/// The key prefix of every sighting of (service, environment, version), the environment in
/// lower case (as the rules compare it): what "was this version seen before" looks up.
pub fn version_key_prefix(service: &str, environment: &str, version: &str) -> String {
    format!(
        "{}{version}",
        service_key_prefix(service, &environment.to_ascii_lowercase())
    )
}

/// The key prefix of every sighting of any version of (service, environment), as given.
pub fn service_key_prefix(service: &str, environment: &str) -> String {
    format!("version:{service}\u{1f}{environment}\u{1f}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::evidence::{SentBy, decision};

    /// Ingest copies only attributes in the rules' namespaces for the rules; every attribute
    /// name this file reads must be among them, or the rules would silently never see it.
    #[test]
    fn every_key_the_rules_read_is_copied_for_them() {
        let src = include_str!("spans.rs");
        let mut checked = 0;
        for lit in src.split('"').skip(1).step_by(2) {
            let dotted = !lit.ends_with(".rs")
                && lit.contains('.')
                && lit.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                });
            if dotted {
                assert!(crate::core::evidence::contract::is_rule_key(lit), "{lit}");
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked}");
    }

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), AttrValue::Str(v.to_string())))
            .collect()
    }

    fn info(start: i64, end: i64) -> ItemInfo {
        ItemInfo {
            source: Source::Span,
            start_ns: start,
            end_ns: end,
            error: false,
            trace_id: None,
            span_id: None,
        }
    }

    fn log(at: i64) -> ItemInfo {
        ItemInfo {
            source: Source::Log,
            ..info(at, at)
        }
    }

    fn intake(name: &str) -> Intake {
        Intake {
            received_ns: 100,
            sent_by: Some(SentBy {
                token_id: Some("t1".into()),
                name: name.into(),
            }),
            max_lateness_ns: None,
            max_clock_skew_ns: 0,
        }
    }

    fn run(env: &str) -> Attrs {
        attrs(&[
            ("cicd.pipeline.run.id", "wf-1"),
            ("changetrail.change.id", "CHG-1"),
            ("cicd.pipeline.name", "deploy"),
            ("deployment.environment.name", env),
        ])
    }

    fn facts(info: &ItemInfo, a: &Attrs) -> Vec<FactRecord> {
        facts_from_item(
            info,
            a,
            &Policy::default(),
            &IdentityVerifier::default(),
            &intake("a"),
        )
    }

    fn deploy_step(extra: &[(&str, &str)]) -> Attrs {
        let mut a = attrs(&[
            ("cicd.pipeline.run.id", "wf-1"),
            ("changetrail.change.id", "CHG-1"),
            ("cicd.pipeline.task.run.id", "t-1"),
            ("cicd.pipeline.task.type", "deploy"),
        ]);
        a.extend(attrs(extra));
        a
    }

    #[test]
    fn a_repeat_is_one_key_and_a_contradiction_another() {
        let (p, ids) = (Policy::default(), IdentityVerifier::default());
        let a = facts_from_item(&info(1, 2), &run("production"), &p, &ids, &intake("a"));
        // The same statement from another sender, later: the same fact.
        let mut later = intake("b");
        later.received_ns = 500;
        let b = facts_from_item(&info(1, 2), &run("production"), &p, &ids, &later);
        assert_eq!(a[0].key, b[0].key);
        let c = facts_from_item(&info(1, 2), &run("staging"), &p, &ids, &intake("a"));
        assert_ne!(a[0].key, c[0].key);
        assert!(
            a[0].key.starts_with("run:wf-1:requested:span:"),
            "{}",
            a[0].key
        );
        assert_eq!(a[0].sent_by.as_ref().unwrap().name, "a");
        assert_eq!(a[0].stated_until_ns, Some(2));
        assert_eq!(a[0].stated_ns(), 2);
    }

    #[test]
    fn a_retried_export_of_a_deploy_attempt_is_one_fact_and_the_next_attempt_another() {
        let first = facts(&info(10, 20), &deploy_step(&[]));
        let again = facts_from_item(
            &info(10, 20),
            &deploy_step(&[]),
            &Policy::default(),
            &IdentityVerifier::default(),
            &Intake {
                received_ns: 9_000,
                max_lateness_ns: Some(5),
                ..intake("retrying exporter")
            },
        );
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].key, again[0].key);
        let retry = facts(
            &info(30, 40),
            &deploy_step(&[
                ("cicd.pipeline.task.run.id", "t-2"),
                ("changetrail.task.attempt", "1"),
                ("changetrail.task.retried_from", "t-1"),
            ]),
        );
        assert_ne!(first[0].key, retry[0].key);
        assert!(
            retry[0].key.starts_with("task:wf-1:t-2:span:"),
            "{}",
            retry[0].key
        );
        let Fact::Task(t) = &retry[0].fact else {
            panic!("{retry:?}")
        };
        assert_eq!((t.attempt, t.retried_from.as_deref()), (1, Some("t-1")));
    }

    #[test]
    fn a_deploy_attempt_states_its_result_or_its_spans_status() {
        let stated = facts(
            &info(10, 20),
            &deploy_step(&[
                ("cicd.pipeline.task.run.result", "COMPLETED_WITH_ERRORS"),
                ("cicd.pipeline.task.name", "roll out"),
                ("cicd.worker.id", "w-3"),
                ("changetrail.identity.credential_id", "AKIA1"),
                ("changetrail.task.triggered_by", "alice"),
            ]),
        );
        let Fact::Task(t) = &stated[0].fact else {
            panic!("{stated:?}")
        };
        assert_eq!(t.result, "success");
        assert_eq!(t.task, "roll out");
        assert_eq!(t.task_type, "deploy");
        assert_eq!((t.start_ns, t.end_ns), (10, 20));
        assert_eq!(t.worker.as_deref(), Some("w-3"));
        assert_eq!(t.credential_id.as_deref(), Some("AKIA1"));
        assert_eq!(t.triggered_by.as_deref(), Some("alice"));
        assert_eq!(t.identity, None, "no principal or token stated");
        assert_eq!(stated[0].time_ns, 20, "an attempt is dated by its end");
        assert_eq!(stated[0].stated_until_ns, None);

        let mut failed = info(10, 20);
        failed.error = true;
        let f = facts(&failed, &deploy_step(&[]));
        let Fact::Task(t) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!((t.result.as_str(), t.task.as_str()), ("failure", "deploy"));

        let f = facts(
            &info(10, 20),
            &deploy_step(&[("changetrail.identity.principal", "svc-deployer")]),
        );
        let Fact::Task(t) = &f[0].fact else {
            panic!("{f:?}")
        };
        let who = t.identity.as_ref().unwrap();
        assert_eq!(who.subject.as_deref(), Some("svc-deployer"));
        assert!(!who.established.is_verified());
    }

    #[test]
    fn builds_tests_and_plain_runtime_spans_state_no_fact() {
        let build = deploy_step(&[("cicd.pipeline.task.type", "build")]);
        assert_eq!(facts(&info(1, 2), &build), []);
        // A runtime span bound to the run by its id says nothing about what the change is.
        let bound = attrs(&[("cicd.pipeline.run.id", "wf-1"), ("http.route", "/pay")]);
        assert_eq!(facts(&info(1, 2), &bound), []);
        // Describing a run needs an id to name it by.
        let nameless = attrs(&[("cicd.pipeline.name", "deploy")]);
        assert_eq!(facts(&info(1, 2), &nameless), []);
    }

    #[test]
    fn a_run_span_states_the_change_and_how_it_ended() {
        let mut a = attrs(&[
            ("cicd.pipeline.run.id", "wf-9"),
            ("cicd.pipeline.result", "Succeeded"),
            ("changetrail.change.kind", "Emergency"),
            ("changetrail.target.service", "pay"),
            ("changetrail.target.version", "1.2.3"),
            ("artifact.hash", "sha256:ab"),
            ("vcs.ref.head.revision", "c0ffee"),
            ("changetrail.change.requester", "alice"),
        ]);
        let f = facts(&info(5, 50), &a);
        assert_eq!(f.len(), 2);
        // No change id: the run id names the change.
        assert_eq!(f[0].change_id.as_deref(), Some("wf-9"));
        assert_eq!(f[0].run_id.as_deref(), Some("wf-9"));
        assert!(f[0].key.starts_with("run:wf-9:requested:span:"));
        assert!(f[1].key.starts_with("run:wf-9:finished:span:"));
        let Fact::Change(c) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!(c.kind.as_deref(), Some("emergency"));
        assert_eq!(c.service.as_deref(), Some("pay"));
        assert_eq!(c.version.as_deref(), Some("1.2.3"));
        assert_eq!(c.artifact.as_deref(), Some("sha256:ab"));
        assert_eq!(c.revision.as_deref(), Some("c0ffee"));
        assert_eq!(c.requested_ns, 5);
        assert_eq!(
            c.requester.as_ref().unwrap().subject.as_deref(),
            Some("alice")
        );
        assert_eq!((f[0].time_ns, f[0].stated_until_ns), (5, Some(50)));
        assert_eq!(
            f[1].fact,
            Fact::RunFinished(RunFinishedFact {
                result: "success".into(),
                end_ns: 50,
                compensation_run: None,
            })
        );
        assert_eq!(f[1].time_ns, 50);
        // Blank values are not statements.
        a.insert(
            "changetrail.target.version".into(),
            AttrValue::Str("  ".into()),
        );
        let Fact::Change(c) = &facts(&info(5, 50), &a)[0].fact else {
            panic!()
        };
        assert_eq!(c.version, None);
    }

    #[test]
    fn an_approval_without_a_decision_is_unknown_never_approved() {
        let (p, ids) = (Policy::default(), IdentityVerifier::default());
        let mut a = attrs(&[
            ("changetrail.change.id", "CHG-1"),
            ("cicd.pipeline.task.run.id", "t-appr"),
            ("cicd.pipeline.task.type", "approval"),
            ("changetrail.approval.approver", "bob"),
        ]);
        let f = facts_from_item(&info(1, 2), &a, &p, &ids, &intake("a"));
        let Fact::Approval(x) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!(x.decision, decision::UNKNOWN);
        assert_eq!(x.stated_decision, None);
        a.insert(
            "changetrail.approval.decision".into(),
            AttrValue::Str("LGTM".into()),
        );
        let f = facts_from_item(&info(1, 2), &a, &p, &ids, &intake("a"));
        let Fact::Approval(x) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!(x.decision, decision::UNKNOWN);
        assert_eq!(x.stated_decision.as_deref(), Some("LGTM"));
        a.insert(
            "changetrail.approval.decision".into(),
            AttrValue::Str("Approved".into()),
        );
        let f = facts_from_item(&info(1, 2), &a, &p, &ids, &intake("a"));
        let Fact::Approval(x) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!(x.decision, decision::APPROVED);
    }

    #[test]
    fn an_approval_log_record_is_decided_when_emitted_and_keyed_by_approver_and_instant() {
        let mut a = attrs(&[
            ("changetrail.change.id", "CHG-1"),
            ("event.name", "changetrail.approval"),
            ("changetrail.approval.approver", "bob"),
            ("changetrail.approval.decision", "reject"),
            ("changetrail.approval.subject", "sha256:ab"),
        ]);
        a.insert(
            "changetrail.approval.requested_at".into(),
            AttrValue::Int(3),
        );
        let f = facts(&log(7), &a);
        assert_eq!(f.len(), 1);
        assert!(
            f[0].key.starts_with("approval:CHG-1:bob@7:log:"),
            "{}",
            f[0].key
        );
        assert_eq!(f[0].time_ns, 7);
        let Fact::Approval(x) = &f[0].fact else {
            panic!("{f:?}")
        };
        assert_eq!(x.decision, decision::REJECTED);
        assert_eq!((x.requested_ns, x.decided_ns), (Some(3), Some(7)));
        assert_eq!(x.approved_subject.as_deref(), Some("sha256:ab"));
        assert_eq!(x.task_run_id, None);
        // A stated request time may be RFC 3339; an approval span without one was requested
        // when it started, and is decided when it ends.
        a.insert(
            "changetrail.approval.requested_at".into(),
            AttrValue::Str("1970-01-01T00:00:00.000000004Z".into()),
        );
        let Fact::Approval(x) = &facts(&log(7), &a)[0].fact else {
            panic!()
        };
        assert_eq!(x.requested_ns, Some(4));
        a.remove("changetrail.approval.requested_at");
        let Fact::Approval(x) = &facts(&info(2, 9), &a)[0].fact else {
            panic!()
        };
        assert_eq!((x.requested_ns, x.decided_ns), (Some(2), Some(9)));
    }

    #[test]
    fn sightings_of_one_version_within_a_window_share_a_key() {
        let seen = |at: i64, env: &str| VersionFact {
            service: "pay".into(),
            environment: env.into(),
            version: "1.2.3".into(),
            first_seen_ns: at,
            trace_id: None,
            previous: None,
        };
        let i = intake("collector");
        let a = version_fact(seen(1_000, "Production"), 1_000, &i);
        let b = version_fact(seen(1_999, "production"), 1_000, &i);
        let c = version_fact(seen(2_000, "production"), 1_000, &i);
        assert_eq!(a.key, "version:pay\u{1f}production\u{1f}1.2.3@1");
        assert_eq!(a.key, b.key);
        assert_ne!(b.key, c.key);
        assert_eq!((a.time_ns, a.source), (1_000, Source::Span));
        assert_eq!(a.fact.entry_kind(), "version.observed");
        assert_eq!(
            version_key_prefix("pay", "PROD", "2"),
            format!("{}2", service_key_prefix("pay", "prod"))
        );
        // A window of zero is one nanosecond, not a division by zero.
        assert_eq!(
            version_fact(seen(5, "prod"), 0, &i).key,
            "version:pay\u{1f}prod\u{1f}1.2.3@5"
        );
    }
}
