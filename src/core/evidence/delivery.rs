//! The four keys of software delivery, from production changes' evidence: deployment
//! frequency, lead time for changes, change failure rate and time to restore, per service and
//! for all services, over a period. Exact definitions (the API and the report say the same):
//!
//! - a change's deploy **succeeded** when every deploy step it ran ended in a success (a retry
//!   that succeeded after failures counts), at the latest step's first success; it **failed**
//!   when a step ran and never succeeded, at its last attempt's end. Skipped and cancelled
//!   attempts did nothing and are left out; any other result (failure, timeout, error, a word
//!   nobody defined) is a failure;
//! - a **deployment** is a production change whose deploy succeeded in the period (rollbacks and
//!   emergencies included: each put a version in place); its **lead time** runs from the
//!   change's request to then;
//! - a change **landed** in the period when its deploy succeeded or failed in it;
//! - a landed change **failed** when its deploy failed, when another change rolled it back, or
//!   when its runtime comparison found a regression (CHANGE_REGRESSION); the **change failure
//!   rate** is failed / landed;
//! - it was **restored** by the first successful deploy, at or after the failure, of a rollback of
//!   it, or else of any change to the same service in the same environment (a fix forward);
//!   **time to restore** runs from the failed or rolled-back deploy to then. Failures not yet
//!   restored are listed and counted, not timed.
//!
//! Services and environments match without case. Times are the changes' own stated times
//! (deploy attempts' ends), the ones the report uses. Linear in the changes after one sort.

use super::Evidence;
use serde::Serialize;
use std::collections::BTreeMap;

/// One production change, as the four keys need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    pub change_id: String,
    /// Lower case.
    pub service: String,
    /// Lower case.
    pub environment: String,
    pub requested_ns: Option<i64>,
    /// When its deploy succeeded.
    pub succeeded_ns: Option<i64>,
    /// When its deploy failed (a step that ran never succeeded).
    pub failed_ns: Option<i64>,
    pub rollback_of: Option<String>,
    /// Its runtime comparison found a regression after the deploy.
    pub regressed: bool,
}

/// Whether an attempt did something: skipped and cancelled ones did not.
fn ran(result: &str) -> bool {
    !matches!(result, "skip" | "cancellation")
}

impl Landing {
    /// A production change with a service and a deploy that ran, else `None`.
    pub fn of(e: &Evidence) -> Option<Landing> {
        let c = &e.change;
        if !c.production {
            return None;
        }
        let mut succeeded: Option<i64> = None;
        let mut failed: Option<i64> = None;
        for step in &e.steps {
            let ran: Vec<_> = step.attempts.iter().filter(|a| ran(&a.result)).collect();
            if ran.is_empty() {
                continue;
            }
            match ran
                .iter()
                .filter(|a| a.result == "success")
                .map(|a| a.end_ns)
                .min()
            {
                Some(t) => succeeded = Some(succeeded.map_or(t, |s| s.max(t))),
                None => {
                    let t = ran.iter().map(|a| a.end_ns).max().unwrap_or(i64::MIN);
                    failed = Some(failed.map_or(t, |f| f.max(t)));
                }
            }
        }
        // One step that never succeeded fails the deploy, whatever the others did.
        let succeeded_ns = if failed.is_some() { None } else { succeeded };
        if succeeded_ns.is_none() && failed.is_none() {
            return None;
        }
        Some(Landing {
            change_id: c.id.clone(),
            service: c.service.as_deref()?.to_lowercase(),
            environment: c.environment.as_deref().unwrap_or_default().to_lowercase(),
            requested_ns: c.requested_ns.or(e.timeline.requested_ns),
            succeeded_ns,
            failed_ns: failed,
            rollback_of: c.rollback_of.clone(),
            regressed: e.runtime.as_ref().is_some_and(|r| r.regression),
        })
    }

    /// When it landed: its success, else its failure.
    fn landed_ns(&self) -> i64 {
        self.succeeded_ns.or(self.failed_ns).unwrap_or(i64::MIN)
    }
}

/// A failed change and how it was restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    pub change_id: String,
    pub service: String,
    /// `deploy_failed`, `rolled_back` or `regression`.
    pub why: &'static str,
    pub failed_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_ns: Option<i64>,
    /// The change whose deploy restored it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored_by: Option<String>,
}

/// The four keys over one set of changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Keys {
    pub deployments: u64,
    pub deployments_per_day: f64,
    /// Seconds, over the deployments whose request time is known.
    pub lead_time_median_s: Option<i64>,
    pub lead_time_p90_s: Option<i64>,
    pub landed: u64,
    pub failed: u64,
    pub change_failure_rate: Option<f64>,
    pub restored: u64,
    pub time_to_restore_median_s: Option<i64>,
    pub time_to_restore_max_s: Option<i64>,
}

/// The four keys of a period, per service and for all of them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    pub from_ns: i64,
    pub to_ns: i64,
    pub all: Keys,
    pub services: BTreeMap<String, Keys>,
    pub failures: Vec<Failure>,
}

/// The nearest-rank percentile `p` (0–100) of sorted `v`.
fn percentile(v: &[i64], p: usize) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    let rank = (p * v.len()).div_ceil(100).clamp(1, v.len());
    Some(v[rank - 1])
}

fn secs(ns: i64) -> i64 {
    ns / 1_000_000_000
}

/// The first success at or after `t` in `successes` (sorted by time, then change id), not by
/// `not`.
fn first_after<'a>(successes: &'a [(i64, &'a str)], t: i64, not: &str) -> Option<(i64, &'a str)> {
    let start = successes.partition_point(|(s, _)| *s < t);
    successes[start..]
        .iter()
        .find(|(_, id)| *id != not)
        .copied()
}

/// The four keys of `[from_ns, to_ns)` from every production change that may matter (those
/// landing in it, and later ones that may restore them).
pub fn four_keys(changes: &[Landing], from_ns: i64, to_ns: i64) -> Delivery {
    // Successful deploys per (service, environment) and per change rolled back, by time.
    let mut by_target: BTreeMap<(&str, &str), Vec<(i64, &str)>> = BTreeMap::new();
    let mut rollbacks: BTreeMap<&str, Vec<(i64, &str)>> = BTreeMap::new();
    for c in changes {
        if let Some(t) = c.succeeded_ns {
            by_target
                .entry((&c.service, &c.environment))
                .or_default()
                .push((t, &c.change_id));
            if let Some(target) = c.rollback_of.as_deref() {
                rollbacks.entry(target).or_default().push((t, &c.change_id));
            }
        }
    }
    for v in by_target.values_mut().chain(rollbacks.values_mut()) {
        v.sort_unstable();
    }
    // Changes another change set out to roll back, whether or not that rollback succeeded.
    let rolled_back: std::collections::BTreeSet<&str> = changes
        .iter()
        .filter_map(|c| c.rollback_of.as_deref().filter(|t| *t != c.change_id))
        .collect();
    let in_period = |t: i64| t >= from_ns && t < to_ns;
    let mut failures = Vec::new();
    for c in changes.iter().filter(|c| in_period(c.landed_ns())) {
        let (why, failed_ns) = match (c.failed_ns, c.succeeded_ns) {
            (Some(t), _) => ("deploy_failed", t),
            (None, Some(t)) if rolled_back.contains(c.change_id.as_str()) => ("rolled_back", t),
            (None, Some(t)) if c.regressed => ("regression", t),
            _ => continue,
        };
        let empty = Vec::new();
        let same_target = by_target
            .get(&(c.service.as_str(), c.environment.as_str()))
            .unwrap_or(&empty);
        // A rollback that completed first restores it; else (none, or none succeeded yet) the
        // target's next successful deploy after the failure, a fix forward.
        let restore = rollbacks
            .get(c.change_id.as_str())
            .and_then(|r| first_after(r, failed_ns, &c.change_id))
            .or_else(|| first_after(same_target, failed_ns, &c.change_id));
        failures.push(Failure {
            change_id: c.change_id.clone(),
            service: c.service.clone(),
            why,
            failed_ns,
            restored_ns: restore.map(|(t, _)| t),
            restored_by: restore.map(|(_, id)| id.to_owned()),
        });
    }
    let days = ((to_ns as f64 - from_ns as f64) / 86_400e9).max(1e-9);
    let keys = |service: Option<&str>| {
        let mine = |c: &&Landing| service.is_none_or(|s| c.service == s);
        let landed: Vec<&Landing> = changes
            .iter()
            .filter(mine)
            .filter(|c| in_period(c.landed_ns()))
            .collect();
        let deployments = landed.iter().filter(|c| c.succeeded_ns.is_some()).count();
        let mut leads: Vec<i64> = landed
            .iter()
            .filter_map(|c| c.succeeded_ns?.checked_sub(c.requested_ns?))
            .filter(|d| *d >= 0)
            .map(secs)
            .collect();
        leads.sort_unstable();
        let failed: Vec<&Failure> = failures
            .iter()
            .filter(|f| service.is_none_or(|s| f.service == s))
            .collect();
        let mut restores: Vec<i64> = failed
            .iter()
            .filter_map(|f| f.restored_ns?.checked_sub(f.failed_ns))
            .filter(|d| *d >= 0)
            .map(secs)
            .collect();
        restores.sort_unstable();
        Keys {
            deployments: deployments as u64,
            deployments_per_day: deployments as f64 / days,
            lead_time_median_s: percentile(&leads, 50),
            lead_time_p90_s: percentile(&leads, 90),
            landed: landed.len() as u64,
            failed: failed.len() as u64,
            change_failure_rate: (!landed.is_empty())
                .then(|| failed.len() as f64 / landed.len() as f64),
            restored: restores.len() as u64,
            time_to_restore_median_s: percentile(&restores, 50),
            time_to_restore_max_s: restores.last().copied(),
        }
    };
    let services: BTreeMap<String, Keys> = changes
        .iter()
        .filter(|c| in_period(c.landed_ns()))
        .map(|c| c.service.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|s| {
            let k = keys(Some(&s));
            (s, k)
        })
        .collect();
    Delivery {
        from_ns,
        to_ns,
        all: keys(None),
        services,
        failures,
    }
}

/// Deployments per week (weeks starting Monday, UTC) in `[from_ns, to_ns)`, for a chart.
pub fn deployments_per_week(changes: &[Landing], from_ns: i64, to_ns: i64) -> Vec<(String, u64)> {
    let mut weeks: BTreeMap<String, u64> = BTreeMap::new();
    for t in changes
        .iter()
        .filter_map(|c| c.succeeded_ns)
        .filter(|t| *t >= from_ns && *t < to_ns)
    {
        *weeks.entry(super::report::week_of(t)).or_default() += 1;
    }
    weeks.into_iter().collect()
}

/// Deployments' lead times in the report's buckets (`LEAD_TIME_BUCKETS`), for a chart.
pub fn lead_time_buckets(changes: &[Landing], from_ns: i64, to_ns: i64) -> Vec<(String, u64)> {
    let buckets = &super::report::LEAD_TIME_BUCKETS;
    let mut counts = vec![0u64; buckets.len()];
    for c in changes {
        let (Some(done), Some(asked)) = (c.succeeded_ns, c.requested_ns) else {
            continue;
        };
        if done < from_ns || done >= to_ns || done < asked {
            continue;
        }
        if let Some(i) = buckets.iter().position(|(_, upper)| done - asked < *upper) {
            counts[i] += 1;
        }
    }
    buckets
        .iter()
        .zip(counts)
        .map(|((label, _), n)| ((*label).to_owned(), n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    fn landing(id: &str, service: &str, req: i64, ok: Option<i64>, failed: Option<i64>) -> Landing {
        Landing {
            change_id: id.into(),
            service: service.into(),
            environment: "production".into(),
            requested_ns: Some(req),
            succeeded_ns: ok,
            failed_ns: failed,
            rollback_of: None,
            regressed: false,
        }
    }

    /// Each failure as (change, why, restored by).
    fn failures(d: &Delivery) -> Vec<(&str, &'static str, Option<&str>)> {
        d.failures
            .iter()
            .map(|f| (f.change_id.as_str(), f.why, f.restored_by.as_deref()))
            .collect()
    }

    /// A week of `svc`, figures worked out by hand:
    /// A requested day 0, deployed 2 h later; B requested day 1, deployed 30 min later and rolled
    /// back by R (requested 1 h after B's request, deployed 20 min after that: restored 50 min
    /// after B's deploy); C requested day 2, its deploy failed at +40 min, D deployed svc again
    /// at +3 h (restored 2 h 20 min after the failure); `other`'s E failed, and F, deployed after
    /// the period, restored it 6 days later (a restore counts wherever it falls; F is no deployment
    /// of this period).
    #[test]
    fn the_four_keys_of_a_week_match_a_hand_count() {
        let t0 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
        let mut r = landing(
            "R",
            "svc",
            t0 + DAY + HOUR,
            Some(t0 + DAY + HOUR + 20 * MIN),
            None,
        );
        r.rollback_of = Some("B".into());
        let changes = vec![
            landing("A", "svc", t0, Some(t0 + 2 * HOUR), None),
            landing("B", "svc", t0 + DAY, Some(t0 + DAY + 30 * MIN), None),
            r,
            landing(
                "C",
                "svc",
                t0 + 2 * DAY,
                None,
                Some(t0 + 2 * DAY + 40 * MIN),
            ),
            landing(
                "D",
                "svc",
                t0 + 2 * DAY + HOUR,
                Some(t0 + 2 * DAY + 3 * HOUR),
                None,
            ),
            landing(
                "E",
                "other",
                t0 + 3 * DAY,
                None,
                Some(t0 + 3 * DAY + 10 * MIN),
            ),
            landing(
                "F",
                "other",
                t0 + 9 * DAY,
                Some(t0 + 9 * DAY + 10 * MIN),
                None,
            ),
        ];
        let d = four_keys(&changes, t0, t0 + 7 * DAY);
        let svc = &d.services["svc"];
        // Deployments: A, B, R, D. Lead times 2 h, 30 min, 20 min, 2 h → median (nearest rank,
        // the 2nd of 4) 30 min, p90 (the 4th) 2 h.
        assert_eq!(svc.deployments, 4);
        assert!((svc.deployments_per_day - 4.0 / 7.0).abs() < 1e-9);
        assert_eq!(svc.lead_time_median_s, Some(30 * 60));
        assert_eq!(svc.lead_time_p90_s, Some(2 * 3600));
        // Landed: A, B, R, C, D; failed: B (rolled back), C (deploy failed) → 2/5.
        assert_eq!((svc.landed, svc.failed), (5, 2));
        assert_eq!(svc.change_failure_rate, Some(0.4));
        // Restores: B in 50 min (R), C in 2 h 20 min (D) → median (1st of 2) 50 min.
        assert_eq!(svc.restored, 2);
        assert_eq!(svc.time_to_restore_median_s, Some(50 * 60));
        assert_eq!(svc.time_to_restore_max_s, Some(140 * 60));
        let other = &d.services["other"];
        assert_eq!((other.deployments, other.landed, other.failed), (0, 1, 1));
        assert_eq!(other.change_failure_rate, Some(1.0));
        assert_eq!(
            (other.restored, other.time_to_restore_median_s),
            (1, Some(6 * 24 * 3600))
        );
        // All services: 4 deployments, 3 failures of 6 landed.
        assert_eq!((d.all.deployments, d.all.landed, d.all.failed), (4, 6, 3));
        assert_eq!(d.all.change_failure_rate, Some(0.5));
        assert_eq!(
            failures(&d),
            vec![
                ("B", "rolled_back", Some("R")),
                ("C", "deploy_failed", Some("D")),
                ("E", "deploy_failed", Some("F")),
            ]
        );
    }

    /// Cases the hand-counted week does not hold.
    #[test]
    fn restores_stay_within_their_target_and_never_run_backwards() {
        let t0 = 0;
        // X fails in production-eu; Y deploys the same service in production-us first, Z in
        // production-eu later: Z restores X.
        let x = landing("X", "svc", t0, None, Some(t0 + HOUR));
        let mut y = landing("Y", "svc", t0, Some(t0 + 2 * HOUR), None);
        y.environment = "production-us".into();
        let mut x = x;
        x.environment = "production-eu".into();
        let mut z = landing("Z", "svc", t0, Some(t0 + 3 * HOUR), None);
        z.environment = "production-eu".into();
        // P is rolled back by Q, whose stated deploy ended before P's (clock skew): not a
        // restore that runs backwards; R fixes forward later. S names itself as rolled back.
        let p = landing("P", "api", t0, Some(t0 + 2 * HOUR), None);
        let mut q = landing("Q", "api", t0, Some(t0 + HOUR), None);
        q.rollback_of = Some("P".into());
        let r = landing("R", "api", t0, Some(t0 + 5 * HOUR), None);
        let mut s = landing("S", "web", t0, Some(t0 + HOUR), None);
        s.rollback_of = Some("S".into());
        // U's rollback V failed: U still failed, and W's later deploy restores it.
        let u = landing("U", "db", t0, Some(t0 + HOUR), None);
        let mut v = landing("V", "db", t0, None, Some(t0 + 2 * HOUR));
        v.rollback_of = Some("U".into());
        let w = landing("W", "db", t0, Some(t0 + 4 * HOUR), None);
        let d = four_keys(&[x, y, z, p, q, r, s, u, v, w], t0, t0 + DAY);
        assert_eq!(
            failures(&d),
            vec![
                ("X", "deploy_failed", Some("Z")),
                ("P", "rolled_back", Some("R")),
                ("U", "rolled_back", Some("W")),
                ("V", "deploy_failed", Some("W")),
            ]
        );
        assert_eq!(d.services["api"].time_to_restore_median_s, Some(3 * 3600));
        assert_eq!(
            d.services["web"].failed, 0,
            "a change does not roll itself back"
        );
    }

    fn attempt(result: &str, end: i64) -> crate::core::evidence::AttemptView {
        crate::core::evidence::AttemptView {
            attempt: 0,
            task_run_id: format!("t-{end}"),
            retried_from: None,
            result: result.into(),
            start_ns: end - MIN,
            end_ns: end,
            worker: None,
            identity: None,
            credential_id: None,
            triggered_by: None,
            trace_id: None,
            reason: None,
            sources: vec![],
            received_ns: end,
            sent_by: vec![],
        }
    }

    #[test]
    fn a_deploy_succeeds_when_every_step_that_ran_did() {
        let step =
            |attempts: Vec<crate::core::evidence::AttemptView>| crate::core::evidence::StepView {
                task: "deploy".into(),
                task_type: "deploy".into(),
                attempts,
                outcome: String::new(),
                summary: String::new(),
            };
        let mut e = super::super::evidence("C", &[], vec![], &super::super::Policy::default());
        e.change.production = true;
        e.change.service = Some("Cart".into());
        e.change.environment = Some("Production".into());
        // A retry that succeeded after a timeout: succeeded at its success.
        e.steps = vec![step(vec![attempt("timeout", 10), attempt("success", 20)])];
        let l = Landing::of(&e).unwrap();
        assert_eq!((l.succeeded_ns, l.failed_ns), (Some(20), None));
        assert_eq!(
            (l.service.as_str(), l.environment.as_str()),
            ("cart", "production")
        );
        // A canary that succeeded and a production step that failed: failed.
        e.steps.push(step(vec![attempt("failure", 40)]));
        let l = Landing::of(&e).unwrap();
        assert_eq!((l.succeeded_ns, l.failed_ns), (None, Some(40)));
        // Cancelled or skipped only: nothing ran, nothing landed.
        e.steps = vec![step(vec![attempt("cancellation", 10), attempt("skip", 20)])];
        assert!(Landing::of(&e).is_none());
    }

    #[test]
    fn an_empty_period_has_no_rates() {
        let d = four_keys(&[], 0, DAY);
        assert_eq!(d.all.deployments, 0);
        assert_eq!(d.all.change_failure_rate, None);
        assert_eq!(d.all.lead_time_median_s, None);
        assert!(d.services.is_empty());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[1, 2, 3, 4], 50), Some(2));
        assert_eq!(percentile(&[1, 2, 3, 4], 90), Some(4));
        assert_eq!(percentile(&[7], 50), Some(7));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn a_regression_is_a_failure_restored_by_the_next_deploy() {
        let mut bad = landing("BAD", "svc", 0, Some(HOUR), None);
        bad.regressed = true;
        let fix = landing("FIX", "svc", HOUR, Some(HOUR + 25 * MIN), None);
        let d = four_keys(&[bad, fix], 0, DAY);
        assert_eq!((d.all.landed, d.all.failed), (2, 1));
        let f = &d.failures[0];
        assert_eq!((f.change_id.as_str(), f.why), ("BAD", "regression"));
        assert_eq!(
            (f.restored_by.as_deref(), f.restored_ns),
            (Some("FIX"), Some(HOUR + 25 * MIN))
        );
    }
}
