//! What a change's evidence means once the rest of the ledger and the settings are known: which
//! stated times the receipts contradict, which facts arrived late, which tokens were first used
//! on another change, whether an approval token was issued for this change, whether a rollback
//! restores a version that ran before. The same function judges for the service (its neighbours
//! read from storage) and for an offline verifier (its neighbours built from a bundle).

use super::packet::{Evidence, IdentityRole, Receipt, deploy_succeeded};
use super::{VersionFact, decision};
use crate::core::evidence::identity::{Established, Principal};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, HashSet};

/// The settings judging takes (`[evidence]`, `[identity]`); a report records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How much later than a deploy's record an approval may be received and still count as
    /// before it (exporters batch and retry).
    pub receipt_tolerance_ns: i64,
    /// A deciding fact received longer than this after the time its sender states is late.
    pub max_lateness_ns: i64,
    /// An approval token that names no change or artifact proves nothing.
    pub require_bound_approvals: bool,
}

impl Default for Settings {
    /// The shipped defaults (src/defaults.toml; a test in config.rs keeps them equal).
    fn default() -> Settings {
        Settings {
            receipt_tolerance_ns: 60 * 1_000_000_000,
            max_lateness_ns: 24 * 3600 * 1_000_000_000,
            require_bound_approvals: false,
        }
    }
}

/// What a change's judgement needs from the rest of the ledger. Whoever judges fills only what
/// the changes at hand ask about (the service, per chunk, from storage) or everything (an
/// offline verifier, from a bundle).
#[derive(Debug, Clone, Default)]
pub struct Neighbours {
    /// Change and run ids that some change.requested fact names.
    pub known: HashSet<String>,
    /// credential → every subject that used it, with the first entry showing it there.
    pub credentials: HashMap<String, Vec<(String, u64)>>,
    /// (service, environment lowercased, version) → when sightings of it were first seen.
    pub sightings: HashMap<(String, String, String), Vec<i64>>,
    /// run id → the changes that claim it: facts naming it with a change id, and the change
    /// whose own id it is. A run claimed by another change is not this change's to vouch for.
    pub run_claims: HashMap<String, BTreeSet<String>>,
}

impl Neighbours {
    pub fn add_sighting(&mut self, v: &VersionFact) {
        self.sightings
            .entry(sighting_key(&v.service, &v.environment, &v.version))
            .or_default()
            .push(v.first_seen_ns);
    }

    pub fn add_run_claim(&mut self, run: &str, change: &str) {
        self.run_claims
            .entry(run.to_owned())
            .or_default()
            .insert(change.to_owned());
    }

    pub fn add_credential(&mut self, credential: &str, subject: &str, seq: u64) {
        let uses = self.credentials.entry(credential.to_owned()).or_default();
        match uses.iter_mut().find(|(s, _)| s == subject) {
            Some((_, first)) => *first = (*first).min(seq),
            None => uses.push((subject.to_owned(), seq)),
        }
    }
}

pub fn sighting_key(service: &str, environment: &str, version: &str) -> (String, String, String) {
    (
        service.to_owned(),
        environment.to_ascii_lowercase(),
        version.to_owned(),
    )
}

/// A credential this change used that another change used first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reuse {
    pub role: IdentityRole,
    pub subject: Option<String>,
    pub credential: String,
    /// Where it showed here.
    pub seq: u64,
    /// The change (or run) that used it first, and the entry that shows it there.
    pub first_subject: String,
    pub first_seq: u64,
}

/// An approval token issued for another change or artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenMismatch {
    pub approver: Option<String>,
    pub detail: String,
}

/// What judging found. Empty until `judge` runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Judgement {
    /// Deciding facts received later than allowed after their stated time.
    pub late: Vec<Receipt>,
    /// Deciding facts later than `max_lateness` that an import allowed (a backfill): not
    /// exceptions, but on record.
    pub allowed_late: Vec<Receipt>,
    /// Runs this change names that another change claims, with those changes.
    pub contested_runs: Vec<(String, Vec<String>)>,
    pub reused: Vec<Reuse>,
    pub token_mismatches: Vec<TokenMismatch>,
    /// Digests of tokens this judgement discredited with a code of their own (reuse, a token
    /// for another change): their identities count as asserted, reported once.
    pub discredited: Vec<String>,
    /// For a rollback that names its target: whether that change exists.
    pub rollback_target_known: Option<bool>,
    /// For a rollback: it puts back a version that ran in its environment before (or names
    /// none, so any new version it leaves running shows as an unexplained sighting).
    pub restores_seen_version: bool,
}

/// `Bob@Example.com`, `mailto:bob@example.com` and ` bob@example.com ` are one person.
pub fn normalize_subject(s: &str) -> String {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let t = ["mailto:", "acct:"]
        .iter()
        .find_map(|p| lower.strip_prefix(p))
        .unwrap_or(&lower);
    t.trim().to_owned()
}

fn downgrade(p: &mut Principal, reason: String) {
    let token_sha256 = match &p.established {
        Established::Verified { token_sha256, .. } => Some(token_sha256.clone()),
        Established::Asserted { token_sha256, .. } => token_sha256.clone(),
    };
    p.established = Established::Asserted {
        reason,
        token_sha256,
    };
}

/// Every principal in the evidence, mutably.
fn principals_mut(e: &mut Evidence) -> Vec<&mut Principal> {
    let mut out: Vec<&mut Principal> = Vec::new();
    out.extend(e.requester.as_mut());
    out.extend(e.approvals.iter_mut().filter_map(|a| a.approver.as_mut()));
    out.extend(
        e.steps
            .iter_mut()
            .flat_map(|s| s.attempts.iter_mut())
            .filter_map(|a| a.identity.as_mut()),
    );
    out
}

/// Judges a folded change: receipts against stated times, lateness, credentials reused from
/// other changes, approval tokens bound elsewhere, rollback targets. Identities whose token
/// proves nothing here are turned into asserted ones, with the reason.
pub fn judge(e: &mut Evidence, n: &Neighbours, s: &Settings) {
    let mut j = Judgement::default();
    let own = own_ids(e, n, &mut j);
    mark_before_first_deploy(e, s);
    judge_lateness(e, s, &mut j);
    find_reused_credentials(e, n, &own, &mut j);
    check_approval_tokens(e, &own, s, &mut j);
    discredit_reused_tokens(e, &mut j);
    j.discredited.sort();
    j.discredited.dedup();
    judge_rollback(e, n, &mut j);
    e.judgement = j;
}

/// What is this change's own: its id, and the runs no other change claims (those go to
/// `contested_runs`). A sender names a change's runs; naming another change's run must not make
/// that change's tokens "own".
fn own_ids(e: &Evidence, n: &Neighbours, j: &mut Judgement) -> HashSet<String> {
    let mut own: HashSet<String> = HashSet::from([e.change.id.clone()]);
    for run in &e.change.runs {
        let others: Vec<String> = n
            .run_claims
            .get(run)
            .into_iter()
            .flatten()
            .filter(|c| **c != e.change.id)
            .cloned()
            .collect();
        if others.is_empty() {
            own.insert(run.clone());
        } else {
            j.contested_runs.push((run.clone(), others));
        }
    }
    own
}

/// Before the deploy: by the stated times and by the receipts (a backdated approval sent after
/// the deploy's record is not before it).
fn mark_before_first_deploy(e: &mut Evidence, s: &Settings) {
    let (start, deploy_received) = (
        e.timeline.first_deploy_start_ns,
        e.timeline.deploy_received_ns,
    );
    for a in &mut e.approvals {
        a.before_first_deploy = match (a.decided_ns, start) {
            (Some(d), Some(st)) => Some(
                d < st
                    && deploy_received
                        .is_none_or(|r| a.received_ns <= r.saturating_add(s.receipt_tolerance_ns)),
            ),
            _ => None,
        };
    }
}

/// Deciding facts received too long after the time they state: late, or allowed by an import.
fn judge_lateness(e: &Evidence, s: &Settings, j: &mut Judgement) {
    let lateness = |r: &Receipt| r.received_ns.saturating_sub(r.stated_ns);
    for r in &e.deciding {
        if lateness(r) > r.max_lateness_ns.unwrap_or(s.max_lateness_ns) {
            j.late.push(r.clone());
        } else if lateness(r) > s.max_lateness_ns {
            j.allowed_late.push(r.clone());
        }
    }
}

/// Credentials another change used first: before this change's first use of it, in any role.
fn find_reused_credentials(e: &Evidence, n: &Neighbours, own: &HashSet<String>, j: &mut Judgement) {
    let mut own_first: HashMap<&str, u64> = HashMap::new();
    for u in &e.credentials {
        let f = own_first.entry(u.credential.as_str()).or_insert(u.seq);
        *f = (*f).min(u.seq);
    }
    for u in &e.credentials {
        let Some(uses) = n.credentials.get(&u.credential) else {
            continue;
        };
        let mine = own_first
            .get(u.credential.as_str())
            .copied()
            .unwrap_or(u.seq);
        let first = uses
            .iter()
            .filter(|(subject, seq)| !own.contains(subject) && *seq < mine)
            .min_by_key(|(_, seq)| *seq);
        if let Some((first_subject, first_seq)) = first {
            j.reused.push(Reuse {
                role: u.role,
                subject: u.subject.clone(),
                credential: u.credential.clone(),
                seq: u.seq,
                first_subject: first_subject.clone(),
                first_seq: *first_seq,
            });
        }
    }
}

/// Approval tokens issued for another change or artifact are discredited; with bound approval
/// tokens required, so is one that names neither.
fn check_approval_tokens(e: &mut Evidence, own: &HashSet<String>, s: &Settings, j: &mut Judgement) {
    let (change_id, artifact) = (e.change.id.clone(), e.change.artifact.clone());
    for a in &mut e.approvals {
        if a.decision != decision::APPROVED {
            continue;
        }
        let Some(p) = a.approver.as_mut() else {
            continue;
        };
        let Established::Verified {
            bound_change,
            bound_artifact,
            token_sha256,
            ..
        } = &p.established
        else {
            continue;
        };
        let mut wrong = Vec::new();
        if let Some(c) = bound_change
            && !own.contains(c)
        {
            wrong.push(format!("was issued for change {c}"));
        }
        // Bound to an artifact, the token names exactly what it approves.
        match (bound_artifact, &artifact) {
            (Some(b), Some(d)) if b != d => {
                wrong.push(format!("was issued for artifact {b}, not {d}"));
            }
            (Some(b), None) => wrong.push(format!(
                "was issued for artifact {b}, and the change states none"
            )),
            _ => {}
        }
        if !wrong.is_empty() {
            let detail = format!("the approval token {}", wrong.join(" and "));
            j.discredited.push(token_sha256.clone());
            j.token_mismatches.push(TokenMismatch {
                approver: p.subject.clone(),
                detail: format!("{detail} (this is {change_id})"),
            });
            downgrade(p, detail);
        } else if s.require_bound_approvals && bound_change.is_none() && bound_artifact.is_none() {
            downgrade(
                p,
                "the approval token names no change or artifact, and bound approval tokens are \
                 required"
                    .into(),
            );
        }
    }
}

/// A verified identity whose token another change used first proves nothing here.
fn discredit_reused_tokens(e: &mut Evidence, j: &mut Judgement) {
    let reused: Vec<(String, String)> = j
        .reused
        .iter()
        .map(|r| (r.credential.clone(), r.first_subject.clone()))
        .collect();
    for p in principals_mut(e) {
        let creds = p.established.credentials();
        if let Some((_, first)) = reused.iter().find(|(c, _)| creds.contains(c))
            && let Established::Verified { token_sha256, .. } = &p.established
        {
            j.discredited.push(token_sha256.clone());
            downgrade(
                p,
                format!("the token was used first on {first}; it proves nothing here"),
            );
        }
    }
}

/// Whether a rollback's target exists, and whether it puts back a version that ran before.
fn judge_rollback(e: &Evidence, n: &Neighbours, j: &mut Judgement) {
    let c = &e.change;
    j.rollback_target_known = c.rollback_of.as_ref().map(|r| n.known.contains(r));
    if c.kind == "rollback" {
        let before = e
            .timeline
            .first_deploy_start_ns
            .or(c.requested_ns)
            .unwrap_or(i64::MAX);
        j.restores_seen_version = match (&c.service, &c.environment, &c.version) {
            (Some(svc), Some(env), Some(ver)) => n
                .sightings
                .get(&sighting_key(svc, env, ver))
                .is_some_and(|t| t.iter().any(|t| *t < before)),
            // A rollback that names no version leaves whatever it runs to the sightings: a
            // version nobody approved shows up there, unexplained.
            _ => true,
        };
    }
}

/// Whether a judged change explains a production version seen at `seen_ns`: it deployed that
/// version there, the deploy completed within `tolerance_ns` of the sighting, and it was allowed
/// to (its last decision approved it, it is an emergency change, or it is a linked rollback to a
/// version that ran before).
pub fn explains(e: &Evidence, v: &VersionFact, tolerance_ns: i64) -> bool {
    let c = &e.change;
    let (from, to) = super::explained_window(e, tolerance_ns);
    let matches = c.service.as_deref() == Some(v.service.as_str())
        && c.version.as_deref() == Some(v.version.as_str())
        && c.environment
            .as_deref()
            .is_some_and(|env| env.eq_ignore_ascii_case(&v.environment))
        && v.first_seen_ns >= from
        && v.first_seen_ns <= to;
    if !matches || !deploy_succeeded(e) {
        return false;
    }
    let last_decision = e
        .approvals
        .iter()
        .filter(|a| a.decision != decision::PENDING)
        .max_by_key(|a| (a.decided_ns.unwrap_or(i64::MIN), a.seq))
        .map(|a| a.decision.as_str());
    let j = &e.judgement;
    last_decision == Some(decision::APPROVED)
        || c.kind == "emergency"
        || (c.kind == "rollback"
            && j.rollback_target_known == Some(true)
            && j.restores_seen_version)
}
