//! Runtime spans, summarised: what a service's requests looked like minute by minute, so a
//! change's deploy can be compared with what ran before it (`compare`) and the changes behind a
//! service's errors ranked (`suspects`).
//!
//! - The receiver adds every production entry span (kind SERVER or CONSUMER, with
//!   `service.name`, `service.version` and `deployment.environment.name` on its resource) to a
//!   `Cell` of its (environment, service, version, minute): the span count, the error count
//!   (status ERROR), a latency sketch, the error kinds (`exception.type` of its first exception
//!   event, else `error.type`, else "error") and the first error's trace.
//! - Each closed cell becomes one signed `runtime.minute` entry (`Minute`), under the subject
//!   `runtime:ENVIRONMENT/SERVICE`. Cells add up: two instances' entries of one minute, or a late
//!   span's second entry, are summed by whoever reads them.
//! - When a production change's deploy has run for `window`, its service's minutes after the
//!   deploy are compared with the `baseline` before it; the result is a `runtime.compared` fact
//!   of the change, and a clear rise is `CHANGE_REGRESSION`.

pub mod sketch;
pub mod suspects;

use serde::{Deserialize, Serialize};
use sketch::Sketch;
use std::collections::BTreeMap;

/// The entry kind of one summarised minute.
pub const MINUTE_KIND: &str = "runtime.minute";
pub const MINUTE_NS: i64 = 60_000_000_000;
/// Error kinds kept per cell; the rest are counted under `OTHER_KIND`.
pub const MAX_KINDS: usize = 8;
pub const OTHER_KIND: &str = "(other)";
/// An error kind is kept to this many bytes.
pub const MAX_KIND_BYTES: usize = 128;
/// Senders (ingest token ids) named per cell; the rest are counted under `OTHER_SENDERS`.
pub const MAX_SENDERS: usize = 4;
pub const OTHER_SENDERS: &str = "(more)";

/// The subject a service's minutes are filed under.
pub fn subject(environment: &str, service: &str) -> String {
    format!("runtime:{}/{service}", environment.to_ascii_lowercase())
}

/// The start of the minute `time_ns` falls in.
pub fn minute_of(time_ns: i64) -> i64 {
    time_ns.div_euclid(MINUTE_NS) * MINUTE_NS
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// The earliest error span of a cell or window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstError {
    pub time_ns: i64,
    pub trace_id: String,
}

/// What one (environment, service, version, minute) saw: counts, latency, error kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    pub spans: u64,
    pub errors: u64,
    pub latency_us: Sketch,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_kinds: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<FirstError>,
    /// Who sent the spans (ingest token ids, or names for an import): a forged rise can be
    /// traced to the token that sent it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub senders: std::collections::BTreeSet<String>,
}

impl Cell {
    /// Adds one span: its duration, and for an error span its kind, end time and trace.
    pub fn add(&mut self, duration_ns: u64, error: Option<(&str, i64, &[u8; 16])>) {
        self.spans += 1;
        self.latency_us.add(duration_ns / 1_000);
        if let Some((kind, time_ns, trace)) = error {
            self.errors += 1;
            self.add_kind(&cut(kind, MAX_KIND_BYTES), 1);
            self.note_error(time_ns, || hex::encode(trace));
        }
    }

    fn note_error(&mut self, time_ns: i64, trace: impl FnOnce() -> String) {
        if self
            .first_error
            .as_ref()
            .is_none_or(|f| time_ns < f.time_ns)
        {
            self.first_error = Some(FirstError {
                time_ns,
                trace_id: trace(),
            });
        }
    }

    fn add_kind(&mut self, kind: &str, n: u64) {
        let key = if self.error_kinds.contains_key(kind)
            || self.error_kinds.keys().filter(|k| *k != OTHER_KIND).count() < MAX_KINDS
        {
            kind
        } else {
            OTHER_KIND
        };
        *self.error_kinds.entry(key.to_owned()).or_default() += n;
    }

    /// Names a sender of this cell's spans.
    pub fn sent_by(&mut self, sender: &str) {
        if sender.is_empty() || self.senders.contains(sender) {
            return;
        }
        if self.senders.iter().filter(|s| *s != OTHER_SENDERS).count() < MAX_SENDERS {
            self.senders.insert(cut(sender, MAX_KIND_BYTES));
        } else {
            self.senders.insert(OTHER_SENDERS.to_owned());
        }
    }

    /// Adds another cell of the same key, keeping this one's caps (kinds, senders): how the
    /// receiver gathers a minute from many exports. Its memory stays bounded whatever they hold.
    pub fn absorb(&mut self, other: &Cell) {
        self.combine(other, true);
    }

    /// Adds a cell of any key: how a reader sums a window. A window gathers every kind and
    /// sender its minutes name (each minute is capped; a window is read, not held).
    pub fn merge(&mut self, other: &Cell) {
        self.combine(other, false);
    }

    fn combine(&mut self, other: &Cell, capped: bool) {
        self.spans += other.spans;
        self.errors += other.errors;
        self.latency_us.merge(&other.latency_us);
        for (k, n) in &other.error_kinds {
            if capped {
                self.add_kind(k, *n);
            } else {
                *self.error_kinds.entry(k.clone()).or_default() += n;
            }
        }
        if let Some(f) = &other.first_error {
            self.note_error(f.time_ns, || f.trace_id.clone());
        }
        for s in &other.senders {
            if capped {
                self.sent_by(s);
            } else {
                self.senders.insert(s.clone());
            }
        }
    }
}

/// The payload of a `runtime.minute` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minute {
    pub environment: String,
    pub service: String,
    pub version: String,
    pub minute_ns: i64,
    #[serde(flatten)]
    pub cell: Cell,
}

impl Minute {
    /// Whether the payload is one this code could have written; anything else is not summed
    /// (a reader counts it as unreadable instead).
    pub fn is_valid(&self) -> bool {
        let c = &self.cell;
        self.minute_ns.rem_euclid(MINUTE_NS) == 0
            && c.spans > 0
            && c.errors <= c.spans
            && c.latency_us.is_valid()
            && c.latency_us.count() == c.spans
            && c.error_kinds.len() <= MAX_KINDS + 1
            && c.senders.len() <= MAX_SENDERS + 1
            && c.error_kinds.values().sum::<u64>() == c.errors
            && c.first_error.is_some() == (c.errors > 0)
    }
}

/// What makes a deploy's runtime comparison a regression (`[suspects]`); recorded in each
/// comparison, so an auditor can recompute its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// How long after the deploy is compared.
    pub window_ns: i64,
    /// How long before the deploy is the baseline.
    pub baseline_ns: i64,
    /// Fewer spans than this on either side judges nothing.
    pub min_spans: u64,
    /// The error rate must rise by at least this much (absolute: 0.05 is 5 points) and at least
    /// double.
    pub error_rate_increase: f64,
    /// Or p95 latency must grow by this factor and by at least `min_latency_increase_ns`.
    pub latency_ratio: f64,
    pub min_latency_increase_ns: i64,
}

impl Default for Thresholds {
    /// The shipped defaults (`[suspects]` in src/app/defaults.toml; a config test keeps them equal).
    fn default() -> Thresholds {
        Thresholds {
            window_ns: 10 * MINUTE_NS,
            baseline_ns: 30 * MINUTE_NS,
            min_spans: 20,
            error_rate_increase: 0.05,
            latency_ratio: 1.5,
            min_latency_increase_ns: 50_000_000,
        }
    }
}

/// A window's figures, as recorded in a comparison and shown by suspects.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub spans: u64,
    pub errors: u64,
    /// errors / spans, to six decimals (0 without spans).
    pub error_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_kinds: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<FirstError>,
    /// Who sent the spans counted.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub senders: std::collections::BTreeSet<String>,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

impl Figures {
    pub fn of(c: &Cell) -> Figures {
        Figures {
            spans: c.spans,
            errors: c.errors,
            error_rate: if c.spans == 0 {
                0.0
            } else {
                round(c.errors as f64 / c.spans as f64, 6)
            },
            p95_ms: c.latency_us.quantile(0.95).map(|us| round(us / 1_000.0, 3)),
            error_kinds: top_kinds(&c.error_kinds),
            first_error: c.first_error.clone(),
            senders: few_senders(&c.senders),
        }
    }
}

/// Senders a window's figures name at most (the rest: `OTHER_SENDERS`).
pub const MAX_WINDOW_SENDERS: usize = 16;

/// A window's most frequent kinds (`MAX_KINDS`, ties by name) and the rest as `OTHER_KIND`: a
/// window gathers every minute's kinds, and its figures are signed into one fact of bounded size.
fn top_kinds(kinds: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    let mut by_count: Vec<(&String, &u64)> =
        kinds.iter().filter(|(k, _)| *k != OTHER_KIND).collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out: BTreeMap<String, u64> = by_count
        .iter()
        .take(MAX_KINDS)
        .map(|(k, n)| ((*k).clone(), **n))
        .collect();
    let rest: u64 = by_count
        .iter()
        .skip(MAX_KINDS)
        .map(|(_, n)| **n)
        .sum::<u64>()
        + kinds.get(OTHER_KIND).copied().unwrap_or(0);
    if rest > 0 {
        out.insert(OTHER_KIND.to_owned(), rest);
    }
    out
}

fn few_senders(senders: &std::collections::BTreeSet<String>) -> std::collections::BTreeSet<String> {
    let mut out: std::collections::BTreeSet<String> = senders
        .iter()
        .filter(|s| *s != OTHER_SENDERS)
        .take(MAX_WINDOW_SENDERS)
        .cloned()
        .collect();
    if senders.len() > out.len() {
        out.insert(OTHER_SENDERS.to_owned());
    }
    out
}

/// A deploy's after-window against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub service: String,
    pub environment: String,
    /// The deployed version, when the after-window holds spans of it: then only those are
    /// compared (the old version draining does not dilute them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub deployed_ns: i64,
    pub window_ns: i64,
    pub baseline_ns: i64,
    /// What the verdict was judged against.
    pub thresholds: Thresholds,
    pub before: Figures,
    pub after: Figures,
    /// Error kinds after the deploy that the baseline never showed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_error_kinds: Vec<String>,
    pub regression: bool,
    /// Why it is (or is not) a regression, in words.
    pub reasons: Vec<String>,
}

/// The minutes of `minutes` starting in [from, to), summed (only `version`'s when given).
pub fn window<'a>(
    minutes: impl IntoIterator<Item = &'a Minute>,
    from_ns: i64,
    to_ns: i64,
    version: Option<&str>,
) -> Cell {
    let mut cell = Cell::default();
    for m in minutes {
        if m.minute_ns >= from_ns && m.minute_ns < to_ns && version.is_none_or(|v| v == m.version) {
            cell.merge(&m.cell);
        }
    }
    cell
}

/// The baseline ends at the start of the deploy's minute; the after-window starts there (errors
/// in the deploy's own minute count against it).
fn split(deployed_ns: i64, th: &Thresholds) -> ((i64, i64), (i64, i64)) {
    let at = minute_of(deployed_ns);
    (
        (at.saturating_sub(th.baseline_ns), at),
        (at, deployed_ns.saturating_add(th.window_ns)),
    )
}

/// Compares one service's minutes after a deploy with those before it.
pub fn compare(
    minutes: &[Minute],
    (environment, service): (&str, &str),
    deployed_ns: i64,
    version: Option<&str>,
    th: &Thresholds,
) -> Comparison {
    let (b, a) = split(deployed_ns, th);
    let before = window(minutes, b.0, b.1, None);
    let own = version.filter(|v| {
        minutes
            .iter()
            .any(|m| m.minute_ns >= a.0 && m.minute_ns < a.1 && m.version == *v)
    });
    let after = window(minutes, a.0, a.1, own);
    let new_error_kinds: Vec<String> = after
        .error_kinds
        .keys()
        .filter(|k| *k != OTHER_KIND && !before.error_kinds.contains_key(*k))
        .take(MAX_KINDS)
        .cloned()
        .collect();
    let (before, after) = (Figures::of(&before), Figures::of(&after));
    let (regression, reasons) = verdict(&before, &after, th);
    Comparison {
        service: service.to_owned(),
        environment: environment.to_owned(),
        version: own.map(str::to_owned),
        deployed_ns,
        window_ns: th.window_ns,
        baseline_ns: th.baseline_ns,
        thresholds: th.clone(),
        before,
        after,
        new_error_kinds,
        regression,
        reasons,
    }
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

/// Whether the after-window is clearly worse than the baseline, and why (or why not).
fn verdict(before: &Figures, after: &Figures, th: &Thresholds) -> (bool, Vec<String>) {
    let mut reasons = Vec::new();
    if before.spans < th.min_spans || after.spans < th.min_spans {
        reasons.push(format!(
            "too few spans to judge: {} before, {} after (at least {} each)",
            before.spans, after.spans, th.min_spans
        ));
        return (false, reasons);
    }
    let rise = after.error_rate - before.error_rate;
    let errors = rise >= th.error_rate_increase && after.error_rate >= 2.0 * before.error_rate;
    if errors {
        reasons.push(format!(
            "error rate rose from {} to {}",
            pct(before.error_rate),
            pct(after.error_rate)
        ));
    }
    let slower = match (before.p95_ms, after.p95_ms) {
        (Some(b), Some(a)) => {
            a >= b * th.latency_ratio && (a - b) * 1e6 >= th.min_latency_increase_ns as f64
        }
        _ => false,
    };
    if slower {
        reasons.push(format!(
            "p95 latency rose from {:.1} ms to {:.1} ms",
            before.p95_ms.unwrap_or_default(),
            after.p95_ms.unwrap_or_default()
        ));
    }
    if !errors && !slower {
        reasons.push(format!(
            "no clear rise: error rate {} → {}, p95 {} → {} ms",
            pct(before.error_rate),
            pct(after.error_rate),
            before.p95_ms.map_or("-".into(), |v| format!("{v:.1}")),
            after.p95_ms.map_or("-".into(), |v| format!("{v:.1}"))
        ));
    }
    (errors || slower, reasons)
}

/// How much worse the after-window is, in units of the thresholds (1 is one threshold's worth):
/// the error rate's rise, the p95's growth, half a unit per new error kind (at most 2). Zero
/// without enough spans after the deploy.
pub fn rise(c: &Comparison, th: &Thresholds) -> f64 {
    if c.after.spans < th.min_spans {
        return 0.0;
    }
    let errors = (c.after.error_rate - c.before.error_rate).max(0.0) / th.error_rate_increase;
    let latency = match (c.before.p95_ms, c.after.p95_ms) {
        (Some(b), Some(a)) if b > 0.0 && c.before.spans >= th.min_spans => {
            ((a / b - 1.0).max(0.0) / (th.latency_ratio - 1.0).max(0.01)).min(10.0)
        }
        _ => 0.0,
    };
    let kinds = 0.5 * c.new_error_kinds.len().min(4) as f64;
    errors + latency + kinds
}

#[cfg(test)]
mod tests;
