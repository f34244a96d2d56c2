//! The four keys of software delivery, from production changes' evidence: deployment
//! frequency, lead time for changes, change failure rate and time to restore, per service and
//! for all services, over a period. Exact definitions (the API and the report say the same):
//!
//! - a **deployment** is a production change whose first successful deploy attempt ended in
//!   the period (rollbacks and emergencies included: each put a version in place);
//! - its **lead time** runs from the change's request to that end;
//! - a change **landed** in the period when it is a deployment, or when every deploy attempt
//!   it ran failed and its last one ended in the period;
//! - a landed change **failed** when its deploy failed, or when a later change rolled it back;
//!   the **change failure rate** is failed / landed;
//! - it was **restored** when a rollback of it (for a rolled-back change) or the next successful
//!   deploy of the same service (for a failed deploy) completed; **time to restore** runs from
//!   the failed deploy's end, or from the rolled-back deploy's end, to then. Failures not yet
//!   restored are listed and counted, not timed.
//!
//! Times are the changes' own stated times (deploy attempts' ends), the same the report uses.

use super::Evidence;
use serde::Serialize;
use std::collections::BTreeMap;

/// One production change, as the four keys need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    pub change_id: String,
    pub service: String,
    pub kind: String,
    pub requested_ns: Option<i64>,
    /// When its first successful deploy attempt ended.
    pub succeeded_ns: Option<i64>,
    /// When its last deploy attempt ended, when every one failed.
    pub failed_ns: Option<i64>,
    pub rollback_of: Option<String>,
}

impl Landing {
    /// A production change with a service and a deploy attempt, else `None`.
    pub fn of(e: &Evidence) -> Option<Landing> {
        let c = &e.change;
        if !c.production {
            return None;
        }
        let attempts: Vec<_> = e
            .steps
            .iter()
            .flat_map(|s| s.attempts.iter())
            .filter(|a| a.result != "skip")
            .collect();
        let succeeded_ns = attempts
            .iter()
            .filter(|a| a.result == "success")
            .map(|a| a.end_ns)
            .min();
        let failed_ns = match succeeded_ns {
            Some(_) => None,
            None => attempts
                .iter()
                .filter(|a| a.result != "running")
                .map(|a| a.end_ns)
                .max(),
        };
        if succeeded_ns.is_none() && failed_ns.is_none() {
            return None;
        }
        Some(Landing {
            change_id: c.id.clone(),
            service: c.service.clone()?,
            kind: c.kind.clone(),
            requested_ns: c.requested_ns.or(e.timeline.requested_ns),
            succeeded_ns,
            failed_ns,
            rollback_of: c.rollback_of.clone(),
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
    /// `deploy_failed` or `rolled_back`.
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

/// The four keys of `[from_ns, to_ns)` from every production change that may matter (those
/// landing in it, and later ones that may restore them).
pub fn four_keys(changes: &[Landing], from_ns: i64, to_ns: i64) -> Delivery {
    let in_period = |t: i64| t >= from_ns && t < to_ns;
    let mut failures = Vec::new();
    for c in changes.iter().filter(|c| in_period(c.landed_ns())) {
        if let Some(failed_ns) = c.failed_ns {
            // Restored by the service's next successful deploy.
            let next = changes
                .iter()
                .filter(|o| o.service == c.service)
                .filter_map(|o| Some((o.succeeded_ns?, o)))
                .filter(|(t, _)| *t >= failed_ns)
                .min_by_key(|(t, o)| (*t, o.change_id.clone()));
            failures.push(Failure {
                change_id: c.change_id.clone(),
                service: c.service.clone(),
                why: "deploy_failed",
                failed_ns,
                restored_ns: next.map(|(t, _)| t),
                restored_by: next.map(|(_, o)| o.change_id.clone()),
            });
        } else if let Some(done) = c.succeeded_ns {
            // Rolled back: restored when the first of its rollbacks completed.
            let rollbacks: Vec<&Landing> = changes
                .iter()
                .filter(|o| o.rollback_of.as_deref() == Some(c.change_id.as_str()))
                .collect();
            if rollbacks.is_empty() {
                continue;
            }
            let first = rollbacks
                .iter()
                .filter_map(|o| Some((o.succeeded_ns?, *o)))
                .min_by_key(|(t, o)| (*t, o.change_id.clone()));
            failures.push(Failure {
                change_id: c.change_id.clone(),
                service: c.service.clone(),
                why: "rolled_back",
                failed_ns: done,
                restored_ns: first.map(|(t, _)| t),
                restored_by: first.map(|(_, o)| o.change_id.clone()),
            });
        }
    }
    let days = ((to_ns - from_ns) as f64 / 86_400e9).max(1e-9);
    let keys = |service: Option<&str>| {
        let mine = |c: &&Landing| service.is_none_or(|s| c.service == s);
        let landed: Vec<&Landing> = changes
            .iter()
            .filter(mine)
            .filter(|c| in_period(c.landed_ns()))
            .collect();
        let deployments: Vec<&&Landing> =
            landed.iter().filter(|c| c.succeeded_ns.is_some()).collect();
        let mut leads: Vec<i64> = deployments
            .iter()
            .filter_map(|c| Some(secs(c.succeeded_ns? - c.requested_ns?)))
            .filter(|s| *s >= 0)
            .collect();
        leads.sort_unstable();
        let failed: Vec<&Failure> = failures
            .iter()
            .filter(|f| service.is_none_or(|s| f.service == s))
            .collect();
        let mut restores: Vec<i64> = failed
            .iter()
            .filter_map(|f| Some(secs(f.restored_ns? - f.failed_ns)))
            .collect();
        restores.sort_unstable();
        Keys {
            deployments: deployments.len() as u64,
            deployments_per_day: deployments.len() as f64 / days,
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
            kind: "normal".into(),
            requested_ns: Some(req),
            succeeded_ns: ok,
            failed_ns: failed,
            rollback_of: None,
        }
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
        r.kind = "rollback".into();
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
        let f: Vec<_> = d
            .failures
            .iter()
            .map(|f| (f.change_id.as_str(), f.why, f.restored_by.as_deref()))
            .collect();
        assert_eq!(
            f,
            vec![
                ("B", "rolled_back", Some("R")),
                ("C", "deploy_failed", Some("D")),
                ("E", "deploy_failed", Some("F")),
            ]
        );
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
}
