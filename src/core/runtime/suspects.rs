//! Which changes most likely caused a service's errors or latency in a window: each production
//! change deployed in (or just before) the window is compared with what ran before it, on its own
//! service and on the service asked about, and ranked by
//!
//! ```text
//! score = proximity × (rise on the service asked about + ½ × rise on its own service, if another)
//!                   × (1 + ¼ × blast radius)
//! ```
//!
//! - `rise` (see `super::rise`) is how much worse the window after the deploy is than the
//!   baseline before it, in units of the thresholds: error rate, p95 latency, new error kinds.
//! - `proximity` is how soon after the deploy the asked service's errors began: exp(−Δt / window)
//!   for the first minute after the deploy whose error rate is a threshold above the baseline's;
//!   ¼ when no minute is (a rise in latency only), and 0.1 with no rise at all.
//! - The blast radius is the other services whose own comparison around the same deploy is a
//!   clear regression: errors that started with it elsewhere.
//!
//! A heuristic, stated so a reader can recompute it from the `runtime.minute` entries.

use super::{Comparison, FirstError, MINUTE_NS, Minute, Thresholds, compare, minute_of, rise};
use serde::Serialize;
use std::collections::BTreeMap;

/// A production change's deploy, as a candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub change_id: String,
    pub service: String,
    pub version: Option<String>,
    pub deployed_ns: i64,
}

/// A service another change's deploy coincided with a regression on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Blast {
    pub service: String,
    pub before_error_rate: f64,
    pub after_error_rate: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ranked {
    pub change_id: String,
    pub service: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub deployed_ns: i64,
    pub score: f64,
    pub proximity: f64,
    /// When the asked service's errors began after this deploy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onset_ns: Option<i64>,
    /// The change's own service, after against before.
    pub own: Comparison,
    /// The service asked about, when it is another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_service: Option<Comparison>,
    pub blast_radius: Vec<Blast>,
    /// The first error span after the deploy: on its own service, else on the one asked about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<FirstError>,
}

/// What is asked: a service's errors in an environment, in [from, to].
pub struct Query<'a> {
    pub service: &'a str,
    pub environment: &'a str,
    pub from_ns: i64,
    pub to_ns: i64,
}

/// The first minute at or after the deploy's whose error rate is a threshold above the
/// baseline's.
fn onset(minutes: &[Minute], c: &Comparison, th: &Thresholds) -> Option<i64> {
    let start = minute_of(c.deployed_ns);
    let mut by_minute: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for m in minutes {
        if m.minute_ns >= start && m.minute_ns < c.deployed_ns.saturating_add(c.window_ns) {
            let e = by_minute.entry(m.minute_ns).or_default();
            e.0 += m.cell.spans;
            e.1 += m.cell.errors;
        }
    }
    by_minute.into_iter().find_map(|(t, (spans, errors))| {
        let rate = errors as f64 / spans.max(1) as f64;
        (errors > 0 && rate >= c.before.error_rate + th.error_rate_increase).then_some(t)
    })
}

/// The candidates deployed in [from − window, to] with a score above zero, most likely cause
/// first. `series` holds each
/// service's minutes in the environment (every version), covering every candidate's baseline
/// and window.
pub fn rank(
    q: &Query<'_>,
    candidates: &[Candidate],
    series: &BTreeMap<String, Vec<Minute>>,
    th: &Thresholds,
) -> Vec<Ranked> {
    let empty = Vec::new();
    let minutes = |s: &str| series.get(s).unwrap_or(&empty);
    let mut out: Vec<Ranked> = candidates
        .iter()
        .filter(|c| {
            c.deployed_ns >= q.from_ns.saturating_sub(th.window_ns) && c.deployed_ns <= q.to_ns
        })
        .map(|c| {
            let own = compare(
                minutes(&c.service),
                (q.environment, c.service.as_str()),
                c.deployed_ns,
                c.version.as_deref(),
                th,
            );
            let on_service = (c.service != q.service).then(|| {
                compare(
                    minutes(q.service),
                    (q.environment, q.service),
                    c.deployed_ns,
                    None,
                    th,
                )
            });
            let asked = on_service.as_ref().unwrap_or(&own);
            let start = onset(minutes(q.service), asked, th);
            let asked_rise = rise(asked, th);
            let proximity = match start {
                Some(t) => (-((t - minute_of(c.deployed_ns)) as f64)
                    / th.window_ns.max(MINUTE_NS) as f64)
                    .exp(),
                None if asked_rise > 0.0 => 0.25,
                None => 0.1,
            };
            let blast_radius: Vec<Blast> = series
                .iter()
                .filter(|(s, _)| **s != c.service)
                .filter_map(|(s, m)| {
                    let cmp = compare(m, (q.environment, s.as_str()), c.deployed_ns, None, th);
                    cmp.regression.then(|| Blast {
                        service: s.clone(),
                        before_error_rate: cmp.before.error_rate,
                        after_error_rate: cmp.after.error_rate,
                    })
                })
                .collect();
            let own_part = if on_service.is_some() {
                0.5 * rise(&own, th)
            } else {
                0.0
            };
            let score =
                proximity * (asked_rise + own_part) * (1.0 + 0.25 * blast_radius.len() as f64);
            let first_error = own
                .after
                .first_error
                .clone()
                .or_else(|| asked.after.first_error.clone());
            Ranked {
                change_id: c.change_id.clone(),
                service: c.service.clone(),
                version: c.version.clone(),
                deployed_ns: c.deployed_ns,
                score: (score * 1000.0).round() / 1000.0,
                proximity: (proximity * 1000.0).round() / 1000.0,
                onset_ns: start,
                own,
                on_service,
                blast_radius,
                first_error,
            }
        })
        .collect();
    // A deploy after which nothing rose anywhere is no suspect.
    out.retain(|r| r.score > 0.0);
    out.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.deployed_ns.cmp(&a.deployed_ns))
            .then(a.change_id.cmp(&b.change_id))
    });
    out
}
